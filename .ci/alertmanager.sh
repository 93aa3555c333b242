#!/usr/bin/env bash
# Installs Prometheus Alertmanager (Debian's prometheus-alertmanager), the real server the
# Alertmanager-channel tests start on their own loopback ports. Idempotent: installs the package
# once. Starts nothing (the package's own service start is blocked in containers, and the tests
# want a fresh server each) and prints nothing to export.
set -euo pipefail

CACHE="${JOBWARDEN_CI_CACHE:-/var/cache/jobwarden-ci}"

if ! command -v prometheus-alertmanager >/dev/null 2>&1; then
    mkdir -p "$CACHE"
    echo "installing prometheus-alertmanager (once)..." >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager; } \
        >"$CACHE/alertmanager-install.log" 2>&1; then
        echo "installing prometheus-alertmanager failed; see $CACHE/alertmanager-install.log" >&2
        tail -20 "$CACHE/alertmanager-install.log" >&2
        exit 1
    fi
fi
prometheus-alertmanager --version >/dev/null 2>&1
