#!/usr/bin/env bash
# The unit tier on Python 3.13 (Debian 13's python3), in a venv of its own (.venv-py313), so CI
# tests the newest supported Python as well as the one the full suite runs on (3.11).
#   bash scripts/test-py313.sh [pytest args...]
#   bash scripts/test-py313.sh --prepare     # only make the venv (.ci/run does it meanwhile)
# The interpreter: $PYTHON313, else pyenv's 3.13.x, else python3.13 on PATH, else python3 when it
# is 3.13.  With none on the machine it skips (exit 0) and says so; it never downloads a Python.
set -euo pipefail
cd "$(dirname "$0")/.."

find_py313() {
    local c
    if [ -n "${PYTHON313:-}" ]; then echo "$PYTHON313"; return 0; fi
    for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python; do
        if [ -x "$c" ]; then echo "$c"; return 0; fi
    done
    for c in python3.13 python3; do
        if command -v "$c" >/dev/null 2>&1 \
            && "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 13) else 1)' 2>/dev/null; then
            command -v "$c"; return 0
        fi
    done
    return 1
}

if ! py=$(find_py313); then
    echo "scripts/test-py313.sh: SKIPPED: no Python 3.13 on this machine (pyenv 3.13.x, python3.13 or a 3.13 python3); set PYTHON313=/path/to/python3.13 to run the unit tier on it" >&2
    exit 0
fi
start=$(date +%s)
# shellcheck source=scripts/venv.sh
. scripts/venv.sh
PYTHON="$py" moorage_venv "${MOORAGE_VENV313:-.venv-py313}" '.[test]'
if [ "${1:-}" = "--prepare" ]; then
    echo "scripts/test-py313.sh: venv ready in $(( $(date +%s) - start )) s" >&2
    exit 0
fi
echo "scripts/test-py313.sh: unit tier on $("$PY" -V 2>&1) ($py)" >&2
set +e
"$PY" -m pytest -q -p no:cacheprovider -m unit -n "${MOORAGE_TEST_WORKERS:-2}" "$@"
rc=$?
set -e
echo "scripts/test-py313.sh: Python 3.13 unit tier: exit $rc in $(( $(date +%s) - start )) s (venv + tests)" >&2
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$rc"
