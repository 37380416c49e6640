//! Run search (MLflow's filter grammar, ordering, paging) and comparison, checked against a
//! brute-force evaluation of the same rules over what was logged.

use runlog::query::{Aggregate, SearchRuns};
use runlog::wal::RunStatus;
use runlog::{Durability, Error, RunId, RunOptions, Store, StoreOptions, ViewType};

use crate::util::Rng;

struct Logged {
    id: RunId,
    lr: &'static str,
    model: &'static str,
    acc: Option<f64>,
    status: RunStatus,
}

fn store_with_runs(count: usize) -> (tempfile::TempDir, Store, Vec<Logged>) {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    let experiment = store.get_or_create_experiment("search").unwrap();
    let mut rng = Rng::new(42);
    let mut logged = Vec::new();
    for index in 0..count {
        let lr = ["0.1", "0.01", "0.001"][rng.below(3) as usize];
        let model = ["resnet18", "resnet50", "vit-b"][rng.below(3) as usize];
        let options = RunOptions {
            name: Some(format!("run{index:03}")),
            start_time_ms: Some(1_000 + index as i64),
            ..RunOptions::default()
        };
        let run = store.start_run(experiment.id, options).unwrap();
        run.log_param("lr", lr).unwrap();
        run.set_tag("model", model).unwrap();
        let acc = (rng.below(4) != 0).then(|| rng.below(1000) as f64 / 1000.0);
        if let Some(acc) = acc {
            run.log_metric("acc", acc * 0.5, 0).unwrap();
            run.log_metric("acc", acc, 1).unwrap();
        }
        let status = if index % 3 == 0 {
            RunStatus::Failed
        } else {
            RunStatus::Finished
        };
        logged.push(Logged {
            id: run.id(),
            lr,
            model,
            acc,
            status,
        });
        run.end(status).unwrap();
    }
    (dir, store, logged)
}

fn ids(page: &runlog::query::RunsPage) -> Vec<RunId> {
    page.runs.iter().map(|r| r.info.id).collect()
}

#[test]
fn filters_match_a_brute_force_evaluation() {
    let (_dir, store, logged) = store_with_runs(60);
    type Predicate = fn(&Logged) -> bool;
    let cases: &[(&str, Predicate)] = &[
        ("metrics.acc > 0.5", |r| r.acc.is_some_and(|a| a > 0.5)),
        ("metrics.acc <= 0.5 and params.lr = '0.01'", |r| {
            r.acc.is_some_and(|a| a <= 0.5) && r.lr == "0.01"
        }),
        ("tags.model LIKE 'res%'", |r| r.model.starts_with("res")),
        ("tags.model ILIKE 'RESNET_0'", |r| r.model == "resnet50"),
        ("attributes.status = 'FAILED'", |r| {
            r.status == RunStatus::Failed
        }),
        ("params.lr != '0.1' AND status != 'FAILED'", |r| {
            r.lr != "0.1" && r.status != RunStatus::Failed
        }),
        ("params.missing IS NULL and params.lr IS NOT NULL", |_| true),
        (
            "metrics.acc > 0.9 and params.lr = '0.01' and tags.model LIKE 'res%' and attributes.status = 'FINISHED'",
            |r| {
                r.acc.is_some_and(|a| a > 0.9)
                    && r.lr == "0.01"
                    && r.model.starts_with("res")
                    && r.status == RunStatus::Finished
            },
        ),
        ("", |_| true),
    ];
    for (filter, predicate) in cases {
        let page = store
            .search_runs(&SearchRuns {
                filter: filter.to_string(),
                ..SearchRuns::default()
            })
            .unwrap();
        let mut got = ids(&page);
        got.sort();
        let mut want: Vec<RunId> = logged
            .iter()
            .filter(|r| predicate(r))
            .map(|r| r.id)
            .collect();
        want.sort();
        assert_eq!(got, want, "filter {filter:?}");
    }
    let some = logged[5].id;
    let filter = format!("run_id IN ('{some}', 'nope')");
    let page = store
        .search_runs(&SearchRuns {
            filter,
            ..SearchRuns::default()
        })
        .unwrap();
    assert_eq!(ids(&page), vec![some]);
}

