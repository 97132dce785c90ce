"""The web console (admin.console.enabled) in a real browser: Debian's headless Chromium driven by
Selenium, against a Corral whose admin port speaks HTTPS (admin.forceHttps with the members' key
store, as ZooKeeper's Jetty admin server takes it).

A user logs in, browses to a node, reads it as JSON, edits it, meets a version conflict made by
another client (kazoo), sees changes made by that client appear live, is refused an edit that the
node's ACL forbids, pages through many children, deletes a subtree, and looks at the sessions,
ensemble and metrics pages. Without a login, or without the CSRF token, nothing is read or
changed. Screenshots go to $CONSOLE_SCREENSHOTS (default: target/console-screenshots).
"""

import contextlib
import http.client
import http.cookiejar
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from kazoo.client import KazooClient
from kazoo.security import make_acl, make_digest_acl
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from ensemble import CORRAL_BIN, Ensemble, free_port, running, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS",
                       os.path.join(HERE, "..", "..", "target", "console-screenshots"))
SUPER_DIGEST = "super:D/InIHSb7yEEbrWz8b9l71RjZJU="  # super / test
ALICE = ("alice", "alice-secret")
BOB = ("bob", "bob-secret")
WAIT = 15


def digest(user, password):
    import base64
    import hashlib
    return "%s:%s" % (user, base64.b64encode(
        hashlib.sha1(("%s:%s" % (user, password)).encode()).digest()).decode())


def console_lines(admin_port, pki):
    return [
        "admin.enableServer=true",
        "admin.serverAddress=127.0.0.1",
        "admin.serverPort=%d" % admin_port,
        "admin.console.enabled=true",
        "admin.console.users=%s,%s" % (digest(*ALICE), digest(*BOB)),
        "admin.forceHttps=true",
        "ssl.quorum.keyStore.location=%s/server.pem" % pki,
        "ssl.quorum.trustStore.location=%s/ca.pem" % pki,
        "superDigest=" + SUPER_DIGEST,
    ]


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="corral-console-pki-")

    def sh(*args):
        subprocess.run(args, cwd=d, check=True, capture_output=True)

    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
       "-subj", "/CN=Console CA", "-keyout", "ca.key", "-out", "ca.pem")
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
       "-keyout", "server.key", "-out", "server.csr")
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    sh("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
       "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.crt")
    with open(os.path.join(d, "server.pem"), "w") as out:
        for part in ("server.key", "server.crt"):
            out.write(open(os.path.join(d, part)).read())
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def server(pki):
    if not os.access(CORRAL_BIN, os.X_OK):
        pytest.skip("CORRAL_BIN does not name the corral binary")
    workdir = tempfile.mkdtemp(prefix="corral-console-")
    port, admin = free_port(), free_port()
    cfg = os.path.join(workdir, "zoo.cfg")
    with open(cfg, "w") as f:
        f.write("\n".join(["tickTime=500", "dataDir=%s/data" % workdir, "clientPort=%d" % port,
                           "clientPortAddress=127.0.0.1"] + console_lines(admin, pki)) + "\n")
    log = open(os.path.join(workdir, "corral.log"), "wb")
    proc = subprocess.Popen([CORRAL_BIN, "server", "--config", cfg], stdout=log, stderr=log)
    base = "https://127.0.0.1:%d" % admin
    wait_until("the console answers", lambda: fetch(base, "/login", pki=pki)[0] == 200, 30)
    try:
        yield {"port": port, "base": base, "pki": pki, "log": os.path.join(workdir, "corral.log")}
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def fetch(base, path, pki, data=None, headers=None, jar=None, method=None):
    """(status, body) of an HTTPS request that checks the server's certificate against the CA,
    with the cookies in `jar`."""
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.pem"))
    handlers = [urllib.request.HTTPSHandler(context=ctx)]
    if jar is not None:
        handlers.append(urllib.request.HTTPCookieProcessor(jar))
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(base + path, data=data, headers=headers or {}, method=method)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, ssl.SSLError):
        return 0, ""


