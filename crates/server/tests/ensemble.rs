//! A three-member ensemble in one process, on loopback: leader election, writes through any
//! member, reads everywhere after `sync`, watches across members, sessions that survive the
//! leader's loss, and an observer.

use corral_proto::{ErrorCode, EventType, PathRequest, Request, Response};
use corral_server::config::ServerLine;
use corral_server::ServerConfig;
use corral_testkit::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn ensemble_configs(voters: u64, observers: u64) -> Vec<ServerConfig> {
    let total = voters + observers;
    let servers: BTreeMap<u64, ServerLine> = (1..=total)
        .map(|id| {
            let line = ServerLine {
                host: "127.0.0.1".into(),
                peer_port: free_port(),
                election_port: free_port(),
                observer: id > voters,
                client: None,
            };
            (id, line)
        })
        .collect();
    (1..=total)
        .map(|id| {
            let mut cfg = test_config();
            cfg.my_id = id;
            cfg.servers = servers.clone();
            cfg
        })
        .collect()
}

fn mode(server: &TestServer) -> String {
    four_letter(server.addr, "srvr")
        .lines()
        .find_map(|l| l.strip_prefix("Mode: ").map(str::to_owned))
        .unwrap_or_default()
}

fn wait_for_leader(servers: &[&TestServer]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let modes: Vec<String> = servers.iter().map(|s| mode(s)).collect();
        if let Some(i) = modes.iter().position(|m| m == "leader") {
            let followers = modes.iter().filter(|m| *m == "follower").count();
            if followers + 1
                == servers.iter().filter(|_| true).count()
                    - modes.iter().filter(|m| *m == "observer").count()
            {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader elected: {modes:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sync(c: &mut RawClient, path: &str) {
    let r = c.call(Request::Sync(PathRequest { path: path.into() }));
    assert_eq!(r.err, 0, "sync failed: {r:?}");
}

#[test]
fn writes_anywhere_reads_everywhere_and_failover() {
    let cfgs = ensemble_configs(3, 0);
    let mut servers: Vec<Option<TestServer>> = cfgs
        .into_iter()
        .map(|c| Some(TestServer::start_with(c)))
        .collect();
    let all: Vec<&TestServer> = servers.iter().map(|s| s.as_ref().unwrap()).collect();
    let leader = wait_for_leader(&all);
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let mut c = RawClient::connect(all[follower].addr);
    let mut w = RawClient::connect(all[other].addr);
    assert_eq!(w.call(exists("/shared", true)).code(), ErrorCode::NoNode);
    // A write through a follower is forwarded to the leader and applied everywhere.
    assert_eq!(c.call(create("/shared", b"v1", 0)).err, 0);
    assert_eq!(c.call(create("/lease", b"", 1)).err, 0);
    let e = w.next_event().unwrap();
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (EventType::NodeCreated as i32, "/shared")
    );
    for s in &all {
        let mut r = RawClient::connect(s.addr);
        sync(&mut r, "/");
        let got = r.call(get_data("/shared", false));
        let Some(Response::GetData(d)) = got.body else {
            panic!("{got:?}")
        };
        assert_eq!(&d.data[..], b"v1");
    }
    let zxid_before = c.ping().zxid;
    let session = c.session_id;
    drop(all);

    // Lose the leader: the other two elect a new one, and writes resume.
    let started = Instant::now();
    servers[leader].take();
    let rest: Vec<&TestServer> = servers.iter().flatten().collect();
    let _ = wait_for_leader(&rest);
    let mut resumed = None;
    while resumed.is_none() && started.elapsed() < Duration::from_secs(15) {
        let mut cc =
            match RawClient::resume(rest[0].addr, session, c.passwd.clone(), zxid_before, 5000) {
                Ok(cc) => cc,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
        if cc.call(set_data("/shared", b"v2", -1)).err == 0 {
            resumed = Some(cc);
        }
    }
    let mut cc = resumed.expect("writes resumed after the leader was lost");
    eprintln!(
        "writes resumed {:?} after the leader stopped",
        started.elapsed()
    );
    // The session moved to a surviving member and kept its ephemeral.
    let r = cc.call(exists("/lease", false));
    let Some(Response::Stat(stat)) = r.body else {
        panic!("{r:?}")
    };
    assert_eq!(stat.ephemeral_owner, session);
    let mut r2 = RawClient::connect(rest[1].addr);
    sync(&mut r2, "/");
    let got = r2.call(get_data("/shared", false));
    let Some(Response::GetData(d)) = got.body else {
        panic!("{got:?}")
    };
    assert_eq!(&d.data[..], b"v2");
}

#[test]
fn observer_serves_reads_and_forwards_writes() {
    let cfgs = ensemble_configs(3, 1);
    let servers: Vec<TestServer> = cfgs.into_iter().map(TestServer::start_with).collect();
    let refs: Vec<&TestServer> = servers.iter().collect();
    wait_for_leader(&refs[..3]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while mode(&servers[3]) != "observer" {
        assert!(
            Instant::now() < deadline,
            "the observer never joined: {}",
            mode(&servers[3])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut obs = RawClient::connect(servers[3].addr);
    assert_eq!(obs.call(create("/via-observer", b"o", 0)).err, 0);
    let mut v = RawClient::connect(servers[0].addr);
    sync(&mut v, "/");
    assert_eq!(v.call(exists("/via-observer", false)).err, 0);
    // conf shows the membership as a ZooKeeper quorum member does, observer included.
    let conf = four_letter(servers[3].addr, "conf");
    assert!(
        conf.contains("serverId=4\n") && conf.contains("peerType=1\n"),
        "{conf}"
    );
    assert!(conf.contains("membership: \n"), "{conf}");
    assert_eq!(conf.lines().filter(|l| l.starts_with("server.")).count(), 4);
    assert!(conf.contains(":observer;0.0.0.0:"), "{conf}");
}

#[test]
fn lagging_member_catches_up_from_a_snapshot() {
    let mut cfgs = ensemble_configs(3, 0);
    for c in &mut cfgs {
        c.snap_count = 50;
        c.snap_retain_count = 1;
        c.log_segment_bytes = 4096;
    }
    let mut servers: Vec<Option<TestServer>> = cfgs
        .iter()
        .cloned()
        .map(|c| Some(TestServer::start_with(c)))
        .collect();
    let leader = wait_for_leader(&servers.iter().flatten().collect::<Vec<_>>());
    let lagging = (leader + 1) % 3;
    servers[lagging].take().unwrap().stop_keeping_data();
    // While it is away, enough writes for several snapshots; the log before them is purged.
    let mut c = RawClient::connect(servers[leader].as_ref().unwrap().addr);
    for i in 0..600 {
        assert_eq!(c.call(create(&format!("/lag-{i}"), b"x", 0)).err, 0);
    }
    std::thread::sleep(Duration::from_millis(500));
    let raft_log = cfgs[leader].data_dir.join("raft").join("log");
    let segments = std::fs::read_dir(&raft_log).unwrap().count();
    assert!(
        segments < 20,
        "the leader purged old log segments ({segments} left)"
    );
    servers[lagging] = Some(TestServer::start_with(cfgs[lagging].clone()));
    let back = servers[lagging].as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let client = RawClient::resume(back.addr, 0, bytes::Bytes::from_static(&[0; 16]), 0, 5000);
        let found = client.is_ok_and(|mut r| {
            r.call(exists("/lag-599", false)).err == 0 && r.call(exists("/lag-0", false)).err == 0
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lagging member never caught up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let snapshots = std::fs::read_dir(cfgs[lagging].data_dir.join("snapshots"))
        .unwrap()
        .count();
    assert!(snapshots >= 1, "it caught up by installing a snapshot");
}

#[test]
fn reconnect_to_a_member_still_catching_up_keeps_the_session() {
    let cfgs = ensemble_configs(3, 0);
    let mut servers: Vec<Option<TestServer>> = cfgs
        .iter()
        .cloned()
        .map(|c| Some(TestServer::start_with(c)))
        .collect();
    let leader = wait_for_leader(&servers.iter().flatten().collect::<Vec<_>>());
    let lagging = (leader + 1) % 3;
    servers[lagging].take().unwrap().stop_keeping_data();
    // The session is born while that member is away.
    let c = RawClient::connect(servers[leader].as_ref().unwrap().addr);
    let (session, passwd) = (c.session_id, c.passwd.clone());
    let back = TestServer::start_with(cfgs[lagging].clone());
    // At once, with no zxid seen (lastZxidSeen 0), the client moves there. It may be asked to
    // retry (a closed connection) but must never be told its live session expired.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match RawClient::resume(back.addr, session, passwd.clone(), 0, 5000) {
            Ok(mut moved) => {
                assert_eq!(moved.session_id, session);
                assert_eq!(moved.ping().err, 0);
                break;
            }
            Err(e) => {
                assert_ne!(e, "session expired", "a live session was declared expired");
                assert!(Instant::now() < deadline, "never reconnected: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    drop(c);
}
