#!/usr/bin/env bash
# Start the real Apache ZooKeeper 3.8 (Debian's `zookeeper` package) as a standalone server in
# the background, so the compatibility suite can be validated against the reference
# implementation before it is pointed at Corral.
#
# Usage: reference_zk.sh PORT DATADIR
#   DATADIR must not exist or be empty (a fresh tree every run keeps tests independent).
#   Writes DATADIR/zoo.cfg, DATADIR/log4j.properties, DATADIR/zk.pid, DATADIR/zk.out (stdout+stderr)
#   and DATADIR/zookeeper.log. Exits 0 once `ruok` answers `imok`, 1 if it does not within
#   ZK_START_TIMEOUT_S (default 60) seconds or the JVM dies first.
# Stop it with: tests/compat/stop_pid.sh DATADIR/zk.pid
#
# The server has:
#   - superDigest for user `super`, password `test` (as in shared/README.md);
#   - tickTime=2000, so session timeouts negotiate into [4 s, 40 s];
#   - 4lw.commands.whitelist=*;
#   - the admin HTTP server (Jetty, from Debian's libjetty9-java) on port $ZK_ADMIN_PORT if that
#     is set, else off;
#   - zookeeper.extendedTypesEnabled=true, so TTL nodes can be created;
#   - znode.container.checkIntervalMs=500 (env ZK_CONTAINER_CHECK_INTERVAL_MS), so emptied
#     containers are deleted within a second instead of a minute;
#   - any extra JVM flags in env ZK_JVM_FLAGS (split on spaces), e.g.
#     ZK_JVM_FLAGS="-Dzookeeper.snapCount=20" for frequent snapshots.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 PORT DATADIR" >&2
    exit 2
fi
port="$1"
data_dir="$2"
start_timeout_s="${ZK_START_TIMEOUT_S:-60}"
# How often the server deletes emptied containers and expired TTL nodes (ZooKeeper default: 60 s;
# short here so test_container_node need not wait long).
container_check_interval_ms="${ZK_CONTAINER_CHECK_INTERVAL_MS:-500}"

if [ -e "$data_dir" ] && [ -n "$(ls -A "$data_dir")" ]; then
    echo "$0: $data_dir exists and is not empty; give a fresh directory" >&2
    exit 2
fi
mkdir -p "$data_dir"
data_dir="$(cd "$data_dir" && pwd)"

if ! command -v nc >/dev/null; then
    echo "$0: nc (netcat-openbsd) is needed to probe ruok" >&2
    exit 2
fi

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "$0: something already listens on 127.0.0.1:$port" >&2
    exit 1
fi

cat > "$data_dir/zoo.cfg" <<CFG
tickTime=2000
dataDir=$data_dir/data
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=0
4lw.commands.whitelist=*
CFG
if [ -n "${ZK_ADMIN_PORT:-}" ]; then
    printf 'admin.enableServer=true\nadmin.serverPort=%s\nadmin.serverAddress=127.0.0.1\n' "$ZK_ADMIN_PORT" >> "$data_dir/zoo.cfg"
else
    echo "admin.enableServer=false" >> "$data_dir/zoo.cfg"
fi
mkdir -p "$data_dir/data"

cat > "$data_dir/log4j.properties" <<LOG
log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File=$data_dir/zookeeper.log
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} [myid:%X{myid}] - %-5p [%t:%C{1}@%L] - %m%n
LOG

# zookeeper.jar's manifest names the rest of its dependencies (netty, jute, metrics, ...).
classpath=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar
if [ -n "${ZK_ADMIN_PORT:-}" ]; then
    # The AdminServer needs Jetty, the servlet API and Jackson, which zookeeper.jar's manifest
    # does not name (all are dependencies of Debian's libzookeeper-java).
    for jar in jetty9-server jetty9-servlet jetty9-http jetty9-io jetty9-util jetty9-util-ajax \
        jetty9-security servlet-api jackson-databind jackson-core jackson-annotations; do
        classpath="$classpath:/usr/share/java/$jar.jar"
    done
fi
for jar in ${classpath//:/ }; do
    if [ ! -r "$jar" ]; then
        echo "$0: $jar missing; apt-get install zookeeper zookeeper-bin" >&2
        exit 2
    fi
done

# Extra JVM flags, word-split on purpose (none by default).
read -r -a extra_jvm_flags <<< "${ZK_JVM_FLAGS:-}"

# super:test -> base64(sha1("super:test"))
super_digest='super:D/InIHSb7yEEbrWz8b9l71RjZJU='

nohup java -Xmx512m \
    -Dzookeeper.DigestAuthenticationProvider.superDigest="$super_digest" \
    -Dzookeeper.extendedTypesEnabled=true \
    -Dznode.container.checkIntervalMs="$container_check_interval_ms" \
    -Dlog4j.configuration="file:$data_dir/log4j.properties" \
    ${extra_jvm_flags[@]+"${extra_jvm_flags[@]}"} \
    -cp "$classpath" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$data_dir/zoo.cfg" \
    > "$data_dir/zk.out" 2>&1 < /dev/null &
pid=$!
echo "$pid" > "$data_dir/zk.pid"

deadline=$(( $(date +%s) + start_timeout_s ))
while [ "$(date +%s)" -lt "$deadline" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "$0: ZooKeeper (pid $pid) exited during start-up; last lines of $data_dir/zookeeper.log:" >&2
        tail -n 20 "$data_dir/zookeeper.log" "$data_dir/zk.out" >&2 2>/dev/null || true
        exit 1
    fi
    answer="$(echo ruok | nc -q1 -w2 127.0.0.1 "$port" 2>/dev/null || true)"
    if [ "$answer" = "imok" ]; then
        echo "ZooKeeper 3.8 pid $pid listening on 127.0.0.1:$port (data in $data_dir)"
        exit 0
    fi
    sleep 0.5
done

echo "$0: ZooKeeper did not answer imok on port $port within ${start_timeout_s}s; killing pid $pid" >&2
kill "$pid" 2>/dev/null || true
tail -n 20 "$data_dir/zookeeper.log" >&2 2>/dev/null || true
exit 1
