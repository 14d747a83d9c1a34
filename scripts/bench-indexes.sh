#!/usr/bin/env bash
# What each secondary index of `events` costs the database per inserted row, measured with
# the bulk-ingest baseline (`raw_insert`: 1,000-row INSERTs from one connection) into tables
# that differ only in their indexes, each in its own database (vigil_idx_*, dropped after):
#   pk            the primary key alone, without the payload CHECK
#   pk_check      the primary key and the CHECK (payload IS NULL OR JSON_VALID(payload))
#   level         pk_check + (level, id)
#   created_at    pk_check + (created_at, id)
#   type_level    pk_check + (type, level, id)
#   source_level  pk_check + (source, level, id)
#   all           the table as Vigil's migrations create it
# For each: rows/s and mariadbd's CPU (user + system, /proc/PID/stat) per inserted row, the
# median of ROUNDS runs taken in turn (so a noisy moment hurts every variant alike). Prints a
# Markdown table on stdout; `scripts/bench.sh` puts it in BENCHMARKS.md.
#
# Usage: scripts/bench-indexes.sh [RAW_INSERT_BINARY]. Settings: ROUNDS (3), SECONDS_EACH (8).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

RAW=${1:-${CARGO_TARGET_DIR:-target}/release/raw_insert}
ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-8}
VARIANTS="pk pk_check level created_at type_level source_level all"
MYSQL=(mysql -uroot -h127.0.0.1 -P3306 --batch --skip-column-names)
MARIADBD=$(pidof mariadbd mysqld | awk '{print $1}')
[ -n "$MARIADBD" ] || { echo "bench-indexes: no mariadbd process" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'for v in $VARIANTS; do "${MYSQL[@]}" -e "DROP DATABASE IF EXISTS vigil_idx_$v"; done; rm -rf "$WORK"' EXIT

# The indexes each variant drops from the migrated table (the last migration's names).
drops() {
  local all="events_level_id events_created_at_id events_type_level_id events_source_level_id"
  case $1 in
    pk | pk_check) echo "$all" ;;
    level) echo "${all/events_level_id/}" ;;
    created_at) echo "${all/events_created_at_id/}" ;;
    type_level) echo "${all/events_type_level_id/}" ;;
    source_level) echo "${all/events_source_level_id/}" ;;
    all) echo "" ;;
  esac
}

for v in $VARIANTS; do
  db=vigil_idx_$v
  "${MYSQL[@]}" -e "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db"
  cat migrations/mysql/0001_events.sql migrations/mysql/0002_list_indexes.sql | "${MYSQL[@]}" "$db"
  for index in $(drops "$v"); do
    "${MYSQL[@]}" "$db" -e "ALTER TABLE events DROP INDEX $index"
  done
  [ "$v" != pk ] || "${MYSQL[@]}" "$db" -e "ALTER TABLE events DROP CONSTRAINT events_payload_is_json"
done

TICK=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
  for v in $VARIANTS; do
    before=$(cpu_ticks "$MARIADBD")
    line=$("$RAW" "mysql://root@127.0.0.1:3306/vigil_idx_$v" 1000 "$SECONDS_EACH")
    after=$(cpu_ticks "$MARIADBD")
    rows=$(sed -E 's/.*: ([0-9]+) rows in.*/\1/' <<<"$line")
    rate=$(sed -E 's/.* = ([0-9]+) rows\/s/\1/' <<<"$line")
    awk -v d=$((after - before)) -v t="$TICK" -v r="$rows" -v rate="$rate" -v v="$v" \
      'BEGIN { printf "%s %s %.2f\n", v, rate, d / t * 1e6 / r }' >>"$WORK/runs"
  done
done

median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
echo "| table | rows/s | mariadbd CPU µs per row | over pk_check, µs per row |"
echo "| --- | --- | --- | --- |"
base=$(awk '$1 == "pk_check" {print $3}' "$WORK/runs" | median)
for v in $VARIANTS; do
  rate=$(awk -v v="$v" '$1 == v {print $2}' "$WORK/runs" | median)
  cpu=$(awk -v v="$v" '$1 == v {print $3}' "$WORK/runs" | median)
  extra=$(awk -v c="$cpu" -v b="$base" 'BEGIN { printf "%+.1f", c - b }')
  echo "| $v | $rate | $cpu | $extra |"
done
