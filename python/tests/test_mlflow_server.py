"""`mlflow server --backend-store-uri runlog:///...`: MLflow's own server and UI over the plugin.

The server runs in a child process from this interpreter's environment (which holds the
package and its entry points), on a free loopback port. MLflow's client logs through it, the
REST API reads the same run back, and the UI's index page answers. Runs' artifact URIs are
``mlflow-artifacts:/...``, so their bytes go where the server's ``--artifacts-destination``
points (python/README.md).
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

mlflow = pytest.importorskip(
    "mlflow", reason="mlflow is not installed (pip install ./python[mlflow]); CI installs it"
)
requests = pytest.importorskip("requests")

from mlflow import MlflowClient  # noqa: E402

STARTUP_SECONDS = 180  # a busy 2-core machine imports MLflow's server slowly


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path, lines=30):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def _wait_healthy(url, proc, log_path):
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{_log_tail(log_path)}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url}/health did not answer in {STARTUP_SECONDS}s:\n{_log_tail(log_path)}")


@pytest.fixture
def server(tmp_path):
    """`mlflow server` over a fresh runlog store; yields (url, store dir, artifacts dir)."""
    store = tmp_path / "store"
    artifacts = tmp_path / "artifacts"
    port = _free_port()
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--backend-store-uri", f"runlog://{store}",
        "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log_path)
        yield url, store, artifacts
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def http_client(server, monkeypatch):
    # A server error must fail at once rather than sit in the client's retry back-off.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    url = server[0]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(url)
    yield MlflowClient(tracking_uri=url)
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def _rest(url, endpoint, **params):
    reply = requests.get(f"{url}/api/2.0/mlflow/{endpoint}", params=params, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_mlflow_server_on_runlog_serves_a_run_to_the_client_rest_and_ui(server, http_client):
    url, store, artifacts = server
    exp_id = http_client.create_experiment("served", tags={"team": "ml"})
    run_id = http_client.create_run(exp_id, run_name="served-run").info.run_id
    http_client.log_param(run_id, "lr", "0.01")
    http_client.log_metric(run_id, "loss", 0.5, timestamp=1_000, step=1)
    http_client.log_metric(run_id, "loss", 0.25, timestamp=2_000, step=2)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({"acc": 0.75}, step=2)
        mlflow.log_text("hello", "notes/readme.txt")
    assert store.is_dir() and any(store.iterdir()), "the server did not open the runlog store"

    got = _rest(url, "runs/get", run_id=run_id)["run"]
    assert got["info"]["run_name"] == "served-run"
    assert got["info"]["experiment_id"] == exp_id
    assert got["info"]["status"] == "FINISHED"
    assert got["data"]["params"] == [{"key": "lr", "value": "0.01"}]
    latest = {m["key"]: (m["value"], m["step"]) for m in got["data"]["metrics"]}
    assert latest == {"loss": (0.25, 2), "acc": (0.75, 2)}
    history = _rest(url, "metrics/get-history", run_id=run_id, metric_key="loss")["metrics"]
    assert [(m["step"], m["timestamp"], m["value"]) for m in history] == [(1, 1_000, 0.5), (2, 2_000, 0.25)]
    experiment = _rest(url, "experiments/get-by-name", experiment_name="served")["experiment"]
    assert experiment["experiment_id"] == exp_id

    # Artifacts: proxied by the server to --artifacts-destination, under the run's path.
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/notes/readme.txt") == "hello"
    assert (artifacts / exp_id / run_id / "artifacts" / "notes" / "readme.txt").read_text() == "hello"

    # Datasets: logged through the server, kept by the engine, and summed up for the UI's runs
    # table, which asks `search-datasets` under /ajax-api/ (RunlogStore._search_datasets).
    with mlflow.start_run(run_id=run_id):
        mlflow.log_input(mlflow.data.from_numpy(np.arange(6.0), source="/data/x.npy", name="x"), context="training")
    got = _rest(url, "runs/get", run_id=run_id)["run"]
    assert [d["dataset"]["name"] for d in got["inputs"]["dataset_inputs"]] == ["x"]
    summaries = requests.post(
        f"{url}/ajax-api/2.0/mlflow/experiments/search-datasets", json={"experiment_ids": [exp_id]}, timeout=60
    )
    assert summaries.status_code == 200, summaries.text
    assert [(s["name"], s["context"]) for s in summaries.json()["dataset_summaries"]] == [("x", "training")]

    index = requests.get(f"{url}/", timeout=60)
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert "<html" in index.text.lower()
