"""Operator-facing formats, checked against the real Apache ZooKeeper 3.8 side by side.

The server under test is ZK_HOSTS, its admin HTTP server ZK_ADMIN_URL (http://host:port). The
reference, ZooKeeper itself, is ZK_REFERENCE_HOSTS with its AdminServer at
ZK_REFERENCE_ADMIN_URL; run.sh --reference points both at the same real ZooKeeper, which is how
this module is itself checked.

Both servers are put in the same state (one session with an ephemeral node and watches under
/corral-ops), then every four-letter word and every admin command is asked of both. Values
differ between any two servers (ports, ids, times, sizes), so outputs are compared by shape:
numbers, hex ids, addresses, dates and the version become placeholders, and what remains (the
keys, the layout, the words) must be the same. `/metrics` (Prometheus) is Corral's own, as
ZooKeeper serves it from a separate provider; it is parsed with the Prometheus client library's
parser and checked against mntr.
"""

import json
import os
import re
import socket
import urllib.error
import urllib.request

import pytest
from kazoo.client import KazooClient

from test_kazoo import split_hosts  # noqa: F401

OPS_ROOT = "/corral-ops"
WORDS = "conf cons crst dump envi ruok srst srvr stat wchs wchc wchp dirs mntr isro".split()


def env(name):
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.fail(f"{name} is not set (see the module docstring)")
    return value


def is_reference_run():
    return os.environ.get("ZK_HOSTS") == os.environ.get("ZK_REFERENCE_HOSTS")


def four_letter(hosts, word):
    (host, port) = split_hosts(hosts)[0][0]
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(word.encode())
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode()


