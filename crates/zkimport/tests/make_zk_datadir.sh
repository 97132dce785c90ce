#!/usr/bin/env bash
# Make a real Apache ZooKeeper 3.8 data directory for the importer's tests.
#
# Usage: make_zk_datadir.sh OUTDIR
#   Starts ZooKeeper (tests/compat/reference_zk.sh) in OUTDIR/zk with a low snapCount, so the
#   data directory OUTDIR/zk/data gets several snapshots and log entries after the newest one;
#   fills it through kazoo with persistent, ephemeral, sequential, container and TTL nodes,
#   binary and large data, setData, deletes, digest ACLs and setACL, multis (one that fails),
#   failed requests, a quota and a session closed with its ephemerals; reads the whole tree
#   back (as user `super`, so every ACL lets it) into OUTDIR/expected.json; then kills ZooKeeper
#   with SIGKILL, as a crash would, so nothing is flushed or snapshotted on the way out.
#
# Env: ZK_SNAPSHOT_COMPRESSION=gz|snappy compresses the snapshots (ZooKeeper 3.6+);
#      ZK_SNAP_COUNT (default 20); PYTHON (default: $CORRAL_VENV or the repo's .venv, where
#      scripts/test.sh installs kazoo).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
out="$1"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
python="${PYTHON:-${CORRAL_VENV:-$repo/.venv}/bin/python}"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

# Logs are preallocated in 64 KiB steps instead of 64 MiB, so that the many small logs stay small.
flags="-Dzookeeper.snapCount=${ZK_SNAP_COUNT:-20} -Dzookeeper.preAllocSize=64"
if [ -n "${ZK_SNAPSHOT_COMPRESSION:-}" ]; then
    flags="$flags -Dzookeeper.snapshot.compression.method=$ZK_SNAPSHOT_COMPRESSION"
fi
# Keep the container reaper away: a deletion between reading the tree and the kill would make
# expected.json stale.
ZK_JVM_FLAGS="$flags" ZK_CONTAINER_CHECK_INTERVAL_MS=3600000 \
    "$repo/tests/compat/reference_zk.sh" "$port" "$out/zk" >/dev/null

kill_zk() {
    if [ -f "$out/zk/zk.pid" ]; then
        kill -KILL "$(cat "$out/zk/zk.pid")" 2>/dev/null || true
        rm -f "$out/zk/zk.pid"
    fi
}
trap kill_zk EXIT

"$python" - "$port" "$out" <<'PY'
import base64
import json
import os
import socket
import sys
import time
from collections import namedtuple

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError
from kazoo.protocol.serialization import Create2, long_struct
from kazoo.security import ACL, Id, OPEN_ACL_UNSAFE, make_digest_acl

port, out = int(sys.argv[1]), sys.argv[2]
hosts = "127.0.0.1:%d" % port
version2 = os.path.join(out, "zk", "data", "version-2")


class CreateContainer(Create2):
    """createContainer (opcode 19); kazoo has no API for it."""

    type = 19


class CreateTTL(namedtuple("CreateTTL", "path data acl flags ttl")):
    """createTTL (opcode 21): a create request plus the TTL in ms."""

    type = 21

    def serialize(self):
        b = bytearray(Create2(self.path, self.data, self.acl, self.flags).serialize())
        b.extend(long_struct.pack(self.ttl))
        return b

    deserialize = Create2.deserialize


def call(client, request):
    result = client.handler.async_result()
    client._call(request, result)
    return result.get(timeout=10)


def last_zxid():
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"srvr")
        text = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            text += chunk
    for line in text.decode().splitlines():
        if line.startswith("Zxid:"):
            return int(line.split()[1], 16)
    raise RuntimeError("no Zxid in srvr output: %r" % text)


def newest_snapshot_zxid():
    zxids = [int(n.split(".")[1], 16) for n in os.listdir(version2) if n.startswith("snapshot.")]
    return max(zxids, default=-1)


zk = KazooClient(hosts=hosts, timeout=10)
zk.start()
zk.add_auth("digest", "super:test")  # reads everything back, whatever the ACLs
other = KazooClient(hosts=hosts, timeout=10)
other.start()

user_acl = make_digest_acl("user", "secret", all=True)
reader_acl = make_digest_acl("reader", "pw", read=True)

# A znode with null data (zkCli's `create /path` without data): it must stay null.
zk.create("/null-data", None)

# Bulk: enough nodes and data that snapshots take a moment while writes go on (fuzzy ones).
zk.create("/bulk", b"")
pending = [zk.create_async("/bulk/n%04d" % i, os.urandom(700)) for i in range(1500)]
for p in pending:
    p.get(timeout=30)
pending = [zk.set_async("/bulk/n%04d" % i, b"v2-%d" % i) for i in range(0, 1500, 3)]
pending += [zk.delete_async("/bulk/n%04d" % i) for i in range(1, 1500, 7)]
for p in pending:
    p.get(timeout=30)

