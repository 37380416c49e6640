//! Truncate a small segment at every byte offset and flip every bit of it. Opening never
//! panics, never returns a record whose CRC did not check, and recovers exactly the valid
//! prefix of a dead writer's torn tail; any other damage (inside a closed writer's segment, or a
//! cut that no crash leaves) fails naming where the valid log ends.

use runlog::Error;
use runlog::wal::Log;
use runlog::wal::segment::HEADER_BYTES;

use crate::util::small_options;
use crate::wal_corruption::{Fixture, fixture, read_events};

/// Writes `bytes` as the fixture's segment in a fresh store (with the fixture's lock file, if
/// any) and returns what the read-only reader and open-with-recovery see.
fn outcomes(
    fixture: &Fixture,
    bytes: &[u8],
) -> Vec<(&'static str, runlog::Result<Vec<runlog::wal::Event>>)> {
    let copy = crate::util::Store::new();
    std::fs::create_dir_all(copy.wal()).unwrap();
    for entry in std::fs::read_dir(fixture.store.wal()).unwrap() {
        let entry = entry.unwrap();
        if entry.path().extension().is_some_and(|e| e == "lock") {
            std::fs::copy(entry.path(), copy.wal().join(entry.file_name())).unwrap();
        }
    }
    let name = fixture.segment.file_name().unwrap();
    std::fs::write(copy.wal().join(name), bytes).unwrap();
    let read_only = read_events(&copy.wal(), false);
    let recovered = match Log::open(copy.wal(), small_options()) {
        Ok((log, _)) => {
            drop(log);
            read_events(&copy.wal(), false)
        }
        Err(error) => Err(error),
    };
    let reread = read_events(&copy.wal(), false);
    vec![
        ("read-only", read_only),
        ("recovered", recovered),
        ("reread", reread),
    ]
}

fn records_ending_by(fixture: &Fixture, cut: usize) -> usize {
    fixture.records.iter().take_while(|r| r.end <= cut).count()
}

/// What a segment cut at `cut` must read as. A closed writer's segment (`sealed`) is whole only
/// uncut; a dead writer's (which keeps its lock file) may be cut only where its creation could
/// have been: before anything was written, or right after its header. Any other cut is damage
/// located where the first record that is not whole starts.
fn expected_after_cut(
    fixture: &Fixture,
    sealed: bool,
    cut: usize,
    len: usize,
) -> Result<Vec<runlog::wal::Event>, u64> {
    if cut == len {
        return Ok(fixture.all());
    }
    if !sealed && (cut == 0 || cut == HEADER_BYTES) {
        return Ok(Vec::new());
    }
    if cut < HEADER_BYTES {
        return Err(0);
    }
    let whole = records_ending_by(fixture, cut);
    Err(fixture
        .records
        .get(whole)
        .map_or(fixture.records.last().unwrap().end, |r| r.offset) as u64)
}

fn truncate_everywhere(sealed: bool) {
    let fixture = fixture(sealed);
    let bytes = std::fs::read(&fixture.segment).unwrap();
    let limit = (fixture.records.last().unwrap().end + 64).min(bytes.len());
    for cut in 0..=limit {
        let expected = expected_after_cut(&fixture, sealed, cut, bytes.len());
        for (reader, outcome) in outcomes(&fixture, &bytes[..cut]) {
            match (&expected, outcome) {
                (Ok(expected), Ok(events)) => {
                    assert_eq!(&events, expected, "cut at {cut}: {reader}")
                }
                (Err(offset), Err(Error::Corrupt(c))) => {
                    assert_eq!(c.offset, *offset, "cut at {cut}: {reader}: {c}");
                }
                (expected, outcome) => {
                    panic!("cut at {cut}: {reader}: expected {expected:?}, got {outcome:?}")
                }
            }
        }
    }
}

#[test]
fn truncation_at_every_offset_of_an_open_segment_keeps_exactly_the_valid_prefix() {
    truncate_everywhere(false);
}

#[test]
fn truncation_at_every_offset_of_a_sealed_segment_keeps_exactly_the_valid_prefix() {
    truncate_everywhere(true);
}

fn flip_everywhere(sealed: bool) {
    let fixture = fixture(sealed);
    let bytes = std::fs::read(&fixture.segment).unwrap();
    let last_end = fixture.records.last().unwrap().end;
    let limit = if sealed {
        bytes.len()
    } else {
        (last_end + 16).min(bytes.len())
    };
    for byte in 0..limit {
        for bit in 0..8 {
            let mut flipped = bytes.clone();
            flipped[byte] ^= 1 << bit;
            let damaged = fixture
                .records
                .iter()
                .position(|r| r.offset <= byte && byte < r.end);
            for (reader, outcome) in outcomes(&fixture, &flipped) {
                let context = format!("flip of bit {bit} of byte {byte} ({reader})");
                match (byte < HEADER_BYTES, damaged, outcome) {
                    (true, _, Err(Error::Corrupt(c))) => assert_eq!(c.offset, 0, "{context}"),
                    (false, Some(index), Err(Error::Corrupt(c))) if sealed => {
                        assert_eq!(c.offset, fixture.records[index].offset as u64, "{context}");
                    }
                    (false, Some(index), Ok(events)) if !sealed => {
                        assert_eq!(events, fixture.prefix(index), "{context}");
                    }
                    // The seal of a closed writer's segment.
                    (false, None, Err(Error::Corrupt(c))) if sealed => {
                        assert_eq!(c.offset, last_end as u64, "{context}");
                    }
                    // Never-written space of a dead writer's segment.
                    (false, None, Ok(events)) if !sealed => {
                        assert_eq!(events, fixture.all(), "{context}");
                    }
                    (_, _, outcome) => panic!("{context}: unexpected {outcome:?}"),
                }
            }
        }
    }
}

#[test]
fn every_bit_flip_in_an_open_segment_ends_the_log_before_the_damage() {
    flip_everywhere(false);
}

#[test]
fn every_bit_flip_in_a_sealed_segment_is_a_located_error() {
    flip_everywhere(true);
}
