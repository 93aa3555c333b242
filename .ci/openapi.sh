#!/usr/bin/env bash
# Installs openapi-spec-validator (PyPI), the validator the OpenAPI test runs over the document
# jobwarden serves, into a virtualenv of its own (it brings openapi-schema-validator, which
# checks the recorded answers against the document's schemas). Idempotent: a venv that already
# imports both is left alone. Starts nothing and prints nothing to export: the test finds the
# venv at $JOBWARDEN_CI_CACHE/openapi (default /var/cache/jobwarden-ci/openapi).
set -euo pipefail
source "$(dirname "$0")/venv.sh"

python_venv openapi "openapi_spec_validator, openapi_schema_validator" \
    "openapi-spec-validator==${OPENAPI_SPEC_VALIDATOR_VERSION:-0.7.2}"
