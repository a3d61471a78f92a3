#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then run `cflnet demo` (forgeries generated,
# localised, and drawn on a contact sheet in ./cflnet-demo). Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
"${CFLNET_VENV:-.venv}/bin/cflnet" demo "$@"
