"""Client-compatibility tests driven through kazoo, the Python ZooKeeper client.

The server under test is named by the environment variable ZK_HOSTS (for example
`127.0.0.1:2181`). The suite is validated against the real Apache ZooKeeper 3.8 (see
reference_zk.sh), so every assertion here is something ZooKeeper 3.8 really does; pointed at
Corral, a failure means Corral differs from ZooKeeper in a way a client can see.

Each test works under its own fresh root, `/corral-compat/<test>-<random>`, and removes it
afterwards. Every wait is bounded by WAIT_S (env ZK_WAIT_S, default 5 s) so a missing
notification fails the test instead of hanging it.

kazoo 2.11 has no API for container nodes, TTL nodes, persistent watches or removeWatches.
For those the tests send the wire requests themselves through kazoo's connection (small request
classes below, `client._call`), and `RawEvents` taps the notifications kazoo receives before
its own watcher bookkeeping drops the ones it did not ask for. Everything else is kazoo's
public API, as an application would use it.

This module also holds the fixtures and the TCP proxy that test_cli.py and test_ops.py import (the
suite keeps its shared pieces here on purpose; there is no conftest.py).
"""

import os
import queue
import re
import signal
import socket
import threading
import time
import uuid
from collections import namedtuple

import pytest
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadArgumentsError,
    BadVersionError,
    InvalidACLError,
    LockTimeout,
    NoAuthError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    NoWatcherError,
    RolledBackError,
    RuntimeInconsistency,
)
from kazoo.protocol.serialization import Create2, Watch, int_struct, long_struct, write_string
from kazoo.protocol.states import EventType, ZnodeStat
from kazoo.security import OPEN_ACL_UNSAFE, make_acl, make_digest_acl

WAIT_S = float(os.environ.get("ZK_WAIT_S", "5"))
# How long the server may take to delete an emptied container node. ZooKeeper checks every
# znode.container.checkIntervalMs (60 s by default); reference_zk.sh sets it to 500 ms.
REAPER_WAIT_S = float(os.environ.get("ZK_REAPER_WAIT_S", "5"))
# Upper bound on a whole test, setup and teardown included; a backstop for calls that never return.
TEST_TIMEOUT_S = float(os.environ.get("ZK_TEST_TIMEOUT_S", "30"))
ROOT_PREFIX = "/corral-compat"
SESSION_TIMEOUT_S = 10.0

# Test users for digest ACLs. The cleanup client authenticates as all of them, so nodes a
# test protects with these users can always be removed afterwards.
USERS = {"alice": "alice-secret", "bob": "bob-secret"}
SUPER_USER, SUPER_PASSWORD = "super", "test"  # the server's superDigest user (shared/README.md)


# --------------------------------------------------------------------------------------------
# Fixtures shared with test_cli.py


def zk_hosts_from_env():
    hosts = os.environ.get("ZK_HOSTS", "").strip()
    if not hosts:
        pytest.exit("ZK_HOSTS is not set (e.g. ZK_HOSTS=127.0.0.1:2181)", returncode=2)
    return hosts


def split_hosts(hosts):
    """'h1:p1,h2:p2/chroot' -> ([('h1', p1), ('h2', p2)], '/chroot' or '')."""
    chroot = ""
    if "/" in hosts:
        hosts, chroot = hosts.split("/", 1)
        chroot = "/" + chroot
    pairs = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        pairs.append((host or "127.0.0.1", int(port or 2181)))
    return pairs, chroot


@pytest.fixture(scope="session")
def zk_hosts():
    return zk_hosts_from_env()


@pytest.fixture(autouse=True)
def _test_deadline():
    """Fail a test that runs longer than TEST_TIMEOUT_S instead of hanging the suite.

    Every wait in the tests is bounded, but kazoo's blocking calls are not: a server that keeps
    the connection alive yet never answers one request would block forever. SIGALRM interrupts
    the main thread wherever it waits.
    """

    def expire(signum, frame):
        raise TimeoutError("test exceeded %.0f s (ZK_TEST_TIMEOUT_S)" % TEST_TIMEOUT_S)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT_S)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def new_client(hosts, auth=(), **kwargs):
    """A started KazooClient with short retry delays so reconnects are quick."""
    kwargs.setdefault("timeout", SESSION_TIMEOUT_S)
    kwargs.setdefault(
        "connection_retry", dict(max_tries=-1, delay=0.05, backoff=1.5, max_delay=0.5)
    )
    kwargs.setdefault(
        "command_retry", dict(max_tries=100, delay=0.01, backoff=1.5, max_delay=0.2)
    )
    client = KazooClient(hosts=hosts, **kwargs)
    client.start(timeout=WAIT_S * 2)
    for user, password in auth:
        client.add_auth("digest", "%s:%s" % (user, password))
    return client


