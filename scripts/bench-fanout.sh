#!/usr/bin/env bash
# WebSocket fan-out figures (for BENCHMARKS.md): a release Vigil in full mode (MariaDB +
# Redis on this machine) and the `fanout` measurer on the same cores.
#
# 1. reference: 1,000 clients × 500 events/s × 10 s (every event to every client, p99);
# 2. highest rate: 1,000 clients at rising rates until a run misses an event or its p99
#    passes 50 ms; the last rate that passed is reported;
# 3. many clients: 10,000 clients at rising rates until a run misses an event or its p99
#    passes 100 ms (a million deliveries a second is 100 events/s); then the same sweep
#    against `bare_fanout` (benches/), the floor: a server that only writes each event's
#    frame to every client's socket, with no store, cache, queue or task per client;
# 4. the wires: 1,000 WebSocket clients against 1,000 Server-Sent Events clients
#    (/api/events/stream) at 500 events/s, alternating, WIRE_ROUNDS rounds each;
# 5. the console: 1,000 /ws clients at 500 events/s, WIRE_ROUNDS rounds of three runs: no
#    console; the console (GET /) open in headless Chromium (capped at CONSOLE_CPU_PERCENT of
#    one core where a CPU cgroup can be made, else at nice 19); no console, with a busy loop
#    in the browser's place using the CPU share the browser just used (the baseline that
#    separates what the console costs the server from what a browser on the same two cores
#    costs everything) (skipped without chromium);
# 6. idle cost: a freshly started server, 10,000 idle connections, RSS growth per connection.
# Every run reports the server's CPU time per 1,000 deliveries (from /proc/PID/stat).
#
# Usage: bash scripts/bench-fanout.sh            (writes target/bench/fanout.jsonl, the
#        10,000-client runs to target/bench/fanout-10k.jsonl, bare_fanout's to
#        target/bench/fanout-10k-bare.jsonl, and the highest passing rates to
#        target/bench/fanout-verdict.json)
# Settings: PORT (3950; bare_fanout listens on PORT+1), RATES ("500 750 1000 1250 1500 2000"), DURATION (10s),
# RATES_10K ("1 10 50 100 150 200 300"), CLIENTS_10K (10000), COMPARE_UP_TO_10K (50: the
# 10,000-client rates run against both servers even after a run failed), IDLE_CONNECTIONS (10000),
# WIRE_ROUNDS (3; the wire and console runs go to target/bench/fanout-wires.jsonl),
# CONSOLE_CPU_PERCENT (25: the browser's CPU cap in the console runs),
# FANOUT_OUT (target/bench/fanout.jsonl), SKIP_BUILD=1 (binaries already built, as
# scripts/bench.sh does). Binaries are taken from $CARGO_TARGET_DIR/release.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
# 10,000 clients need as many descriptors in the measurer and in bare_fanout (Vigil raises
# its own limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PORT=${PORT:-3950}
RATES=${RATES:-"500 750 1000 1250 1500 2000"}
DURATION=${DURATION:-10s}
DB=vigil_bench_fanout
PREFIX=benchfanout
RATES_10K=${RATES_10K:-"1 10 50 100 150 200 300"}
CLIENTS_10K=${CLIENTS_10K:-10000}
COMPARE_UP_TO_10K=${COMPARE_UP_TO_10K:-50}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
OUT=${FANOUT_OUT:-target/bench/fanout.jsonl}
OUT_10K=${OUT%.jsonl}-10k.jsonl
OUT_10K_BARE=${OUT%.jsonl}-10k-bare.jsonl
OUT_WIRES=${OUT%.jsonl}-wires.jsonl
WIRE_ROUNDS=${WIRE_ROUNDS:-3}
CONSOLE_CPU_PERCENT=${CONSOLE_CPU_PERCENT:-25}
VERDICT=${OUT%.jsonl}-verdict.json
BIN=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
: > "$OUT_10K"
: > "$OUT_10K_BARE"
: > "$OUT_WIRES"

