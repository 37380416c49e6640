//! Datasets (MLflow's `log_inputs`): `runs/log-inputs` with datasets over real HTTP on
//! 127.0.0.1, read back by `runs/get`, `runs/search` and `experiments/search-datasets`, with
//! MLflow's dedup rules, its field checks and limits, and the errors for unknown and deleted
//! runs; and the datasets' survival across reopening and compaction.

use runlog::{Dataset, DatasetInput, DatasetSummary, Store};
use serde_json::{Value, json};

use crate::server_util::{Answer, Client, Embedded, assert_error, ok};
use crate::util::Store as TempStore;

/// A `DatasetInput` message as MLflow's client sends it.
fn input(name: &str, digest: &str, source: &str, context: Option<&str>) -> Value {
    let mut input = json!({"dataset": {
        "name": name,
        "digest": digest,
        "source_type": "local",
        "source": source,
        "schema": "{\"mlflow_tensorspec\": {}}",
        "profile": "{\"num_rows\": 3}",
    }});
    if let Some(context) = context {
        input["tags"] = json!([{"key": "mlflow.data.context", "value": context}]);
    }
    input
}

fn log_inputs(client: &Client, run: &str, inputs: Value) -> Answer {
    client.post(
        "runs/log-inputs",
        json!({"run_id": run, "datasets": inputs}),
    )
}

fn run_inputs(client: &Client, run: &str) -> Value {
    let got = ok(client.get(&format!("/api/2.0/mlflow/runs/get?run_id={run}")));
    got["run"]["inputs"].clone()
}

fn search_datasets(client: &Client, experiments: &[&str]) -> Value {
    ok(client.post(
        "experiments/search-datasets",
        json!({ "experiment_ids": experiments }),
    ))
}

#[test]
fn datasets_are_kept_and_read_back_as_mlflow_shows_them() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, run) = client.create_run();
    ok(log_inputs(
        client,
        &run,
        json!([
            input("train", "d1", "{\"uri\": \"a\"}", Some("training")),
            input("eval", "d2", "{\"uri\": \"b\"}", Some("eval")),
        ]),
    ));
    let inputs = run_inputs(client, &run);
    assert_eq!(
        inputs["dataset_inputs"][0],
        json!({
            "tags": [{"key": "mlflow.data.context", "value": "training"}],
            "dataset": {
                "name": "train",
                "digest": "d1",
                "source_type": "local",
                "source": "{\"uri\": \"a\"}",
                "schema": "{\"mlflow_tensorspec\": {}}",
                "profile": "{\"num_rows\": 3}",
            },
        })
    );
    assert_eq!(inputs["dataset_inputs"][1]["dataset"]["name"], "eval");
    assert_eq!(inputs["dataset_inputs"].as_array().unwrap().len(), 2);
    assert!(inputs.get("model_inputs").is_none(), "{inputs}");

    let searched = ok(client.post("runs/search", json!({"experiment_ids": [experiment]})));
    assert_eq!(searched["runs"][0]["inputs"], inputs);

    assert_eq!(
        search_datasets(client, &[&experiment]),
        json!({"dataset_summaries": [
            {"experiment_id": experiment, "name": "eval", "digest": "d2", "context": "eval"},
            {"experiment_id": experiment, "name": "train", "digest": "d1", "context": "training"},
        ]})
    );
}

