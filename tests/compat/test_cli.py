"""Compatibility tests driven through ZooKeeper's own command-line clients.

- `zkCli.sh` is the official Java client (org.apache.zookeeper.ZooKeeperMain). Run as
  `zkCli.sh -server HOSTS CMD ARGS` it executes one command; fed commands on stdin it keeps one
  session open, which the watch tests use. Normal output goes to stdout, errors and
  "Created ..." to stderr; a failed command exits with status 1.
- `cli_mt` is the C client's shell. Run with `-c CMD` it executes one command and prints
  everything, including `rc = N` (the ZooKeeper error code), to stderr, exiting 0 regardless.

Each JVM start costs about half a second, so a test batches related checks. Results are
cross-checked with a kazoo client where the CLI's own output does not show them. The fixtures
and the TCP proxy come from test_kazoo.py. Paths of the tools can be overridden with ZKCLI and
ZK_CLI_MT.
"""

import os
import queue
import re
import subprocess
import threading
import time
from collections import namedtuple

import pytest
from kazoo.security import make_digest_acl

from test_kazoo import (  # noqa: F401  (fixtures are used by name)
    REAPER_WAIT_S,
    SUPER_PASSWORD,
    SUPER_USER,
    USERS,
    WAIT_S,
    _prefix_cleanup,
    _test_deadline,
    make_client,
    proxy,
    root,
    split_hosts,
    wait_for,
    zk_hosts,
)

ZKCLI = os.environ.get("ZKCLI", "/usr/share/zookeeper/bin/zkCli.sh")
CLI_MT = os.environ.get("ZK_CLI_MT", "/usr/lib/zookeeper/bin/cli_mt")
# A JVM that cannot reach its server retries forever; this bounds every CLI run.
CLI_TIMEOUT_S = float(os.environ.get("ZK_CLI_TIMEOUT_S", "30"))

# Lines zkCli prints whatever the command: the banner, the connection event, SLF4J's notice.
NOISE = re.compile(
    r"^(SLF4J: .*|Connecting to .*|WATCHER::|"
    r"WatchedEvent state:SyncConnected type:None path:null|Welcome to ZooKeeper!|"
    r"JLine support is disabled|\s*)$"
)

Result = namedtuple("Result", "rc out err")


@pytest.fixture(autouse=True, scope="module")
def _tools_present():
    for tool in (ZKCLI, CLI_MT):
        if not os.access(tool, os.X_OK):
            pytest.fail("%s not found; apt-get install zookeeper zookeeper-bin" % tool)


