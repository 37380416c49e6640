//! MLflow 3's logged models: every logged-model endpoint and its error cases over real HTTP on
//! 127.0.0.1 (create, get, finalize, delete, search, tags, params, run outputs and inputs, the
//! model's artifacts under `mlflow-artifacts:/<exp>/models/<id>/artifacts`), and the models'
//! durability across reopening and compaction.

use runlog::{ModelLink, ModelOptions, ModelStatus, Store};
use serde_json::{Value, json};

use crate::server_util::{Answer, Client, Embedded, answer, assert_error, ok};
use crate::util::Store as TempStore;

const API: &str = "/api/2.0/mlflow";
const ARTIFACTS: &str = "/api/2.0/mlflow-artifacts/artifacts";

fn patch(client: &Client, path: &str, body: Value) -> Answer {
    answer(
        client
            .agent
            .patch(format!("{}{path}", client.base))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes()),
    )
}

fn create_model(client: &Client, body: Value) -> Value {
    ok(client.post("logged-models", body))["model"].clone()
}

#[test]
fn a_logged_model_is_created_uploaded_finalized_found_and_deleted_over_http() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, run) = client.create_run();
    let model = create_model(
        client,
        json!({"experiment_id": experiment, "name": "model", "source_run_id": run,
               "tags": [{"key": "mlflow.user", "value": "me"}],
               "params": [{"key": "alpha", "value": "0.5"}]}),
    );
    let id = model["info"]["model_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("m-") && id.len() == 34, "{id}");
    let info = &model["info"];
    assert_eq!(info["status"], "LOGGED_MODEL_PENDING");
    assert_eq!(info["name"], "model");
    assert_eq!(info["source_run_id"], run.as_str());
    assert_eq!(info["model_type"], "");
    assert_eq!(info["tags"], json!([{"key": "mlflow.user", "value": "me"}]));
    assert_eq!(
        model["data"]["params"],
        json!([{"key": "alpha", "value": "0.5"}])
    );
    let root = format!("{experiment}/models/{id}/artifacts");
    assert_eq!(
        info["artifact_uri"],
        format!("mlflow-artifacts:/{root}").as_str()
    );

    // The run links to the model it produced, and the model's files go up and down.
    ok(client.post(
        "runs/outputs",
        json!({"run_id": run, "models": [{"model_id": id, "step": 0}]}),
    ));
    for (path, content) in [
        ("MLmodel", &b"flavors: {}"[..]),
        ("sub/model.pkl", b"\x80\x04"),
    ] {
        let put = client.put(&format!("{ARTIFACTS}/{root}/{path}"), content);
        assert_eq!(put.status, 200, "{path}: {}", put.text());
    }
    let got = client.get(&format!("{ARTIFACTS}/{root}/sub/model.pkl"));
    assert_eq!((got.status, got.body.as_slice()), (200, &b"\x80\x04"[..]));
    let listed = client.get(&format!("{ARTIFACTS}?path={root}"));
    assert_eq!(
        listed.json(),
        json!({"files": [
            {"path": "MLmodel", "is_dir": false, "file_size": 11},
            {"path": "sub", "is_dir": true},
        ]})
    );

    let finalized = ok(patch(
        client,
        &format!("{API}/logged-models/{id}"),
        json!({"model_id": id, "status": "LOGGED_MODEL_READY"}),
    ));
    assert_eq!(finalized["model"]["info"]["status"], "LOGGED_MODEL_READY");
    let got = ok(client.get(&format!("{API}/logged-models/{id}")));
    assert_eq!(got["model"]["info"]["status"], "LOGGED_MODEL_READY");

    // Tags and params.
    ok(patch(
        client,
        &format!("{API}/logged-models/{id}/tags"),
        json!({"tags": [{"key": "t", "value": "v"}]}),
    ));
    ok(client.post(
        &format!("logged-models/{id}/params"),
        json!({"model_id": id, "params": [{"key": "beta", "value": "2"}]}),
    ));
    let got = ok(client.get(&format!("{API}/logged-models/{id}")));
    assert_eq!(
        got["model"]["info"]["tags"][1],
        json!({"key": "t", "value": "v"})
    );
    assert_eq!(
        got["model"]["data"]["params"][1],
        json!({"key": "beta", "value": "2"})
    );
    ok(client.delete(&format!("{API}/logged-models/{id}/tags/t")));
    let got = ok(client.get(&format!("{API}/logged-models/{id}")));
    assert_eq!(got["model"]["info"]["tags"].as_array().unwrap().len(), 1);

    // The run shows its output and, once logged, its input.
    ok(client.post(
        "runs/log-inputs",
        json!({"run_id": run, "models": [{"model_id": id}]}),
    ));
    let shown = ok(client.get(&format!("{API}/runs/get?run_id={run}")));
    assert_eq!(
        shown["run"]["outputs"],
        json!({"model_outputs": [{"model_id": id, "step": 0}]})
    );
    assert_eq!(
        shown["run"]["inputs"],
        json!({"model_inputs": [{"model_id": id}]})
    );

    // Search finds it by name (as `runs:/<run>/model` resolution asks), not by another name.
    let found = ok(client.post(
        "logged-models/search",
        json!({"experiment_ids": [experiment], "filter": "name = 'model'"}),
    ));
    assert_eq!(found["models"][0]["info"]["model_id"], id.as_str());
    let none = ok(client.post(
        "logged-models/search",
        json!({"experiment_ids": [experiment], "filter": "name = 'other'"}),
    ));
    assert_eq!(none, json!({}));

    ok(client.delete(&format!("{API}/logged-models/{id}")));
    assert_error(
        client.get(&format!("{API}/logged-models/{id}")),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        &format!("Logged model with ID '{id}' not found."),
    );
    let none = ok(client.post(
        "logged-models/search",
        json!({"experiment_ids": [experiment]}),
    ));
    assert_eq!(none, json!({}));
}

