#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install cflnet-sdk with the given extras.
# Usage: scripts/setup.sh [EXTRAS]   (default: dev = everything the test suite needs on a CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CFLNET_VENV:-.venv}"
extras="${1:-dev}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e ".[$extras]"
