#!/usr/bin/env bash
# Several Vigil instances on this machine (for BENCHMARKS.md and docs/scaling.md): 1, 2 and 4
# full-mode instances sharing one MariaDB and one Redis, behind HAProxy (Debian's package,
# round-robin over HTTP), everything on the same cores. For each instance count:
#
# 1. ingest: wrk -t2 -c64 single-event POSTs through HAProxy for DURATION. Reports the
#    acknowledged rate; the rows stored against the 201s (a POST still in flight when wrk stops
#    may be stored unacknowledged, never the other way); CPU per acknowledged event of the
#    instances together, MariaDB, Redis and HAProxy (/proc/PID/stat); Redis's work per event
#    from INFO (commands processed, bytes in, bytes out): every instance subscribes to
#    events:new, so Redis's egress per event grows with the instance count;
# 2. fan-out: the `fanout` measurer posting through HAProxy at RATE events/s for DURATION with
#    CLIENTS /ws clients spread over the instances (each client connects to one instance, in
#    turn): every event to every client of every instance, each once, p99, the instances' CPU
#    per 1,000 deliveries, Redis's egress per event; then the stored rows against the POSTs
#    acknowledged.
#
#    For N above 1, a control follows: one instance through HAProxy with 64/N connections, so
#    that its batches are about the size each of the N instances formed: the N instances'
#    cost per event beyond it is what running N instances costs, apart from smaller batches.
# 3. for each count N, N - 1 instances that take no posts ("listeners"; one for N = 1) beside
#    one that takes them all (wrk -t2 with 64/N connections straight to it, so that its
#    batches are about the size each of N instances formed), then the same without the
#    listeners: the listeners' CPU per event is what each further instance adds for every
#    event any instance takes (its subscription, bridge and hub), and Redis's CPU per event
#    against the run without them is what further subscribers cost Redis. The run holds as
#    many subscribed instances as the N-instance run, but one publisher.
#
# Each of N instances gets max(1, CPUs/N) HTTP worker threads (VIGIL_WORKER_THREADS), as an
# operator stacking instances on one machine should set them: N instances with a thread per CPU
# each would run N times as many threads as there are cores, and what they cost each other in
# context switches would be charged to the instance count. The control and the one-instance run
# keep the default (one per CPU), so every run has as many worker threads as cores.
#
# On two cores the total rate cannot grow with instances; what must not grow is the cost per
# event, and the loss must stay zero. At a fixed total rate each of N instances forms batches
# of about 1/N the rows, so the table also reports the mean batch (from each instance's
# /metrics), which says how much of a cost per event is per batch.
#
# Usage: bash scripts/bench-scale.sh   (writes target/bench/scale.jsonl, a line per count, and
#        the listener runs to target/bench/scale-listener.json)
# Settings: COUNTS ("1 2 4"), DURATION (15s), RATE (500), CLIENTS (1000), SCALE_OUT
# (target/bench/scale.jsonl), SKIP_BUILD=1 (binaries already built, as scripts/bench.sh does).
# Ports: HAProxy 3980, instances 3971…
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

COUNTS=${COUNTS:-"1 2 4"}
DURATION=${DURATION:-15s}
RATE=${RATE:-500}
CLIENTS=${CLIENTS:-1000}
OUT=${SCALE_OUT:-target/bench/scale.jsonl}
BIN=${CARGO_TARGET_DIR:-target}/release
DB=vigil_bench_scale
PREFIX=benchscale
PROXY=127.0.0.1:3980
FIRST_PORT=3971
CPUS=$(nproc)
mkdir -p "$(dirname "$OUT")"
: > "$OUT"

ensure_mariadb
ensure_redis
command -v wrk >/dev/null 2>&1 || apt_install wrk
command -v haproxy >/dev/null 2>&1 || apt_install haproxy
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --locked -p vigil-server -p vigil-loadtest --bin vigil --bin fanout

