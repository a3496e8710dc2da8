#!/usr/bin/env bash
# Build the Moorage container image and tag it localhost/moorage:latest.
#
#   bash scripts/build-image.sh
#
# Works on a machine that cannot pull images: when the Dockerfile's default base
# (python:3.11-slim-bookworm) is neither present nor pullable, it makes a minimal Debian
# bookworm root filesystem with Debian's python3 using mmdebstrap (from the apt mirror),
# imports it as localhost/moorage-base:<hash> and passes it as the BASE_IMAGE build argument.
# The rootfs tar is cached (MOORAGE_IMAGE_CACHE, default ~/.cache/moorage-image), so only the
# first build pays for it.  The Python wheels (moorage and its pinned dependencies) are built
# on the host into .build/wheels, so the image build needs no network either.
#
# Environment:
#   MOORAGE_BUILD_TOOL   podman (default when installed) or docker
#   MOORAGE_IMAGE        tag to build (default localhost/moorage:latest)
#   MOORAGE_IMAGE_EXTRAS the extras installed in the image (default s3,postgres,ldap,oidc: what a
#                        scale-out or directory-backed deployment needs; "all" adds image insight)
#   MOORAGE_BASE_IMAGE   use this base and skip the pull/mmdebstrap logic
#   MOORAGE_IMAGE_CACHE  where the base rootfs tar is kept
#   MOORAGE_DEBIAN_MIRROR  apt mirror for mmdebstrap (default: the host's, else deb.debian.org)
# podman honours CONTAINERS_CONF / CONTAINERS_STORAGE_CONF, docker honours DOCKER_HOST.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOL="${MOORAGE_BUILD_TOOL:-}"
if [ -z "$TOOL" ]; then
    if command -v podman >/dev/null 2>&1; then TOOL=podman; else TOOL=docker; fi
fi
IMAGE="${MOORAGE_IMAGE:-localhost/moorage:latest}"
EXTRAS="${MOORAGE_IMAGE_EXTRAS:-s3,postgres,ldap,oidc}"
# Every name must be one of pyproject.toml's run-time extras (pip only warns about an unknown one,
# and the image would then lack the feature): say which, in one line, before anything is built.
if ! bad=$(python3 - "$EXTRAS" <<'PY'
import sys, tomllib
extras = set(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]) - {"test", "bench"}
wanted = [e.strip() for e in sys.argv[1].split(",")]
unknown = [e for e in wanted if e not in extras]
if unknown or not all(wanted):
    print(f"MOORAGE_IMAGE_EXTRAS={sys.argv[1]!r}: {', '.join(map(repr, unknown)) or 'an empty name'} "
          f"is not an extra the image can have (one or more of: {', '.join(sorted(extras))})")
    sys.exit(1)
PY
); then
    echo "build-image: $bad" >&2
    exit 2
fi
DEFAULT_BASE="python:3.11-slim-bookworm"
CACHE="${MOORAGE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/moorage-image}"
say() { echo "build-image: $*" >&2; }
t0=$(date +%s)

image_exists() {
    if [ "$TOOL" = podman ]; then podman image exists "$1"; else docker image inspect "$1" >/dev/null 2>&1; fi
}