#[test]
fn a_dataset_and_an_input_keep_their_first_logging_as_in_mlflow() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, run) = client.create_run();
    // Within one request the first entry of a pair counts.
    ok(log_inputs(
        client,
        &run,
        json!([
            input("train", "d1", "first", Some("training")),
            input("train", "d1", "second", Some("eval")),
        ]),
    ));
    // Logged again with other tags and another source: nothing changes.
    ok(log_inputs(
        client,
        &run,
        json!([input("train", "d1", "third", Some("eval"))]),
    ));
    let inputs = run_inputs(client, &run)["dataset_inputs"].clone();
    assert_eq!(inputs.as_array().unwrap().len(), 1, "{inputs}");
    assert_eq!(inputs[0]["dataset"]["source"], "first");
    assert_eq!(inputs[0]["tags"][0]["value"], "training");

    // Another run of the experiment gets the experiment's dataset (its first source), with
    // its own tags.
    let other = client.create_run_in(&experiment);
    ok(log_inputs(
        client,
        &other,
        json!([input("train", "d1", "fourth", None)]),
    ));
    let inputs = run_inputs(client, &other)["dataset_inputs"].clone();
    assert_eq!(inputs[0]["dataset"]["source"], "first");
    assert!(inputs[0].get("tags").is_none(), "{inputs}");

    // A run of another experiment has a dataset of its own.
    let elsewhere =
        ok(client.post("experiments/create", json!({"name": "elsewhere"})))["experiment_id"]
            .as_str()
            .unwrap()
            .to_string();
    let third = client.create_run_in(&elsewhere);
    ok(log_inputs(
        client,
        &third,
        json!([input("train", "d1", "fifth", None)]),
    ));
    let inputs = run_inputs(client, &third)["dataset_inputs"].clone();
    assert_eq!(inputs[0]["dataset"]["source"], "fifth");

    // One summary per dataset and context, in each experiment.
    assert_eq!(
        search_datasets(client, &[&experiment, &elsewhere, " -7 "]),
        json!({"dataset_summaries": [
            {"experiment_id": experiment, "name": "train", "digest": "d1"},
            {"experiment_id": experiment, "name": "train", "digest": "d1", "context": "training"},
            {"experiment_id": elsewhere, "name": "train", "digest": "d1"},
        ]})
    );
}

#[test]
fn runs_get_shows_datasets_beside_model_inputs_and_outputs() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, run) = client.create_run();
    let model = ok(client.post(
        "logged-models",
        json!({"experiment_id": experiment, "name": "m"}),
    ))["model"]["info"]["model_id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(client.post(
        "runs/log-inputs",
        json!({"run_id": run, "datasets": [input("train", "d1", "s", None)],
               "models": [{"model_id": model}]}),
    ));
    ok(client.post(
        "runs/outputs",
        json!({"run_id": run, "models": [{"model_id": model, "step": 1}]}),
    ));
    let got = ok(client.get(&format!("/api/2.0/mlflow/runs/get?run_id={run}")))["run"].clone();
    assert_eq!(
        got["inputs"]["dataset_inputs"][0]["dataset"]["name"],
        "train"
    );
    assert_eq!(got["inputs"]["model_inputs"], json!([{"model_id": model}]));
    assert_eq!(
        got["outputs"]["model_outputs"],
        json!([{"model_id": model, "step": 1}])
    );
    // As MLflow's SQL store: search results carry datasets and model outputs, not model
    // inputs.
    let searched =
        ok(client.post("runs/search", json!({"experiment_ids": [experiment]})))["runs"][0].clone();
    assert_eq!(
        searched["inputs"]["dataset_inputs"],
        got["inputs"]["dataset_inputs"]
    );
    assert!(
        searched["inputs"].get("model_inputs").is_none(),
        "{searched}"
    );
    assert_eq!(searched["outputs"], got["outputs"]);
}

