"""Closing a session through an ensemble member, with ZooKeeper's own Java client.

After the closeSession reply, Corral leaves the connection for the client to close (it does as
soon as it reads the reply) rather than racing it. The Java client 3.8 logs "EndOfStreamException:
Unable to read additional data from server ..., likely server has closed socket" as a warning
when the server closes first; against a Corral ensemble it must log nothing of the kind, through
the leader or a follower. (The real ZooKeeper 3.8 does race, and the warning shows in about two
closes out of three: that is why only Corral is checked.)
"""

import subprocess

from ensemble import running

CLASSPATH = ":".join(
    "/usr/share/java/%s.jar" % jar for jar in ("zookeeper", "slf4j-log4j12", "log4j-1.2")
)
LOG4J = """log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.Target=System.err
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%-5p [%t] - %m%n
"""


def test_java_client_closes_sessions_on_every_member_without_a_warning(tmp_path):
    log4j = tmp_path / "log4j.properties"
    log4j.write_text(LOG4J)
    with running("corral") as ens:
        for port in ens.ports:
            for _ in range(3):
                # zkCli reading commands: one session, closed by `close` (a closeSession).
                proc = subprocess.run(
                    ["java", "-Dlog4j.configuration=file:%s" % log4j, "-cp", CLASSPATH,
                     "org.apache.zookeeper.ZooKeeperMain", "-server", "127.0.0.1:%d" % port],
                    input="ls /\nclose\nquit\n", capture_output=True, text=True, timeout=60,
                )
                out = proc.stdout + proc.stderr
                assert "session id = " in out and "closed" in out, out
                warnings = [l for l in out.splitlines() if "EndOfStream" in l or l.startswith("WARN")]
                assert not warnings, "\n".join(warnings)
