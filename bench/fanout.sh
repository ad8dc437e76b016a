#!/usr/bin/env bash
# Fan-out benchmark: Acorn vs nats-server (WebSocket), same generator, same run.
#
#   bench/fanout.sh            full run (3 repeats, up to 7 rates per size; about 10 minutes)
#   bench/fanout.sh --quick    smoke run (1 repeat, 2 rates per size, shorter phases; about 1.5 minutes)
#   options: --no-build (use the existing target/release/acorn), --no-nats, --no-idle,
#            --out DIR (default target/bench)
#   env: ACORN_BIN (binary to use), BENCH_NICE (niceness of servers and generator,
#        default -10 when root, so other work on the machine gets in the way less)
#
# Measures, for one topic with 1,000 and 10,000 subscriber connections and
# 64-byte values: deliveries/s, loss, publish -> receive latency (p50/p99/p99.9),
# server CPU seconds (utime+stime from /proc/PID/stat) and so deliveries per
# server CPU-second; then RSS per idle subscribed connection at 10,000
# connections (VmRSS from /proc/PID/status, fresh servers).
# Raw results: OUT/results.jsonl (one JSON line per measurement); tables: OUT/summary.md.
# See BENCHMARKS.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0 BUILD=1 NATS=1 IDLE=1
OUT="$ROOT/target/bench"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --no-nats) NATS=0 ;;
    --no-idle) IDLE=0 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$QUICK" = 1 ]; then
  REPEATS=1 DURATION=3 WARMUP=1
  RATES_1K="250,1000" RATES_10K="25,100"
  IDLE_HOLD=8
else
  # Each size runs until a rate delivers under 80 % of what it offers (or loses > 5 %).
  REPEATS=3 DURATION=4 WARMUP=1
  RATES_1K="100,250,500,1000,1500,2000,3000"
  RATES_10K="10,25,50,100,150,200,300"
  IDLE_HOLD=20 # past the 15 s heartbeat, so heartbeat buffers are counted too
fi
IDLE_CONNS=10000

BIN="${ACORN_BIN:-$ROOT/target/release/acorn}"
NATS_BIN=$(command -v nats-server || true)
[ -z "$NATS_BIN" ] && [ -x /usr/sbin/nats-server ] && NATS_BIN=/usr/sbin/nats-server
if [ "$NATS" = 1 ] && [ -z "$NATS_BIN" ]; then
  echo "nats-server not found (apt-get install nats-server, or pass --no-nats)" >&2
  exit 1
fi

mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
LOG="$OUT/run.log"
: > "$LOG"

# Servers and generator share one niceness (fair between Acorn and NATS).
NICE=0
[ "$(id -u)" = 0 ] && NICE=${BENCH_NICE:--10}
RUN=(nice -n "$NICE")

if [ "$BUILD" = 1 ]; then
  (cd "$ROOT" && cargo build --release -p acorn --bin acorn)
fi
[ -x "$BIN" ] || { echo "$BIN missing (build first)" >&2; exit 1; }

# Open files: 10,000 connections per side, plus slack.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10200 ]; then
  echo "open-files limit $(ulimit -n) is too low for 10,000 connections" >&2
  exit 1