@pytest.fixture
def make_client(zk_hosts):
    """Factory for connected clients; all of them are stopped and closed at teardown."""
    clients = []

    def make(hosts=None, **kwargs):
        client = new_client(hosts or zk_hosts, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        try:
            client.stop()
            client.close()
        except Exception:
            pass


@pytest.fixture(scope="session")
def _prefix_cleanup(zk_hosts):
    yield
    client = new_client(zk_hosts)
    try:
        client.delete(ROOT_PREFIX)  # only if every test cleaned up after itself
    except (NoNodeError, NotEmptyError):
        pass
    finally:
        client.stop()
        client.close()


@pytest.fixture
def root(request, zk_hosts, _prefix_cleanup):
    """A fresh, empty persistent node for this test alone; deleted with its subtree afterwards."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)[:60]
    path = "%s/%s-%s" % (ROOT_PREFIX, name, uuid.uuid4().hex[:8])
    admin = new_client(zk_hosts, auth=USERS.items())
    admin.ensure_path(ROOT_PREFIX)
    admin.create(path)
    yield path
    try:
        admin.delete(path, recursive=True)
    except NoNodeError:
        pass
    finally:
        admin.stop()
        admin.close()


class TcpProxy:
    """A TCP forwarder between clients and one server that a test can cut.

    `drop()` closes every forwarded connection at once, which a client sees as the server going
    away mid-session; `refuse()` makes new connections close immediately (as if the server were
    unreachable) until `accept()`. Used to test reconnection and session resumption without
    touching the server.
    """

    def __init__(self, upstream):
        self.upstream = upstream
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs = []
        self._refusing = threading.Event()
        self._stopped = threading.Event()
        self.accepted = 0  # connections forwarded so far
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def hosts(self, chroot=""):
        return "127.0.0.1:%d%s" % (self.port, chroot)

    def _accept_loop(self):
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self._refusing.is_set():
                conn.close()
                continue
            try:
                up = socket.create_connection(self.upstream, timeout=WAIT_S)
                up.settimeout(None)
                conn.settimeout(None)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._pairs.append((conn, up))
                self.accepted += 1
            for src, dst in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def drop(self):
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def refuse(self):
        self._refusing.set()

    def accept(self):
        self._refusing.clear()

    def close(self):
        self._stopped.set()
        self.refuse()
        self._thread.join(timeout=2)
        self._listener.close()
        self.drop()


@pytest.fixture
def proxy(zk_hosts):
    pairs, _chroot = split_hosts(zk_hosts)
    p = TcpProxy(pairs[0])
    yield p
    p.close()


# --------------------------------------------------------------------------------------------
# Wire requests kazoo 2.11 has no API for, and a tap on raw notifications

# CreateMode flags and ZooDefs.OpCode values from ZooKeeper 3.8.
MODE_PERSISTENT_WITH_TTL = 5
MODE_PERSISTENT_SEQUENTIAL_WITH_TTL = 6
MODE_CONTAINER = 4
ADD_WATCH_PERSISTENT = 0
ADD_WATCH_PERSISTENT_RECURSIVE = 1
WATCHER_TYPE_ANY = 3

EVENT_NAMES = {1: "created", 2: "deleted", 3: "changed", 4: "child"}


class CreateContainer(Create2):
    """createContainer (opcode 19): a CreateRequest with the CONTAINER flag; Create2Response."""

    type = 19


class CreateTTL(namedtuple("CreateTTL", "path data acl flags ttl")):
    """createTTL (opcode 21): CreateTTLRequest = CreateRequest + ttl (ms); Create2Response."""

    type = 21

    def serialize(self):
        b = bytearray(Create2(self.path, self.data, self.acl, self.flags).serialize())
        b.extend(long_struct.pack(self.ttl))
        return b

    deserialize = Create2.deserialize


class AddWatch(namedtuple("AddWatch", "path mode")):
    """addWatch (opcode 106, ZooKeeper 3.6+): a persistent or persistent-recursive watch."""

    type = 106

    def serialize(self):
        return write_string(self.path) + int_struct.pack(self.mode)

    @classmethod
    def deserialize(cls, buffer, offset):
        return True


class RemoveWatches(namedtuple("RemoveWatches", "path watcher_type")):
    """removeWatches (opcode 18)."""

    type = 18

    def serialize(self):
        return write_string(self.path) + int_struct.pack(self.watcher_type)

    @classmethod
    def deserialize(cls, buffer, offset):
        return True


def call(client, request):
    """Send a raw request on a kazoo client and wait for its reply (raises kazoo exceptions)."""
    result = client.handler.async_result()
    client._call(request, result)
    return result.get(timeout=WAIT_S)


class RawEvents:
    """Every watch notification `client` receives, in arrival order, as (kind, path).

    Recorded on kazoo's connection thread as the frame is read, so an event that the server sent
    before a reply is already here when the call that got the reply returns.
    """

    def __init__(self, client):
        self.queue = queue.Queue()
        connection = client._connection
        original = connection._read_watch_event

        def tap(buffer, offset):
            watch, _ = Watch.deserialize(buffer, offset)
            self.queue.put((EVENT_NAMES.get(watch.type, watch.type), watch.path))
            return original(buffer, offset)

        connection._read_watch_event = tap

    def next(self, timeout=WAIT_S):
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no watch notification within %.1f s" % timeout)

    def take(self, n):
        return [self.next() for _ in range(n)]


def wait_for(predicate, timeout=WAIT_S, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))


def next_item(q, timeout=WAIT_S, what="callback"):
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))


def assert_nothing(q, timeout=0.3, what="nothing"):
    try:
        item = q.get(timeout=timeout)
    except queue.Empty:
        return
    raise AssertionError("expected %s, got %r" % (what, item))


def run_thread(target, *args):
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def join_all(threads, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t for t in threads if t.is_alive()]
    assert not alive, "%d thread(s) still blocked after %.1f s" % (len(alive), timeout)


# --------------------------------------------------------------------------------------------
# CRUD and stat


def test_create_get_set_delete_with_stat(make_client, root):
    zk = make_client()
    before_ms = int(time.time() * 1000)
    path, created = zk.create(root + "/node", b"v1", include_data=True)
    assert path == root + "/node"

    data, stat = zk.get(path)
    assert data == b"v1"
    assert stat == created
    assert stat.version == 0 and stat.cversion == 0 and stat.aversion == 0
    assert stat.dataLength == 2 and stat.numChildren == 0
    assert stat.ephemeralOwner == 0
    assert stat.czxid > 0 and stat.mzxid == stat.czxid and stat.pzxid == stat.czxid
    assert stat.ctime == stat.mtime
    # ctime is wall-clock milliseconds (generous bound for clock skew between hosts)
    assert abs(stat.ctime - before_ms) < 300_000

    set_stat = zk.set(path, b"value-two")
    data, stat = zk.get(path)
    assert data == b"value-two"
    assert stat == set_stat
    assert stat.version == 1 and stat.dataLength == 9
    assert stat.mzxid > stat.czxid and stat.czxid == created.czxid
    assert stat.mtime >= stat.ctime
    assert stat.cversion == 0  # data changes do not touch the child version

    assert zk.exists(path) == stat
    zk.delete(path)
    assert zk.exists(path) is None
    with pytest.raises(NoNodeError):
        zk.get(path)


def test_null_data_reads_back_as_none(make_client, root):
    # A znode created or set with no data at all (None, the Java client's null) keeps it: a
    # client reads None back, not b"" (which is what empty data reads as).
    zk = make_client()
    zk.create(root + "/null", None)
    zk.create(root + "/empty", b"")
    data, stat = zk.get(root + "/null")
    assert (data, stat.dataLength) == (None, 0)
    assert zk.get(root + "/empty")[0] == b""
    zk.set(root + "/empty", None)
    assert zk.get(root + "/empty")[0] is None
    zk.set(root + "/null", b"x")
    assert zk.get(root + "/null")[0] == b"x"


def test_parent_stat_tracks_children(make_client, root):
    zk = make_client()
    _, parent0 = zk.get(root)
    _, child = zk.create(root + "/a", include_data=True)
    zk.create(root + "/b")
    _, parent = zk.get(root)
    assert parent.numChildren == 2
    assert parent.cversion == parent0.cversion + 2
    assert parent.pzxid > child.czxid  # the zxid of the last child change (creating b)
    assert parent.version == parent0.version and parent.mzxid == parent0.mzxid
    assert sorted(zk.get_children(root)) == ["a", "b"]

    zk.delete(root + "/a")
    _, parent2 = zk.get(root)
    assert parent2.numChildren == 1
    assert parent2.cversion == parent.cversion + 1
    assert parent2.pzxid > parent.pzxid
    assert zk.get_children(root) == ["b"]

    children, stat = zk.get_children(root, include_data=True)
    assert children == ["b"] and stat == parent2


def test_data_round_trips_exactly(make_client, root):
    zk = make_client()
    every_byte = bytes(range(256)) * 4
    zk.create(root + "/bin", every_byte)
    assert zk.get(root + "/bin")[0] == every_byte
    zk.create(root + "/empty", b"")
    data, stat = zk.get(root + "/empty")
    assert data == b"" and stat.dataLength == 0
    big = os.urandom(512 * 1024)
    zk.create(root + "/big", big)
    data, stat = zk.get(root + "/big")
    assert data == big and stat.dataLength == len(big)
    utf8_name = root + "/n\u00e9\u4e2d"
    zk.create(utf8_name, b"x")
    assert "n\u00e9\u4e2d" in zk.get_children(root)


def test_errors(make_client, root):
    zk = make_client()
    with pytest.raises(NoNodeError):
        zk.create(root + "/missing/child")
    with pytest.raises(NoNodeError):
        zk.delete(root + "/missing")
    with pytest.raises(NoNodeError):
        zk.set(root + "/missing", b"x")
    with pytest.raises(NoNodeError):
        zk.get_children(root + "/missing")
    assert zk.exists(root + "/missing") is None

    zk.create(root + "/n", b"1")
    with pytest.raises(NodeExistsError):
        zk.create(root + "/n", b"2")
    assert zk.get(root + "/n")[0] == b"1"

    zk.create(root + "/n/child")
    with pytest.raises(NotEmptyError):
        zk.delete(root + "/n")
    assert zk.exists(root + "/n") is not None

    zk.create(root + "/eph", ephemeral=True)
    with pytest.raises(NoChildrenForEphemeralsError):
        zk.create(root + "/eph/child")

    # makepath creates missing ancestors
    zk.create(root + "/x/y/z", b"deep", makepath=True)
    assert zk.get(root + "/x/y/z")[0] == b"deep"
    assert zk.get_children(root + "/x") == ["y"]


def test_versions_and_bad_version(make_client, root):
    zk = make_client()
    path = zk.create(root + "/v", b"0")
    assert zk.set(path, b"1", version=0).version == 1
    with pytest.raises(BadVersionError):
        zk.set(path, b"stale", version=0)
    assert zk.get(path)[0] == b"1"
    assert zk.set(path, b"2", version=-1).version == 2  # -1 matches any version
    with pytest.raises(BadVersionError):
        zk.delete(path, version=1)
    assert zk.exists(path) is not None
    zk.delete(path, version=2)
    assert zk.exists(path) is None


# --------------------------------------------------------------------------------------------
# Node types


def test_sequential_nodes(make_client, root):
    zk = make_client()
    q = zk.create(root + "/q")
    names = [zk.create(q + "/item-", b"%d" % i, sequence=True) for i in range(5)]
    assert names == ["%s/item-%010d" % (q, i) for i in range(5)]
    assert sorted(zk.get_children(q)) == [n.rsplit("/", 1)[1] for n in names]
    # the counter belongs to the parent, shared by every prefix, and never reused after deletes
    other = zk.create(q + "/other-", sequence=True)
    assert other == "%s/other-%010d" % (q, 5)
    zk.delete(names[-1])
    zk.delete(names[0])
    assert zk.exists(q).cversion == 6 + 2  # the visible cversion counts creates and deletes
    after_delete = zk.create(q + "/item-", sequence=True)
    suffix = int(after_delete[-10:])
    # ZooKeeper numbers a child by how many children were ever created under the parent: deletes
    # bump the visible cversion but not the counter, and no number is handed out twice.
    assert suffix == 6
    assert after_delete not in names
    eph_seq = zk.create(q + "/e-", ephemeral=True, sequence=True)
    assert re.fullmatch(re.escape(q) + r"/e-\d{10}", eph_seq)
    assert int(eph_seq[-10:]) > suffix
    assert zk.exists(eph_seq).ephemeralOwner == zk.client_id[0]
    # a sequence node name can end in a slash-free prefix of any form, even empty
    bare = zk.create(q + "/", sequence=True)
    assert re.fullmatch(re.escape(q) + r"/\d{10}", bare)


def test_ephemeral_owned_by_session_and_removed_on_close(make_client, root):
    owner = make_client()
    observer = make_client()
    path = owner.create(root + "/eph", b"alive", ephemeral=True)
    session_id = owner.client_id[0]
    assert session_id != 0
    assert owner.exists(path).ephemeralOwner == session_id
    assert observer.exists(path).ephemeralOwner == session_id
    assert observer.client_id[0] != session_id

    events = queue.Queue()
    assert observer.exists(path, watch=events.put) is not None
    owner.stop()
    owner.close()
    event = next_item(events, what="deletion of the ephemeral node")
    assert event.type == EventType.DELETED and event.path == path
    assert observer.exists(path) is None
    assert observer.get_children(root) == []


def test_container_node(make_client, root):
    zk = make_client()
    path, stat = call(zk, CreateContainer(root + "/box", b"c", OPEN_ACL_UNSAFE, MODE_CONTAINER))
    assert path == root + "/box"
    assert stat.version == 0 and stat.dataLength == 1
    # ZooKeeper hides its internal container marker: clients see ephemeralOwner 0
    assert stat.ephemeralOwner == 0
    assert zk.exists(path) == stat
    assert zk.get(path)[0] == b"c"
    with pytest.raises(NodeExistsError):
        call(zk, CreateContainer(path, b"", OPEN_ACL_UNSAFE, MODE_CONTAINER))

    # A container that never had a child stays; one whose last child goes is deleted by the
    # server (asynchronously, on its container-check interval).
    never_used, _ = call(zk, CreateContainer(root + "/unused", b"", OPEN_ACL_UNSAFE, MODE_CONTAINER))
    zk.create(path + "/child")
    zk.delete(path + "/child")
    wait_for(lambda: zk.exists(path) is None, REAPER_WAIT_S, "the emptied container to be deleted")
    assert zk.exists(never_used) is not None


def test_ttl_nodes(make_client, root):
    zk = make_client()
    ttl_ms = 60_000
    path, stat = call(zk, CreateTTL(root + "/ttl", b"t", OPEN_ACL_UNSAFE, MODE_PERSISTENT_WITH_TTL, ttl_ms))
    assert path == root + "/ttl"
    assert stat.version == 0 and stat.dataLength == 1 and stat.numChildren == 0
    assert stat.ephemeralOwner == 0  # the TTL is not visible in the client's stat
    assert zk.get(path) == (b"t", stat)
    zk.set(path, b"t2")
    assert zk.get(path)[0] == b"t2"

    seq, seq_stat = call(
        zk,
        CreateTTL(root + "/ttlseq-", b"", OPEN_ACL_UNSAFE, MODE_PERSISTENT_SEQUENTIAL_WITH_TTL, ttl_ms),
    )
    assert re.fullmatch(re.escape(root) + r"/ttlseq-\d{10}", seq)
    assert zk.exists(seq) == seq_stat

    # ttl must be positive and the mode must be a TTL mode
    for ttl, flags in ((0, MODE_PERSISTENT_WITH_TTL), (-5, MODE_PERSISTENT_WITH_TTL), (ttl_ms, 0)):
        with pytest.raises(BadArgumentsError):
            call(zk, CreateTTL(root + "/bad", b"", OPEN_ACL_UNSAFE, flags, ttl))
    assert zk.exists(root + "/bad") is None


# --------------------------------------------------------------------------------------------
# Multi (transactions)


def test_transaction_commits_atomically(make_client, root):
    zk = make_client()
    zk.create(root + "/old", b"bye")
    tx = zk.transaction()
    tx.create(root + "/a", b"1")
    tx.create(root + "/a/b")
    tx.set_data(root + "/a", b"2")
    tx.check(root + "/a", 1)
    tx.create(root + "/seq-", sequence=True)
    tx.delete(root + "/old")
    results = tx.commit()
    assert results[0] == root + "/a"
    assert results[1] == root + "/a/b"
    assert isinstance(results[2], ZnodeStat) and results[2].version == 1
    assert results[3] is True
    assert re.fullmatch(re.escape(root) + r"/seq-\d{10}", results[4])
    assert results[5] is True

    data, stat = zk.get(root + "/a")
    assert data == b"2" and stat.version == 1 and stat.numChildren == 1
    assert zk.exists(root + "/old") is None
    # one transaction, one zxid
    assert zk.exists(root + "/a/b").czxid == stat.czxid == stat.mzxid == results[2].mzxid


def test_transaction_failure_applies_nothing(make_client, root):
    zk = make_client()
    zk.create(root + "/v", b"x")
    tx = zk.transaction()
    tx.create(root + "/new")
    tx.set_data(root + "/v", b"changed")
    tx.check(root + "/v", 7)  # wrong: version is 1 after the set above, was 0
    tx.create(root + "/after")
    results = tx.commit()
    assert [type(r) for r in results] == [
        RolledBackError,
        RolledBackError,
        BadVersionError,
        RuntimeInconsistency,
    ]
    assert zk.exists(root + "/new") is None
    assert zk.exists(root + "/after") is None
    data, stat = zk.get(root + "/v")
    assert data == b"x" and stat.version == 0

    tx = zk.transaction()
    tx.create(root + "/fresh")
    tx.create(root + "/v")  # exists
    results = tx.commit()
    assert [type(r) for r in results] == [RolledBackError, NodeExistsError]
    assert zk.exists(root + "/fresh") is None

    # kazoo's context-manager form commits on leaving the block
    with zk.transaction() as tx2:
        tx2.create(root + "/cm1")
        tx2.create(root + "/cm2")
    assert tx2.committed
    assert zk.exists(root + "/cm1").czxid == zk.exists(root + "/cm2").czxid


# --------------------------------------------------------------------------------------------
# ACLs


def test_digest_acl(make_client, root):
    alice = make_client(auth=[("alice", USERS["alice"])])
    stranger = make_client()
    acl = make_digest_acl("alice", USERS["alice"], all=True)
    path = alice.create(root + "/secret", b"s3cr3t", acl=[acl])

    acls, _ = alice.get_acls(path)
    assert len(acls) == 1
    assert acls[0].id.scheme == "digest" and acls[0].id.id == acl.id.id
    assert acls[0].perms == 31

    for op in (
        lambda: stranger.get(path),
        lambda: stranger.set(path, b"x"),
        lambda: stranger.get_children(path),
        lambda: stranger.create(path + "/child"),
        lambda: stranger.get_acls(path),
    ):
        with pytest.raises(NoAuthError):
            op()
    # exists: ZooKeeper before 3.8.4/3.9.2 answers without checking permissions; since
    # ZOOKEEPER-2590 (and in Corral) it needs READ on an existing node.
    try:
        assert stranger.exists(path) is not None
    except NoAuthError:
        pass

    stranger.add_auth("digest", "alice:wrong-password")
    with pytest.raises(NoAuthError):
        stranger.get(path)
    stranger.add_auth("digest", "alice:%s" % USERS["alice"])
    assert stranger.get(path)[0] == b"s3cr3t"
    stranger.set(path, b"changed")
    assert alice.get(path)[0] == b"changed"


def test_acl_permissions_are_separate(make_client, root):
    alice = make_client(auth=[("alice", USERS["alice"])])
    bob = make_client(auth=[("bob", USERS["bob"])])
    # world may read; only alice may write or create children; bob may delete children
    acl = [
        make_acl("world", "anyone", read=True),
        make_digest_acl("alice", USERS["alice"], write=True, create=True),
        make_digest_acl("bob", USERS["bob"], delete=True),
    ]
    path = alice.create(root + "/shared", b"v", acl=acl)
    assert bob.get(path)[0] == b"v"
    with pytest.raises(NoAuthError):
        bob.set(path, b"bob was here")
    with pytest.raises(NoAuthError):
        bob.create(path + "/bobs")
    alice.set(path, b"v2")
    alice.create(path + "/child")
    with pytest.raises(NoAuthError):
        alice.delete(path + "/child")  # deleting needs DELETE on the parent
    bob.delete(path + "/child")
    with pytest.raises(NoAuthError):
        alice.set_acls(path, OPEN_ACL_UNSAFE)  # needs ADMIN
    assert len(bob.get_acls(path)[0]) == 3  # READ is enough to read the ACL


def test_auth_scheme_and_set_acls(make_client, root):
    anonymous = make_client()
    with pytest.raises(InvalidACLError):
        anonymous.create(root + "/needs-auth", acl=[make_acl("auth", "", all=True)])

    alice = make_client(auth=[("alice", USERS["alice"])])
    path = alice.create(root + "/mine", b"m", acl=[make_acl("auth", "", all=True)])
    acls, stat = alice.get_acls(path)
    # the "auth" scheme expands to the creator's authenticated identities
    expected = make_digest_acl("alice", USERS["alice"], all=True)
    assert [(a.perms, a.id.scheme, a.id.id) for a in acls] == [(31, "digest", expected.id.id)]
    assert stat.aversion == 0

    stat = alice.set_acls(path, OPEN_ACL_UNSAFE)
    assert stat.aversion == 1
    assert anonymous.get(path)[0] == b"m"
    with pytest.raises(BadVersionError):
        alice.set_acls(path, OPEN_ACL_UNSAFE, version=0)
    with pytest.raises(InvalidACLError):
        alice.set_acls(path, [])


def test_super_user_sees_everything(make_client, root):
    alice = make_client(auth=[("alice", USERS["alice"])])
    path = alice.create(root + "/locked", b"hidden", acl=[make_digest_acl("alice", USERS["alice"], all=True)])
    admin = make_client(auth=[(SUPER_USER, SUPER_PASSWORD)])
    assert admin.get(path)[0] == b"hidden"
    admin.set(path, b"super wrote this")
    admin.create(path + "/child")
    assert admin.get_children(path) == ["child"]
    assert alice.get(path)[0] == b"super wrote this"
    admin.delete(path + "/child")


# --------------------------------------------------------------------------------------------
# Watches


def test_one_shot_watches(make_client, root):
    zk = make_client()
    writer = make_client()
    path = root + "/w"

    created = queue.Queue()
    assert zk.exists(path, watch=created.put) is None
    writer.create(path, b"0")
    event = next_item(created, what="NodeCreated")
    assert (event.type, event.path, event.state) == (EventType.CREATED, path, KazooState.CONNECTED)

    changed = queue.Queue()
    zk.get(path, watch=changed.put)
    writer.set(path, b"1")
    event = next_item(changed, what="NodeDataChanged")
    assert (event.type, event.path) == (EventType.CHANGED, path)
    writer.set(path, b"2")  # the watch was consumed by the first change
    assert_nothing(changed, what="no second event from a one-shot watch")

    children = queue.Queue()
    zk.get_children(path, watch=children.put)
    data_only = queue.Queue()
    zk.get(path, watch=data_only.put)
    writer.create(path + "/kid")
    event = next_item(children, what="NodeChildrenChanged")
    assert (event.type, event.path) == (EventType.CHILD, path)
    assert_nothing(data_only, what="no data event for a child change")

    zk.get_children(path, watch=children.put)
    writer.delete(path + "/kid")
    assert next_item(children, what="NodeChildrenChanged on delete").type == EventType.CHILD

    deleted = queue.Queue()
    zk.get_children(path, watch=children.put)
    zk.exists(path, watch=deleted.put)
    writer.delete(path)
    assert next_item(deleted, what="NodeDeleted").type == EventType.DELETED
    # a child watch on a deleted node gets NodeDeleted, not NodeChildrenChanged
    event = next_item(children, what="NodeDeleted on child watch")
    assert (event.type, event.path) == (EventType.DELETED, path)
    # data_only fired with DELETED too (get watches fire on delete)
    assert next_item(data_only, what="NodeDeleted on data watch").type == EventType.DELETED


def test_notification_arrives_before_reply_on_same_connection(make_client, root):
    zk = make_client()
    raw = RawEvents(zk)
    path = zk.create(root + "/order", b"a")
    zk.get(path, watch=lambda event: None)
    zk.set(path, b"b")
    # ZooKeeper sends the watch notification for a change before the reply to the change
    assert raw.queue.get_nowait() == ("changed", path)


def test_data_watch_and_children_watch(make_client, root):
    zk = make_client()
    writer = make_client()
    path = root + "/dw"
    seen = queue.Queue()

    @zk.DataWatch(path)
    def on_data(data, stat):
        seen.put((data, stat.version if stat else None))

    assert next_item(seen, what="initial DataWatch call") == (None, None)
    writer.create(path, b"first")
    assert next_item(seen, what="DataWatch on create") == (b"first", 0)
    writer.set(path, b"second")
    assert next_item(seen, what="DataWatch on set") == (b"second", 1)

    kids = queue.Queue()

    @zk.ChildrenWatch(path)
    def on_children(children):
        kids.put(sorted(children))

    assert next_item(kids, what="initial ChildrenWatch call") == []
    writer.create(path + "/c1")
    assert next_item(kids, what="ChildrenWatch on create") == ["c1"]
    writer.create(path + "/c2")
    assert next_item(kids, what="ChildrenWatch on second create") == ["c1", "c2"]
    writer.delete(path + "/c1")
    assert next_item(kids, what="ChildrenWatch on delete") == ["c2"]

    writer.delete(path, recursive=True)
    assert next_item(seen, what="DataWatch on delete") == (None, None)


def test_persistent_recursive_watch(make_client, root):
    zk = make_client()
    writer = make_client()
    raw = RawEvents(zk)
    call(zk, AddWatch(root, ADD_WATCH_PERSISTENT_RECURSIVE))

    writer.create(root + "/a", b"")
    writer.create(root + "/a/b", b"")
    writer.set(root + "/a/b", b"1")
    writer.set(root + "/a/b", b"2")  # still watched: persistent watches are not consumed
    writer.delete(root + "/a/b")
    writer.set(root, b"r")
    writer.create(root + "/sentinel")
    # Recursive watches report created/deleted/changed for the whole subtree but never
    # NodeChildrenChanged; the sentinel proves nothing else arrived in between.
    assert raw.take(7) == [
        ("created", root + "/a"),
        ("created", root + "/a/b"),
        ("changed", root + "/a/b"),
        ("changed", root + "/a/b"),
        ("deleted", root + "/a/b"),
        ("changed", root),
        ("created", root + "/sentinel"),
    ]

    call(zk, RemoveWatches(root, WATCHER_TYPE_ANY))
    with pytest.raises(NoWatcherError):
        call(zk, RemoveWatches(root, WATCHER_TYPE_ANY))
    writer.set(root + "/a", b"unwatched now")
    writer.create(root + "/other")
    marker = writer.create(root + "/marker")
    zk.get(root + "/other", watch=lambda e: None)
    writer.set(root + "/other", b"x")
    assert raw.next() == ("changed", root + "/other")
    assert zk.exists(marker) is not None


def test_persistent_watch(make_client, root):
    zk = make_client()
    writer = make_client()
    raw = RawEvents(zk)
    path = root + "/p"
    call(zk, AddWatch(path, ADD_WATCH_PERSISTENT))  # allowed on a node that does not exist yet

    writer.create(path, b"")
    writer.set(path, b"1")
    writer.set(path, b"2")
    writer.create(path + "/kid")
    writer.set(path + "/kid", b"not reported: only the node itself and its child list")
    writer.create(path + "/kid/grandchild")
    writer.delete(path + "/kid/grandchild")
    writer.delete(path + "/kid")
    writer.delete(path)
    writer.create(path, b"again")
    assert raw.take(7) == [
        ("created", path),
        ("changed", path),
        ("changed", path),
        ("child", path),
        ("child", path),
        ("deleted", path),
        ("created", path),
    ]


def test_sync(make_client, root):
    reader = make_client()
    writer = make_client()
    path = writer.create(root + "/s", b"1")
    writer.set(path, b"2")
    assert reader.sync(path) == path
    assert reader.get(path)[0] == b"2"
    assert reader.sync(root + "/does-not-exist") == root + "/does-not-exist"


# --------------------------------------------------------------------------------------------
# Sessions and reconnection


def _state_log(client):
    states = queue.Queue()
    client.add_listener(states.put)
    return states


def _wait_state(states, wanted, what):
    deadline = time.monotonic() + WAIT_S
    while True:
        remaining = deadline - time.monotonic()
        state = next_item(states, max(remaining, 0.01), what)
        if state == wanted:
            return


def test_session_survives_connection_drop(make_client, proxy, root, zk_hosts):
    _, chroot = split_hosts(zk_hosts)
    zk = make_client(hosts=proxy.hosts(chroot))
    observer = make_client()
    states = _state_log(zk)
    session_id, password = zk.client_id
    eph = zk.create(root + "/eph", b"mine", ephemeral=True)
    node = observer.create(root + "/watched", b"v0")
    seen = []

    @zk.DataWatch(node)
    def on_data(data, stat):
        seen.append(data)

    wait_for(lambda: seen == [b"v0"], what="initial DataWatch call")

    proxy.refuse()
    proxy.drop()
    _wait_state(states, KazooState.SUSPENDED, "SUSPENDED after the drop")
    observer.set(node, b"changed while disconnected")
    assert observer.exists(eph).ephemeralOwner == session_id  # the session is still alive

    proxy.accept()
    _wait_state(states, KazooState.CONNECTED, "CONNECTED after reconnecting")
    assert zk.client_id == (session_id, password)
    assert zk.get(eph)[0] == b"mine"
    assert zk.exists(eph).ephemeralOwner == session_id
    assert proxy.accepted >= 2
    # the client catches up with what changed while it was away
    wait_for(lambda: seen[-1] == b"changed while disconnected",
             what="DataWatch to report the change made while disconnected")
    # and the session still works for writes
    zk.create(root + "/after-reconnect", ephemeral=True)
    assert observer.exists(root + "/after-reconnect").ephemeralOwner == session_id


def test_session_resumed_by_another_connection(make_client, proxy, root, zk_hosts):
    _, chroot = split_hosts(zk_hosts)
    first = make_client(hosts=proxy.hosts(chroot))
    eph = first.create(root + "/eph", ephemeral=True)
    session_id, password = first.client_id
    states = _state_log(first)
    proxy.refuse()
    proxy.drop()
    _wait_state(states, KazooState.SUSPENDED, "SUSPENDED after the drop")

    # Another client presents the session id and password: it takes the session over.
    second = make_client(client_id=(session_id, password))
    assert second.client_id[0] == session_id
    assert second.exists(eph).ephemeralOwner == session_id
    second.create(root + "/eph2", ephemeral=True)

    # A wrong password does not get the session: the server refuses it as expired and kazoo
    # falls back to a brand-new session.
    impostor = make_client(client_id=(session_id, b"\x00" * 16))
    assert impostor.client_id[0] not in (0, session_id)
    assert impostor.create(root + "/imp", ephemeral=True, include_data=True)[1].ephemeralOwner != session_id
    assert second.exists(eph).ephemeralOwner == session_id  # the real owner is unaffected

    # Closing the session through the second client removes the ephemerals of both.
    observer = make_client()
    second.stop()
    second.close()
    assert observer.exists(eph) is None
    assert observer.exists(root + "/eph2") is None

    # The first client, once it can reach the server again, learns its session is gone.
    proxy.accept()
    _wait_state(states, KazooState.LOST, "LOST for the closed session")


# --------------------------------------------------------------------------------------------
# kazoo recipes (each is a pattern of ordinary ZooKeeper calls and watches)


def test_lock(make_client, root):
    c1, c2 = make_client(), make_client()
    path = root + "/lock"
    lock1 = c1.Lock(path, "one")
    lock2 = c2.Lock(path, "two")
    assert lock1.acquire(timeout=WAIT_S)
    assert lock1.is_acquired
    with pytest.raises(LockTimeout):
        lock2.acquire(timeout=0.3)
    assert lock2.acquire(blocking=False) is False
    assert lock1.contenders() == ["one"]

    acquired_at = []
    t = run_thread(lambda: lock2.acquire(timeout=WAIT_S) and acquired_at.append(time.monotonic()))
    wait_for(lambda: lock1.contenders() == ["one", "two"], what="second contender to queue")
    time.sleep(0.2)
    assert acquired_at == []
    released_at = time.monotonic()
    lock1.release()
    join_all([t])
    assert acquired_at and acquired_at[0] >= released_at
    assert lock2.is_acquired and lock2.contenders() == ["two"]
    lock2.release()
    assert c1.get_children(path) == []


def test_read_write_lock(make_client, root):
    c1, c2, c3 = make_client(), make_client(), make_client()
    path = root + "/rw"
    r1, r2 = c1.ReadLock(path, "r1"), c2.ReadLock(path, "r2")
    w = c3.WriteLock(path, "w")
    assert r1.acquire(timeout=WAIT_S) and r2.acquire(timeout=WAIT_S)  # readers share
    with pytest.raises(LockTimeout):
        w.acquire(timeout=0.3)
    r1.release()
    r2.release()
    assert w.acquire(timeout=WAIT_S)
    with pytest.raises(LockTimeout):
        r1.acquire(timeout=0.3)
    w.release()


def test_election(make_client, root):
    clients = [make_client() for _ in range(3)]
    path = root + "/election"
    leaders = []
    overlaps = []
    leading = threading.Event()
    release = threading.Event()
    active = []

    def lead(name):
        active.append(name)
        if len(active) != 1:
            overlaps.append(list(active))
        leaders.append(name)
        leading.set()
        release.wait(WAIT_S)
        active.remove(name)

    elections = [c.Election(path, "node%d" % i) for i, c in enumerate(clients)]
    threads = [run_thread(elections[0].run, lead, "node0")]
    assert leading.wait(WAIT_S), "nobody was elected"
    for i in (1, 2):  # queue up one at a time so the line order is known
        threads.append(run_thread(elections[i].run, lead, "node%d" % i))
        wait_for(lambda: len(elections[0].contenders()) == i + 1, what="contender %d" % i)
    assert elections[2].contenders() == ["node0", "node1", "node2"]
    time.sleep(0.2)
    assert leaders == ["node0"]  # the others wait while the leader leads
    release.set()  # each leader returns at once from now on; leadership passes down the line
    join_all(threads)
    assert overlaps == []
    assert leaders == ["node0", "node1", "node2"]
    assert clients[0].get_children(path) == []


def test_queue(make_client, root):
    producer, consumer = make_client(), make_client()
    path = root + "/queue"
    q_in = producer.Queue(path)
    for item in (b"a", b"b", b"c"):
        q_in.put(item)
    q_in.put(b"urgent", priority=10)
    q_out = consumer.Queue(path)
    assert len(q_out) == 4
    assert [q_out.get() for _ in range(4)] == [b"urgent", b"a", b"b", b"c"]
    assert q_out.get() is None
    assert len(q_in) == 0


def test_locking_queue(make_client, root):
    c1, c2 = make_client(), make_client()
    path = root + "/lq"
    q1, q2 = c1.LockingQueue(path), c2.LockingQueue(path)
    q1.put_all([b"job1", b"job2"])
    assert q1.get(timeout=WAIT_S) == b"job1"
    assert q2.get(timeout=WAIT_S) == b"job2"  # job1 is locked by q1
    assert q1.holds_lock() and q2.holds_lock()
    assert q2.release()  # give job2 back
    assert q1.consume()
    assert q1.get(timeout=WAIT_S) == b"job2"
    assert q2.get(timeout=0.3) is None
    assert q1.consume()
    assert len(q1) == 0

    got = []
    t = run_thread(lambda: got.append(q2.get(timeout=WAIT_S)))
    time.sleep(0.1)
    q1.put(b"late")
    join_all([t])
    assert got == [b"late"]
    assert q2.consume()


def test_barrier(make_client, root):
    c1, c2 = make_client(), make_client()
    path = root + "/barrier"
    c1.Barrier(path).create()
    waiter = c2.Barrier(path)
    assert waiter.wait(timeout=0.3) is False
    passed = []
    t = run_thread(lambda: passed.append(waiter.wait(timeout=WAIT_S)))
    time.sleep(0.1)
    assert passed == []
    assert c1.Barrier(path).remove()
    join_all([t])
    assert passed == [True]


def test_double_barrier(make_client, root):
    clients = [make_client() for _ in range(3)]
    path = root + "/double"
    barriers = [c.DoubleBarrier(path, 3, identifier="m%d" % i) for i, c in enumerate(clients)]
    entered, left = [], []

    def member(i):
        barriers[i].enter()
        entered.append(i)
        barriers[i].leave()
        left.append(i)

    first_two = [run_thread(member, 0), run_thread(member, 1)]
    time.sleep(0.3)
    assert entered == []  # nobody passes until all three are in
    last = run_thread(member, 2)
    join_all(first_two + [last])
    assert sorted(entered) == [0, 1, 2] and sorted(left) == [0, 1, 2]
    assert clients[0].exists(path) is None or clients[0].get_children(path) == []


def test_counter_concurrent_increments(make_client, root):
    path = root + "/counter"
    clients = [make_client() for _ in range(4)]
    per_client = 25

    def bump(client):
        counter = client.Counter(path)
        for _ in range(per_client):
            counter += 1

    join_all([run_thread(bump, c) for c in clients], timeout=WAIT_S * 2)
    counter = clients[0].Counter(path)
    assert counter.value == per_client * len(clients)
    assert clients[1].get(path)[1].version == per_client * len(clients)
    counter -= 10
    assert counter.pre_value == 100 and counter.post_value == 90
    assert clients[2].Counter(path).value == 90


def test_semaphore(make_client, root):
    clients = [make_client() for _ in range(3)]
    path = root + "/sem"
    sems = [c.Semaphore(path, "s%d" % i, max_leases=2) for i, c in enumerate(clients)]
    assert sems[0].acquire(timeout=WAIT_S)
    assert sems[1].acquire(timeout=WAIT_S)
    assert sems[2].acquire(blocking=False) is False
    with pytest.raises(LockTimeout):
        sems[2].acquire(timeout=0.3)
    assert sorted(sems[2].lease_holders()) == ["s0", "s1"]
    got = []
    t = run_thread(lambda: got.append(sems[2].acquire(timeout=WAIT_S)))
    time.sleep(0.1)
    sems[0].release()
    join_all([t])
    assert got == [True]
    assert sorted(sems[1].lease_holders()) == ["s1", "s2"]
    sems[1].release()
    sems[2].release()
    assert sems[0].lease_holders() == []


def test_party(make_client, root):
    c1, c2, c3 = make_client(), make_client(), make_client()
    path = root + "/party"
    p1, p2 = c1.Party(path, "alpha"), c2.Party(path, "beta")
    p1.join()
    p2.join()
    view = c3.Party(path)
    assert sorted(view) == ["alpha", "beta"] and len(view) == 2
    p1.leave()
    assert list(view) == ["beta"]
    c2.stop()  # the membership node is ephemeral: the member leaves with its session
    c2.close()
    assert len(view) == 0

    s1, s2 = c1.ShallowParty(path + "-shallow", "x"), c3.ShallowParty(path + "-shallow", "y")
    s1.join()
    s2.join()
    assert sorted(c1.ShallowParty(path + "-shallow")) == ["x", "y"]
    s1.leave()
    assert list(s2) == ["y"]
