"""Every call of the package's API once, with the values it must give back."""

import gc

import pyarrow as pa
import pytest

import runlog


def test_experiments(store):
    exp = store.get_or_create_experiment("mnist")
    assert exp.name == "mnist"
    assert store.get_or_create_experiment("mnist").id == exp.id
    assert store.get_experiment(exp.id).name == "mnist"
    assert exp.lifecycle_stage == "active"
    assert "mnist" in [e.name for e in store.experiments()]
    with pytest.raises(runlog.AlreadyExists):
        store.create_experiment("mnist")
    other = store.create_experiment("other")
    assert other.id != exp.id
    assert "mnist" in repr(exp)


def test_run_context_manager_finishes(store, experiment):
    with store.start_run(
        experiment.id, name="trial-1", params={"lr": "0.01"}, tags={"model": "vit"}
    ) as run:
        assert run.active
        run.log_metric("loss", 0.25, 10)
        run.log_metrics({"loss": 0.2, "acc": 0.9}, 11)
        run.log_param("seed", "7")
        run.log_params({"batch": "32"})
        run.set_tag("stage", "dev")
        run.set_tag("gone", "x")
        run.delete_tag("gone")
        assert run.info().status == "RUNNING"
    assert not run.active
    data = store.get_run(run.id)
    assert data.id == run.id and len(run.id) == 32
    assert data.experiment_id == experiment.id
    assert data.name == "trial-1"
    assert data.status == "FINISHED"
    assert data.end_time is not None and data.end_time >= data.start_time
    assert data.params == {"lr": "0.01", "seed": "7", "batch": "32"}
    assert data.tags["model"] == "vit" and data.tags["stage"] == "dev"
    assert "gone" not in data.tags
    assert data.metrics == {"loss": 0.2, "acc": 0.9}
    assert data.parent_id is None


def test_exception_fails_run_and_is_reraised(store, experiment):
    with pytest.raises(ZeroDivisionError):
        with store.start_run(experiment.id) as run:
            run.log_metric("loss", 1.0, 0)
            1 / 0
    assert store.get_run(run.id).status == "FAILED"


def test_run_never_ended_is_killed(store, experiment):
    run = store.start_run(experiment.id)
    run_id = run.id
    del run
    gc.collect()
    assert store.get_run(run_id).status == "KILLED"


def test_end_statuses_and_logging_after_end(store, experiment):
    run = store.start_run(experiment.id)
    run.end("KILLED")
    run.end()  # a second end does nothing
    assert store.get_run(run.id).status == "KILLED"
    with pytest.raises(runlog.InvalidInput, match="has ended"):
        run.log_metric("loss", 1.0, 0)
    with pytest.raises(runlog.InvalidInput, match="not an end status"):
        store.start_run(experiment.id).end("RUNNING")


def test_resume_and_nested_runs(store, experiment):
    with store.start_run(experiment.id, name="parent") as parent:
        with store.start_run(experiment.id, parent_id=parent.id) as child:
            child.log_metric("x", 1.0, 0)
    assert store.get_run(child.id).parent_id == parent.id
    with store.resume_run(child.id) as again:
        again.log_metric("x", 2.0, 1)
    assert store.history(child.id, "x")["value"].to_pylist() == [1.0, 2.0]


def test_history_table(store, experiment):
    with store.start_run(experiment.id) as run:
        for step in range(100):
            run.log_metric("loss", 1.0 / (step + 1), step)
    table = store.history(run.id, "loss")
    assert isinstance(table, pa.Table)
    assert table.column_names == ["step", "timestamp", "value"]
    assert table.schema.field("step").type == pa.int64()
    assert table.schema.field("timestamp").type == pa.int64()
    assert table.schema.field("value").type == pa.float64()
    assert table["step"].to_pylist() == list(range(100))
    assert table["value"].to_pylist() == [1.0 / (s + 1) for s in range(100)]
    part = store.history(run.id, "loss", start_step=10, end_step=20)
    assert part["step"].to_pylist() == list(range(10, 20))
    assert store.history(run.id, "never-logged").num_rows == 0


def test_history_downsampled(store, experiment):
    with store.start_run(experiment.id) as run:
        for step in range(1000):
            run.log_metric("loss", float(step), step)
    table = store.history_downsampled(run.id, "loss", 10)
    assert table.num_rows == 10
    assert sum(table["count"].to_pylist()) == 1000
    assert table["min"].to_pylist()[0] == 0.0
    assert table["last_value"].to_pylist()[-1] == 999.0
    assert table["step_start"].to_pylist()[0] == 0
    assert table["step_end"].to_pylist()[-1] == 999