#[test]
fn log_inputs_refuses_missing_fields_and_over_long_values_writing_nothing() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, run) = client.create_run();
    let long = |chars: usize| "x".repeat(chars);
    let missing = |field: &str| {
        let mut entry = input("train", "d1", "s", None);
        entry["dataset"].as_object_mut().unwrap().remove(field);
        entry
    };
    let with = |field: &str, value: Value| {
        let mut entry = input("train", "d1", "s", None);
        entry["dataset"][field] = value;
        entry
    };
    let tagged = |key: &str, value: &str| {
        let mut entry = input("train", "d1", "s", None);
        entry["tags"] = json!([{"key": key, "value": value}]);
        entry
    };
    let cases = [
        (json!([{"tags": []}]), "datasets[0].dataset"),
        (json!([missing("name")]), "datasets[0].dataset.name"),
        (json!([missing("digest")]), "datasets[0].dataset.digest"),
        (
            json!([missing("source_type")]),
            "datasets[0].dataset.source_type",
        ),
        (json!([missing("source")]), "datasets[0].dataset.source"),
        (json!([with("name", json!(""))]), "datasets[0].dataset.name"),
        (json!([with("name", json!(5))]), "datasets[0].dataset.name"),
        (json!(["text"]), "datasets[0]"),
        (json!({"dataset": {}}), "datasets"),
        (
            json!([input("ok", "d0", "s", None), tagged("", "v")]),
            "datasets[1].tags[0].key",
        ),
        (
            json!([with("name", json!(long(501)))]),
            "'name' exceeds the maximum length of 500 characters",
        ),
        (
            json!([with("digest", json!(long(37)))]),
            "'digest' exceeds the maximum length of 36 characters",
        ),
        (
            json!([with("source", json!(long(65_536)))]),
            "'source' exceeds the maximum length of 65535 characters",
        ),
        (
            json!([with("schema", json!(long(1_048_576)))]),
            "'schema' exceeds the maximum length of 1048575 characters",
        ),
        (
            json!([with("profile", json!(long(1_048_577)))]),
            "'profile' of 1048577 bytes exceeds the 1048576 bytes",
        ),
        (
            json!([tagged(&long(256), "v")]),
            "'key' exceeds the maximum length of 255 characters",
        ),
        (
            json!([tagged("k", &long(501))]),
            "'value' exceeds the maximum length of 500 characters",
        ),
        (
            {
                let mut entry = tagged("k", "1");
                entry["tags"] = json!([{"key": "k", "value": "1"}, {"key": "k", "value": "2"}]);
                json!([entry])
            },
            "key \"k\" is given twice",
        ),
    ];
    for (inputs, message_part) in cases {
        // A good entry first: the whole request is refused, so it is not kept either.
        let mut all = vec![input("good", "g1", "s", None)];
        match inputs {
            Value::Array(entries) => all.extend(entries),
            other => {
                assert_error(
                    log_inputs(client, &run, other),
                    400,
                    "INVALID_PARAMETER_VALUE",
                    message_part,
                );
                continue;
            }
        }
        let shifted = message_part
            .replace("datasets[1]", "datasets[2]")
            .replace("datasets[0]", "datasets[1]");
        assert_error(
            log_inputs(client, &run, Value::Array(all)),
            400,
            "INVALID_PARAMETER_VALUE",
            &shifted,
        );
    }
    assert!(run_inputs(client, &run).get("dataset_inputs").is_none());
    assert_eq!(search_datasets(client, &[&experiment]), json!({}));
    // The longest values MLflow allows are kept.
    ok(log_inputs(
        client,
        &run,
        json!([{
            "dataset": {"name": long(500), "digest": long(36), "source_type": "local",
                        "source": long(65_535), "profile": long(1_048_576)},
            "tags": [{"key": long(255), "value": long(500)}],
        }]),
    ));
    let inputs = run_inputs(client, &run)["dataset_inputs"].clone();
    assert_eq!(
        inputs[0]["dataset"]["profile"].as_str().unwrap().len(),
        1_048_576
    );
    assert!(
        inputs[0]["dataset"].get("schema").is_none(),
        "{}",
        inputs[0]["tags"]
    );
}

