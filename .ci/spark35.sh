#!/usr/bin/env bash
# Downloads Spark 3.5 (PyPI's pyspark source distribution carries a full Spark under deps/) for
# the tests that start their own 3.5 cluster: REST off and the legacy RPC submission client,
# as many production clusters still run. Idempotent: reuses the download and the unpacked tree.
# Starts nothing. Prints the env to export.
set -euo pipefail

SPARK35_VERSION="${SPARK35_VERSION:-3.5.9}"
CACHE="${JOBWARDEN_CI_CACHE:-/var/cache/jobwarden-ci}"
SPARK_HOME="$CACHE/pyspark-$SPARK35_VERSION/deps"

mkdir -p "$CACHE"
if [ ! -x "$SPARK_HOME/bin/spark-class" ]; then
    if [ ! -f "$CACHE/pyspark-$SPARK35_VERSION.tar.gz" ]; then
        pip download --no-deps --no-binary :all: --quiet "pyspark==$SPARK35_VERSION" -d "$CACHE" >&2
    fi
    tar -xzf "$CACHE/pyspark-$SPARK35_VERSION.tar.gz" -C "$CACHE" >&2
fi
[ -x "$SPARK_HOME/bin/spark-class" ] || { echo "no $SPARK_HOME/bin/spark-class after unpacking" >&2; exit 1; }
echo "export JOBWARDEN_TEST_SPARK35_HOME=$SPARK_HOME"
