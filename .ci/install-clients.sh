#!/usr/bin/env bash
# Install the real registry clients the `clients` tests drive (see
# tests/support/clients.py and tests/support/fixtures.py):
#   skopeo          -- copy/inspect/list-tags/delete/login
#   podman          -- `podman system service` = Docker API for the docker CLI
#   docker-registry -- CNCF Distribution 2.8.2, the reference registry
#   busybox-static  -- /bin/busybox for the rootfs tar fed to `docker image import`
#   runc            -- OCI runtime podman runs containers with (tests/test_image.py)
#   mmdebstrap      -- makes the image's Debian base offline (scripts/build-image.sh)
#   chromium        -- headless browser for the web UI tests (driven by Playwright's
#                      Python package with executable_path=/usr/bin/chromium)
#   docker.io       -- only if no `docker` CLI is on PATH (the machine image
#                      ships a client-only /usr/local/bin/docker)
# Root as root, vfs storage and no containers run, so uidmap, slirp4netns and
# fuse-overlayfs are not needed. Idempotent and quiet: apt is not touched at
# all when everything is present; `apt-get update` runs only when a package
# is unknown to apt.
set -euo pipefail

PKGS=(skopeo podman docker-registry busybox-static runc mmdebstrap chromium)
if ! command -v docker >/dev/null 2>&1; then
    PKGS+=(docker.io)
fi

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-clients: installing ${missing[*]}" >&2
need_update=0
for p in "${missing[@]}"; do
    if ! apt-cache show "$p" >/dev/null 2>&1; then
        need_update=1
    fi
done
if [ "$need_update" -eq 1 ]; then
    $SUDO apt-get update -qq >/dev/null
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