[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --locked -p vigil-server -p vigil-loadtest \
  -p vigil-benches --bin vigil --bin fanout --bin bare_fanout
mariadb -uroot -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB"

PID=
# The server the fan-out runs measure: Vigil, or bare_fanout for the floor.
TARGET_PORT=$PORT
TARGET_PID=
BARE_PID=
CONSOLE_PID=
CONSOLE_PROFILE=
BURNER_PID=
# The console's browser, and the busy loop standing in for it, run in these cgroups: cpu
# caps them, cpuacct counts what they used (empty when the machine has no writable v1 cgroups).
CONSOLE_CGROUP=
CONSOLE_ACCT=
start_vigil() {
  DATABASE_URL=mysql://root@127.0.0.1:3306/$DB \
  REDIS_URL=redis://127.0.0.1:6379 \
  VIGIL_REDIS_CHANNEL=$PREFIX:events:new VIGIL_REDIS_RECENT_KEY=$PREFIX:events:recent \
  VIGIL_WS_MAX_CLIENTS=20000 VIGIL_WS_MAX_CLIENTS_PER_ADDR=20000 RUST_LOG=warn \
    "$BIN/vigil" --addr 127.0.0.1:$PORT &
  PID=$!
  TARGET_PID=$PID
  wait_healthy "127.0.0.1:$PORT"
}
stop_vigil() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=; fi
}
close_console() {
  if [ -n "$CONSOLE_PID" ]; then
    # The browser and every process it started (its own session).
    kill -- -"$CONSOLE_PID" 2>/dev/null || true
    wait "$CONSOLE_PID" 2>/dev/null || true
    CONSOLE_PID=
  fi
  if [ -n "$CONSOLE_PROFILE" ]; then rm -rf "$CONSOLE_PROFILE" 2>/dev/null || true; CONSOLE_PROFILE=; fi
}
stop_burner() {
  if [ -n "$BURNER_PID" ]; then
    kill -- -"$BURNER_PID" 2>/dev/null || true
    wait "$BURNER_PID" 2>/dev/null || true
    BURNER_PID=
  fi
}
cleanup() {
  close_console
  stop_burner
  [ -z "$CONSOLE_CGROUP" ] || rmdir "$CONSOLE_CGROUP" 2>/dev/null || true
  [ -z "$CONSOLE_ACCT" ] || rmdir "$CONSOLE_ACCT" 2>/dev/null || true
  stop_vigil
  if [ -n "$BARE_PID" ]; then kill "$BARE_PID" 2>/dev/null || true; wait "$BARE_PID" 2>/dev/null || true; fi
  redis-cli -h 127.0.0.1 DEL "$PREFIX:events:recent" "$PREFIX:events:recent:gap" >/dev/null || true
  mariadb -uroot -e "DROP DATABASE IF EXISTS $DB" || true
}
trap cleanup EXIT

fanout() { "$BIN/fanout" --host "http://127.0.0.1:$TARGET_PORT" --server-pid "$TARGET_PID" --json "$@"; }
field() { python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, r))" "$1" "$2"; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(date -u +%FT%TZ)"
start_vigil
# Warm the server, the pools and the page cache.
fanout --clients 100 --rate 500 --duration 2s >/dev/null

echo "== reference: 1,000 clients × 500 events/s × $DURATION"
ref=$(fanout --clients 1000 --rate 500 --duration "$DURATION")
echo "$ref" >> "$OUT"
field "$ref" '"delivered %d/%d, missing %d, duplicates %d, p50 %.1f ms, p99 %.1f ms, p99.9 %.1f ms, max %.1f ms, %d deliveries/s, measurer CPU %.0f%%, server CPU %.1f ms per 1,000 deliveries" % (delivered, expected_deliveries, missing, duplicates, latency_ms["p50"], latency_ms["p99"], latency_ms["p99_9"], latency_ms["max"], deliveries_per_s, cpu_percent, server_cpu_ms_per_1000_deliveries or 0)'

# sweep CLIENTS P99_LIMIT_MS OUT RATES...: runs at rising rates until one misses an event or
# passes the p99 limit; prints `{"highest_passing":R,"first_failing":R}` (null when none).
# With SWEEP_ON_TO=R, the rates up to R are run even after a failure (for comparing two
# servers rate by rate); the verdict still ends at the first failure.
sweep() {
  local clients=$1 limit=$2 out=$3 best=null failing=null rate run ok
  shift 3
  for rate in "$@"; do
    if [ "$failing" != null ] && [ "$rate" -gt "${SWEEP_ON_TO:-0}" ]; then break; fi
    run=$(fanout --clients "$clients" --rate "$rate" --duration "$DURATION")
    echo "$run" >> "$out"
    field "$run" '"%d events/s: missing %d, p99 %.1f ms, %d deliveries/s, server CPU %.1f ms per 1,000 deliveries" % ('"$rate"', missing, latency_ms["p99"], deliveries_per_s, server_cpu_ms_per_1000_deliveries or 0)' >&2
    [ "$failing" = null ] || continue
    ok=$(field "$run" 'clients_connected == '"$clients"' and missing == 0 and duplicates == 0 and latency_ms["p99"] < '"$limit")
    if [ "$ok" != True ]; then failing=$rate; continue; fi
    best=$rate
  done
  echo "{\"highest_passing\":$best,\"first_failing\":$failing}"
}