# -- 1. the base image ----------------------------------------------------------------------
debian_base() {
    # Debian's python3 + venv on the smallest Debian there is ("essential": no apt).  perl and
    # usrmerge come in only as install-time dependencies and are purged; docs/locales/gconv
    # are never unpacked.
    local pkgs="python3,python3-venv,passwd,ca-certificates,libsqlite3-0,libstdc++6"
    local key
    key=$(printf '%s|%s' "$pkgs" "v2" | sha256sum | cut -c1-12)
    local tar="$CACHE/debian-bookworm-python3-$key.tar"
    local name="localhost/moorage-base:bookworm-$key"
    if image_exists "$name"; then
        say "base $name (already imported)"
        BASE="$name"
        return
    fi
    if [ ! -s "$tar" ]; then
        command -v mmdebstrap >/dev/null 2>&1 || { say "mmdebstrap is not installed (apt-get install mmdebstrap)"; exit 1; }
        mkdir -p "$CACHE"
        # mmdebstrap picks its output format from the name's extension: keep ".tar".
        local partial="${tar%.tar}.partial.tar"
        rm -rf "$partial"
        local mirror="${MOORAGE_DEBIAN_MIRROR:-}"
        if [ -z "$mirror" ]; then
            mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1 || true)
            mirror="${mirror:-http://deb.debian.org/debian}"
        fi
        say "making a Debian bookworm base with mmdebstrap from $mirror (about a minute)"
        mmdebstrap --quiet --variant=essential --include="$pkgs" \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/info/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*' \
            --customize-hook='chroot "$1" dpkg --purge --force-depends usrmerge perl libperl5.36 perl-modules-5.36 libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl >/dev/null 2>&1' \
            --customize-hook='rm -rf "$1"/var/cache/* "$1"/var/lib/apt/lists/* "$1"/var/log/*' \
            bookworm "$partial" "$mirror"
        mv "$partial" "$tar"
    fi
    say "importing $tar as $name"
    "$TOOL" import --change 'CMD ["/bin/bash"]' "$tar" "$name" >/dev/null
    BASE="$name"
}

if [ -n "${MOORAGE_BASE_IMAGE:-}" ]; then
    BASE="$MOORAGE_BASE_IMAGE"
elif image_exists "$DEFAULT_BASE" || "$TOOL" pull -q "$DEFAULT_BASE" >/dev/null 2>&1; then
    BASE="$DEFAULT_BASE"
else
    say "$DEFAULT_BASE cannot be pulled; building a base instead"
    debian_base
fi

# -- 2. wheels ------------------------------------------------------------------------------
strip_wheels() {
    # The manylinux wheels' extension modules carry their debug symbols (uvloop's loop.so is
    # 13 MB, 1.6 MB stripped; zstandard's, asyncpg's alike): strip them on the host, where
    # binutils are, and rewrite each wheel's RECORD so pip accepts it.  The image has no
    # compiler or binutils.  Without strip the wheels are used as they are.
    # (.stripped records the wheels stripped already, by their hash: another extras selection
    # adds wheels to the same directory, and only the new ones are stripped)
    command -v strip >/dev/null 2>&1 || { say "strip not found: wheels keep their debug symbols"; return 0; }
    python3 - "$1" <<'PY'
import base64, csv, hashlib, io, os, subprocess, sys, tempfile, zipfile
from pathlib import Path

def digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

before = after = 0
done_list = Path(sys.argv[1]) / ".stripped"  # "<sha256 of a stripped wheel> <name>" lines
done = dict(line.split()[::-1] for line in done_list.read_text().splitlines()) if done_list.exists() else {}
for whl in sorted(Path(sys.argv[1]).glob("*.whl")):
    if whl.name.startswith("moorage-") or done.get(whl.name) == hashlib.sha256(whl.read_bytes()).hexdigest():
        continue
    with zipfile.ZipFile(whl) as zf:
        infos = zf.infolist()
        if not any(i.filename.endswith(".so") or ".so." in i.filename for i in infos):
            continue
        files = {i.filename: zf.read(i) for i in infos}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            if not (name.endswith(".so") or ".so." in name):
                continue
            so = Path(tmp) / "x.so"
            so.write_bytes(data)
            if subprocess.run(["strip", "--strip-unneeded", str(so)], capture_output=True).returncode == 0:
                files[name] = so.read_bytes()
            before += len(data)
            after += len(files[name])
    record = next(n for n in files if n.endswith(".dist-info/RECORD"))
    buf = io.StringIO()
    rows = csv.writer(buf, lineterminator="\n")
    rows.writerows([n, digest(d), len(d)] for n, d in files.items() if n != record)
    rows.writerow([record, "", ""])
    files[record] = buf.getvalue().encode()
    partial = whl.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out:
        for info in infos:
            out.writestr(info, files[info.filename], compress_type=zipfile.ZIP_DEFLATED)
    os.replace(partial, whl)
for whl in Path(sys.argv[1]).glob("*.whl"):
    if not whl.name.startswith("moorage-"):
        done[whl.name] = hashlib.sha256(whl.read_bytes()).hexdigest()
done_list.write_text("".join(f"{h} {n}\n" for n, h in sorted(done.items())))
print(f"build-image: stripped extension modules: {before >> 20} MiB -> {after >> 20} MiB", file=sys.stderr)
PY
}

# Built for the base's Python (3.11, glibc): the host must run the same minor version.
if python3 -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
    # Dependency wheels are rebuilt only when pyproject.toml changes (the directory is emptied
    # then); another extras selection adds its wheels to the same directory; moorage's wheel is
    # built every time.  (strip-v2: wheels made before they were stripped are rebuilt)
    project_key=$( (cat pyproject.toml; echo "strip-v2") | sha256sum | cut -c1-16)
    deps_key=$(echo "$project_key extras=$EXTRAS" | sha256sum | cut -c1-16)
    if [ ! -f ".build/wheels/.project-$project_key" ]; then
        rm -rf .build/wheels
        mkdir -p .build/wheels
        touch ".build/wheels/.project-$project_key"
    fi
    rm -f .build/wheels/moorage-*.whl
    if [ -f ".build/wheels/.deps-$deps_key" ]; then
        say "building the moorage wheel (dependency wheels cached in .build/wheels)"
        python3 -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir .build/wheels . >&2
    else
        say "building wheels for extras $EXTRAS into .build/wheels"
        # (the host's pip.conf may name local indexes that do not exist everywhere: hush those)
        python3 -m pip wheel --quiet --disable-pip-version-check --find-links .build/wheels --wheel-dir .build/wheels ".[$EXTRAS]" 2>&1 \
            | grep -v 'is ignored: it is neither a file nor a directory' >&2 || true
        ls .build/wheels/moorage-*.whl >/dev/null
        strip_wheels .build/wheels
        touch ".build/wheels/.deps-$deps_key"
    fi
else
    say "host Python is not 3.11: the image build fetches dependencies from PyPI itself"
    rm -rf .build/wheels
fi

# -- 3. the image ---------------------------------------------------------------------------
say "building $IMAGE from base $BASE with $TOOL"
build_args=(build -f deploy/Dockerfile --build-arg "BASE_IMAGE=$BASE" --build-arg "IMAGE_EXTRAS=$EXTRAS" -t "$IMAGE")
if [ "$TOOL" = podman ]; then
    # The wheels make the build offline; host networking only matters without them.
    # docker format: OCI image configs have no HEALTHCHECK (podman would drop it)
    build_args+=(--network=host --layers --format docker)
fi
"$TOOL" "${build_args[@]}" . >&2
say "done in $(( $(date +%s) - t0 ))s: $IMAGE"