@pytest.fixture(scope="module")
def zk(server):
    """Another client, as super: it makes the nodes and the changes the browser sees."""
    c = KazooClient(hosts="127.0.0.1:%d" % server["port"], auth_data=[("digest", "super:test")])
    c.start(timeout=15)
    c.ensure_path("/console")
    yield c
    c.stop()
    c.close()


@pytest.fixture
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="corral-chromium-")
    opts.add_argument("--user-data-dir=" + profile)
    # The test CA is not in Chromium's store; the certificate itself is checked by fetch().
    opts.accept_insecure_certs = True
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shot(driver, name):
    os.makedirs(SHOTS, exist_ok=True)
    driver.save_screenshot(os.path.join(SHOTS, name + ".png"))


def wait_for(driver, what, condition):
    try:
        return WebDriverWait(driver, WAIT).until(condition)
    except Exception:
        shot(driver, "failed-" + what.replace(" ", "-"))
        raise AssertionError("not within %d s: %s" % (WAIT, what))


def text_of(driver, element_id):
    return driver.find_element(By.ID, element_id).text


def log_in(driver, base, user, password):
    driver.get(base + "/login")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login").click()
    # Live once the page's persistent watch is in place: changes from now on reach it.
    wait_for(driver, "the live view", EC.presence_of_element_located((By.CSS_SELECTOR, "#live.on")))


def go_to(driver, path):
    box = driver.find_element(By.ID, "search-path")
    box.clear()
    box.send_keys(path)
    driver.find_element(By.CSS_SELECTOR, "#search button").click()
    wait_for(driver, "node %s shown" % path,
             lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == path)


def test_the_login_page_refuses_a_wrong_password_and_the_api_needs_a_login(server, browser):
    browser.get(server["base"] + "/")
    wait_for(browser, "redirect to the login page", EC.url_contains("/login"))
    browser.find_element(By.ID, "user").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys("wrong")
    browser.find_element(By.ID, "login").click()
    error = wait_for(browser, "the refusal", EC.visibility_of_element_located((By.ID, "error")))
    assert "wrong user name or password" in error.text
    shot(browser, "01-login-refused")
    status, _ = fetch(server["base"], "/api/node?path=/", server["pki"])
    assert status == 401
    assert "console login refused" in open(server["log"]).read()


def test_browse_edit_conflict_and_live_changes(server, zk, browser):
    zk.create("/console/app/config", json.dumps({"replicas": 3, "mode": "fast"}).encode(),
              makepath=True)
    log_in(browser, server["base"], *ALICE)
    shot(browser, "02-tree")
    go_to(browser, "/console/app/config")
    browser.find_element(By.CSS_SELECTOR, "input[name=view][value=json]").click()
    assert '"replicas": 3' in text_of(browser, "data")
    assert "version" in text_of(browser, "stat")
    assert "world" in text_of(browser, "acl") and "cdrwa" in text_of(browser, "acl")
    shot(browser, "03-node-json")

    # Alice starts editing version 0; meanwhile another client changes the node.
    browser.find_element(By.ID, "edit").click()
    assert text_of(browser, "edit-version") == "0"
    zk.set("/console/app/config", json.dumps({"replicas": 5, "mode": "fast"}).encode())
    wait_for(browser, "the other client's change shown live",
             lambda d: '"replicas": 5' in text_of(d, "data"))
    wait_for(browser, "the notice that the node changed",
             lambda d: "changed by another client" in text_of(d, "notice"))
    editor = browser.find_element(By.ID, "edit-data")
    editor.clear()
    editor.send_keys('{"replicas": 4}')
    browser.find_element(By.ID, "save").click()
    error = wait_for(browser, "BadVersion", EC.visibility_of_element_located((By.ID, "error")))
    assert "BadVersion" in error.text
    shot(browser, "04-version-conflict")
    assert json.loads(zk.get("/console/app/config")[0])["replicas"] == 5

    # Editing again starts from the current version, and saves.
    browser.find_element(By.ID, "edit").click()
    assert text_of(browser, "edit-version") == "1"
    editor = browser.find_element(By.ID, "edit-data")
    editor.clear()
    editor.send_keys('{"replicas": 4}')
    browser.find_element(By.ID, "save").click()
    wait_for(browser, "saved", lambda d: "Saved" in text_of(d, "notice"))
    data, stat = zk.get("/console/app/config")
    assert json.loads(data) == {"replicas": 4} and stat.version == 2

    # A node another client creates appears in the expanded tree without a reload.
    zk.create("/console/app/worker-7", b"", ephemeral=True)
    wait_for(browser, "the new node in the tree", EC.presence_of_element_located(
        (By.CSS_SELECTOR, '#tree .name[data-path="/console/app/worker-7"]')))
    go_to(browser, "/console/app/worker-7")
    assert "ephemeral, owned by session 0x%x" % zk.client_id[0] in text_of(browser, "node-flags")
    shot(browser, "05-live-ephemeral")


