#!/usr/bin/env bash
# What producers see when a database or Redis process dies under load, measured by the
# high-availability tests themselves (crates/vigil-server/tests/api: store_failure, galera,
# redis_ha), each on private servers it starts on loopback ports:
#   - a private mariadbd SIGKILLed under 16 posters and restarted 45 s later;
#   - a 3-node Galera cluster behind HAProxy with two Vigil instances, the active node killed;
#   - the same with one instance on a node directly, that node killed;
#   - Redis Sentinel: the primary killed, a replica promoted.
# Each test prints one `HA {json}` line (producers::report_failover); this script collects them
# into $FAILOVER_OUT (JSON lines) and prints a Markdown table that scripts/bench.sh puts in
# BENCHMARKS.md. Run alone: `bash scripts/bench-failover.sh` (about two minutes after the
# test build).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

WORK=${BENCH_DIR:-target/bench}
OUT=${FAILOVER_OUT:-$WORK/failover.jsonl}
mkdir -p "$WORK"
ensure_mariadb
ensure_redis
ensure_galera_tools

# One at a time: each starts its own servers, and the timings are what is measured.
cargo nextest run --workspace --locked --no-capture --test-threads 1 \
  -E 'test(a_killed_database) | test(galera::two_instances) | test(galera::an_instance) | test(redis_ha::sentinel)' \
  > "$WORK/failover.log" 2>&1 || { tail -50 "$WORK/failover.log"; exit 1; }
grep '^HA ' "$WORK/failover.log" | cut -c4- > "$OUT"

python3 - "$OUT" <<'EOF'
import json, sys
print("| what died | first 201 again | slowest answer | acknowledged | refused (503) | unknown (504), of them stored |")
print("| --- | --- | --- | --- | --- | --- |")
for line in open(sys.argv[1]):
    r = json.loads(line)
    print("| %s | %.1f s | %.1f s | %d events | %d requests | %d, %d |" % (
        r["scenario"], r["first_201_after_s"], r["slowest_answer_s"], r["acknowledged_events"],
        r["refused_requests"], r["unknown_requests"], r["unknown_stored"]))
EOF
