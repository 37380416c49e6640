"""MLflow's fluent logging on ``runlog://`` beside MLflow's own stores, in one run (not a test):

    maturin develop --release && python benches/fluent.py [--calls N] [--mlflow-calls N]

For each tracking URI, in a fresh directory: ``mlflow.start_run()``, then single
``mlflow.log_metric(key, value, step=i)`` calls (one call per point), then
``mlflow.log_metrics({...}, step=i)`` batches of ``--batch-keys`` keys. Every point is read
back through ``MlflowClient`` before the figures count. Prints calls/s and points/s per store
and ``runlog://``'s ratio to the fastest of MLflow's stores.

The stores: ``runlog:///...`` (this package's plugin, in-process), MLflow's sqlite store
(``sqlite:///...``) and its file store (``file:///...``), which MLflow 3.17 refuses unless
``MLFLOW_ALLOW_FILE_STORE=true``: the benchmark sets that, MLflow's own opt-in. A last row
runs the same calls on a tracking store whose logging methods do nothing: MLflow's own cost
per fluent call, the ceiling any store can reach through that API.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("MLFLOW_RUN_ID", None)

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402


def measure(uri, calls, batches, batch_keys, read_back=True):
    """(single calls/s, batch calls/s) of the fluent API on `uri`, after one warm-up call."""
    mlflow.set_tracking_uri(uri)
    mlflow.tracking.fluent._active_experiment_id = None
    keys = [f"m{k}" for k in range(batch_keys)]
    with mlflow.start_run() as run:
        mlflow.log_metric("warmup", 0.0, step=0)
        mlflow.log_metrics({k: 0.0 for k in keys}, step=0)

        start = time.perf_counter()
        for step in range(calls):
            mlflow.log_metric("loss", 0.5, step=step)
        single_seconds = time.perf_counter() - start

        start = time.perf_counter()
        for step in range(1, batches + 1):
            mlflow.log_metrics({k: 0.25 for k in keys}, step=step)
        batch_seconds = time.perf_counter() - start
    if read_back:
        client = MlflowClient(tracking_uri=uri)
        got = len(client.get_metric_history(run.info.run_id, "loss"))
        assert got == calls, f"{uri}: read back {got} of {calls} single points"
        got = len(client.get_metric_history(run.info.run_id, keys[-1]))
        assert got == batches + 1, f"{uri}: read back {got} of {batches + 1} batched points"
    return calls / single_seconds, batches / batch_seconds


def null_store_uri():
    """A tracking URI whose store accepts every logging call and does nothing."""
    from mlflow.entities import Experiment, Run, RunData, RunInfo, RunStatus
    from mlflow.store.tracking.abstract_store import AbstractStore
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    class NullStore(AbstractStore):
        def __init__(self, store_uri=None, artifact_uri=None):
            super().__init__()
            self._runs = {}

        def get_experiment(self, experiment_id):
            return Experiment(experiment_id, "Default", "/dev/null", "active")

        def create_run(self, experiment_id, user_id, start_time, tags, run_name):
            run_id = f"{len(self._runs):032x}"
            info = RunInfo(run_id, experiment_id, user_id, RunStatus.to_string(RunStatus.RUNNING),
                           start_time, None, "active", run_name=run_name, artifact_uri="/dev/null")
            self._runs[run_id] = Run(info, RunData(tags=tags))
            return self._runs[run_id]

        def get_run(self, run_id):
            return self._runs[run_id]

        def update_run_info(self, run_id, run_status, end_time, run_name):
            return self._runs[run_id].info

        def log_metric(self, run_id, metric):
            pass

        def log_batch(self, run_id, metrics, params, tags):
            pass

    _tracking_store_registry.register("benchnull", NullStore)
    return "benchnull:///"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="single calls on runlog://")
    parser.add_argument("--mlflow-calls", type=int, default=2_000, help="single calls on MLflow's stores")
    parser.add_argument("--batch-keys", type=int, default=10, help="keys per log_metrics call")
    parser.add_argument("--dir", default=None, help="where the stores go (default: a temp dir)")
    args = parser.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="runlog-fluent-"))
    root.mkdir(parents=True, exist_ok=True)

    rows = []
    for name, uri, calls in [
        ("runlog://", f"runlog://{root / 'runlog'}", args.calls),
        ("sqlite", f"sqlite:///{root / 'mlflow.db'}", args.mlflow_calls),
        ("file store", (root / "mlruns").as_uri(), args.mlflow_calls),
    ]:
        single, batch = measure(uri, calls, calls // 10, args.batch_keys)
        rows.append((name, calls, single, batch))
        print(f"{name:>11}: {single:10,.0f} log_metric calls/s  {batch:10,.0f} log_metrics calls/s "
              f"({batch * args.batch_keys:,.0f} points/s); {calls:,} + {calls // 10:,} calls", flush=True)
    single, batch = measure(null_store_uri(), args.calls, args.calls // 10, args.batch_keys, read_back=False)
    print(f"{'null store':>11}: {single:10,.0f} log_metric calls/s  {batch:10,.0f} log_metrics calls/s "
          "(MLflow's own cost per call)")

    best_single = max(r[2] for r in rows[1:])
    best_batch = max(r[3] for r in rows[1:])
    print(f"runlog:// / MLflow's fastest store: {rows[0][2] / best_single:.1f}x for log_metric, "
          f"{rows[0][3] / best_batch:.1f}x for log_metrics")


if __name__ == "__main__":
    main()
