"""Run.metric: a handle logs exactly what Run.log_metric logs, and refuses what it refuses."""

import math
import struct
import time

import pytest

import runlog


def bits(value):
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def test_handle_logs_what_log_metric_logs(store, experiment):
    values = [math.nan, math.inf, -math.inf, -0.0, 0.1, 5e-324, 1.5]
    with store.start_run(experiment.id) as by_string, store.start_run(experiment.id) as by_handle:
        handle = by_handle.metric("loss")
        assert handle.key == "loss"
        assert "loss" in repr(handle)
        for step, value in enumerate(values):
            by_string.log_metric("loss", value, step)
            handle.log_at(value, step, 1_700_000_000_000 + step)
    expected = store.history(by_string.id, "loss").to_pydict()
    found = store.history(by_handle.id, "loss").to_pydict()
    assert found["step"] == expected["step"] == list(range(len(values)))
    assert [bits(v) for v in found["value"]] == [bits(v) for v in expected["value"]]
    assert found["timestamp"] == [1_700_000_000_000 + s for s in range(len(values))]


def test_handle_timestamps_with_the_wall_clock(store, experiment):
    with store.start_run(experiment.id) as run:
        handle = run.metric("loss")
        before = int(time.time() * 1000)
        for step in range(1000):
            handle.log(float(step), step)
        after = int(time.time() * 1000) + 1
    history = store.history(run.id, "loss").to_pydict()
    assert history["step"] == list(range(1000))
    assert all(before <= t <= after for t in history["timestamp"])


def test_handle_refuses_what_log_metric_refuses(store, experiment):
    with pytest.raises(runlog.InvalidInput):
        store.start_run(experiment.id).metric("bad\x00key")
    run = store.start_run(experiment.id)
    handle = run.metric("loss")
    handle.log(1.0, 0)
    run.end()
    with pytest.raises(runlog.InvalidInput):
        run.log_metric("loss", 2.0, 1)
    with pytest.raises(runlog.InvalidInput):
        handle.log(2.0, 1)
    assert store.history(run.id, "loss").num_rows == 1