def test_an_edit_the_acl_forbids_is_refused(server, zk, browser):
    zk.create("/console/locked", b"read only for alice",
              acl=[make_acl("world", "anyone", read=True),
                   make_digest_acl("bob", BOB[1], all=True)])
    log_in(browser, server["base"], *ALICE)
    go_to(browser, "/console/locked")
    browser.find_element(By.ID, "edit").click()
    editor = browser.find_element(By.ID, "edit-data")
    editor.clear()
    editor.send_keys("changed")
    browser.find_element(By.ID, "save").click()
    error = wait_for(browser, "NoAuth", EC.visibility_of_element_located((By.ID, "error")))
    assert "NoAuth" in error.text
    shot(browser, "06-acl-refused")
    assert zk.get("/console/locked")[0] == b"read only for alice"

    # Bob's identity is in the ACL: the same edit goes through for him.
    browser.find_element(By.ID, "logout").click()
    wait_for(browser, "logged out", EC.url_contains("/login"))
    log_in(browser, server["base"], *BOB)
    go_to(browser, "/console/locked")
    browser.find_element(By.ID, "edit").click()
    browser.find_element(By.ID, "edit-data").clear()
    browser.find_element(By.ID, "edit-data").send_keys("changed by bob")
    browser.find_element(By.ID, "save").click()
    wait_for(browser, "saved", lambda d: "Saved" in text_of(d, "notice"))
    assert zk.get("/console/locked")[0] == b"changed by bob"


def test_many_children_are_paged_filtered_and_deleted_recursively(server, zk, browser):
    tx = zk.transaction()
    zk.create("/console/many")
    for i in range(250):
        tx.create("/console/many/item-%04d" % i, b"")
    assert all(r is not None for r in tx.commit())
    log_in(browser, server["base"], *ALICE)
    go_to(browser, "/console/many")
    wait_for(browser, "250 children", lambda d: text_of(d, "child-count") == "(250)"
             and text_of(d, "page-info") == "1–100 of 250")
    browser.find_element(By.ID, "next").click()
    wait_for(browser, "the second page", lambda d: text_of(d, "page-info") == "101–200 of 250")
    browser.find_element(By.ID, "child-filter").send_keys("item-012")
    wait_for(browser, "filtered children",
             lambda d: text_of(d, "child-count") == "(10 matching)")
    shot(browser, "07-paged-children")

    # The tree shows one page too, and loads the next when asked.
    twisty = browser.find_element(
        By.CSS_SELECTOR, '#tree li[data-path="/console/many"] > .row > .twisty')
    twisty.click()
    more = wait_for(browser, "the tree's next-page link",
                    EC.presence_of_element_located((By.CSS_SELECTOR, "#tree .more")))
    assert len(browser.find_elements(By.CSS_SELECTOR,
                                     '#tree li[data-path="/console/many"] > ul > li[data-path]')) == 100
    more.click()
    wait_for(browser, "200 children in the tree", lambda d: len(d.find_elements(
        By.CSS_SELECTOR, '#tree li[data-path="/console/many"] > ul > li[data-path]')) == 200)

    browser.find_element(By.ID, "recursive").click()
    browser.find_element(By.ID, "delete").click()
    alert = wait_for(browser, "the confirmation", EC.alert_is_present())
    assert "everything under it" in alert.text
    alert.accept()
    wait_for(browser, "deleted", lambda d: "Deleted 251 node(s)" in text_of(d, "notice"))
    assert zk.exists("/console/many") is None


