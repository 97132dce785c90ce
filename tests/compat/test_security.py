"""Security side by side: the real ZooKeeper 3.8 and Corral, each a 3-member ensemble started
from the same zoo.cfg lines, the same JAAS file and the same key stores.

- SASL DIGEST-MD5 (`authProvider.1=...SASLAuthenticationProvider`, a JAAS `Server` section given
  as `-Djava.security.auth.login.config` in the JVM flags): kazoo through `sasl_options` and the
  legacy `auth_data=[("sasl", ...)]`, `sasl:` ACLs, wrong passwords and unknown users, zkCli with
  a JAAS `Client` section; and `sessionRequireClientSASLAuth` on a standalone server of each kind.
- TLS on `secureClientPort` (`serverCnxnFactory=...NettyServerCnxnFactory`, which ZooKeeper needs
  and Corral ignores): a PKCS#12 key store with a password and a PEM trust store; kazoo with a
  client certificate and its `x509` identity and ACLs; no certificate, an untrusted one, and a
  plaintext client on the TLS port refused (and counted in `mntr`); zkCli over TLS through
  Netty. Port unification on a standalone server of each kind.
- Corral alone (ZooKeeper 3.8.0 cannot): certificates reloaded when their files change, and a
  PEM key store with an encrypted key.

The throwaway PKI is made here with openssl and keytool (a CA, a server certificate for
127.0.0.1, client certificates for alice and, from another CA, mallory).
"""

import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
import time

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import (AuthFailedError, InvalidACLError, NoAuthError,
                              SessionClosedRequireSaslError)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.serialization import int_struct, read_string
from kazoo.retry import KazooRetry
from kazoo.security import make_acl

from ensemble import (CORRAL_BIN, ZK_CLASSPATH, Ensemble, deadline, four_letter, free_port,
                      running, wait_until)
from test_cli import CLI_TIMEOUT_S, NOISE, ZKCLI

PASSWORD = "changeit"
SASL_PROVIDER = "org.apache.zookeeper.server.auth.SASLAuthenticationProvider"
NETTY_JARS = ":".join("/usr/share/java/%s.jar" % jar for jar in (
    "netty-codec", "netty-resolver", "netty-transport-native-unix-common"))
JAAS_SERVER = """Server {
    org.apache.zookeeper.server.auth.DigestLoginModule required
    user_super="super-secret"
    user_alice="alice-secret"
    user_bob="bob-secret";
};
"""
ALICE_DN = "O=Corral,CN=alice"


