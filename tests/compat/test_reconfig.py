"""Dynamic reconfiguration, side by side: the real ZooKeeper 3.8 and Corral, each started as a
3-member ensemble from the same zoo.cfg files (`reconfigEnabled=true`, the super digest in the
JVM flags), with a 4th member started later from a configuration that names the ensemble and
itself, as ZooKeeper's documentation has it.

Clients see the same thing from both: `/zookeeper/config` (its text, its stat, a watch on it),
kazoo's `reconfig` and its errors, zkCli's `config` and `reconfig -add/-remove/-members`, and
Curator's ensemble tracking (Debian's libcurator-framework-java, run with Java's source launcher:
java/CuratorEnsemble.java), which moves its connection string as `/zookeeper/config` changes.
One difference is Corral's on purpose: a member a reconfiguration removed stops serving (ZooKeeper
3.8 goes on serving as a follower that no longer votes).
"""

import os
import re
import subprocess
import threading
import time

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadArgumentsError,
    BadVersionError,
    NewConfigNoQuorumError,
    NoAuthError,
)

from ensemble import (CORRAL_BIN, ZK_CLASSPATH, Ensemble, deadline, free_port, member_lines,
                      running, wait_until)
from test_cli import ZkCliSession

SUPER_DIGEST = "super:D/InIHSb7yEEbrWz8b9l71RjZJU="  # super:test
CURATOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "java", "CuratorEnsemble.java")
CURATOR_CP = ":".join(
    "/usr/share/java/%s.jar" % jar
    for jar in ("curator-framework", "curator-client", "zookeeper", "zookeeper-jute", "guava",
                "slf4j-api", "slf4j-nop"))
JVM_FLAGS = "-Dzookeeper.DigestAuthenticationProvider.superDigest=%s" % SUPER_DIGEST


class ReconfigEnsemble(Ensemble):
    """Members 1-3 form the ensemble; member 4 is configured to join it."""

    def __init__(self, kind, workdir):
        self.kind, self.dir = kind, workdir
        self.ports = [free_port() for _ in range(4)]
        self.peers = [(free_port(), free_port()) for _ in range(4)]
        self.procs = [None] * 4
        for i in range(4):
            lines = member_lines(workdir, i, self.ports[i]) + ["reconfigEnabled=true"] + [
                self.server_line(j) for j in range(3)]
            if i == 3:
                lines.append(self.joiner(3))
            with open(self.cfg(i), "w") as f:
                f.write("\n".join(lines) + "\n")
        for i in range(3):
            self.start(i)

    def server_line(self, i):
        return "server.%d=127.0.0.1:%d:%d" % (i + 1, *self.peers[i])

    def joiner(self, i, role="participant"):
        return "server.%d=127.0.0.1:%d:%d:%s;127.0.0.1:%d" % (
            i + 1, *self.peers[i], role, self.ports[i])

    def start(self, i):
        log = open(os.path.join(self.dir, "m%d.log" % (i + 1)), "ab")
        if self.kind == "corral":
            env = dict(os.environ, SERVER_JVMFLAGS=JVM_FLAGS)
            cmd = [CORRAL_BIN, "server", "--config", self.cfg(i)]
        else:
            env = dict(os.environ)
            cmd = ["java", "-Xmx256m", JVM_FLAGS, "-cp", ZK_CLASSPATH,
                   "org.apache.zookeeper.server.quorum.QuorumPeerMain", self.cfg(i)]
        self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=self.dir)

    def hosts(self, members=(0, 1, 2)):
        return ",".join("127.0.0.1:%d" % self.ports[i] for i in members)


@pytest.fixture(params=["zookeeper", "corral"])
def ensemble(request):
    with running(request.param, ReconfigEnsemble) as ens:
        yield ens


@pytest.fixture(autouse=True)
def _whole_test_deadline():
    with deadline(180, "reconfig test"):
        yield


@pytest.fixture
def clients():
    made = []

    def make(hosts, super_user=False):
        auth = [("digest", "super:test")] if super_user else None
        zk = KazooClient(hosts=hosts, auth_data=auth, timeout=10)
        zk.start(timeout=30)
        made.append(zk)
        return zk

    yield make
    for zk in made:
        zk.stop()
        zk.close()


def members_of(text):
    """The `server.N=...` lines of a configuration text, and its version."""
    lines = text.split("\n")
    assert lines[-1].startswith("version="), text
    return lines[:-1], int(lines[-1][len("version="):], 16)


