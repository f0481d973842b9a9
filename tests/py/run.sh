#!/usr/bin/env bash
# Runs the py-consul end-to-end suite against a built cairn binary.
#
#   CAIRN_BIN       agent binary (default: target/debug/cairn under the repo root)
#   CAIRN_PY_VENV   virtualenv to create/reuse (default: /tmp/cairn-py-venv)
#
# Extra arguments are passed on to pytest. Exits with pytest's exit code.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
venv="${CAIRN_PY_VENV:-/tmp/cairn-py-venv}"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

cd "$repo_root"
export PYTHONDONTWRITEBYTECODE=1
status=0
"$venv/bin/python" -m pytest tests/py "$@" || status=$?
exit "$status"
