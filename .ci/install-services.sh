#!/usr/bin/env bash
# Install what the `services` tests (tests/support/ceph.py, postgres.py) need:
# a single-node Ceph (mon + OSD + RADOS Gateway, CLI tools) and PostgreSQL 15.
# Idempotent and quiet: exits at once when everything is installed; otherwise
# installs only the missing packages and prints one line (full apt output only
# on failure).  The tests start their own throwaway daemons; no system
# service is configured or needed.
set -euo pipefail

# ceph-common: ceph, rados, radosgw-admin, ceph-authtool; ceph-base (pulled in
# by ceph-mon/ceph-osd): monmaptool and the RADOS object classes (cls_rgw...).
# nginx: the load balancer of tests/test_replicas.py (run by the tests, never as a system service)
# slapd + ldap-utils: the OpenLDAP directory of tests/test_auth_ldap.py (tests/support/slapd.py
# starts its own throwaway server; Debian's default one is not used)
PKGS=(ceph-mon ceph-osd radosgw ceph-common postgresql-15 nginx slapd ldap-utils)

missing=()
for p in "${PKGS[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$p")
    fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo

log=$(mktemp)
trap 'rm -f "$log"' EXIT
fail() {
    echo "install-services: $1 failed:" >&2
    cat "$log" >&2
    exit 1
}

echo "install-services: installing ${missing[*]}"

# Refresh the package lists only if a package is unknown (fresh image).
for p in "${missing[@]}"; do
    if ! apt-cache show "$p" >/dev/null 2>&1; then
        $SUDO apt-get update -qq >"$log" 2>&1 || fail "apt-get update"
        break
    fi
done

# Debian's postgresql-common would create and start a "main" cluster on 5432;
# the tests run their own, so do not create it.
if [[ " ${missing[*]} " == *" postgresql-15 "* ]]; then
    $SUDO mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/moorage-tests.conf >/dev/null
fi

$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" >"$log" 2>&1 || fail "apt-get install"
