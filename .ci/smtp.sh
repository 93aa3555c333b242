#!/usr/bin/env bash
# Installs aiosmtpd (PyPI), the real SMTP server the email-channel tests start on their own
# loopback ports, into a virtualenv of its own. Idempotent: a venv that already imports it is
# left alone. Starts nothing and prints nothing to export: the tests find the venv at
# $JOBWARDEN_CI_CACHE/aiosmtpd (default /var/cache/jobwarden-ci/aiosmtpd).
set -euo pipefail
source "$(dirname "$0")/venv.sh"

python_venv aiosmtpd aiosmtpd "aiosmtpd==${AIOSMTPD_VERSION:-1.4.6}"