def zkcli(hosts, *args):
    """Run one zkCli.sh command; stdout and stderr as lists of lines without the noise."""
    proc = subprocess.run(
        [ZKCLI, "-server", hosts, *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    clean = lambda text: [line for line in text.splitlines() if not NOISE.match(line)]
    return Result(proc.returncode, clean(proc.stdout), clean(proc.stderr))


def cli_mt(hosts, command):
    """Run one cli_mt batch command; its whole transcript (it writes it all to stderr)."""
    proc = subprocess.run(
        [CLI_MT, "-h", hosts, "-c", command],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def stat_fields(lines):
    """zkCli's `name = value` stat lines as a dict."""
    fields = {}
    for line in lines:
        m = re.fullmatch(r"(\w+) = (.*)", line)
        if m:
            fields[m.group(1)] = m.group(2)
    return fields


def rc_of(transcript, path):
    """The `PATH: rc = N` (or `[PATH]: rc = N` for creates) code cli_mt printed."""
    m = re.search(r"^\[?%s\]?: rc = (-?\d+)" % re.escape(path), transcript, re.M)
    assert m, "no rc line for %s in:\n%s" % (path, transcript)
    return int(m.group(1))


class ZkCliSession:
    """zkCli.sh reading commands from stdin: one session, output read line by line."""

    def __init__(self, hosts):
        self.proc = subprocess.Popen(
            [ZKCLI, "-server", hosts],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines = queue.Queue()
        self.transcript = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def send(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def expect(self, pattern, timeout=WAIT_S * 2):
        """Consume output until a line matches `pattern` (a full-line regex); return the match."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                raise AssertionError(
                    "zkCli printed no line matching %r within %.1f s; output so far:\n%s"
                    % (pattern, timeout, "\n".join(self.transcript))
                )
            self.transcript.append(line)
            m = re.fullmatch(pattern, line)
            if m:
                return m

    def expect_all(self, patterns, timeout=WAIT_S * 2):
        """Consume output until every pattern has matched some line, in any order."""
        pending = list(patterns)
        deadline = time.monotonic() + timeout
        while pending:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                raise AssertionError(
                    "zkCli never printed %r within %.1f s; output so far:\n%s"
                    % (pending, timeout, "\n".join(self.transcript))
                )
            self.transcript.append(line)
            pending = [p for p in pending if not re.fullmatch(p, line)]

    def quit(self):
        """Send `quit` and return zkCli's exit status."""
        self.send("quit")
        return self.proc.wait(timeout=WAIT_S * 2)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=WAIT_S)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        try:
            self.proc.stdin.close()
        except OSError:
            pass


@pytest.fixture
def zkcli_session():
    sessions = []

    def start(hosts):
        session = ZkCliSession(hosts)
        sessions.append(session)
        session.expect(r"WatchedEvent state:SyncConnected type:None path:null")
        return session

    yield start
    for session in sessions:
        session.close()


def event(kind, path):
    return r"WatchedEvent state:SyncConnected type:%s path:%s" % (kind, re.escape(path))


# --------------------------------------------------------------------------------------------
# zkCli.sh, one command per JVM


def test_zkcli_create_get_set(zk_hosts, make_client, root):
    zk = make_client()
    node = root + "/n"

    r = zkcli(zk_hosts, "create", node, "hello")
    assert (r.rc, r.err) == (0, ["Created " + node])
    r = zkcli(zk_hosts, "create", node, "again")
    assert (r.rc, r.err) == (1, ["Node already exists: " + node])

    r = zkcli(zk_hosts, "get", node)
    assert (r.rc, r.out) == (0, ["hello"])
    # Created without data, a node holds null, which zkCli prints as "null".
    r = zkcli(zk_hosts, "create", node + "-nodata")
    assert (r.rc, r.err) == (0, ["Created " + node + "-nodata"])
    r = zkcli(zk_hosts, "get", node + "-nodata")
    assert (r.rc, r.out) == (0, ["null"])
    r = zkcli(zk_hosts, "set", node, "world")
    assert (r.rc, r.out, r.err) == (0, [], [])
    r = zkcli(zk_hosts, "set", "-v", "0", node, "stale")
    assert (r.rc, r.err) == (1, ["version No is not valid : " + node])

    data, stat = zk.get(node)
    assert data == b"world" and stat.version == 1
    r = zkcli(zk_hosts, "get", "-s", node)
    assert r.rc == 0 and r.out[0] == "world"
    fields = stat_fields(r.out[1:])
    assert fields["cZxid"] == hex(stat.czxid) and fields["mZxid"] == hex(stat.mzxid)
    assert fields["pZxid"] == hex(stat.pzxid)
    assert (fields["dataVersion"], fields["cversion"], fields["aclVersion"]) == ("1", "0", "0")
    assert (fields["dataLength"], fields["numChildren"], fields["ephemeralOwner"]) == ("5", "0", "0x0")


def test_zkcli_stat_ls_and_errors(zk_hosts, make_client, root):
    zk = make_client()
    node = zk.create(root + "/n")
    zk.create(node + "/b")
    zk.create(node + "/a")
    r = zkcli(zk_hosts, "stat", node)
    assert r.rc == 0
    fields = stat_fields(r.out)
    assert (fields["numChildren"], fields["cversion"]) == ("2", "2")
    r = zkcli(zk_hosts, "ls", node)
    assert (r.rc, r.out) == (0, ["[a, b]"])
    r = zkcli(zk_hosts, "ls", "-R", root)
    assert (r.rc, r.out) == (0, [root, node, node + "/a", node + "/b"])
    r = zkcli(zk_hosts, "getAllChildrenNumber", root)
    assert (r.rc, r.out) == (0, ["3"])

    r = zkcli(zk_hosts, "get", root + "/missing")
    assert (r.rc, r.err) == (1, ["Node does not exist: " + root + "/missing"])
    r = zkcli(zk_hosts, "create", root + "/missing/child")
    assert (r.rc, r.err) == (1, ["Node does not exist: " + root + "/missing/child"])


def test_zkcli_node_modes(zk_hosts, make_client, root):
    zk = make_client()
    r = zkcli(zk_hosts, "create", "-s", root + "/seq-", "x")
    assert (r.rc, r.err) == (0, ["Created %s/seq-0000000000" % root])
    r = zkcli(zk_hosts, "create", "-s", root + "/seq-", "y")
    assert (r.rc, r.err) == (0, ["Created %s/seq-0000000001" % root])
    assert zk.get(root + "/seq-0000000001")[0] == b"y"

    r = zkcli(zk_hosts, "create", "-c", root + "/box")
    assert (r.rc, r.err) == (0, ["Created %s/box" % root])
    zk.create(root + "/box/item")
    zk.delete(root + "/box/item")
    wait_for(lambda: zk.exists(root + "/box") is None, REAPER_WAIT_S, "the emptied container to go")

    r = zkcli(zk_hosts, "create", "-t", "60000", root + "/ttl", "t")
    assert (r.rc, r.err) == (0, ["Created %s/ttl" % root])
    assert zk.get(root + "/ttl")[0] == b"t"

    # -s -e in one JVM run: the node is ephemeral, owned by zkCli's session
    r = zkcli(zk_hosts, "create", "-s", "-e", root + "/es-")
    assert r.rc == 0
    m = re.fullmatch(r"Created (%s/es-\d{10})" % re.escape(root), r.err[0])
    assert m, r.err
    assert zk.exists(m.group(1)).ephemeralOwner not in (0, zk.client_id[0])


def test_zkcli_ephemeral_goes_with_session(zk_hosts, make_client, root, zkcli_session):
    zk = make_client()
    cli = zkcli_session(zk_hosts)
    cli.send("create -e %s/eph alive" % root)
    cli.expect(r"Created %s/eph" % re.escape(root))
    owner = zk.exists(root + "/eph").ephemeralOwner
    assert owner != 0
    cli.send("getEphemerals %s" % root)
    cli.expect(r"\[%s/eph\]" % re.escape(root))
    # quit closes the session before the JVM exits. (Not checked through the "state:Closed"
    # event zkCli prints: System.exit can beat the event thread to it.)
    assert cli.quit() == 0
    wait_for(lambda: zk.exists(root + "/eph") is None, what="the ephemeral to go with the session")


def test_zkcli_delete_and_deleteall(zk_hosts, make_client, root):
    zk = make_client()
    zk.create(root + "/d/x/y", b"", makepath=True)
    zk.create(root + "/d/z")
    r = zkcli(zk_hosts, "delete", root + "/d")
    assert (r.rc, r.err) == (1, ["Node not empty: %s/d" % root])
    r = zkcli(zk_hosts, "delete", "-v", "3", root + "/d/z")
    assert (r.rc, r.err) == (1, ["version No is not valid : %s/d/z" % root])
    r = zkcli(zk_hosts, "delete", root + "/d/z")
    assert (r.rc, r.err) == (0, [])
    assert zk.exists(root + "/d/z") is None
    r = zkcli(zk_hosts, "delete", root + "/d/z")
    assert (r.rc, r.err) == (1, ["Node does not exist: %s/d/z" % root])
    r = zkcli(zk_hosts, "deleteall", root + "/d")
    assert (r.rc, r.err) == (0, [])
    assert zk.exists(root + "/d") is None
    assert zk.get_children(root) == []


def test_zkcli_acls(zk_hosts, make_client, root, zkcli_session):
    zk = make_client()
    node = zk.create(root + "/guarded", b"payload")
    r = zkcli(zk_hosts, "getAcl", node)
    assert (r.rc, r.out) == (0, ["'world,'anyone", ": cdrwa"])

    digest_id = make_digest_acl("alice", USERS["alice"]).id.id  # alice:base64(sha1(...))
    r = zkcli(zk_hosts, "setAcl", node, "digest:%s:cdrwa" % digest_id)
    assert (r.rc, r.err) == (0, [])
    # exists needs READ since ZooKeeper 3.8.4/3.9.2 (ZOOKEEPER-2590), so ask as the super user.
    admin_zk = make_client(auth=[(SUPER_USER, SUPER_PASSWORD)])
    assert admin_zk.exists(node).aversion == 1
    r = zkcli(zk_hosts, "get", node)
    assert (r.rc, r.err) == (1, ["Insufficient permission : " + node])
    r = zkcli(zk_hosts, "getAcl", node)
    assert (r.rc, r.err) == (1, ["Insufficient permission : " + node])

    cli = zkcli_session(zk_hosts)
    cli.send("addauth digest alice:%s" % USERS["alice"])
    cli.send("get %s" % node)
    cli.expect(r"payload")
    cli.send("getAcl %s" % node)
    cli.expect(r"'digest,'%s" % re.escape(digest_id))
    cli.expect(r": cdrwa")
    cli.send("setAcl %s world:anyone:r" % node)
    cli.send("getAcl %s" % node)
    cli.expect(r"'world,'anyone")
    cli.expect(r": r")

    r = zkcli(zk_hosts, "get", node)
    assert (r.rc, r.out) == (0, ["payload"])
    r = zkcli(zk_hosts, "set", node, "nope")
    assert (r.rc, r.err) == (1, ["Insufficient permission : " + node])

    admin = zkcli_session(zk_hosts)
    admin.send("addauth digest %s:%s" % (SUPER_USER, SUPER_PASSWORD))
    admin.send("set %s by-super" % node)
    admin.send("get %s" % node)
    admin.expect(r"by-super")
    assert zk.get(node)[0] == b"by-super"


# --------------------------------------------------------------------------------------------
# zkCli.sh sessions: watches


def test_zkcli_one_shot_watches(zk_hosts, make_client, root, zkcli_session):
    zk = make_client()
    node = zk.create(root + "/w", b"v0")
    cli = zkcli_session(zk_hosts)
    cli.send("get -w %s" % node)
    cli.expect(r"v0")
    cli.send("ls -w %s" % node)
    cli.expect(r"\[\]")
    zk.set(node, b"v1")
    cli.expect(event("NodeDataChanged", node))
    zk.create(node + "/kid")
    cli.expect(event("NodeChildrenChanged", node))
    zk.set(node, b"v2")  # the data watch was used up: no event for this one
    cli.send("stat -w %s/later" % root)
    cli.expect(r"Node does not exist: %s/later" % re.escape(root))
    zk.create(root + "/later")
    m = cli.expect(r"WatchedEvent state:SyncConnected type:(\w+) path:(.*)")
    assert m.groups() == ("NodeCreated", root + "/later")


def test_zkcli_persistent_recursive_watch(zk_hosts, make_client, root, zkcli_session):
    zk = make_client()
    cli = zkcli_session(zk_hosts)
    cli.send("addWatch -m PERSISTENT_RECURSIVE %s" % root)
    cli.send("ls %s" % root)  # a round trip, so the watch is in place before the changes
    cli.expect(r"\[\]")
    zk.create(root + "/a")
    zk.create(root + "/a/b")
    zk.set(root + "/a/b", b"1")
    zk.delete(root + "/a/b")
    kinds = []
    for _ in range(4):
        m = cli.expect(r"WatchedEvent state:SyncConnected type:(\w+) path:(.*)")
        kinds.append(m.groups())
    assert kinds == [
        ("NodeCreated", root + "/a"),
        ("NodeCreated", root + "/a/b"),
        ("NodeDataChanged", root + "/a/b"),
        ("NodeDeleted", root + "/a/b"),
    ]


def test_zkcli_watches_restored_after_reconnect(zk_hosts, make_client, proxy, root, zkcli_session):
    """The Java client re-registers its watches (SetWatches) when it reconnects, and the server
    fires at once those whose node changed while the client was away."""
    _, chroot = split_hosts(zk_hosts)
    zk = make_client()
    node = zk.create(root + "/w", b"v0")
    cli = zkcli_session(proxy.hosts(chroot))
    cli.send("create -e %s/eph" % root)
    cli.expect(r"Created %s/eph" % re.escape(root))
    owner = zk.exists(root + "/eph").ephemeralOwner
    cli.send("get -w %s" % node)
    cli.expect(r"v0")
    cli.send("ls -w %s" % root)
    cli.expect(r"\[eph, w\]")
    cli.send("stat -w %s/born" % root)
    cli.expect(r"Node does not exist: %s/born" % re.escape(root))

    proxy.refuse()
    proxy.drop()
    cli.expect(r"WatchedEvent state:Disconnected type:None path:null")
    zk.set(node, b"v1")
    zk.create(root + "/born")
    proxy.accept()
    cli.expect_all(
        [
            r"WatchedEvent state:SyncConnected type:None path:null",
            event("NodeDataChanged", node),
            event("NodeCreated", root + "/born"),
            event("NodeChildrenChanged", root),
        ]
    )
    # same session: its ephemeral is still there and still its own
    assert zk.exists(root + "/eph").ephemeralOwner == owner


# --------------------------------------------------------------------------------------------
# The C client


def test_c_client_create_get_set_ls_delete(zk_hosts, make_client, root):
    zk = make_client()
    node = root + "/c"
    out = cli_mt(zk_hosts, "create %s" % node)
    assert rc_of(out, node) == 0 and "name = %s\n" % node in out
    assert zk.get(node)[0] == b"new"  # cli_mt's create always writes "new"
    out = cli_mt(zk_hosts, "create %s" % node)
    assert rc_of(out, node) == -110  # ZNODEEXISTS

    out = cli_mt(zk_hosts, "get %s" % node)
    assert rc_of(out, node) == 0
    assert re.search(r"value_len = 3\nnew\n", out)
    assert re.search(r"czxid=%x\n" % zk.exists(node).czxid, out)

    out = cli_mt(zk_hosts, "set %s world" % node)
    assert rc_of(out, node) == 0 and "version=1" in out
    assert zk.get(node)[0] == b"world"

    out = cli_mt(zk_hosts, "create +s %s/q" % node)
    assert rc_of(out, node + "/q") == 0 and "name = %s/q0000000000\n" % node in out
    out = cli_mt(zk_hosts, "create +e %s/e" % node)
    assert rc_of(out, node + "/e") == 0
    # cli_mt closed its session on exit, taking the ephemeral with it
    assert zk.exists(node + "/e") is None
    zk.create(node + "/plain")

    out = cli_mt(zk_hosts, "ls %s" % node)
    assert rc_of(out, node) == 0
    listed = re.findall(r"^\t(\S+)$", out, re.M)
    assert sorted(listed) == ["plain", "q0000000000"]

    out = cli_mt(zk_hosts, "delete %s" % node)
    assert rc_of(out, node) == -111  # ZNOTEMPTY
    for child in ("q0000000000", "plain"):
        out = cli_mt(zk_hosts, "delete %s/%s" % (node, child))
        assert rc_of(out, "%s/%s" % (node, child)) == 0
    out = cli_mt(zk_hosts, "delete %s" % node)
    assert rc_of(out, node) == 0
    assert zk.exists(node) is None
    out = cli_mt(zk_hosts, "get %s" % node)
    assert rc_of(out, node) == -101  # ZNONODE
    out = cli_mt(zk_hosts, "create %s/x/y" % node)
    assert rc_of(out, node + "/x/y") == -101


def test_c_client_container_and_ttl(zk_hosts, make_client, root):
    zk = make_client()
    out = cli_mt(zk_hosts, "create +c %s/box" % root)
    assert rc_of(out, root + "/box") == 0
    out = cli_mt(zk_hosts, "create +t=60000 %s/ttl" % root)
    assert rc_of(out, root + "/ttl") == 0
    assert zk.exists(root + "/ttl") is not None
    zk.create(root + "/box/item")
    zk.delete(root + "/box/item")
    wait_for(lambda: zk.exists(root + "/box") is None, REAPER_WAIT_S, "the emptied container to go")


def test_zkcli_quotas(zk_hosts, make_client, root):
    """setquota/listquota/delquota: the client writes /zookeeper/quota, the server keeps usage."""
    zk = make_client()
    quota_dir = "/zookeeper/quota" + root
    try:
        zk.create(root + "/q", b"x")
        zk.create(root + "/q/a", b"yy")
        r = zkcli(zk_hosts, "setquota", "-n", "5", root + "/q")
        assert r.rc == 0, r
        r = zkcli(zk_hosts, "listquota", root + "/q")
        assert r.err == ["absolute path is %s/q/zookeeper_limits" % quota_dir], r
        # (ZooKeeper 3.8.0's zkCli writes its limits in this garbled form; servers must cope.)
        assert r.out == [
            "Output quota for %s/q count=5,bytes=-1=;byteHardLimit=-1;countHardLimit=-1" % root,
            "Output stat for %s/q count=2,bytes=3" % root,
        ], r
        # The server tracks creates, data changes and deletes under the quota'd path.
        zk.create(root + "/q/b", b"zzz")
        zk.set(root + "/q/a", b"y")
        stats = quota_dir + "/q/zookeeper_stats"
        assert zk.get(stats)[0] == b"count=3,bytes=5"
        zk.delete(root + "/q/b")
        assert zk.get(stats)[0] == b"count=2,bytes=2"
        # Six nodes pass the soft limit of five: logged by the server, not refused.
        for i in range(4):
            zk.create("%s/q/n%d" % (root, i))
        assert zk.get(stats)[0] == b"count=6,bytes=2"
        # A quota inside a quota'd subtree is refused by the client.
        r = zkcli(zk_hosts, "setquota", "-n", "2", root + "/q/a")
        assert r.rc != 0 or any("has a parent" in line for line in r.out + r.err), r
        r = zkcli(zk_hosts, "delquota", "-n", root + "/q")
        assert r.rc == 0, r
        r = zkcli(zk_hosts, "listquota", root + "/q")
        assert any(line.startswith("Output quota for %s/q count=-1," % root) for line in r.out), r
    finally:
        if zk.exists(quota_dir):
            zk.delete(quota_dir, recursive=True)
