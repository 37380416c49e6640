"""The runlog:// tracking store: MLflow's own client, unchanged, logging in-process."""

import math
import os
import subprocess
import sys

import pytest

mlflow = pytest.importorskip(
    "mlflow", reason="mlflow is not installed (pip install ./python[mlflow]); CI installs it"
)

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag, ViewType  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from runlog.mlflow_store import store_path  # noqa: E402


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    # The fluent API remembers the experiment last set; each test starts from the default.
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    uri = f"runlog://{tmp_path / 'store'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def client(tracking):
    return MlflowClient(tracking_uri=tracking)


def error_code(excinfo):
    return excinfo.value.error_code


def test_entry_point_gives_the_runlog_store(client, tracking, tmp_path):
    store = client._tracking_client.store
    assert type(store).__name__ == "RunlogStore"
    assert store_path(tracking) == str(tmp_path / "store")


@pytest.mark.parametrize("uri", ["runlog://host/abs", "runlog:relative", "file:///x"])
def test_store_path_refuses_uris_that_name_no_local_absolute_directory(uri):
    with pytest.raises(ValueError):
        store_path(uri)


def test_experiments_create_get_rename_delete_restore(client):
    exp_id = client.create_experiment("exp-a", tags={"team": "ml"})
    exp = client.get_experiment(exp_id)
    assert (exp.name, exp.tags["team"], exp.lifecycle_stage) == ("exp-a", "ml", "active")
    assert client.get_experiment_by_name("exp-a").experiment_id == exp_id
    client.rename_experiment(exp_id, "exp-b")
    assert client.get_experiment_by_name("exp-b").experiment_id == exp_id
    assert client.get_experiment_by_name("exp-a") is None
    client.delete_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "deleted"
    names = {e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)}
    assert "exp-b" not in names
    client.restore_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "active"
    with pytest.raises(MlflowException) as excinfo:
        client.create_experiment("exp-b")
    assert error_code(excinfo) == "RESOURCE_ALREADY_EXISTS"


def test_fluent_runs_nested_params_tags_and_special_metric_values(client):
    mlflow.set_experiment("fluent")
    with mlflow.start_run(run_name="parent") as parent:
        mlflow.log_param("lr", "0.01")
        mlflow.set_tag("stage", "dev")
        mlflow.log_metric("loss", 0.5, step=1)
        mlflow.log_metric("nan", math.nan)
        mlflow.log_metric("pinf", math.inf)
        mlflow.log_metric("ninf", -math.inf)
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_metrics({"a": 1.0, "b": 2.0}, step=3)
            mlflow.log_params({"k": "v"})
    run = client.get_run(parent.info.run_id)
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    assert run.info.run_name == "parent"
    assert run.data.params == {"lr": "0.01"}
    assert run.data.tags["stage"] == "dev"
    metrics = run.data.metrics
    assert metrics["loss"] == 0.5
    assert math.isnan(metrics["nan"])
    assert metrics["pinf"] == math.inf and metrics["ninf"] == -math.inf
    kid = client.get_run(child.info.run_id)
    assert kid.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert kid.data.metrics == {"a": 1.0, "b": 2.0}
    assert kid.data.params == {"k": "v"}


def test_failed_block_marks_the_run_failed(client):
    with pytest.raises(RuntimeError):
        with mlflow.start_run() as run:
            raise RuntimeError("boom")
    assert client.get_run(run.info.run_id).info.status == "FAILED"


def test_log_batch_and_metric_history(client):
    exp_id = client.create_experiment("batch")
    run_id = client.create_run(exp_id).info.run_id
    points = [Metric("loss", 1.0 / (s + 1), 1_000 + s, s) for s in range(50)]
    client.log_batch(
        run_id,
        metrics=points,
        params=[Param("p", "1")],
        tags=[RunTag("t", "x")],
    )
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value, m.timestamp) for m in history] == [
        (m.step, m.value, m.timestamp) for m in points
    ]
    run = client.get_run(run_id)
    assert run.data.params == {"p": "1"} and run.data.tags["t"] == "x"
    assert run.data.metrics["loss"] == points[-1].value


def test_async_logging_then_flush(client):
    mlflow.set_experiment("async")
    with mlflow.start_run() as run:
        for step in range(100):
            mlflow.log_metric("m", float(step), step=step, synchronous=False)
        mlflow.log_param("p", "q", synchronous=False)
        mlflow.flush_async_logging()
        history = client.get_metric_history(run.info.run_id, "m")
        assert sorted(m.step for m in history) == list(range(100))
    assert client.get_run(run.info.run_id).data.params == {"p": "q"}


