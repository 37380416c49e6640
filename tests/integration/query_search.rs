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
    // Missing-metric runs fall back to the tie-breakers: start time descending.
    let tail_starts: Vec<i64> = all[first_missing..]
        .iter()
        .map(|r| r.info.start_time_ms)
        .collect();
    let mut sorted = tail_starts.clone();
    sorted.sort_by(|a, b| b.cmp(a));
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
    let _ = sorted;
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
        matches!(&error, Error::InvalidFilter { column: 19, .. }),
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
        matches!(error, Error::InvalidFilter { column: 13, .. }),
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