def http_get(base, path):
    try:
        with urllib.request.urlopen(base.rstrip("/") + path, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def set_up_state(hosts):
    """One session holding an ephemeral node, a data watch and a child watch."""
    client = KazooClient(hosts=hosts, timeout=10)
    client.start(timeout=10)
    client.ensure_path(OPS_ROOT)
    client.create(f"{OPS_ROOT}/e", b"x", ephemeral=True)
    client.get(OPS_ROOT, watch=lambda e: None)
    client.get_children(OPS_ROOT, watch=lambda e: None)
    client.exists(f"{OPS_ROOT}/e", watch=lambda e: None)
    return client


@pytest.fixture(scope="module")
def both():
    """(target hosts, reference hosts), each with the same state set up."""
    target, reference = env("ZK_HOSTS"), env("ZK_REFERENCE_HOSTS")
    clients = [set_up_state(target)]
    if reference != target:
        clients.append(set_up_state(reference))
    yield target, reference
    for c in clients:
        try:
            c.delete(OPS_ROOT, recursive=True)
        finally:
            c.stop()
            c.close()


VERSION = re.compile(r"\d+\.\d+\.\d+-\S*, built on [^\n\"]*")
DATE = re.compile(r"\w{3} \w{3} \d{2} \d{2}:\d{2}:\d{2} \w+ \d{4}")
ADDR = re.compile(r"/?\d+\.\d+\.\d+\.\d+:\d+")
HEX = re.compile(r"0x[0-9a-f]+")
NUMBER = re.compile(r"-?\d+(\.\d+)?")
LAST_OP = re.compile(r"lop=\w+")


def shape(text):
    """The text with every value that legitimately differs between servers made a placeholder."""
    text = VERSION.sub("VERSION", text)
    text = DATE.sub("DATE", text)
    text = ADDR.sub("ADDR", text)
    text = HEX.sub("HEX", text)
    text = LAST_OP.sub("lop=OP", text)
    return NUMBER.sub("N", text)


def shape_lines(text):
    return sorted(set(shape(text).splitlines()))


def keys_of(text, sep):
    return [line.split(sep, 1)[0] for line in text.splitlines() if sep in line]


# --------------------------------------------------------------------------------------------
# Four-letter words


@pytest.mark.parametrize("word", ["ruok", "isro", "crst", "srst"])
def test_fixed_answers_are_identical(both, word):
    target, reference = both
    assert four_letter(target, word) == four_letter(reference, word)


@pytest.mark.parametrize("word", ["srvr", "stat", "cons", "wchs", "wchc", "wchp", "dirs", "dump"])
def test_layouts_match_zookeeper(both, word):
    target, reference = both
    ours, theirs = four_letter(target, word), four_letter(reference, word)
    assert shape_lines(ours) == shape_lines(theirs), f"ours:\n{ours}\nZooKeeper's:\n{theirs}"


def test_srvr_counts_are_right(both):
    target, _ = both
    srvr = dict(line.split(": ", 1) for line in four_letter(target, "srvr").splitlines())
    assert srvr["Mode"] in ("standalone", "leader", "follower", "observer")
    mntr = dict(line.split("\t", 1) for line in four_letter(target, "mntr").splitlines())
    assert srvr["Node count"] == mntr["zk_znode_count"]
    wchs = four_letter(target, "wchs")
    # The session watches /corral-ops (data) and /corral-ops/e (exists); the child watch is not
    # in ZooKeeper's data-watch table, which wchs shows.
    assert "watching 2 paths" in wchs and "Total watches:2" in wchs, wchs


@pytest.mark.parametrize("word,sep", [("conf", "="), ("envi", "=")])
def test_key_value_words_have_zookeepers_keys(both, word, sep):
    target, reference = both
    ours = keys_of(four_letter(target, word), sep)
    theirs = keys_of(four_letter(reference, word), sep)
    assert ours == theirs


def test_envi_and_conf_headers(both):
    target, _ = both
    assert four_letter(target, "envi").startswith("Environment:\n")
    conf = dict(line.split("=", 1) for line in four_letter(target, "conf").splitlines())
    assert int(conf["tickTime"]) > 0 and int(conf["dataDirSize"]) >= 0


# The metrics operators alert on: each must be in both servers' mntr, as a number.
CORE_MNTR_KEYS = """zk_version zk_server_state zk_ephemerals_count zk_num_alive_connections
zk_avg_latency zk_max_latency zk_min_latency zk_outstanding_requests zk_znode_count
zk_global_sessions zk_packets_received zk_packets_sent zk_watch_count zk_approximate_data_size
zk_open_file_descriptor_count zk_max_file_descriptor_count zk_uptime zk_auth_failed_count
zk_local_sessions zk_looking_count zk_avg_fsynctime zk_cnt_fsynctime zk_avg_snapshottime
zk_avg_election_time zk_p99_readlatency zk_p999_updatelatency zk_cnt_readlatency""".split()


def test_mntr_keys_are_zookeepers(both):
    target, reference = both
    ours = dict(line.split("\t", 1) for line in four_letter(target, "mntr").splitlines())
    theirs = dict(line.split("\t", 1) for line in four_letter(reference, "mntr").splitlines())
    for key in CORE_MNTR_KEYS:
        assert key in theirs, f"{key} is not ZooKeeper's"
        assert key in ours, f"{key} missing"
    # ZooKeeper 3.8 has no mntr line for these, nor for Corral's limits (see the README's
    # "Limits") and its web console; everything else must be its name.
    corral_own = {"zk_data_dir_size", "zk_log_dir_size", "zk_last_zxid",
                  "zk_connection_throttled_count", "zk_global_outstanding_throttled_count",
                  "zk_connection_closed_slow_count", "zk_queued_reply_bytes",
                  "zk_proposals_throttled_count", "zk_reconfig_count",
                  "zk_reconfig_refused_count", "zk_auth_refused_count",
                  "zk_member_link_checks_exceeded_count", "zk_console_logins",
                  "zk_console_login_failed_count", "zk_console_logins_exceeded_count",
                  "zk_console_events_lagged_count"}
    extra = set(ours) - set(theirs) - corral_own
    extra -= {k for k in ours if k.endswith(("_data_dir_size", "_log_dir_size", "_last_zxid"))}
    assert not extra, f"names ZooKeeper does not use: {sorted(extra)}"
    for key, value in ours.items():
        if key not in ("zk_version", "zk_server_state"):
            float(value)  # every other value is a number
    assert int(ours["zk_ephemerals_count"]) >= 1
    assert int(ours["zk_watch_count"]) >= 3


def test_whitelist_refusal_wording(both):
    # Both servers allow every word (4lw.commands.whitelist=*); an unknown word is not one.
    target, reference = both
    assert four_letter(target, "xyzw") == four_letter(reference, "xyzw")


# --------------------------------------------------------------------------------------------
# Admin HTTP server

ADMIN_ONLY_ERRORS = {"set_trace_mask", "leader"}


def admin_json(base, name):
    status, content_type, body = http_get(base, f"/commands/{name}")
    assert status == 200, (name, status, body)
    assert content_type.startswith("application/json"), content_type
    return json.loads(body)


# Maps keyed by data (session ids, paths, times, member ids): their keys are not structure.
KEYED_BY_DATA = {"expiry_time_to_session_ids", "session_id_to_ephemeral_paths",
                 "session_id_to_watched_paths", "path_to_session_ids", "current_config"}


def structure(value, keyed_by_data=False):
    """Keys (recursively) and JSON types, without the values."""
    if isinstance(value, dict) and keyed_by_data:
        # ZooKeeper leaves emptied expiry buckets in place: describe the fullest entry.
        values = sorted(value.values(), key=lambda v: -len(v) if isinstance(v, list) else 0)
        return {"*": structure(values[0])} if values else {}
    if isinstance(value, dict):
        return {k: structure(v, k in KEYED_BY_DATA) for k, v in value.items()}
    if isinstance(value, list):
        return [structure(value[0])] if value else []
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, (int, float)):
        return "number"
    return "string"


