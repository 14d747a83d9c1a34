#!/usr/bin/env bash
# Vigil's speed on this machine, written to BENCHMARKS.md (the only place figures are kept;
# the docs link it or quote it with its date).
#
# Starts MariaDB and Redis if they are down, builds Vigil and the load tools in release mode,
# and measures, server and load generators sharing the machine:
#   full mode (MariaDB database vigil_bench + Redis under vigil:bench:*), port 3900:
#     1. single-event ingest at saturation: wrk -t2 -c64, one event (~120 bytes) per POST,
#        with the CPU time Vigil, mariadbd and redis-server spent per acknowledged event
#        (from /proc/PID/stat around the run), and its baseline: `bare_hyper`, a hyper server
#        that reads the body and answers the same 201 Vigil answered, doing nothing else;
#     2. bulk ingest: wrk -t1 -c4, 1,000 events per POST, and its baseline: raw multi-row
#        INSERTs of 1,000 rows into the same table from one connection (`raw_insert`), and
#        from two connections committing in any order (the ceiling of several writers);
#        then what each secondary index costs per row (scripts/bench-indexes.sh);
#     3. cached read GET /api/events?page=1&size=20 and filtered read type=GAS&level=WARN
#        (from the database), wrk -t2 -c64;
#     4. latency against offered rate: single-event ingest open loop at 10 %…100 % of the
#        peak from 1 (`fanout --clients 0`: each POST is due at a fixed time and sent from its
#        own task; latency is due time → 201, so waiting for a connection counts), drawn as
#        an SVG by `plot-latency`;
#     5. the goose site mix (`vigil-load`, 32 users), with goose's HTML report;
#   embedded mode (SQLite in a temporary directory, no services), port 3960:
#     6. single-event and bulk ingest, as 1 and 2;
#   WebSocket fan-out (scripts/bench-fanout.sh, its own server on port 3950):
#     7. 1,000 clients × 500 and × 1,000 events/s, then rising rates until a run misses an
#        event or its p99 passes 50 ms; 10,000 clients at rising rates until p99 passes
#        100 ms, and the same against `bare_fanout` (benches/: only writes each event's frame
#        to every client's socket), the floor; server CPU per 1,000 deliveries; RSS per idle
#        connection at 10,000;
#   several instances (scripts/bench-scale.sh, ports 3971… and HAProxy on 3980):
#     1, 2 and 4 full-mode instances behind HAProxy sharing MariaDB and Redis: single-event
#     ingest and fan-out with clients on every instance, CPU and Redis work per event, loss;
#   unit costs: CPU per event of each process (single and bulk), Redis commands and bytes per
#     event (INFO stats), CPU per 1,000 deliveries, memory per idle client, as a table with
#     keys that scripts/capacity.sh reads;
#   failover (scripts/bench-failover.sh, the high-availability tests on private servers):
#     8. a mariadbd, a Galera node behind HAProxy, an instance's own Galera node and a Redis
#        Sentinel primary killed under load: time to the first 201 again, slowest answer.
#
# Settings (environment), defaults are the reference run's:
#   DURATION (15s)          each wrk and goose run
#   STEP_DURATION (10s)     each open-loop rate step
#   STEPS ("10 20 30 40 50 60 70 80 90 100")   rate steps, % of the measured peak
#   FANOUT_DURATION (10s)   each fan-out run
#   FANOUT_RATES ("1000 1250 1500 2000")   rising fan-out rates, until one fails
#   FANOUT_RATES_10K ("1 10 50 100 150 200 300")  the same with 10,000 clients
#   IDLE_CONNECTIONS (10000)
#   INDEX_ROUNDS (3), INDEX_SECONDS (8)   rounds and seconds per table of the index costs
#   BENCH_OUT (BENCHMARKS.md), BENCH_DIR (target/bench: raw outputs, goose reports)
#   SKIP_BUILD=1            use the release binaries already in $CARGO_TARGET_DIR/release
#   SKIP_FAILOVER=1         leave out 8 (it builds and runs the test binary, ~3 minutes)
# Needs wrk and haproxy (installed with apt if missing). Takes about 30 minutes with the defaults, plus
# the build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

DURATION=${DURATION:-15s}
STEP_DURATION=${STEP_DURATION:-10s}
STEPS=${STEPS:-"10 20 30 40 50 60 70 80 90 100"}
FANOUT_DURATION=${FANOUT_DURATION:-10s}
FANOUT_RATES=${FANOUT_RATES:-"1000 1250 1500 2000"}
FANOUT_RATES_10K=${FANOUT_RATES_10K:-"1 10 50 100 150 200 300"}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
OUT=${BENCH_OUT:-BENCHMARKS.md}
WORK=${BENCH_DIR:-target/bench}
SVG=docs/bench/latency-vs-rate.svg
BIN=${CARGO_TARGET_DIR:-target}/release
DB=vigil_bench
URL="mysql://root@127.0.0.1:3306/$DB"
FULL=127.0.0.1:3900
BARE=127.0.0.1:3901
EMBEDDED=127.0.0.1:3960
mkdir -p "$WORK" "$(dirname "$SVG")"

log "services and build"
ensure_mariadb
ensure_redis
command -v wrk >/dev/null 2>&1 || apt_install wrk
command -v haproxy >/dev/null 2>&1 || apt_install haproxy
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --locked -p vigil-server -p vigil-loadtest -p vigil-benches \
  --bin vigil --bin fanout --bin vigil-load --bin plot-latency --bin sample_bulk --bin raw_insert \
  --bin bare_hyper --bin bare_fanout

PID=
DATA_DIR=
start() { # ADDR, then env assignments for the server
  local addr=$1
  shift
  env "$@" VIGIL_ADDR="$addr" RUST_LOG=warn "$BIN/vigil" 2>>"$WORK/vigil.log" &
  PID=$!
  wait_healthy "$addr"
}
stop() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=; fi
}
cleanup() {
  stop
  [ -z "$DATA_DIR" ] || rm -rf "$DATA_DIR"
  redis-cli -h 127.0.0.1 DEL vigil:bench:recent vigil:bench:recent:gap >/dev/null 2>&1 || true
  mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $DB" 2>/dev/null || true
}
trap cleanup EXIT

# wrk with --latency → "req/s p50_ms p99_ms non2xx" (wrk prints latencies in us, ms or s).
wrk_run() { # NAME, then wrk arguments
  local name=$1
  shift
  wrk --latency "$@" > "$WORK/$name.txt"
  python3 - "$WORK/$name.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(value):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
failed = (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0)
print(f"{rps:.0f} {p50:.2f} {p99:.2f} {failed}")
PY
}
# Acknowledged requests of a wrk run: its requests less the non-2xx answers.
wrk_acked() { # NAME
  python3 - "$WORK/$1.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
print(int(re.search(r"(\d+) requests in", text).group(1)) - (int(bad.group(1)) if bad else 0))
PY
}