WORK=$(mktemp -d -t vigil-scale.XXXXXX)
# What every run's summary needs, in one place: a wrk run's acknowledged requests, the mean
# batch from two batches() readings, and costs per event from counters taken around it (four
# processes' CPU ticks, then Redis's commands, bytes in, bytes out, socket reads and socket
# writes, as counters() and listener_run() write them).
cat > "$WORK/scale_costs.py" <<'PY'
import re

def acked_of(text):
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return int(re.search(r"(\d+) requests in", text).group(1)) - (int(bad.group(1)) if bad else 0)

def mean_batch_rows(before, after):
    (b0, e0), (b1, e1) = (map(int, text.split()) for text in (before, after))
    return round((e1 - e0) / max(b1 - b0, 1), 1)

def per_event(before, after, events, processes, hz):
    d = [b - a for a, b in zip(before, after)]
    n = max(events, 1)
    return {
        "cpu_us_per_event": {name: round(ticks / hz * 1e6 / n, 2) for name, ticks in zip(processes, d)},
        "redis_per_event": {"commands": round(d[4] / n, 2), "bytes_in": round(d[5] / n, 1), "bytes_out": round(d[6] / n, 1),
                            "reads": round(d[7] / n, 3), "writes": round(d[8] / n, 3)},
    }
