#!/usr/bin/env bash
# Speed on this machine, the figures README.md states. Builds Vigil in release mode, starts
# it in full mode (MariaDB database vigil_bench + Redis under vigil:bench:* names) and
# measures with wrk:
#   1. single-event posts with durable ack: wrk -t2 -c64 -d15s, one ~120-byte event each;
#   2. bulk posts of 1,000 events (wrk -t1 -c4), against the baseline of raw multi-row
#      INSERTs of 1,000-row batches into the same table from one connection;
#   3. cached reads: GET /api/events?page=1&size=20, wrk -t2 -c64;
#   4. a filtered read (type=GAS&level=WARN, size 20) from the database, wrk -t2 -c64.
# Server, MariaDB, Redis and load generator share the machine, as in the issues' targets.
# Needs wrk (apt-get install wrk), MariaDB on 127.0.0.1:3306 and Redis on 127.0.0.1:6379.
set -euo pipefail
cd "$(dirname "$0")/.."

DB=${VIGIL_BENCH_DB:-vigil_bench}
ADDR=127.0.0.1:${VIGIL_BENCH_PORT:-3900}
DURATION=${DURATION:-15s}
URL="mysql://root@127.0.0.1:3306/$DB"

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release -p vigil-server -p vigil-benches --bin vigil --bin raw_insert --bin sample_bulk
mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB"

redis-cli -h 127.0.0.1 DEL vigil:bench:recent vigil:bench:recent:gap >/dev/null
DATABASE_URL=$URL REDIS_URL=redis://127.0.0.1:6379 VIGIL_REDIS_RECENT_KEY=vigil:bench:recent \
  VIGIL_REDIS_CHANNEL=vigil:bench:new VIGIL_ADDR=$ADDR RUST_LOG=${RUST_LOG:-info} \
  target/release/vigil 2>/tmp/vigil-bench.log &
VIGIL_PID=$!
trap 'kill $VIGIL_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://$ADDR/api/health" >/dev/null && break; sleep 0.1; done

# The filtered read on a small table (10,000 events), to compare with the same read on the
# large table at the end.
target/release/sample_bulk 1000 > /tmp/vigil-bulk-1000.json
for _ in $(seq 1 10); do
  curl -sf -o /dev/null -H 'content-type: application/json' --data-binary @/tmp/vigil-bulk-1000.json "http://$ADDR/api/events"
done
echo "== filtered read on $(mariadb -uroot -h127.0.0.1 -N -e "SELECT COUNT(*) FROM $DB.events") events: GET /api/events?type=GAS&level=WARN&size=20"
wrk -t2 -c64 -d"$DURATION" --latency "http://$ADDR/api/events?type=GAS&level=WARN&size=20"

echo "== single-event posts: wrk -t2 -c64 -d$DURATION"
wrk -t2 -c64 -d"$DURATION" --latency -s scripts/wrk/post_event.lua "http://$ADDR"

echo "== bulk posts of 1,000 events: wrk -t1 -c4 -d$DURATION"
BULK_FILE=/tmp/vigil-bulk-1000.json wrk -t1 -c4 -d"$DURATION" --latency -s scripts/wrk/post_bulk.lua "http://$ADDR" \
  | tee /tmp/vigil-bench-bulk.txt
rps=$(awk '/Requests\/sec/ {print $2}' /tmp/vigil-bench-bulk.txt)
echo "Vigil bulk: $(python3 -c "print(round(float('$rps') * 1000))") events/s"

echo "== baseline: raw multi-row INSERT, 1,000-row batches, one connection"
target/release/raw_insert "$URL" 1000 "${DURATION%s}"

echo "== cached read: GET /api/events?page=1&size=20 (X-Cache: $(curl -sI "http://$ADDR/api/events?page=1&size=20" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache" {print $2}'))"
wrk -t2 -c64 -d"$DURATION" --latency "http://$ADDR/api/events?page=1&size=20"

echo "== filtered read on $(mariadb -uroot -h127.0.0.1 -N -e "SELECT COUNT(*) FROM $DB.events") events: GET /api/events?type=GAS&level=WARN&size=20"
wrk -t2 -c64 -d"$DURATION" --latency "http://$ADDR/api/events?type=GAS&level=WARN&size=20"

echo "== table: $(mariadb -uroot -h127.0.0.1 -N -e "SELECT COUNT(*) FROM $DB.events") rows"
grep -h "ingest batches" /tmp/vigil-bench.log | tail -3 || true
