//! `Registers`: the by-name maps of the catalog's entries (a run's params, tags and artifacts,
//! an experiment's or a logged model's tags), sorted by name like a `BTreeMap`, but small
//! while they are small.
//!
//! A `BTreeMap`'s first insert allocates a whole node, room for eleven entries: with a run
//! holding one param and one tag, those nodes were most of the catalog's memory per run (about
//! 1.4 KB of 1.9 KB), and touching that memory for the first time most of a cold open's
//! replay of the metadata chain. A `Registers` holds up to `SMALL_MAX` entries in a sorted
//! vector sized to them, and moves to a `BTreeMap` past that, so that inserting many names
//! one by one stays O(log n) each rather than O(n).
//!
//! Invariant: the entries are sorted by name, each name once, in both forms.

use std::collections::BTreeMap;

/// Entries kept in a sorted vector; one more and they move to a `BTreeMap`.
const SMALL_MAX: usize = 32;
/// Room a vector of one entry grows to.
const GROWN_MIN: usize = 4;
const _: () = assert!(GROWN_MIN <= SMALL_MAX);

/// A map from name to `V`, sorted by name (see the module doc).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Registers<V> {
    /// At most `SMALL_MAX` entries, sorted by name.
    Small(Vec<(String, V)>),
    /// More.
    Large(BTreeMap<String, V>),
}

impl<V> Default for Registers<V> {
    fn default() -> Self {
        Registers::Small(Vec::new())
    }
}

impl<V> Registers<V> {
    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&V> {
        match self {
            Registers::Small(entries) => entries
                .binary_search_by(|(key, _)| key.as_str().cmp(name))
                .ok()
                .map(|index| &entries[index].1),
            Registers::Large(map) => map.get(name),
        }
    }

    /// The value of `name`, if set, to change.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        match self {
            Registers::Small(entries) => entries
                .binary_search_by(|(key, _)| key.as_str().cmp(name))
                .ok()
                .map(|index| &mut entries[index].1),
            Registers::Large(map) => map.get_mut(name),
        }
    }

    /// Sets `name` to `value`, replacing any value it had.
    pub fn insert(&mut self, name: String, value: V) {
        match self {
            Registers::Small(entries) => {
                match entries.binary_search_by(|(key, _)| key.as_str().cmp(&name)) {
                    Ok(index) => entries[index].1 = value,
                    Err(_) if entries.len() == SMALL_MAX => {
                        let mut map: BTreeMap<String, V> =
                            std::mem::take(entries).into_iter().collect();
                        map.insert(name, value);
                        *self = Registers::Large(map);
                    }
                    Err(index) => {
                        // One entry, then four, then doubled: a run's one param takes no more
                        // room than it needs, and the four or so system tags of every started
                        // run one reallocation rather than two (5 % of a cold open's
                        // instructions on a store of 20,000 runs).
                        if entries.len() == entries.capacity() {
                            let capacity = match entries.len() {
                                0 => 1,
                                1 => GROWN_MIN,
                                length => 2 * length,
                            };
                            entries.reserve_exact(capacity - entries.len());
                        }
                        entries.insert(index, (name, value));
                    }
                }
            }
            Registers::Large(map) => {
                map.insert(name, value);
            }
        }
    }

    /// The entries, by name.
    pub fn iter(&self) -> Iter<'_, V> {
        match self {
            Registers::Small(entries) => Iter::Small(entries.iter()),
            Registers::Large(map) => Iter::Large(map.iter()),
        }
    }

    /// How many names are set.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        match self {
            Registers::Small(entries) => entries.len(),
            Registers::Large(map) => map.len(),
        }
    }
}

/// The entries of a `Registers`, by name.
pub(crate) enum Iter<'a, V> {
    Small(std::slice::Iter<'a, (String, V)>),
    Large(std::collections::btree_map::Iter<'a, String, V>),
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a String, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(entries) => entries.next().map(|(key, value)| (key, value)),
            Iter::Large(entries) => entries.next(),
        }
    }
}

impl<'a, V> IntoIterator for &'a Registers<V> {
    type Item = (&'a String, &'a V);
    type IntoIter = Iter<'a, V>;

    fn into_iter(self) -> Iter<'a, V> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small vector's room: one entry, then `GROWN_MIN`, then doubled, so a run's one param
    /// costs one entry and its handful of system tags one reallocation.
    #[test]
    fn a_small_vector_grows_to_one_then_four_then_doubles() {
        let mut registers = Registers::default();
        let mut capacities = Vec::new();
        for index in 0..SMALL_MAX {
            registers.insert(format!("k{index:03}"), index);
            let Registers::Small(entries) = &registers else {
                panic!("{} entries are small", index + 1);
            };
            if capacities.last() != Some(&entries.capacity()) {
                capacities.push(entries.capacity());
            }
        }
        assert_eq!(capacities, [1, GROWN_MIN, 8, 16, 32]);
    }

    /// Whatever the order of inserts, small or large, it reads as a `BTreeMap` given the same
    /// inserts. Deterministic: the orders are fixed permutations.
    #[test]
    fn registers_read_as_a_btree_map_given_the_same_inserts() {
        for count in [0usize, 1, 2, SMALL_MAX, SMALL_MAX + 1, 3 * SMALL_MAX] {
            for stride in [1usize, 7, 31] {
                let mut registers = Registers::default();
                let mut model = BTreeMap::new();
                for index in 0..2 * count {
                    // Every name twice: the second insert replaces.
                    let name = format!("k{:03}", (index * stride) % count.max(1));
                    registers.insert(name.clone(), index);
                    model.insert(name, index);
                }
                assert_eq!(registers.len(), model.len(), "{count} {stride}");
                assert!(registers.iter().eq(model.iter()), "{count} {stride}");
                for name in model.keys() {
                    assert_eq!(registers.get(name), model.get(name));
                    if let Some(value) = registers.get_mut(name) {
                        *value += 1;
                    }
                }
                assert_eq!(registers.get("absent"), None);
                assert_eq!(
                    registers.iter().map(|(_, v)| *v).sum::<usize>(),
                    model.values().map(|v| v + 1).sum::<usize>()
                );
            }
        }
    }
}