# CPU time from /proc, in clock ticks: a process's (cpu_ticks, scripts/services.sh), and the
# machine's idle, stolen (taken by the hypervisor for other guests) and total time from
# /proc/stat.
machine_ticks() { awk '/^cpu / {total = 0; for (i = 2; i <= 9; i++) total += $i; print $5 + $6, $9, total; exit}' /proc/stat; }
# cpu_snapshot PID... → "ticks_of_each_pid idle_ticks steal_ticks total_ticks"
cpu_snapshot() { local pid; for pid in "$@"; do printf '%s ' "$(cpu_ticks "$pid")"; done; machine_ticks; }
# cpu_per_event "BEFORE" "AFTER" EVENTS → microseconds per event for each pid, then the
# machine's idle and stolen shares in % over the interval.
cpu_per_event() {
  python3 - "$1" "$2" "$3" "$(getconf CLK_TCK)" <<'PY'
import sys
before, after = (list(map(int, text.split())) for text in sys.argv[1:3])
events, hz = int(sys.argv[3]), int(sys.argv[4])
deltas = [b - a for a, b in zip(before, after)]
per_event = [delta / hz * 1e6 / max(events, 1) for delta in deltas[:-3]]
idle, steal, total = deltas[-3:]
print(" ".join(f"{value:.1f}" for value in per_event),
      f"{100 * idle / max(total, 1):.0f}", f"{100 * steal / max(total, 1):.0f}")
PY
}

# Waits (up to a minute) until the machine is at least 90 % idle over two seconds: what ran
# before (the build, the previous step) must not be measured with what follows.
settle() {
  local before after
  for _ in $(seq 1 30); do
    before=$(machine_ticks)
    sleep 2
    after=$(machine_ticks)
    python3 -c "import sys; b, a = (list(map(int, t.split())) for t in sys.argv[1:]); sys.exit(0 if (a[0] - b[0]) >= 0.9 * (a[2] - b[2]) else 1)" "$before" "$after" && return
  done
  echo "the machine did not settle to 90 % idle within a minute; measuring anyway"
}

# verdict EXPRESSION [SHORTFALL] → "yes", or "**no**" followed by how far the run fell short
# (a Python expression over numbers, and one giving the shortfall's text).
verdict() {
  python3 -c "import sys; ok, gap = eval(sys.argv[1]), sys.argv[2]; print('yes' if ok else '**no**' + (', ' + eval(gap) if gap else ''))" "$1" "${2:-}"
}
json() { python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, r))" "$1" "$2"; }

"$BIN/sample_bulk" 1000 > "$WORK/bulk-1000.json"
export BULK_FILE=$WORK/bulk-1000.json

log "full mode: MariaDB + Redis"
mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB"
redis-cli -h 127.0.0.1 DEL vigil:bench:recent vigil:bench:recent:gap >/dev/null
start "$FULL" DATABASE_URL="$URL" REDIS_URL=redis://127.0.0.1:6379 \
  VIGIL_REDIS_RECENT_KEY=vigil:bench:recent VIGIL_REDIS_CHANNEL=vigil:bench:new
# 10,000 events first, so that reads have pages to read.
for _ in $(seq 1 10); do
  curl -sf -o /dev/null -H 'content-type: application/json' --data-binary @"$BULK_FILE" "http://$FULL/api/events"
done
# Write back what the build and the setup left dirty in the page cache first: the kernel
# flushing it during the first run slows every fsync the database commits with, and the
# first figure would measure the build. Then a short unrecorded run warms the connection
# pools and the database's buffers.
sync
settle
wrk -t2 -c64 -d3s -s scripts/wrk/post_event.lua "http://$FULL" > /dev/null