def test_search_with_filter_order_by_and_paging(client):
    exp_id = client.create_experiment("search")
    ids = []
    for i in range(5):
        run_id = client.create_run(exp_id, run_name=f"r{i}").info.run_id
        client.log_metric(run_id, "loss", float(i))
        client.set_tag(run_id, "parity", "even" if i % 2 == 0 else "odd")
        ids.append(run_id)
    found = client.search_runs(
        [exp_id], filter_string="metrics.loss < 3", order_by=["metrics.loss DESC"]
    )
    assert [r.info.run_id for r in found] == [ids[2], ids[1], ids[0]]
    evens = client.search_runs([exp_id], filter_string="tags.parity = 'even'")
    assert {r.info.run_id for r in evens} == {ids[0], ids[2], ids[4]}
    seen, token = [], None
    while True:
        page = client.search_runs(
            [exp_id], order_by=["metrics.loss ASC"], max_results=2, page_token=token
        )
        assert len(page) <= 2
        seen.extend(r.info.run_id for r in page)
        token = page.token
        if not token:
            break
    assert seen == ids
    frame = mlflow.search_runs(experiment_ids=[exp_id], filter_string="metrics.loss >= 3")
    assert set(frame["run_id"]) == {ids[3], ids[4]}


def test_delete_and_restore_run(client):
    exp_id = client.create_experiment("lifecycle")
    run_id = client.create_run(exp_id).info.run_id
    client.delete_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    assert client.search_runs([exp_id]) == []
    deleted = client.search_runs([exp_id], run_view_type=ViewType.DELETED_ONLY)
    assert [r.info.run_id for r in deleted] == [run_id]
    client.restore_run(run_id)
    assert [r.info.run_id for r in client.search_runs([exp_id])] == [run_id]


def test_errors_carry_mlflow_error_codes(client):
    exp_id = client.create_experiment("errors")
    with pytest.raises(MlflowException) as excinfo:
        client.get_run("0" * 32)
    assert error_code(excinfo) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as excinfo:
        client.log_metric("f" * 32, "m", 1.0)
    assert error_code(excinfo) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as excinfo:
        client.search_runs([exp_id], filter_string="metrics.loss <<< 1")
    assert error_code(excinfo) == "INVALID_PARAMETER_VALUE"
    run_id = client.create_run(exp_id).info.run_id
    client.log_param(run_id, "p", "1")
    with pytest.raises(MlflowException) as excinfo:
        client.log_param(run_id, "p", "2")
    assert error_code(excinfo) == "INVALID_PARAMETER_VALUE"


def test_an_answer_of_status_500_raises_internal_error_as_over_http(client):
    # Renaming a deleted experiment is refused with a 500 (INVALID_STATE in the body); MLflow's
    # client retries a 500 and then raises INTERNAL_ERROR without reading the body, so that is
    # what it sees from `mlflow server` and `runlog serve`, and must see here.
    exp_id = client.create_experiment("deleted-then-renamed")
    client.delete_experiment(exp_id)
    with pytest.raises(MlflowException) as excinfo:
        client.rename_experiment(exp_id, "new-name")
    assert error_code(excinfo) == "INTERNAL_ERROR"
    assert excinfo.value.get_http_status_code() == 500
    assert "INVALID_STATE" in str(excinfo.value), "the service's answer stays in the message"


def test_two_uris_for_one_directory_share_the_store(tmp_path):
    directory = tmp_path / "shared"
    first = MlflowClient(tracking_uri=f"runlog://{directory}")
    second = MlflowClient(tracking_uri=f"runlog://{directory}/")
    exp_id = first.create_experiment("shared")
    assert second.get_experiment(exp_id).name == "shared"


