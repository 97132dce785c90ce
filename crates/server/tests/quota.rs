//! Quotas through the wire: usage in zookeeper_stats, QuotaExceeded under enforceQuota.

use corral_proto::Response;
use corral_server::ServerConfig;
use corral_testkit::*;

fn config_at(dir: &std::path::Path) -> ServerConfig {
    let mut cfg = test_config();
    cfg.data_dir = dir.to_owned();
    cfg.enforce_quota = true;
    cfg
}

fn stats(c: &mut RawClient, quota: &str) -> String {
    let r = c.call(get_data(
        &format!("/zookeeper/quota{quota}/zookeeper_stats"),
        false,
    ));
    let Some(Response::GetData(d)) = r.body else {
        panic!("getData of the stats node: {r:?}")
    };
    String::from_utf8(d.data.unwrap_or_default().to_vec()).unwrap()
}

fn set_quota(c: &mut RawClient, path: &str, limits: &str) {
    let dir = format!("/zookeeper/quota{path}");
    assert_eq!(c.call(create(&dir, b"", 0)).err, 0);
    let limits_path = format!("{dir}/zookeeper_limits");
    assert_eq!(c.call(create(&limits_path, limits.as_bytes(), 0)).err, 0);
    let stats_path = format!("{dir}/zookeeper_stats");
    assert_eq!(c.call(create(&stats_path, b"count=0,bytes=0", 0)).err, 0);
}

#[test]
fn hard_limits_refuse_writes_when_enforced() {
    let dir = temp_data_dir();
    let server = TestServer::start_with(config_at(&dir));
    let mut c = RawClient::connect(server.addr);
    assert_eq!(c.call(create("/app", b"1234", 0)).err, 0);
    set_quota(
        &mut c,
        "/app",
        "count=-1,bytes=-1,countHardLimit=2,byteHardLimit=8",
    );
    assert_eq!(stats(&mut c, "/app"), "count=1,bytes=4");
    assert_eq!(c.call(create("/app/a", b"12", 0)).err, 0);
    // QuotaExceeded is -125.
    assert_eq!(c.call(create("/app/b", b"", 0)).err, -125, "third node");
    assert_eq!(
        c.call(set_data("/app/a", b"12345", -1)).err,
        -125,
        "9 bytes"
    );
    assert_eq!(c.call(set_data("/app/a", b"1234", -1)).err, 0, "8 bytes");
    assert_eq!(stats(&mut c, "/app"), "count=2,bytes=8");
    // Outside the quota'd subtree nothing is limited.
    assert_eq!(c.call(create("/other", b"123456789", 0)).err, 0);
    // The usage survives a restart (rebuilt from the snapshot and the log).
    drop(c);
    server.stop_keeping_data();
    let server = TestServer::start_with(config_at(&dir));
    let mut c = RawClient::connect(server.addr);
    assert_eq!(stats(&mut c, "/app"), "count=2,bytes=8");
    assert_eq!(c.call(create("/app/b", b"", 0)).err, -125);
}

#[test]
fn without_enforcement_limits_are_only_logged() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.addr);
    assert_eq!(c.call(create("/app", b"", 0)).err, 0);
    set_quota(
        &mut c,
        "/app",
        "count=1,bytes=-1,countHardLimit=1,byteHardLimit=-1",
    );
    assert_eq!(c.call(create("/app/a", b"", 0)).err, 0);
    assert_eq!(stats(&mut c, "/app"), "count=2,bytes=0");
}
