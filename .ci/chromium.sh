#!/usr/bin/env bash
# Headless Chromium and its WebDriver server for the dashboard's browser tests (Debian's
# packages). Installs them only when missing; safe to run again.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