#[test]
fn ordering_puts_missing_values_last_and_pages_are_stable() {
    let (_dir, store, logged) = store_with_runs(45);
    let search = |token: Option<String>| SearchRuns {
        order_by: vec!["metrics.acc DESC".into(), "params.lr".into()],
        max_results: 10,
        page_token: token,
        ..SearchRuns::default()
    };
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let page = store.search_runs(&search(token.take())).unwrap();
        assert!(page.runs.len() <= 10);
        all.extend(page.runs);
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(all.len(), logged.len());
    let accs: Vec<Option<f64>> = all
        .iter()
        .map(|r| r.metrics.get("acc").map(|m| m.last_value))
        .collect();
    let first_missing = accs.iter().position(Option::is_none).unwrap_or(accs.len());
    assert!(
        accs[first_missing..].iter().all(Option::is_none),
        "missing values must come last"
    );
    let present: Vec<f64> = accs[..first_missing]
        .iter()
        .map(|a| a.unwrap_or(f64::NAN))
        .collect();
    assert!(
        present.windows(2).all(|w| w[0] >= w[1]),
        "descending: {present:?}"
    );
    let lr_groups: Vec<&str> = all[first_missing..]
        .iter()
        .map(|r| r.params["lr"].as_str())
        .collect();
    let mut lr_sorted = lr_groups.clone();
    lr_sorted.sort();
    assert_eq!(lr_groups, lr_sorted, "then by params.lr ascending");

    let first = store.search_runs(&search(None)).unwrap();
    let stolen = first.next_page_token.unwrap();
    let other = SearchRuns {
        filter: "metrics.acc > 0".into(),
        page_token: Some(stolen),
        ..SearchRuns::default()
    };
    assert!(matches!(
        store.search_runs(&other),
        Err(Error::InvalidInput(_))
    ));
}

/// A random filter over the fields `store_with_runs` logs, plus fields nobody logged.
fn random_filter(rng: &mut Rng) -> String {
    let clause = |rng: &mut Rng| -> String {
        let pick = |rng: &mut Rng, items: &[&str]| {
            items[rng.below(items.len() as u64) as usize].to_string()
        };
        let text = |rng: &mut Rng| {
            pick(
                rng,
                &[
                    "'0.1'",
                    "'0.01'",
                    "'resnet50'",
                    "'res%'",
                    "'%5%'",
                    "'FAILED'",
                    "'run0%'",
                    "''",
                    "'active'",
                ],
            )
        };
        let text_op = |rng: &mut Rng| pick(rng, &["=", "!=", "LIKE", "ILIKE"]);
        let number = |rng: &mut Rng| format!("{}", rng.below(1200) as f64 / 1000.0 - 0.1);
        let number_op = |rng: &mut Rng| pick(rng, &["=", "!=", "<", "<=", ">", ">="]);
        match rng.below(9) {
            0 => format!(
                "metrics.{} {} {}",
                pick(rng, &["acc", "loss"]),
                number_op(rng),
                number(rng)
            ),
            1 => format!(
                "params.{} {} {}",
                pick(rng, &["lr", "nope"]),
                text_op(rng),
                text(rng)
            ),
            2 => format!(
                "tags.{} {} {}",
                pick(rng, &["model", "nope", "mlflow.user", "stage"]),
                text_op(rng),
                text(rng)
            ),
            3 => format!(
                "attributes.{} {} {}",
                pick(rng, &["status", "run_name", "user_id", "lifecycle_stage"]),
                text_op(rng),
                text(rng)
            ),
            4 => format!(
                "{} {} {}",
                pick(
                    rng,
                    &["params.lr", "tags.model", "params.nope", "tags.stage"]
                ),
                pick(rng, &["IS NULL", "IS NOT NULL"]),
                ""
            ),
            5 => format!(
                "{} IN ({}, {})",
                pick(rng, &["params.lr", "tags.model", "attributes.status"]),
                text(rng),
                text(rng)
            ),
            6 => format!(
                "{} NOT IN ({})",
                pick(rng, &["params.lr", "tags.model"]),
                text(rng)
            ),
            7 => format!(
                "attributes.{} {} {}",
                pick(rng, &["start_time", "end_time"]),
                number_op(rng),
                1_000 + rng.below(70)
            ),
            _ => format!("params.lr {} {}", number_op(rng), number(rng)),
        }
    };
    let count = rng.below(4);
    (0..count)
        .map(|_| clause(rng))
        .collect::<Vec<_>>()
        .join(" and ")
}