def test_sessions_ensemble_and_metrics_pages(server, zk, browser):
    zk.create("/console/owned", b"", ephemeral=True)
    log_in(browser, server["base"], *ALICE)
    browser.find_element(By.ID, "tab-sessions").click()
    session = "0x%x" % zk.client_id[0]
    wait_for(browser, "kazoo's session", lambda d: session in text_of(d, "sessions"))
    # One page at a time: the tree is out of sight while the sessions show.
    assert browser.find_element(By.ID, "sessions").is_displayed()
    assert not browser.find_element(By.ID, "page-tree").is_displayed()
    assert "/console/owned" in text_of(browser, "sessions")
    shot(browser, "08-sessions")
    browser.find_element(By.ID, "tab-ensemble").click()
    wait_for(browser, "the member table", lambda d: "standalone" in text_of(d, "ensemble-title").lower())
    browser.find_element(By.ID, "tab-metrics").click()
    for _ in range(20):
        zk.get("/console")
    wait_for(browser, "charts with values", lambda d: len(d.find_elements(
        By.CSS_SELECTOR, "#charts .chart polyline")) >= 9 and text_of(d, "chart-6") != "")
    time.sleep(2.5)  # one more poll, so the rate chart has two points: a picture, not a test
    shot(browser, "09-metrics")
    assert "znodes" in text_of(browser, "charts")


def test_edits_need_the_csrf_token_and_logins_are_bounded_by_credentials(server):
    base, pki = server["base"], server["pki"]
    jar = http.cookiejar.CookieJar()
    form = urllib.parse.urlencode({"user": ALICE[0], "password": ALICE[1]}).encode()
    status, _ = fetch(base, "/login", pki, data=form, jar=jar)
    assert status == 200  # redirected to the console page
    admin_port = urllib.parse.urlparse(base).port
    assert [c.name for c in jar] == ["corral_console_%d" % admin_port]
    cookie = next(iter(jar))
    assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")
    body = json.dumps({"path": "/console/forged", "data": "x"}).encode()
    headers = {"Content-Type": "application/json"}
    status, answer = fetch(base, "/api/node", pki, data=body, headers=headers, jar=jar)
    assert status == 403 and "BadCsrfToken" in answer
    status, me = fetch(base, "/api/me", pki, jar=jar)
    token = json.loads(me)["csrf"]
    status, answer = fetch(base, "/api/node", pki, data=body, jar=jar,
                           headers=dict(headers, **{"X-CSRF-Token": token}))
    assert status == 200, answer
    # The super user logs in with superDigest's password; anyone else with a known digest only.
    for user, password, expected in (("super", "test", 200), ("super", "nope", 401),
                                     ("mallory", "x", 401)):
        form = urllib.parse.urlencode({"user": user, "password": password}).encode()
        assert fetch(base, "/login", pki, data=form)[0] == expected, user


class ConsoleEnsemble(Ensemble):
    """Three Corral members, each with the console on its admin port (HTTPS)."""

    def __init__(self, kind, workdir, pki):
        self.pki = pki
        self.admin_ports = [free_port() for _ in range(3)]
        super().__init__(kind, workdir)

    def extra_lines(self, i):
        return console_lines(self.admin_ports[i], self.pki)

    def server_line(self, j):
        # With the client address, the console asks each member for its own zxid and mode.
        return super().server_line(j) + ";127.0.0.1:%d" % self.ports[j]


