#!/usr/bin/env bash
# Starts a 3-member Corral ensemble on this machine, in the foreground; Ctrl-C stops all three.
#
#   scripts/ensemble.sh [DIR]      data and configs under DIR (default ./corral-ensemble)
#
# Clients connect to 127.0.0.1:2181, 127.0.0.1:2182 or 127.0.0.1:2183 (any member takes
# writes); the admin HTTP endpoints are at 127.0.0.1:8080, 8081 and 8082. The zoo.cfg files are
# ordinary ZooKeeper ensemble configs: server.N lines and a myid file in each dataDir.
# CORRAL_PROFILE=debug uses a debug build (quicker to build; the test command does so).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-corral-ensemble}"
profile="${CORRAL_PROFILE:-release}"
if [ "$profile" = release ]; then
    cargo build --release --quiet -p corral
else
    cargo build --quiet -p corral
fi
bin="$PWD/target/$profile/corral"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for id in 1 2 3; do
    mkdir -p "$dir/$id/data"
    echo "$id" > "$dir/$id/data/myid"
    cat > "$dir/$id/zoo.cfg" <<CFG
tickTime=2000
dataDir=$dir/$id/data
clientPort=$((2180 + id))
clientPortAddress=127.0.0.1
4lw.commands.whitelist=*
admin.serverAddress=127.0.0.1
admin.serverPort=$((8079 + id))
server.1=127.0.0.1:2888:3888
server.2=127.0.0.1:2889:3889
server.3=127.0.0.1:2890:3890
CFG
    "$bin" server --config "$dir/$id/zoo.cfg" 2> "$dir/$id/corral.log" &
    pids+=($!)
done
echo "ensemble starting: clients at 127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183; logs in $dir/*/corral.log"
sleep 2
for port in 2181 2182 2183; do
    printf '127.0.0.1:%s  ' "$port"; echo srvr | nc -q1 127.0.0.1 "$port" | grep Mode || echo "(not answering yet)"
done
wait