echo "== highest rate with every event delivered and p99 < 50 ms (1,000 clients)"
# shellcheck disable=SC2086 # the rates are words
verdict_1k=$(sweep 1000 50 "$OUT" $RATES)
echo "$verdict_1k"

echo "== highest rate with every event delivered and p99 < 100 ms ($CLIENTS_10K clients)"
# shellcheck disable=SC2086
verdict_10k=$(SWEEP_ON_TO=$COMPARE_UP_TO_10K sweep "$CLIENTS_10K" 100 "$OUT_10K" $RATES_10K)
echo "$verdict_10k"

echo "== the floor: the same sweep against bare_fanout"
"$BIN/bare_fanout" "127.0.0.1:$((PORT + 1))" 2>>"${OUT%.jsonl}-bare.log" &
BARE_PID=$!
TARGET_PORT=$((PORT + 1)) TARGET_PID=$BARE_PID
wait_healthy "127.0.0.1:$TARGET_PORT"
# shellcheck disable=SC2086
verdict_10k_bare=$(SWEEP_ON_TO=$COMPARE_UP_TO_10K sweep "$CLIENTS_10K" 100 "$OUT_10K_BARE" $RATES_10K)
echo "$verdict_10k_bare"
kill "$BARE_PID" 2>/dev/null || true; wait "$BARE_PID" 2>/dev/null || true; BARE_PID=
TARGET_PORT=$PORT TARGET_PID=$PID
# The verdict, for scripts/bench.sh: the rates (as in RATES and RATES_10K) of the last run
# that passed and of the run that failed (null when none did).
echo "{\"clients_1000\":$verdict_1k,\"clients_10000\":$verdict_10k,\"bare_10000\":$verdict_10k_bare}" > "$VERDICT"

# side_cpu_ns: the CPU time (ns) used so far by whatever runs in the console's cgroups.
side_cpu_ns() { if [ -n "$CONSOLE_ACCT" ]; then cat "$CONSOLE_ACCT/cpuacct.usage"; else echo 0; fi; }

# wire_run LABEL ARGS...: one 1,000-client run at 500 events/s, recorded with its label and
# the share of one core used meanwhile by the console's cgroups (the browser or its stand-in;
# null when they cannot be counted). Sets SIDE_SHARE to that share.
SIDE_SHARE=null
wire_run() {
  local label=$1 run cpu0 wall0 cpu1 wall1
  shift
  cpu0=$(side_cpu_ns) wall0=$(date +%s%N)
  run=$(fanout --clients 1000 --rate 500 --duration "$DURATION" "$@")
  cpu1=$(side_cpu_ns) wall1=$(date +%s%N)
  SIDE_SHARE=null
  [ -z "$CONSOLE_ACCT" ] || SIDE_SHARE=$(python3 -c "print(round(($cpu1 - $cpu0) / ($wall1 - $wall0), 4))")
  echo "{\"label\":\"$label\",\"side_cpu_share\":$SIDE_SHARE,\"run\":$run}" >> "$OUT_WIRES"
  field "$run" '"'"$label"': missing %d, duplicates %d, p50 %.1f ms, p99 %.1f ms, server CPU %.2f ms per 1,000 deliveries" % (missing, duplicates, latency_ms["p50"], latency_ms["p99"], server_cpu_ms_per_1000_deliveries or 0)'" + ', beside it $SIDE_SHARE of a core'"
}

# in_console_cgroups COMMAND...: runs COMMAND in its own session, in the console's cgroups,
# at the lowest priority.
in_console_cgroups() {
  setsid sh -c 'for g in $1 $2; do echo $$ > "$g/cgroup.procs"; done; shift 2; exec nice -n 19 "$@"' \
    side "${CONSOLE_CGROUP:-}" "${CONSOLE_ACCT:-}" "$@" &
}