def sh(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d):
    """A CA, certificates signed by it for the server and alice, and mallory's from another."""
    def cert(name, subject, ca, ext, days="2"):
        sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
           "-keyout", name + ".key", "-out", name + ".csr", cwd=d)
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(ext + "\n")
        sh("openssl", "x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey",
           ca + ".key", "-CAcreateserial", "-days", days, "-extfile", name + ".ext",
           "-out", name + ".crt", cwd=d)

    for ca, subject in (("ca", "/CN=Test CA/O=Corral"), ("evilca", "/CN=Evil CA/O=Evil")):
        sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
           "-subj", subject, "-keyout", ca + ".key", "-out", ca + ".pem", cwd=d)
    cert("server", "/CN=localhost/O=Corral", "ca",
         "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth")
    cert("alice", "/CN=alice/O=Corral", "ca", "extendedKeyUsage=clientAuth")
    cert("mallory", "/CN=mallory/O=Evil", "evilca", "extendedKeyUsage=clientAuth")
    # Valid until the second it was made: expired by the time a test shows it.
    cert("expired", "/CN=expired/O=Corral", "ca", "extendedKeyUsage=clientAuth", days="0")
    for name in ("server", "alice"):
        with open(os.path.join(d, name + ".pem"), "w") as out:
            for part in (".key", ".crt"):
                out.write(open(os.path.join(d, name + part)).read())
        sh("openssl", "pkcs12", "-export", "-inkey", name + ".key", "-in", name + ".crt",
           "-name", name, "-passout", "pass:" + PASSWORD, "-out", name + ".p12", cwd=d)
    # Java reads a certificate-only PKCS#12 as trusted only as keytool writes it.
    sh("keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem", "-keystore",
       "truststore.p12", "-storetype", "PKCS12", "-storepass", PASSWORD, cwd=d)
    # The same in Java's own format (JKS), as many deployments still keep them.
    sh("keytool", "-importkeystore", "-noprompt", "-srckeystore", "server.p12", "-srcstoretype",
       "PKCS12", "-srcstorepass", PASSWORD, "-destkeystore", "server.jks", "-deststoretype",
       "JKS", "-deststorepass", PASSWORD, cwd=d)
    sh("keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem", "-keystore",
       "truststore.jks", "-storetype", "JKS", "-storepass", PASSWORD, cwd=d)
    with open(os.path.join(d, "jaas.conf"), "w") as f:
        f.write(JAAS_SERVER)
    with open(os.path.join(d, "jaas-alice.conf"), "w") as f:
        f.write('Client {\n  org.apache.zookeeper.server.auth.DigestLoginModule required\n'
                '  username="alice" password="alice-secret";\n};\n')


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="corral-pki-")
    make_pki(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def security_lines(pki, secure_port):
    """The zoo.cfg lines both servers get: SASL, TLS on a secure port and between members."""
    return [
        "sslQuorum=true",
        "ssl.quorum.keyStore.location=%s/server.p12" % pki,
        "ssl.quorum.keyStore.password=" + PASSWORD,
        "ssl.quorum.trustStore.location=%s/ca.pem" % pki,
        "ssl.quorum.trustStore.type=PEM",
        "authProvider.1=" + SASL_PROVIDER,
        "secureClientPort=%d" % secure_port,
        "secureClientPortAddress=127.0.0.1",
        "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
        "ssl.keyStore.location=%s/server.p12" % pki,
        "ssl.keyStore.password=" + PASSWORD,
        "ssl.trustStore.location=%s/ca.pem" % pki,
        "ssl.trustStore.type=PEM",
    ]


def server_command(kind, cfg, jaas, flags=()):
    """How to start a server of `kind` on `cfg`, with the JAAS file in its JVM flags (as an
    operator's java.env passes them); returns (argv, env)."""
    jvm = ["-Djava.security.auth.login.config=" + jaas, *flags]
    if kind == "corral":
        return [CORRAL_BIN, "server", "--config", cfg], dict(os.environ, SERVER_JVMFLAGS=" ".join(jvm))
    return (["java", "-Xmx256m", *jvm, "-cp", ZK_CLASSPATH + ":" + NETTY_JARS,
             "org.apache.zookeeper.server.quorum.QuorumPeerMain", cfg], dict(os.environ))


class JaasEnsemble(Ensemble):
    """Members started with a JAAS file (`self.jaas`) and JVM flags (`self.flags`)."""
    flags = ()

    def start(self, i):
        log = open(os.path.join(self.dir, "m%d.log" % (i + 1)), "ab")
        cmd, env = server_command(self.kind, self.cfg(i), self.jaas, self.flags)
        self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=self.dir)


class SecureEnsemble(JaasEnsemble):
    """Three members with SASL and a secure client port each."""

    def __init__(self, kind, workdir, pki):
        self.pki, self.jaas = pki, pki + "/jaas.conf"
        self.secure_ports = [free_port() for _ in range(3)]
        super().__init__(kind, workdir)

    def extra_lines(self, i):
        return security_lines(self.pki, self.secure_ports[i])

    def secure_hosts(self):
        return ",".join("127.0.0.1:%d" % p for p in self.secure_ports)


@pytest.fixture(scope="module", params=["zookeeper", "corral"])
def ensemble(request, pki):
    with running(request.param, functools.partial(SecureEnsemble, pki=pki)) as ens:
        yield ens


