//! Dynamic reconfiguration in one process, on loopback: `/zookeeper/config` as ZooKeeper
//! publishes it, `reconfig`'s checks, members joining (catching up from a snapshot) and leaving
//! (the leader among them), observers becoming voters and back, and a removed member that stops
//! serving, also once restarted with its old configuration.

use bytes::Bytes;
use corral_proto::records::ReconfigRequest;
use corral_proto::{ErrorCode, EventType, PathRequest, Request, Response};
use corral_server::config::ServerLine;
use corral_server::ServerConfig;
use corral_testkit::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Configurations for members `1..=total`: the first `initial` form the ensemble (each names only
/// them), the others are started later with the ensemble and themselves, to join it.
fn configs(initial: u64, total: u64) -> Vec<ServerConfig> {
    let lines: BTreeMap<u64, ServerLine> = (1..=total)
        .map(|id| {
            let line = ServerLine {
                host: "127.0.0.1".into(),
                peer_port: free_port(),
                election_port: free_port(),
                observer: false,
                client: None,
            };
            (id, line)
        })
        .collect();
    (1..=total)
        .map(|id| {
            let mut cfg = test_config();
            cfg.my_id = id;
            cfg.reconfig_enabled = true;
            cfg.snap_count = 50;
            cfg.snap_retain_count = 1;
            cfg.log_segment_bytes = 4096;
            cfg.servers = lines
                .iter()
                .filter(|(i, _)| **i <= initial.max(id))
                .map(|(i, l)| (*i, l.clone()))
                .collect();
            cfg
        })
        .collect()
}

/// The `server.N=` line a reconfig adds member `id` with.
fn joiner(cfg: &ServerConfig, id: u64, client_port: u16, role: &str) -> String {
    let l = &cfg.servers[&id];
    format!(
        "server.{id}=127.0.0.1:{}:{}:{role};127.0.0.1:{client_port}",
        l.peer_port, l.election_port
    )
}

fn as_super(c: &mut RawClient) {
    assert_eq!(c.add_digest_auth("super:test").unwrap().err, 0);
}

fn reconfig(c: &mut RawClient, joining: &str, leaving: &str, members: &str, from: i64) -> Reply {
    c.call(Request::Reconfig(ReconfigRequest {
        joining_servers: joining.into(),
        leaving_servers: leaving.into(),
        new_members: members.into(),
        cur_config_id: from,
    }))
}

/// `/zookeeper/config` as a member shows it, after a `sync`.
fn config_of(server: &TestServer) -> (String, corral_proto::records::Stat) {
    let mut c = RawClient::connect(server.addr);
    let r = c.call(Request::Sync(PathRequest { path: "/".into() }));
    assert_eq!(r.err, 0, "{r:?}");
    let r = c.call(get_data("/zookeeper/config", false));
    let Some(Response::GetData(d)) = r.body else {
        panic!("{r:?}")
    };
    let text = String::from_utf8(d.data.unwrap_or_default().to_vec()).unwrap();
    (text, d.stat)
}

fn version_of(text: &str) -> i64 {
    let hex = text.rsplit_once("version=").expect("a version line").1;
    i64::from_str_radix(hex, 16).unwrap()
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serving_leader(servers: &[&TestServer]) -> usize {
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let among: Vec<usize> = (0..servers.len()).collect();
    wait_for_serving_leader(&addrs, &among)
}

#[test]
fn the_membership_is_published_and_reconfig_checks_as_zookeeper() {
    let cfgs = configs(3, 3);
    let servers: Vec<TestServer> = cfgs.iter().cloned().map(TestServer::start_with).collect();
    let refs: Vec<&TestServer> = servers.iter().collect();
    serving_leader(&refs);
    let expected: String = (1..=3)
        .map(|id| {
            let l = &cfgs[0].servers[&id];
            format!(
                "server.{id}=127.0.0.1:{}:{}:participant\n",
                l.peer_port, l.election_port
            )
        })
        .collect();
    wait_for("the membership published", Duration::from_secs(10), || {
        config_of(&servers[0]).0.starts_with(&expected)
    });
    for s in &servers {
        let (text, stat) = config_of(s);
        assert_eq!(text, format!("{expected}version={:x}", stat.mzxid));
        // As ZooKeeper writes it: a setData of version -1, ACL unchanged.
        assert_eq!((stat.version, stat.aversion, stat.czxid), (-1, -1, 0));
    }
    let (text, _) = config_of(&servers[0]);
    let version = version_of(&text);

    let mut anyone = RawClient::connect(servers[1].addr);
    // Not the super user: refused, but only after the request itself was found sound.
    assert_eq!(
        reconfig(&mut anyone, "", "3", "", -1).code(),
        ErrorCode::NoAuth
    );
    assert_eq!(
        reconfig(&mut anyone, "server.9=127.0.0.1:1", "", "", -1).code(),
        ErrorCode::BadArguments
    );
    let mut admin = RawClient::connect(servers[1].addr);
    as_super(&mut admin);
    assert_eq!(
        reconfig(&mut admin, "", "3", "", version + 1).code(),
        ErrorCode::BadVersion
    );
    assert_eq!(
        reconfig(&mut admin, "", "2,3", "", -1).code(),
        ErrorCode::BadArguments,
        "standaloneEnabled: two voters at least"
    );
    assert_eq!(
        reconfig(&mut admin, "", "x", "", -1).code(),
        ErrorCode::MarshallingError
    );
    // A member that is not running cannot be caught up: no quorum of the new configuration.
    let ghosts = (5..=7)
        .map(|id| {
            format!(
                "server.{id}=127.0.0.1:{}:{}:participant;127.0.0.1:{}",
                free_port(),
                free_port(),
                free_port()
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let started = Instant::now();
    assert_eq!(
        reconfig(&mut admin, &ghosts, "", "", -1).code(),
        ErrorCode::NewConfigNoQuorum
    );
    eprintln!("NewConfigNoQuorum after {:?}", started.elapsed());
    // Nothing changed, and the ghosts were taken out again.
    let (after, _) = config_of(&servers[0]);
    assert_eq!(after, text);

    // A reconfig that changes nothing is a new version of the same membership, and a watch on
    // the node fires.
    let mut watcher = RawClient::connect(servers[2].addr);
    assert_eq!(watcher.call(get_data("/zookeeper/config", true)).err, 0);
    let r = reconfig(&mut admin, "", "", "", version);
    let Some(Response::GetData(d)) = r.body else {
        panic!("{r:?}")
    };
    let new_text = String::from_utf8(d.data.unwrap().to_vec()).unwrap();
    assert!(new_text.starts_with(&expected), "{new_text}");
    assert!(version_of(&new_text) > version);
    assert_eq!(version_of(&new_text), d.stat.mzxid);
    let e = watcher.next_event().unwrap();
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (EventType::NodeDataChanged as i32, "/zookeeper/config")
    );
    // The connection goes on in order after it.
    assert_eq!(admin.call(create("/after", b"", 0)).err, 0);
}

#[test]
fn members_join_leave_and_change_role() {
    let cfgs = configs(3, 5);
    let mut servers: Vec<Option<TestServer>> = cfgs[..3]
        .iter()
        .cloned()
        .map(|c| Some(TestServer::start_with(c)))
        .collect();
    let leader = serving_leader(&servers.iter().flatten().collect::<Vec<_>>());
    let mut admin = RawClient::connect(servers[(leader + 1) % 3].as_ref().unwrap().addr);
    as_super(&mut admin);
    // Enough writes for snapshots: the log a new member would need is purged.
    for i in 0..300 {
        assert_eq!(admin.call(create(&format!("/n{i}"), b"x", 0)).err, 0);
    }
    // Member 4 starts with the ensemble and itself in its configuration: it waits to be added,
    // and founds no ensemble of its own.
    let four = TestServer::start_with(cfgs[3].clone());
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(mode_of(four.addr), "leader");
    let add = joiner(&cfgs[3], 4, four.addr.port(), "participant");
    let r = reconfig(&mut admin, &add, "", "", -1);
    assert_eq!(r.err, 0, "{r:?}");
    let Some(Response::GetData(d)) = r.body else {
        panic!("{r:?}")
    };
    let text = String::from_utf8(d.data.unwrap().to_vec()).unwrap();
    assert!(text.contains(&format!("{add}\n")), "{text}");
    servers.push(Some(four));
    wait_for("member 4 follows", Duration::from_secs(15), || {
        mode_of(servers[3].as_ref().unwrap().addr) == "follower"
    });
    // It caught up from a snapshot and serves what was written before it joined.
    let (four_text, _) = config_of(servers[3].as_ref().unwrap());
    assert_eq!(four_text, text);
    let mut c4 = RawClient::connect(servers[3].as_ref().unwrap().addr);
    assert_eq!(c4.call(exists("/n0", false)).err, 0);
    assert_eq!(c4.call(create("/via-4", b"", 0)).err, 0);
    assert_eq!(
        mntr_value(servers[leader].as_ref().unwrap(), "zk_quorum_size"),
        "4"
    );

    // Member 4 becomes an observer, then a voter again.
    let demote = joiner(
        &cfgs[3],
        4,
        servers[3].as_ref().unwrap().addr.port(),
        "observer",
    );
    // (A voter's role change is a membership change: a connection may be lost on the way, and
    // the configuration then tells whether it was done.)
    let voters: Vec<std::net::SocketAddr> = servers.iter().flatten().map(|s| s.addr).collect();
    reconfig_until_done(&voters, &demote, "");
    wait_for("member 4 observes", Duration::from_secs(15), || {
        mode_of(servers[3].as_ref().unwrap().addr) == "observer"
    });
    reconfig_until_done(&voters, &add, "");
    wait_for("member 4 follows again", Duration::from_secs(15), || {
        mode_of(servers[3].as_ref().unwrap().addr) == "follower"
    });

    // The leader leaves: the others elect another, and the removed member stops serving. Its
    // removal costs an election, during which clients may lose their connections.
    let gone = leader;
    let others: Vec<std::net::SocketAddr> = servers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != gone)
        .filter_map(|(_, s)| s.as_ref().map(|s| s.addr))
        .collect();
    reconfig_until_done(&others, "", &(gone + 1).to_string());
    wait_for(
        "the removed leader stops serving",
        Duration::from_secs(15),
        || {
            !matches!(
                mode_of(servers[gone].as_ref().unwrap().addr).as_str(),
                "leader" | "follower"
            )
        },
    );
    let rest: Vec<&TestServer> = servers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != gone)
        .filter_map(|(_, s)| s.as_ref())
        .collect();
    let new_leader = serving_leader(&rest);
    let mut c = RawClient::connect(rest[new_leader].addr);
    assert_eq!(c.call(create("/after-leader-left", b"", 0)).err, 0);
    let (text, _) = config_of(rest[0]);
    assert!(!text.contains(&format!("server.{}=", gone + 1)), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("server.")).count(), 3);

    let writable = rest[0].addr;
    // Restarted with its old configuration, the removed member still does not serve.
    let data = servers[gone].take().unwrap().stop_keeping_data();
    let mut old = cfgs[gone].clone();
    old.data_dir = data;
    let restarted = TestServer::start_with(old);
    std::thread::sleep(Duration::from_secs(3));
    let mode = mode_of(restarted.addr);
    assert!(!matches!(mode.as_str(), "leader" | "follower"), "{mode}");
    let mut c = RawClient::connect(writable);
    assert_eq!(c.call(create("/still-writable", b"", 0)).err, 0);
}

fn mntr_value(server: &TestServer, key: &str) -> String {
    four_letter(server.addr, "mntr")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}\t")).map(str::to_owned))
        .unwrap_or_default()
}