PY
PIDS=()
PROXY_PID=
stop_all() {
  local pid
  for pid in "${PIDS[@]}" $PROXY_PID; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}" $PROXY_PID; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
  PROXY_PID=
}
cleanup() {
  stop_all
  redis-cli -h 127.0.0.1 DEL "$PREFIX:events:recent" "$PREFIX:events:recent:gap" >/dev/null 2>&1 || true
  mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $DB" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_instances N: a fresh database, N instances on FIRST_PORT…, HAProxy in front of them;
# each instance has worker_threads N HTTP worker threads.
worker_threads() { echo $(( $1 >= CPUS ? 1 : CPUS / $1 )); }
start_instances() {
  local count=$1 threads port i
  threads=$(worker_threads "$count")
  mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB"
  redis-cli -h 127.0.0.1 DEL "$PREFIX:events:recent" "$PREFIX:events:recent:gap" >/dev/null
  {
    printf 'global\n  maxconn 8000\n'
    printf 'defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n'
    printf 'frontend vigil\n  bind %s\n  default_backend instances\n' "$PROXY"
    printf 'backend instances\n  balance roundrobin\n'
    for i in $(seq 1 "$count"); do
      printf '  server vigil%d 127.0.0.1:%d\n' "$i" $((FIRST_PORT + i - 1))
    done
  } > "$WORK/haproxy.cfg"
  for i in $(seq 1 "$count"); do
    port=$((FIRST_PORT + i - 1))
    DATABASE_URL=mysql://root@127.0.0.1:3306/$DB REDIS_URL=redis://127.0.0.1:6379 \
    VIGIL_REDIS_CHANNEL=$PREFIX:events:new VIGIL_REDIS_RECENT_KEY=$PREFIX:events:recent \
    VIGIL_WS_MAX_CLIENTS=20000 VIGIL_WS_MAX_CLIENTS_PER_ADDR=20000 RUST_LOG=error \
    VIGIL_WORKER_THREADS=$threads \
      "$BIN/vigil" --addr "127.0.0.1:$port" 2>>"$WORK/vigil.log" &
    PIDS+=("$!")
    wait_healthy "127.0.0.1:$port"
  done
  haproxy -f "$WORK/haproxy.cfg" -db 2>>"$WORK/haproxy.log" &
  PROXY_PID=$!
  wait_healthy "$PROXY"
}

# Counters around a run: CPU ticks of the instances (summed), mariadbd, redis-server and
# HAProxy, then Redis's commands processed, bytes in and bytes out.
MARIADB_PID=$(cat "$(mariadb -uroot -h127.0.0.1 -N -e 'SELECT @@pid_file')" 2>/dev/null || pgrep -o -x mariadbd)
REDIS_PID=$(redis-cli -h 127.0.0.1 INFO server | tr -d '\r' | awk -F: '/^process_id/ {print $2}')
counters() {
  local pid sum=0
  for pid in "${PIDS[@]}"; do sum=$((sum + $(cpu_ticks "$pid"))); done
  printf '%s %s %s %s ' "$sum" "$(cpu_ticks "$MARIADB_PID")" "$(cpu_ticks "$REDIS_PID")" "$(cpu_ticks "$PROXY_PID")"
  redis_counters
}
stored() { mariadb -uroot -h127.0.0.1 -N -e "SELECT COUNT(*) FROM $DB.events"; }
# batches [PORT]: "batches_committed events_committed" from one instance's /metrics, or summed
# over all the instances'.
batches() {
  local i port ports=("$@")
  [ "${#ports[@]}" -gt 0 ] || for i in $(seq 1 "${#PIDS[@]}"); do ports+=($((FIRST_PORT + i - 1))); done
  for port in "${ports[@]}"; do curl -sf "http://127.0.0.1:$port/metrics"; done |
    awk '/^vigil_batches_total / {b += $2} /^vigil_events_accepted_total / {e += $2} END {print b + 0, e + 0}'
}

for count in $COUNTS; do
  echo "== $count instance(s) behind HAProxy"
  start_instances "$count"
  # Warm the pools and the proxy's connections; the rows it stores are counted out below.
  wrk -t2 -c64 -d2s -s scripts/wrk/post_event.lua "http://$PROXY" > /dev/null
  rows_before=$(stored)
  batches_before=$(batches)
  before=$(counters)
  wrk --latency -t2 -c64 -d"$DURATION" -s scripts/wrk/post_event.lua "http://$PROXY" > "$WORK/wrk.txt"
  after=$(counters)
  batches_after=$(batches)
  rows_after=$(stored)

  fan_before=$(counters)
  client_hosts=()
  for i in $(seq 1 "$count"); do client_hosts+=(--client-host "http://127.0.0.1:$((FIRST_PORT + i - 1))"); done
  server_pids=()
  for pid in "${PIDS[@]}"; do server_pids+=(--server-pid "$pid"); done
  fan_rows_before=$(stored)
  fan=$("$BIN/fanout" --host "http://$PROXY" "${client_hosts[@]}" "${server_pids[@]}" \
    --clients "$CLIENTS" --rate "$RATE" --duration "$DURATION" --json)
  fan_after=$(counters)
  fan_rows=$(( $(stored) - fan_rows_before ))
  stop_all

  # The control: one instance through HAProxy with 64/N connections, so that its batches are
  # about as large as each of the N instances' were. What the N instances cost per event
  # beyond it is what running N instances costs, apart from the smaller batches.
  rm -f "$WORK"/control.*
  if [ "$count" -gt 1 ]; then
    start_instances 1
    wrk -t2 -c$((64 / count)) -d2s -s scripts/wrk/post_event.lua "http://$PROXY" > /dev/null
    batches > "$WORK/control.batches-before"
    counters > "$WORK/control.before"
    wrk -t2 -c$((64 / count)) -d"$DURATION" -s scripts/wrk/post_event.lua "http://$PROXY" > "$WORK/control.txt"
    counters > "$WORK/control.after"
    batches > "$WORK/control.batches-after"
    stop_all
  fi

  python3 - "$count" "$WORK/wrk.txt" "$before" "$after" "$((rows_after - rows_before))" \
    "$fan" "$fan_before" "$fan_after" "$fan_rows" "$(getconf CLK_TCK)" "$batches_before" "$batches_after" "$WORK" "$(worker_threads "$count")" >> "$OUT" <<'PY'
import json, os, re, sys
count, wrk_file, work = int(sys.argv[1]), sys.argv[2], sys.argv[13]
sys.path.insert(0, work)
from scale_costs import acked_of, mean_batch_rows, per_event
before, after = (list(map(int, text.split())) for text in sys.argv[3:5])
rows = int(sys.argv[5])
fan = json.loads(sys.argv[6])
fan_before, fan_after = (list(map(int, text.split())) for text in sys.argv[7:9])
fan_rows, hz = int(sys.argv[9]), int(sys.argv[10])
text = open(wrk_file).read()
def ms(value):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]
acked = acked_of(text)
def costs(before, after, events):
    return per_event(before, after, events, ("vigil", "mariadb", "redis", "haproxy"), hz)
