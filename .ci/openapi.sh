#!/usr/bin/env bash
# Installs openapi-spec-validator (PyPI), the validator the OpenAPI test runs over the document
# jobwarden serves, into a virtualenv of its own (it brings openapi-schema-validator, which
# checks the recorded answers against the document's schemas). Idempotent: a venv that already
# imports both is left alone. Starts nothing and prints nothing to export: the test finds the
# venv at $JOBWARDEN_CI_CACHE/openapi (default /var/cache/jobwarden-ci/openapi).
set -euo pipefail

CACHE="${JOBWARDEN_CI_CACHE:-/var/cache/jobwarden-ci}"
VENV="$CACHE/openapi"
VALIDATOR_VERSION="${OPENAPI_SPEC_VALIDATOR_VERSION:-0.7.2}"

if "$VENV/bin/python3" -c 'import openapi_spec_validator, openapi_schema_validator' 2>/dev/null; then
    exit 0
fi
mkdir -p "$CACHE"
echo "installing openapi-spec-validator $VALIDATOR_VERSION into $VENV (once)..." >&2
if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's own python3 keeps venv in a package of its own.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
fi
"$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check \
    "openapi-spec-validator==$VALIDATOR_VERSION" >&2
"$VENV/bin/python3" -c 'import openapi_spec_validator, openapi_schema_validator'
