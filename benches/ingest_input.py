#!/usr/bin/env python3
"""Writes the `runlog ingest` benchmark input (docs/BENCHMARKS.md, "The command line").

2,000,016 JSON Lines: 8 `run` lines, 2,000,000 `metric` lines (8 runs x 2 keys x 125,000 steps,
17-digit random values, ~142 bytes a line), 8 `status` lines. Seeded, so every run of this
script writes the same bytes.

    python3 benches/ingest_input.py /tmp/ingest.jsonl
"""
import json
import random
import sys

RUNS, KEYS, STEPS = 8, ("loss", "acc"), 125_000


def main(path):
    rng = random.Random(5)
    with open(path, "w") as out:
        for r in range(RUNS):
            out.write(json.dumps({"type": "run", "experiment": "mnist", "run": f"r{r}",
                                  "params": {"lr": 0.01 * (r + 1), "bs": "64"},
                                  "tags": {"model": "cnn"}}) + "\n")
        for step in range(STEPS):
            for r in range(RUNS):
                for key in KEYS:
                    out.write('{"type": "metric", "experiment": "mnist", "run": "r%d", '
                              '"key": "%s", "value": %r, "step": %d, "timestamp": %d}\n'
                              % (r, key, rng.random(), step, 1_700_000_000_000 + step))
        for r in range(RUNS):
            out.write(json.dumps({"type": "status", "experiment": "mnist", "run": f"r{r}",
                                  "status": "FINISHED"}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ingest.jsonl")