MARIADB_PID=$(cat "$(mariadb -uroot -h127.0.0.1 -N -e 'SELECT @@pid_file')" 2>/dev/null || pgrep -o -x mariadbd)
REDIS_PID=$(redis-cli -h 127.0.0.1 INFO server | tr -d '\r' | awk -F: '/^process_id/ {print $2}')
CPU_BEFORE=$(cpu_snapshot "$PID" "$MARIADB_PID" "$REDIS_PID")
REDIS_BEFORE=$(redis_counters)
read -r SINGLE_RPS SINGLE_P50 SINGLE_P99 SINGLE_ERR < <(wrk_run single -t2 -c64 -d"$DURATION" -s scripts/wrk/post_event.lua "http://$FULL")
CPU_AFTER=$(cpu_snapshot "$PID" "$MARIADB_PID" "$REDIS_PID")
REDIS_AFTER=$(redis_counters)
read -r CPU_VIGIL CPU_MARIADB CPU_REDIS SINGLE_IDLE SINGLE_STEAL < <(cpu_per_event "$CPU_BEFORE" "$CPU_AFTER" "$(wrk_acked single)")
CPU_SERVER=$(python3 -c "print(f'{$CPU_VIGIL + $CPU_MARIADB + $CPU_REDIS:.1f}')")
echo "single-event ingest: $SINGLE_RPS req/s, p50 $SINGLE_P50 ms, p99 $SINGLE_P99 ms, $SINGLE_ERR errors"
echo "  CPU per acknowledged event: Vigil $CPU_VIGIL µs, MariaDB $CPU_MARIADB µs, Redis $CPU_REDIS µs = $CPU_SERVER µs; machine idle $SINGLE_IDLE %, stolen by the hypervisor $SINGLE_STEAL %"
# Redis's work per acknowledged event: commands, bytes in and bytes out (out includes the
# events:new message to this instance's own subscriber).
read -r REDIS_COMMANDS REDIS_IN REDIS_OUT < <(python3 -c "
import sys
b, a, n = list(map(int, '$REDIS_BEFORE'.split())), list(map(int, '$REDIS_AFTER'.split())), max($(wrk_acked single), 1)
print(*(f'{(y - x) / n:.{p}f}' for x, y, p in zip(b, a, (2, 0, 0))))")
echo "  Redis per acknowledged event: $REDIS_COMMANDS commands, $REDIS_IN bytes in, $REDIS_OUT bytes out"

# The HTTP ceiling: the same load against a server that only reads the body and answers the
# 201 Vigil answers (its headers but date and length, and its body).
curl -sf -D "$WORK/ack-headers.txt" -o "$WORK/ack-body.json" -H 'content-type: application/json' \
  --data-binary '{"source":"site-3/gateway-1/sensor-1","type":"GAS","level":"WARN","payload":{"ppm":101,"battery":0.2}}' \
  "http://$FULL/api/events"
mapfile -t ACK_HEADERS < <(tr -d '\r' < "$WORK/ack-headers.txt" | grep -Eiv '^(HTTP/|date:|content-length:|connection:|transfer-encoding:|$)')
"$BIN/bare_hyper" "$BARE" "$WORK/ack-body.json" "${ACK_HEADERS[@]}" 2>>"$WORK/bare_hyper.log" &
BARE_PID=$!
for _ in $(seq 1 50); do curl -s -o /dev/null "http://$BARE/" && break; sleep 0.1; done
BARE_BEFORE=$(cpu_snapshot "$BARE_PID")
read -r BARE_RPS BARE_P50 BARE_P99 BARE_ERR < <(wrk_run bare -t2 -c64 -d"$DURATION" -s scripts/wrk/post_event.lua "http://$BARE")
BARE_AFTER=$(cpu_snapshot "$BARE_PID")
read -r CPU_BARE BARE_IDLE BARE_STEAL < <(cpu_per_event "$BARE_BEFORE" "$BARE_AFTER" "$(wrk_acked bare)")
kill "$BARE_PID"; wait "$BARE_PID" 2>/dev/null || true
SINGLE_SHARE=$(python3 -c "print(round(100 * $SINGLE_RPS / max($BARE_RPS, 1)))")
echo "baseline, bare hyper answering the same 201: $BARE_RPS req/s, p99 $BARE_P99 ms, $CPU_BARE µs CPU per request ($BARE_ERR errors, machine idle $BARE_IDLE %, stolen $BARE_STEAL %); Vigil reaches $SINGLE_SHARE %"
read -r KEYED_RPS KEYED_P50 KEYED_P99 KEYED_ERR < <(VIGIL_WRK_IDEMPOTENCY=1 wrk_run keyed -t2 -c64 -d"$DURATION" -s scripts/wrk/post_event.lua "http://$FULL")
echo "single-event ingest with an Idempotency-Key each: $KEYED_RPS req/s, p50 $KEYED_P50 ms, p99 $KEYED_P99 ms, $KEYED_ERR errors"
BULK_BEFORE=$(cpu_snapshot "$PID" "$MARIADB_PID" "$REDIS_PID")
read -r BULK_RPS BULK_P50 BULK_P99 BULK_ERR < <(wrk_run bulk -t1 -c4 -d"$DURATION" -s scripts/wrk/post_bulk.lua "http://$FULL")
BULK_AFTER=$(cpu_snapshot "$PID" "$MARIADB_PID" "$REDIS_PID")
read -r BULK_CPU_VIGIL BULK_CPU_MARIADB BULK_CPU_REDIS _ _ < <(cpu_per_event "$BULK_BEFORE" "$BULK_AFTER" "$(( $(wrk_acked bulk) * 1000 ))")
BULK_EPS=$(python3 -c "print(round($BULK_RPS * 1000))")
echo "  bulk CPU per acknowledged event: Vigil $BULK_CPU_VIGIL µs, MariaDB $BULK_CPU_MARIADB µs, Redis $BULK_CPU_REDIS µs"
echo "bulk ingest: $BULK_EPS events/s ($BULK_RPS req/s of 1,000), p99 $BULK_P99 ms, $BULK_ERR errors"
RAW=$("$BIN/raw_insert" "$URL" 1000 "${DURATION%s}" | tee "$WORK/raw-insert.txt" | grep -o '[0-9]* rows/s$' | cut -d' ' -f1)
BULK_SHARE=$(python3 -c "print(round(100 * $BULK_EPS / max($RAW, 1)))")
echo "baseline, raw multi-row INSERTs of 1,000 rows from one connection: $RAW rows/s; bulk ingest reaches $BULK_SHARE %"
RAW2=$("$BIN/raw_insert" "$URL" 1000 "${DURATION%s}" 2 | tee "$WORK/raw-insert-2.txt" | grep -o '[0-9]* rows/s$' | cut -d' ' -f1)
echo "raw multi-row INSERTs of 1,000 rows from two connections, commits in any order: $RAW2 rows/s"
CACHE=$(curl -sI "http://$FULL/api/events?page=1&size=20" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache" {print $2}')
read -r CACHED_RPS CACHED_P50 CACHED_P99 CACHED_ERR < <(wrk_run cached -t2 -c64 -d"$DURATION" "http://$FULL/api/events?page=1&size=20")
echo "cached read (X-Cache: $CACHE): $CACHED_RPS req/s, p99 $CACHED_P99 ms"
ROWS=$(mariadb -uroot -h127.0.0.1 -N -e "SELECT COUNT(*) FROM $DB.events")
read -r FILTER_RPS FILTER_P50 FILTER_P99 FILTER_ERR < <(wrk_run filtered -t2 -c64 -d"$DURATION" "http://$FULL/api/events?type=GAS&level=WARN&size=20")
echo "filtered read at $ROWS events: $FILTER_RPS req/s, p99 $FILTER_P99 ms"

log "latency against offered rate (open loop, peak $SINGLE_RPS req/s)"
CSV=$WORK/latency-vs-rate.csv
echo "offered_rps,achieved_rps,p50_ms,p99_ms,errors,late_sends,max_lateness_ms" > "$CSV"
: > "$WORK/latency-vs-rate.jsonl"
for step in $STEPS; do
  rate=$(( SINGLE_RPS * step / 100 ))
  [ "$rate" -ge 1 ] || continue
  run=$("$BIN/fanout" --host "http://$FULL" --clients 0 --rate "$rate" --duration "$STEP_DURATION" --drain 2s --json)
  echo "$run" >> "$WORK/latency-vs-rate.jsonl"
  # achieved: acknowledged over the scheduled time; late sends say how far the generator, on
  # the server's own cores, fell behind its schedule (then the offered rate was not offered).
  line=$(json "$run" '"%d,%.1f,%.3f,%.3f,%d,%d,%.1f" % (rate, events_acked / duration_s, ack_latency_ms["p50"], ack_latency_ms["p99"], events_failed, late_sends, max_send_lateness_ms)')
  echo "$line" >> "$CSV"
  echo "$step % = $line"
done
"$BIN/plot-latency" "$CSV" "$SVG" "single-event ingest, full mode: latency vs offered rate"

log "goose site mix"
"$BIN/vigil-load" --host "http://$FULL" --users 32 --increase-time 2s --run-time "$DURATION" -q \
  --report-file "$WORK/goose-site.html" --report-file "$WORK/goose-site.json" > "$WORK/goose-site.txt"
read -r SITE_RPS SITE_FAIL SITE_REQS < <(python3 -c "
import json
r = json.load(open('$WORK/goose-site.json'))
agg = [m for m in r['raw_request_metrics'] if m['name'] == 'Aggregated'][0]
print(round(agg['requests_per_second']), agg['number_of_failures'], agg['number_of_requests'])")
echo "goose site mix: $SITE_RPS req/s, $SITE_FAIL failures of $SITE_REQS"
stop

log "embedded mode: SQLite, no services"
DATA_DIR=$(mktemp -d)
start "$EMBEDDED" VIGIL_DATA_DIR="$DATA_DIR"
read -r EMB_RPS EMB_P50 EMB_P99 EMB_ERR < <(wrk_run embedded-single -t2 -c64 -d"$DURATION" -s scripts/wrk/post_event.lua "http://$EMBEDDED")
echo "embedded single-event ingest: $EMB_RPS req/s, p50 $EMB_P50 ms, p99 $EMB_P99 ms"
read -r EMB_BULK_RPS EMB_BULK_P50 EMB_BULK_P99 EMB_BULK_ERR < <(wrk_run embedded-bulk -t1 -c4 -d"$DURATION" -s scripts/wrk/post_bulk.lua "http://$EMBEDDED")
EMB_BULK_EPS=$(python3 -c "print(round($EMB_BULK_RPS * 1000))")
echo "embedded bulk ingest: $EMB_BULK_EPS events/s"
stop

log "WebSocket fan-out (scripts/bench-fanout.sh)"
SKIP_BUILD=1 RATES="$FANOUT_RATES" RATES_10K="$FANOUT_RATES_10K" DURATION="$FANOUT_DURATION" \
  IDLE_CONNECTIONS="$IDLE_CONNECTIONS" FANOUT_OUT="$WORK/fanout.jsonl" bash scripts/bench-fanout.sh
mapfile -t FANOUT < "$WORK/fanout.jsonl"
fan() { json "${FANOUT[$1]}" '"%d of %d delivered, %d duplicates; p50 %.1f ms, p99 %.1f ms, p99.9 %.1f ms; %d deliveries/s" % (delivered, expected_deliveries, duplicates, latency_ms["p50"], latency_ms["p99"], latency_ms["p99_9"], deliveries_per_s)'; }
FAN_500=$(fan 0)
FAN_1000=$(fan 1)
# The last line is the idle run; before it, the runs at rising rates. bench-fanout.sh decides
# which passed (its verdict file); this only words it.
FAN_LAST=$(( ${#FANOUT[@]} - 1 ))
FAN_CPU=$(json "${FANOUT[1]}" '"%.2f" % server_cpu_ms_per_1000_deliveries')
# fan_best SWEEP: the verdict of a sweep (clients_1000, clients_10000, or bare_10000 for the
# floor; bench-fanout.sh decides which runs passed) in words; the sweep's runs on standard input.
fan_best() {
  python3 -c "
import json, sys
verdict = json.load(open('$WORK/fanout-verdict.json'))['$1']
runs = {round(r['rate']): r for r in map(json.loads, sys.stdin)}
best, failing = verdict['highest_passing'], verdict['first_failing']
text = ('none of the rates tried' if best is None else
        '**%d events/s** (%d deliveries/s, p99 %.1f ms, server CPU %.1f ms per 1,000 deliveries)' % (best, runs[best]['deliveries_per_s'], runs[best]['latency_ms']['p99'], runs[best]['server_cpu_ms_per_1000_deliveries']))
if failing is None:
    text += ' (the highest rate tried)'
else:
    run = runs[failing]
    # What one event's fan-out to every client costs, server and measurer: on shared cores the
    # last deliveries of an event come about that long after the first, at any rate.
    events = run['rate'] * run['duration_s']
    text += ('; %d event%s/s: p99 %.1f ms, %d missing; one event to all %s clients took %.1f ms of server CPU and %.1f ms of the measurer\'s' %
             (failing, '' if failing == 1 else 's', run['latency_ms']['p99'], run['missing'], '{:,}'.format(run['clients_connected']),
              (run['server_cpu_ms_per_1000_deliveries'] or 0) * run['clients_connected'] / 1000,
              run['cpu_s'] * 1000 / events))
    if run['clients_connected'] < run['clients']:
        text += ' (only %d of %d clients connected)' % (run['clients_connected'], run['clients'])
print(text)"
}
FAN_BEST=$(printf '%s\n' "${FANOUT[@]:1:FAN_LAST-1}" | fan_best clients_1000)
FAN_BEST_10K=$(fan_best clients_10000 < "$WORK/fanout-10k.jsonl")
FAN_BEST_10K_BARE=$(fan_best bare_10000 < "$WORK/fanout-10k-bare.jsonl")
# Each rate of the 10,000-client sweeps, the two servers side by side.
FLOOR_TABLE=$(python3 - "$WORK/fanout-10k.jsonl" "$WORK/fanout-10k-bare.jsonl" <<'PY'
import json, sys
def runs(path):
    return {round(r['rate']): r for r in map(json.loads, open(path))}
vigil, bare = runs(sys.argv[1]), runs(sys.argv[2])
def cell(r):
    if r is None:
        return '—'
    return 'p50 %.1f, p99 %.1f; %.1f; %d of %d' % (
        r['latency_ms']['p50'], r['latency_ms']['p99'],
        r['server_cpu_ms_per_1000_deliveries'] or 0, r['missing'], r['expected_deliveries'])
print('| events/s | Vigil: latency ms; server CPU ms per 1,000 deliveries; missing | `bare_fanout`: the same |')
print('| --- | --- | --- |')
# Every rate either ran: a server whose sweep ended earlier gets a dash there.
for rate in sorted(set(vigil) | set(bare)):
    print('| %d | %s | %s |' % (rate, cell(vigil.get(rate)), cell(bare.get(rate))))
PY
)
FAN_10K_RATE=$(python3 -c "import json; print(json.load(open('$WORK/fanout-verdict.json'))['clients_10000']['highest_passing'] or 0)")
FAN_1000_P99=$(json "${FANOUT[1]}" '"%.1f" % latency_ms["p99"]')
IDLE_KIB=$(json "${FANOUT[FAN_LAST]}" '"%.1f" % kib_per_connection')
IDLE=$(json "${FANOUT[FAN_LAST]}" '"%.1f KiB per connection (%d connections, RSS %.0f → %.0f MiB)" % (kib_per_connection, connected, server_rss_kib_before / 1024, server_rss_kib_after / 1024)')

# The wires and the console (bench-fanout.sh, alternating runs): medians per label.
WIRES=$(python3 - "$WORK/fanout-wires.jsonl" <<'PY'
import json, statistics, sys
labels = {
    "ws": "1,000 WebSocket clients (`/ws`)",
    "sse": "1,000 Server-Sent Events clients (`/api/events/stream`)",
    "no-console": "1,000 `/ws` clients, no console open",
    "console": "1,000 `/ws` clients and the console open in headless Chromium",
    "console-load": "1,000 `/ws` clients, no console; a busy loop uses the browser's CPU share in its place",
}
runs, side = {}, {}
for line in open(sys.argv[1]):
    row = json.loads(line)
    runs.setdefault(row["label"], []).append(row["run"])
    if row.get("side_cpu_share") is not None:
        side.setdefault(row["label"], []).append(row["side_cpu_share"])
def median(label, get):
    return statistics.median(get(run) for run in runs[label])
def spread(label, get):
    values = sorted(get(run) for run in runs[label])
    return f"{statistics.median(values):.1f} ({values[0]:.1f}–{values[-1]:.1f})"
print("| clients | rounds | server CPU ms per 1,000 deliveries | server CPU s per run | p50 ms | p99 ms (lowest–highest) | POST p99 ms | measurer CPU | beside them (share of one core) | missing, duplicates |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for label, words in labels.items():
    if label not in runs:
        print(f"| {words} | 0 | not run (no chromium or no cgroup) | | | | | | | |")
        continue
    cpu = median(label, lambda r: r["server_cpu_ms_per_1000_deliveries"] or 0)
    p50 = median(label, lambda r: r["latency_ms"]["p50"])
    p99 = spread(label, lambda r: r["latency_ms"]["p99"])
    measurer = median(label, lambda r: r["cpu_percent"])
    server_s = median(label, lambda r: r["server_cpu_s"] or 0)
    acks = median(label, lambda r: r["ack_latency_ms"]["p99"])
    beside = f"{statistics.median(side[label]):.2f}" if label in side else "—"
    lost = sum(r["missing"] for r in runs[label])
    doubled = sum(r["duplicates"] for r in runs[label])
    print(f"| {words} | {len(runs[label])} | {cpu:.2f} | {server_s:.1f} | {p50:.1f} | {p99} | {acks:.1f} | {measurer:.0f} % | {beside} | {lost}, {doubled} |")
def ratio(a, b):
    if a not in runs or b not in runs:
        return None
    get = lambda r: r["server_cpu_ms_per_1000_deliveries"] or 0
    return 100 * median(a, get) / median(b, get)
def p99(label):
    return median(label, lambda r: r["latency_ms"]["p99"])
print()
sse = ratio("sse", "ws")
if sse is not None:
    print(f"Server CPU per delivery, SSE against WebSocket: **{sse:.0f} %**.", end=" ")
console = ratio("console", "no-console")
if console is not None:
    print(f"With the console open against a quiet machine without it: **{console:.0f} %**, p99 {p99('console'):.1f} against {p99('no-console'):.1f} ms.", end=" ")
loaded = ratio("console", "console-load")
if loaded is not None:
    print(f"With the console open against the same CPU load without it (what the console itself costs the server): **{loaded:.0f} %**, p99 {p99('console'):.1f} against {p99('console-load'):.1f} ms.", end="")
print()
PY
)
log "several instances behind HAProxy (scripts/bench-scale.sh)"
# A failure here (a port taken, HAProxy missing) must not cost the page the rest of the run.
if ! SKIP_BUILD=1 DURATION="$DURATION" SCALE_OUT="$WORK/scale.jsonl" bash scripts/bench-scale.sh; then
  echo "scripts/bench-scale.sh failed; the page says so" >&2
  : > "$WORK/scale.jsonl"
  echo '{"failed": true}' > "$WORK/scale-listener.json"
fi
SCALE=$(python3 - "$WORK/scale.jsonl" "$WORK/scale-listener.json" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
listener = json.load(open(sys.argv[2]))
if not rows:
    print("Not measured in this run: `scripts/bench-scale.sh` failed (its output is in the run's log).")
    sys.exit(0)
print("| instances (worker threads each) | ingest req/s (p99 ms) | stored, acknowledged | mean batch rows | CPU µs per event: instances, MariaDB, Redis, HAProxy (sum) | Redis per event: commands, bytes in, bytes out | fan-out: delivered of expected, missing, duplicates | fan-out p99 ms | instances' CPU ms per 1,000 deliveries | Redis bytes out per fan-out event |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for row in rows:
    i, f = row["ingest"], row["fanout"]
    c, r, run = i["cpu_us_per_event"], i["redis_per_event"], f["run"]
    total = sum(c.values())
    print(f"| {row['instances']} ({row['worker_threads']}) | {i['req_per_s']:.0f} ({i['p99_ms']:.2f}) | {i['stored']}, {i['acked']} | {i['mean_batch_rows']:.1f} | {c['vigil']:.1f}, {c['mariadb']:.1f}, {c['redis']:.1f}, {c['haproxy']:.1f} ({total:.1f}) | {r['commands']:.2f}, {r['bytes_in']:.0f}, {r['bytes_out']:.0f} | {run['delivered']} of {run['expected_deliveries']}, {run['missing']}, {run['duplicates']} (stored {f['stored']} of {run['events_acked']} acknowledged) | {run['latency_ms']['p99']:.1f} | {run['server_cpu_ms_per_1000_deliveries'] or 0:.2f} | {f['redis_per_event']['bytes_out']:.0f} |")
controls = [row for row in rows if row.get("control")]
if controls:
    pairs = {pair["connections"]: pair for pair in listener.get("runs", [])}
    print()
    print("Each count against one instance at about the same batch size (64/N connections through HAProxy), CPU µs per event, and in brackets what the model expects beyond it: N − 1 further instances reading every event, and Redis sending it to them, as the listener runs below measured them at the same connections:")
    print()
    print("| instances | their mean batch rows | their CPU: instances, MariaDB, Redis | one instance, connections | its mean batch rows | its CPU: instance, MariaDB, Redis | the instances' CPU beyond it (model) | Redis's CPU beyond it (model) | Redis socket writes per event: theirs, its (the listener run's) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in controls:
        n, i, k = row["instances"], row["ingest"], row["control"]
        c, kc = i["cpu_us_per_event"], k["cpu_us_per_event"]
        pair = pairs.get(k["connections"])
        if pair and pair["listeners"] == n - 1:
            added = pair["added_per_event"]
            model = f"({added['listeners_us']:+.1f})", f"({added['redis_us']:+.1f})", f"({pair['with_listeners']['redis_per_event']['writes']:.2f})"
        else:
            model = "(n/a)", "(n/a)", "(n/a)"
        print(f"| {n} | {i['mean_batch_rows']:.1f} | {c['vigil']:.1f}, {c['mariadb']:.1f}, {c['redis']:.1f} | 1, {k['connections']} | {k['mean_batch_rows']:.1f} | {kc['vigil']:.1f}, {kc['mariadb']:.1f}, {kc['redis']:.1f} | {c['vigil'] - kc['vigil']:+.1f} {model[0]} | {c['redis'] - kc['redis']:+.1f} {model[1]} | {i['redis_per_event']['writes']:.2f}, {k['redis_per_event']['writes']:.2f} {model[2]} |")
PY
)
# The listener runs: what each further instance costs per event. The unit costs take the pair
# at 64 connections, whose batches are one instance's under the full load.
read -r LISTENER_US REDIS_SUB_US REDIS_SUB_BYTES < <(python3 - "$WORK/scale-listener.json" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))
pair = next((pair for pair in runs.get("runs", []) if pair["connections"] == 64), None)
if pair is None:
    print("n/a n/a n/a")
    sys.exit(0)
added, n = pair["added_per_event"], pair["listeners"]
print(f"{added['listeners_us'] / n:.2f}", f"{added['redis_us'] / n:.2f}", f"{added['redis_bytes_out'] / n:.0f}")
PY
)
# Redis's CPU per event for each further instance that also posts, from the largest count
# against its control: the instances stacked on these CPUs, each publishing its own batches.
read -r REDIS_STACKED_COUNT REDIS_STACKED_US < <(python3 - "$WORK/scale.jsonl" <<'PY'
import json, sys
rows = [row for row in map(json.loads, open(sys.argv[1])) if row.get("control")]
if not rows:
    print("0 n/a")
    sys.exit(0)
row = max(rows, key=lambda row: row["instances"])
extra = row["ingest"]["cpu_us_per_event"]["redis"] - row["control"]["cpu_us_per_event"]["redis"]
print(row["instances"], f"{extra / (row['instances'] - 1):.2f}")
PY
)
LISTENER_TEXT=$(python3 - "$WORK/scale-listener.json" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))
if not runs.get("runs"):
    print("The listener runs were not measured (scripts/bench-scale.sh failed).")
    sys.exit(0)
print("The listener runs: one instance taking every post straight (no HAProxy) with N − 1 more instances that take none (one for N = 1), then without them, at each count's share of the 64 connections. The listeners' CPU per event is what the further instances cost for reading every event; Redis's CPU per event with them against without is what the further subscribers cost it. The 64-connection run gives the unit costs above.")
print()
print("| connections | listeners | mean batch rows | events (with, without) | listeners' CPU µs per event | per listener | Redis CPU µs per event (with, without) | Redis bytes out per event (with, without) | posting instance CPU µs per event (with, without) | MariaDB (with, without) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for pair in runs["runs"]:
    w, a, n = pair["with_listeners"], pair["alone"], pair["listeners"]
    wc, ac = w["cpu_us_per_event"], a["cpu_us_per_event"]
    print(f"| {pair['connections']} | {n} | {w['mean_batch_rows']:.1f} | {w['acked']}, {a['acked']} | {wc['listeners']:.2f} | **{wc['listeners'] / n:.2f}** | {wc['redis']:.2f}, {ac['redis']:.2f} | {w['redis_per_event']['bytes_out']:.0f}, {a['redis_per_event']['bytes_out']:.0f} | {wc['posting_instance']:.1f}, {ac['posting_instance']:.1f} | {wc['mariadb']:.1f}, {ac['mariadb']:.1f} |")
PY
)
log "index costs (scripts/bench-indexes.sh)"
INDEX_ROUNDS=${INDEX_ROUNDS:-3}
INDEX_SECONDS=${INDEX_SECONDS:-8}
INDEXES=$(ROUNDS=$INDEX_ROUNDS SECONDS_EACH=$INDEX_SECONDS bash scripts/bench-indexes.sh "$BIN/raw_insert" | tee "$WORK/indexes.md")

if [ "${SKIP_FAILOVER:-0}" != 1 ]; then
  log "failover (scripts/bench-failover.sh)"
  FAILOVER_OUT="$WORK/failover.jsonl" bash scripts/bench-failover.sh > "$WORK/failover.md"
  FAILOVER=$(cat "$WORK/failover.md")
else
  FAILOVER="Not measured in this run (SKIP_FAILOVER=1)."
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

log "writing $OUT"
CPU=$(lscpu | awk -F': +' '/^Model name/ {print $2; exit}')
MEM=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
DISK=$(df -h --output=source,fstype . | tail -1 | awk '{print $2}')
cat > "$OUT" <<EOF
# Vigil benchmarks

Written by \`bash scripts/bench.sh\` on $(date -u +%Y-%m-%d) at $(date -u +%H:%M) UTC from commit
\`$(git rev-parse --short HEAD)$(git diff --quiet -- . ':!BENCHMARKS.md' ':!docs/bench' || echo ' + local changes')\`. Rerun it to get your own machine's figures.

**Machine:** $(nproc) CPUs ($CPU), $MEM RAM, $(uname -sr), working directory on $DISK.
Server, MariaDB $(mariadb -uroot -h127.0.0.1 -N -e 'SELECT VERSION()' | cut -d- -f1), Redis $(redis-cli -h 127.0.0.1 INFO server | tr -d '\r' | awk -F: '/^redis_version/ {print $2}') and the load generators share these CPUs.
Load average (1, 5, 15 min) before: $LOAD_BEFORE; after: $LOAD_AFTER.

**Settings of this run:** DURATION=$DURATION per wrk/goose run, STEP_DURATION=$STEP_DURATION per
open-loop step (steps: $STEPS % of the peak), FANOUT_DURATION=$FANOUT_DURATION,
IDLE_CONNECTIONS=$IDLE_CONNECTIONS. The reference settings are the defaults (15s, 10s, 10…100, 10s, 10000).

## Headlines

| what | result | command (inside \`scripts/bench.sh\`) |
| --- | --- | --- |
| single-event ingest, durable ack, full mode | **$SINGLE_RPS req/s**, p50 $SINGLE_P50 ms, p99 $SINGLE_P99 ms ($SINGLE_ERR errors) | \`wrk -t2 -c64 -d$DURATION --latency -s scripts/wrk/post_event.lua\` |
| baseline: bare hyper reading the body and answering the same 201 | $BARE_RPS req/s, p50 $BARE_P50 ms, p99 $BARE_P99 ms | \`bare_hyper $BARE ack-body.json HEADERS…\`, the same wrk |
| single-event ingest with a fresh \`Idempotency-Key\` per request, full mode | **$KEYED_RPS req/s**, p50 $KEYED_P50 ms, p99 $KEYED_P99 ms ($KEYED_ERR errors) | \`VIGIL_WRK_IDEMPOTENCY=1 wrk -t2 -c64 -d$DURATION --latency -s scripts/wrk/post_event.lua\` |
| bulk ingest, 1,000 events per POST, full mode | **$BULK_EPS events/s** ($BULK_RPS req/s, p99 $BULK_P99 ms, $BULK_ERR errors) | \`wrk -t1 -c4 -d$DURATION --latency -s scripts/wrk/post_bulk.lua\` |
| baseline: raw multi-row INSERTs of 1,000 rows, one connection, same table | $RAW rows/s | \`raw_insert $URL 1000 ${DURATION%s}\` |
| the same from two connections, commits in any order (Vigil keeps them in id order) | $RAW2 rows/s | \`raw_insert $URL 1000 ${DURATION%s} 2\` |
| cached read \`GET /api/events?page=1&size=20\` (X-Cache: $CACHE) | **$CACHED_RPS req/s**, p50 $CACHED_P50 ms, p99 $CACHED_P99 ms | \`wrk -t2 -c64 -d$DURATION --latency\` |
| filtered read \`type=GAS&level=WARN&size=20\` at $ROWS events | **$FILTER_RPS req/s**, p50 $FILTER_P50 ms, p99 $FILTER_P99 ms | \`wrk -t2 -c64 -d$DURATION --latency\` |
| goose site mix (70 % single posts, 2 % bulks of 20, 20 % cached, 8 % filtered reads) | $SITE_RPS req/s, $SITE_FAIL failures of $SITE_REQS ([goose report](target/bench/goose-site.html), not committed) | \`vigil-load --users 32 --increase-time 2s --run-time $DURATION\` |
| embedded mode (SQLite, WAL, \`synchronous=FULL\`): single-event ingest | **$EMB_RPS req/s**, p50 $EMB_P50 ms, p99 $EMB_P99 ms | \`wrk -t2 -c64 -d$DURATION --latency -s scripts/wrk/post_event.lua\` |
| embedded mode: bulk ingest, 1,000 events per POST | **$EMB_BULK_EPS events/s** (p99 $EMB_BULK_P99 ms) | \`wrk -t1 -c4 -d$DURATION --latency -s scripts/wrk/post_bulk.lua\` |
| WebSocket fan-out, 1,000 clients × 500 events/s × $FANOUT_DURATION | $FAN_500 | \`fanout --clients 1000 --rate 500 --duration $FANOUT_DURATION\` |
| WebSocket fan-out, 1,000 clients × 1,000 events/s × $FANOUT_DURATION | $FAN_1000 | \`fanout --clients 1000 --rate 1000 --duration $FANOUT_DURATION\` |
| highest rate at which 1,000 clients get every event with p99 < 50 ms (rates tried: $FANOUT_RATES) | $FAN_BEST | \`RATES="$FANOUT_RATES" bash scripts/bench-fanout.sh\` |
| highest rate at which 10,000 clients get every event with p99 < 100 ms (rates tried: $FANOUT_RATES_10K) | $FAN_BEST_10K | \`RATES_10K="$FANOUT_RATES_10K" bash scripts/bench-fanout.sh\` |
| baseline: the same with \`bare_fanout\`, a server that only writes each event's frame to every client's socket (no store, cache, queue or task per client) | $FAN_BEST_10K_BARE | \`bare_fanout\`, the same sweep |
| resident memory per idle WebSocket connection | **$IDLE** | \`fanout --idle $IDLE_CONNECTIONS --settle 3s\` on a fresh server |

Raw outputs: \`$WORK/\` (wrk texts, goose HTML/JSON reports, fanout JSON lines, the CSV below).

## Against Vigil's targets

Each target beside its reference, both measured in this run.

| target | this run | reference in the same run | met |
| --- | --- | --- | --- |
| single-event ingest ≥ 45 % of a bare hyper server's rate | **$SINGLE_SHARE %** ($SINGLE_RPS req/s, p99 $SINGLE_P99 ms) | \`bare_hyper\`, reads the body and answers Vigil's 201: $BARE_RPS req/s, p99 $BARE_P99 ms, $CPU_BARE µs CPU per request | $(verdict "$SINGLE_SHARE >= 45" "f'{45 - $SINGLE_SHARE} points short'") |
| server CPU per acknowledged event ≤ 25 µs, Vigil's own ≤ 8 µs (from \`/proc/PID/stat\` around the single-event run) | **$CPU_SERVER µs**: Vigil $CPU_VIGIL, MariaDB $CPU_MARIADB, Redis $CPU_REDIS; the machine was $SINGLE_IDLE % idle, $SINGLE_STEAL % stolen by the hypervisor | bare hyper: $CPU_BARE µs per request | $(verdict "$CPU_SERVER <= 25 and $CPU_VIGIL <= 8" "f'{$CPU_SERVER - 25:+.1f} µs in all, Vigil {$CPU_VIGIL - 8:+.1f} µs'") |
| bulk ingest ≥ 100 % of raw one-connection INSERTs | **$BULK_SHARE %** ($BULK_EPS events/s) | \`raw_insert\`: $RAW rows/s | $(verdict "$BULK_SHARE >= 100" "f'{100 - $BULK_SHARE} points short'") |
| 1,000 clients × 1,000 events/s, every event, p99 ≤ 50 ms | p99 **$FAN_1000_P99 ms**, server CPU $FAN_CPU ms per 1,000 deliveries | — | $(verdict "$FAN_1000_P99 <= 50" "f'p99 {$FAN_1000_P99 - 50:.1f} ms over'") |
| 10,000 clients get every event with p99 < 100 ms at ≥ 100 events/s | $FAN_BEST_10K | \`bare_fanout\`, only writes each event's frame to every client's socket: $FAN_BEST_10K_BARE | $(verdict "$FAN_10K_RATE >= 100") |
| ≤ 12 KiB resident memory per idle WebSocket at $IDLE_CONNECTIONS connections | **$IDLE_KIB KiB** | — | $(verdict "$IDLE_KIB <= 12") |

## Live clients: WebSocket, Server-Sent Events and the console

The fan-out server above, 1,000 clients × 500 events/s × $FANOUT_DURATION each run, the two
kinds of run of each pair alternating in the same run; medians. The measurer and the server
share the machine's cores, so the measurer's own CPU (reading chunked \`text/event-stream\`
costs it more than WebSocket frames) is part of every latency here. The console runs have a
headless Chromium rendering every event on the same two cores, capped at a quarter of one core
by a CPU cgroup where the machine allows one (else at nice 19). A console on an operator's own
machine takes none of the server's cores, so each console run is followed by one without the
console in which a busy loop, in the browser's cgroup, uses the share of one core the browser
just used (*beside them*): the console against that run is what the console itself costs the
server; the console against the quiet run adds what a browser on the server's cores costs.

$WIRES

### 10,000 clients beside the floor

Each rate both servers ran in the 10,000-client sweep (one $FANOUT_DURATION run each): Vigil, and
\`bare_fanout\`, a server that only writes each event's frame to every client's socket. At low
rates each event goes to each client in a socket write of its own, and the cost of that write
bounds the latency of every server; at higher rates Vigil's writers carry the frames that queued
meanwhile in one write, which the floor does not.

$FLOOR_TABLE

## Unit costs

What one unit of work cost in this run, for sizing a deployment ([docs/scaling.md](docs/scaling.md);
\`bash scripts/capacity.sh\` reads this table by its keys). CPU is from \`/proc/PID/stat\`
around the runs above, Redis's work from its \`INFO stats\` counters; µs per event is the same
number as ms per 1,000 events.

| unit cost | key | value |
| --- | --- | --- |
| Vigil CPU per acknowledged single-event POST | \`vigil_us_per_event\` | $CPU_VIGIL µs |
| MariaDB CPU per single event (its own batch share) | \`mariadb_us_per_event\` | $CPU_MARIADB µs |
| Redis CPU per single event | \`redis_us_per_event\` | $CPU_REDIS µs |
| Vigil CPU per event in 1,000-event bulk POSTs | \`vigil_us_per_bulk_event\` | $BULK_CPU_VIGIL µs |
| MariaDB CPU per event in 1,000-event bulks | \`mariadb_us_per_bulk_event\` | $BULK_CPU_MARIADB µs |
| Redis CPU per event in 1,000-event bulks | \`redis_us_per_bulk_event\` | $BULK_CPU_REDIS µs |
| Redis commands per single event (one PUBLISH per event, and one merge script, LPUSH and LTRIM in one EVALSHA, per publisher round trip) | \`redis_commands_per_event\` | $REDIS_COMMANDS |
| Redis bytes in per single event | \`redis_bytes_in_per_event\` | $REDIS_IN B |
| Redis bytes out per event, one instance subscribed | \`redis_bytes_out_per_event\` | $REDIS_OUT B |
| Vigil CPU per event on each further instance, posts or none (its subscription, bridge and hub) | \`vigil_us_per_event_received\` | $LISTENER_US µs |
| Redis CPU per event for each further subscribed instance | \`redis_us_per_event_per_subscriber\` | $REDIS_SUB_US µs |
| Redis bytes out per event for each further subscribed instance | \`redis_bytes_out_per_event_per_subscriber\` | $REDIS_SUB_BYTES B |
| Redis CPU per event for each further instance that also posts, $REDIS_STACKED_COUNT instances stacked on these CPUs (*Several instances*) | \`redis_us_per_event_per_posting_instance\` | $REDIS_STACKED_US µs |
| server CPU per 1,000 WebSocket deliveries (1,000 clients × 1,000 events/s) | \`ws_ms_per_1000_deliveries\` | $FAN_CPU ms |
| resident memory per idle WebSocket client ($IDLE_CONNECTIONS connections) | \`ws_idle_kib\` | $IDLE_KIB KiB |
| single-event ingest, one instance, this machine | \`single_events_per_s\` | $SINGLE_RPS |
| bulk ingest, one instance, this machine | \`bulk_events_per_s\` | $BULK_EPS |
| CPUs of this machine (the rates above used all of them, load generators included) | \`cpus\` | $(nproc) |

## Several instances

1, 2 and 4 full-mode instances sharing this MariaDB and Redis behind HAProxy (round-robin
over HTTP), on the same $(nproc) CPUs (\`scripts/bench-scale.sh\`, ${DURATION} runs). Each of
N instances runs CPUs/N HTTP worker threads (\`VIGIL_WORKER_THREADS\`, at least one), as
instances stacked on one machine should: every run has as many worker threads as cores. Ingest is
\`wrk -t2 -c64\` single-event POSTs through HAProxy; *stored* may exceed *acknowledged* by
the POSTs still in flight when wrk stopped. Fan-out posts through HAProxy at 500 events/s to
1,000 \`/ws\` clients spread over the instances (each client on one instance): every event
must reach every client of every instance, once. Every instance subscribes to \`events:new\`,
so Redis sends each event once per instance, and every instance reads every event: Redis's
bytes out and CPU per event, and the instances' CPU per event, grow with the count (the
listener runs below measure by how much per instance). At a fixed total rate each instance also forms smaller batches, and a
batch's commit, round trips and wake-ups are then shared by fewer events (*mean batch rows*);
the second table sets each count against one instance forming batches of about the same size,
which separates the two.

$SCALE

$LISTENER_TEXT

## What each index costs

Bulk ingest's baseline (\`raw_insert\`, 1,000-row INSERTs from one connection) into tables that
differ only in their indexes, each in its own database; mariadbd's CPU per row from
\`/proc/PID/stat\`, the median of $INDEX_ROUNDS runs of ${INDEX_SECONDS}s taken in turn. \`pk\` has the primary
key alone; \`pk_check\` adds the payload's \`JSON_VALID\` CHECK; each of the next four adds one
secondary index to \`pk_check\`; \`all\` is the table as Vigil creates it. Which list query each
index serves, and why all four are kept: [docs/architecture.md](docs/architecture.md#what-the-indexes-cost).

$INDEXES

## Latency against offered rate

Saturation figures hide latency. Single-event ingest (full mode) was run open loop at fixed
offered rates, $STEPS % of the peak measured above ($SINGLE_RPS req/s), $STEP_DURATION each:
\`fanout --clients 0 --rate R --duration $STEP_DURATION\` sends POST \`i\` at \`i / R\` seconds from its own task
(over at most 64 keep-alive connections), so a slow answer never delays the schedule, and
latency runs from the due time to the 201, waits for a free connection included (no
coordinated omission). goose's \`--throttle-requests\` caps a closed loop of users instead and
its reports round to whole milliseconds, which is why it is not used here.

![p50 and p99 ingest latency against offered rate]($SVG)

| offered req/s | acknowledged req/s | p50 ms | p99 ms | errors | late sends (worst, ms) |
| --- | --- | --- | --- | --- | --- |
$(tail -n +2 "$WORK/latency-vs-rate.csv" | awk -F, '{printf "| %s | %s | %s | %s | %s | %s (%s) |\n", $1, $2, $3, $4, $5, $6, $7}')

## Failover

What producers saw when a server process was SIGKILLed under sustained single and bulk
ingest, measured by the high-availability tests on private servers on loopback ports (see
[docs/high-availability.md](docs/high-availability.md)). Every answer came within
\`VIGIL_REQUEST_TIMEOUT_S\` (15 s); the table held exactly the acknowledged events, plus the
requests answered 504 whose batch turned out committed. For Redis the first 201 is not the
point (posts never stopped): its row gives the time from the kill to the first event broadcast
through the new primary.

$FAILOVER

## Reproduce

\`\`\`sh
bash scripts/bench.sh                                   # everything above, about 30 min + build
DURATION=5s STEP_DURATION=3s bash scripts/bench.sh      # a quicker, noisier pass
cargo bench -p vigil-benches                             # the criterion micro-benchmarks
bash scripts/bench-failover.sh                           # the failover table alone
bash scripts/bench-scale.sh                              # several instances behind HAProxy alone
bash scripts/capacity.sh --sensors 10000 --dashboards 200   # the capacity model on this page's unit costs
\`\`\`
EOF
echo "wrote $OUT and $SVG"
