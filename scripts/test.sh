#!/usr/bin/env bash
# The test command: sets up .venv on a fresh machine, then runs the default (CPU) test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` or `-m gpu` on a GPU box.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
venv="${CFLNET_VENV:-.venv}"
export PATH="$(cd "$venv/bin" && pwd):$PATH"  # the installed `cflnet` commands, as for a user
status=0
"$venv/bin/python" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
