#!/usr/bin/env bash
# Sourced by the scripts that install a Python tool the tests run: `python_venv NAME IMPORTS
# REQUIREMENT...` makes a virtualenv at $JOBWARDEN_CI_CACHE/NAME (default
# /var/cache/jobwarden-ci/NAME) holding REQUIREMENTS, unless one there already runs
# `import IMPORTS`. Idempotent; prints nothing on stdout.

python_venv() {
    local name="$1" imports="$2"
    shift 2
    local cache="${JOBWARDEN_CI_CACHE:-/var/cache/jobwarden-ci}"
    local venv="$cache/$name"
    if "$venv/bin/python3" -c "import $imports" 2>/dev/null; then
        return 0
    fi
    mkdir -p "$cache"
    echo "installing $* into $venv (once)..." >&2
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        # Debian's own python3 keeps venv in a package of its own.
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
    fi
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "$@" >&2
    "$venv/bin/python3" -c "import $imports"
}