/// Writes `/load-N` nodes through whichever of `addrs` serves, until told to stop; returns the
/// ones acknowledged.
fn write_load(
    addrs: Vec<std::net::SocketAddr>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<String> {
    let mut acked = Vec::new();
    let mut member = 0;
    let mut client: Option<RawClient> = None;
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let c = match client.as_mut() {
            Some(c) => c,
            None => {
                member = (member + 1) % addrs.len();
                match RawClient::resume(addrs[member], 0, Bytes::from_static(&[0; 16]), 0, 4000) {
                    Ok(c) => client.insert(c),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                }
            }
        };
        let path = format!("/load-{n}");
        n += 1;
        match c.try_call(create(&path, b"", 0)) {
            Ok(r) if r.err == 0 => acked.push(path),
            // Unknown outcome, or a member that does not serve: go elsewhere.
            _ => client = None,
        }
    }
    acked
}

/// Makes a reconfiguration through one of `addrs` as the super user. A connection lost on the way
/// leaves its outcome unknown (the leader's removal closes clients' connections while the others
/// elect, in ZooKeeper too): the configuration then says whether to ask again.
fn reconfig_until_done(addrs: &[std::net::SocketAddr], joining: &str, leaving: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = |text: &str| {
        let joined = joining.is_empty() || text.contains(&format!("{joining}\n"));
        let left = leaving.is_empty() || !text.contains(&format!("server.{leaving}="));
        joined && left
    };
    for attempt in 0.. {
        assert!(
            Instant::now() < deadline,
            "+{joining} -{leaving} never done"
        );
        let addr = addrs[attempt % addrs.len()];
        let Ok(mut c) = RawClient::resume(addr, 0, Bytes::from_static(&[0; 16]), 0, 4000) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        if c.add_digest_auth("super:test").is_err() {
            continue;
        }
        if attempt > 0 {
            let Ok(r) = c.try_call(Request::Sync(PathRequest { path: "/".into() })) else {
                continue;
            };
            assert_eq!(r.err, 0);
            let Ok(r) = c.try_call(get_data("/zookeeper/config", false)) else {
                continue;
            };
            let Some(Response::GetData(d)) = r.body else {
                panic!("{r:?}")
            };
            if done(&String::from_utf8_lossy(&d.data.unwrap_or_default())) {
                return;
            }
        }
        let req = Request::Reconfig(ReconfigRequest {
            joining_servers: joining.into(),
            leaving_servers: leaving.into(),
            new_members: String::new(),
            cur_config_id: -1,
        });
        match c.try_call(req) {
            Ok(r) if r.err == 0 => return,
            Ok(r) if r.code() == ErrorCode::ReconfigInProgress => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Ok(r) => panic!("+{joining} -{leaving}: {r:?}"),
            Err(_) => {}
        }
    }
}