def test_the_ensemble_page_shows_every_member_from_the_leader(pki, browser):
    import functools
    with running("corral", functools.partial(ConsoleEnsemble, pki=pki)) as ens:
        leader = next(i for i in range(3) if ens.mode(i) == "leader")
        base = "https://127.0.0.1:%d" % ens.admin_ports[leader]
        log_in(browser, base, "super", "test")
        browser.find_element(By.ID, "tab-ensemble").click()
        wait_for(browser, "three members, all serving", lambda d: text_of(d, "members").count(
            "participant") == 3 and text_of(d, "members").count("yes") == 3)
        members = text_of(browser, "members")
        assert members.count("leader") == 1 and members.count("follower") == 2
        assert members.count("0x") >= 3  # each member's own zxid
        assert browser.find_element(By.ID, "members").is_displayed()
        shot(browser, "10-ensemble")
        # A member killed: the leader stops hearing from it and says it no longer serves.
        victim = (leader + 1) % 3
        ens.kill(victim)
        # The table is redrawn every 2 s: read its text, not rows that may be replaced meanwhile.
        wait_for(browser, "the killed member shown not serving", lambda d: any(
            line.startswith("%d " % (victim + 1)) and " no " in line
            for line in text_of(d, "members").splitlines()))
        shot(browser, "11-ensemble-member-down")


@contextlib.contextmanager
def corral_with(lines, flags=""):
    """A standalone Corral with these zoo.cfg lines and JVM flags; yields (admin port, log)."""
    workdir = tempfile.mkdtemp(prefix="corral-admin-")
    port, admin = free_port(), free_port()
    with open(os.path.join(workdir, "zoo.cfg"), "w") as f:
        f.write("\n".join(["tickTime=500", "dataDir=%s/data" % workdir, "clientPort=%d" % port,
                           "clientPortAddress=127.0.0.1", "admin.serverAddress=127.0.0.1",
                           "admin.serverPort=%d" % admin] + lines) + "\n")
    log_path = os.path.join(workdir, "corral.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([CORRAL_BIN, "server", "--config", os.path.join(workdir, "zoo.cfg")],
                                stdout=log, stderr=log, env=dict(os.environ, SERVER_JVMFLAGS=flags))
    corral_with.proc, corral_with.port = proc, port
    try:
        yield admin, log_path
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def http_status(url, pki=None):
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.pem")) if pki else None
    try:
        with urllib.request.urlopen(url, timeout=5, context=ctx) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, ssl.SSLError, OSError,
            http.client.HTTPException):
        return 0, ""


def test_admin_https_takes_zookeepers_flags_side_by_side(pki):
    """ZooKeeper 3.8's Jetty admin server and Corral's, started with the same JVM flags: both
    serve the commands over HTTPS with the members' key store, and neither over plain HTTP."""
    flags = ("-Dzookeeper.admin.forceHttps=true -Dzookeeper.ssl.quorum.keyStore.location=%s/server.pem"
             " -Dzookeeper.ssl.quorum.trustStore.location=%s/ca.pem" % (pki, pki))
    zk_dir = tempfile.mkdtemp(prefix="corral-zk-https-")
    shutil.rmtree(zk_dir)
    zk_admin = free_port()
    subprocess.run([os.path.join(HERE, "reference_zk.sh"), str(free_port()), zk_dir], check=True,
                   env=dict(os.environ, ZK_ADMIN_PORT=str(zk_admin), ZK_JVM_FLAGS=flags),
                   capture_output=True)
    try:
        with corral_with([], flags) as (admin, _):
            for name, port in (("zookeeper", zk_admin), ("corral", admin)):
                ok = wait_until("%s's admin server over HTTPS" % name, lambda: http_status(
                    "https://127.0.0.1:%d/commands/ruok" % port, pki)[0] == 200, 30)
                assert ok
                status, body = http_status("https://127.0.0.1:%d/commands/ruok" % port, pki)
                assert json.loads(body)["command"] == "ruok", name
                assert http_status("http://127.0.0.1:%d/commands/ruok" % port)[0] == 0, name
            # The console stays off unless asked for, and says how to turn it on.
            status, body = http_status("https://127.0.0.1:%d/" % admin, pki)
            assert status == 404 and "admin.console.enabled=true" in body
    finally:
        subprocess.run([os.path.join(HERE, "stop_pid.sh"), os.path.join(zk_dir, "zk.pid")])
        shutil.rmtree(zk_dir, ignore_errors=True)


