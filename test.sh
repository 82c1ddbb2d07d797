#!/usr/bin/env bash
# The test command: on a fresh machine with Python 3.11 it makes .venv, installs the project, builds the real
# Neo4j Community launcher (tests/neo4j_harness, needs Java 17 + Maven; that tier is skipped without them, and
# required when BLUEGREEN_REQUIRE_NEO4J=1 as in CI), then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
if command -v java >/dev/null && command -v mvn >/dev/null; then
  bash tests/neo4j_harness/build.sh
else
  echo "java/mvn not found: the real Neo4j Community tests will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
