//! A three-member ensemble in one process, on loopback: leader election, writes through any
//! member, reads everywhere after `sync`, watches across members, sessions that survive the
//! leader's loss, and an observer.

use bytes::Bytes;
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
        assert_eq!(d.data.as_deref().unwrap_or_default(), b"v1");
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
    assert_eq!(d.data.as_deref().unwrap_or_default(), b"v2");
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
    assert!(conf.contains(":observer\n"), "{conf}");
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
    let installed = back
        .replica
        .snapshots_installed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        installed >= 1,
        "it caught up by installing the leader's snapshot"
    );
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

/// The value of `key` in a member's `mntr`, if it reports one.
fn mntr_value(server: &TestServer, key: &str) -> Option<String> {
    four_letter(server.addr, "mntr").lines().find_map(|l| {
        let (k, v) = l.split_once('\t')?;
        (k == key).then(|| v.to_owned())
    })
}

/// A new session on `addr`, retried as a ZooKeeper client retries: a member closes a new
/// connection when it cannot create the session (no leader for a moment, on a loaded machine).
fn connect_to(addr: std::net::SocketAddr) -> RawClient {
    session_on(addr, 5000)
}

/// [`connect_to`], asking for a session timeout.
fn session_on(addr: std::net::SocketAddr, timeout_ms: i32) -> RawClient {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match RawClient::resume(addr, 0, Bytes::from_static(&[0; 16]), 0, timeout_ms) {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "no session on {addr}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `path` exists, asked of `server` after a sync.
fn exists_on(server: &TestServer, path: &str) -> bool {
    let mut c = connect_to(server.addr);
    sync(&mut c, "/");
    match c.call(exists(path, false)).code() {
        ErrorCode::Ok => true,
        ErrorCode::NoNode => false,
        other => panic!("exists {path}: {other:?}"),
    }
}

#[test]
fn every_member_reports_its_mode_and_the_leader_its_followers() {
    let cfgs = ensemble_configs(3, 1);
    let servers: Vec<TestServer> = cfgs.into_iter().map(TestServer::start_with).collect();
    let refs: Vec<&TestServer> = servers.iter().collect();
    let leader = wait_for_leader(&refs[..3]);
    let mut c = connect_to(servers[leader].addr);
    assert_eq!(c.call(create("/proposed", &[7; 300], 0)).err, 0);
    // Every member applies it, the observer included, so each has acknowledged this term.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let synced = (
            mntr_value(&servers[leader], "zk_synced_followers"),
            mntr_value(&servers[leader], "zk_synced_observers"),
        );
        if synced == (Some("2".into()), Some("1".into())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "followers never synced: {synced:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let value = |key: &str| mntr_value(&servers[leader], key).unwrap_or_default();
    assert_eq!(value("zk_learners"), "3");
    assert_eq!(value("zk_quorum_size"), "3");
    assert_eq!(value("zk_pending_syncs"), "0");
    let max: i64 = value("zk_max_proposal_size").parse().unwrap();
    let min: i64 = value("zk_min_proposal_size").parse().unwrap();
    assert!(max >= 300 && min > 0 && min <= max, "{min} {max}");
    assert!(value("zk_leader_uptime").parse::<u64>().is_ok());

    for (i, s) in servers.iter().enumerate() {
        let want = match i {
            3 => "observer",
            _ if i == leader => "leader",
            _ => "follower",
        };
        assert_eq!(mode(s), want, "srvr of member {}", i + 1);
        let stat = four_letter(s.addr, "stat");
        assert!(stat.contains(&format!("\nMode: {want}\n")), "{stat}");
        assert_eq!(mntr_value(s, "zk_server_state").as_deref(), Some(want));
        assert_eq!(mntr_value(s, "zk_quorum_size").as_deref(), Some("3"));
        // Only the leader reports learners (ZooKeeper's LeaderZooKeeperServer).
        assert_eq!(mntr_value(s, "zk_learners").is_some(), i == leader);
    }
}

#[test]
fn the_leader_expires_a_silent_session_held_by_a_follower() {
    let cfgs = ensemble_configs(3, 0);
    let servers: Vec<TestServer> = cfgs.into_iter().map(TestServer::start_with).collect();
    let refs: Vec<&TestServer> = servers.iter().collect();
    let leader = wait_for_leader(&refs);
    let follower = (leader + 1) % 3;
    let mut watcher = connect_to(servers[(leader + 2) % 3].addr);
    let mut c = session_on(servers[follower].addr, 1500);
    assert_eq!(c.timeout_ms, 1500);
    assert_eq!(c.call(create("/held", b"", 1)).err, 0);
    sync(&mut watcher, "/");
    assert_eq!(watcher.call(exists("/held", true)).err, 0);
    // Pings through the follower keep it alive well past its timeout.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(c.ping().err, 0);
    }
    assert!(exists_on(&servers[leader], "/held"));
    // Then the client goes silent: its connection is gone, no closeSession was sent.
    let silent = Instant::now();
    drop(c);
    let e = watcher
        .next_event()
        .expect("the ephemeral's deletion is seen");
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (EventType::NodeDeleted as i32, "/held")
    );
    let after = silent.elapsed();
    assert!(
        after >= Duration::from_millis(1000),
        "expired after {after:?}"
    );
    for s in &servers {
        assert!(!exists_on(s, "/held"));
    }
}

