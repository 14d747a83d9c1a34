# Shell helpers shared by scripts/test.sh and scripts/bench.sh (sourced, not run): logging,
# apt installs, and starting the machine's MariaDB (127.0.0.1:3306, root, empty password)
# and Redis (127.0.0.1:6379) when they are down: the shared servers every test and benchmark
# uses (tests that must kill a server start private ones of their own).

log() { printf '\n==> %s\n' "$*"; }
# A process's CPU time in clock ticks: user + system (fields 14 and 15 of /proc/PID/stat,
# counted after the parenthesised command name).
cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
# Redis's work so far (INFO stats): "commands_processed bytes_in bytes_out reads writes", the
# last two the reads from and writes to client sockets its event loop made.
redis_counters() {
  redis-cli -h 127.0.0.1 INFO stats | tr -d '\r' | awk -F: '/^total_commands_processed:/ {c = $2}
    /^total_net_input_bytes:/ {i = $2} /^total_net_output_bytes:/ {o = $2}
    /^total_reads_processed:/ {r = $2} /^total_writes_processed:/ {w = $2} END {print c, i, o, r + 0, w + 0}'
}

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

# The tools of the private Galera cluster and the HAProxy in front of it (vigil-testkit's galera
# and haproxy modules): the Galera 4 provider, rsync for the state transfers between nodes, and
# haproxy. mariadb-server (the nodes themselves, wsrep_sst_rsync) is installed with MariaDB.
ensure_galera_tools() {
  local missing=()
  [ -e /usr/lib/galera/libgalera_smm.so ] || missing+=(galera-4)
  command -v rsync >/dev/null 2>&1 || missing+=(rsync)
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
  if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
  fi
}

# Waits until a Vigil on ADDR answers /api/health (10 s at most); exits if it never does.
wait_healthy() {
  for _ in $(seq 1 100); do
    curl -sf "http://$1/api/health" >/dev/null && return
    sleep 0.1
  done
  echo "vigil did not start on $1" >&2
  exit 1
}