@contextlib.contextmanager
def standalone(kind, pki, lines, flags=(), jaas=None):
    """One server of `kind` with these extra zoo.cfg lines; yields its client port."""
    if kind == "corral" and not os.access(CORRAL_BIN, os.X_OK):
        pytest.skip("CORRAL_BIN does not name the corral binary")
    workdir = tempfile.mkdtemp(prefix="corral-standalone-%s-" % kind)
    port = free_port()
    cfg = os.path.join(workdir, "zoo.cfg")
    with open(cfg, "w") as f:
        f.write("\n".join(["tickTime=500", "dataDir=%s/data" % workdir, "clientPort=%d" % port,
                           "clientPortAddress=127.0.0.1", "maxClientCnxns=0",
                           "admin.enableServer=false", "4lw.commands.whitelist=*"] + lines) + "\n")
    cmd, env = server_command(kind, cfg, jaas or pki + "/jaas.conf", flags)
    log = open(os.path.join(workdir, "server.log"), "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=workdir)
    try:
        wait_until("%s serving" % kind, lambda: four_letter(port, "ruok") == "imok", 30)
        yield port
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _whole_test_deadline():
    with deadline(150, "security test"):
        yield


def client(hosts, **kw):
    c = KazooClient(hosts=hosts, timeout=10, connection_retry=KazooRetry(max_tries=0), **kw)
    c.start(timeout=20)
    return c


@contextlib.contextmanager
def connected(hosts, **kw):
    c = client(hosts, **kw)
    try:
        yield c
    finally:
        c.stop()
        c.close()


def refused(hosts, **kw):
    """A client that cannot get through (kazoo says only that it timed out; the reason is in
    its log and the server's)."""
    c = KazooClient(hosts=hosts, timeout=4, connection_retry=KazooRetry(max_tries=0), **kw)
    started = time.time()
    try:
        with pytest.raises(KazooTimeoutError):
            c.start(timeout=4)
        assert time.time() - started < 10
    finally:
        c.stop()
        c.close()


class WhoAmI:
    """ZooKeeper 3.7's whoAmI request (opcode 107), which kazoo does not have."""
    type = 107

    def __bool__(self):
        # kazoo drops the reply to a request that is false.
        return True

    def serialize(self):
        return b""

    @classmethod
    def deserialize(cls, buf, offset):
        count = int_struct.unpack_from(buf, offset)[0]
        offset += int_struct.size
        ids = []
        for _ in range(max(count, 0)):
            scheme, offset = read_string(buf, offset)
            user, offset = read_string(buf, offset)
            ids.append((scheme, user))
        return sorted(ids)


def whoami(c):
    """The session's identities as (scheme, user), sorted."""
    result = c.handler.async_result()
    c._call(WhoAmI(), result)
    return result.get(timeout=10)


def alice_sasl():
    return {"sasl_options": {"mechanism": "DIGEST-MD5", "username": "alice",
                             "password": "alice-secret"}}


def alice_tls(pki):
    return dict(use_ssl=True, ca=pki + "/ca.pem", certfile=pki + "/alice.crt",
                keyfile=pki + "/alice.key")


def mntr(port):
    return dict(line.split("\t", 1) for line in four_letter(port, "mntr").splitlines()
                if "\t" in line)


def test_sasl_digest_md5_users_and_acls(ensemble, caplog):
    path = "/sasl-%s" % ensemble.kind
    with connected(ensemble.hosts(), **alice_sasl()) as alice:
        assert ("sasl", "alice") in whoami(alice)
        alice.create(path, b"hers", acl=[make_acl("sasl", "alice", all=True)])
        assert alice.get_acls(path)[0][0].id.id == "alice"
    # The deprecated form of the same login, and another member.
    with pytest.warns(DeprecationWarning):
        legacy = KazooClient(hosts=ensemble.hosts().split(",")[2], timeout=10,
                             auth_data=[("sasl", "alice:alice-secret")])
    legacy.start(timeout=20)
    try:
        legacy.sync(path)
        assert legacy.get(path)[0] == b"hers"
    finally:
        legacy.stop()
        legacy.close()
    bob = {"sasl_options": {"mechanism": "DIGEST-MD5", "username": "bob", "password": "bob-secret"}}
    with connected(ensemble.hosts(), **bob) as c:
        assert ("sasl", "bob") in whoami(c)
        with pytest.raises(NoAuthError):
            c.get(path)
    with connected(ensemble.hosts()) as anonymous:
        assert whoami(anonymous) == [("ip", "127.0.0.1")]
        with pytest.raises(NoAuthError):
            anonymous.get(path)
    failed_before = auth_failed(ensemble)
    for user, password in (("alice", "wrong"), ("mallory", "x")):
        opts = {"sasl_options": {"mechanism": "DIGEST-MD5", "username": user, "password": password}}
        c = KazooClient(hosts=ensemble.hosts(), timeout=10,
                        connection_retry=KazooRetry(max_tries=0), **opts)
        caplog.clear()
        try:
            # kazoo reports the session connected before its SASL exchange: start() may
            # return first (then the first request fails), or wait out its timeout when the
            # failure came first. Either way kazoo says why.
            with pytest.raises((AuthFailedError, KazooTimeoutError)):
                c.start(timeout=10)
                c.get_children("/")
        finally:
            c.stop()
            c.close()
        assert "AUTH_FAILED" in caplog.text
    # ZooKeeper's auth_failed_count counts failed TLS handshakes only, not SASL; Corral's
    # auth_refused_count counts these.
    assert auth_failed(ensemble) == failed_before
    if ensemble.kind == "corral":
        assert sum(int(mntr(p)["zk_auth_refused_count"]) for p in ensemble.ports) >= 2


def auth_failed(ensemble):
    return sum(int(mntr(p)["zk_auth_failed_count"]) for p in ensemble.ports)


@pytest.mark.parametrize("kind", ["zookeeper", "corral"])
def test_acl_schemes_need_their_providers(kind, pki):
    """`sasl:` ACLs need the SASL provider and `x509:` ones a TLS client port; without them
    they are InvalidACL (`digest` and `ip` are always there)."""
    sasl, x509 = make_acl("sasl", "alice", all=True), make_acl("x509", ALICE_DN, all=True)
    for lines, valid, invalid in (([], [], [sasl, x509]),
                                  (["authProvider.1=" + SASL_PROVIDER], [sasl], [x509])):
        with standalone(kind, pki, lines) as port, connected("127.0.0.1:%d" % port) as c:
            for acl in invalid:
                with pytest.raises(InvalidACLError):
                    c.create("/acl-%s" % acl.id.scheme, b"", acl=[acl])
                with pytest.raises(InvalidACLError):
                    c.set_acls("/", [acl])
            for acl in valid + [make_acl("digest", "u:h", all=True)]:
                c.create("/acl-%s" % acl.id.scheme, b"", acl=[acl])


def zkcli_lines(hosts, flags, *args):
    env = dict(os.environ, CLIENT_JVMFLAGS=flags)
    proc = subprocess.run([ZKCLI, "-server", hosts, *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL, env=env)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if not NOISE.match(line)]


def test_zkcli_logs_in_with_a_jaas_client_section(ensemble, pki):
    flags = "-Djava.security.auth.login.config=%s/jaas-alice.conf" % pki
    host = ensemble.hosts().split(",")[1]
    out = zkcli_lines(host, flags, "whoami")
    assert "sasl: alice" in out, out
    path = "/zkcli-sasl-%s" % ensemble.kind
    zkcli_lines(host, flags, "create", path, "v", "sasl:alice:cdrwa")
    out = zkcli_lines(host, flags, "getAcl", path)
    assert "'sasl,'alice" in out, out


def test_tls_client_certificates_are_x509_identities(ensemble, pki):
    path = "/x509-%s" % ensemble.kind
    with connected(ensemble.secure_hosts(), **alice_tls(pki)) as alice:
        assert ("x509", ALICE_DN) in whoami(alice)
        alice.create(path, b"cert", acl=[make_acl("auth", "", all=True)])
        acl = alice.get_acls(path)[0]
        assert [(a.id.scheme, a.id.id) for a in acl] == [("x509", ALICE_DN)]
    # The same identity over plaintext has no certificate to show.
    with connected(ensemble.hosts()) as plain:
        with pytest.raises(NoAuthError):
            plain.get(path)


def test_tls_refuses_missing_untrusted_expired_and_plaintext_clients(ensemble, pki):
    port = ensemble.secure_ports[0]
    plain_port = ensemble.ports[0]
    before = int(mntr(plain_port).get("zk_unsuccessful_handshake", 0))
    cases = [
        dict(use_ssl=True, ca=pki + "/ca.pem"),
        dict(use_ssl=True, ca=pki + "/ca.pem", certfile=pki + "/mallory.crt",
             keyfile=pki + "/mallory.key"),
        dict(use_ssl=True, ca=pki + "/ca.pem", certfile=pki + "/expired.crt",
             keyfile=pki + "/expired.key"),
        {},
    ]
    for kw in cases:
        refused("127.0.0.1:%d" % port, **kw)
    # Each refusal was a failed handshake; the server says so in mntr.
    wait_until("refused handshakes counted",
               lambda: int(mntr(plain_port).get("zk_unsuccessful_handshake", 0)) >= before + 4, 10)
    assert int(mntr(plain_port)["zk_auth_failed_count"]) >= 4
    if ensemble.kind == "corral":
        # Each refusal says why in the member's log.
        log = os.path.join(ensemble.dir, "m1.log")
        for why in ("peer sent no certificates", "UnknownIssuer", "certificate expired",
                    "plaintext client on the TLS port"):
            wait_until("the log says %r" % why,
                       lambda: why in open(log, errors="replace").read(), 10)


def test_zkcli_over_tls_with_pkcs12_stores(ensemble, pki):
    flags = " ".join([
        "-cp", "/usr/share/java/zookeeper.jar:" + NETTY_JARS,
        "-Dzookeeper.client.secure=true",
        "-Dzookeeper.clientCnxnSocket=org.apache.zookeeper.ClientCnxnSocketNetty",
        "-Dzookeeper.ssl.keyStore.location=%s/alice.p12" % pki,
        "-Dzookeeper.ssl.keyStore.password=" + PASSWORD,
        "-Dzookeeper.ssl.trustStore.location=%s/truststore.p12" % pki,
        "-Dzookeeper.ssl.trustStore.password=" + PASSWORD,
    ])
    host = "127.0.0.1:%d" % ensemble.secure_ports[2]
    out = zkcli_lines(host, flags, "whoami")
    assert "x509: " + ALICE_DN in out, out


def test_members_refuse_plaintext_peers(ensemble):
    """With sslQuorum the member links are TLS: the ensemble above formed over them, and a
    peer that speaks plaintext to a member's quorum port is refused."""
    import socket
    # ZooKeeper's members all listen on their election port (only the leader on its quorum
    # port); Corral's on their quorum port, which carries its elections too.
    peer, election = ensemble.peers[0]
    port = peer if ensemble.kind == "corral" else election
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\0\0\0\x10plaintext member")
        s.settimeout(10)
        try:
            assert s.recv(4096)[:1] in (b"", b"\x15"), "a TLS alert or a close"
        except ConnectionResetError:
            pass
    if ensemble.kind == "corral":
        log = os.path.join(ensemble.dir, "m1.log")
        wait_until("the refusal logged",
                   lambda: "refusing a member link" in open(log, errors="replace").read(), 10)


@pytest.mark.parametrize("kind", ["zookeeper", "corral"])
def test_required_sasl_refuses_other_sessions(kind, pki):
    lines = ["authProvider.1=" + SASL_PROVIDER]
    with standalone(kind, pki, lines, ["-Dzookeeper.sessionRequireClientSASLAuth=true"]) as port:
        hosts = "127.0.0.1:%d" % port
        with connected(hosts) as anonymous:
            with pytest.raises(SessionClosedRequireSaslError):
                anonymous.get_children("/")
        with connected(hosts, **alice_sasl()) as alice:
            assert "zookeeper" in alice.get_children("/")


@pytest.mark.parametrize("kind", ["zookeeper", "corral"])
def test_port_unification_takes_tls_and_plaintext_on_one_port(kind, pki):
    lines = [
        "client.portUnification=true",
        "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
        "authProvider.x509=org.apache.zookeeper.server.auth.X509AuthenticationProvider",
        "ssl.keyStore.location=%s/server.pem" % pki,
        "ssl.trustStore.location=%s/ca.pem" % pki,
        "ssl.clientAuth=want",
    ]
    with standalone(kind, pki, lines) as port:
        hosts = "127.0.0.1:%d" % port
        with connected(hosts, **alice_tls(pki)) as alice:
            assert ("x509", ALICE_DN) in whoami(alice)
        with connected(hosts, use_ssl=True, ca=pki + "/ca.pem") as no_cert:
            assert whoami(no_cert) == [("ip", "127.0.0.1")]
        with connected(hosts) as plain:
            assert whoami(plain) == [("ip", "127.0.0.1")]
        assert four_letter(port, "ruok") == "imok"


@pytest.mark.parametrize("kind", ["zookeeper", "corral"])
def test_jks_key_and_trust_stores(kind, pki):
    lines = [
        "secureClientPort=%d" % free_port(),
        "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
        "ssl.keyStore.location=%s/server.jks" % pki,
        "ssl.keyStore.password=" + PASSWORD,
        "ssl.trustStore.location=%s/truststore.jks" % pki,
        "ssl.trustStore.password=" + PASSWORD,
    ]
    with standalone(kind, pki, lines):
        secure = "127.0.0.1:%s" % lines[0].split("=")[1]
        with connected(secure, **alice_tls(pki)) as alice:
            assert ("x509", ALICE_DN) in whoami(alice)
        refused(secure, use_ssl=True, ca=pki + "/ca.pem", certfile=pki + "/mallory.crt",
                keyfile=pki + "/mallory.key")


def test_corral_reloads_changed_certificates_and_reads_encrypted_pem_keys(pki):
    """ZooKeeper 3.8.0 keeps the certificates it started with; Corral reloads them when their
    files change, so a rotation needs no restart."""
    work = tempfile.mkdtemp(prefix="corral-rotate-")
    try:
        key_store = os.path.join(work, "server.pem")
        # An encrypted PKCS#8 key with the certificate, as ZooKeeper reads a PEM key store
        # with ssl.keyStore.password.
        sh("openssl", "pkcs8", "-topk8", "-in", pki + "/server.key", "-out", work + "/enc.key",
           "-passout", "pass:" + PASSWORD, "-v2", "aes-256-cbc", cwd=work)
        with open(key_store, "w") as f:
            f.write(open(work + "/enc.key").read() + open(pki + "/server.crt").read())
        lines = ["secureClientPort=%d" % free_port(), "secureClientPortAddress=127.0.0.1",
                 "ssl.keyStore.location=" + key_store, "ssl.keyStore.password=" + PASSWORD,
                 "ssl.trustStore.location=%s/ca.pem" % pki]
        secure = int(lines[0].split("=")[1])
        with standalone("corral", pki, lines) as port:
            hosts = "127.0.0.1:%d" % secure
            with connected(hosts, **alice_tls(pki)) as alice:
                assert ("x509", ALICE_DN) in whoami(alice)
            # Rotate to a certificate from another CA: new handshakes get it at once, so a
            # client trusting only the old CA is refused and one trusting the new CA connects.
            sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
               "-subj", "/CN=localhost/O=Rotated", "-addext", "subjectAltName=IP:127.0.0.1",
               "-keyout", "new.key", "-out", "new.crt", cwd=work)
            time.sleep(0.01)
            with open(key_store + ".tmp", "w") as f:
                f.write(open(work + "/new.key").read() + open(work + "/new.crt").read())
            os.rename(key_store + ".tmp", key_store)
            # Corral looks at the files' times once a second at most.
            time.sleep(1.5)
            rotated = dict(alice_tls(pki), ca=work + "/new.crt")
            with connected(hosts, **rotated) as c:
                assert ("x509", ALICE_DN) in whoami(c)
            refused(hosts, **alice_tls(pki))
            assert four_letter(port, "ruok") == "imok"
    finally:
        shutil.rmtree(work, ignore_errors=True)


