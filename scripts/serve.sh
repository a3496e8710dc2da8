#!/usr/bin/env bash
# Run a registry from this checkout: `moorage serve` from a virtual environment in .venv, made
# on the first run (with moorage installed into it, editable).  Arguments go to `moorage serve`:
#
#   bash scripts/serve.sh                          # 0.0.0.0:5000, data in ./data
#   bash scripts/serve.sh --addr 127.0.0.1:5000 --data /srv/registry
#
# Works with the system Python of Debian 12/13 and Ubuntu (see scripts/venv.sh); Python 3.11-3.13.
# Afterwards every `moorage` command is .venv/bin/moorage (or `. .venv/bin/activate`).
# MOORAGE_VENV: another place for the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/venv.sh
. scripts/venv.sh
moorage_venv "${MOORAGE_VENV:-.venv}" .
exec "$(dirname "$PY")/moorage" serve "$@"