echo "== wires: 1,000 clients × 500 events/s, WebSocket and SSE alternating ($WIRE_ROUNDS rounds)"
for _ in $(seq 1 "$WIRE_ROUNDS"); do
  wire_run ws --wire ws
  wire_run sse --wire sse
done

echo "== console: 1,000 /ws clients × 500 events/s: no console; the console; its CPU share burnt without it"
if [ -w /sys/fs/cgroup/cpu ] && mkdir -p /sys/fs/cgroup/cpu/vigil-console 2>/dev/null \
  && echo 100000 > /sys/fs/cgroup/cpu/vigil-console/cpu.cfs_period_us \
  && echo $((CONSOLE_CPU_PERCENT * 1000)) > /sys/fs/cgroup/cpu/vigil-console/cpu.cfs_quota_us; then
  CONSOLE_CGROUP=/sys/fs/cgroup/cpu/vigil-console
  echo "the browser gets at most $CONSOLE_CPU_PERCENT % of one core (cgroup $CONSOLE_CGROUP)"
else
  echo "no CPU cgroup to cap the browser with: it runs at nice 19"
fi
if [ -w /sys/fs/cgroup/cpuacct ] && mkdir -p /sys/fs/cgroup/cpuacct/vigil-console 2>/dev/null; then
  CONSOLE_ACCT=/sys/fs/cgroup/cpuacct/vigil-console
else
  echo "no cpuacct cgroup: the browser's CPU cannot be counted, so no equal-load baseline runs"
fi
if command -v chromium >/dev/null 2>&1; then
  for _ in $(seq 1 "$WIRE_ROUNDS"); do
    wire_run no-console
    CONSOLE_PROFILE=$(mktemp -d -t vigil-console.XXXXXX)
    # The browser stands in for one on an operator's own machine, so it must not take the
    # server's cores: in a CPU cgroup capped at CONSOLE_CPU_PERCENT of one core when the
    # machine has one (cgroup v1 cpu controller, as root), else at the lowest priority.
    in_console_cgroups chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
      --no-first-run --user-data-dir="$CONSOLE_PROFILE" "http://127.0.0.1:$PORT/" >/dev/null 2>&1
    CONSOLE_PID=$!
    # The console is live once its /ws client is in the hub.
    for _ in $(seq 1 300); do
      curl -sf "http://127.0.0.1:$PORT/metrics" | grep -q '^vigil_ws_clients 1$' && break
      sleep 0.1
    done
    # Chromium raises some of its threads' priority itself; put every thread of every one of
    # its processes back to 19 (a nice value belongs to a thread).
    for pid in $(pgrep -s "$CONSOLE_PID"); do
      for task in /proc/"$pid"/task/*; do renice -n 19 -p "${task##*/}" >/dev/null 2>&1 || true; done
    done
    # Let its start-up (a fresh profile) finish: the run measures an open console, not a
    # browser starting on the same cores.
    sleep 5
    wire_run console
    close_console
    if [ "$SIDE_SHARE" != null ]; then
      # The same host load without the console: a busy loop that keeps its CPU time at the
      # share of one core the browser just used (spinning in 1 ms slices while behind, else
      # sleeping), in the browser's cgroups and at its priority. What differs from the
      # console run is then only the console being a client of the server.
      in_console_cgroups python3 -c '
import sys, time
share, wall0, cpu0 = float(sys.argv[1]), time.monotonic(), time.process_time()
while True:
    if time.process_time() - cpu0 < share * (time.monotonic() - wall0):
        spin = time.perf_counter()
        while time.perf_counter() - spin < 0.001:
            pass
    else:
        time.sleep(0.001)
' "$SIDE_SHARE"
      BURNER_PID=$!
      sleep 1
      wire_run console-load
      stop_burner
    fi
  done
else
  echo "skipped: no chromium (scripts/test.sh installs Debian's package)"
fi

echo "== idle connections: RSS per connection at $IDLE_CONNECTIONS (fresh server)"
stop_vigil
start_vigil
idle=$(fanout --idle "$IDLE_CONNECTIONS" --settle 3s)
echo "$idle" >> "$OUT"
field "$idle" '"%d connections: RSS %d → %d KiB, %.1f KiB per connection" % (connected, server_rss_kib_before, server_rss_kib_after, kib_per_connection)'