zk.create("/app", bytes(range(256)))
zk.create("/app/empty", b"")
zk.create("/app/big", os.urandom(200 * 1024))
zk.create("/app/cfg", b"v0")
for i in range(1, 6):
    zk.set("/app/cfg", b"v%d" % i)
for i in range(6):
    zk.create("/app/seq-", b"s%d" % i, sequence=True)
for name in zk.get_children("/app"):
    if name.startswith("seq-") and int(name[4:]) % 2 == 0:
        zk.delete("/app/" + name)
zk.create("/app/unicode-\u00fc\u00df\u4e2d", "\u00e9t\u00e9".encode())

# ACLs: a digest-only node, then setACL twice.
zk.add_auth("digest", "user:secret")
zk.create("/secure", b"top secret", acl=[user_acl])
zk.create("/secure/child", b"c", acl=[user_acl, reader_acl])
zk.set_acls("/secure", [user_acl, reader_acl])
zk.set_acls("/secure", [user_acl, ACL(1, Id("world", "anyone"))])

# Containers (one that has a child, one never used) and TTL nodes.
call(zk, CreateContainer("/box", b"c", OPEN_ACL_UNSAFE, 4))
zk.create("/box/item", b"i")
call(zk, CreateContainer("/box2", b"", OPEN_ACL_UNSAFE, 4))
call(zk, CreateTTL("/ttl", b"t", OPEN_ACL_UNSAFE, 5, 3600 * 1000))
call(zk, CreateTTL("/ttlseq-", b"ts", OPEN_ACL_UNSAFE, 6, 7200 * 1000))

# A quota on /app (as zkCli's setquota lays it out); the stats node is kept by the server.
zk.create("/zookeeper/quota/app/zookeeper_limits", b"count=1000,bytes=-1", makepath=True)
zk.create("/zookeeper/quota/app/zookeeper_stats", b"count=0,bytes=0")

# Multis: one that succeeds, one that fails (logged as a multi of errors).
t = zk.transaction()
t.create("/multi", b"m")
t.create("/multi/a", b"a")
t.set_data("/app/cfg", b"from-multi")
t.delete("/app/empty")
t.check("/app", 0)
t.commit()
t = zk.transaction()
t.create("/multi/b", b"b")
t.check("/app", 99)
t.commit()

# Failed requests are logged as error txns.
try:
    zk.create("/app", b"again")
except NodeExistsError:
    pass

# Ephemerals: a session that closes (closeSession with its paths) and one still open at the kill.
other.create("/app/gone", b"e", ephemeral=True)
other.create("/app/gone-seq-", b"e", ephemeral=True, sequence=True)
other.stop()
other.close()
zk.create("/app/live", b"e", ephemeral=True)
zk.create("/app/live-seq-", b"e", ephemeral=True, sequence=True)
zk.create("/bulk/eph", b"e", ephemeral=True)

# Deletes of nodes that older snapshots hold, then a few more writes.
zk.delete("/bulk/n0002")
zk.delete("/multi/a")
zk.set("/box", b"c2")

# Make sure the newest snapshot is followed by log entries: fewer than snapCount/2 writes
# after a snapshot never trigger another one.
for i in range(200):
    time.sleep(0.3)  # the snapshot thread runs in the background
    if newest_snapshot_zxid() >= 0 and last_zxid() - newest_snapshot_zxid() >= 3:
        break
    zk.set("/app/cfg", b"tail-%d" % i)
else:
    raise SystemExit("no log entries after the newest snapshot")


def stat_dict(s):
    return {
        "czxid": s.czxid, "mzxid": s.mzxid, "ctime": s.ctime, "mtime": s.mtime,
        "version": s.version, "cversion": s.cversion, "aversion": s.aversion,
        "ephemeralOwner": s.ephemeralOwner, "dataLength": s.dataLength,
        "numChildren": s.numChildren, "pzxid": s.pzxid,
    }


nodes = {}
stack = ["/"]
while stack:
    path = stack.pop()
    data, stat = zk.get(path)
    acls, _ = zk.get_acls(path)
    nodes[path] = {
        "data": None if data is None else base64.b64encode(data).decode(),
        "stat": stat_dict(stat),
        "acl": [{"perms": a.perms, "scheme": a.id.scheme, "id": a.id.id} for a in acls],
    }
    for child in zk.get_children(path):
        stack.append(("" if path == "/" else path) + "/" + child)

expected = {"last_zxid": last_zxid(), "snapshot_zxid": newest_snapshot_zxid(), "nodes": nodes}
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1, sort_keys=True)
print("%d nodes, last zxid %#x, newest snapshot %#x" % (
    len(nodes), expected["last_zxid"], expected["snapshot_zxid"]))
# No zk.stop(): the session must stay open (its ephemerals in the log) until the kill.
os._exit(0)
PY

kill_zk
trap - EXIT
echo "data directory: $out/zk/data"