def test_without_a_certificate_the_console_is_plain_http_and_warns():
    lines = ["admin.console.enabled=true", "superDigest=" + SUPER_DIGEST]
    with corral_with(lines) as (admin, log):
        base = "http://127.0.0.1:%d" % admin
        wait_until("the console", lambda: http_status(base + "/login")[0] == 200, 30)
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        form = urllib.parse.urlencode({"user": "super", "password": "test"}).encode()
        with opener.open(base + "/login", data=form, timeout=10) as r:
            assert r.status == 200 and "console.js" in r.read().decode()
        assert [(c.name, c.secure) for c in jar] == [("corral_console_%d" % admin, False)]
        assert "served over plain HTTP" in open(log).read()
    # A console nobody can log in to is refused at start-up, with the reason.
    with corral_with(["admin.console.enabled=true"]) as (admin, log):
        wait_until("the refusal", lambda: "admin.console.users or superDigest" in open(log).read(), 30)


def logged_in_opener(base, user, password, pki=None):
    """An opener with a console login's cookie, and the login's CSRF token."""
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.pem")) if pki else None
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar),
                                         urllib.request.HTTPSHandler(context=ctx))
    form = urllib.parse.urlencode({"user": user, "password": password}).encode()
    opener.open(base + "/login", data=form, timeout=10).read()
    token = json.loads(opener.open(base + "/api/me", timeout=10).read())["csrf"]
    return opener, token


def call(opener, token, method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "X-CSRF-Token": token, "Content-Type": "application/json"})
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_api_bounds_big_nodes_atomic_deletes_and_a_stop_with_live_views_open():
    lines = ["admin.console.enabled=true", "superDigest=" + SUPER_DIGEST]
    with corral_with(lines) as (admin, log):
        base = "http://127.0.0.1:%d" % admin
        wait_until("the console", lambda: http_status(base + "/login")[0] == 200, 30)
        opener, token = logged_in_opener(base, "super", "test")
        zk = KazooClient(hosts="127.0.0.1:%d" % corral_with.port)
        zk.start(timeout=15)
        try:
            # 100k children: listed a page at a time, found by a filter.
            zk.create("/big")
            for start in range(0, 100_000, 2000):
                tx = zk.transaction()
                for i in range(start, start + 2000):
                    tx.create("/big/child-with-a-long-name-%06d" % i)
                assert all(r is not None and not isinstance(r, Exception) for r in tx.commit())
            status, page = call(opener, token, "GET", base + "/api/children?" + urllib.parse.urlencode(
                {"path": "/big", "offset": 99_950, "limit": 100}))
            assert status == 200 and page["total"] == 100_000 and len(page["children"]) == 50
            status, page = call(opener, token, "GET", base + "/api/children?" + urllib.parse.urlencode(
                {"path": "/big", "filter": "name-04242"}))
            assert page["total"] == 10
            # A recursive delete with a stale version deletes nothing.
            zk.create("/tree/a/b", makepath=True)
            zk.set("/tree", b"moved")
            status, answer = call(opener, token, "DELETE",
                                  base + "/api/node?path=/tree&version=0&recursive=true")
            assert status == 409 and answer["error"] == "BadVersion"
            assert zk.exists("/tree/a/b") is not None
            status, answer = call(opener, token, "DELETE",
                                  base + "/api/node?path=/tree&version=1&recursive=true")
            assert status == 200 and answer["deleted"] == 3 and zk.exists("/tree") is None
            # Bad input is refused with its reason, and changes nothing.
            status, answer = call(opener, token, "DELETE", base + "/api/node?path=/&recursive=true")
            assert status == 400
            status, answer = call(opener, token, "PUT", base + "/api/node",
                                  {"path": "/big", "data": "x", "version": "three"})
            assert status == 400
            status, answer = call(opener, token, "POST", base + "/api/node",
                                  {"path": "/huge", "data": "x" * (1536 << 10)})
            assert status == 413 and "jute.maxbuffer" in answer["message"]
            assert zk.exists("/huge") is None
        finally:
            zk.stop()
            zk.close()
        # SIGTERM with a live view open: the server still stops, promptly.
        events = opener.open(urllib.request.Request(base + "/api/events"), timeout=30)
        corral_with.proc.terminate()
        assert corral_with.proc.wait(timeout=15) == 0
        events.close()