ingest = {
    "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
    "p99_ms": ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)),
    "acked": acked,
    "stored": rows,
    "unanswered_stored": rows - acked,
    "mean_batch_rows": mean_batch_rows(*sys.argv[11:13]),
    **costs(before, after, acked),
}
fanout = {
    "run": fan,
    "stored": fan_rows,
    **costs(fan_before, fan_after, fan["events_acked"]),
}
control = None
if os.path.exists(f"{work}/control.txt"):
    read = lambda name: open(f"{work}/control.{name}").read()
    control_acked = acked_of(read("txt"))
    control = {
        "connections": 64 // count,
        "acked": control_acked,
        "mean_batch_rows": mean_batch_rows(read("batches-before"), read("batches-after")),
        **costs(*(list(map(int, read(end).split())) for end in ("before", "after")), control_acked),
    }
print(json.dumps({"instances": count, "worker_threads": int(sys.argv[14]), "ingest": ingest, "fanout": fanout, "control": control}))
PY
  tail -1 "$OUT" | python3 -c '
import json, sys
r = json.load(sys.stdin)
i, f = r["ingest"], r["fanout"]
run, c, ri, rf = f["run"], i["cpu_us_per_event"], i["redis_per_event"], f["redis_per_event"]
print("ingest: %.0f req/s, p99 %.2f ms, %d acknowledged, %d stored, batches of %.1f rows; CPU µs per event: instances %s, MariaDB %s, Redis %s, HAProxy %s; Redis per event: %s commands, %.0f bytes in, %.0f bytes out"
      % (i["req_per_s"], i["p99_ms"], i["acked"], i["stored"], i["mean_batch_rows"], c["vigil"], c["mariadb"], c["redis"], c["haproxy"], ri["commands"], ri["bytes_in"], ri["bytes_out"]))
print("fan-out: %d/%d delivered, missing %d, duplicates %d, p99 %.1f ms, instances CPU %.2f ms per 1,000 deliveries; %d acknowledged, %d stored; Redis %.0f bytes out per event"
      % (run["delivered"], run["expected_deliveries"], run["missing"], run["duplicates"], run["latency_ms"]["p99"], run["server_cpu_ms_per_1000_deliveries"] or 0, run["events_acked"], f["stored"], rf["bytes_out"]))
'
done

