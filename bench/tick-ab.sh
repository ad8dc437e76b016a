#!/usr/bin/env bash
# Two builds of the tick bench side by side (BENCHMARKS.md, "Game tick"):
# alternates runs of each binary so both see the same machine, and prints
# the median of each and their ratio.
#
#   cargo bench -p acorn --bench tick --no-run      # at the old commit
#   cp target/release/deps/tick-<hash> /tmp/tick-old
#   cargo bench -p acorn --bench tick --no-run      # at the new commit
#   bench/tick-ab.sh /tmp/tick-old target/release/deps/tick-<hash> [rounds] [filter]
set -euo pipefail
old=$1 new=$2 rounds=${3:-5} filter=${4:-tick/}
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
for _ in $(seq "$rounds"); do
  for who in old new; do
    bin=$old; [ "$who" = new ] && bin=$new
    "$bin" --bench --noplot --measurement-time 3 --warm-up-time 1 "$filter" 2>/dev/null \
      | grep "time:" | sed "s/^/$who /" >> "$runs"
  done
done
python3 - "$runs" <<'PY'
import collections, re, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.match(r'(\w+) (\S+)\s+time:\s+\[\S+ \S+ (\S+) (\S+)', line)
    if m:
        who, name, value, unit = m.groups()
        runs[(name, who)].append(float(value) * {'ns': 1, 'µs': 1e3, 'ms': 1e6}[unit])
for name in sorted({name for name, _ in runs}):
    old, new = (statistics.median(runs[(name, w)]) for w in ('old', 'new'))
    print(f"{name:16} old {old:9.0f} ns   new {new:9.0f} ns   new/old {new / old:.3f}"
          f"   (runs: {len(runs[(name, 'old')])} each)")
PY
