#!/usr/bin/env bash
# Makes docs/console.png, the README's picture of the console: the console test
# (crates/vigil-server/tests/api/console.rs) runs against a real embedded-mode server, posts a
# minute of events of every level while the page is open in headless Chromium, and saves what
# the page shows. Needs Debian's chromium (scripts/test.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
VIGIL_CONSOLE_SCREENSHOT="$PWD/docs/console.png" cargo nextest run --locked -p vigil-server \
  --test api --no-capture console::the_console_shows_the_newest_events_then_live_ones_filters_and_pauses
echo "wrote docs/console.png"