def published(zk):
    zk.sync("/")
    data, stat = zk.get("/zookeeper/config")
    return data.decode(), stat


def test_config_reconfig_and_errors_through_kazoo(ensemble, clients):
    zk = clients(ensemble.hosts())
    text, stat = published(zk)
    lines, version = members_of(text)
    # Server lines without a client address print without one; ZooKeeper's trailing version
    # line has no newline; the node is written with version -1 and keeps its read-only ACL.
    assert lines == [ensemble.server_line(i) + ":participant" for i in range(3)]
    assert version == stat.mzxid and stat.version == -1 and stat.aversion == -1
    acl, _ = zk.get_acls("/zookeeper/config")
    assert [(a.id.scheme, a.id.id, a.perms) for a in acl] == [("world", "anyone", 1)]

    # Refusals, in ZooKeeper's order: the request is checked before the caller's rights.
    with pytest.raises(BadArgumentsError):
        zk.reconfig(joining="server.5=127.0.0.1:1", leaving=None, new_members=None)
    with pytest.raises(NoAuthError):
        zk.reconfig(joining=None, leaving="3", new_members=None)
    admin = clients(ensemble.hosts([1]), super_user=True)
    with pytest.raises(BadVersionError):
        admin.reconfig(joining=None, leaving="3", new_members=None, from_config=version + 1)
    with pytest.raises(BadArgumentsError):
        admin.reconfig(joining=None, leaving="2,3", new_members=None)
    ghosts = ",".join(
        "server.%d=127.0.0.1:%d:%d:participant;127.0.0.1:%d"
        % (i, free_port(), free_port(), free_port()) for i in (5, 6, 7))
    with pytest.raises(NewConfigNoQuorumError):
        admin.reconfig(joining=ghosts, leaving=None, new_members=None)
    assert published(zk)[0] == text

    # Member 4 joins: the answer is the new configuration, and a watch on it fires.
    events = []
    fired = threading.Event()

    def watch(event):
        events.append(event)
        fired.set()

    zk.get("/zookeeper/config", watch=watch)
    ensemble.start(3)
    data, new_stat = admin.reconfig(
        joining=ensemble.joiner(3), leaving=None, new_members=None, from_config=version)
    new_lines, new_version = members_of(data.decode())
    assert new_lines == lines + [ensemble.joiner(3)]
    assert new_version == new_stat.mzxid > version
    assert fired.wait(10) and events[0].type == "CHANGED"
    assert published(zk) == (data.decode(), new_stat)
    # The new member serves, with what was there before it joined.
    wait_until("member 4 follows", lambda: ensemble.mode(3) == "follower", 30)
    four = clients(ensemble.hosts([3]))
    assert four.exists("/zookeeper/config")
    four.create("/written-through-4", b"4")
    # Another client's session sees it once its member has caught up: sync first, as
    # ZooKeeper's guarantees require for reads across clients.
    zk.sync("/written-through-4")
    assert zk.exists("/written-through-4")

    # Member 4 becomes an observer, then leaves again through a non-incremental reconfig.
    data, _ = admin.reconfig(
        joining=ensemble.joiner(3, "observer"), leaving=None, new_members=None)
    assert members_of(data.decode())[0][-1] == ensemble.joiner(3, "observer")
    wait_until("member 4 observes", lambda: ensemble.mode(3) == "observer", 30)
    whole = ",".join(ensemble.server_line(i) + ":participant;127.0.0.1:%d" % ensemble.ports[i]
                     for i in range(3))
    data, _ = admin.reconfig(joining=None, leaving=None, new_members=whole)
    assert members_of(data.decode())[0] == whole.split(",")


def test_zkcli_config_and_reconfig(ensemble, clients):
    zk = clients(ensemble.hosts())
    text, _ = published(zk)
    ensemble.start(3)
    cli = ZkCliSession(ensemble.hosts([0]))
    try:
        cli.expect(r"WatchedEvent state:SyncConnected type:None path:null")
        cli.send("config")
        for line in text.split("\n"):
            cli.expect(re.escape(line))
        cli.send("reconfig -remove 3")
        cli.expect(r"Insufficient permission : ")
        cli.send("addauth digest super:test")
        cli.send("reconfig -add %s" % ensemble.joiner(3))
        cli.expect(r"Committed new configuration:")
        after, _ = published(zk)
        for line in after.split("\n"):
            cli.expect(re.escape(line))
        assert ensemble.joiner(3) in after.split("\n")
        cli.send("reconfig -v ffffffffff -remove 3")
        cli.expect(r"version No is not valid : ")
        cli.send("reconfig -remove 4")
        cli.expect(r"Committed new configuration:")
        cli.send("config -s")
        final, stat = published(zk)
        for line in final.split("\n"):
            cli.expect(re.escape(line))
        cli.expect(r"mZxid = %s" % hex(stat.mzxid))
        cli.expect(r"dataVersion = -1")
    finally:
        cli.close()
    assert ensemble.joiner(3) not in final


