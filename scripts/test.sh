#!/usr/bin/env bash
# Vigil's whole test suite, as CI runs it (`.ci/run` calls this and nothing else).
#
# 1. makes sure MariaDB (127.0.0.1:3306, root, empty password) and Redis (127.0.0.1:6379)
#    are installed and running, starting them if they are down, and that Chromium (for the
#    browser check of /ws) and the private Galera cluster's tools (galera-4, rsync, haproxy)
#    are installed;
# 2. checks formatting and lints;
# 3. runs every test (unit, integration against the real services) in parallel;
# 4. fuzzes the parsers for a minute (corpus + mutations, on stable: see crates/vigil-core/tests/fuzz.rs);
# 5. validates the OpenAPI document (openapi-spec-validator) and runs schemathesis against a
#    running server (scripts/schemathesis.sh, about 2.5 minutes);
# 6. runs the benches: the instruction-count gate (benches/benches/instructions.rs: fails when
#    a hot path costs more than 5 % over benches/instructions-baseline.json) and the criterion
#    benches in a quick mode, whose figures it prints.
#
# The hostile-input corpus (crates/vigil-server/tests/api/hostile.rs) runs with the tests.
# Stages can be skipped for a quick local loop: SKIP_LINT=1, SKIP_SOAK=1, SKIP_FUZZ=1,
# SKIP_SCHEMATHESIS=1, SKIP_BENCH=1.
set -euo pipefail
cd "$(dirname "$0")/.."

# log, apt_install, ensure_mariadb, ensure_redis, ensure_galera_tools (shared with
# scripts/bench.sh).
source scripts/services.sh

log "services"
ensure_mariadb
ensure_redis
# Tests that need other server settings start a private mariadbd from these tools.
command -v mariadb-install-db >/dev/null 2>&1 || apt_install mariadb-server
# The browser check of /ws runs Debian's headless Chromium.
command -v chromium >/dev/null 2>&1 || apt_install chromium
# The Galera tests start a private three-node cluster with HAProxy in front of it.
ensure_galera_tools
# The instruction-count gate runs the hot paths under valgrind.
command -v valgrind >/dev/null 2>&1 || apt_install valgrind
echo "MariaDB: $(mariadb --host=127.0.0.1 --user=root -N -e 'SELECT VERSION()')"
echo "Redis:   $(redis-cli -h 127.0.0.1 -p 6379 INFO server | tr -d '\r' | grep '^redis_version:')"

if [ "${SKIP_LINT:-0}" != 1 ]; then
  log "format and lints"
  cargo fmt --all --check
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

# Every cargo command below selects the whole workspace (then filters tests or binaries):
# selecting one package resolves its dependencies' features differently and rebuilds them all.
log "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  # nextest does not run doctests.
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

if [ "${SKIP_SOAK:-0}" != 1 ]; then
  log "soak: the binary at a steady rate with websocket clients, ${VIGIL_SOAK_SECONDS:-120} s (memory, descriptors, nothing lost)"
  VIGIL_SOAK_SECONDS="${VIGIL_SOAK_SECONDS:-120}" \
    cargo nextest run --workspace --locked --run-ignored only -E 'test(soak)' --no-capture
fi

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
  log "fuzz smoke run (three targets, ${VIGIL_FUZZ_SECONDS:-20} s each)"
  VIGIL_FUZZ_SECONDS="${VIGIL_FUZZ_SECONDS:-20}" \
    cargo test --workspace --locked --test fuzz -- --nocapture --test-threads 1
fi

if [ "${SKIP_SCHEMATHESIS:-0}" != 1 ]; then
  log "schemathesis against a running server"
  bash scripts/schemathesis.sh
fi

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  # `instructions` is the gate (its table says the verdict); the others are criterion's, in a
  # quick mode: short warm-up and measurement, figures indicative.
  log "benchmarks: the instruction-count gate and criterion (quick mode)"
  cargo bench -p vigil-benches --locked -- --warm-up-time 1 --measurement-time 3 --noplot 2>&1 \
    | grep -Ev '^(Gnuplot|Benchmarking .*: (Warming|Collecting|Analyzing))'
fi

log "all stages passed"
