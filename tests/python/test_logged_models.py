"""The differential check of logged models beyond test_differential's `test_logged_models`:
deleted models found by id, metrics logged for a model (with `log_model`, `log_metric` and
`log_batch` naming a `model_id`) and what search makes of them, and the UI's artifact routes.
Each scenario runs through MLflow's own client against `mlflow server` and the subjects, and the
normalized results must be equal (test_differential.compare).
"""

import hashlib
import time

import mlflow
import pytest
import requests
from mlflow.entities import LoggedModelParameter, LoggedModelStatus, LoggedModelTag, Metric

from normalize import value
from test_differential import T0, _Length, _logged_model, compare, raises


def _metrics(model, n):
    """A model's metrics, ids normalized, in a canonical order (MLflow's are in the order its
    database returns them; runlog's by key, step, timestamp, run)."""
    rows = [
        (
            m.key,
            _model_value(m.value),
            m.timestamp,
            m.step,
            n.run(m.run_id),
            n.id("model", m.model_id),
            m.dataset_name,
            m.dataset_digest,
        )
        for m in model.metrics or []
    ]
    return sorted(rows, key=lambda row: tuple(str(part) for part in row))


def _model_value(v):
    """A model's metric value, compared as `normalize.value` compares a run's, and a NaN folded
    to 0: MLflow's SQL store keeps a model's NaN as 0, runlog keeps it (docs/SERVER.md,
    "Differences from MLflow"; the Rust test `metrics_logged_with_a_model_id_are_the_models`
    holds runlog to NaN)."""
    folded = value(v)
    return "0.0" if folded == "nan" else folded


def scenario_deleted_models(client, n):
    out = {}
    exp = client.create_experiment("deleted-models-area")
    n.exp(exp)
    store = client._tracking_client.store  # RestStore: get_logged_model(allow_deleted=...)
    # A source run that names no run is kept, as MLflow's SQL store keeps it.
    unknown_run = "0123456789abcdef0123456789abcdef"
    model = client.create_logged_model(exp, name="gone", source_run_id=unknown_run, tags={"t": "1"})
    mid = model.model_id
    n.id("model", mid)
    out["unknown_source_run"] = n.run(model.source_run_id)
    client.delete_logged_model(mid)
    out["get_deleted"] = raises(lambda: client.get_logged_model(mid))
    out["get_allow_deleted"] = _logged_model(store.get_logged_model(mid, allow_deleted=True), n)
    # Every call that changes a model still finds a deleted one. MlflowClient looks the model
    # up first (without allow_deleted) for tags and params, so those go to the store.
    client.delete_logged_model(mid)
    client.finalize_logged_model(mid, LoggedModelStatus.READY)
    store.set_logged_model_tags(mid, [LoggedModelTag("u", "a"), LoggedModelTag("u", "2")])
    store.delete_logged_model_tag(mid, "t")
    store.log_logged_model_params(mid, [LoggedModelParameter("p", "1")])
    out["changed_while_deleted"] = _logged_model(store.get_logged_model(mid, allow_deleted=True), n)
    out["delete_missing_tag_of_deleted"] = raises(lambda: store.delete_logged_model_tag(mid, "t"))
    out["search_after_delete"] = [
        m.name for m in mlflow.search_logged_models(experiment_ids=[exp], output_format="list")
    ]
    # Status 0 (unspecified) is accepted by finalize.
    other = client.create_logged_model(exp, name="unspecified")
    n.id("model", other.model_id)
    client.finalize_logged_model(other.model_id, LoggedModelStatus.UNSPECIFIED)
    out["unspecified"] = str(client.get_logged_model(other.model_id).status)
    return out


def test_deleted_models(reference_url, subject_url):
    compare(scenario_deleted_models, reference_url, subject_url)


