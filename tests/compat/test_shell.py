"""`corral cli`, the zkCli-compatible shell, driven as a person and as a script would.

Script mode is checked against zkCli itself: the same commands on the same nodes of the server
under test must print the same lines on the same streams. Interactive mode runs in a
pseudo-terminal (pexpect): type, read the screen, use tab completion, see watch events arrive.
The binary is $CORRAL_BIN (default: target/debug/corral of this repository).
"""

import os
import re
import subprocess

import pexpect
import pytest

from test_cli import zkcli
from test_kazoo import make_client, root, zk_hosts, _prefix_cleanup, _test_deadline  # noqa: F401

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORRAL_BIN = os.environ.get("CORRAL_BIN", os.path.join(REPO, "target", "debug", "corral"))


@pytest.fixture(autouse=True, scope="module")
def _binary_present():
    if not os.access(CORRAL_BIN, os.X_OK):
        pytest.fail(f"no corral binary at {CORRAL_BIN} (cargo build, or set CORRAL_BIN)")


def corral_cli(hosts, *args, stdin=None):
    proc = subprocess.run(
        [CORRAL_BIN, "cli", "-server", hosts, *args],
        capture_output=True,
        text=True,
        timeout=30,
        input=stdin,
    )
    return proc.returncode, proc.stdout.splitlines(), proc.stderr.splitlines()


def test_script_mode_prints_what_zkcli_prints(zk_hosts, make_client, root):
    zk = make_client()
    zk.create(root + "/n", b"hello")
    zk.create(root + "/n/child", b"")
    zk.set(root + "/n", b"hello again")
    # Reads: identical stdout.
    for command in (["get", "-s", root + "/n"], ["ls", root + "/n"], ["ls", "-s", root + "/n"],
                    ["stat", root + "/n"], ["getAcl", root + "/n"], ["ls", "-R", root],
                    ["getAllChildrenNumber", root], ["get", root + "/n/child"]):
        rc, out, err = corral_cli(zk_hosts, *command)
        theirs = zkcli(zk_hosts, *command)
        # (zkcli() drops blank lines with the JVM's noise.)
        assert (rc, [line for line in out if line]) == (theirs.rc, theirs.out), command
    # Errors: same message on stderr, non-zero status.
    for command in (["get", root + "/missing"], ["delete", root + "/n"],
                    ["create", root + "/n"], ["set", "-v", "7", root + "/n", "x"]):
        rc, out, err = corral_cli(zk_hosts, *command)
        theirs = zkcli(zk_hosts, *command)
        assert rc == 1 and theirs.rc == 1, command
        assert err == theirs.err, command
    # Writes: "Created <path>" on stderr, and the node is there.
    rc, out, err = corral_cli(zk_hosts, "create", "-s", root + "/seq-", "v")
    assert rc == 0 and err == [f"Created {root}/seq-0000000001"], err
    rc, _, err = corral_cli(zk_hosts, "create", root + "/acl", "x", "world:anyone:r")
    assert rc == 0, err
    assert zk.get_acls(root + "/acl")[0][0].perms == 1
    rc, _, _ = corral_cli(zk_hosts, "set", root + "/n", "changed")
    assert rc == 0 and zk.get(root + "/n")[0] == b"changed"
    rc, _, _ = corral_cli(zk_hosts, "deleteall", root + "/n")
    assert rc == 0 and zk.exists(root + "/n") is None
    rc, _, err = corral_cli(zk_hosts, "nosuchcommand")
    assert rc == 1 and any("get [-s] [-w] path" in line for line in err)


def test_piped_commands_run_in_one_session(zk_hosts, make_client, root):
    script = "\n".join([
        f"create -e {root}/eph mine",
        f"getEphemerals {root}",
        "whoami",
        "addauth digest alice:alice-secret",
        "whoami",
        f"sync {root}",
        "quit",
    ]) + "\n"
    rc, out, err = corral_cli(zk_hosts, stdin=script)
    assert rc == 0, err
    assert f"[{root}/eph]" in out
    assert "Sync is OK" in out
    assert "digest: alice" in out
    # The session ended with the script: its ephemeral is gone.
    zk = make_client()
    assert zk.exists(root + "/eph") is None


def spawn_shell(hosts):
    child = pexpect.spawn(CORRAL_BIN, ["cli", "-server", hosts], encoding="utf-8", timeout=10,
                          dimensions=(40, 200))
    child.expect(r"\[zk: [^\]]*\(CONNECTED\) 0\] ")
    return child


def prompt(n):
    return r"\[zk: [^\]]*\(CONNECTED\) %d\] " % n


def test_interactive_shell_in_a_terminal(zk_hosts, make_client, root):
    zk = make_client()
    zk.create(root + "/only-child-here", b"found me")
    child = spawn_shell(zk_hosts)
    try:
        child.sendline(f"create {root}/typed 'two words'")
        child.expect(f"Created {re.escape(root)}/typed")
        child.expect(prompt(1))
        assert zk.get(root + "/typed")[0] == b"two words"

        # Tab completion: the unique child's name is completed from the server.
        child.send(f"get {root}/only")
        child.send("\t")
        child.send("\r")
        child.expect("found me")
        child.expect(prompt(2))

        # A watch set in the shell fires when another client changes the node.
        child.sendline(f"get -w {root}/typed")
        child.expect("two words")
        child.expect(prompt(3))
        zk.set(root + "/typed", b"changed")
        child.expect(r"WATCHER::\s+WatchedEvent state:SyncConnected type:NodeDataChanged "
                     + f"path:{re.escape(root)}/typed")

        child.sendline(f"get {root}/missing")
        child.expect(f"Node does not exist: {re.escape(root)}/missing")
        child.sendline("history")
        child.expect(r"0 - create")
        child.expect(r"4 - history")
        child.sendline("redo 2")
        child.expect("changed")
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    # Errors in an interactive session do not end it, but the exit status reports them.
    assert child.exitstatus == 1


def test_quotas_from_the_shell(zk_hosts, make_client, root):
    zk = make_client()
    zk.create(root + "/q", b"ab")
    quota_dir = "/zookeeper/quota" + root
    try:
        rc, _, err = corral_cli(zk_hosts, "setquota", "-n", "10", "-B", "100", root + "/q")
        assert rc == 0, err
        rc, out, err = corral_cli(zk_hosts, "listquota", root + "/q")
        assert err == [f"absolute path is {quota_dir}/q/zookeeper_limits"]
        assert out[0] == (f"Output quota for {root}/q "
                          "count=10,bytes=-1,countHardLimit=-1,byteHardLimit=100")
        assert out[1] == f"Output stat for {root}/q count=1,bytes=2"
        # zkCli reads the limits Corral's shell wrote.
        theirs = zkcli(zk_hosts, "listquota", root + "/q")
        assert theirs.out[1] == out[1]
        rc, _, err = corral_cli(zk_hosts, "setquota", "-n", "1", root + "/q/x")
        assert rc == 1
        rc, _, _ = corral_cli(zk_hosts, "delquota", root + "/q")
        assert rc == 0 and zk.exists(quota_dir + "/q/zookeeper_limits") is None
    finally:
        if zk.exists(quota_dir):
            zk.delete(quota_dir, recursive=True)