# The listener runs, one pair per count N: one instance takes every post (wrk -t2 with 64/N
# connections straight to it, so that its batches are about as large as each of N instances
# formed) with N - 1 more instances that take none (one for N = 1: the unit costs' further
# instance), then the same without them. A listener reads every published batch in one piece,
# so what it costs per event depends on the batch size as the instances' own work does. The
# listeners' CPU is what the N - 1 further instances add in the N-instance run, and Redis's CPU
# with them against without is what N - 1 further subscribers cost it: on top of the control,
# what the model expects the N instances to cost. What the N-instance run costs beyond that
# comes from the posts being spread over N publishers.
# listener_run NAME CONNECTIONS: writes "before" and "after" counters (the posting instance,
# the listeners together, mariadbd, redis-server, then Redis's INFO counters) and the posting
# instance's batches.
listener_ticks() {
  local pid sum=0
  for pid in "${PIDS[@]:1}"; do sum=$((sum + $(cpu_ticks "$pid"))); done
  echo "$sum"
}
listener_counters() {
  echo "$(cpu_ticks "${PIDS[0]}") $(listener_ticks) $(cpu_ticks "$MARIADB_PID") $(cpu_ticks "$REDIS_PID") $(redis_counters)"
}
listener_run() {
  batches "$FIRST_PORT" > "$WORK/$1.batches-before"
  listener_counters > "$WORK/$1.before"
  wrk -t2 -c"$2" -d"$DURATION" -s scripts/wrk/post_event.lua "http://127.0.0.1:$FIRST_PORT" > "$WORK/$1.txt"
  listener_counters > "$WORK/$1.after"
  batches "$FIRST_PORT" > "$WORK/$1.batches-after"
}
LISTENER_RUNS=()
for count in $COUNTS; do
  connections=$((64 / count))
  listeners=$(( count > 1 ? count - 1 : 1 ))
  LISTENER_RUNS+=("$connections:$listeners")
  echo "== listeners: one instance takes every post ($connections connections), $listeners more only receive; then without them"
  start_instances $((listeners + 1))
  wrk -t2 -c"$connections" -d2s -s scripts/wrk/post_event.lua "http://127.0.0.1:$FIRST_PORT" > /dev/null
  listener_run "with-listeners-$connections" "$connections"
  # The same run without the listeners: Redis then has one subscriber, and the batches are as
  # large as before, so the difference is what the further subscribers cost Redis.
  for pid in "${PIDS[@]:1}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  PIDS=("${PIDS[0]}")
  listener_run "alone-$connections" "$connections"
  stop_all
done
python3 - "$WORK" "$(getconf CLK_TCK)" "${LISTENER_RUNS[@]}" > "${OUT%.jsonl}-listener.json" <<'PY'
import json, sys
work, hz = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, work)
from scale_costs import acked_of, mean_batch_rows, per_event
def run(name):
    read = lambda end: open(f"{work}/{name}.{end}").read()
    acked = acked_of(read("txt"))
    before, after = (list(map(int, read(end).split())) for end in ("before", "after"))
    return {"acked": acked, "mean_batch_rows": mean_batch_rows(read("batches-before"), read("batches-after")),
            **per_event(before, after, acked, ("posting_instance", "listeners", "mariadb", "redis"), hz)}
runs = []
for spec in sys.argv[3:]:
    connections, listeners = map(int, spec.split(":"))
    both, alone = run(f"with-listeners-{connections}"), run(f"alone-{connections}")
    # What the further instances added, together: the listeners' own CPU, and Redis's CPU and
    # bytes out with them against without.
    added = {
        "listeners_us": both["cpu_us_per_event"]["listeners"],
        "redis_us": round(both["cpu_us_per_event"]["redis"] - alone["cpu_us_per_event"]["redis"], 2),
        "redis_bytes_out": round(both["redis_per_event"]["bytes_out"] - alone["redis_per_event"]["bytes_out"], 1),
    }
    runs.append({"connections": connections, "listeners": listeners,
                 "with_listeners": both, "alone": alone, "added_per_event": added})
print(json.dumps({"runs": runs}))
PY
python3 -c '
import json, sys
for pair in json.load(open(sys.argv[1]))["runs"]:
    for name in ("with_listeners", "alone"):
        run = pair[name]
        c = run["cpu_us_per_event"]
        print("%d connections, %s (%d): %d events, batches of %.1f rows; CPU µs per event: posting instance %s, listeners %s, MariaDB %s, Redis %s; Redis %.0f bytes out per event" % (pair["connections"], name, pair["listeners"], run["acked"], run["mean_batch_rows"], c["posting_instance"], c["listeners"], c["mariadb"], c["redis"], run["redis_per_event"]["bytes_out"]))
' "${OUT%.jsonl}-listener.json"