def scenario_model_metrics(client, n):
    out = {}
    exp = client.create_experiment("model-metrics-area")
    n.exp(exp)
    with mlflow.start_run(experiment_id=exp, run_name="trainer") as r:
        rid = r.info.run_id
        n.run(rid)
        mlflow.log_metric("acc", 0.75, step=0, timestamp=T0)
        mlflow.log_metric("loss", float("nan"), step=0, timestamp=T0 + 1)
        mlflow.log_metric("big", float("inf"), step=0, timestamp=T0 + 2)
        mlflow.log_metric("acc", 0.5, step=1, timestamp=T0 + 3)  # not step 0: not re-logged
        info = mlflow.pyfunc.log_model(name="model", python_model=_Length(), pip_requirements=["mlflow"])
        mid = info.model_id
        n.id("model", mid)
        # After log_model, a step-0 metric of the run is the model's too (its output at step 0).
        mlflow.log_metric("after", 1.5, step=0, timestamp=T0 + 4)
    time.sleep(0.01)  # apart from `model` in time: searches break ties newest first
    other = client.create_logged_model(exp, name="other", source_run_id=rid)
    oid = other.model_id
    n.id("model", oid)
    client.log_metric(rid, "acc", 0.9, timestamp=T0 + 5, step=2, model_id=oid,
                      dataset_name="eval", dataset_digest="d1")
    client.log_batch(rid, metrics=[
        Metric("acc", 0.25, T0 + 6, 3, model_id=oid),
        Metric("acc", 0.25, T0 + 6, 3, model_id=oid),  # an exact repeat: kept once
        Metric("f1", 0.5, T0 + 7, 0, model_id=oid, dataset_name="train", dataset_digest="d2"),
    ])
    out["model"] = _metrics(client.get_logged_model(mid), n)
    out["other"] = _metrics(client.get_logged_model(oid), n)
    out["run_acc_history"] = sorted((m.step, m.value) for m in client.get_metric_history(rid, "acc"))

    def names(**kwargs):
        found = mlflow.search_logged_models(experiment_ids=[exp], output_format="list", **kwargs)
        return [m.name for m in found]

    out["search_metric"] = names(filter_string="metrics.acc > 0.8")
    out["search_metric_any_point"] = names(filter_string="metrics.acc < 0.3")
    out["order_latest_asc"] = names(order_by=[{"field_name": "metrics.acc", "ascending": True}])
    out["order_latest_desc"] = names(order_by=[{"field_name": "metrics.acc", "ascending": False}])
    out["order_on_dataset"] = names(
        order_by=[{"field_name": "metrics.acc", "ascending": True, "dataset_name": "eval"}]
    )
    out["datasets_only"] = names(datasets=[{"dataset_name": "train"}])
    out["datasets_and_metric"] = names(filter_string="metrics.acc > 0", datasets=[{"dataset_name": "eval",
                                                                                   "dataset_digest": "d1"}])
    out["datasets_other_digest"] = names(datasets=[{"dataset_name": "eval", "dataset_digest": "x"}])
    out["order_missing_last"] = names(order_by=[{"field_name": "metrics.f1", "ascending": False}])
    return out


def test_model_metrics(reference_url, subject_url):
    compare(scenario_model_metrics, reference_url, subject_url)


def scenario_ui_artifact_routes(client, n):
    """What MLflow's UI asks of a logged model's artifacts, over raw HTTP: the listing (tracking
    API route, also under ajax-api) and a file (the UI's ajax-api route)."""
    url = mlflow.get_tracking_uri()
    out = {}
    exp = client.create_experiment("ui-model-artifacts-area")
    n.exp(exp)
    with mlflow.start_run(experiment_id=exp, run_name="trainer") as r:
        n.run(r.info.run_id)
        info = mlflow.pyfunc.log_model(name="model", python_model=_Length(), pip_requirements=["mlflow"])
    mid = info.model_id
    n.id("model", mid)

    def get(path, **params):
        reply = requests.get(url + path, params=params, timeout=60)
        try:
            body = reply.json()
        except ValueError:
            return {"status": reply.status_code, "sha256": hashlib.sha256(reply.content).hexdigest()}
        if "error_code" in body:
            return {"status": reply.status_code, "error_code": body["error_code"]}
        if "root_uri" in body:
            body["root_uri"] = n.text(body["root_uri"])
        for entry in body.get("files", []):
            # MLmodel holds the run's and experiment's ids, whose lengths differ by server.
            if entry["path"] == "MLmodel":
                entry["file_size"] = "<size>"
        return {"status": reply.status_code, "json": body}

    ajax = f"/ajax-api/2.0/mlflow/logged-models/{mid}/artifacts"
    api = f"/api/2.0/mlflow/logged-models/{mid}/artifacts"
    out["list_root"] = get(f"{ajax}/directories")
    out["list_root_api"] = get(f"{api}/directories")
    out["list_empty_path"] = get(f"{ajax}/directories", artifact_directory_path="")
    out["list_missing_folder"] = get(f"{ajax}/directories", artifact_directory_path="nope")
    out["file"] = get(f"{ajax}/files", artifact_file_path="requirements.txt")
    out["file_missing_parameter"] = get(f"{ajax}/files")
    for name, bad in [("dotdot", "../x"), ("absolute", "/etc/passwd"), ("nested_dotdot", "a/../../x")]:
        out[f"file_{name}"] = get(f"{ajax}/files", artifact_file_path=bad)
        out[f"list_{name}"] = get(f"{ajax}/directories", artifact_directory_path=bad)
    out["file_unknown_model"] = get(
        f"/ajax-api/2.0/mlflow/logged-models/m-{'0' * 32}/artifacts/files", artifact_file_path="MLmodel"
    )
    client.delete_logged_model(mid)
    out["list_deleted_model"] = get(f"{ajax}/directories")
    out["file_deleted_model"] = get(f"{ajax}/files", artifact_file_path="MLmodel")
    return out


def test_ui_artifact_routes(reference_url, subject_url):
    if subject_url.startswith("runlog:"):
        pytest.skip("raw HTTP routes of the server; the in-process store has no HTTP")
    compare(scenario_ui_artifact_routes, reference_url, subject_url)
