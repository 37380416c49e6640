#!/usr/bin/env python3
"""Writes the `runlog ingest` input of the open-cost measurements (docs/BENCHMARKS.md, "Opening
a compacted store of many small runs").

2,040,000 JSON Lines: 20 experiments x 1,000 runs, each run declared with one param and one
tag, 10 keys x 10 steps of random values, then FINISHED (200,000 series, 2 M points). Seeded,
so every run of this script writes the same bytes.

    python3 benches/catalog_input.py /tmp/catalog.jsonl
"""
import random
import sys

EXPERIMENTS, RUNS, KEYS, STEPS = 20, 1000, 10, 10


def main(path):
    rng = random.Random(7)
    with open(path, "w") as out:
        for e in range(EXPERIMENTS):
            for r in range(RUNS):
                out.write('{"type": "run", "experiment": "exp%d", "run": "r%d", '
                          '"params": {"lr": "%g"}, "tags": {"model": "cnn"}}\n'
                          % (e, r, 0.001 * (r % 7 + 1)))
                for step in range(STEPS):
                    for k in range(KEYS):
                        out.write('{"type": "metric", "experiment": "exp%d", "run": "r%d", '
                                  '"key": "m%d", "value": %r, "step": %d, "timestamp": %d}\n'
                                  % (e, r, k, rng.random(), step, 1_700_000_000_000 + step))
                out.write('{"type": "status", "experiment": "exp%d", "run": "r%d", '
                          '"status": "FINISHED"}\n' % (e, r))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "catalog.jsonl")
