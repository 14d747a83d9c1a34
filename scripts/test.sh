#!/usr/bin/env bash
# Vigil's whole test suite, as CI runs it (`.ci/run` calls this and nothing else).
#
# 1. makes sure MariaDB (127.0.0.1:3306, root, empty password) and Redis (127.0.0.1:6379)
#    are installed and running, starting them if they are down;
# 2. checks formatting and lints;
# 3. runs every test (unit, integration against the real services) in parallel;
# 4. runs the criterion benches in a quick mode and prints their figures.
#
# Stages can be skipped for a quick local loop: SKIP_LINT=1, SKIP_BENCH=1.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_mariadb() {
  if mariadb-admin --host=127.0.0.1 --port=3306 --user=root ping >/dev/null 2>&1; then
    return
  fi
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server mariadb-client
  log "starting MariaDB"
  as_root mkdir -p /run/mysqld
  as_root chown mysql:mysql /run/mysqld
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  for _ in $(seq 1 120); do
    mariadb-admin --host=127.0.0.1 --port=3306 --user=root ping >/dev/null 2>&1 && return
    sleep 0.5
  done
  echo "MariaDB did not come up on 127.0.0.1:3306" >&2
  exit 1
}

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    return
  fi
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 60); do
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return
    sleep 0.5
  done
  echo "Redis did not come up on 127.0.0.1:6379" >&2
  exit 1
}

log "services"
ensure_mariadb
ensure_redis
# Tests that need other server settings start a private mariadbd from these tools.
command -v mariadb-install-db >/dev/null 2>&1 || apt_install mariadb-server
echo "MariaDB: $(mariadb --host=127.0.0.1 --user=root -N -e 'SELECT VERSION()')"
echo "Redis:   $(redis-cli -h 127.0.0.1 -p 6379 INFO server | tr -d '\r' | grep '^redis_version:')"

if [ "${SKIP_LINT:-0}" != 1 ]; then
  log "format and lints"
  cargo fmt --all --check
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

log "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  # nextest does not run doctests.
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  log "benchmarks (quick mode: short warm-up and measurement; figures are indicative)"
  cargo bench -p vigil-benches --locked -- --warm-up-time 1 --measurement-time 3 --noplot 2>&1 \
    | grep -Ev '^(Gnuplot|Benchmarking .*: (Warming|Collecting|Analyzing))'
fi

log "all stages passed"
