#!/usr/bin/env bash
# Starts a real Spark standalone cluster (master + one worker, REST submission server on) bound
# to 127.0.0.1, from PyPI's pyspark source distribution. Idempotent: reuses the unpacked
# distribution and leaves an already-running cluster alone. Prints the env to export.
set -euo pipefail

SPARK_VERSION="${SPARK_VERSION:-4.3.0}"
CACHE="${JOBWARDEN_CI_CACHE:-/var/cache/jobwarden-ci}"
SPARK_HOME="$CACHE/pyspark-$SPARK_VERSION/deps"
STATE="$CACHE/spark-state"
REST=http://127.0.0.1:6066

mkdir -p "$CACHE" "$STATE"
if [ ! -x "$SPARK_HOME/bin/spark-class" ]; then
    if [ ! -f "$CACHE/pyspark-$SPARK_VERSION.tar.gz" ]; then
        pip download --no-deps --quiet "pyspark==$SPARK_VERSION" -d "$CACHE" >&2
    fi
    tar -xzf "$CACHE/pyspark-$SPARK_VERSION.tar.gz" -C "$CACHE" >&2
fi

# An unknown submission id answers HTTP 200 once the REST server is up.
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$REST/v1/submissions/status/probe" 2>/dev/null)" = 200 ]; }
workers_alive() { curl -fsS http://127.0.0.1:8080/json/ 2>/dev/null | grep -q '"aliveworkers" : [1-9]'; }

export SPARK_LOCAL_IP=127.0.0.1 SPARK_HOME
if ! ready; then
    cat > "$STATE/spark.properties" <<PROPS
spark.master.rest.enabled true
spark.master.rest.host 127.0.0.1
spark.master.rest.port 6066
PROPS
    nohup "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
        --host 127.0.0.1 --port 7077 --webui-port 8080 \
        --properties-file "$STATE/spark.properties" >"$STATE/master.log" 2>&1 &
    for _ in $(seq 1 120); do ready && break; sleep 0.5; done
    ready || { echo "Spark master did not come up; see $STATE/master.log" >&2; tail -20 "$STATE/master.log" >&2; exit 1; }
fi
if ! workers_alive; then
    nohup "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
        --host 127.0.0.1 --cores 6 --memory 4g --webui-port 8081 \
        --work-dir "$STATE/work" spark://127.0.0.1:7077 >"$STATE/worker.log" 2>&1 &
    for _ in $(seq 1 120); do workers_alive && break; sleep 0.5; done
    workers_alive || { echo "Spark worker did not register; see $STATE/worker.log" >&2; tail -20 "$STATE/worker.log" >&2; exit 1; }
fi
echo "export JOBWARDEN_TEST_SPARK_REST_URL=$REST"
echo "export JOBWARDEN_TEST_SPARK_MASTER_UI=http://127.0.0.1:8080"
echo "export JOBWARDEN_TEST_SPARK_HOME=$SPARK_HOME"
