"""One quick measurement of the binding's hot paths (not a test; run it on a release build):

    maturin develop --release && python benches/hot_paths.py [store-dir]

Prints log_metric calls/s from a Python for loop, log_batch points/s from numpy arrays, and
the time to read a 10-million-point series into a pyarrow.Table: first from the log, where the
series sits behind 36 M points of another run (never compacted), then after store.compact();
each as the call alone and as the call with the release of the table it returned.
"""

import sys
import tempfile
import time

import numpy as np

import runlog


def best_of(repeats, f):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="runlog-bench-")
    store = runlog.Store(root, durability="buffered")
    exp = store.get_or_create_experiment("bench")
    run = store.start_run(exp.id, name="bench")

    calls = 2_000_000
    log_metric = run.log_metric

    def loop():
        for step in range(calls):
            log_metric("loss", 0.5, step)

    seconds = best_of(3, loop)
    print(f"log_metric from a for loop: {calls / seconds / 1e6:.2f} M calls/s ({calls:,} calls, best of 3)")

    points = 10_000_000
    steps = np.arange(points, dtype=np.int64)
    values = np.random.default_rng(7).random(points)
    seconds = best_of(3, lambda: run.log_batch("batch", steps, values))
    print(f"log_batch from numpy: {points / seconds / 1e6:.1f} M points/s ({points:,} points, best of 3)")

    single = store.start_run(exp.id, name="history")
    single.log_batch("loss", steps, values)
    single.end()
    run.end()
    store.flush()

    def read_history(where):
        # The call alone, and the call with the release of the table it returned (240 MB given
        # back to the system), each the best of 3: the table is dropped after the first timer
        # stops, so the next call does not pay for it either.
        call, with_release = [], []
        for _ in range(3):
            start = time.perf_counter()
            table = store.history(single.id, "loss")
            returned = time.perf_counter()
            assert table.num_rows == points
            del table
            released = time.perf_counter()
            call.append(returned - start)
            with_release.append(released - start)
        print(
            f"history of {points:,} points into pyarrow, {where}: {min(call) * 1e3:.0f} ms"
            f" (best of 3; {min(with_release) * 1e3:.0f} ms with the table's release)"
        )

    read_history("from the log")
    store.compact()
    read_history("compacted")


if __name__ == "__main__":
    main()