def test_environment_uri_in_a_fresh_interpreter(tmp_path):
    """MLflow loads the entry point while importing itself; the plugin must not cycle."""
    script = (
        "import mlflow\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_metric('m', 1.5, step=2)\n"
        "print(run.info.run_id)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"runlog://{tmp_path / 's'}"}
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "partially initialized" not in done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    history = MlflowClient(f"runlog://{tmp_path / 's'}").get_metric_history(run_id, "m")
    assert [(m.step, m.value) for m in history] == [(2, 1.5)]


def artifact_routes_served(tmp_path):
    from runlog import MlflowService

    status, _, body = MlflowService(str(tmp_path / "probe")).handle(
        "GET", "/api/2.0/mlflow-artifacts/artifacts", "path=0/x/artifacts", b""
    )
    return b"ENDPOINT_NOT_FOUND" not in body


def test_artifacts_up_list_down_delete(client, tmp_path):
    if not artifact_routes_served(tmp_path):
        pytest.skip("this build's runlog::mlflow::Service has no mlflow-artifacts routes")
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_bytes(b"alpha")
    (source / "sub" / "b.bin").write_bytes(bytes(range(256)))
    mlflow.set_experiment("artifacts")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(source / "a.txt"))
        mlflow.log_artifacts(str(source), artifact_path="tree")
        mlflow.log_text("hello", "notes/t.txt")
    run_id = run.info.run_id
    top = {(f.path, f.is_dir) for f in client.list_artifacts(run_id)}
    assert top == {("a.txt", False), ("tree", True), ("notes", True)}
    assert [f.path for f in client.list_artifacts(run_id, "tree/sub")] == ["tree/sub/b.bin"]
    out = mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "out"))
    assert (tmp_path / "out" / "tree" / "sub" / "b.bin").read_bytes() == bytes(range(256))
    assert open(os.path.join(out, "a.txt"), "rb").read() == b"alpha"
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/notes/t.txt") == "hello"


def test_artifact_entry_point_leaves_other_tracking_uris_to_mlflow():
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    repo = get_artifact_repository(
        "mlflow-artifacts:/1/abc/artifacts", tracking_uri="http://127.0.0.1:5000"
    )
    assert type(repo) is MlflowArtifactsRepository
    assert repo.artifact_uri.startswith("http://127.0.0.1:5000/api/2.0/mlflow-artifacts/")


def test_artifact_entry_point_serves_runlog_tracking_uris(tracking):
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository("mlflow-artifacts:/1/abc/artifacts", tracking_uri=tracking)
    assert type(repo).__name__ == "RunlogArtifactRepository"


def test_artifact_listing_raises_what_the_service_refuses(client, tmp_path):
    if not artifact_routes_served(tmp_path):
        pytest.skip("this build's runlog::mlflow::Service has no mlflow-artifacts routes")
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    mlflow.set_experiment("listing")
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "notes/t.txt")
    repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri)
    assert [f.path for f in repo.list_artifacts("notes")] == ["notes/t.txt"]
    assert repo.list_artifacts("missing") == []
    with pytest.raises(MlflowException) as excinfo:
        repo.list_artifacts("../escape")
    assert error_code(excinfo) == "INVALID_PARAMETER_VALUE"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_logs_through_the_same_runlog_uri(client, tmp_path):
    import time
    import traceback

    mlflow.set_experiment("fork")
    with mlflow.start_run() as parent:
        mlflow.log_metric("m", 1.0, step=1)
    # The parent's store (and its service) is open and cached by MLflow before the fork.
    assert [m.value for m in client.get_metric_history(parent.info.run_id, "m")] == [1.0]
    child_id = tmp_path / "child-run-id"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with mlflow.start_run() as child:
                mlflow.log_metric("m", 2.0, step=2)
            child_id.write_text(child.info.run_id)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    run_id = child_id.read_text()
    assert run_id != parent.info.run_id
    history = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not history:
        try:
            history = client.get_metric_history(run_id, "m")
        except MlflowException:
            time.sleep(0.01)
    assert [(m.step, m.value) for m in history] == [(2, 2.0)]
    assert [(m.step, m.value) for m in client.get_metric_history(parent.info.run_id, "m")] == [
        (1, 1.0)
    ]
    client.set_tag(parent.info.run_id, "after", "fork")
    assert client.get_run(parent.info.run_id).data.tags["after"] == "fork"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_service_that_fails_with_forked_is_replaced_by_the_childs_own(tmp_path):
    from runlog import MlflowService

    service = MlflowService(str(tmp_path / "store"))
    create = "/api/2.0/mlflow/experiments/create"
    assert service.handle("POST", create, "", b'{"name": "parent"}')[0] == 200
    outcome = tmp_path / "outcome"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            first = service.handle("POST", create, "", b'{"name": "child-1"}')
            second = service.handle("POST", create, "", b'{"name": "child-2"}')
            outcome.write_text(f"{first[0]} {second[0]}")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert outcome.read_text() == "500 200"
    assert service.handle("POST", create, "", b'{"name": "parent-2"}')[0] == 200
