#!/usr/bin/env bash
# Ingest speed on this machine, the figures README.md states. Builds Vigil in release mode,
# starts it against a fresh MariaDB database (vigil_bench), and measures with wrk:
#   1. single-event posts with durable ack: wrk -t2 -c64 -d15s, one ~120-byte event each;
#   2. bulk posts of 1,000 events (wrk -t1 -c4), against the baseline of raw multi-row
#      INSERTs of 1,000-row batches into the same table from one connection.
# Server, MariaDB and load generator share the machine, as they do in the issue's target.
# Needs wrk (apt-get install wrk) and MariaDB on 127.0.0.1:3306.
set -euo pipefail
cd "$(dirname "$0")/.."

DB=${VIGIL_BENCH_DB:-vigil_bench}
ADDR=127.0.0.1:${VIGIL_BENCH_PORT:-3900}
DURATION=${DURATION:-15s}
URL="mysql://root@127.0.0.1:3306/$DB"

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release -p vigil-server -p vigil-benches --bin vigil --bin raw_insert --bin sample_bulk
mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB"

DATABASE_URL=$URL VIGIL_ADDR=$ADDR RUST_LOG=${RUST_LOG:-info} target/release/vigil 2>/tmp/vigil-bench.log &
VIGIL_PID=$!
trap 'kill $VIGIL_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://$ADDR/api/health" >/dev/null && break; sleep 0.1; done

echo "== single-event posts: wrk -t2 -c64 -d$DURATION"
wrk -t2 -c64 -d"$DURATION" --latency -s scripts/wrk/post_event.lua "http://$ADDR"

target/release/sample_bulk 1000 > /tmp/vigil-bulk-1000.json
echo "== bulk posts of 1,000 events: wrk -t1 -c4 -d$DURATION"
BULK_FILE=/tmp/vigil-bulk-1000.json wrk -t1 -c4 -d"$DURATION" --latency -s scripts/wrk/post_bulk.lua "http://$ADDR" \
  | tee /tmp/vigil-bench-bulk.txt
rps=$(awk '/Requests\/sec/ {print $2}' /tmp/vigil-bench-bulk.txt)
echo "Vigil bulk: $(python3 -c "print(round(float('$rps') * 1000))") events/s"

echo "== baseline: raw multi-row INSERT, 1,000-row batches, one connection"
target/release/raw_insert "$URL" 1000 "${DURATION%s}"

echo "== table: $(mariadb -uroot -h127.0.0.1 -N -e "SELECT COUNT(*) FROM $DB.events") rows"
grep -h "ingest batches" /tmp/vigil-bench.log | tail -3 || true
