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

import time

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NotReadOnlyCallError
from kazoo.protocol.states import KeeperState

from ensemble import NOT_SERVING, deadline, four_letter, raw_connect, running, wait_until
from test_cli import zkcli


@pytest.fixture(params=["zookeeper", "corral"])
def ensemble(request):
    with running(request.param) as ens:
        yield ens


@pytest.fixture(autouse=True)
def _whole_test_deadline():
    with deadline(150, "read-only test"):
        yield


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
    started = time.time()
    assert raw_connect(port, read_only=False) == b""
    assert time.time() - started < 2, "closed at once, not left to time out"
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
