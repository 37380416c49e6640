"""MLflow's Python client end to end against `runlog serve` and `mlflow server` (sqlite, default
settings, proxied artifacts), in the same run: single `log_metric` calls (one request per point)
and 1,000-point `log_batch` calls. Prints calls/s, points/s and runlog's ratio to mlflow.

Not collected by pytest. Run from the repository root with the suite's venv, e.g.

    RUNLOG_BIN=target/release/runlog target/python-venv/bin/python tests/python/bench_client.py \
        --single 1000 --batches 20

Both servers run on this machine with the client, one at a time, each over a fresh store;
runlog twice, at its default durability (a sync every 1,000 ms) and with `--durability sync`.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.pop("MLFLOW_TRACKING_URI", None)

import mlflow  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers  # noqa: E402

BATCH_POINTS = 1000


def measure(url, singles, batches):
    mlflow.set_tracking_uri(url)
    client = MlflowClient(tracking_uri=url)
    exp = client.create_experiment("bench-client")
    run_id = client.create_run(exp, run_name="bench").info.run_id
    client.log_metric(run_id, "warmup", 0.0, step=0)

    start = time.perf_counter()
    for step in range(singles):
        client.log_metric(run_id, "single", step * 0.001, step=step)
    single_s = time.perf_counter() - start

    ts = int(time.time() * 1000)
    payloads = [
        [Metric("batched", (b * BATCH_POINTS + i) * 0.001, ts, b * BATCH_POINTS + i) for i in range(BATCH_POINTS)]
        for b in range(batches)
    ]
    start = time.perf_counter()
    for metrics in payloads:
        client.log_batch(run_id, metrics=metrics)
    batch_s = time.perf_counter() - start

    # read back, so a server that drops points cannot look fast
    singles_back = len(client.get_metric_history(run_id, "single"))
    batched_back = len(client.get_metric_history(run_id, "batched"))
    if singles_back != singles or batched_back != batches * BATCH_POINTS:
        raise SystemExit(f"{url}: read back {singles_back} single and {batched_back} batched points")
    return {
        "single_calls_per_s": singles / single_s,
        "batch_calls_per_s": batches / batch_s,
        "batch_points_per_s": batches * BATCH_POINTS / batch_s,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--single", type=int, default=500, help="single log_metric calls")
    parser.add_argument("--batches", type=int, default=10, help="log_batch calls of 1,000 points")
    args = parser.parse_args()

    results = {}
    with servers.mlflow_server() as url:
        results["mlflow server"] = measure(url, args.single, args.batches)
    # runlog's default syncs every 1,000 ms; `sync` answers only after the sync, as sqlite's
    # commit does, so both are shown.
    for label, extra in [("runlog serve", ()), ("runlog sync", ("--durability", "sync"))]:
        with servers.runlog_server(extra_args=extra) as url:
            results[label] = measure(url, args.single, args.batches)

    print(f"MLflow {mlflow.__version__} client, {args.single} single log_metric calls, "
          f"{args.batches} log_batch calls of {BATCH_POINTS} points; runlog binary {servers.runlog_binary()}")
    print(f"{'server':<14} {'single calls/s':>15} {'batch calls/s':>14} {'batched points/s':>17}")
    for name, r in results.items():
        print(f"{name:<14} {r['single_calls_per_s']:>15.1f} {r['batch_calls_per_s']:>14.2f} "
              f"{r['batch_points_per_s']:>17.0f}")
    m = results["mlflow server"]
    for label in ("runlog serve", "runlog sync"):
        s = results[label]
        print(f"{'ratio ' + label.split()[1]:<14} {s['single_calls_per_s'] / m['single_calls_per_s']:>14.1f}x "
              f"{s['batch_calls_per_s'] / m['batch_calls_per_s']:>13.1f}x "
              f"{s['batch_points_per_s'] / m['batch_points_per_s']:>16.1f}x")


if __name__ == "__main__":
    main()