def test_corral_cli_config_and_reconfig(ensemble, clients):
    """`corral cli` (against either server) prints what zkCli prints."""
    zk = clients(ensemble.hosts())
    ensemble.start(3)
    script = "\n".join([
        "reconfig -remove 3",
        "addauth digest super:test",
        "reconfig -v ffffffffff -remove 3",
        "reconfig -add %s" % ensemble.joiner(3),
        "config",
        "reconfig -members %s -remove 2" % ensemble.joiner(3),
        "reconfig -s -remove 4",
    ]) + "\n"
    proc = subprocess.run([CORRAL_BIN, "cli", "-server", ensemble.hosts([0])], input=script,
                          capture_output=True, text=True, timeout=60)
    out, err = proc.stdout.splitlines(), proc.stderr.splitlines()
    assert err[:2] == ["Insufficient permission : ", "version No is not valid : "], err
    assert err[2].startswith("Can't use -file or -members together with -add or -remove"), err
    final, stat = published(zk)
    added = out.index("Committed new configuration:")
    with_four = out[added + 1:out.index("Committed new configuration:", added + 1)]
    # The answer to the add, then `config`: the same configuration twice.
    half = len(with_four) // 2
    assert with_four[:half] == with_four[half:]
    assert ensemble.joiner(3) in with_four[:half]
    removed = out[out.index("Committed new configuration:", added + 1) + 1:]
    assert removed[:len(final.split("\n"))] == final.split("\n")
    assert "mZxid = %s" % hex(stat.mzxid) in removed and "dataVersion = -1" in removed


def test_curator_tracks_the_ensemble(ensemble, clients):
    admin = clients(ensemble.hosts([0]), super_user=True)
    # Curator builds its connection string from the client addresses the lines name.
    with_clients = [ensemble.server_line(i) + ":participant;127.0.0.1:%d" % ensemble.ports[i]
                    for i in range(3)]
    admin.reconfig(joining=None, leaving=None, new_members=",".join(with_clients))
    expected = ensemble.hosts([0, 1, 2, 3])
    curator = subprocess.Popen(
        ["java", "-cp", CURATOR_CP, CURATOR, ensemble.hosts([0]), expected],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ready = curator.stdout.readline().split()
        assert ready[0] == "READY", ready
        assert int(ready[1], 16) == published(admin)[1].mzxid
        # Curator already follows the three members.
        assert sorted(ready[2].split(",")) == sorted(ensemble.hosts().split(","))
        ensemble.start(3)
        data, stat = admin.reconfig(joining=ensemble.joiner(3), leaving=None, new_members=None)
        tracked = curator.stdout.readline().split()
        assert tracked[0] == "TRACKED", tracked + curator.stdout.readlines()
        assert int(tracked[2], 16) == stat.mzxid
        assert curator.wait(30) == 0
    finally:
        if curator.poll() is None:
            curator.kill()
            curator.wait()


def test_a_removed_corral_member_stops_serving(ensemble, clients):
    if ensemble.kind != "corral":
        pytest.skip("ZooKeeper 3.8 keeps serving a removed member as a non-voting follower")
    # A follower leaves (the leader's removal would cost an election, and the admin's
    # connection with it).
    gone = next(i for i in range(3) if ensemble.mode(i) == "follower")
    rest = [i for i in range(3) if i != gone]
    admin = clients(ensemble.hosts(rest), super_user=True)
    admin.reconfig(joining=None, leaving=str(gone + 1), new_members=None)
    wait_until("member %d stops serving" % (gone + 1),
               lambda: ensemble.mode(gone) not in ("leader", "follower"), 30)
    # Restarted with its old zoo.cfg it still does not serve; the others go on.
    ensemble.kill(gone)
    ensemble.start(gone)
    clients(ensemble.hosts(rest)).create("/after-removal")
    time.sleep(3)
    assert ensemble.mode(gone) not in ("leader", "follower")