@pytest.fixture(scope="module")
def admins(both):
    return env("ZK_ADMIN_URL"), env("ZK_REFERENCE_ADMIN_URL")


def command_names(base):
    status, _, body = http_get(base, "/commands")
    assert status == 200
    return sorted(set(re.findall(r'href="/commands/(\w+)"', body)))


def test_admin_lists_zookeepers_commands(admins):
    ours, theirs = (command_names(base) for base in admins)
    assert set(theirs) <= set(ours), f"missing: {sorted(set(theirs) - set(ours))}"


SAME_STRUCTURE = """configuration connection_stat_reset connections dirs dump hash is_read_only
last_snapshot observer_connection_stat_reset observers ruok server_stats stat_reset stats
voting_view watch_summary watches watches_by_path zabstate get_trace_mask
initial_configuration""".split()


@pytest.mark.parametrize("name", SAME_STRUCTURE)
def test_admin_command_matches_zookeeper(admins, name):
    ours, theirs = (admin_json(base, name) for base in admins)
    assert structure(ours) == structure(theirs), (
        f"ours: {json.dumps(ours, indent=1)}\nZooKeeper's: {json.dumps(theirs, indent=1)}"
    )


@pytest.mark.parametrize("name", sorted(ADMIN_ONLY_ERRORS))
def test_admin_errors_match_zookeeper(admins, name):
    ours, theirs = (admin_json(base, name) for base in admins)
    assert ours == theirs


def test_admin_environment_and_monitor_keys(admins):
    ours, theirs = (admin_json(base, "environment") for base in admins)
    assert list(ours) == list(theirs)
    ours, theirs = (admin_json(base, "monitor") for base in admins)
    for key in CORE_MNTR_KEYS:
        assert key[3:] in ours and key[3:] in theirs, key


def test_admin_aliases_and_unknown_command(admins):
    for base in admins:
        assert admin_json(base, "mntr")["command"] == "monitor"
        assert admin_json(base, "conf")["command"] == "configuration"
        unknown = admin_json(base, "no_such_command")
        assert unknown["error"] == "Unknown command: no_such_command"


def test_admin_reports_the_session_state(admins, both):
    target, _ = both
    ours, _ = admins
    watches = admin_json(ours, "watches_by_path")["path_to_session_ids"]
    assert f"{OPS_ROOT}/e" in watches
    dump = admin_json(ours, "dump")["session_id_to_ephemeral_paths"]
    assert [f"{OPS_ROOT}/e"] in dump.values()
    assert admin_json(ours, "watch_summary")["num_total_watches"] >= 2


# --------------------------------------------------------------------------------------------
# Corral's own endpoints: /metrics and /ready


@pytest.fixture(scope="module")
def corral_admin(admins):
    if is_reference_run():
        pytest.skip("/metrics and /ready are Corral's; ZooKeeper's AdminServer has neither")
    return admins[0]


def test_metrics_parse_as_prometheus(corral_admin, both):
    from prometheus_client.parser import text_string_to_metric_families

    status, content_type, body = http_get(corral_admin, "/metrics")
    assert status == 200 and content_type.startswith("text/plain"), content_type
    families = {f.name: f for f in text_string_to_metric_families(body)}
    for name in ("znode_count", "watch_count", "num_alive_connections", "outstanding_requests",
                 "ephemerals_count", "global_sessions"):
        assert families[name].type == "gauge", name
    for name in ("readlatency", "updatelatency", "fsynctime", "snapshottime", "election_time"):
        assert families[name].type == "summary", name
    quantiles = {s.labels.get("quantile") for s in families["readlatency"].samples}
    assert {"0.5", "0.95", "0.99", "0.999"} <= quantiles
    count = [s.value for s in families["fsynctime"].samples if s.name == "fsynctime_count"]
    assert count and count[0] >= 1, "the setup's writes were fsynced"
    value = families["znode_count"].samples[0].value
    mntr = dict(line.split("\t", 1) for line in four_letter(both[0], "mntr").splitlines())
    assert value == float(mntr["zk_znode_count"])
    assert families["ephemerals_count"].samples[0].value >= 1


def test_ready_probe(corral_admin):
    status, _, body = http_get(corral_admin, "/ready")
    assert (status, body) == (200, "ready\n")
