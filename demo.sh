#!/usr/bin/env bash
# The demo command: on a fresh machine with Python 3.11 it makes .venv, installs the project, writes demo
# snapshots for three customers and starts `dagster dev` (UI on http://127.0.0.1:3000) on the embedded target.
# Extra arguments go to `bluegreen demo` (e.g. --port 3001 --people 100000).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/bluegreen demo "$@"
