"""Three-member ensembles of the real ZooKeeper 3.8 or of Corral on 127.0.0.1, for the tests that
need members to kill or compare (test_read_only.py, test_session_close.py). Not a test module.
"""

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import pytest

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


def member_lines(workdir, i, port):
    """Makes member i's data directory (with its myid); returns the zoo.cfg lines every test
    ensemble's members share."""
    data = os.path.join(workdir, "m%d" % (i + 1))
    os.makedirs(data)
    with open(os.path.join(data, "myid"), "w") as f:
        f.write("%d\n" % (i + 1))
    return [
        "tickTime=%d" % TICK_MS,
        "initLimit=10",
        "syncLimit=2",
        "dataDir=%s" % data,
        "clientPort=%d" % port,
        "clientPortAddress=127.0.0.1",
        "maxClientCnxns=0",
        "admin.enableServer=false",
        "4lw.commands.whitelist=*",
    ]


class Ensemble:
    """Three members of one kind on 127.0.0.1, each with its own data directory and log."""

    def __init__(self, kind, workdir):
        self.kind, self.dir = kind, workdir
        self.ports = [free_port() for _ in range(3)]
        self.peers = [(free_port(), free_port()) for _ in range(3)]
        self.procs = [None] * 3
        for i in range(3):
            lines = member_lines(workdir, i, self.ports[i]) + self.extra_lines(i) + [
                self.server_line(j) for j in range(3)]
            with open(self.cfg(i), "w") as f:
                f.write("\n".join(lines) + "\n")
        for i in range(3):
            self.start(i)

    def server_line(self, j):
        """Member j's `server.N` line, as every member's zoo.cfg lists it."""
        peer, election = self.peers[j]
        return "server.%d=127.0.0.1:%d:%d" % (j + 1, peer, election)

    def extra_lines(self, i):
        """Member i's zoo.cfg lines beyond those every test ensemble shares."""
        return ["localSessionsEnabled=true"]

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


@contextlib.contextmanager
def deadline(seconds, what):
    """Raises TimeoutError in the test if it is still running after `seconds`."""
    def expire(signum, frame):
        raise TimeoutError("%s exceeded %d s" % (what, seconds))

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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


@contextlib.contextmanager
def running(kind, ensemble=None):
    """A serving 3-member ensemble of `kind` ("zookeeper" or "corral"), stopped afterwards;
    `ensemble` is the class to make it with (`Ensemble`, or one configured otherwise)."""
    if kind == "corral" and not os.access(CORRAL_BIN, os.X_OK):
        # scripts/test.sh sets it; `run.sh --reference` checks the suite against ZooKeeper alone.
        pytest.skip("CORRAL_BIN does not name the corral binary")
    workdir = tempfile.mkdtemp(prefix="corral-ensemble-%s-" % kind)
    ens = (ensemble or Ensemble)(kind, workdir)
    try:
        ens.wait_serving([0, 1, 2])
        yield ens
    finally:
        ens.stop()
    shutil.rmtree(workdir, ignore_errors=True)
