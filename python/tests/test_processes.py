"""Threads and processes: shared handles across threads, spawned ranks logging at once, a
SIGKILLed writer, and a forked child using its parent's handle."""

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import runlog


def test_threads_share_store_and_run(store, experiment):
    shared = store.start_run(experiment.id, name="shared")
    errors = []

    def worker(index):
        try:
            with store.start_run(experiment.id, name=f"thread-{index}") as own:
                for step in range(2000):
                    own.log_metric("loss", float(step), step)
                    shared.log_metric(f"t{index}", float(step), step)
                own.log_batch("batch", np.arange(1000), np.ones(1000))
                store.history(own.id, "loss")
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    shared.end()
    assert errors == []
    data = store.get_run(shared.id)
    assert sorted(data.metrics) == [f"t{i}" for i in range(8)]
    for i in range(8):
        assert store.history(shared.id, f"t{i}")["step"].to_pylist() == list(range(2000))
    runs = store.search_runs([experiment.id], filter_string="attributes.run_name LIKE 'thread-%'")
    assert len(runs) == 8


def _rank(path, experiment_id, rank, points):
    store = runlog.Store(path, durability="buffered")
    with store.start_run(experiment_id, name=f"rank-{rank}") as run:
        for step in range(points):
            run.log_metric("loss", rank + step / points, step)
        run.log_batch("batch", np.arange(points), np.full(points, float(rank)))
    store.close()


def test_four_spawned_processes(store_dir):
    path = str(store_dir)
    store = runlog.Store(path)
    exp = store.get_or_create_experiment("ddp")
    points = 5000
    context = multiprocessing.get_context("spawn")
    ranks = [context.Process(target=_rank, args=(path, exp.id, r, points)) for r in range(4)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(120)
        assert process.exitcode == 0
    reader = runlog.Store(path)
    runs = reader.search_runs([exp.id], order_by=["attributes.run_name ASC"])
    assert [r.name for r in runs] == [f"rank-{r}" for r in range(4)]
    for rank, run in enumerate(runs):
        assert run.status == "FINISHED"
        loss = reader.history(run.id, "loss")
        assert loss["step"].to_pylist() == list(range(points))
        assert loss["value"].to_pylist() == [rank + s / points for s in range(points)]
        assert reader.history(run.id, "batch")["value"].to_pylist() == [float(rank)] * points


KILLED_CHILD = textwrap.dedent(
    """
    import sys, runlog
    store = runlog.Store(sys.argv[1], durability="buffered")
    exp = store.get_or_create_experiment("crash")
    run = store.start_run(exp.id, name="victim")
    print(run.id, flush=True)
    step = 0
    while True:
        run.log_metric("a", float(step), step)
        run.log_metric("b", -float(step), step)
        if step == 20000:
            print("ready", flush=True)
        step += 1
    """
)


def test_sigkilled_child_leaves_prefixes(store_dir):
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(store_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        run_id = child.stdout.readline().strip()
        assert child.stdout.readline().strip() == "ready"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    store = runlog.Store(str(store_dir))
    assert store.get_run(run_id).status == "RUNNING"
    for key, sign in [("a", 1.0), ("b", -1.0)]:
        table = store.history(run_id, key)
        n = table.num_rows
        assert n > 20000
        assert table["step"].to_pylist() == list(range(n))
        assert table["value"].to_pylist() == [sign * s for s in range(n)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_using_parent_handle_gets_forked(store):
    exp = store.get_or_create_experiment("fork")
    run = store.start_run(exp.id)
    run.log_metric("x", 1.0, 0)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        outcome = b"no error"
        try:
            run.log_metric("x", 2.0, 1)
        except runlog.Forked as error:
            outcome = b"Forked: " + str(error).encode()
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            outcome = repr(error).encode()
        try:
            store.history(run.id, "x")
            outcome += b" | read: no error"
        except runlog.Forked:
            outcome += b" | read: Forked"
        except BaseException as error:  # noqa: BLE001
            outcome += b" | read: " + repr(error).encode()
        os.write(write, outcome)
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    outcome = os.read(read, 4096).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert outcome.startswith("Forked: "), outcome
    assert "forked child" in outcome
    assert outcome.endswith("read: Forked"), outcome
    run.log_metric("x", 3.0, 2)
    run.end()
    assert store.history(run.id, "x")["value"].to_pylist() == [1.0, 3.0]


def test_forked_child_opening_its_own_store_logs(store_dir):
    store = runlog.Store(str(store_dir))
    exp = store.get_or_create_experiment("fork")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            own = runlog.Store(str(store_dir))
            with own.start_run(exp.id, name="child") as run:
                run.log_metric("x", 1.0, 0)
            own.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        runs = store.search_runs([exp.id])
        if runs:
            break
        time.sleep(0.01)
    assert [r.name for r in runs] == ["child"]
