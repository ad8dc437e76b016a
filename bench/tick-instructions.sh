#!/usr/bin/env bash
# Instructions per game tick (BENCHMARKS.md, "Game tick"), counted by
# valgrind's callgrind: a figure that hardly depends on the machine or on
# what else runs on it, for comparing builds where timings cannot.
#
#   bench/tick-instructions.sh            # 16, 64 and 200 players
#   bench/tick-instructions.sh 16         # some of them
#
# Needs valgrind (`apt-get install valgrind`). Counts exactly the recorded
# ticks the `tick` bench times (push_input + Match::tick), and the bare
# reference schedules (grid and scan pickup) beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install valgrind" >&2; exit 1; }
players=("$@")
[ ${#players[@]} -gt 0 ] || players=(16 64 200)
bin=$(cargo bench -p acorn --bench tick --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$bin" ] || { echo "could not build the tick bench" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-8s %10s %14s %6s %19s %6s\n' players "tick Ir" "reference Ir" ratio "reference-scan Ir" ratio
for p in "${players[@]}"; do
  declare -A ir=()
  for what in tick reference reference-scan; do
    n=$(TICK_BENCH_COUNT="$what:$p" valgrind --tool=callgrind --callgrind-out-file="$out/cg" \
          --toggle-collect='*counted_ticks*' "$bin" 2>/dev/null | sed -n 's/^\([0-9]*\) ticks$/\1/p')
    total=$(callgrind_annotate "$out/cg" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
    ir[$what]=$((total / n))
  done
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
  printf '%-8s %10d %14d %6s %19d %6s\n' "$p" "${ir[tick]}" "${ir[reference]}" \
    "$(ratio "${ir[tick]}" "${ir[reference]}")" "${ir[reference-scan]}" \
    "$(ratio "${ir[tick]}" "${ir[reference-scan]}")"
done
