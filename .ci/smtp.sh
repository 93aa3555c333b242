#!/usr/bin/env bash
# Installs aiosmtpd (PyPI), the real SMTP server the email-channel tests start on their own
# loopback ports, into a virtualenv of its own. Idempotent: a venv that already imports it is
# left alone. Starts nothing and prints nothing to export: the tests find the venv at
# $JOBWARDEN_CI_CACHE/aiosmtpd (default /var/cache/jobwarden-ci/aiosmtpd).
set -euo pipefail

CACHE="${JOBWARDEN_CI_CACHE:-/var/cache/jobwarden-ci}"
VENV="$CACHE/aiosmtpd"
AIOSMTPD_VERSION="${AIOSMTPD_VERSION:-1.4.6}"

if "$VENV/bin/python3" -c 'import aiosmtpd' 2>/dev/null; then
    exit 0
fi
mkdir -p "$CACHE"
echo "installing aiosmtpd $AIOSMTPD_VERSION into $VENV (once)..." >&2
if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's own python3 keeps venv in a package of its own.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
fi
"$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION" >&2
"$VENV/bin/python3" -c 'import aiosmtpd'
