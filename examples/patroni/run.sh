#!/usr/bin/env bash
# PostgreSQL high availability with Patroni, its DCS being a 3-member Corral ensemble.
#
#   examples/patroni/run.sh
#
# Debian's `patroni` (3.0, ZooKeeper DCS through kazoo) and `postgresql` packages: two Patroni
# nodes, each with its own PostgreSQL, on 127.0.0.1. The script installs what is missing
# (apt-get; sudo when not root), starts everything in a fresh temporary directory, and plays:
#
#   1. start: three Corral members, then both Patroni nodes; one bootstraps the primary, the
#      other clones it into a streaming replica;
#   2. primary failure: SIGKILL one Corral follower and, at the same moment, the primary's
#      Patroni and its PostgreSQL (the postmaster and its children); the replica must be
#      promoted; the Corral member is restarted, then the old primary's Patroni, which must
#      rejoin as a replica (pg_rewind, or a fresh clone if the rewind fails);
#   3. Corral leader failure: SIGKILL the Corral leader; the cluster must keep its one primary
#      and its streaming replica; the member is restarted.
#
# Meanwhile a monitor asks both PostgreSQL servers `select pg_is_in_recovery()` every ~300 ms
# and records each answer, and a writer inserts a row every ~200 ms through whichever server
# takes it. Patroni runs with synchronous_mode (SYNC_MODE=off turns it off), so a failover must
# lose no acknowledged row.
#
# Exit status 0 only if: the replica was promoted, the old primary rejoined as a streaming
# replica, no monitor sample ever saw two primaries, the run ends with exactly one primary and
# one streaming replica (and one leader key in Corral), and, in synchronous mode, no
# acknowledged row was lost. 1 otherwise, 2 on a usage or set-up error.
#
# Environment:
#   CORRAL_BIN   the corral binary; unset: `cargo build --release -p corral`, target/release/corral
#   RUN_LOG      where the output is saved as well (default examples/patroni/last-run.log)
#   SYNC_MODE    on (default) or off: Patroni's synchronous_mode
#   KEEP_WORK=1  keep the temporary directory (configs, data, every log) instead of removing it
#   DCS=zookeeper  the same run on Debian's ZooKeeper 3.8 (package `zookeeper`) instead of Corral,
#                for comparison
#
# PostgreSQL refuses to run as root: as root the script runs Patroni and PostgreSQL as the
# `postgres` user (Debian's postgresql package makes it), otherwise as the invoking user.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
RUN_LOG="${RUN_LOG:-$here/last-run.log}"

# Save everything this run prints to $RUN_LOG as well: run again with the output through tee,
# which ignores Ctrl-C so that the clean-up's messages still reach the terminal and the file.
if [ -z "${_CORRAL_PATRONI_TEED:-}" ]; then
    mkdir -p "$(dirname "$RUN_LOG")"
    RUN_LOG="$(cd "$(dirname "$RUN_LOG")" && pwd)/$(basename "$RUN_LOG")"
    export RUN_LOG _CORRAL_PATRONI_TEED=1
    set +e
    "$BASH" "${BASH_SOURCE[0]}" "$@" 2>&1 | (trap '' INT TERM; exec tee "$RUN_LOG")
    rc=${PIPESTATUS[0]}
    echo "(this output is saved in $RUN_LOG)"
    exit "$rc"
fi

SYNC_MODE="${SYNC_MODE:-on}"
DCS="${DCS:-corral}"
case "$DCS" in
    corral) DCS_LABEL=Corral ;;
    zookeeper) DCS_LABEL="ZooKeeper" ;;
    *) echo "DCS must be corral or zookeeper, not '$DCS'" >&2; exit 2 ;;
esac
case "$SYNC_MODE" in
    on|off) ;;
    *) echo "SYNC_MODE must be on or off, not '$SYNC_MODE'" >&2; exit 2 ;;
esac

# Patroni's settings (patroni.yml.in) that the waits below are sized from.
TTL=10
LOOP_WAIT=2
SCOPE=corral-demo
TICK_MS=500

