"""Read-only mode, side by side: the real ZooKeeper 3.8 and Corral, each as a 3-member ensemble.

One member is cut off from its quorum by SIGKILLing the other two. It then stops serving, and
after ZooKeeper's delay (max(2 s, tickTime)) serves read-only clients: kazoo with
`read_only=True` and `zkCli.sh -r` read from it and have their writes refused, while a plain
client is turned away. When the other members come back, the member serves read-write again and
kazoo moves its read-only client back to a read-write session on its own.

Both ensembles are started here (they need members to kill), from CORRAL_BIN and Debian's
zookeeper package; ZooKeeper is given `localSessionsEnabled=true`, without which 3.8 refuses
every read-only session (Corral behaves as with it). Corral reads `readonlymode.enabled` from
SERVER_JVMFLAGS, as an operator's start-up script passes it to ZooKeeper.
"""

import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NotReadOnlyCallError
from kazoo.protocol.states import KeeperState

from test_cli import zkcli

CORRAL_BIN = os.environ.get("CORRAL_BIN", "")
ZK_CLASSPATH = ":".join(
    "/usr/share/java/%s.jar" % jar for jar in ("zookeeper", "slf4j-log4j12", "log4j-1.2")
)
NOT_SERVING = "This ZooKeeper instance is not currently serving requests"
TICK_MS = 500


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def four_letter(port, word):
    """The member's answer to a four-letter word ("" if it cannot be reached)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(word.encode())
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode()
    except OSError:
        return ""


def wait_until(what, predicate, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail("not within %.0f s: %s" % (seconds, what))


class Ensemble:
    """Three members of one kind on 127.0.0.1, each with its own data directory and log."""

    def __init__(self, kind, workdir):
        self.kind, self.dir = kind, workdir
        self.ports = [free_port() for _ in range(3)]
        peers = [(free_port(), free_port()) for _ in range(3)]
        self.procs = [None] * 3
        for i in range(3):
            data = os.path.join(workdir, "m%d" % (i + 1))
            os.makedirs(data)
            with open(os.path.join(data, "myid"), "w") as f:
                f.write("%d\n" % (i + 1))
            lines = [
                "tickTime=%d" % TICK_MS,
                "initLimit=10",
                "syncLimit=2",
                "dataDir=%s" % data,
                "clientPort=%d" % self.ports[i],
                "clientPortAddress=127.0.0.1",
                "maxClientCnxns=0",
                "admin.enableServer=false",
                "4lw.commands.whitelist=*",
                "localSessionsEnabled=true",
            ] + [
                "server.%d=127.0.0.1:%d:%d" % (j + 1, peer, election)
                for j, (peer, election) in enumerate(peers)
            ]
            with open(self.cfg(i), "w") as f:
                f.write("\n".join(lines) + "\n")
        for i in range(3):
            self.start(i)

    def cfg(self, i):
        return os.path.join(self.dir, "zoo%d.cfg" % (i + 1))

    def start(self, i):
        log = open(os.path.join(self.dir, "m%d.log" % (i + 1)), "ab")
        if self.kind == "corral":
            env = dict(os.environ, SERVER_JVMFLAGS="-Xmx1g -Dreadonlymode.enabled=true")
            cmd = [CORRAL_BIN, "server", "--config", self.cfg(i)]
        else:
            env = dict(os.environ)
            cmd = ["java", "-Xmx256m", "-Dreadonlymode.enabled=true", "-cp", ZK_CLASSPATH,
                   "org.apache.zookeeper.server.quorum.QuorumPeerMain", self.cfg(i)]
        self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=self.dir)

    def kill(self, i):
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def stop(self):
        for p in self.procs:
            if p and p.poll() is None:
                p.kill()
                p.wait()

    def hosts(self):
        return ",".join("127.0.0.1:%d" % p for p in self.ports)

    def mode(self, i):
        for line in four_letter(self.ports[i], "srvr").splitlines():
            if line.startswith("Mode: "):
                return line[len("Mode: "):]
        return ""

    def wait_serving(self, members, seconds=60):
        wait_until(
            "%s members %s serving" % (self.kind, members),
            lambda: all(self.mode(i) in ("leader", "follower") for i in members)
            and any(self.mode(i) == "leader" for i in members),
            seconds,
        )


def raw_connect(port, read_only):
    """Sends a connect request for a new session; returns what came back before the close."""
    body = struct.pack(">iqiqi", 0, 0, 10000, 0, 16) + b"\0" * 16 + (b"\1" if read_only else b"\0")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        chunks = []
        try:
            while True:
                data = s.recv(4096)
                if not data:
                    break
                chunks.append(data)
                if len(b"".join(chunks)) >= 41:
                    break
        except socket.timeout:
            pass
        return b"".join(chunks)


@pytest.fixture(params=["zookeeper", "corral"])
def ensemble(request):
    if request.param == "corral" and not os.access(CORRAL_BIN, os.X_OK):
        pytest.fail("CORRAL_BIN is not set to the corral binary")
    workdir = tempfile.mkdtemp(prefix="corral-ro-%s-" % request.param)
    ens = Ensemble(request.param, workdir)
    try:
        ens.wait_serving([0, 1, 2])
        yield ens
    finally:
        ens.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _whole_test_deadline():
    def expire(signum, frame):
        raise TimeoutError("read-only test exceeded 150 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, 150)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_cut_off_member_serves_read_only_clients_then_read_write_again(ensemble):
    ens = ensemble
    writer = KazooClient(hosts=ens.hosts(), timeout=10)
    writer.start(timeout=20)
    writer.create("/ro-test", b"before")
    writer.stop()
    writer.close()

    # Member 1 loses its quorum.
    ens.kill(1)
    ens.kill(2)
    port = ens.ports[0]
    wait_until("the cut-off member stops serving", lambda: NOT_SERVING in four_letter(port, "srvr"), 20)
    wait_until("read-only mode", lambda: four_letter(port, "isro") == "ro", 20)
    srvr = four_letter(port, "srvr")
    assert srvr.splitlines()[1] == "READ-ONLY mode; serving only read-only clients", srvr
    assert "Mode: read-only" in srvr
    assert four_letter(port, "ruok") == "imok"
    # A client that did not ask for read-only access is turned away without an answer; one that
    # did gets a session, and the connect response's last byte says read-only.
    assert raw_connect(port, read_only=False) == b""
    answer = raw_connect(port, read_only=True)
    assert len(answer) == 41 and answer[-1] == 1, answer

    states = []
    client = KazooClient(
        hosts=ens.hosts(),
        read_only=True,
        randomize_hosts=False,
        timeout=6,
        connection_retry=dict(max_tries=-1, delay=0.05, backoff=1.5, max_delay=0.5),
    )
    client.add_listener(states.append)
    client.start(timeout=30)
    try:
        assert client.client_state == KeeperState.CONNECTED_RO
        assert client.get("/ro-test")[0] == b"before"
        assert client.exists("/ro-missing") is None
        with pytest.raises(NotReadOnlyCallError):
            client.create("/ro-test/x", b"")
        with pytest.raises(NotReadOnlyCallError):
            client.set("/ro-test", b"changed")

        got = zkcli("127.0.0.1:%d" % port, "-r", "get", "/ro-test")
        assert "before" in got.out, got
        refused = zkcli("127.0.0.1:%d" % port, "-r", "create", "/ro-cli", "x")
        assert any("Not a read-only call" in line for line in refused.out + refused.err), refused

        # The others come back: the member serves read-write again, and kazoo finds it (it
        # probes the first host while idle) and trades its read-only session for a new one.
        ens.start(1)
        ens.start(2)
        ens.wait_serving([0, 1, 2])
        wait_until(
            "kazoo back on a read-write member",
            lambda: client.client_state == KeeperState.CONNECTED,
            40,
        )
        client.create("/ro-test/after", b"")
        assert client.get("/ro-test/after")[0] == b""
    finally:
        client.stop()
        client.close()