def test_search_runs(store, experiment):
    for lr, loss in [("0.1", 0.5), ("0.01", 0.2), ("0.001", 0.1)]:
        with store.start_run(experiment.id, params={"lr": lr}) as run:
            run.log_metric("loss", loss, 1)
    runs = store.search_runs(
        [experiment.id], filter_string="metrics.loss < 0.3", order_by=["metrics.loss ASC"]
    )
    assert [r.params["lr"] for r in runs] == ["0.001", "0.01"]
    assert [r.metrics["loss"] for r in runs] == [0.1, 0.2]
    assert all(r.status == "FINISHED" for r in runs)
    assert len(store.search_runs()) == 3
    assert len(store.search_runs([experiment.id], max_results=1)) == 1
    with pytest.raises(runlog.InvalidFilter) as info:
        store.search_runs([experiment.id], filter_string="metrics.loss <")
    assert isinstance(info.value, runlog.InvalidInput)
    assert isinstance(info.value, runlog.Error)


def test_compare(store, experiment):
    with store.start_run(experiment.id) as a:
        a.log_metric("loss", 3.0, 0)
        a.log_metric("loss", 1.0, 1)
    with store.start_run(experiment.id) as b:
        b.log_metric("acc", 0.5, 0)
    rows = store.compare([a.id, b.id], ["loss"])
    assert rows[0] == {
        "run_id": a.id, "key": "loss", "count": 2, "first_step": 0, "last_step": 1,
        "last": 1.0, "min": 1.0, "max": 3.0, "mean": 2.0,
    }
    assert rows[1]["run_id"] == b.id and rows[1]["count"] is None
    with pytest.raises(runlog.NotFound):
        store.compare(["0" * 32])


def test_artifacts(store, experiment, tmp_path):
    source = tmp_path / "model.pt"
    source.write_bytes(b"weights")
    with store.start_run(experiment.id) as run:
        artifact = run.log_artifact(str(source))
        run.log_artifact_bytes("notes/readme.txt", b"hello")
    assert artifact.path == "model.pt" and artifact.size_bytes == 7
    assert len(artifact.sha256) == 64
    assert sorted(store.get_run(run.id).artifacts) == ["model.pt", "notes/readme.txt"]
    with pytest.raises(runlog.Error):
        run_again = store.start_run(experiment.id)
        run_again.log_artifact(str(tmp_path / "missing"))


def test_flush_close_compact_export(store_dir, tmp_path):
    store = runlog.Store(str(store_dir))
    exp = store.get_or_create_experiment("e")
    with store.start_run(exp.id) as run:
        for step in range(1000):
            run.log_metric("loss", float(step), step)
    store.flush()
    store.close()
    report = store.compact()
    assert report["points"] >= 1000
    assert store.history(run.id, "loss")["step"].to_pylist() == list(range(1000))
    exported = store.export(str(tmp_path / "export"))
    assert exported["points"] == 1000 and exported["runs"] == 1
    assert exported["files"]
    with runlog.Store(str(store_dir)) as reopened:
        assert reopened.get_run(run.id).metrics["loss"] == 999.0


def test_durability_options(tmp_path):
    for durability in ["buffered", "sync", 50, None]:
        store = runlog.Store(str(tmp_path / str(durability)), durability=durability)
        exp = store.get_or_create_experiment("e")
        with store.start_run(exp.id) as run:
            run.log_metric("x", 1.0, 0)
        assert store.get_run(run.id).metrics == {"x": 1.0}
    for bad in ["fast", 0, -5, 1.5]:
        with pytest.raises(runlog.InvalidInput):
            runlog.Store(str(tmp_path / "bad"), durability=bad)


def test_read_only(store_dir):
    store = runlog.Store(str(store_dir))
    exp = store.get_or_create_experiment("e")
    store.close()
    reader = runlog.Store(str(store_dir), read_only=True)
    assert reader.get_experiment(exp.id).name == "e"
    with pytest.raises(runlog.ReadOnly):
        reader.create_experiment("other")


def test_errors_carry_engine_messages(store, experiment):
    with pytest.raises(runlog.NotFound, match="not found"):
        store.get_run("0" * 32)
    with pytest.raises(runlog.InvalidInput):
        store.get_run("not-a-run-id")
    with pytest.raises(runlog.NotFound):
        store.get_experiment(12345)
    with store.start_run(experiment.id) as run:
        run.log_param("lr", "0.1")
        with pytest.raises(runlog.ParamChanged):
            run.log_param("lr", "0.2")
        with pytest.raises(runlog.InvalidInput):
            run.log_metric("", 1.0, 0)
    for cls in [runlog.NotFound, runlog.InvalidInput, runlog.Corruption, runlog.Forked,
                runlog.StorageFull, runlog.NotAStore, runlog.Deleted]:
        assert issubclass(cls, runlog.Error)
    assert issubclass(runlog.StorageFull, runlog.IoError)
