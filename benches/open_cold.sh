#!/bin/bash
# Cold-process times and peak RSS of the CLI's reads on one store, for builds compared in the
# same run (docs/BENCHMARKS.md, "Opening a compacted store of many small runs"). Each round runs
# every command of every build once, interleaved, so the machine's load falls on all alike;
# prints per build and command the median, min and max seconds and the peak RSS.
#
#   benches/open_cold.sh STORE RUN_ID ROUNDS BINARY...
#   e.g. benches/open_cold.sh /tmp/s "$(runlog --store /tmp/s runs exp3 --format csv | sed -n 2p | cut -d, -f1)" 7 /tmp/before/runlog target/release/runlog
set -euo pipefail
store=$1 run=$2 rounds=$3
shift 3
for _ in $(seq "$rounds"); do
  for binary in "$@"; do
    /usr/bin/time -f "$binary experiments %e %M" "$binary" --store "$store" experiments >/dev/null
    /usr/bin/time -f "$binary runs %e %M" "$binary" --store "$store" runs exp3 >/dev/null
    /usr/bin/time -f "$binary history %e %M" "$binary" --store "$store" history "$run" m3 >/dev/null
    # A writable open that logs nothing.
    : | /usr/bin/time -f "$binary write-open %e %M" "$binary" --store "$store" ingest - >/dev/null
  done
done 2>&1 | grep -E ' (experiments|runs|history|write-open) [0-9.]+ [0-9]+$' | python3 -c '
import collections, sys
seconds, rss = collections.defaultdict(list), {}
for line in sys.stdin:
    binary, command, elapsed, kilobytes = line.split()
    seconds[(binary, command)].append(float(elapsed))
    rss[(binary, command)] = max(rss.get((binary, command), 0), int(kilobytes))
for key in sorted(seconds):
    times = sorted(seconds[key])
    print(f"{key[0]} {key[1]}: median {times[len(times) // 2]:.3f} s "
          f"({times[0]:.3f} to {times[-1]:.3f}), {rss[key] / 1024:.0f} MB, n={len(times)}")
'
