#!/usr/bin/env bash
# Runs the differential MLflow-client suite: a venv with the pinned client (inside the clone,
# under target/), the runlog debug binary and the Python package (debug build, for the
# in-process runlog:/// subject), then pytest. Arguments are passed to pytest.
#   RUNLOG_PY_VENV  the venv to create or reuse (default target/python-venv)
#   PYTHON          the interpreter that creates it (default python3.11)
#   RUNLOG_BIN      a runlog binary to test; when set, nothing is built (the venv must then
#                   hold the package already)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

venv="${RUNLOG_PY_VENV:-target/python-venv}"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3.11}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

if [ -z "${RUNLOG_BIN:-}" ]; then
    cargo build --quiet
    # maturin, numpy and pyarrow, pinned; cargo's fingerprints make a repeated build cheap.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r python/tests/requirements.txt
    venv_abs="$(cd "$venv" && pwd)"
    (cd python && VIRTUAL_ENV="$venv_abs" "$venv_abs/bin/maturin" develop --quiet)
fi
exec "$venv/bin/python" -m pytest tests/python "$@"
