#!/usr/bin/env bash
# Does retention stall ingest? Single-event ingest (wrk -t2 -c64, as scripts/bench.sh) against
# a table holding a large expired backlog, measured three times on the same server build and
# table: without retention, while retention deletes the backlog (VIGIL_RETENTION=1d, the
# backlog 2-3 days old), and without retention again (to bracket the machine's drift).
#
# The backlog is written by MariaDB itself (the Sequence engine) straight into a fresh
# database vigil_bench_retention, after a first start of Vigil has run the migrations.
# Settings: ROWS (3000000) backlog rows, DURATION (15s) each wrk run, SKIP_BUILD=1.
# Prints the three results and how many rows retention deleted during its run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ROWS=${ROWS:-3000000}
DURATION=${DURATION:-15s}
BIN=${CARGO_TARGET_DIR:-target}/release
DB=vigil_bench_retention
URL="mysql://root@127.0.0.1:3306/$DB"
ADDR=127.0.0.1:3910
WORK=${BENCH_DIR:-target/bench}
MARIADB=(mariadb -uroot -h127.0.0.1)
mkdir -p "$WORK"

ensure_mariadb
command -v wrk >/dev/null 2>&1 || apt_install wrk
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --locked -p vigil-server --bin vigil

PID=
start() { # env assignments for the server
  env "$@" DATABASE_URL="$URL" VIGIL_ADDR="$ADDR" RUST_LOG=warn "$BIN/vigil" 2>>"$WORK/vigil-retention.log" &
  PID=$!
  wait_healthy "$ADDR"
}
stop() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=; fi
}
cleanup() {
  stop
  "${MARIADB[@]}" -e "DROP DATABASE IF EXISTS $DB" 2>/dev/null || true
}
trap cleanup EXIT

count() { "${MARIADB[@]}" -N -e "SELECT COUNT(*) FROM $DB.events"; }
single() { # NAME → "req/s p99"
  wrk -t2 -c64 -d"$DURATION" --latency -s scripts/wrk/post_event.lua "http://$ADDR" > "$WORK/retention-$1.txt"
  local rps p99
  rps=$(awk '/^Requests\/sec/ {print int($2)}' "$WORK/retention-$1.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/retention-$1.txt")
  echo "$rps req/s, p99 $p99"
}

log "backlog of $ROWS expired events"
"${MARIADB[@]}" -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB"
start
stop
started=$(date +%s)
for ((from = 1; from <= ROWS; from += 500000)); do
  to=$((from + 499999 > ROWS ? ROWS : from + 499999))
  "${MARIADB[@]}" "$DB" -e "
    INSERT INTO events (id, source, type, level, payload, occurred_at, created_at, request_id)
    SELECT seq, CONCAT('site-3/gateway-', seq % 17, '/sensor-', seq % 101),
           ELT(1 + seq % 4, 'GAS', 'SMOKE', 'DOOR', 'TEMP'),
           ELT(1 + (seq DIV 4) % 4, 'INFO', 'WARN', 'ERROR', 'CRITICAL'),
           CONCAT('{\"ppm\":', 100 + seq % 400, '}'), NULL,
           TIMESTAMPADD(MICROSECOND, seq * 20, UTC_TIMESTAMP(3) - INTERVAL 3 DAY), 'backlog'
    FROM seq_${from}_to_${to}"
done
"${MARIADB[@]}" "$DB" -e "UPDATE vigil_id_blocks SET next_id = $((ROWS + 1)) WHERE name = 'events'"
echo "backlog written in $(( $(date +%s) - started )) s: $(count) rows"

log "ingest without retention"
start
BEFORE=$(single before)
stop
echo "without retention: $BEFORE"

log "ingest while retention deletes the backlog"
start VIGIL_RETENTION=1d
sleep 1
rows_before=$(count)
DURING=$(single during)
rows_after=$(count)
deleted=$(curl -s "http://$ADDR/metrics" | awk '/^vigil_retention_deleted_events_total/ {print $2}')
stop
echo "while retention deletes: $DURING (retention deleted $deleted rows so far; table $rows_before → $rows_after rows during the wrk run)"

log "ingest without retention, again"
start
AFTER=$(single after)
stop
echo "without retention, again: $AFTER"

echo
echo "| run | single-event ingest |"
echo "| --- | --- |"
echo "| without retention | $BEFORE |"
echo "| while retention deletes a $ROWS-row backlog ($deleted rows deleted by the end of the run) | $DURING |"
echo "| without retention, again | $AFTER |"