# Kerberos: a throwaway realm (kdc.sh) with a KDC, the service principal zookeeper/localhost
# and its keytab, and clients alice and zkcli/localhost.

KDC_SH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kdc.sh")
REALM = "CORRAL.TEST"


def krb5_section(section, keytab, principal):
    return ("%s {\n  com.sun.security.auth.module.Krb5LoginModule required\n"
            "  useKeyTab=true keyTab=\"%s\" storeKey=true useTicketCache=false\n"
            "  principal=\"%s\";\n};\n" % (section, keytab, principal))


def krb5_jaas(path, section, keytab, principal):
    with open(path, "w") as f:
        f.write(krb5_section(section, keytab, principal))
    return path


@pytest.fixture(scope="module")
def realm():
    """A running KDC; this process's Kerberos environment points at it, with alice's ticket."""
    d = tempfile.mkdtemp(prefix="corral-realm-")
    subprocess.run([KDC_SH, d], check=True, capture_output=True, timeout=60)
    saved = {k: os.environ.get(k) for k in ("KRB5_CONFIG", "KRB5CCNAME", "KRB5_KDC_PROFILE")}
    for line in open(os.path.join(d, "env.sh")):
        if line.startswith("export "):
            key, value = line[len("export "):].strip().split("=", 1)
            os.environ[key] = value
    subprocess.run(["kinit", "-kt", d + "/alice.keytab", "alice@" + REALM], check=True,
                   capture_output=True, timeout=30)
    krb5_jaas(d + "/jaas-server.conf", "Server", d + "/zookeeper.keytab",
              "zookeeper/localhost@" + REALM)
    krb5_jaas(d + "/jaas-alice.conf", "Client", d + "/alice.keytab", "alice@" + REALM)
    krb5_jaas(d + "/jaas-zkcli.conf", "Client", d + "/zkcli.keytab", "zkcli/localhost@" + REALM)
    try:
        yield d
    finally:
        subprocess.run([KDC_SH, d, "stop"], capture_output=True, timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(d, ignore_errors=True)


class KerberosEnsemble(JaasEnsemble):
    """Three members whose SASL login is Kerberos (a Krb5LoginModule server section)."""

    def __init__(self, kind, workdir, realm):
        self.realm, self.jaas = realm, realm + "/jaas-server.conf"
        self.flags = ["-Djava.security.krb5.conf=%s/krb5.conf" % realm]
        super().__init__(kind, workdir)

    def extra_lines(self, i):
        return ["authProvider.1=" + SASL_PROVIDER]

    def hosts(self):
        # The client asks for a ticket to zookeeper/<the host it dials>.
        return ",".join("localhost:%d" % p for p in self.ports)


@pytest.fixture(scope="module", params=["zookeeper", "corral"])
def kerberized(request, realm):
    with running(request.param, functools.partial(KerberosEnsemble, realm=realm)) as ens:
        yield ens


def zkcli_kerberos(realm, jaas, host, *args, flags=()):
    jvm = " ".join(["-Djava.security.auth.login.config=" + jaas,
                    "-Djava.security.krb5.conf=%s/krb5.conf" % realm, *flags])
    return zkcli_lines(host, jvm, *args)


def test_kerberos_logins_through_kazoo_and_zkcli(kerberized, realm):
    gssapi = {"sasl_options": {"mechanism": "GSSAPI", "service": "zookeeper"}}
    path = "/krb-%s" % kerberized.kind
    with connected(kerberized.hosts(), **gssapi) as alice:
        assert ("sasl", "alice@" + REALM) in whoami(alice)
        alice.create(path, b"k", acl=[make_acl("auth", "", all=True)])
        acl = alice.get_acls(path)[0]
        assert [(a.id.scheme, a.id.id) for a in acl] == [("sasl", "alice@" + REALM)]
    host = "127.0.0.1:%d" % kerberized.ports[1]
    out = zkcli_kerberos(realm, realm + "/jaas-alice.conf", host, "getAcl", path)
    assert "'sasl,'alice@" + REALM in out, out
    # A ticket for a service principal the server is not: refused.
    out = zkcli_kerberos(realm, realm + "/jaas-alice.conf", host, "whoami",
                         flags=["-Dzookeeper.server.principal=zookeeper/127.0.0.1@" + REALM])
    assert any("AuthFailed" in line for line in out), out
    assert "sasl: alice@" + REALM not in out


@pytest.mark.parametrize("kind", ["zookeeper", "corral"])
def test_kerberos_principals_without_host_and_realm(kind, pki, realm):
    lines = ["authProvider.1=" + SASL_PROVIDER, "kerberos.removeHostFromPrincipal=true",
             "kerberos.removeRealmFromPrincipal=true"]
    flags = ["-Djava.security.krb5.conf=%s/krb5.conf" % realm]
    with standalone(kind, pki, lines, flags, jaas=realm + "/jaas-server.conf") as port:
        out = zkcli_kerberos(realm, realm + "/jaas-zkcli.conf", "127.0.0.1:%d" % port, "whoami")
        assert "sasl: zkcli" in out, out


# SASL between members: every link logs in (learnerRequireSasl) and none may skip it
# (serverRequireSasl), with the JAAS QuorumServer and QuorumLearner sections.
QUORUM_SASL_LINES = ["quorum.auth.enableSasl=true", "quorum.auth.learnerRequireSasl=true",
                     "quorum.auth.serverRequireSasl=true", "quorum.cnxn.threads.size=20"]


def digest_quorum_jaas(path, password):
    with open(path, "w") as f:
        f.write(JAAS_SERVER + """QuorumServer {
    org.apache.zookeeper.server.auth.DigestLoginModule required
    user_member="member-secret";
};
QuorumLearner {
    org.apache.zookeeper.server.auth.DigestLoginModule required
    username="member"
    password="%s";
};
""" % password)
    return path


def kerberos_quorum_jaas(path, realm, learner_keytab, learner):
    """Clients log in as zookeeper/localhost, members as zkquorum/127.0.0.1 (two keytabs)."""
    with open(path, "w") as f:
        f.write(krb5_section("Server", realm + "/zookeeper.keytab", "zookeeper/localhost@" + REALM)
                + krb5_section("QuorumServer", realm + "/zkquorum.keytab",
                               "zkquorum/127.0.0.1@" + REALM)
                + krb5_section("QuorumLearner", learner_keytab, learner))
    return path


class QuorumSaslEnsemble(JaasEnsemble):
    """Three members that log in to each other by SASL."""

    def __init__(self, kind, workdir, jaas, flags=(), lines=()):
        self.jaas, self.flags, self.lines = jaas, list(flags), list(lines)
        super().__init__(kind, workdir)

    def extra_lines(self, i):
        return QUORUM_SASL_LINES + self.lines


def members_log_in(ens, wrong_jaas):
    """The ensemble serves with its links logged in; a member restarted with a login the others
    refuse never joins, while the other two go on; with its own login back it catches up."""
    with connected(ens.hosts()) as c:
        c.create("/quorum-sasl", b"v")
    with connected("127.0.0.1:%d" % ens.ports[2]) as c:
        c.sync("/quorum-sasl")
        assert c.get("/quorum-sasl")[0] == b"v"
    right = ens.jaas
    ens.kill(2)
    ens.jaas = wrong_jaas
    ens.start(2)
    wait_until("member 3 up", lambda: four_letter(ens.ports[2], "ruok") == "imok", 30)
    ens.wait_serving([0, 1])
    until = time.time() + 6
    while time.time() < until:
        assert ens.mode(2) not in ("leader", "follower"), "a member whose login is refused joined"
        time.sleep(0.3)
    with connected("127.0.0.1:%d" % ens.ports[0]) as c:
        c.set("/quorum-sasl", b"w")
    if ens.kind == "corral":
        log = os.path.join(ens.dir, "m3.log")
        wait_until("member 3 says its login failed",
                   lambda: "SASL login to a member failed" in open(log, errors="replace").read(), 10)
    ens.kill(2)
    ens.jaas = right
    ens.start(2)
    ens.wait_serving([0, 1, 2])
    with connected("127.0.0.1:%d" % ens.ports[2]) as c:
        c.sync("/quorum-sasl")
        assert c.get("/quorum-sasl")[0] == b"w"


@pytest.mark.parametrize("kind", ["zookeeper", "corral"])
def test_members_log_in_to_each_other_by_digest_md5(kind, tmp_path):
    jaas = digest_quorum_jaas(str(tmp_path / "jaas.conf"), "member-secret")
    wrong = digest_quorum_jaas(str(tmp_path / "jaas-wrong.conf"), "guess")
    with running(kind, functools.partial(QuorumSaslEnsemble, jaas=jaas)) as ens:
        members_log_in(ens, wrong)


@pytest.mark.parametrize("kind", ["zookeeper", "corral"])
def test_members_log_in_to_each_other_by_kerberos(kind, realm, tmp_path):
    jaas = kerberos_quorum_jaas(str(tmp_path / "jaas.conf"), realm, realm + "/zkquorum.keytab",
                                "zkquorum/127.0.0.1@" + REALM)
    # A principal of the realm, but not of the ensemble's hosts: not a member.
    wrong = kerberos_quorum_jaas(str(tmp_path / "jaas-wrong.conf"), realm,
                                 realm + "/zkcli.keytab", "zkcli/localhost@" + REALM)
    ensemble = functools.partial(
        QuorumSaslEnsemble, jaas=jaas, flags=["-Djava.security.krb5.conf=%s/krb5.conf" % realm],
        lines=["authProvider.1=" + SASL_PROVIDER,
               "quorum.auth.kerberos.servicePrincipal=zkquorum/_HOST"])
    with running(kind, ensemble) as ens:
        members_log_in(ens, wrong)
        # Clients still log in by Kerberos beside the members (two keytabs, one process).
        gssapi = {"sasl_options": {"mechanism": "GSSAPI", "service": "zookeeper"}}
        with connected(",".join("localhost:%d" % p for p in ens.ports), **gssapi) as alice:
            assert ("sasl", "alice@" + REALM) in whoami(alice)