def test_a_unified_admin_port_sends_plain_http_console_requests_to_https(pki):
    lines = ["admin.console.enabled=true", "superDigest=" + SUPER_DIGEST,
             "admin.portUnification=true",
             "ssl.quorum.keyStore.location=%s/server.pem" % pki]
    with corral_with(lines) as (admin, _):
        wait_until("HTTPS", lambda: http_status(
            "https://127.0.0.1:%d/commands/ruok" % admin, pki)[0] == 200, 30)
        # The commands answer on both; the console only over TLS.
        assert http_status("http://127.0.0.1:%d/commands/ruok" % admin)[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
        conn.request("GET", "/login")
        r = conn.getresponse()
        assert r.status in (303, 307) and r.getheader("location") == \
            "https://127.0.0.1:%d/login" % admin
        conn.close()


def test_the_jobs_page_shows_a_mailroom_job_live(server, zk, browser):
    """The case study's job as mailroom lays it out (crates/mailroom/src/coord.rs): progress,
    results, and which worker holds which batch, updated as the job moves."""
    base = "/mailroom/demo"
    zk.create(base, json.dumps({"emails": 100, "batch": 25}).encode(), makepath=True)
    for d in ("claims", "done", "results", "workers"):
        zk.ensure_path("%s/%s" % (base, d))
    for w in ("w0", "w1"):
        zk.create("%s/workers/%s" % (base, w), b"", ephemeral=True)
    claim = lambda w, status: json.dumps({"worker": w, "ts_ms": 0, "status": status}).encode()
    zk.create("%s/claims/b-00000/c-" % base, claim("w0", "10/25"), ephemeral=True, sequence=True,
              makepath=True)
    zk.create("%s/claims/b-00001/c-" % base, claim("w1", "3/25"), ephemeral=True, sequence=True,
              makepath=True)
    log_in(browser, server["base"], *ALICE)
    browser.find_element(By.ID, "tab-jobs").click()
    wait_for(browser, "the job with its holders", lambda d: "demo: 0 of 100 emails" in text_of(
        d, "jobs") and "b-00000 (10/25)" in text_of(d, "jobs") and "b-00001 (3/25)" in text_of(
        d, "jobs"))
    # A batch committed: 25 results and its done node; its claim released.
    tx = zk.transaction()
    for i in range(25):
        tx.create("%s/results/e%03d" % (base, i), b"ham w0")
    tx.create("%s/done/b-00000" % base, b"w0")
    tx.commit()
    for c in zk.get_children("%s/claims/b-00000" % base):
        zk.delete("%s/claims/b-00000/%s" % (base, c))
    wait_for(browser, "the progress moving", lambda d: "demo: 25 of 100 emails (25%)" in text_of(
        d, "jobs") and "b-00000" not in text_of(d, "jobs"))
    shot(browser, "12-mailroom-job")
    zk.delete("/mailroom", recursive=True)