#[test]
fn membership_changes_under_load_lose_nothing_and_stay_linearizable() {
    use corral_testkit::linearizable::{self, State, Workload};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let cfgs = configs(3, 5);
    let mut servers: Vec<TestServer> = cfgs.iter().cloned().map(TestServer::start_with).collect();
    let refs: Vec<&TestServer> = servers[..3].iter().collect();
    serving_leader(&refs);
    let addrs: Vec<std::net::SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let mut setup = RawClient::connect(servers[2].addr);
    assert_eq!(setup.call(create("/register", b"0", 0)).err, 0);
    drop(setup);
    let until = Instant::now() + Duration::from_secs(14);
    let register = {
        let addrs = addrs.clone();
        std::thread::spawn(move || {
            linearizable::record(&addrs, "/register", 3, until, Workload::Register)
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (addrs, stop) = (addrs.clone(), stop.clone());
        std::thread::spawn(move || write_load(addrs, stop))
    };
    // Two members join, two of the first leave (the leader perhaps among them), one of those
    // comes back as an observer: the voters go 1-3, 1-4, 1-5, 2-5, 3-5.
    let port = |i: usize| addrs[i].port();
    let steps = [
        (joiner(&cfgs[3], 4, port(3), "participant"), String::new()),
        (joiner(&cfgs[4], 5, port(4), "participant"), String::new()),
        (String::new(), "1".to_owned()),
        (String::new(), "2".to_owned()),
        (joiner(&cfgs[0], 1, port(0), "observer"), String::new()),
    ];
    for (joining, leaving) in &steps {
        std::thread::sleep(Duration::from_millis(1500));
        reconfig_until_done(&addrs[2..], joining, leaving);
        eprintln!("reconfigured: +{joining} -{leaving}");
    }
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    let history = register.join().unwrap();
    eprintln!(
        "{} creates acknowledged; register history of {} operations",
        acked.len(),
        history.len()
    );
    assert!(acked.len() > 100, "writes went on: {}", acked.len());
    linearizable::check(
        &history,
        State {
            value: 0,
            version: 0,
        },
    )
    .unwrap();
    // Every acknowledged write is on every member of the final membership.
    let (text, _) = config_of(&servers[2]);
    assert!(text.contains(":observer;"), "member 1 observes: {text}");
    for i in [0, 2, 3, 4] {
        let mut c = RawClient::connect(servers[i].addr);
        assert_eq!(
            c.call(Request::Sync(PathRequest { path: "/".into() })).err,
            0
        );
        for path in &acked {
            assert_eq!(
                c.call(exists(path, false)).err,
                0,
                "{path} on member {}",
                i + 1
            );
        }
    }
    // Member 2, removed, serves no more.
    let mode = mode_of(servers[1].addr);
    assert!(mode.is_empty() || mode == "looking", "member 2: {mode:?}");
    servers.truncate(5);
}
