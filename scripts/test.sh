#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine, then runs it.
#   bash scripts/test.sh [pytest args...]
# Installs: Python deps (pip, editable; into .venv where the system Python is externally managed,
# as on Debian 12/13 and Ubuntu: scripts/venv.sh), real clients (skopeo, podman, docker-registry ...),
# real services (PostgreSQL, Ceph RGW). The tests start and stop the services themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/install-clients.sh
[ -f .ci/install-services.sh ] && bash .ci/install-services.sh
# shellcheck source=scripts/venv.sh
. scripts/venv.sh
if moorage_externally_managed "${PYTHON:-python3}"; then
    # Debian/Ubuntu's system Python refuses pip installs (PEP 668): use .venv, as scripts/serve.sh does.
    moorage_venv "${MOORAGE_VENV:-.venv}" '.[test]'
else
    PY="${PYTHON:-python3}"  # a Python of its own (pyenv, a venv, CI): installed into it, as before
    moorage_check_python "$PY"
    "$PY" -m pip install -q --disable-pip-version-check -e '.[test]'
fi

# Everything is installed above: a client, service or module that is missing now must fail
# the run, not skip its tests (tests/support/require.py).
export MOORAGE_REQUIRE_CLIENTS="${MOORAGE_REQUIRE_CLIENTS:-1}"
export MOORAGE_TEST_BACKENDS="${MOORAGE_TEST_BACKENDS:-fs-sqlite,s3-postgres}"
set +e
# Two pytest workers (pytest-xdist; MOORAGE_TEST_WORKERS=0 for one process): most of the suite
# waits on servers and clients, so two workers on two cores halve the wall time.  A module stays
# on one worker and the real-client journeys share one (tests/conftest.py).
workers="${MOORAGE_TEST_WORKERS:-2}"
xdist=()
if [ "$workers" != "0" ]; then xdist=(-n "$workers" --dist loadgroup); fi
"$PY" -m pytest -ra -q -p no:cacheprovider --durations=15 "${xdist[@]}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
