#!/usr/bin/env bash
# Installs cargo-deb (crates.io), which the packaging tests run to build the Debian package from
# the binary the test run already built, into a root of its own, built in a target directory of
# its own (never the workspace's). Idempotent: an installed cargo-deb of the pinned version is
# left alone. Starts nothing and prints nothing to export: the tests find cargo-deb at
# $JOBWARDEN_CI_CACHE/cargo-deb/bin (default /var/cache/jobwarden-ci/cargo-deb/bin) or on PATH.
set -euo pipefail

CACHE="${JOBWARDEN_CI_CACHE:-/var/cache/jobwarden-ci}"
ROOT="$CACHE/cargo-deb"
CARGO_DEB_VERSION="${CARGO_DEB_VERSION:-3.7.0}"

if "$ROOT/bin/cargo-deb" --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    exit 0
fi
mkdir -p "$ROOT"
echo "installing cargo-deb $CARGO_DEB_VERSION into $ROOT (once)..." >&2
if ! CARGO_TARGET_DIR="$ROOT/build" cargo install --locked --quiet --force --root "$ROOT" \
    --version "$CARGO_DEB_VERSION" cargo-deb >"$CACHE/cargo-deb-install.log" 2>&1; then
    echo "installing cargo-deb failed; see $CACHE/cargo-deb-install.log" >&2
    tail -20 "$CACHE/cargo-deb-install.log" >&2
    exit 1
fi
# The build directory is only needed to build it.
rm -rf "$ROOT/build"
"$ROOT/bin/cargo-deb" --version >/dev/null