#[test]
fn sessions_get_a_fresh_timeout_after_a_leader_change() {
    let cfgs = ensemble_configs(3, 0);
    let mut servers: Vec<Option<TestServer>> = cfgs
        .into_iter()
        .map(|c| Some(TestServer::start_with(c)))
        .collect();
    let leader = wait_for_leader(&servers.iter().flatten().collect::<Vec<_>>());
    let follower = (leader + 1) % 3;
    let timeout = Duration::from_millis(3000);
    let mut c = session_on(
        servers[follower].as_ref().unwrap().addr,
        timeout.as_millis() as i32,
    );
    assert_eq!(c.call(create("/fresh", b"", 1)).err, 0);
    let silent = Instant::now();
    drop(c);
    // Half-way through its timeout the leader goes; the new one restarts every session's clock
    // (as ZooKeeper does after an election), so the session outlives its first deadline.
    std::thread::sleep(timeout / 2);
    servers[leader].take();
    let rest: Vec<&TestServer> = servers.iter().flatten().collect();
    wait_for_leader(&rest);
    let past_first_deadline = timeout + Duration::from_millis(1000);
    if let Some(wait) = past_first_deadline.checked_sub(silent.elapsed()) {
        std::thread::sleep(wait);
    }
    let checked_at = silent.elapsed();
    assert!(
        exists_on(rest[0], "/fresh"),
        "the session expired {checked_at:?} after it went silent, through a leader change"
    );
    // It still expires, on the new leader's clock.
    let deadline = Instant::now() + Duration::from_secs(20);
    while exists_on(rest[0], "/fresh") {
        assert!(
            Instant::now() < deadline,
            "the silent session never expired"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!exists_on(rest[1], "/fresh"));
}

#[test]
fn watches_follow_a_client_to_another_member() {
    let cfgs = ensemble_configs(3, 0);
    let servers: Vec<TestServer> = cfgs.into_iter().map(TestServer::start_with).collect();
    let refs: Vec<&TestServer> = servers.iter().collect();
    let leader = wait_for_leader(&refs);
    let (first, second) = ((leader + 1) % 3, (leader + 2) % 3);
    let mut a = connect_to(servers[first].addr);
    for p in ["/mw-data", "/mw-same"] {
        assert_eq!(a.call(create(p, b"", 0)).err, 0);
    }
    assert_eq!(a.call(get_data("/mw-data", true)).err, 0);
    assert_eq!(a.call(get_data("/mw-same", true)).err, 0);
    assert_eq!(a.call(exists("/mw-born", true)).code(), ErrorCode::NoNode);
    let seen = a.ping().zxid;
    let (session, passwd) = (a.session_id, a.passwd.clone());
    drop(a);
    // While the client is between members, two of its watched nodes change.
    let mut other = connect_to(servers[leader].addr);
    assert_eq!(other.call(set_data("/mw-data", b"new", -1)).err, 0);
    assert_eq!(other.call(create("/mw-born", b"", 0)).err, 0);
    // It resumes on another member and hands over its watches, as a ZooKeeper client does.
    let mut b = RawClient::resume(servers[second].addr, session, passwd, seen, 5000).unwrap();
    b.send(
        -8,
        &Request::SetWatches(corral_proto::SetWatches {
            relative_zxid: seen,
            data_watches: vec!["/mw-data".into(), "/mw-same".into()],
            exist_watches: vec!["/mw-born".into()],
            child_watches: vec![],
        }),
    );
    assert_eq!(
        b.read_reply(-8, corral_proto::OpCode::SetWatches)
            .unwrap()
            .err,
        0
    );
    let mut events = Vec::new();
    while events.len() < 2 {
        let e = b
            .next_event()
            .expect("an event for a change made while away");
        events.push((e.path, e.event_type));
    }
    events.sort();
    assert_eq!(
        events,
        vec![
            ("/mw-born".to_string(), EventType::NodeCreated as i32),
            ("/mw-data".to_string(), EventType::NodeDataChanged as i32),
        ]
    );
    // The unchanged one moved too, and fires on the next change wherever it is made.
    assert_eq!(other.call(set_data("/mw-same", b"x", -1)).err, 0);
    let e = b.next_event().unwrap();
    assert_eq!(
        (e.path.as_str(), e.event_type),
        ("/mw-same", EventType::NodeDataChanged as i32)
    );
}

/// A member that says it serves (srvr shows a Mode) takes a new session at that very moment:
/// srvr and the connect are answered from one serving state, so no client is turned away right
/// after being told the member leads or follows.
#[test]
fn a_member_that_shows_a_mode_takes_sessions() {
    let cfgs = ensemble_configs(3, 0);
    let servers: Vec<TestServer> = cfgs.into_iter().map(TestServer::start_with).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut checked = [false; 3];
    while checked.iter().any(|c| !c) {
        assert!(
            Instant::now() < deadline,
            "members never served: {checked:?}"
        );
        for (i, s) in servers.iter().enumerate() {
            if checked[i] {
                continue;
            }
            let answer = four_letter(s.addr, "srvr");
            if answer.contains("Mode: ") {
                let c = RawClient::resume(s.addr, 0, Bytes::from_static(&[0; 16]), 0, 4000);
                assert!(
                    c.is_ok(),
                    "member {} said it serves, then refused a session",
                    i + 1
                );
                checked[i] = true;
            } else {
                assert!(
                    answer.starts_with("This ZooKeeper instance is not currently serving"),
                    "{answer}"
                );
            }
        }
    }
}

/// A new ensemble whose lowest member never starts still forms: the others initialize it in
/// turn (the lowest initializes at once; the rest wait, so they do not depose a leader of the
/// first term by voting for themselves in it).
#[test]
fn a_new_ensemble_forms_without_its_lowest_member() {
    let cfgs = ensemble_configs(3, 0);
    let servers: Vec<TestServer> = cfgs
        .into_iter()
        .skip(1)
        .map(TestServer::start_with)
        .collect();
    let refs: Vec<&TestServer> = servers.iter().collect();
    let leader = wait_for_leader(&refs);
    let mut c = RawClient::connect(servers[leader].addr);
    assert_eq!(c.call(create("/formed", b"", 0)).err, 0);
}