fi

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() { # stop one server we started
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]:-}"; do [ "$p" != "$1" ] && [ -n "$p" ] && keep+=("$p"); done
  PIDS=("${keep[@]:-}")
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { # below the ephemeral range (32768+), so client sockets never take it
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000))
    if port_free "$p"; then echo "$p"; return 0; fi
  done
  echo "no free port found" >&2
  return 1
}
wait_port() { # wait_port PORT PID
  local i
  for i in $(seq 1 100); do
    if ! port_free "$1"; then return 0; fi
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

OPERATOR_KEY="bench-operator-$RANDOM$RANDOM"
ACORN_PID="" ACORN_URL="" NATS_PID="" NATS_URL=""

start_acorn() {
  local out="$OUT/acorn.stdout" i port
  : > "$out"
  ACORN_OPERATOR_KEY="$OPERATOR_KEY" \
  ACORN_TOKEN_SECRET="bench-secret-$RANDOM$RANDOM$RANDOM$RANDOM" \
  ACORN_WS_RATE=1000000 ACORN_WS_BURST=2000000 \
  ACORN_MAX_CONNECTIONS=200000 \
  RUST_LOG="${RUST_LOG:-warn}" \
    "${RUN[@]}" "$BIN" serve --listen 127.0.0.1:0 > "$out" 2>> "$OUT/acorn.log" &
  ACORN_PID=$!
  PIDS+=("$ACORN_PID")
  for i in $(seq 1 100); do
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$out")
    [ -n "$port" ] && break
    kill -0 "$ACORN_PID" 2>/dev/null || { echo "acorn exited; see $OUT/acorn.log" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$port" ] || { echo "acorn did not print its address" >&2; exit 1; }
  ACORN_URL="ws://127.0.0.1:$port/v1/ws"
  echo "acorn pid $ACORN_PID at $ACORN_URL" | tee -a "$LOG"
}

start_nats() {
  local client ws conf="$OUT/nats.conf"
  client=$(free_port)
  ws=$(free_port)
  while [ "$ws" = "$client" ]; do ws=$(free_port); done
  cat > "$conf" <<EOF
listen: 127.0.0.1:$client
max_connections: 200000
websocket {
  listen: "127.0.0.1:$ws"
  no_tls: true
}
EOF
  "${RUN[@]}" "$NATS_BIN" -c "$conf" >> "$OUT/nats.log" 2>&1 &
  NATS_PID=$!
  PIDS+=("$NATS_PID")
  wait_port "$ws" "$NATS_PID" || { echo "nats-server did not start; see $OUT/nats.log" >&2; exit 1; }
  NATS_URL="ws://127.0.0.1:$ws"
  echo "nats-server pid $NATS_PID at $NATS_URL (client port $client)" | tee -a "$LOG"
}

gen() { # gen TARGET MODE ARGS... : one generator process; JSON lines go to RESULTS
  local target=$1 mode=$2 url pid from
  shift 2
  if [ "$target" = acorn ]; then url=$ACORN_URL pid=$ACORN_PID; else url=$NATS_URL pid=$NATS_PID; fi
  from=$(($(wc -l < "$LOG") + 1))
  ACORN_OPERATOR_KEY="$OPERATOR_KEY" timeout 300 "${RUN[@]}" "$BIN" bench "$mode" --target "$target" --url "$url" \
    --server-pid "$pid" "$@" >> "$RESULTS" 2>> "$LOG" \
    || echo "  generator for $target $mode failed (exit $?); see $LOG" | tee -a "$LOG" >&2
  # Echo the generator's one-line summaries and notes.
  tail -n "+$from" "$LOG" | grep -E "^ *(acorn|nats) |note:|stopping|rror" >&2 || true
}

TARGETS=(acorn)
[ "$NATS" = 1 ] && TARGETS+=(nats)
START=$(date +%s)

echo "== fan-out: ${REPEATS} repeat(s), ${DURATION} s per rate, niceness $NICE" >&2
start_acorn
[ "$NATS" = 1 ] && start_nats
for rep in $(seq 1 "$REPEATS"); do
  for subs in 1000 10000; do
    if [ "$subs" = 1000 ]; then rates=$RATES_1K; else rates=$RATES_10K; fi
    for target in "${TARGETS[@]}"; do
      echo "-- repeat $rep: $target, $subs subscribers, rates $rates" >&2
      gen "$target" fanout --subscribers "$subs" --rate "$rates" --duration "$DURATION" \
        --warmup "$WARMUP" --value-size 64 --label "rep$rep"
      sleep 2 # let the server finish closing the previous run's connections
    done
  done
done

if [ "$IDLE" = 1 ]; then
  echo "== idle: $IDLE_CONNS subscribed connections per server, fresh servers" >&2
  stop_pid "$ACORN_PID"
  [ "$NATS" = 1 ] && stop_pid "$NATS_PID"
  start_acorn
  [ "$NATS" = 1 ] && start_nats
  sleep 1
  for target in "${TARGETS[@]}"; do
    gen "$target" idle --connections "$IDLE_CONNS" --hold "$IDLE_HOLD" --settle 2
  done
fi
cleanup

echo "== done in $(($(date +%s) - START)) s; raw results: $RESULTS" >&2
python3 "$ROOT/bench/summarize.py" "$RESULTS" | tee "$OUT/summary.md"