T0_MS=$(date +%s%3N)
now_ms() { date +%s%3N; }
stamp() { # ms since the epoch -> "HH:MM:SS.mmm (+s.s)"
    local ms=$1
    printf '%s.%03d (+%5.1fs)' "$(date -d "@$((ms / 1000))" +%H:%M:%S)" $((ms % 1000)) \
        "$(awk -v a="$ms" -v b="$T0_MS" 'BEGIN { printf "%.1f", (a - b) / 1000 }')"
}
say() { printf '%s  %s\n' "$(stamp "$(now_ms)")" "$*"; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f", ms / 1000 }'; }
die() { say "FAILED: $*"; FAILED=1; exit 1; }

FAILED=0
work=""
pids_bg=()          # monitor and writer loops
declare -A corral_pid patroni_pid

echo "Patroni on $DCS_LABEL: PostgreSQL failover with a 3-member $DCS_LABEL ensemble as Patroni's DCS"
echo "output also saved to $RUN_LOG"

# ---------------------------------------------------------------------------------------------
# What it needs.
# ---------------------------------------------------------------------------------------------
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
pg_bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true; }
missing=()
{ command -v patroni && command -v patronictl; } >/dev/null 2>&1 || missing+=(patroni)
/usr/bin/python3 -c 'import kazoo' 2>/dev/null || missing+=(python3-kazoo)
bin_dir="$(pg_bin_dir)"
{ [ -n "$bin_dir" ] && [ -x "$bin_dir/postgres" ] && [ -x "$bin_dir/pg_rewind" ]; } || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v ss >/dev/null || missing+=(iproute2)
if [ "$DCS" = zookeeper ]; then
    [ -r /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
    command -v java >/dev/null || missing+=(default-jre-headless)
fi
if [ ${#missing[@]} -gt 0 ]; then
    say "installing: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    bin_dir="$(pg_bin_dir)"
fi
[ -n "$bin_dir" ] || { echo "no PostgreSQL server under /usr/lib/postgresql" >&2; exit 2; }

if [ "$DCS" = zookeeper ]; then
    dcs_version="ZooKeeper: $(readlink -f /usr/share/java/zookeeper.jar)"
elif [ -z "${CORRAL_BIN:-}" ]; then
    say "building corral (cargo build --release -p corral)"
    (cd "$root" && cargo build --release --quiet -p corral)
    CORRAL_BIN="$root/target/release/corral"
fi
if [ "$DCS" = corral ]; then
    [ -x "$CORRAL_BIN" ] || { echo "CORRAL_BIN=$CORRAL_BIN is not executable" >&2; exit 2; }
    dcs_version="corral: $CORRAL_BIN"
fi

say "$(patroni --version 2>&1 | head -n 1), PostgreSQL $("$bin_dir/postgres" --version | awk '{print $3}'), kazoo $(/usr/bin/python3 -c 'import kazoo; print(kazoo.__version__)'), $dcs_version"

# As root, PostgreSQL and Patroni run as `postgres`; otherwise as whoever runs this.
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || { echo "no postgres user (Debian's postgresql package makes it)" >&2; exit 2; }
    pg_user=postgres
    # exec: the caller's subshell becomes Patroni, so its pid is Patroni's.
    as_pg() { exec setpriv --reuid=postgres --regid=postgres --init-groups \
        env HOME="$(getent passwd postgres | cut -d: -f6)" USER=postgres LOGNAME=postgres "$@"; }
else
    pg_user="$(id -un)"
    as_pg() { exec "$@"; }
fi

# ---------------------------------------------------------------------------------------------
# Clean-up: kill what this script started (Patroni, the postmasters Patroni started and their
# children, the Corral members, the monitor loops) and remove the temporary directory.
# ---------------------------------------------------------------------------------------------
postmaster_of() { # node -> pid of its running postmaster, or nothing
    local pidfile="$work/$1/data/postmaster.pid" pid
    [ -f "$pidfile" ] || return 0
    pid="$(head -n 1 "$pidfile" 2>/dev/null || true)"
    case "$pid" in ''|*[!0-9]*) return 0 ;; esac
    # Only if that pid still is a postgres of this data directory.
    if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$work/$1/data"; then
        echo "$pid"
    fi
}
children_of() { ps -o pid= --ppid "$1" 2>/dev/null | tr -s ' \n' ' ' || true; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM ERR
    if [ "$rc" -ne 0 ] && [ "$FAILED" -eq 0 ] && [ "$rc" -ne 130 ]; then
        say "FAILED: the script stopped on an unexpected error (status $rc) at line $err_line: $err_cmd"
    fi
    [ "$FAILED" -eq 1 ] && rc=1
    for pid in "${pids_bg[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -n "$work" ]; then
        local node pm victims=()
        for node in node1 node2; do
            [ -n "${patroni_pid[$node]:-}" ] && victims+=("${patroni_pid[$node]}")
            pm="$(postmaster_of "$node")"
            [ -n "$pm" ] && victims+=("$pm" $(children_of "$pm"))
        done
        for m in 1 2 3; do [ -n "${corral_pid[$m]:-}" ] && victims+=("${corral_pid[$m]}"); done
        # From here on stderr is closed: bash would report each killed job ("Killed ...").
        exec 2>/dev/null
        { [ ${#victims[@]} -gt 0 ] && kill -KILL "${victims[@]}"; wait; } || true
        if [ "$rc" -ne 0 ]; then
            echo
            echo "---- last lines of the logs (in $work) ----"
            for f in "$work"/node1/patroni.log "$work"/node2/patroni.log "$work"/node1/pglog/postgresql.log \
                     "$work"/node2/pglog/postgresql.log "$work"/corral/m1.log "$work"/corral/m2.log "$work"/corral/m3.log; do
                [ -f "$f" ] || continue
                echo "== $f"
                tail -n 15 "$f"
            done
        fi
        if [ "${KEEP_WORK:-0}" = 1 ]; then
            echo "kept $work"
        else
            rm -rf "$work"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
# Remember the last failing command, for the message when `set -e` stops the script.
err_line="?"
err_cmd="?"
set -E
trap 'err_line=$LINENO err_cmd=$BASH_COMMAND' ERR
trap 'say "interrupted"; exit 130' INT TERM

work="$(mktemp -d "${TMPDIR:-/tmp}/corral-patroni.XXXXXX")"
chmod 755 "$work"

# Thirteen free ports on 127.0.0.1: Corral's client, peer and election ports, then each node's
# PostgreSQL and REST API ports.
mapfile -t ports < <(/usr/bin/python3 -c '
import socket
socks = [socket.socket() for _ in range(13)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))')
client_port=([1]="${ports[0]}" [2]="${ports[1]}" [3]="${ports[2]}")
declare -A pg_port=([node1]="${ports[9]}" [node2]="${ports[10]}")
declare -A rest_port=([node1]="${ports[11]}" [node2]="${ports[12]}")
zk_hosts="127.0.0.1:${ports[0]}, 127.0.0.1:${ports[1]}, 127.0.0.1:${ports[2]}"

# ---------------------------------------------------------------------------------------------
# Corral.
# ---------------------------------------------------------------------------------------------
mkdir -p "$work/corral"
for m in 1 2 3; do
    mkdir -p "$work/corral/m$m"
    echo "$m" > "$work/corral/m$m/myid"
    cat > "$work/corral/zoo$m.cfg" <<CFG
tickTime=$TICK_MS
initLimit=10
syncLimit=2
dataDir=$work/corral/m$m
clientPort=${client_port[$m]}
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=*
server.1=127.0.0.1:${ports[3]}:${ports[4]}
server.2=127.0.0.1:${ports[5]}:${ports[6]}
server.3=127.0.0.1:${ports[7]}:${ports[8]}
CFG
done

start_member() {
    if [ "$DCS" = corral ]; then
        "$CORRAL_BIN" server --config "$work/corral/zoo$1.cfg" >> "$work/corral/m$1.log" 2>&1 &
    else
        java -Xmx256m -cp /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar \
            org.apache.zookeeper.server.quorum.QuorumPeerMain "$work/corral/zoo$1.cfg" >> "$work/corral/m$1.log" 2>&1 &
    fi
    corral_pid[$1]=$!
}
four_letter() { # port word -> the answer ("" if none)
    timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf %s "$2" >&3 && cat <&3' _ "$1" "$2" 2>/dev/null || true
}
mode() { four_letter "${client_port[$1]}" srvr | sed -n 's/^Mode: //p'; }
leader_member() {
    local m
    for m in 1 2 3; do
        [ -n "${corral_pid[$m]:-}" ] && [ "$(mode "$m")" = leader ] && { echo "$m"; return 0; }
    done
    return 0
}
declare -A zk_conn
links=""
zk_links() { # sets $links: the member each running Patroni's ZooKeeper connection goes to, and
    #          whether it is the same TCP connection as at the previous call
    local node pid m conn peer out=""
    for node in node1 node2; do
        pid="${patroni_pid[$node]:-}"
        [ -n "$pid" ] || continue
        peer="none"
        conn=""
        for m in 1 2 3; do
            conn="$(ss -Htnp state established "dport = :${client_port[$m]}" 2>/dev/null | grep "pid=$pid," | awk '{ print $3 }' | head -n 1 || true)"
            if [ -n "$conn" ]; then peer="m$m"; conn="$conn->m$m"; break; fi
        done
        if [ -n "${zk_conn[$node]:-}" ] && [ -n "$conn" ]; then
            if [ "${zk_conn[$node]}" = "$conn" ]; then peer+=" (same connection)"; else peer+=" (new connection)"; fi
        fi
        zk_conn[$node]="$conn"
        out+="$node->$peer, "
    done
    links="${out%, }"
}
modes() { local m out=""; for m in 1 2 3; do out+="m$m=$(mode "$m" | grep . || echo down) "; done; echo "$out"; }
wait_serving() { # seconds member... : each named member leader or follower, and one leader among them
    local seconds=$1 deadline m ok; shift
    deadline=$(( $(date +%s) + seconds ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        ok=1
        for m in "$@"; do case "$(mode "$m")" in leader|follower) ;; *) ok=0 ;; esac; done
        [ "$ok" = 1 ] && [ -n "$(leader_member)" ] && return 0
        sleep 0.2
    done
    die "$DCS_LABEL members $* not serving within ${seconds}s ($(modes))"
}

say "starting $DCS_LABEL members 1, 2, 3 (clients at $zk_hosts, tickTime=$TICK_MS)"
for m in 1 2 3; do start_member "$m"; done
wait_serving 30 1 2 3
say "$DCS_LABEL ensemble serving: $(modes)"

# ---------------------------------------------------------------------------------------------
# Patroni.
# ---------------------------------------------------------------------------------------------
for node in node1 node2; do
    mkdir -p "$work/$node/pglog"
    sed -e "s|@SCOPE@|$SCOPE|g" -e "s|@NAME@|$node|g" -e "s|@REST_PORT@|${rest_port[$node]}|g" \
        -e "s|@PG_PORT@|${pg_port[$node]}|g" -e "s|@ZK_HOSTS@|$zk_hosts|g" \
        -e "s|@DATA_DIR@|$work/$node/data|g" -e "s|@NODE_DIR@|$work/$node|g" \
        -e "s|@BIN_DIR@|$bin_dir|g" -e "s|@SYNC_MODE@|$SYNC_MODE|g" \
        "$here/patroni.yml.in" > "$work/$node/patroni.yml"
    chown -R "$pg_user" "$work/$node"
done

start_patroni() {
    (cd "$work/$1" && as_pg patroni "$work/$1/patroni.yml") >> "$work/$1/patroni.log" 2>&1 &
    patroni_pid[$1]=$!
}
other() { if [ "$1" = node1 ]; then echo node2; else echo node1; fi; }

psql_at() { # node sql... -> output; status of psql
    local node=$1; shift
    PGCONNECT_TIMEOUT=2 timeout 4 psql -X -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${pg_port[$node]}" \
        -U postgres -d postgres "$@" 2>/dev/null
}
pg_state() { # node -> f (primary), t (in recovery) or - (no answer)
    local out
    out="$(psql_at "$1" -c 'select pg_is_in_recovery()' || true)"
    case "$out" in t|f) echo "$out" ;; *) echo - ;; esac
}
streaming_from() { # primary replica -> "streaming/sync" etc. as the primary sees the replica
    psql_at "$1" -F/ -c "select state, sync_state from pg_stat_replication where application_name = '$2'" | head -n 1 || true
}
replica_ok() { # primary replica: the replica streams from the primary (and is its sync standby in sync mode)
    local s
    s="$(streaming_from "$1" "$2")"
    case "$s" in
        streaming/sync|streaming/quorum) return 0 ;;
        streaming/*) [ "$SYNC_MODE" = off ] ;;
        *) return 1 ;;
    esac
}
primaries() { # -> the nodes answering as primaries
    local node out=""
    for node in node1 node2; do [ "$(pg_state "$node")" = f ] && out+="$node "; done
    echo "${out% }"
}
dcs_view() { # -> "leader=<node> session=0x... members=<n,...>" read from Corral directly
    /usr/bin/python3 - "$zk_hosts" "$SCOPE" <<'PY' 2>/dev/null || echo "leader=? ($DCS_LABEL unreachable)"
import sys
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
zk = KazooClient(hosts=sys.argv[1].replace(" ", ""), timeout=5)
zk.start(timeout=10)
base = "/service/%s" % sys.argv[2]
try:
    data, stat = zk.get(base + "/leader")
    leader = "%s session=0x%x" % (data.decode(), stat.ephemeralOwner)
except NoNodeError:
    leader = "(none)"
members = ",".join(sorted(zk.get_children(base + "/members")))
print("leader key=%s members=%s" % (leader, members))
zk.stop()
PY
}
patroni_list() { # patronictl's table (its kazoo warnings only if it fails)
    if patronictl -c "$work/node1/patroni.yml" list > "$work/patronictl.out" 2> "$work/patronictl.err"; then
        sed 's/^/    /' "$work/patronictl.out"
    else
        sed 's/^/    /' "$work/patronictl.out" "$work/patronictl.err"
    fi
}

say "starting Patroni node1 (PostgreSQL 127.0.0.1:${pg_port[node1]}, REST :${rest_port[node1]}) and node2 (PostgreSQL :${pg_port[node2]}, REST :${rest_port[node2]}), synchronous_mode=$SYNC_MODE"
start_patroni node1
start_patroni node2

# The monitor: every ~300 ms both servers' pg_is_in_recovery(), asked at the same time; one line
# per sample: when it was taken, node1's answer, node2's answer.
samples="$work/samples"
: > "$samples"
(
    trap - EXIT
    while :; do
        t=$(now_ms)
        pg_state node1 > "$work/.sample1" &
        pg_state node2 > "$work/.sample2" &
        wait
        echo "$t $(< "$work/.sample1") $(< "$work/.sample2")"
        sleep 0.2
    done
) >> "$samples" 2>/dev/null &
pids_bg+=($!)

# Bootstrap: one primary, the other streaming from it.
deadline=$(( $(date +%s) + 120 ))
primary=""
while [ "$(date +%s)" -lt "$deadline" ]; do
    p="$(primaries)"
    if [ "$p" = node1 ] || [ "$p" = node2 ]; then
        if replica_ok "$p" "$(other "$p")"; then primary="$p"; break; fi
    fi
    for node in node1 node2; do
        kill -0 "${patroni_pid[$node]}" 2>/dev/null || die "Patroni $node exited during bootstrap"
    done
    sleep 0.5
done
[ -n "$primary" ] || die "no primary with a streaming replica within 120s (primaries: '$(primaries)')"
replica="$(other "$primary")"
say "bootstrapped: $primary is the primary, $replica streams from it ($(streaming_from "$primary" "$replica"))"
say "DCS: $(dcs_view)"
patroni_list

# The writer: a row every ~200 ms through whichever server takes it; one line per acknowledged row.
psql_at "$primary" -c "create table probe (id int primary key, via text not null, at timestamptz not null default now())" >/dev/null \
    || die "could not create the probe table on $primary"
acks="$work/acks"
: > "$acks"
(
    trap - EXIT
    n=0
    target="$primary"
    while :; do
        n=$((n + 1))
        for node in "$target" "$(other "$target")"; do
            if psql_at "$node" -c "insert into probe (id, via) values ($n, '$node')" >/dev/null; then
                echo "$(now_ms) $n $node"
                target="$node"
                break
            fi
        done
        sleep 0.2
    done
) >> "$acks" 2>/dev/null &
pids_bg+=($!)
sleep 3
say "writer running: $(wc -l < "$acks") rows acknowledged so far"

# ---------------------------------------------------------------------------------------------
# Primary failure, with a Corral follower down.
# ---------------------------------------------------------------------------------------------
corral_leader="$(leader_member)"
[ -n "$corral_leader" ] || die "no $DCS_LABEL leader"
for m in 1 2 3; do [ "$m" != "$corral_leader" ] && { victim_member=$m; break; }; done
pm="$(postmaster_of "$primary")"
[ -n "$pm" ] || die "no postmaster.pid for $primary"
pm_children="$(children_of "$pm")"
acks_before_kill=$(wc -l < "$acks")
dcs_before="$(dcs_view)"
zk_links
say "$DCS_LABEL leader is member $corral_leader; Patroni's ZooKeeper connections: $links"
say "SIGKILL $DCS_LABEL member $victim_member (a follower), and $primary's Patroni (pid ${patroni_pid[$primary]}) with its PostgreSQL (postmaster $pm and children:$pm_children)"
kill_ms=$(now_ms)
# shellcheck disable=SC2086
{   # (the braces keep bash's "Killed" job notices out of the output)
    kill -KILL "${corral_pid[$victim_member]}" "${patroni_pid[$primary]}" "$pm" $pm_children || true
    wait "${corral_pid[$victim_member]}" "${patroni_pid[$primary]}" || true
} 2>/dev/null
corral_pid[$victim_member]=""
patroni_pid[$primary]=""
say "killed; $DCS_LABEL: $(modes); waiting for $replica to be promoted (the leader key expires after ttl=${TTL}s)"

deadline=$(( $(date +%s) + 60 ))
promoted_ms=""
while [ "$(date +%s)" -lt "$deadline" ]; do
    if [ "$(pg_state "$replica")" = f ]; then promoted_ms=$(now_ms); break; fi
    sleep 0.2
done
[ -n "$promoted_ms" ] || die "$replica was not promoted within 60s"
failover_ms=$((promoted_ms - kill_ms))
say "$replica promoted: it is the primary $(secs "$failover_ms")s after the kill"
say "DCS: $(dcs_view)"
first_ack_after="$(awk -v k="$kill_ms" '$1 > k && $3 == r { print $1; exit }' r="$replica" "$acks")"
deadline=$(( $(date +%s) + 15 ))
while [ -z "$first_ack_after" ] && [ "$(date +%s)" -lt "$deadline" ]; do
    sleep 0.2
    first_ack_after="$(awk -v k="$kill_ms" '$1 > k && $3 == r { print $1; exit }' r="$replica" "$acks")"
done
[ -n "$first_ack_after" ] || die "no write acknowledged by $replica within 15s of its promotion"
say "writes resumed through $replica $(secs $((first_ack_after - kill_ms)))s after the kill"

say "restarting $DCS_LABEL member $victim_member"
start_member "$victim_member"
wait_serving 30 1 2 3
say "$DCS_LABEL ensemble serving: $(modes)"

say "restarting $primary's Patroni; it must rejoin as a replica of $replica"
rejoin_start_ms=$(now_ms)
start_patroni "$primary"
deadline=$(( $(date +%s) + 120 ))
rejoined_ms=""
while [ "$(date +%s)" -lt "$deadline" ]; do
    if [ "$(pg_state "$primary")" = t ] && replica_ok "$replica" "$primary"; then rejoined_ms=$(now_ms); break; fi
    kill -0 "${patroni_pid[$primary]}" 2>/dev/null || die "Patroni $primary exited while rejoining"
    sleep 0.5
done
[ -n "$rejoined_ms" ] || die "$primary did not rejoin as a streaming replica within 120s"
# How it came back, from its Patroni's log.
plog="$work/$primary/patroni.log"
how="as it was"
grep -q "pg_rewind exit code=0" "$plog" && how="rewound by pg_rewind"
grep -q "crash recovery in a single user mode" "$plog" && how="crash recovery in single-user mode, then $how"
grep -qi "removing data directory" "$plog" && how="data directory removed and cloned again"
say "$primary rejoined as a replica of $replica ($how), streaming $(secs $((rejoined_ms - rejoin_start_ms)))s after its restart: $(streaming_from "$replica" "$primary")"
patroni_list

# ---------------------------------------------------------------------------------------------
# Corral leader failure.
# ---------------------------------------------------------------------------------------------
new_primary="$replica"
new_replica="$primary"
corral_leader="$(leader_member)"
[ -n "$corral_leader" ] || die "no $DCS_LABEL leader"
dcs_before_leader_kill="$(dcs_view)"
say "DCS: $dcs_before_leader_kill"
zk_links
say "SIGKILL the $DCS_LABEL leader, member $corral_leader (pid ${corral_pid[$corral_leader]}); Patroni's ZooKeeper connections: $links"
leader_kill_ms=$(now_ms)
{ kill -KILL "${corral_pid[$corral_leader]}"; wait "${corral_pid[$corral_leader]}" || true; } 2>/dev/null
corral_pid[$corral_leader]=""
remaining=()
for m in 1 2 3; do [ "$m" != "$corral_leader" ] && remaining+=("$m"); done
wait_serving 30 "${remaining[@]}"
say "$DCS_LABEL elected member $(leader_member) $(secs $(($(now_ms) - leader_kill_ms)))s after the kill: $(modes)"
sleep 1
zk_links
say "Patroni's ZooKeeper connections: $links"
# Patroni's session timeout is ttl: after ttl + 2 loops every consequence has shown.
say "watching the cluster for $((TTL + 2 * LOOP_WAIT))s"
sleep $((TTL + 2 * LOOP_WAIT))
dcs_after_leader_kill="$(dcs_view)"
say "DCS: $dcs_after_leader_kill"
p="$(primaries)"
[ "$p" = "$new_primary" ] || die "after the $DCS_LABEL leader's death the primaries are '$p', not $new_primary"
replica_ok "$new_primary" "$new_replica" || die "$new_replica does not stream from $new_primary after the $DCS_LABEL leader's death"
if [ "${dcs_before_leader_kill%% members=*}" = "${dcs_after_leader_kill%% members=*}" ]; then
    leader_key_note="the same leader key (same ZooKeeper session) before and after"
else
    leader_key_note="leader key changed: before '$dcs_before_leader_kill', after '$dcs_after_leader_kill'"
fi
say "still one primary ($new_primary) and its replica $new_replica streaming; $leader_key_note"
patroni_list
say "restarting $DCS_LABEL member $corral_leader"
start_member "$corral_leader"
wait_serving 30 1 2 3
say "$DCS_LABEL ensemble serving: $(modes)"

# ---------------------------------------------------------------------------------------------
# The end: stop the loops and check.
# ---------------------------------------------------------------------------------------------
sleep 2
for pid in "${pids_bg[@]}"; do kill "$pid" 2>/dev/null || true; done
{ wait "${pids_bg[@]}" || true; } 2>/dev/null
pids_bg=()
end_ms=$(now_ms)

final_primaries="$(primaries)"
final_ok=0
if [ "$final_primaries" = "$new_primary" ] && [ "$(pg_state "$new_replica")" = t ] && replica_ok "$new_primary" "$new_replica"; then
    final_ok=1
fi
final_dcs="$(dcs_view)"
say "final: primaries='$final_primaries', $new_replica as $new_primary sees it: $(streaming_from "$new_primary" "$new_replica"); DCS: $final_dcs"
patroni_list

# Rows: every acknowledged id must be in the final primary's table.
psql_at "$new_primary" -c "select id from probe order by id" > "$work/present" || die "could not read the probe table"
awk '{ print $2 }' "$acks" | sort > "$work/acked"
sort "$work/present" > "$work/present.sorted"
lost_ids="$(comm -23 "$work/acked" "$work/present.sorted" | sort -n | tr '\n' ' ')"
rows_acked=$(wc -l < "$work/acked")
rows_lost=$(comm -23 "$work/acked" "$work/present.sorted" | wc -l)
rows_by_node="$(awk '{ c[$3]++ } END { for (n in c) { printf "%s%s: %d", sep, n, c[n]; sep = ", " } }' "$acks")"

# Samples: role changes, and the most primaries at once.
echo
echo "Role changes seen by the monitor (t = replica, f = primary, - = no answer):"
awk -v t0="$T0_MS" '
    { if ($2 != a || $3 != b) {
        ms = $1; s = ms / 1000
        printf "  %s.%03d (+%5.1fs)  node1=%s node2=%s\n", strftime("%H:%M:%S", int(s)), ms % 1000, (ms - t0) / 1000, $2, $3
        a = $2; b = $3 } }' "$samples"
sample_count=$(wc -l < "$samples")
max_gap_ms=$(awk 'NR > 1 && $1 - p > m { m = $1 - p } { p = $1 } END { print m + 0 }' "$samples")
double_samples=$(awk '$2 == "f" && $3 == "f"' "$samples" | wc -l)
max_primaries=$(awk '{ n = ($2 == "f") + ($3 == "f"); if (n > m) m = n } END { print m + 0 }' "$samples")
# The longest run of samples without a primary after the kill.
no_primary_ms=$(awk -v k="$kill_ms" '$1 >= k { if ($2 != "f" && $3 != "f") { if (!s) s = $1 } else if (s) { d = $1 - s; if (d > m) m = d; s = 0 } } END { print m + 0 }' "$samples")

pass=1
echo
echo "Summary"
echo "  ensemble:               $DCS_LABEL, 3 members, tickTime=${TICK_MS}ms; killed member $victim_member (follower) with the primary, then member $corral_leader (leader)"
echo "  Patroni:                $(patroni --version 2>&1 | awk '{print $2}'), ttl=${TTL}s loop_wait=${LOOP_WAIT}s, synchronous_mode=$SYNC_MODE"
echo "  failover:               $primary -> $replica, promoted $(secs "$failover_ms")s after SIGKILL; writes resumed after $(secs $((first_ack_after - kill_ms)))s; longest time without a primary $(secs "$no_primary_ms")s"
echo "  old primary rejoined:   $primary as a replica ($how), $(secs $((rejoined_ms - rejoin_start_ms)))s after its restart"
echo "  ensemble leader killed: $leader_key_note"
echo "  monitor samples:        $sample_count over $(secs $((end_ms - T0_MS)))s, at most $(secs "$max_gap_ms")s apart; most primaries at once: $max_primaries; samples with two primaries: $double_samples"
echo "  rows:                   $rows_acked acknowledged ($rows_by_node), $rows_lost lost${lost_ids:+ (ids: $lost_ids)}"
echo "  final state:            primary $final_primaries, $new_replica $(streaming_from "$new_primary" "$new_replica" | tr / ' ')"
if [ "$double_samples" -ne 0 ]; then echo "  FAIL: two primaries at once in $double_samples samples"; pass=0; fi
if [ "$final_ok" -ne 1 ]; then echo "  FAIL: the run does not end with one primary and one streaming replica"; pass=0; fi
case "$final_dcs" in "leader key=$new_primary "*) ;; *) echo "  FAIL: the DCS does not name $new_primary as the leader: $final_dcs"; pass=0 ;; esac
if [ "$rows_lost" -ne 0 ]; then
    if [ "$SYNC_MODE" = on ]; then
        echo "  FAIL: $rows_lost acknowledged rows lost in synchronous mode"; pass=0
    else
        echo "  note: $rows_lost acknowledged rows lost (asynchronous replication allows it)"
    fi
fi
echo "  total run time:         $(secs $(($(now_ms) - T0_MS)))s"
if [ "$pass" = 1 ]; then
    echo "PASS: the replica took over, the old primary rejoined as a replica, never two primaries at once"
    exit 0
fi
FAILED=1
echo "FAIL"
exit 1
