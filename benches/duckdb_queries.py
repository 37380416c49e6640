"""Times issue 4's queries in DuckDB on runlog's Parquet export (called by
benches/queries.rs). Installs duckdb with pip if it is missing. Prints a markdown table of
median times, and, when the harness passes runlog's times of the same run in RUNLOG_QUERY_MS
(one "name<TAB>milliseconds" line per query), a table of both with DuckDB / runlog.

Usage: duckdb_queries.py EXPORT_DIR SEARCH_EXPORT_DIR RUN_ID MID_STEP RUN_ID...(10)
"""
import os
import statistics
import subprocess
import sys
import time

try:
    import duckdb
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "duckdb==1.5.6"])
    import duckdb

export, search_export, run, mid, *ten = sys.argv[1:]
mid = int(mid)
con = duckdb.connect()
con.execute("SET threads TO 2")
metrics = f"read_parquet('{export}/metrics/*/*.parquet', hive_partitioning = true)"
summaries = f"read_parquet('{export}/metric_summaries/*/*.parquet', hive_partitioning = true)"
runs_ten = ", ".join(f"'{r}'" for r in ten)

queries = [
    ("full history of one series",
     f"SELECT step, timestamp, value FROM {metrics} WHERE run_id = '{run}' AND key = 'val/loss' ORDER BY step"),
    ("a 1,000-step range",
     f"SELECT step, timestamp, value FROM {metrics} WHERE run_id = '{run}' AND key = 'val/loss' "
     f"AND step >= {mid} AND step < {mid + 1000} ORDER BY step"),
    ("last value for all 800 series",
     f"SELECT run_id, key, last_value FROM {summaries}"),
    ("10-run step-aligned comparison, 500 buckets",
     f"SELECT run_id, (step - lo) * 500 // (hi - lo + 1) AS bucket, min(value), max(value), "
     f"arg_max(value, step) FROM {metrics}, (SELECT min(step) AS lo, max(step) AS hi FROM {metrics} "
     f"WHERE key = 'val/loss' AND run_id IN ({runs_ten})) WHERE key = 'val/loss' AND run_id IN ({runs_ten}) "
     f"GROUP BY run_id, bucket"),
    ("search over 10,000 runs, two-clause filter",
     f"SELECT p.run_id FROM read_parquet('{search_export}/params/*/*.parquet') p JOIN "
     f"read_parquet('{search_export}/metric_summaries/*/*.parquet') s ON p.run_id = s.run_id "
     f"WHERE p.key = 'lr' AND p.value = '0.01' AND s.key = 'acc' AND s.last_value > 0.5 LIMIT 100"),
    ("search over 10,000 runs, two-clause filter, ordered by metrics.acc DESC",
     f"SELECT p.run_id FROM read_parquet('{search_export}/params/*/*.parquet') p JOIN "
     f"read_parquet('{search_export}/metric_summaries/*/*.parquet') s ON p.run_id = s.run_id "
     f"WHERE p.key = 'lr' AND p.value = '0.01' AND s.key = 'acc' AND s.last_value > 0.5 "
     f"ORDER BY s.last_value DESC LIMIT 100"),
    ("search over 10,000 runs, one metric clause",
     f"SELECT run_id FROM read_parquet('{search_export}/metric_summaries/*/*.parquet') "
     f"WHERE key = 'acc' AND last_value > 0.5 LIMIT 100"),
]

print("\n| query | DuckDB " + duckdb.__version__ + " on the export |")
print("|---|---|")
duckdb_ms = {}
for name, sql in queries:
    con.execute(sql).fetchall()  # warm up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        con.execute(sql).fetchall()
        times.append(time.perf_counter() - start)
    duckdb_ms[name] = statistics.median(times) * 1e3
    print(f"| {name} | {duckdb_ms[name]:.3f} ms |")

runlog_ms = {}
for line in os.environ.get("RUNLOG_QUERY_MS", "").splitlines():
    name, _, ms = line.partition("\t")
    runlog_ms[name] = float(ms)
if runlog_ms:
    print("\n| query | runlog | DuckDB " + duckdb.__version__ + " on the export | DuckDB / runlog |")
    print("|---|---|---|---|")
    for name, ms in runlog_ms.items():
        theirs = duckdb_ms.get(name)
        if theirs is None:
            print(f"| {name} | {ms:.3f} ms | | |")
        else:
            ratio = f"{theirs / ms:.1f}x" if ms > 0 else ""
            print(f"| {name} | {ms:.3f} ms | {theirs:.3f} ms | {ratio} |")
