#!/usr/bin/env bash
# Starts a ZooKeeper server on 127.0.0.1:2181 (Debian's zookeeperd), the leader election that
# Spark's high-availability masters need. Idempotent: installs the package once and leaves a
# running server alone. Prints the env to export.
set -euo pipefail

CACHE="${JOBWARDEN_CI_CACHE:-/var/cache/jobwarden-ci}"
STATE="$CACHE/zookeeper-state"
SERVER=127.0.0.1:2181
ZKSERVER=/usr/share/zookeeper/bin/zkServer.sh

mkdir -p "$STATE/data"
if [ ! -x "$ZKSERVER" ]; then
    echo "installing zookeeperd (once)..." >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeperd; } \
        >"$STATE/install.log" 2>&1; then
        echo "installing zookeeperd failed; see $STATE/install.log" >&2
        tail -20 "$STATE/install.log" >&2
        exit 1
    fi
fi

# `ruok` answers `imok` once the server serves clients; a bare TCP connect would also accept a
# server still loading its data.
answers() {
    [ "$( (exec 3<>/dev/tcp/127.0.0.1/2181 && printf ruok >&3 && timeout 2 cat <&3) 2>/dev/null)" = imok ]
}

if ! answers; then
    # The package's service start is blocked in containers: run the server with our own config.
    cat > "$STATE/zoo.cfg" <<CFG
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$STATE/data
clientPort=2181
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr
CFG
    ZOO_LOG_DIR="$STATE" nohup "$ZKSERVER" start-foreground "$STATE/zoo.cfg" \
        >"$STATE/zookeeper.log" 2>&1 &
    for _ in $(seq 1 120); do answers && break; sleep 0.5; done
    answers || { echo "ZooKeeper did not start; see $STATE/zookeeper.log" >&2; tail -20 "$STATE/zookeeper.log" >&2; exit 1; }
fi
echo "export JOBWARDEN_TEST_ZOOKEEPER=$SERVER"