#[test]
fn logged_model_search_filters_orders_and_pages() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, _) = client.create_run();
    let mut ids = Vec::new();
    for (name, kind) in [("a", "sk"), ("b", "torch"), ("c", "sk")] {
        let model = create_model(
            client,
            json!({"experiment_id": experiment, "name": name, "model_type": kind,
                   "params": [{"key": "p", "value": name}]}),
        );
        ids.push(model["info"]["model_id"].as_str().unwrap().to_string());
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let names = |answer: &Value| -> Vec<String> {
        answer["models"]
            .as_array()
            .map(|models| {
                models
                    .iter()
                    .map(|m| m["info"]["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let search = |body: Value| ok(client.post("logged-models/search", body));
    // Newest first by default, then in the order asked for.
    assert_eq!(
        names(&search(json!({"experiment_ids": [experiment]}))),
        ["c", "b", "a"]
    );
    let ascending = json!([{"field_name": "creation_time", "ascending": true}]);
    assert_eq!(
        names(&search(
            json!({"experiment_ids": [experiment], "order_by": ascending})
        )),
        ["a", "b", "c"]
    );
    let filtered = search(json!({"experiment_ids": [experiment],
        "filter": "model_type = 'sk' AND params.p != 'a'"}));
    assert_eq!(names(&filtered), ["c"]);
    let by_status = search(json!({"experiment_ids": [experiment], "filter": "status = 'PENDING'"}));
    assert_eq!(names(&by_status).len(), 3);
    let by_id = search(json!({"experiment_ids": [experiment],
        "filter": format!("model_id = '{}'", ids[1])}));
    assert_eq!(names(&by_id), ["b"]);

    // Pages of one, each with the token of the one before.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"experiment_ids": [experiment], "max_results": 1});
        if let Some(token) = &token {
            body["page_token"] = json!(token);
        }
        let page = search(body);
        seen.extend(names(&page));
        match page["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["c", "b", "a"]);
    // Another experiment's models are not found.
    let other = ok(client.post("experiments/create", json!({"name": "other"})));
    let other = other["experiment_id"].as_str().unwrap();
    assert_eq!(search(json!({"experiment_ids": [other]})), json!({}));
}

#[test]
fn logged_model_errors_are_mlflows() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, run) = client.create_run();
    let unknown = "m-00000000000000000000000000000000";
    assert_error(
        client.post("logged-models", json!({})),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'experiment_id'",
    );
    assert_error(
        client.post("logged-models", json!({"experiment_id": "77"})),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "No Experiment with id=77 exists",
    );
    assert_error(
        client.post(
            "logged-models",
            json!({"experiment_id": experiment, "source_run_id": "ab"}),
        ),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "Run with id=ab not found",
    );
    for path in [unknown, "not-an-id"] {
        assert_error(
            client.get(&format!("{API}/logged-models/{path}")),
            404,
            "RESOURCE_DOES_NOT_EXIST",
            &format!("Logged model with ID '{path}' not found."),
        );
    }
    assert_error(
        client.delete(&format!("{API}/logged-models/{unknown}")),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "not found",
    );
    assert_error(
        patch(
            client,
            &format!("{API}/logged-models/{unknown}/tags"),
            json!({"tags": [{"key": "a", "value": "b"}]}),
        ),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "not found",
    );
    let id = create_model(client, json!({"experiment_id": experiment}))["info"]["model_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_error(
        client.delete(&format!("{API}/logged-models/{id}/tags/nope")),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        &format!("No tag with key 'nope' found for model with ID '{id}'."),
    );
    assert_error(
        patch(
            client,
            &format!("{API}/logged-models/{id}"),
            json!({"status": "LOGGED_MODEL_READY"}),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'model_id'",
    );
    assert_error(
        patch(
            client,
            &format!("{API}/logged-models/{id}"),
            json!({"model_id": id, "status": "DONE"}),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "'status'",
    );
    assert_error(
        client.post(
            &format!("logged-models/{id}/params"),
            json!({"params": [{"key": "a", "value": "1"}]}),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'model_id'",
    );
    assert_error(
        client.post("logged-models/search", json!({})),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'experiment_ids'",
    );
    assert_error(
        client.post(
            "logged-models/search",
            json!({"experiment_ids": [experiment], "filter": "colour = 'red'"}),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "colour",
    );
    assert_error(
        client.post(
            "runs/outputs",
            json!({"run_id": run, "models": [{"step": 1}]}),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "models[0].model_id",
    );
    // A model's artifact in another experiment, or of an unknown model, is not found; its
    // files are write-once and not deleted one by one.
    let put = client.put(&format!("{ARTIFACTS}/999/models/{id}/artifacts/x"), b"x");
    assert_eq!(put.status, 404, "{}", put.text());
    let put = client.put(
        &format!("{ARTIFACTS}/{experiment}/models/{unknown}/artifacts/x"),
        b"x",
    );
    assert_eq!(put.status, 404, "{}", put.text());
    let root = format!("{ARTIFACTS}/{experiment}/models/{id}/artifacts");
    assert_eq!(client.put(&format!("{root}/x"), b"x").status, 200);
    assert_eq!(client.put(&format!("{root}/x"), b"y").status, 400);
    assert_eq!(client.delete(&format!("{root}/x")).status, 501);
    assert_eq!(client.get(&format!("{root}/x")).body, b"x");
    // Nothing above wrote a second model.
    let all = ok(client.post(
        "logged-models/search",
        json!({"experiment_ids": [experiment]}),
    ));
    assert_eq!(all["models"].as_array().unwrap().len(), 1);
}

#[cfg(feature = "parquet")]
#[test]
fn logged_models_survive_reopening_and_compaction() {
    let dir = TempStore::new();
    let open = || Store::open(dir.dir.path()).unwrap();
    let store = open();
    let experiment = store.get_or_create_experiment("e").unwrap().id;
    let run = store
        .start_run(experiment, Default::default())
        .unwrap()
        .id();
    let options = ModelOptions {
        name: Some("m".into()),
        source_run: Some(run),
        tags: vec![("t".into(), "1".into())],
        params: vec![("p".into(), "x".into())],
        ..ModelOptions::default()
    };
    let model = store.create_logged_model(experiment, options).unwrap().id;
    let gone = store
        .create_logged_model(experiment, ModelOptions::default())
        .unwrap()
        .id;
    store
        .log_model_artifact_bytes(model, "MLmodel", b"flavors")
        .unwrap();
    store
        .set_logged_model_tags(model, &[("t".into(), "2".into())])
        .unwrap();
    store
        .finalize_logged_model(model, ModelStatus::Ready)
        .unwrap();
    store
        .link_run_models(run, &[(model, ModelLink::Output { step: 3 })])
        .unwrap();
    store.delete_logged_model(gone).unwrap();
    let before = store.logged_model(model).unwrap();
    store.close().unwrap();
    drop(store);

    let check = |store: &Store, when: &str| {
        assert_eq!(store.logged_model(model).unwrap(), before, "{when}");
        assert!(store.logged_model(gone).is_err(), "{when}");
        assert_eq!(
            store.run_model_links(run).unwrap(),
            [(model, ModelLink::Output { step: 3 })],
            "{when}"
        );
        assert_eq!(
            store.read_model_artifact(model, "MLmodel").unwrap(),
            b"flavors"
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
    assert_eq!(before.status, ModelStatus::Ready);
    assert_eq!(before.tags.get("t").map(String::as_str), Some("2"));
}

#[test]
fn log_model_metric_repeats_with_a_model_id_are_kept_once() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, run) = client.create_run();
    let id = create_model(
        client,
        json!({"experiment_id": experiment, "name": "model", "source_run_id": run}),
    )["info"]["model_id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(client.post(
        "runs/log-metric",
        json!({"run_id": run, "key": "acc", "value": 0.9, "timestamp": 5, "step": 0}),
    ));
    // What `log_model` sends for each call: the run's metrics again, naming the model.
    let repeat = json!({"key": "acc", "value": 0.9, "timestamp": 5, "step": 0, "model_id": id});
    for _ in 0..3 {
        ok(client.post(
            "runs/log-batch",
            json!({"run_id": run, "metrics": [repeat, repeat]}),
        ));
    }
    let history = |key: &str| {
        ok(client.get(&format!(
            "{API}/metrics/get-history?run_id={run}&metric_key={key}"
        )))["metrics"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(history("acc"), 1);

    // A model entry that is new is kept (once), and entries without a model are all kept.
    let fresh = json!({"key": "acc", "value": 0.8, "timestamp": 5, "step": 0, "model_id": id});
    let plain = json!({"key": "acc", "value": 0.9, "timestamp": 5, "step": 0});
    ok(client.post(
        "runs/log-batch",
        json!({"run_id": run, "metrics": [fresh, fresh, plain, plain]}),
    ));
    assert_eq!(history("acc"), 4);
}

#[test]
fn a_deleted_model_is_found_by_id_as_mlflow_finds_it() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, _) = client.create_run();
    // A source run that names no run is kept, as MLflow's SQL store keeps it.
    let unknown_run = "0123456789abcdef0123456789abcdef";
    let model = create_model(
        client,
        json!({"experiment_id": experiment, "name": "gone", "source_run_id": unknown_run,
               "tags": [{"key": "t", "value": "1"}]}),
    );
    assert_eq!(model["info"]["source_run_id"], unknown_run);
    let id = model["info"]["model_id"].as_str().unwrap().to_string();
    let path = format!("{API}/logged-models/{id}");
    ok(client.delete(&path));
    assert_error(
        client.get(&path),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        &format!("Logged model with ID '{id}' not found."),
    );
    let shown = ok(client.get(&format!("{path}?allow_deleted=true")));
    assert_eq!(shown["model"]["info"]["model_id"], id.as_str());
    let deleted_at = shown["model"]["info"]["last_updated_timestamp_ms"]
        .as_i64()
        .unwrap();
    assert!(deleted_at >= model["info"]["creation_timestamp_ms"].as_i64().unwrap());

    // Deleting again, finalizing, tagging, untagging and params all find it.
    ok(client.delete(&path));
    let finalized = ok(patch(
        client,
        &path,
        json!({"model_id": id, "status": "LOGGED_MODEL_READY"}),
    ));
    assert_eq!(finalized["model"]["info"]["status"], "LOGGED_MODEL_READY");
    // A key given twice keeps its last value, as MLflow's SQL store keeps it.
    ok(patch(
        client,
        &format!("{path}/tags"),
        json!({"tags": [{"key": "u", "value": "a"}, {"key": "u", "value": "b"}]}),
    ));
    ok(client.delete(&format!("{path}/tags/t")));
    assert_error(
        client.delete(&format!("{path}/tags/t")),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        &format!("No tag with key 't' found for model with ID '{id}'."),
    );
    ok(client.post(
        &format!("logged-models/{id}/params"),
        json!({"model_id": id, "params": [{"key": "p", "value": "1"}]}),
    ));
    let shown = ok(client.get(&format!("{path}?allow_deleted=TRUE")))["model"].clone();
    assert_eq!(shown["info"]["tags"], json!([{"key": "u", "value": "b"}]));
    assert_eq!(shown["data"]["params"], json!([{"key": "p", "value": "1"}]));
    assert_eq!(shown["info"]["status"], "LOGGED_MODEL_READY");
    // Still hidden from a plain get and from search.
    assert_eq!(client.get(&path).status, 404);
    assert_eq!(
        client.get(&format!("{path}?allow_deleted=false")).status,
        404
    );
    let none = ok(client.post(
        "logged-models/search",
        json!({"experiment_ids": [experiment]}),
    ));
    assert_eq!(none, json!({}));
}

/// A model's metric points: what `get` shows, and how search filters and orders on them.
fn model_metrics_over_http(client: &Client) -> (String, String, String, String) {
    let (experiment, run) = client.create_run();
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            // Apart in time, so that newest-first ties are broken by creation, not by id.
            std::thread::sleep(std::time::Duration::from_millis(2));
            create_model(
                client,
                json!({"experiment_id": experiment, "name": name, "source_run_id": run}),
            )["info"]["model_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let entry = |model: &str, key: &str, value: Value, timestamp: i64, step: i64| {
        json!({"key": key, "value": value, "timestamp": timestamp, "step": step,
               "model_id": model})
    };
    // a: acc 0.5 then, later, 0.7; b: acc 0.9 on dataset train; c: no acc.
    ok(client.post(
        "runs/log-batch",
        json!({"run_id": run, "metrics": [
            entry(&ids[0], "acc", json!(0.5), 10, 0),
            entry(&ids[0], "acc", json!(0.7), 20, 1),
            entry(&ids[0], "acc", json!(0.7), 20, 1),
        ]}),
    ));
    ok(client.post(
        "runs/log-metric",
        json!({"run_id": run, "key": "acc", "value": 0.9, "timestamp": 10, "step": 0,
               "model_id": ids[1], "dataset_name": "train", "dataset_digest": "d1"}),
    ));
    ok(client.post(
        "runs/log-batch",
        json!({"run_id": run, "metrics": [entry(&ids[2], "loss", json!("NaN"), 5, 0)]}),
    ));
    (experiment, run, ids[0].clone(), ids[1].clone())
}

#[test]
fn metrics_logged_with_a_model_id_are_the_models() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, run, a, b) = model_metrics_over_http(client);
    let got = ok(client.get(&format!("{API}/logged-models/{a}")));
    assert_eq!(
        got["model"]["data"]["metrics"],
        json!([
            {"key": "acc", "value": 0.5, "timestamp": 10, "step": 0, "model_id": a, "run_id": run},
            {"key": "acc", "value": 0.7, "timestamp": 20, "step": 1, "model_id": a, "run_id": run},
        ])
    );
    let got = ok(client.get(&format!("{API}/logged-models/{b}")));
    assert_eq!(
        got["model"]["data"]["metrics"],
        json!([{"key": "acc", "value": 0.9, "timestamp": 10, "step": 0, "dataset_name": "train",
                "dataset_digest": "d1", "model_id": b, "run_id": run}])
    );
    // The run keeps its own points as before: each new one once (the batch's repeat dropped).
    let history = ok(client.get(&format!(
        "{API}/metrics/get-history?run_id={run}&metric_key=acc"
    )));
    assert_eq!(history["metrics"].as_array().unwrap().len(), 3);

    let names = |body: Value| -> Vec<String> {
        ok(client.post("logged-models/search", body))["models"]
            .as_array()
            .map(|models| {
                (models.iter())
                    .map(|m| m["info"]["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    // Any point of the key counts for a filter; the latest orders.
    assert_eq!(
        names(json!({"experiment_ids": [experiment], "filter": "metrics.acc < 0.6"})),
        ["a"]
    );
    assert_eq!(
        names(json!({"experiment_ids": [experiment], "filter": "metrics.acc > 0.6"})),
        ["b", "a"]
    );
    let by_acc = |ascending: bool| {
        json!({"experiment_ids": [experiment],
               "order_by": [{"field_name": "metrics.acc", "ascending": ascending}]})
    };
    assert_eq!(names(by_acc(true)), ["a", "b", "c"]);
    assert_eq!(names(by_acc(false)), ["b", "a", "c"]);
    // Datasets restrict the points that count.
    let on_train = json!([{"dataset_name": "train", "dataset_digest": "d1"}]);
    assert_eq!(
        names(json!({"experiment_ids": [experiment], "datasets": on_train})),
        ["b"]
    );
    // A dataset given without a digest matches points without one, as MLflow's server does.
    let name_only = json!([{"dataset_name": "train"}]);
    assert_eq!(
        names(json!({"experiment_ids": [experiment], "datasets": name_only})),
        Vec::<String>::new()
    );
    // An order's dataset counts each field it gives; models without a point on it come
    // last, newest first.
    assert_eq!(
        names(json!({"experiment_ids": [experiment],
                     "order_by": [{"field_name": "metrics.acc", "dataset_name": "train"}]})),
        ["b", "c", "a"]
    );
    assert_eq!(
        names(
            json!({"experiment_ids": [experiment], "filter": "metrics.acc > 0",
                     "datasets": [{"dataset_name": "train", "dataset_digest": "other"}]})
        ),
        Vec::<String>::new()
    );
    assert_error(
        client.post(
            "logged-models/search",
            json!({"experiment_ids": [experiment], "datasets": [{"dataset_digest": "d1"}]}),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "`dataset_name` in the `datasets` clause must be specified.",
    );
    // NaN is kept as logged (MLflow's SQL store keeps a model's NaN as 0): it equals nothing.
    assert_eq!(
        names(json!({"experiment_ids": [experiment], "filter": "metrics.loss = 0"})),
        Vec::<String>::new()
    );
    let c = &ok(client.post(
        "logged-models/search",
        json!({"experiment_ids": [experiment], "filter": "name = 'c'"}),
    ))["models"][0];
    assert_eq!(c["data"]["metrics"][0]["value"], "NaN");
}

#[test]
fn a_models_metrics_survive_reopening_and_compaction_and_status_0_is_kept() {
    let dir = TempStore::new();
    let open = || Store::open(dir.dir.path()).unwrap();
    let store = open();
    let experiment = store.get_or_create_experiment("e").unwrap().id;
    let run = store.start_run(experiment, Default::default()).unwrap();
    let run_id = run.id();
    let model = store
        .create_logged_model(experiment, ModelOptions::default())
        .unwrap()
        .id;
    let point = |value: f64, step: i64| runlog::ModelMetric {
        model,
        run: run_id,
        key: "acc".into(),
        value,
        timestamp_ms: 7,
        step,
        dataset_name: None,
        dataset_digest: None,
    };
    let points = [point(0.5, 0), point(0.5, 0), point(0.25, 1)];
    store.log_model_metrics(&points).unwrap();
    store.log_model_metrics(&points[..1]).unwrap();
    store
        .finalize_logged_model(model, ModelStatus::Unspecified)
        .unwrap();
    let before = store.logged_model(model).unwrap();
    assert_eq!(before.metrics, [point(0.5, 0), point(0.25, 1)]);
    assert_eq!(before.status, ModelStatus::Unspecified);
    run.finish().unwrap();
    // A deleted run logs nothing more for a model.
    let deleted = store.start_run(experiment, Default::default()).unwrap();
    let deleted_id = deleted.id();
    deleted.finish().unwrap();
    store.delete_run(deleted_id).unwrap();
    let refused = runlog::ModelMetric {
        run: deleted_id,
        ..point(1.0, 2)
    };
    assert!(store.log_model_metrics(&[refused]).is_err());
    store.close().unwrap();
    drop(store);

    let store = open();
    assert_eq!(store.logged_model(model).unwrap(), before, "reopened");
    store.compact().unwrap();
    store.close().unwrap();
    drop(store);
    let verified = runlog::verify::verify(dir.dir.path()).unwrap();
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
    let store = open();
    assert_eq!(store.logged_model(model).unwrap(), before, "compacted");
}

#[test]
fn the_uis_model_artifact_routes_list_and_serve_files_and_refuse_escapes() {
    let server = Embedded::start();
    let client = &server.client;
    let (experiment, _) = client.create_run();
    let id =
        create_model(client, json!({"experiment_id": experiment, "name": "m"}))["info"]["model_id"]
            .as_str()
            .unwrap()
            .to_string();
    let root = format!("{experiment}/models/{id}/artifacts");
    for (path, content) in [
        ("MLmodel", &b"flavors: {}"[..]),
        ("sub/model.pkl", b"\x80\x04"),
    ] {
        assert_eq!(
            client
                .put(&format!("{ARTIFACTS}/{root}/{path}"), content)
                .status,
            200
        );
    }
    let ajax = "/ajax-api/2.0/mlflow/logged-models";
    let listed = ok(client.get(&format!("{ajax}/{id}/artifacts/directories")));
    assert_eq!(
        listed,
        json!({"root_uri": format!("mlflow-artifacts:/{root}"), "files": [
            {"path": "MLmodel", "is_dir": false, "file_size": 11},
            {"path": "sub", "is_dir": true},
        ]})
    );
    let sub = ok(client.get(&format!(
        "{API}/logged-models/{id}/artifacts/directories?artifact_directory_path=sub"
    )));
    assert_eq!(
        sub["files"],
        json!([{"path": "sub/model.pkl", "is_dir": false, "file_size": 2}])
    );
    let file = client.get(&format!(
        "{ajax}/{id}/artifacts/files?artifact_file_path=sub%2Fmodel.pkl"
    ));
    assert_eq!((file.status, file.body.as_slice()), (200, &b"\x80\x04"[..]));
    let file = client.get(&format!(
        "{ajax}/{id}/artifacts/files?artifact_file_path=MLmodel"
    ));
    assert_eq!(
        (file.status, file.body.as_slice()),
        (200, &b"flavors: {}"[..])
    );

    // Paths that could leave the model's folder are refused before anything is read.
    for bad in [
        "..%2Fx",
        "sub%2F..%2F..%2Fx",
        "%2Fetc%2Fpasswd",
        "a%5Cb",
        "sub%2F.%2Fx",
    ] {
        for route in [
            format!("{ajax}/{id}/artifacts/files?artifact_file_path={bad}"),
            format!("{ajax}/{id}/artifacts/directories?artifact_directory_path={bad}"),
        ] {
            assert_error(
                client.get(&route),
                400,
                "INVALID_PARAMETER_VALUE",
                "Invalid path",
            );
        }
    }
    assert_error(
        client.get(&format!("{ajax}/{id}/artifacts/files")),
        400,
        "BAD_REQUEST",
        "Request must include the \"artifact_file_path\" query parameter.",
    );
    assert_error(
        client.get(&format!(
            "{ajax}/{id}/artifacts/files?artifact_file_path=nope"
        )),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "No such artifact",
    );
    assert_error(
        client.get(&format!(
            "{ajax}/{id}/artifacts/files?artifact_file_path=sub"
        )),
        400,
        "INVALID_PARAMETER_VALUE",
        "is a directory",
    );
    // The file route is the UI's, under ajax-api only, as MLflow serves it.
    assert_eq!(
        client
            .get(&format!(
                "{API}/logged-models/{id}/artifacts/files?artifact_file_path=MLmodel"
            ))
            .status,
        404
    );
    // A deleted model's files are not served, as MLflow looks the model up without
    // `allow_deleted`.
    ok(client.delete(&format!("{API}/logged-models/{id}")));
    for route in [
        format!("{ajax}/{id}/artifacts/files?artifact_file_path=MLmodel"),
        format!("{ajax}/{id}/artifacts/directories"),
    ] {
        assert_error(
            client.get(&route),
            404,
            "RESOURCE_DOES_NOT_EXIST",
            &format!("Logged model with ID '{id}' not found."),
        );
    }
}
