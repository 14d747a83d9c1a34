#!/usr/bin/env bash
# openapi-spec-validator on crates/vigil-server/openapi.json, then schemathesis against a
# running Vigil: every operation of the document,
# all checks (no 5xx, responses and headers conform to the documented schemas, statuses are
# documented, invalid data is refused, valid data accepted, undocumented methods get 405),
# bounded in examples and time. Fails on any finding. scripts/schemathesis.toml widens two
# checks where the contract refuses what no schema can express (see there); the stateful
# phase is off: its inferred links feed integer ids into the X-Request-Id header parameter,
# which the HTTP client then refuses to send (a schemathesis error, not a server finding).
# /ws and /api/events/stream are left out: a 101 upgrade is not something an HTTP fuzzer can
# follow, and an event stream's 200 is a response that never ends; their refusals are
# covered by tests/api/hostile.rs, tests/api/openapi.rs and tests/api/sse.rs.
#
# Builds the `vigil` binary (dev profile), starts it on a free loopback port against a fresh
# MariaDB database, runs schemathesis (installed once into a venv under ~/.cache), stops the
# server and drops the database. Settings: ST_MAX_EXAMPLES (default 40 per operation),
# ST_MAX_TIME (default 120 s), ST_SEED (default random; printed for a rerun).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VIGIL_SCHEMATHESIS_VENV:-$HOME/.cache/vigil/schemathesis-venv}"
SCHEMATHESIS_VERSION="4.32.5"
VALIDATOR_VERSION="0.9.0"
if [ ! -x "$VENV/bin/st" ] || ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
if ! "$VENV/bin/pip" show openapi-spec-validator 2>/dev/null | grep -q "^Version: $VALIDATOR_VERSION\$"; then
  "$VENV/bin/pip" install -q "openapi-spec-validator==$VALIDATOR_VERSION"
fi

# The document itself first: valid OpenAPI 3.1, as any tool that reads it expects.
"$VENV/bin/openapi-spec-validator" crates/vigil-server/openapi.json

TARGET="${CARGO_TARGET_DIR:-target}"
# --workspace: the same dependency features as the test stage's build, so nothing is rebuilt.
cargo build -q --locked --workspace --bin vigil
VIGIL="$TARGET/debug/vigil"

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
DB="vigil_schemathesis_$$_$RANDOM"
MARIADB=(mariadb --host=127.0.0.1 --port=3306 --user=root)
"${MARIADB[@]}" -e "CREATE DATABASE \`$DB\`"
LOG="$(mktemp -t vigil-schemathesis.XXXXXX.log)"
SERVER_PID=""

cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  "${MARIADB[@]}" -e "DROP DATABASE IF EXISTS \`$DB\`" || true
}
trap cleanup EXIT

# Tokens are on, as a deployment runs: schemathesis authenticates with the one token (in both
# lists, so one credential reaches every operation) and its ST401 checks see that a request
# without it, or with a made-up one, is refused.
TOKEN="st-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
VIGIL_ADDR="127.0.0.1:$PORT" DATABASE_URL="mysql://root@127.0.0.1:3306/$DB" \
  VIGIL_INGEST_TOKENS="$TOKEN" VIGIL_READ_TOKENS="$TOKEN" VIGIL_SHUTDOWN_TIMEOUT_S=5 RUST_LOG=warn "$VIGIL" >"$LOG" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/api/health" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$LOG"; echo "vigil exited at start" >&2; exit 1; }
  sleep 0.1
done

SEED="${ST_SEED:-$RANDOM$RANDOM}"
echo "schemathesis against 127.0.0.1:$PORT (database $DB, seed $SEED)"
status=0
PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=schemathesis_hooks \
  "$VENV/bin/st" --config-file scripts/schemathesis.toml run "http://127.0.0.1:$PORT/api/openapi.json" \
    --checks all \
    --phases examples,coverage,fuzzing \
    --max-examples "${ST_MAX_EXAMPLES:-40}" \
    --max-time "${ST_MAX_TIME:-120}" \
    --seed "$SEED" \
    --header "Authorization: Bearer $TOKEN" \
    --request-timeout 10 \
    --generation-database none \
    --no-color \
    --exclude-path /ws \
    --exclude-path /api/events/stream \
  || status=$?

if [ "$status" -ne 0 ]; then
  echo "schemathesis found problems (seed $SEED); server log: $LOG" >&2
  tail -n 30 "$LOG" >&2
  exit "$status"
fi
rm -f "$LOG"