#[test]
fn random_filters_agree_with_evaluating_each_run_on_its_own() {
    let mut rng = Rng::from_env("random_filters_agree_with_evaluating_each_run_on_its_own");
    check_random_filters(&mut rng, 60, 300, 20);
    // Enough runs that a search in the default order stops after a few chunks.
    check_random_filters(&mut rng, 2_500, 12, 300);
}

/// Searches a store of `runs` runs with `rounds` random filters, against `matches` on each run's
/// snapshot, whole and in pages of up to `page_max` runs.
fn check_random_filters(rng: &mut Rng, runs: usize, rounds: usize, page_max: u64) {
    let (_dir, store, logged) = store_with_runs(runs);
    store.delete_run(logged[7].id).unwrap();
    // A tag only some runs have.
    for run in logged.iter().step_by(3) {
        store
            .resume_run(run.id)
            .unwrap()
            .set_tag("stage", "prod")
            .unwrap();
    }
    let every = |store: &Store| {
        store
            .search_runs(&SearchRuns {
                view: ViewType::All,
                max_results: 50_000,
                ..SearchRuns::default()
            })
            .unwrap()
            .runs
    };
    for round in 0..rounds {
        // Change metadata and metrics between searches, so cached columns must follow.
        if round % 6 == 5 {
            // Run 7 is deleted, and a deleted run refuses logging.
            let index = 8 + rng.below(runs as u64 - 8) as usize;
            let run = store.resume_run(logged[index].id).unwrap();
            run.set_tag("model", "vit-l").unwrap();
            run.log_metric("loss", rng.below(1000) as f64 / 1000.0, 5)
                .unwrap();
        }
        let text = random_filter(rng);
        let search = SearchRuns {
            filter: text.clone(),
            view: ViewType::All,
            max_results: 50_000,
            ..SearchRuns::default()
        };
        // Some generated combinations are outside MLflow's grammar (IN on a tag): both refuse.
        let Ok(filter) = runlog::query::parse(&text) else {
            assert!(store.search_runs(&search).is_err(), "filter {text:?}");
            continue;
        };
        // The default order: start time descending, then run id.
        let mut matching: Vec<(i64, RunId)> = every(&store)
            .iter()
            .filter(|run| runlog::query::matches(&filter, *run))
            .map(|run| (-run.info.start_time_ms, run.info.id))
            .collect();
        matching.sort();
        let want: Vec<RunId> = matching.iter().map(|(_, id)| *id).collect();
        assert_eq!(
            ids(&store.search_runs(&search).unwrap()),
            want,
            "filter {text:?}"
        );
        // The same runs page by page, in pages of a random size.
        let page_size = 1 + rng.below(page_max) as usize;
        let mut paged = Vec::new();
        let mut token = None;
        loop {
            let page = store
                .search_runs(&SearchRuns {
                    max_results: page_size,
                    page_token: token.take(),
                    ..search.clone()
                })
                .unwrap();
            assert!(page.runs.len() <= page_size);
            // A token is given only when more runs match.
            assert!(
                paged.is_empty() || !page.runs.is_empty(),
                "empty page after a token"
            );
            paged.extend(ids(&page));
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        assert_eq!(paged, want, "filter {text:?}, pages of {page_size}");
    }
}

#[test]
fn a_search_sees_changes_made_since_the_previous_search() {
    let (_dir, store, logged) = store_with_runs(12);
    let count = |filter: &str| {
        store
            .search_runs(&SearchRuns {
                filter: filter.into(),
                ..SearchRuns::default()
            })
            .unwrap()
            .runs
            .len()
    };
    assert_eq!(count("tags.stage = 'prod'"), 0);
    assert_eq!(count("metrics.new_key > 1"), 0);
    let run = store.resume_run(logged[3].id).unwrap();
    run.set_tag("stage", "prod").unwrap();
    assert_eq!(count("tags.stage = 'prod'"), 1);
    // A series created after the columns were built, and a new point of an old one.
    run.log_metric("new_key", 2.0, 0).unwrap();
    assert_eq!(count("metrics.new_key > 1"), 1);
    run.log_metric("new_key", 0.5, 1).unwrap();
    assert_eq!(count("metrics.new_key > 1"), 0);
    store.delete_run(logged[3].id).unwrap();
    assert_eq!(count("tags.stage = 'prod'"), 0);
    // Another handle's changes arrive through refresh.
    let other = Store::open(_dir.path()).unwrap();
    other
        .resume_run(logged[4].id)
        .unwrap()
        .set_tag("stage", "prod")
        .unwrap();
    other.flush().unwrap();
    store.refresh().unwrap();
    assert_eq!(count("tags.stage = 'prod'"), 1);
}

#[test]
fn bad_filters_and_orders_name_the_column() {
    let (_dir, store, _) = store_with_runs(3);
    let error = store
        .search_runs(&SearchRuns {
            filter: "metrics.acc > 0.9 or params.lr = '1'".into(),
            ..SearchRuns::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::InvalidFilter(runlog::query::FilterError { column: 19, .. })
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("column 19") && message.contains("OR"),
        "{message}"
    );
    let caret_line = message.lines().last().unwrap();
    assert_eq!(caret_line.find('^'), Some(2 + 18), "{message}");
    let error = store
        .search_runs(&SearchRuns {
            order_by: vec!["metrics.acc DOWN".into()],
            ..SearchRuns::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidFilter(runlog::query::FilterError { column: 13, .. })
        ),
        "{error}"
    );
    assert!(
        store
            .search_runs(&SearchRuns {
                max_results: 50_001,
                ..SearchRuns::default()
            })
            .is_err()
    );
}

#[test]
fn deleted_runs_are_searched_only_when_asked() {
    let (_dir, store, logged) = store_with_runs(6);
    store.delete_run(logged[0].id).unwrap();
    let active = store.search_runs(&SearchRuns::default()).unwrap();
    assert_eq!(active.runs.len(), 5);
    let deleted = store
        .search_runs(&SearchRuns {
            view: ViewType::DeletedOnly,
            ..SearchRuns::default()
        })
        .unwrap();
    assert_eq!(ids(&deleted), vec![logged[0].id]);
}

#[test]
fn compare_reads_summaries_per_run_and_key() {
    let (_dir, store, logged) = store_with_runs(8);
    let runs: Vec<RunId> = logged.iter().map(|r| r.id).collect();
    let rows = store.compare(&runs, &["acc", "missing"]).unwrap();
    assert_eq!(rows.len(), 16);
    for (row, run) in rows.chunks(2).zip(&logged) {
        assert_eq!(row[0].run, run.id);
        match (run.acc, row[0].summary) {
            (Some(acc), Some(summary)) => {
                assert_eq!(Aggregate::Last.of(&summary), acc);
                assert_eq!(Aggregate::Max.of(&summary), acc);
                assert_eq!(Aggregate::Min.of(&summary), acc * 0.5);
                assert_eq!(Aggregate::Mean.of(&summary), acc * 0.75);
                assert_eq!(Aggregate::Count.of(&summary), 2.0);
            }
            (None, None) => {}
            (want, got) => panic!("run {}: logged {want:?}, compared {got:?}", run.id),
        }
        assert_eq!(row[1].summary, None);
    }
    assert!(matches!(
        store.compare(&[RunId(9)], &[]),
        Err(Error::NotFound(_))
    ));
}
