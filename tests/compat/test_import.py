"""`corral import --from-zookeeper`, end to end through clients.

The real Apache ZooKeeper 3.8 writes a data directory in the test itself
(crates/zkimport/tests/make_zk_datadir.sh: snapshots plus logs after the newest, every node type,
ACLs, a quota, multis; the whole tree read back through kazoo into expected.json; then SIGKILL).
`corral import` turns it into a Corral data directory, a Corral server starts on it, and kazoo
reads every node back from Corral: paths, data, all Stat fields and ACLs must be ZooKeeper's,
except that the dead sessions' ephemerals are gone (their parents show one child fewer and one
more change, as after ZooKeeper expires a session).
"""

import base64
import json
import os
import socket
import subprocess
import time

import pytest
from kazoo.client import KazooClient

from test_kazoo import SUPER_PASSWORD, SUPER_USER
from test_shell import CORRAL_BIN, REPO, _binary_present  # noqa: F401

MAKE_DATADIR = os.path.join(REPO, "crates", "zkimport", "tests", "make_zk_datadir.sh")
SUPER_DIGEST = "super:D/InIHSb7yEEbrWz8b9l71RjZJU="


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parent_of(path):
    return path.rsplit("/", 1)[0] or "/"


def expected_without_ephemerals(nodes):
    want = {p: dict(n, stat=dict(n["stat"])) for p, n in nodes.items()}
    ephemerals = [p for p, n in nodes.items() if n["stat"]["ephemeralOwner"] != 0]
    for p in ephemerals:
        del want[p]
        parent = want[parent_of(p)]["stat"]
        parent["numChildren"] -= 1
        parent["cversion"] += 1
    # The quota's usage is the server's own count of what is left under the quota'd path.
    for path, node in want.items():
        if path.startswith("/zookeeper/quota/") and path.endswith("/zookeeper_stats"):
            target = path[len("/zookeeper/quota"):-len("/zookeeper_stats")]
            under = [n for p, n in want.items() if p == target or p.startswith(target + "/")]
            data = "count=%d,bytes=%d" % (
                len(under), sum(len(base64.b64decode(n["data"] or "")) for n in under))
            node["data"] = base64.b64encode(data.encode()).decode()
            node["stat"]["dataLength"] = len(data)
    return want, len(ephemerals)


def read_tree(hosts):
    zk = KazooClient(hosts=hosts, auth_data=[("digest", f"{SUPER_USER}:{SUPER_PASSWORD}")])
    zk.start(timeout=15)
    seen = {}
    try:
        stack = ["/"]
        while stack:
            path = stack.pop()
            data, st = zk.get(path)
            acls, _ = zk.get_acls(path)
            seen[path] = {
                # Null data stays null (None), as make_zk_datadir.sh records ZooKeeper's.
                "data": None if data is None else base64.b64encode(data).decode(),
                "stat": {
                    "czxid": st.czxid, "mzxid": st.mzxid, "ctime": st.ctime, "mtime": st.mtime,
                    "version": st.version, "cversion": st.cversion, "aversion": st.aversion,
                    "ephemeralOwner": st.ephemeralOwner, "dataLength": st.dataLength,
                    "numChildren": st.numChildren, "pzxid": st.pzxid,
                },
                "acl": sorted((a.perms, a.id.scheme, a.id.id) for a in acls),
            }
            stack.extend(path.rstrip("/") + "/" + c for c in zk.get_children(path))
    finally:
        zk.stop()
        zk.close()
    return seen


def test_import_of_a_real_zookeeper_data_dir(tmp_path):
    out = tmp_path / "zk"
    subprocess.run([MAKE_DATADIR, str(out)], check=True, timeout=180,
                   stdout=subprocess.DEVNULL)
    expected = json.loads((out / "expected.json").read_text())
    want, dropped = expected_without_ephemerals(expected["nodes"])
    for node in want.values():
        node["acl"] = sorted((a["perms"], a["scheme"], a["id"]) for a in node["acl"])
    assert dropped >= 3, "the data dir has live sessions' ephemerals to drop"

    corral_dir = tmp_path / "corral"
    r = subprocess.run([CORRAL_BIN, "import", "--from-zookeeper", str(out / "zk" / "data"),
                        "--to", str(corral_dir)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ephemeral node(s)" in r.stdout, r.stdout
    # Importing into a directory that already holds data is refused.
    again = subprocess.run([CORRAL_BIN, "import", "--from-zookeeper", str(out / "zk" / "data"),
                            "--to", str(corral_dir)], capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "already holds Corral data" in again.stderr

    port = free_port()
    cfg = tmp_path / "zoo.cfg"
    cfg.write_text(f"tickTime=2000\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
                   f"dataDir={corral_dir}\nadmin.enableServer=false\nextendedTypesEnabled=true\n"
                   f"DigestAuthenticationProvider.superDigest={SUPER_DIGEST}\n"
                   "znode.container.checkIntervalMs=3600000\n")
    server = subprocess.Popen([CORRAL_BIN, "server", "--config", str(cfg)],
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "corral.log", "w"))
    try:
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "corral did not start on the imported data"
                time.sleep(0.1)
        got = read_tree(f"127.0.0.1:{port}")
    finally:
        server.terminate()
        server.wait(timeout=15)
    assert sorted(got) == sorted(want), "the imported paths differ"
    differences = [f"{p}:\n  corral    {got[p]}\n  zookeeper {want[p]}"
                   for p in sorted(want) if got[p] != want[p]]
    assert not differences, f"{len(differences)} of {len(want)} nodes differ:\n" + "\n".join(
        differences[:10])