#[test]
fn log_inputs_refuses_unknown_and_deleted_runs() {
    let server = Embedded::start();
    let client = &server.client;
    let (_, run) = client.create_run();
    let datasets = json!([input("train", "d1", "s", None)]);
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_error(
        log_inputs(client, unknown, datasets.clone()),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        &format!("Run with id={unknown} not found"),
    );
    assert_error(
        log_inputs(client, "not-a-run", datasets.clone()),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "Run with id=not-a-run not found",
    );
    assert_error(
        client.post("runs/log-inputs", json!({"datasets": datasets.clone()})),
        400,
        "INVALID_PARAMETER_VALUE",
        "'run_id'",
    );
    ok(client.post("runs/delete", json!({ "run_id": run })));
    assert_error(
        log_inputs(client, &run, datasets),
        400,
        "INVALID_PARAMETER_VALUE",
        "must be in the 'active' state",
    );
}

#[test]
fn search_datasets_checks_its_experiment_ids() {
    let server = Embedded::start();
    let client = &server.client;
    assert_error(
        client.post("experiments/search-datasets", json!({})),
        400,
        "INVALID_PARAMETER_VALUE",
        "must specify at least one experiment_id",
    );
    let many: Vec<String> = (0..21).map(|i| i.to_string()).collect();
    assert_error(
        client.post(
            "experiments/search-datasets",
            json!({ "experiment_ids": many }),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "cannot specify more than 20 experiment_ids. Received 21",
    );
    assert_eq!(search_datasets(client, &["0", "12345"]), json!({}));
    // MLflow parses each id as an integer: anything else is refused, in runs/search too.
    for route in ["experiments/search-datasets", "runs/search"] {
        assert_error(
            client.post(route, json!({ "experiment_ids": ["0", "not-a-number"] })),
            400,
            "INVALID_PARAMETER_VALUE",
            "Invalid experiment ID 'not-a-number'. Experiment ID must be a valid integer.",
        );
    }
}

fn dataset(name: &str, source: &str) -> Dataset {
    Dataset {
        name: name.into(),
        digest: "d1".into(),
        source_type: "local".into(),
        source: source.into(),
        schema: Some("{}".into()),
        profile: None,
    }
}

#[cfg(feature = "parquet")]
#[test]
fn datasets_survive_reopening_and_compaction() {
    let dir = TempStore::new();
    let open = || Store::open(dir.dir.path()).unwrap();
    let store = open();
    let experiment = store.get_or_create_experiment("e").unwrap().id;
    let start = || store.start_run(experiment, Default::default()).unwrap();
    let (first, second) = (start(), start());
    let context = |value: &str| vec![("mlflow.data.context".to_string(), value.to_string())];
    let train = DatasetInput {
        dataset: dataset("train", "first"),
        tags: context("training"),
    };
    let eval = DatasetInput {
        dataset: dataset("eval", "s"),
        tags: Vec::new(),
    };
    store
        .log_dataset_inputs(first.id(), &[train.clone(), eval.clone()])
        .unwrap();
    let relogged = DatasetInput {
        dataset: dataset("train", "later"),
        tags: context("eval"),
    };
    store
        .log_dataset_inputs(second.id(), std::slice::from_ref(&relogged))
        .unwrap();
    store
        .log_dataset_inputs(first.id(), std::slice::from_ref(&relogged))
        .unwrap();
    let (first, second) = (first.id(), second.id());
    store.close().unwrap();
    drop(store);

    let expected_second = DatasetInput {
        dataset: dataset("train", "first"),
        tags: context("eval"),
    };
    let summary = |name: &str, context: Option<&str>| DatasetSummary {
        experiment,
        name: name.into(),
        digest: "d1".into(),
        context: context.map(str::to_string),
    };
    let check = |store: &Store, when: &str| {
        assert_eq!(
            store.run_dataset_inputs(first).unwrap(),
            [train.clone(), eval.clone()],
            "{when}"
        );
        assert_eq!(
            store.run_dataset_inputs(second).unwrap(),
            std::slice::from_ref(&expected_second),
            "{when}"
        );
        assert_eq!(
            store.dataset_summaries(&[experiment]).unwrap(),
            [
                summary("eval", None),
                summary("train", Some("eval")),
                summary("train", Some("training")),
            ],
            "{when}"
        );
    };
    let store = open();
    check(&store, "after reopening");
    let report = store.compact().unwrap();
    assert!(report.metadata_events > 0, "{report:?}");
    store.close().unwrap();
    drop(store);
    let verified = runlog::verify::verify(dir.dir.path()).unwrap();
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
    let store = open();
    check(&store, "after compaction");
    // A second compaction merges nothing away: the datasets stay.
    store.compact().unwrap();
    check(&store, "after a second compaction");
}

#[test]
fn a_read_only_handle_sees_another_handles_datasets_and_cannot_log_them() {
    let dir = TempStore::new();
    let writer = Store::open(dir.dir.path()).unwrap();
    let experiment = writer.get_or_create_experiment("e").unwrap().id;
    let run = writer
        .start_run(experiment, Default::default())
        .unwrap()
        .id();
    let reader = Store::open_with(
        dir.dir.path(),
        runlog::StoreOptions {
            read_only: true,
            ..runlog::StoreOptions::default()
        },
    )
    .unwrap();
    let input = DatasetInput {
        dataset: dataset("train", "s"),
        tags: Vec::new(),
    };
    writer
        .log_dataset_inputs(run, std::slice::from_ref(&input))
        .unwrap();
    writer.flush().unwrap();
    reader.refresh().unwrap();
    assert_eq!(
        reader.run_dataset_inputs(run).unwrap(),
        std::slice::from_ref(&input)
    );
    assert!(matches!(
        reader.log_dataset_inputs(run, &[input]),
        Err(runlog::Error::ReadOnly)
    ));
}

#[test]
fn runs_search_filters_on_datasets_as_mlflow_does() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, first) = client.create_run();
    let second = client.create_run_in(&experiment);
    ok(log_inputs(
        client,
        &first,
        json!([
            input("train", "d1", "s", Some("training")),
            input("holdout", "d2", "s", None),
        ]),
    ));
    ok(log_inputs(
        client,
        &second,
        json!([input("train", "d1", "s", Some("eval"))]),
    ));
    let found = |filter: &str| -> Vec<String> {
        let body = json!({"experiment_ids": [experiment], "filter": filter});
        let mut ids: Vec<String> = ok(client.post("runs/search", body))["runs"]
            .as_array()
            .map(|runs| {
                runs.iter()
                    .map(|run| run["info"]["run_id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    };
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    assert_eq!(found("dataset.name = 'train'"), both);
    assert_eq!(
        found("datasets.digest = 'd2'"),
        std::slice::from_ref(&first)
    );
    assert_eq!(
        found("dataset.context = 'eval'"),
        std::slice::from_ref(&second)
    );
    // An input without a context tag matches no context clause, `!=` included.
    assert_eq!(
        found("dataset.context != 'eval'"),
        std::slice::from_ref(&first)
    );
    assert_eq!(found("dataset.context IN ('eval', 'training')"), both);
    assert_eq!(
        found("dataset.name NOT IN ('train')"),
        std::slice::from_ref(&first)
    );
    assert_eq!(
        found("dataset.name LIKE 'hold%'"),
        std::slice::from_ref(&first)
    );
    assert_eq!(
        found("dataset.name = 'train' AND dataset.context = 'training' AND tags.x IS NULL"),
        std::slice::from_ref(&first)
    );
    assert!(found("dataset.name = 'none'").is_empty());
    for (filter, message_part) in [
        ("dataset.source = 'x'", "unknown dataset field \"source\""),
        (
            "dataset.name IS NULL",
            "'IS NULL' is not allowed on dataset.name",
        ),
        ("dataset.name = 5", "dataset.name takes a quoted string"),
    ] {
        let body = json!({"experiment_ids": [experiment], "filter": filter});
        assert_error(
            client.post("runs/search", body),
            400,
            "INVALID_PARAMETER_VALUE",
            message_part,
        );
    }
    let body = json!({"experiment_ids": [experiment], "order_by": ["dataset.name"]});
    assert_error(
        client.post("runs/search", body),
        400,
        "INVALID_PARAMETER_VALUE",
        "not ordered by them",
    );
}

/// An empty context tag is kept on the input but left out of the summary, as MLflow's
/// `_DatasetSummary.to_proto` sets the field only when it is not empty.
#[test]
fn an_empty_context_is_no_context_in_search_datasets() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, run) = client.create_run();
    ok(log_inputs(
        client,
        &run,
        json!([input("train", "d1", "s", Some(""))]),
    ));
    assert_eq!(
        search_datasets(client, &[&experiment]),
        json!({"dataset_summaries": [
            {"experiment_id": experiment, "name": "train", "digest": "d1"},
        ]})
    );
}

/// What a handle shows of the datasets: each run's inputs (runs in `runs`' order) and the
/// experiment's summaries. A run's inputs are sorted by name: inputs of one run logged by two
/// writers show in the order they were applied (`catalog/datasets.rs`), which a compaction or
/// a reopening changes.
type DatasetsView = (Vec<(runlog::RunId, Vec<DatasetInput>)>, Vec<DatasetSummary>);

#[cfg(feature = "parquet")]
fn datasets_view(
    store: &Store,
    experiment: runlog::ExperimentId,
    runs: &[runlog::RunId],
) -> DatasetsView {
    store.refresh().unwrap();
    let inputs = runs
        .iter()
        .map(|run| {
            let mut inputs = store.run_dataset_inputs(*run).unwrap();
            inputs.sort_by(|left, right| left.dataset.name.cmp(&right.dataset.name));
            (*run, inputs)
        })
        .collect();
    (inputs, store.dataset_summaries(&[experiment]).unwrap())
}

/// Loggings of one dataset with other fields tried by two writers.
#[cfg(feature = "parquet")]
const RACE_ATTEMPTS: usize = 50;

/// Has `first` and then `second` log a dataset of one name with other fields, for their runs
/// `runs`, `second` not having seen `first`'s logging, until the two fall in one millisecond:
/// `second`'s handle then keeps its own fields (of two originals in one millisecond the one
/// applied first stays). Returns that dataset's name, or `None` after `RACE_ATTEMPTS`.
#[cfg(feature = "parquet")]
fn race_in_one_millisecond(
    first: &Store,
    second: &Store,
    runs: (runlog::RunId, runlog::RunId),
) -> Option<String> {
    (0..RACE_ATTEMPTS).find_map(|attempt| {
        let name = format!("raced{attempt}");
        let logged = |store: &Store, run, source: &str| {
            let input = DatasetInput {
                dataset: dataset(&name, source),
                tags: Vec::new(),
            };
            store.log_dataset_inputs(run, &[input]).unwrap();
        };
        logged(first, runs.0, "first");
        logged(second, runs.1, "second");
        second.refresh().unwrap();
        let kept = second.run_dataset_inputs(runs.1).unwrap();
        let own = kept
            .iter()
            .any(|input| input.dataset.name == name && input.dataset.source == "second");
        own.then_some(name)
    })
}

/// More compactions than `METADATA_CHAINS_MAX`, each after two writers logged datasets and
/// inputs back to back (often in one millisecond), so that the chains are merged: both
/// handles, and the store reopened, show the same datasets before and after each compaction,
/// after the merge and after reopening. A dataset both writers log with other fields, the
/// second writer not having seen the first's logging yet, keeps the first logging's fields
/// once that logging is a compacted copy, even in the second writer's own handle and in the
/// same millisecond (`Stamp::precedes`: a copy precedes an original); round 0 retries such a
/// pair until one falls in one millisecond (`race_in_one_millisecond`).
#[cfg(feature = "parquet")]
#[test]
fn datasets_of_two_writers_survive_merged_metadata_chains() {
    let dir = TempStore::new();
    let open = || Store::open(dir.dir.path()).unwrap();
    let (first, second) = (open(), open());
    let experiment = first.get_or_create_experiment("e").unwrap().id;
    second.refresh().unwrap();
    let entry = |name: &str, source: &str, context: &str| DatasetInput {
        dataset: dataset(name, source),
        tags: vec![("mlflow.data.context".to_string(), context.to_string())],
    };
    let mut runs = Vec::new();
    let rounds = runlog::compaction::METADATA_CHAINS_MAX + 3;
    let mut merged = false;
    let mut raced = None;
    for round in 0..rounds {
        let mine = first
            .start_run(experiment, Default::default())
            .unwrap()
            .id();
        let theirs = second
            .start_run(experiment, Default::default())
            .unwrap()
            .id();
        runs.extend([mine, theirs]);
        first
            .log_dataset_inputs(
                mine,
                &[
                    entry("contested", "first", "training"),
                    entry("shared", "same", "training"),
                    entry(&format!("a{round}"), "a", "training"),
                ],
            )
            .unwrap();
        // `second` has not refreshed since `first` logged: in round 0 it logs `contested`
        // again, with its own fields; `shared` it logs with the same fields.
        second
            .log_dataset_inputs(
                theirs,
                &[
                    entry("contested", "second", "eval"),
                    entry("shared", "same", "eval"),
                    entry(&format!("b{round}"), "b", "eval"),
                ],
            )
            .unwrap();
        if round == 0 {
            raced = race_in_one_millisecond(&first, &second, (mine, theirs));
        }
        // An input of the first writer's run logged by the second writer.
        second.refresh().unwrap();
        second
            .log_dataset_inputs(mine, &[entry(&format!("b{round}"), "b", "eval")])
            .unwrap();
        first.flush().unwrap();
        second.flush().unwrap();

        let before = datasets_view(&first, experiment, &runs);
        let contested = |view: &DatasetsView| {
            view.0[0]
                .1
                .iter()
                .find(|input| input.dataset.name == "contested")
                .cloned()
        };
        assert_eq!(
            contested(&before).map(|input| input.dataset.source),
            Some("first".to_string()),
            "round {round}: the first writer keeps its own first logging"
        );
        // The writers take turns, so that each one's log is compacted into chains.
        let compacting = if round % 2 == 0 { &first } else { &second };
        let chains_before = compacting.manifest().unwrap().metadata.len();
        let report = compacting.compact().unwrap();
        assert!(report.metadata_events > 0, "round {round}: {report:?}");
        let chains_after = compacting.manifest().unwrap().metadata.len();
        merged |= chains_after <= chains_before;
        let when = format!("round {round}, {chains_after} chains");
        assert_eq!(
            datasets_view(&first, experiment, &runs),
            before,
            "{when}: first"
        );
        assert_eq!(
            datasets_view(&second, experiment, &runs),
            before,
            "{when}: second"
        );
        let reopened = open();
        assert_eq!(
            datasets_view(&reopened, experiment, &runs),
            before,
            "{when}: reopened"
        );
        drop(reopened);
    }
    assert!(merged, "no compaction merged the metadata chains");
    match raced {
        // Compacted in round 0, the first writer's logging is a copy; the second writer's
        // handle, which kept its own original of the same millisecond before, now shows the
        // copy's fields (the views were compared after each compaction).
        Some(name) => {
            let kept = datasets_view(&second, experiment, &runs).0[1]
                .1
                .iter()
                .find(|input| input.dataset.name == name)
                .map(|input| input.dataset.source.clone());
            assert_eq!(kept.as_deref(), Some("first"), "{name}");
        }
        None => println!(
            "no two loggings fell in one millisecond in {RACE_ATTEMPTS} attempts: the copy \
             rule was exercised across milliseconds only"
        ),
    }
    let last = datasets_view(&first, experiment, &runs);
    assert_eq!(last.0.len(), 2 * rounds);
    drop((first, second));
    assert_eq!(
        datasets_view(&open(), experiment, &runs),
        last,
        "all reopened"
    );
}
