#!/usr/bin/env bash
# Installs promtool (Debian's prometheus package), which the Grafana dashboard's test runs
# offline as `promtool check rules` to parse every PromQL expression the dashboard holds.
# Idempotent: installs the package once, without its recommends. Starts nothing (the package's
# own service start is blocked in containers, and no test needs a Prometheus server) and prints
# nothing to export: the test finds promtool on PATH.
set -euo pipefail

CACHE="${JOBWARDEN_CI_CACHE:-/var/cache/jobwarden-ci}"

if ! command -v promtool >/dev/null 2>&1; then
    mkdir -p "$CACHE"
    echo "installing promtool (Debian's prometheus, once)..." >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } \
        >"$CACHE/promtool-install.log" 2>&1; then
        echo "installing prometheus (for promtool) failed; see $CACHE/promtool-install.log" >&2
        tail -20 "$CACHE/promtool-install.log" >&2
        exit 1
    fi
fi
promtool --version >/dev/null 2>&1
