//! MLflow's REST protocol layer (`runlog::mlflow::Service`), called directly without HTTP:
//! every tracking endpoint, its message shapes, and its error cases (malformed JSON, wrong
//! types, missing fields, over-limit batches, unknown ids, deleted runs, bad filters).

use std::sync::Arc;

use runlog::mlflow::{Method, Reply, Request, Service};
use runlog::{Durability, Store, StoreOptions};
use serde_json::{Value, json};

use crate::util::Store as TempStore;

struct Api {
    service: Service,
    _dir: TempStore,
}

impl Api {
    fn new() -> Api {
        let dir = TempStore::new();
        let options = StoreOptions {
            durability: Durability::Buffered,
            ..StoreOptions::default()
        };
        let store = Store::open_with(dir.dir.path(), options).unwrap();
        Api {
            service: Service::new(Arc::new(store)),
            _dir: dir,
        }
    }

    fn raw(&self, method: Method, path: &str, query: &str, body: &[u8]) -> Reply {
        self.service.handle(Request {
            method,
            path,
            query,
            body,
        })
    }

    fn call(&self, method: Method, route: &str, query: &str, body: &[u8]) -> (u16, Value) {
        let path = format!("/api/2.0/mlflow/{route}");
        let reply = self.raw(method, &path, query, body);
        assert_eq!(reply.content_type, "application/json");
        let value = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("{route}: reply is not JSON ({e}): {:?}", reply.body));
        (reply.status, value)
    }

    fn post(&self, route: &str, body: Value) -> (u16, Value) {
        self.call(Method::Post, route, "", body.to_string().as_bytes())
    }

    fn get(&self, route: &str, query: &str) -> (u16, Value) {
        self.call(Method::Get, route, query, b"")
    }

    fn ok_post(&self, route: &str, body: Value) -> Value {
        let (status, value) = self.post(route, body);
        assert_eq!(status, 200, "{route}: {value}");
        value
    }

    fn ok_get(&self, route: &str, query: &str) -> Value {
        let (status, value) = self.get(route, query);
        assert_eq!(status, 200, "{route}?{query}: {value}");
        value
    }

    fn experiment(&self, name: &str) -> String {
        let created = self.ok_post("experiments/create", json!({ "name": name }));
        created["experiment_id"].as_str().unwrap().to_string()
    }

    fn run(&self, experiment: &str) -> String {
        let created = self.ok_post(
            "runs/create",
            json!({ "experiment_id": experiment, "start_time": 1_700_000_000_000_i64 }),
        );
        created["run"]["info"]["run_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// Asserts an MLflow error: its HTTP status, `error_code`, and a piece of its message.
fn assert_error(answer: (u16, Value), status: u16, code: &str, message_part: &str) {
    let (got_status, body) = answer;
    assert_eq!(got_status, status, "{body}");
    assert_eq!(body["error_code"], code, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(message_part),
        "message {message:?} lacks {message_part:?}"
    );
}

#[test]
fn mlflow_unknown_paths_and_methods_are_endpoint_not_found() {
    let api = Api::new();
    assert_error(
        api.get("runs/no-such-route", ""),
        404,
        "ENDPOINT_NOT_FOUND",
        "runs/no-such-route",
    );
    assert_error(
        api.post("runs/get", json!({})),
        404,
        "ENDPOINT_NOT_FOUND",
        "POST",
    );
    let reply = api.raw(Method::Get, "/somewhere/else", "", b"");
    assert_eq!(reply.status, 404);
    let reply = api.raw(
        Method::Post,
        "/api/2.0/mlflow-artifacts/artifacts/x",
        "",
        b"",
    );
    assert_eq!(reply.status, 404);
}

#[test]
fn mlflow_default_experiment_zero_exists() {
    let api = Api::new();
    let got = api.ok_get("experiments/get", "experiment_id=0");
    assert_eq!(got["experiment"]["name"], "Default");
    assert_eq!(got["experiment"]["experiment_id"], "0");
    assert_eq!(got["experiment"]["lifecycle_stage"], "active");
    assert_eq!(
        got["experiment"]["artifact_location"],
        "mlflow-artifacts:/0"
    );
    let run = api.run("0");
    let got = api.ok_get("runs/get", &format!("run_id={run}"));
    assert_eq!(got["run"]["info"]["experiment_id"], "0");
}

#[test]
fn mlflow_experiment_lifecycle() {
    let api = Api::new();
    let body = json!({"name": "exp", "tags": [{"key": "team", "value": "vision"}]});
    let id = api.ok_post("experiments/create", body)["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.parse::<u64>().is_ok(), "ids are decimal strings: {id}");
    let got = api.ok_get("experiments/get-by-name", "experiment_name=exp");
    let experiment = &got["experiment"];
    assert_eq!(experiment["experiment_id"], id.as_str());
    assert_eq!(
        experiment["tags"],
        json!([{"key": "team", "value": "vision"}])
    );
    assert_eq!(
        experiment["artifact_location"],
        format!("mlflow-artifacts:/{id}")
    );
    assert!(experiment["creation_time"].is_i64());

    assert_error(
        api.post("experiments/create", json!({"name": "exp"})),
        400,
        "RESOURCE_ALREADY_EXISTS",
        "Experiment(name=exp) already exists",
    );
    api.experiment("taken");
    assert_error(
        api.post(
            "experiments/update",
            json!({"experiment_id": id, "new_name": "taken"}),
        ),
        400,
        "BAD_REQUEST",
        "Experiment(name=taken) already exists",
    );
    api.ok_post(
        "experiments/update",
        json!({"experiment_id": id, "new_name": "renamed"}),
    );
    let body = json!({"experiment_id": id, "key": "k", "value": "v"});
    api.ok_post("experiments/set-experiment-tag", body);
    let got = api.ok_get("experiments/get", &format!("experiment_id={id}"));
    assert_eq!(got["experiment"]["name"], "renamed");
    assert_eq!(got["experiment"]["tags"].as_array().unwrap().len(), 2);
    let body = json!({"experiment_id": id, "key": "k"});
    api.ok_post("experiments/delete-experiment-tag", body.clone());
    assert_error(
        api.post("experiments/delete-experiment-tag", body),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "No tag with name: k",
    );

    let run = api.run(&id);
    let gone = api.run(&id);
    api.ok_post("runs/delete", json!({ "run_id": gone }));
    api.ok_post("experiments/delete", json!({"experiment_id": id}));
    let got = api.ok_get("experiments/get", &format!("experiment_id={id}"));
    assert_eq!(got["experiment"]["lifecycle_stage"], "deleted");
    // As in MLflow, deleting an experiment deletes its runs, and only an active one can go.
    let got = api.ok_get("runs/get", &format!("run_id={run}"));
    assert_eq!(got["run"]["info"]["lifecycle_stage"], "deleted");
    assert_error(
        api.post("experiments/delete", json!({"experiment_id": id})),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "No Experiment with id=",
    );
    assert_error(
        api.post(
            "experiments/update",
            json!({"experiment_id": id, "new_name": "x"}),
        ),
        500,
        "INVALID_STATE",
        "Cannot rename a non-active experiment.",
    );
    assert_error(
        api.post(
            "experiments/set-experiment-tag",
            json!({"experiment_id": id, "key": "k", "value": "v"}),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "must be in the 'active' state",
    );
    assert_error(
        api.post("runs/create", json!({"experiment_id": id})),
        400,
        "INVALID_PARAMETER_VALUE",
        "must be in the 'active' state",
    );
    api.ok_post("experiments/restore", json!({"experiment_id": id}));
    // Restoring restores every run of the experiment, as MLflow does.
    for restored in [&run, &gone] {
        let got = api.ok_get("runs/get", &format!("run_id={restored}"));
        assert_eq!(got["run"]["info"]["lifecycle_stage"], "active");
    }
    assert_error(
        api.post("experiments/restore", json!({"experiment_id": id})),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "No Experiment with id=",
    );
    api.run(&id);
}

#[test]
fn mlflow_experiment_errors() {
    let api = Api::new();
    assert_error(
        api.get("experiments/get", "experiment_id=12345"),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "No Experiment with id=12345 exists",
    );
    assert_error(
        api.get("experiments/get", "experiment_id=not-a-number"),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "not-a-number",
    );
    assert_error(
        api.get("experiments/get-by-name", "experiment_name=nope"),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "Could not find experiment with name 'nope'",
    );
    assert_error(
        api.post("experiments/create", json!({})),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'name'",
    );
    assert_error(
        api.post("experiments/create", json!({"name": 5})),
        400,
        "INVALID_PARAMETER_VALUE",
        "Invalid value 5 for parameter 'name'",
    );
    let long = "x".repeat(501);
    assert_error(
        api.post("experiments/create", json!({ "name": long })),
        400,
        "INVALID_PARAMETER_VALUE",
        "500",
    );
    let bad_tags = json!({"name": "t", "tags": [{"key": "a/../b", "value": "v"}]});
    assert_error(
        api.post("experiments/create", bad_tags),
        400,
        "INVALID_PARAMETER_VALUE",
        "a/../b",
    );
    // The refused create wrote nothing.
    assert_eq!(
        api.get("experiments/get-by-name", "experiment_name=t").0,
        404
    );
}

#[test]
fn mlflow_search_experiments_get_and_post() {
    let api = Api::new();
    for name in ["vision/a", "vision/b", "text/c"] {
        api.experiment(name);
    }
    let got = api.ok_post(
        "experiments/search",
        json!({"filter": "name LIKE 'vision/%'", "order_by": ["name ASC"], "max_results": 1}),
    );
    assert_eq!(got["experiments"][0]["name"], "vision/a");
    let token = got["next_page_token"].as_str().unwrap().to_string();
    let body = json!({"filter": "name LIKE 'vision/%'", "order_by": ["name ASC"],
        "max_results": 1, "page_token": token});
    let next = api.ok_post("experiments/search", body);
    assert_eq!(next["experiments"][0]["name"], "vision/b");
    assert!(next.get("next_page_token").is_none());

    let got = api.ok_get(
        "experiments/search",
        "max_results=25&order_by=name+DESC&filter=name%20LIKE%20%27vision%2F%25%27",
    );
    let names: Vec<&str> = got["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vision/b", "vision/a"]);
    // The UI's experiments list: a tag IS NULL filter, GET.
    let got = api.ok_get(
        "experiments/search",
        "filter=tags.%60mlflow.experiment.isGateway%60%20IS%20NULL&max_results=25",
    );
    assert_eq!(got["experiments"].as_array().unwrap().len(), 4);
    assert_error(
        api.post("experiments/search", json!({"filter": "name ="})),
        400,
        "INVALID_PARAMETER_VALUE",
        "",
    );
    assert_error(
        api.post("experiments/search", json!({"view_type": "SOMETIMES"})),
        400,
        "INVALID_PARAMETER_VALUE",
        "view_type",
    );
}

#[test]
fn mlflow_run_create_get_update_shapes() {
    let api = Api::new();
    let experiment = api.experiment("runs");
    let body = json!({
        "experiment_id": experiment,
        "user_id": "alice",
        "run_name": "first",
        "start_time": 1_700_000_000_000_i64,
        "tags": [{"key": "mlflow.source.name", "value": "train.py"}],
    });
    let created = api.ok_post("runs/create", body);
    let info = &created["run"]["info"];
    let id = info["run_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(info["run_uuid"], id.as_str());
    assert_eq!(info["run_name"], "first");
    assert_eq!(info["user_id"], "alice");
    assert_eq!(info["status"], "RUNNING");
    assert_eq!(info["lifecycle_stage"], "active");
    assert_eq!(info["start_time"], 1_700_000_000_000_i64);
    assert!(info.get("end_time").is_none());
    assert_eq!(
        info["artifact_uri"],
        format!("mlflow-artifacts:/{experiment}/{id}/artifacts")
    );
    // MLflow's client names user "unknown" when it knows none; MLflow records no tag then.
    let body = json!({"experiment_id": experiment, "user_id": "unknown"});
    let anonymous = api.ok_post("runs/create", body);
    assert_eq!(anonymous["run"]["info"]["user_id"], "unknown");
    let tags = anonymous["run"]["data"]["tags"].as_array().unwrap();
    assert!(tags.iter().all(|t| t["key"] != "mlflow.user"), "{tags:?}");
    let tags = created["run"]["data"]["tags"].as_array().unwrap();
    let keys: Vec<&str> = tags.iter().map(|t| t["key"].as_str().unwrap()).collect();
    // No tag of the server's own process (its user, source or git commit) leaks in.
    assert_eq!(
        keys,
        ["mlflow.runName", "mlflow.source.name", "mlflow.user"]
    );

    let body = json!({"run_id": id, "status": "FINISHED", "end_time": 1_700_000_001_000_i64});
    let updated = api.ok_post("runs/update", body);
    assert_eq!(updated["run_info"]["status"], "FINISHED");
    assert_eq!(updated["run_info"]["end_time"], 1_700_000_001_000_i64);
    api.ok_post("runs/update", json!({"run_uuid": id, "run_name": "second"}));
    let got = api.ok_get("runs/get", &format!("run_uuid={id}"));
    assert_eq!(got["run"]["info"]["run_name"], "second");
    assert_eq!(got["run"]["info"]["status"], "FINISHED");

    assert_error(
        api.post(
            "runs/create",
            json!({"experiment_id": experiment, "run_name": "a",
                "tags": [{"key": "mlflow.runName", "value": "b"}]}),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "Both 'run_name' argument and 'mlflow.runName' tag",
    );
    assert_error(
        api.post("runs/update", json!({"run_id": id, "status": "DONE"})),
        400,
        "INVALID_PARAMETER_VALUE",
        "status",
    );
}

#[test]
fn mlflow_nested_runs_keep_their_parent() {
    let api = Api::new();
    let experiment = api.experiment("nested");
    let parent = api.run(&experiment);
    let body = json!({"experiment_id": experiment,
        "tags": [{"key": "mlflow.parentRunId", "value": parent}]});
    let child = api.ok_post("runs/create", body)["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let filter = format!("tags.`mlflow.parentRunId` = '{parent}'");
    let body = json!({"experiment_ids": [experiment], "filter": filter});
    let found = api.ok_post("runs/search", body);
    assert_eq!(found["runs"].as_array().unwrap().len(), 1);
    assert_eq!(found["runs"][0]["info"]["run_id"], child.as_str());
}

#[test]
fn mlflow_run_errors() {
    let api = Api::new();
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_error(
        api.get("runs/get", &format!("run_id={unknown}")),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        &format!("Run with id={unknown} not found"),
    );
    assert_error(
        api.get("runs/get", "run_id=nonsense"),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "Run with id=nonsense not found",
    );
    assert_error(
        api.get("runs/get", ""),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'run_id'",
    );
    assert_error(
        api.post("runs/create", json!({"experiment_id": "987654"})),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "No Experiment with id=987654 exists",
    );
    let body = json!({"run_id": unknown, "key": "m", "value": 1.0, "timestamp": 0});
    assert_error(
        api.post("runs/log-metric", body),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "not found",
    );
    for route in ["runs/delete", "runs/restore"] {
        assert_error(
            api.post(route, json!({ "run_id": unknown })),
            404,
            "RESOURCE_DOES_NOT_EXIST",
            "not found",
        );
    }
}

#[test]
fn mlflow_malformed_and_mistyped_bodies_are_refused() {
    let api = Api::new();
    let experiment = api.experiment("bad");
    let run = api.run(&experiment);
    let reply = api.raw(
        Method::Post,
        "/api/2.0/mlflow/runs/log-metric",
        "",
        b"{\"run_id\": ",
    );
    assert_eq!(reply.status, 400);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error_code"], "MALFORMED_REQUEST");
    let reply = api.raw(
        Method::Post,
        "/api/2.0/mlflow/runs/log-batch",
        "",
        b"[1, 2]",
    );
    assert_eq!(reply.status, 400);

    let cases = [
        (
            json!({"run_id": run, "key": "m", "value": "high", "timestamp": 0}),
            "'value'",
        ),
        (
            json!({"run_id": run, "key": "m", "value": 1.0, "timestamp": "soon"}),
            "'timestamp'",
        ),
        (
            json!({"run_id": run, "key": "m", "value": 1.0}),
            "required parameter 'timestamp'",
        ),
        (
            json!({"run_id": run, "key": "m", "timestamp": 0}),
            "required parameter 'value'",
        ),
        (
            json!({"run_id": run, "value": 1.0, "timestamp": 0}),
            "required parameter 'key'",
        ),
        (
            json!({"run_id": 7, "key": "m", "value": 1.0, "timestamp": 0}),
            "'run_id'",
        ),
        (
            json!({"run_id": run, "key": "m", "value": true, "timestamp": 0}),
            "'value'",
        ),
        (
            json!({"run_id": run, "key": "m", "value": 1.0, "timestamp": -1}),
            "nonnegative",
        ),
        (
            json!({"run_id": run, "key": "bad\u{1}key", "value": 1.0, "timestamp": 0}),
            "bad",
        ),
        (
            json!({"run_id": run, "key": "m", "value": 1.0, "timestamp": 0, "step": 1.5}),
            "'step'",
        ),
    ];
    for (body, message) in cases {
        assert_error(
            api.post("runs/log-metric", body),
            400,
            "INVALID_PARAMETER_VALUE",
            message,
        );
    }
    let got = api.ok_get("runs/get", &format!("run_id={run}"));
    assert!(
        got["run"]["data"].get("metrics").is_none(),
        "nothing was logged"
    );
}

#[test]
fn mlflow_log_metric_param_tag_and_history() {
    let api = Api::new();
    let experiment = api.experiment("log");
    let run = api.run(&experiment);
    for (step, value) in [(0, 0.5), (1, 0.25), (2, 0.125)] {
        let body = json!({"run_id": run, "key": "loss", "value": value,
            "timestamp": 1_000 + step, "step": step});
        api.ok_post("runs/log-metric", body);
    }
    // step defaults to 0; int64 fields may come as strings.
    let body = json!({"run_uuid": run, "key": "lr", "value": "0.1", "timestamp": "5"});
    api.ok_post("runs/log-metric", body);
    api.ok_post(
        "runs/log-parameter",
        json!({"run_id": run, "key": "seed", "value": "7"}),
    );
    api.ok_post(
        "runs/log-parameter",
        json!({"run_id": run, "key": "seed", "value": "7"}),
    );
    assert_error(
        api.post(
            "runs/log-parameter",
            json!({"run_id": run, "key": "seed", "value": "8"}),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        &format!(
            "Changing param values is not allowed. Param with key='seed' was already logged \
             with value='7' for run ID='{run}'. Attempted logging new value '8'."
        ),
    );
    api.ok_post(
        "runs/set-tag",
        json!({"run_id": run, "key": "stage", "value": "a"}),
    );
    api.ok_post(
        "runs/set-tag",
        json!({"run_id": run, "key": "stage", "value": "b"}),
    );
    let got = api.ok_get("runs/get", &format!("run_id={run}"));
    let data = &got["run"]["data"];
    assert_eq!(
        data["metrics"],
        json!([
            {"key": "loss", "value": 0.125, "timestamp": 1_002, "step": 2},
            {"key": "lr", "value": 0.1, "timestamp": 5, "step": 0},
        ])
    );
    assert_eq!(data["params"], json!([{"key": "seed", "value": "7"}]));
    assert!(
        data["tags"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "stage", "value": "b"}))
    );

    api.ok_post("runs/delete-tag", json!({"run_id": run, "key": "stage"}));
    assert_error(
        api.post("runs/delete-tag", json!({"run_id": run, "key": "stage"})),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        &format!("No tag with name: stage in run with id {run}"),
    );

    let history = api.ok_get(
        "metrics/get-history",
        &format!("run_id={run}&metric_key=loss"),
    );
    let steps: Vec<i64> = history["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [0, 1, 2]);
    assert!(history.get("next_page_token").is_none());
    let empty = api.ok_get(
        "metrics/get-history",
        &format!("run_id={run}&metric_key=never"),
    );
    assert_eq!(empty, json!({}));
}

#[test]
fn mlflow_long_param_and_tag_values_are_cut_to_mlflow_limits() {
    let api = Api::new();
    let experiment = api.experiment("long");
    let run = api.run(&experiment);
    let body = json!({"run_id": run, "key": "p", "value": "é".repeat(7_000)});
    api.ok_post("runs/log-parameter", body);
    let body = json!({"run_id": run, "tags": [{"key": "t", "value": "x".repeat(9_000)}]});
    api.ok_post("runs/log-batch", body);
    let got = api.ok_get("runs/get", &format!("run_id={run}"));
    let value = got["run"]["data"]["params"][0]["value"].as_str().unwrap();
    assert_eq!(value.chars().count(), 6_000);
    let tag = got["run"]["data"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "t")
        .unwrap();
    assert_eq!(tag["value"].as_str().unwrap().len(), 8_000);
}

#[test]
fn mlflow_metric_values_round_trip_exactly() {
    let api = Api::new();
    let experiment = api.experiment("floats");
    let run = api.run(&experiment);
    let values = [
        json!(0.1),
        json!(-0.0),
        json!(1e-308),
        json!(5e-324),
        json!(1.7976931348623157e308),
        json!(123_456_789.123_456_79),
        json!("NaN"),
        json!("Infinity"),
        json!("-Infinity"),
    ];
    let metrics: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(step, value)| json!({"key": "v", "value": value, "timestamp": 1, "step": step}))
        .collect();
    api.ok_post("runs/log-batch", json!({"run_id": run, "metrics": metrics}));
    let reply = api.raw(
        Method::Get,
        "/api/2.0/mlflow/metrics/get-history",
        &format!("run_id={run}&metric_key=v"),
        b"",
    );
    let history: Value = serde_json::from_slice(&reply.body).unwrap();
    let got: Vec<&Value> = history["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["value"])
        .collect();
    let want: Vec<&Value> = values.iter().collect();
    assert_eq!(got, want);
    // -0.0 keeps its sign on the wire, not only in value.
    let text = String::from_utf8(reply.body).unwrap();
    assert!(text.contains("-0.0"), "{text}");
    // The latest value (greatest step) is -Infinity, kept as such, not clamped.
    let got = api.ok_get("runs/get", &format!("run_id={run}"));
    assert_eq!(got["run"]["data"]["metrics"][0]["value"], "-Infinity");
}

#[test]
fn mlflow_log_batch_limits_and_atomicity() {
    let api = Api::new();
    let experiment = api.experiment("batch");
    let run = api.run(&experiment);
    let metric = |i: usize| json!({"key": "m", "value": i as f64, "timestamp": 1, "step": i});
    let param = |i: usize| json!({"key": format!("p{i}"), "value": "v"});
    let tag = |i: usize| json!({"key": format!("t{i}"), "value": "v"});
    let over: [(Value, &str); 4] = [
        (
            json!({"run_id": run, "metrics": (0..1_001).map(metric).collect::<Vec<_>>()}),
            "at most 1000 metrics. Got 1001 metrics",
        ),
        (
            json!({"run_id": run, "params": (0..101).map(param).collect::<Vec<_>>()}),
            "at most 100 params. Got 101 params",
        ),
        (
            json!({"run_id": run, "tags": (0..101).map(tag).collect::<Vec<_>>()}),
            "at most 100 tags. Got 101 tags",
        ),
        (
            json!({"run_id": run,
                "metrics": (0..901).map(metric).collect::<Vec<_>>(),
                "params": (0..100).map(param).collect::<Vec<_>>()}),
            "at most 1000 metrics, params, and tags. Got 1001",
        ),
    ];
    for (body, message) in over {
        assert_error(
            api.post("runs/log-batch", body),
            400,
            "INVALID_PARAMETER_VALUE",
            message,
        );
    }
    let duplicate = json!({"run_id": run, "metrics": [metric(0)],
        "params": [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}]});
    assert_error(
        api.post("runs/log-batch", duplicate),
        400,
        "INVALID_PARAMETER_VALUE",
        "Duplicate parameter keys have been submitted: ['a']",
    );
    let missing_key =
        json!({"run_id": run, "metrics": [metric(0), {"value": 1.0, "timestamp": 1}]});
    assert_error(
        api.post("runs/log-batch", missing_key),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'metrics[1].key'",
    );
    let missing_value = json!({"run_id": run, "metrics": [{"key": "m", "timestamp": 1}]});
    assert_error(
        api.post("runs/log-batch", missing_value),
        400,
        "INVALID_PARAMETER_VALUE",
        "metrics[0].value",
    );
    let bad_tag = json!({"run_id": run, "metrics": [metric(0)], "tags": [{"value": "x"}]});
    assert_error(
        api.post("runs/log-batch", bad_tag),
        400,
        "INVALID_PARAMETER_VALUE",
        "tags[0].key",
    );
    // Nothing of the refused batches was written.
    let got = api.ok_get("runs/get", &format!("run_id={run}"));
    assert!(got["run"]["data"].get("metrics").is_none(), "{got}");
    assert!(got["run"]["data"].get("params").is_none(), "{got}");

    // Exactly at the limits: accepted.
    let full = json!({"run_id": run,
        "metrics": (0..800).map(metric).collect::<Vec<_>>(),
        "params": (0..100).map(param).collect::<Vec<_>>(),
        "tags": (0..100).map(tag).collect::<Vec<_>>()});
    api.ok_post("runs/log-batch", full);
    let got = api.ok_get("runs/get", &format!("run_id={run}"));
    assert_eq!(got["run"]["data"]["params"].as_array().unwrap().len(), 100);
}

#[test]
fn mlflow_writes_to_a_deleted_run_are_refused() {
    let api = Api::new();
    let experiment = api.experiment("deleted");
    let run = api.run(&experiment);
    api.ok_post("runs/delete", json!({ "run_id": run }));
    let got = api.ok_get("runs/get", &format!("run_id={run}"));
    assert_eq!(got["run"]["info"]["lifecycle_stage"], "deleted");
    let message = format!("The run {run} must be in the 'active' state. Current state is deleted.");
    let writes = [
        (
            "runs/log-metric",
            json!({"run_id": run, "key": "m", "value": 1.0, "timestamp": 0}),
        ),
        (
            "runs/log-parameter",
            json!({"run_id": run, "key": "p", "value": "v"}),
        ),
        (
            "runs/set-tag",
            json!({"run_id": run, "key": "t", "value": "v"}),
        ),
        (
            "runs/log-batch",
            json!({"run_id": run, "metrics": [
            {"key": "m", "value": 1.0, "timestamp": 0}]}),
        ),
        ("runs/update", json!({"run_id": run, "status": "FINISHED"})),
    ];
    for (route, body) in writes {
        assert_error(
            api.post(route, body),
            400,
            "INVALID_PARAMETER_VALUE",
            &message,
        );
    }
    let body = json!({"experiment_ids": [experiment]});
    assert_eq!(api.ok_post("runs/search", body), json!({}));
    let body = json!({"experiment_ids": [experiment], "run_view_type": "DELETED_ONLY"});
    assert_eq!(
        api.ok_post("runs/search", body)["runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    api.ok_post("runs/restore", json!({ "run_id": run }));
    api.ok_post(
        "runs/log-metric",
        json!({"run_id": run, "key": "m", "value": 1.0, "timestamp": 0}),
    );
}

#[test]
fn mlflow_search_runs_filters_orders_and_pages() {
    let api = Api::new();
    let experiment = api.experiment("search");
    for i in 0..5 {
        let run = api.run(&experiment);
        let body = json!({"run_id": run,
            "metrics": [{"key": "acc", "value": i as f64 / 10.0, "timestamp": 1, "step": 0}],
            "params": [{"key": "lr", "value": format!("0.{i}")}]});
        api.ok_post("runs/log-batch", body);
    }
    let body = json!({"experiment_ids": [experiment], "filter": "metrics.acc >= 0.2",
        "order_by": ["metrics.acc DESC"], "max_results": 2});
    let page = api.ok_post("runs/search", body);
    let accs = |page: &Value| -> Vec<f64> {
        page["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["data"]["metrics"][0]["value"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(accs(&page), [0.4, 0.3]);
    let token = page["next_page_token"].as_str().unwrap();
    let body = json!({"experiment_ids": [experiment], "filter": "metrics.acc >= 0.2",
        "order_by": ["metrics.acc DESC"], "max_results": 2, "page_token": token});
    let next = api.ok_post("runs/search", body);
    assert_eq!(accs(&next), [0.2]);
    assert!(next.get("next_page_token").is_none());

    // GET with query parameters, repeated experiment_ids.
    let query =
        format!("experiment_ids={experiment}&experiment_ids=0&filter=params.lr%20%3D%20%270.1%27");
    let got = api.ok_get("runs/search", &query);
    assert_eq!(got["runs"].as_array().unwrap().len(), 1);
    // No experiment: no runs (as MLflow), but a bad filter is still reported.
    assert_eq!(api.ok_post("runs/search", json!({})), json!({}));
    assert_error(
        api.post(
            "runs/search",
            json!({"filter": "metrics.acc > 1 OR params.lr = '1'"}),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "",
    );
    assert_error(
        api.post(
            "runs/search",
            json!({"experiment_ids": [experiment], "filter": "metrics.acc >"}),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "",
    );
    assert_error(
        api.post(
            "runs/search",
            json!({"experiment_ids": [experiment], "max_results": 50_001}),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "max_results",
    );
    assert_error(
        api.post(
            "runs/search",
            json!({"experiment_ids": [experiment], "order_by": ["nonsense.field"]}),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "",
    );
}

#[test]
fn mlflow_history_pages_in_mlflow_order() {
    let api = Api::new();
    let experiment = api.experiment("history");
    let run = api.run(&experiment);
    // Logged out of step order, with timestamps that order them differently again: MLflow
    // orders a history by (timestamp, step, value).
    let points = [(3, 10), (1, 20), (2, 30), (0, 40), (4, 40)];
    let metrics: Vec<Value> = points
        .iter()
        .map(|(step, ts)| json!({"key": "m", "value": *step as f64, "timestamp": ts, "step": step}))
        .collect();
    api.ok_post("runs/log-batch", json!({"run_id": run, "metrics": metrics}));
    let mut steps = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = format!("run_id={run}&metric_key=m&max_results=2");
        if let Some(token) = &token {
            query.push_str(&format!("&page_token={token}"));
        }
        let page = api.ok_get("metrics/get-history", &query);
        pages += 1;
        for metric in page["metrics"].as_array().unwrap() {
            steps.push(metric["step"].as_i64().unwrap());
        }
        match page.get("next_page_token") {
            Some(next) => token = Some(next.as_str().unwrap().to_string()),
            None => break,
        }
    }
    assert_eq!(steps, [3, 1, 2, 0, 4]);
    assert_eq!(pages, 3);
    assert_error(
        api.get(
            "metrics/get-history",
            &format!("run_id={run}&metric_key=m&max_results=0"),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "max_results",
    );
    assert_error(
        api.get(
            "metrics/get-history",
            &format!("run_id={run}&metric_key=m&page_token=zz"),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "page token",
    );
    assert_error(
        api.get("metrics/get-history", &format!("run_id={run}")),
        400,
        "INVALID_PARAMETER_VALUE",
        "'metric_key'",
    );
}

#[test]
fn mlflow_history_bulk_and_bulk_interval() {
    let api = Api::new();
    let experiment = api.experiment("bulk");
    let runs: Vec<String> = (0..2).map(|_| api.run(&experiment)).collect();
    for (index, run) in runs.iter().enumerate() {
        let metrics: Vec<Value> = (0..100)
            .map(|step| {
                json!({"key": "m", "value": (step * (index + 1)) as f64,
                "timestamp": 1_000 + step, "step": step})
            })
            .collect();
        api.ok_post("runs/log-batch", json!({"run_id": run, "metrics": metrics}));
    }
    let query = format!(
        "run_id={}&run_id={}&metric_key=m&max_results=150",
        runs[0], runs[1]
    );
    let bulk = api.ok_get("metrics/get-history-bulk", &query);
    let bulk = bulk["metrics"].as_array().unwrap();
    assert_eq!(bulk.len(), 150);
    let mut sorted = runs.clone();
    sorted.sort();
    assert_eq!(bulk[0]["run_id"], sorted[0].as_str());
    assert_eq!(bulk[100]["run_id"], sorted[1].as_str());

    let query = format!(
        "run_ids={}&run_ids={}&metric_key=m&max_results=10",
        runs[0], runs[1]
    );
    let sampled = api.ok_get("metrics/get-history-bulk-interval", &query);
    let sampled = sampled["metrics"].as_array().unwrap();
    assert_eq!(sampled.len(), 20);
    let steps: Vec<i64> = sampled[..10]
        .iter()
        .map(|m| m["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [0, 10, 20, 30, 40, 50, 60, 70, 80, 99]);
    assert_eq!(sampled[10]["run_id"], runs[1].as_str());
    assert_eq!(sampled[19]["value"], 198.0);

    let query = format!("run_ids={}&metric_key=m&start_step=10&end_step=14", runs[0]);
    let range = api.ok_get("metrics/get-history-bulk-interval", &query);
    let steps: Vec<i64> = range["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [10, 11, 12, 13, 14]);

    let errors = [
        (
            format!("run_ids={}&metric_key=m&start_step=5", runs[0]),
            "both must be specified",
        ),
        (
            format!("run_ids={}&metric_key=m&start_step=5&end_step=1", runs[0]),
            "end_step must be",
        ),
        (
            format!("run_ids={}&metric_key=m&max_results=2501", runs[0]),
            "between 1 and 2500",
        ),
        ("metric_key=m".to_string(), "'run_ids'"),
        (format!("run_ids={}", runs[0]), "'metric_key'"),
    ];
    for (query, message) in errors {
        assert_error(
            api.get("metrics/get-history-bulk-interval", &query),
            400,
            "INVALID_PARAMETER_VALUE",
            message,
        );
    }
    let many: Vec<String> = (0..101).map(|_| format!("run_ids={}", runs[0])).collect();
    assert_error(
        api.get(
            "metrics/get-history-bulk-interval",
            &format!("{}&metric_key=m", many.join("&")),
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "at most 100 run_ids",
    );
    // Unknown runs have no points, as in MLflow's SQL store.
    let unknown = "0123456789abcdef0123456789abcdef";
    for route in [
        "get-history-bulk-interval?run_ids",
        "get-history-bulk?run_id",
    ] {
        let (route, name) = route.split_once('?').unwrap();
        let query = format!("{name}={unknown}&{name}=nonsense&metric_key=m");
        assert_eq!(api.ok_get(&format!("metrics/{route}"), &query), json!({}));
    }
    // Named beside a run that exists, they leave its points alone.
    let query = format!(
        "run_ids={unknown}&run_ids={}&run_ids=nonsense&metric_key=m&max_results=10",
        runs[1]
    );
    let mixed = api.ok_get("metrics/get-history-bulk-interval", &query);
    let mixed = mixed["metrics"].as_array().unwrap();
    assert_eq!(mixed.len(), 10);
    assert!(mixed.iter().all(|m| m["run_id"] == runs[1].as_str()));
    let query = format!("run_id={unknown}&metric_key=m");
    assert_eq!(api.ok_get("metrics/get-history", &query), json!({}));
    assert_error(
        api.get("metrics/get-history-bulk", "metric_key=m"),
        400,
        "INVALID_PARAMETER_VALUE",
        "at least one run_id",
    );
}

#[test]
fn mlflow_ajax_prefix_server_info_logged_model_search_and_inputs() {
    let api = Api::new();
    let reply = api.raw(
        Method::Get,
        "/ajax-api/2.0/mlflow/experiments/get",
        "experiment_id=0",
        b"",
    );
    assert_eq!(reply.status, 200);
    let reply = api.raw(Method::Get, "/api/3.0/mlflow/server-info", "", b"");
    assert_eq!(reply.status, 200);
    let info: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(info["multipart_uploads_enabled"], false);
    let body = json!({"experiment_ids": ["0"], "filter": "name = 'dd'"});
    assert_eq!(api.ok_post("logged-models/search", body), json!({}));
    let run = api.run("0");
    api.ok_post("runs/log-inputs", json!({ "run_id": run }));
    // A dataset lacking a field MLflow's proto requires is refused, naming the field.
    let body = json!({"run_id": run, "datasets": [{"dataset": {"name": "d", "digest": "x"}}]});
    assert_error(
        api.post("runs/log-inputs", body),
        400,
        "INVALID_PARAMETER_VALUE",
        "datasets[0].dataset.source_type",
    );
}

#[test]
fn mlflow_get_accepts_a_json_body_without_a_query_string() {
    let api = Api::new();
    let body = json!({"experiment_id": "0"}).to_string();
    let (status, got) = api.call(Method::Get, "experiments/get", "", body.as_bytes());
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["experiment"]["name"], "Default");
}

#[test]
fn mlflow_search_orders_nan_metrics_after_numbers_and_before_missing_ones() {
    let api = Api::new();
    let experiment = api.experiment("nan-order");
    let mut ids = Vec::new();
    for value in [json!(1.0), json!("NaN"), Value::Null, json!(2.0)] {
        let run = api.run(&experiment);
        if !value.is_null() {
            let body = json!({"run_id": run, "key": "m", "value": value, "timestamp": 1});
            api.ok_post("runs/log-metric", body);
        }
        ids.push(run);
    }
    for (direction, want) in [("ASC", [0, 3, 1, 2]), ("DESC", [3, 0, 1, 2])] {
        let body = json!({"experiment_ids": [experiment],
            "order_by": [format!("metrics.m {direction}")]});
        let found = api.ok_post("runs/search", body);
        let got: Vec<&str> = found["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["info"]["run_id"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = want.iter().map(|i| ids[*i].as_str()).collect();
        assert_eq!(got, want, "{direction}");
    }
}

#[test]
fn mlflow_history_without_max_results_comes_in_pages_of_25000() {
    let api = Api::new();
    let experiment = api.experiment("long-history");
    let run = api.run(&experiment);
    for batch in 0..26 {
        let metrics: Vec<Value> = (0..1_000)
            .map(|i| {
                let step = batch * 1_000 + i;
                json!({"key": "m", "value": 1.0, "timestamp": step, "step": step})
            })
            .collect();
        api.ok_post("runs/log-batch", json!({"run_id": run, "metrics": metrics}));
    }
    let first = api.ok_get("metrics/get-history", &format!("run_id={run}&metric_key=m"));
    assert_eq!(first["metrics"].as_array().unwrap().len(), 25_000);
    let token = first["next_page_token"].as_str().unwrap();
    let rest = api.ok_get(
        "metrics/get-history",
        &format!("run_id={run}&metric_key=m&page_token={token}"),
    );
    assert_eq!(rest["metrics"].as_array().unwrap().len(), 1_000);
    assert_eq!(rest["metrics"][999]["step"], 25_999);
    assert!(rest.get("next_page_token").is_none());
}
