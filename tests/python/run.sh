#!/usr/bin/env bash
# Runs the differential MLflow-client suite: a venv with the pinned client (inside the clone,
# under target/), the runlog debug binary, then pytest. Arguments are passed to pytest.
#   RUNLOG_PY_VENV  the venv to create or reuse (default target/python-venv)
#   PYTHON          the interpreter that creates it (default python3.11)
#   RUNLOG_BIN      a runlog binary to test; when set, nothing is built
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

venv="${RUNLOG_PY_VENV:-target/python-venv}"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3.11}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

if [ -z "${RUNLOG_BIN:-}" ]; then
    cargo build --quiet
fi
exec "$venv/bin/python" -m pytest tests/python "$@"
