#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine, then runs it.
#   bash scripts/test.sh [pytest args...]
# Installs: Python deps (pip, editable), real clients (skopeo, podman, docker-registry ...),
# real services (PostgreSQL, Ceph RGW). The tests start and stop the services themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/install-clients.sh
[ -f .ci/install-services.sh ] && bash .ci/install-services.sh
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

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
python3 -m pytest -ra -q -p no:cacheprovider --durations=15 "${xdist[@]}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
