//! Experiment search (MLflow's experiment grammar, ordering, paging), checked against a
//! brute-force evaluation of the same rules over the experiments' snapshots.

use std::cmp::Ordering;

use runlog::query::{FilterError, SearchExperiments};
use runlog::{Durability, Error, Experiment, Store, StoreOptions, ViewType};

fn store_with_experiments(count: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    for index in 0..count {
        let team = ["Vision", "text", "speech"][index % 3];
        let experiment = store
            .create_experiment(&format!("{team}/exp{index:02}"))
            .unwrap();
        store
            .set_experiment_tag(experiment.id, "team", team)
            .unwrap();
        if index % 4 == 0 {
            store
                .set_experiment_tag(experiment.id, "priority", &format!("p{}", index % 3))
                .unwrap();
        }
        if index % 7 == 3 {
            store.delete_experiment(experiment.id).unwrap();
        }
        if index % 5 == 0 {
            // Spread creation and update times over a few milliseconds.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    (dir, store)
}

/// Every page of `search`, `page_size` at a time, concatenated.
fn all_pages(store: &Store, search: &SearchExperiments, page_size: usize) -> Vec<Experiment> {
    let mut search = SearchExperiments {
        max_results: page_size,
        ..search.clone()
    };
    let mut found = Vec::new();
    loop {
        let page = store.search_experiments(&search).unwrap();
        assert!(page.experiments.len() <= page_size);
        found.extend(page.experiments);
        match page.next_page_token {
            Some(token) => search.page_token = Some(token),
            None => return found,
        }
    }
}

type Predicate = Box<dyn Fn(&Experiment) -> bool>;
type Order = Box<dyn Fn(&Experiment, &Experiment) -> Ordering>;

fn by<T: Ord>(key: impl Fn(&Experiment) -> T + 'static, descending: bool) -> Order {
    Box::new(move |a, b| {
        let ordering = key(a).cmp(&key(b));
        if descending {
            ordering.reverse()
        } else {
            ordering
        }
    })
}

#[test]
fn search_experiments_agrees_with_a_brute_force_model_on_every_page() {
    let (_dir, store) = store_with_experiments(40);
    let everything = store.experiments(ViewType::All).unwrap();
    let pivot = everything[everything.len() / 2].clone();
    let (created, updated) = (pivot.creation_time_ms, pivot.last_update_time_ms);
    let tag = |e: &Experiment, key: &str| e.tags.get(key).cloned();
    let filters: Vec<(String, Predicate)> = vec![
        (String::new(), Box::new(|_| true)),
        (
            "name = 'text/exp01'".into(),
            Box::new(|e| e.name == "text/exp01"),
        ),
        (
            "attributes.name != 'text/exp01'".into(),
            Box::new(|e| e.name != "text/exp01"),
        ),
        (
            "name LIKE 'Vision/%'".into(),
            Box::new(|e| e.name.starts_with("Vision/")),
        ),
        ("name LIKE 'vision/%'".into(), Box::new(|_| false)),
        (
            "name ILIKE 'vision/exp_0'".into(),
            Box::new(|e| {
                e.name.starts_with("Vision/exp") && e.name.len() == 12 && e.name.ends_with('0')
            }),
        ),
        (
            "tags.team = 'text'".into(),
            Box::new(move |e| tag(e, "team").as_deref() == Some("text")),
        ),
        (
            "tags.team != 'text'".into(),
            Box::new(move |e| tag(e, "team").is_some_and(|t| t != "text")),
        ),
        (
            "tags.team ILIKE 'VISION'".into(),
            Box::new(move |e| tag(e, "team").as_deref() == Some("Vision")),
        ),
        (
            "tags.priority LIKE 'p_'".into(),
            Box::new(move |e| tag(e, "priority").is_some()),
        ),
        (
            "tags.priority IS NULL".into(),
            Box::new(move |e| tag(e, "priority").is_none()),
        ),
        (
            "tags.priority IS NOT NULL and tags.team = 'speech'".into(),
            Box::new(move |e| {
                tag(e, "priority").is_some() && tag(e, "team").as_deref() == Some("speech")
            }),
        ),
        (
            format!("creation_time >= {created}"),
            Box::new(move |e| e.creation_time_ms >= created),
        ),
        (
            format!("creation_time < {created}"),
            Box::new(move |e| e.creation_time_ms < created),
        ),
        (
            format!("attributes.creation_time = {created}"),
            Box::new(move |e| e.creation_time_ms == created),
        ),
        (
            format!("last_update_time > {updated}"),
            Box::new(move |e| e.last_update_time_ms > updated),
        ),
        (
            format!("last_update_time <= {updated} AND name LIKE '%exp1%'"),
            Box::new(move |e| e.last_update_time_ms <= updated && e.name.contains("exp1")),
        ),
        (
            format!("last_update_time != {updated}"),
            Box::new(move |e| e.last_update_time_ms != updated),
        ),
    ];
    let orders: Vec<(Vec<&str>, Order)> = vec![
        (vec![], by(|e| std::cmp::Reverse(e.creation_time_ms), false)),
        (vec!["name"], by(|e| e.name.clone(), false)),
        (vec!["name DESC"], by(|e| e.name.clone(), true)),
        (vec!["creation_time ASC"], by(|e| e.creation_time_ms, false)),
        (
            vec!["last_update_time DESC", "name"],
            Box::new(|a, b| {
                b.last_update_time_ms
                    .cmp(&a.last_update_time_ms)
                    .then(a.name.cmp(&b.name))
            }),
        ),
        (vec!["experiment_id DESC"], by(|e| e.id, true)),
    ];
    for view in [ViewType::ActiveOnly, ViewType::DeletedOnly, ViewType::All] {
        for (filter, predicate) in &filters {
            for (order_by, order) in &orders {
                let mut expected: Vec<Experiment> = everything
                    .iter()
                    .filter(|e| match view {
                        ViewType::ActiveOnly => e.lifecycle_stage.as_str() == "active",
                        ViewType::DeletedOnly => e.lifecycle_stage.as_str() == "deleted",
                        ViewType::All => true,
                    })
                    .filter(|e| predicate(e))
                    .cloned()
                    .collect();
                expected.sort_by(|a, b| order(a, b).then(a.id.cmp(&b.id)));
                let search = SearchExperiments {
                    view,
                    filter: filter.clone(),
                    order_by: order_by.iter().map(|o| o.to_string()).collect(),
                    ..SearchExperiments::default()
                };
                for page_size in [7, 1_000] {
                    let found = all_pages(&store, &search, page_size);
                    let names = |list: &[Experiment]| -> Vec<String> {
                        list.iter().map(|e| e.name.clone()).collect()
                    };
                    assert_eq!(
                        names(&found),
                        names(&expected),
                        "{view:?} {filter:?} {order_by:?} pages of {page_size}"
                    );
                    assert_eq!(found, expected);
                }
            }
        }
    }
}

#[test]
fn bad_experiment_searches_name_mlflow_fields_and_the_column() {
    let (_dir, store) = store_with_experiments(3);
    let search = |filter: &str, order_by: &[&str]| {
        store.search_experiments(&SearchExperiments {
            filter: filter.into(),
            order_by: order_by.iter().map(|o| o.to_string()).collect(),
            ..SearchExperiments::default()
        })
    };
    let cases: &[(&str, &[&str], usize, &str)] = &[
        ("name > 'x'", &[], 6, "'>' is not allowed on name"),
        ("metrics.acc > 1", &[], 1, "no metrics or params"),
        ("params.lr = '1'", &[], 1, "no metrics or params"),
        ("run_name = 'x'", &[], 1, "unknown attribute \"run_name\""),
        (
            "creation_time = '5'",
            &[],
            17,
            "creation_time takes a number",
        ),
        (
            "last_update_time LIKE 5",
            &[],
            18,
            "'LIKE' is not allowed on last_update_time",
        ),
        (
            "tags.team IN ('a')",
            &[],
            11,
            "'IN' is not allowed on tags.team",
        ),
        ("experiment_id = '1'", &[], 15, "only be ordered by"),
        ("name = 'x' OR name = 'y'", &[], 12, "OR"),
        ("", &["tags.team"], 1, "experiments are ordered by"),
        ("", &["creation_time SIDEWAYS"], 15, "SIDEWAYS"),
        ("", &["start_time"], 1, "unknown attribute \"start_time\""),
    ];
    for (filter, order_by, column, needle) in cases {
        let error = search(filter, order_by).unwrap_err();
        let Error::InvalidFilter(FilterError {
            column: found,
            message,
            ..
        }) = &error
        else {
            panic!("{filter:?} {order_by:?}: {error}");
        };
        assert_eq!(found, column, "{filter:?} {order_by:?}: {error}");
        assert!(message.contains(needle), "{filter:?} {order_by:?}: {error}");
        let text = error.to_string();
        for rust_name in ["Gt", "Like", "CreationTime", "LastUpdateTime", "Name"] {
            assert!(!text.contains(rust_name), "{text}");
        }
    }
    let first = store
        .search_experiments(&SearchExperiments {
            max_results: 1,
            ..SearchExperiments::default()
        })
        .unwrap();
    let token = first.next_page_token.unwrap();
    let other = store.search_experiments(&SearchExperiments {
        max_results: 1,
        filter: "name LIKE '%'".into(),
        page_token: Some(token),
        ..SearchExperiments::default()
    });
    assert!(matches!(other, Err(Error::InvalidInput(_))), "{other:?}");
    let too_many = store.search_experiments(&SearchExperiments {
        max_results: 50_001,
        ..SearchExperiments::default()
    });
    assert!(matches!(too_many, Err(Error::InvalidInput(_))));
}
