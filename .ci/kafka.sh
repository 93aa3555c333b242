#!/usr/bin/env bash
# Starts a Kafka-protocol broker process (tansu, SQLite storage) on 127.0.0.1:9092. Idempotent:
# reuses an installed tansu and leaves a running broker alone. Prints the env to export.
set -euo pipefail

CACHE="${JOBWARDEN_CI_CACHE:-/var/cache/jobwarden-ci}"
ROOT="$CACHE/tansu"
TANSU="$ROOT/bin/tansu"
STATE="$CACHE/tansu-state"
BROKER=127.0.0.1:9092

mkdir -p "$STATE"
if [ ! -x "$TANSU" ]; then
    # ~10 minutes on 2 cores, once per machine. SQLite storage: the memory engine of 0.6.0
    # loses messages when a consumer resumes inside a record batch.
    echo "building tansu 0.6.0 (once)..." >&2
    cargo install tansu --version 0.6.0 --locked --features libsql --root "$ROOT" >&2
fi

listening() { (exec 3<>"/dev/tcp/127.0.0.1/9092") 2>/dev/null; }

if ! listening; then
    (
        cd "$STATE"
        # tansu reads ./.env and these variables; pass everything explicitly.
        nohup env -u LISTENER_URL -u ADVERTISED_LISTENER_URL -u STORAGE_ENGINE -u CLUSTER_ID \
            "$TANSU" broker --cluster-id jobwarden-ci \
            --listener-url "tcp://$BROKER" --advertised-listener-url "tcp://$BROKER" \
            --storage-engine "sqlite://tansu.db" >"$STATE/broker.log" 2>&1 &
    )
    for _ in $(seq 1 100); do listening && break; sleep 0.1; done
    listening || { echo "tansu did not start; see $STATE/broker.log" >&2; tail -20 "$STATE/broker.log" >&2; exit 1; }
fi
echo "export JOBWARDEN_TEST_KAFKA_BROKERS=$BROKER"
# The chaos test starts (and kills) a broker of its own from the same binary.
echo "export JOBWARDEN_TEST_TANSU=$TANSU"
