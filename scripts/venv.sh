# Sourced by scripts/serve.sh and scripts/test.sh: the Python to run Moorage with.
#
#   moorage_venv DIR SPEC   make (once) a virtual environment in DIR with `pip install -e SPEC`
#                           and set PY to its python
#
# Why a virtual environment: the system Python of Debian 12/13 and Ubuntu is "externally
# managed" (PEP 668): `pip install` into it fails with externally-managed-environment.  Debian
# ships the venv module's pip in a separate package, python3-venv; it is installed with apt when
# missing (as root, or through sudo).  Supported Pythons: 3.11, 3.12, 3.13.

moorage_check_python() {
    local py="$1"
    if ! command -v "$py" >/dev/null 2>&1; then
        echo "moorage: $py not found; install Python 3.11-3.13 (Debian/Ubuntu: apt-get install python3 python3-venv)" >&2
        return 1
    fi
    if ! "$py" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else 1)'; then
        echo "moorage: needs Python 3.11, 3.12 or 3.13; $py is $("$py" -V 2>&1)" >&2
        return 1
    fi
}

moorage_externally_managed() {  # true for a system Python that refuses pip installs (PEP 668)
    "$1" -c 'import os, sys, sysconfig
sys.exit(0 if sys.prefix == sys.base_prefix and os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'
}

moorage_apt_venv() {  # python3-venv (Debian/Ubuntu), for `python3 -m venv` to have pip
    local pkg="python3-venv"
    local minor
    minor=$("$1" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "moorage: '$1 -m venv' does not work here; install your distribution's venv package for Python $minor" >&2
        return 1
    fi
    echo "moorage: installing $pkg (python$minor-venv) with apt-get: the venv module needs it on Debian/Ubuntu" >&2
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "moorage: run as root: apt-get install -y $pkg" >&2; return 1; }
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update -qq || return 1
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" "python$minor-venv" >/dev/null || return 1
}

moorage_venv() {
    local dir="$1" spec="$2"
    local base="${PYTHON:-python3}"
    moorage_check_python "$base" || return 1
    local stamp="$dir/.moorage-installed"
    local want
    want=$(cat pyproject.toml; echo "$spec")
    if [ ! -x "$dir/bin/python" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$(printf '%s' "$want" | sha256sum | cut -c1-16)" ]; then
        if [ ! -x "$dir/bin/python" ]; then
            rm -rf "$dir"
            if ! "$base" -m venv "$dir" >/dev/null 2>&1; then
                rm -rf "$dir"
                moorage_apt_venv "$base" || return 1
                "$base" -m venv "$dir" || return 1
            fi
        fi
        echo "moorage: installing moorage ($spec) into $dir (once; again when pyproject.toml changes)" >&2
        "$dir/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" || return 1
        printf '%s' "$want" | sha256sum | cut -c1-16 >"$stamp"
    fi
    PY="$dir/bin/python"
}
