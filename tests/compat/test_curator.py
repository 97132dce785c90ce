"""Apache Curator 5.4's recipes, side by side: the real ZooKeeper 3.8 and Corral, each as a
standalone server and as a 3-member ensemble made from the same zoo.cfg lines.

java/CuratorRecipes.java (run with Java's source launcher on Debian's libcurator-recipes-java and
libcurator-discovery-java) runs each recipe as a named check with its own assertions: locks
(InterProcessMutex, InterProcessSemaphoreV2, InterProcessReadWriteLock), leader election
(LeaderLatch, LeaderSelector), queues (DistributedQueue, DistributedPriorityQueue,
SimpleDistributedQueue), barriers, caches (CuratorCache, PathChildrenCache, TreeCache),
SharedCount, DistributedAtomicLong, PersistentNode (through a session closed on the server and a
delete), PersistentWatcher (recursive and not), ServiceDiscovery, and transactions (committed and
failed). Against an ensemble its clients sit on different members. Every check passes against
both servers, and the same checks pass for both in each topology.

Each server or ensemble is started once (module-scoped), runs the program once, and is stopped
before the next starts.
"""

import os
import shutil
import subprocess
import tempfile

import pytest

from ensemble import (CORRAL_BIN, Ensemble, deadline, four_letter, free_port, member_lines,
                      wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPES = os.path.join(HERE, "java", "CuratorRecipes.java")
# Debian's jars: curator-x-discovery (libcurator-discovery-java) serializes instances with Jackson.
CURATOR_JARS = ["/usr/share/java/%s.jar" % jar for jar in (
    "curator-recipes", "curator-x-discovery", "curator-framework", "curator-client", "zookeeper",
    "zookeeper-jute", "guava", "jackson-databind", "jackson-core", "jackson-annotations",
    "slf4j-api", "slf4j-nop")]
CHECKS = [
    "transaction_commit", "transaction_rollback", "mutex_exclusion", "mutex_reentrant",
    "semaphore_v2", "read_write_lock", "leader_latch", "leader_selector", "distributed_queue",
    "distributed_priority_queue", "simple_distributed_queue", "distributed_barrier",
    "distributed_double_barrier", "curator_cache", "path_children_cache", "tree_cache",
    "shared_count", "distributed_atomic_long", "persistent_node", "persistent_watcher_recursive",
    "persistent_watcher", "service_discovery",
]
KINDS = ["zookeeper", "corral"]
TOPOLOGIES = ["standalone", "ensemble"]
RUN_TIMEOUT_S = 150


class Standalone(Ensemble):
    """One server of `kind`: an ensemble member's zoo.cfg lines without the server.N lines."""

    def __init__(self, kind, workdir):
        self.kind, self.dir = kind, workdir
        self.ports = [free_port()]
        self.procs = [None]
        # member_lines also writes a myid, which a standalone server ignores.
        with open(self.cfg(0), "w") as f:
            f.write("\n".join(member_lines(workdir, 0, self.ports[0])) + "\n")
        self.start(0)

    def wait_serving(self, members=(0,), seconds=60):
        wait_until("%s standalone serving" % self.kind,
                   lambda: self.mode(0) == "standalone"
                   and four_letter(self.ports[0], "ruok") == "imok", seconds)


class GlobalSessionsEnsemble(Ensemble):
    """Three members with ZooKeeper's default sessions: the recipes make ephemeral nodes, which
    the local sessions of ensemble.py's members (localSessionsEnabled=true, no upgrading) refuse
    with EphemeralOnLocalSessionException."""

    def extra_lines(self, i):
        return []


def _start(kind, topology):
    workdir = tempfile.mkdtemp(prefix="corral-curator-%s-%s-" % (kind, topology))
    servers = (Standalone if topology == "standalone" else GlobalSessionsEnsemble)(kind, workdir)
    try:
        servers.wait_serving([0, 1, 2] if topology == "ensemble" else [0])
    except BaseException:
        servers.stop()
        raise
    return servers, workdir


def _run_recipes(kind, topology):
    """Starts the server(s), runs CuratorRecipes.java once, stops them; returns
    (exit status, {check: None if passed else the reason}, the whole output)."""
    servers, workdir = _start(kind, topology)
    try:
        proc = subprocess.run(
            ["java", "-cp", ":".join(CURATOR_JARS), RECIPES, servers.hosts()],
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    finally:
        servers.stop()
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("PASS "):
            results[line[len("PASS "):]] = None
        elif line.startswith("FAIL "):
            name, _, why = line[len("FAIL "):].partition(": ")
            results[name] = why
    output = proc.stdout + proc.stderr
    if proc.returncode == 0 and all(why is None for why in results.values()):
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        output += "\n(server logs kept in %s)" % workdir
    return proc.returncode, results, output


@pytest.fixture(scope="module")
def recipes():
    """run(kind, topology): the outcome of CuratorRecipes.java against that server, run once per
    module (a server is started on first use and stopped before the next)."""
    missing = [jar for jar in CURATOR_JARS if not os.path.exists(jar)]
    assert not missing, "missing %s: run scripts/setup.sh" % " ".join(missing)
    outcomes = {}

    def run(kind, topology):
        if kind == "corral" and not os.access(CORRAL_BIN, os.X_OK):
            # scripts/test.sh sets it; `run.sh --reference` checks the suite against ZooKeeper alone.
            pytest.skip("CORRAL_BIN does not name the corral binary")
        if (kind, topology) not in outcomes:
            with deadline(RUN_TIMEOUT_S + 90, "Curator recipes against %s %s" % (kind, topology)):
                outcomes[kind, topology] = _run_recipes(kind, topology)
        return outcomes[kind, topology]

    return run


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_recipe_passes(recipes, kind, topology):
    status, results, output = recipes(kind, topology)
    failed = {name: why for name, why in results.items() if why is not None}
    assert not failed, "\n".join("%s: %s" % item for item in failed.items()) + "\n" + output
    assert list(results) == CHECKS, output
    assert status == 0, output


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_zookeeper_and_corral_pass_the_same_checks(recipes, topology):
    _, zookeeper, zk_output = recipes("zookeeper", topology)
    _, corral, corral_output = recipes("corral", topology)
    passed = {kind: sorted(name for name, why in results.items() if why is None)
              for kind, results in (("zookeeper", zookeeper), ("corral", corral))}
    assert passed["zookeeper"] == passed["corral"], (
        "passed only by ZooKeeper: %s; only by Corral: %s\n--- ZooKeeper:\n%s\n--- Corral:\n%s" % (
            sorted(set(passed["zookeeper"]) - set(passed["corral"])),
            sorted(set(passed["corral"]) - set(passed["zookeeper"])), zk_output, corral_output))
