//! A network partition between real `corral` processes. Every link between two members passes
//! through a proxy of the test's own (each member's zoo.cfg names the proxies as its peers'
//! addresses), so the test can cut any member off. The leader is isolated: it can no longer
//! acknowledge writes; the majority elects a new leader and goes on; after healing, every member
//! holds the same tree.

use corral_proto::{PathRequest, Request, Response, Stat};
use corral_testkit::linearizable::{self, State, Workload};
use corral_testkit::{
    create, free_port, get_children, get_data, mode_of, temp_data_dir, wait_for_serving_leader,
    Proxy, RawClient,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Member {
    client: SocketAddr,
    child: Child,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_leader(members: &[Member], among: &[usize]) -> usize {
    let addrs: Vec<SocketAddr> = members.iter().map(|m| m.client).collect();
    wait_for_serving_leader(&addrs, among)
}

/// path → (data, Stat): a whole tree as a client reads it.
type Tree = BTreeMap<String, (Option<Vec<u8>>, Stat)>;

/// Every znode as member `addr` holds it after a sync: path → (data, Stat). Zxids and times
/// included: the tree is a function of the log, so converged members agree on all of it.
fn whole_tree(addr: SocketAddr) -> Tree {
    let mut c = RawClient::connect(addr);
    assert_eq!(
        c.call(Request::Sync(PathRequest { path: "/".into() })).err,
        0
    );
    let mut tree = BTreeMap::new();
    let mut todo = vec!["/".to_string()];
    while let Some(path) = todo.pop() {
        let Some(Response::GetData(d)) = c.call(get_data(&path, false)).body else {
            continue; // deleted while we walked (a session expiring): the caller looks again
        };
        if let Some(Response::GetChildren(kids)) = c.call(get_children(&path, false)).body {
            let prefix = if path == "/" { "" } else { path.as_str() };
            todo.extend(kids.iter().map(|k| format!("{prefix}/{k}")));
        }
        tree.insert(path, (d.data.map(|b| b.to_vec()), d.stat));
    }
    assert_eq!(c.call(Request::CloseSession).err, 0);
    tree
}

#[test]
fn isolated_leader_stops_acknowledging_majority_goes_on_and_all_converge() {
    let dir = temp_data_dir();
    let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    // proxies[i][j]: member i's link to member j.
    let proxies: Vec<Vec<Option<Proxy>>> = (0..3)
        .map(|i| {
            (0..3)
                .map(|j| {
                    (i != j).then(|| {
                        Proxy::start(format!("127.0.0.1:{}", peer_ports[j]).parse().unwrap())
                    })
                })
                .collect()
        })
        .collect();
    let mut members: Vec<Member> = (0..3)
        .map(|i| {
            let data: PathBuf = dir.join(format!("m{}", i + 1));
            std::fs::create_dir_all(&data).unwrap();
            std::fs::write(data.join("myid"), format!("{}", i + 1)).unwrap();
            let mut cfg = format!(
                "tickTime=500\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n4lw.commands.whitelist=*\n",
                data.display(),
                client_ports[i]
            );
            for (j, link) in proxies[i].iter().enumerate() {
                let port = link.as_ref().map_or(peer_ports[i], |p| p.addr.port());
                cfg.push_str(&format!("server.{}=127.0.0.1:{port}:{}\n", j + 1, free_port()));
            }
            let path = dir.join(format!("zoo{}.cfg", i + 1));
            std::fs::write(&path, cfg).unwrap();
            let log = std::fs::File::create(dir.join(format!("m{}.log", i + 1))).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_corral"))
                .args(["server", "--config"])
                .arg(&path)
                .env("RUST_LOG", "info,openraft=warn")
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap();
            Member {
                client: format!("127.0.0.1:{}", client_ports[i]).parse().unwrap(),
                child,
            }
        })
        .collect();
    let leader = wait_for_leader(&members, &[0, 1, 2]);
    let mut c = RawClient::connect(members[leader].client);
    assert_eq!(c.call(create("/part", b"", 0)).err, 0);
    assert_eq!(c.call(create("/part/before", b"", 0)).err, 0);
    assert_eq!(c.call(create("/register", b"0", 0)).err, 0);
    assert_eq!(c.call(create("/counter", b"0", 0)).err, 0);
    // Clients on every member work a register and a counter through the partition and healing.
    let addrs: Vec<SocketAddr> = members.iter().map(|m| m.client).collect();
    let until = Instant::now() + Duration::from_secs(7);
    let record = |path: &'static str, clients, workload| {
        let addrs = addrs.clone();
        std::thread::spawn(move || linearizable::record(&addrs, path, clients, until, workload))
    };
    let workload = record("/register", 3, Workload::Register);
    let counter = record("/counter", 3, Workload::Counter);
    std::thread::sleep(Duration::from_millis(500));

    // A client of the majority side holds an ephemeral with a short session, kept alive by pings
    // throughout. The isolated leader hears nothing of it and decides it expired; that decision,
    // made under a term that is over, must not take effect after healing.
    let majority_member = (leader + 1) % 3;
    let mut holder = RawClient::resume(
        members[majority_member].client,
        0,
        bytes::Bytes::from_static(&[0; 16]),
        0,
        // Long enough to outlast the failover on its follower (a session shorter than the
        // election has its connection closed, as by ZooKeeper), short enough that the
        // isolated leader decides it expired before the partition heals.
        2000,
    )
    .unwrap();
    assert_eq!(holder.call(create("/part-lease", b"", 1)).err, 0);
    let holder_session = holder.session_id;
    let stop_pinging = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let stop = stop_pinging.clone();
        // Its member may stop serving for a moment while the majority elects a leader (it
        // closes its connections, as ZooKeeper's followers do): the holder then resumes its
        // session on a majority member, as every client library does, well within its timeout.
        let majority_addrs: Vec<SocketAddr> = (0..3)
            .filter(|i| *i != leader)
            .map(|i| members[i].client)
            .collect();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if holder.try_call(Request::Ping).is_err() {
                    holder = resume_anywhere(&majority_addrs, &holder);
                }
                std::thread::sleep(Duration::from_millis(150));
            }
            holder
        })
    };

    // Cut the leader off from both others, in both directions.
    for (j, row) in proxies.iter().enumerate().filter(|(j, _)| *j != leader) {
        proxies[leader][j].as_ref().unwrap().block(true);
        row[leader].as_ref().unwrap().block(true);
    }
    // The isolated leader cannot acknowledge a write.
    c.stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    c.send(77, &create("/part/minority", b"", 0));
    let minority_acked =
        matches!(c.read_reply(77, corral_proto::OpCode::Create), Ok(r) if r.err == 0);
    assert!(
        !minority_acked,
        "a member cut off from the majority acknowledged a write"
    );

    // The majority elects a leader and keeps taking writes.
    let majority: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let new_leader = wait_for_leader(&members, &majority);
    let mut m = RawClient::connect(members[majority[0]].client);
    for k in 0..20 {
        assert_eq!(
            m.call(create(&format!("/part/majority-{k}"), b"", 0)).err,
            0
        );
    }
    eprintln!(
        "isolated {}, majority leader {}",
        leader + 1,
        new_leader + 1
    );

    // Heal: every member converges to the same tree, with every acknowledged write.
    for row in &proxies {
        for p in row.iter().flatten() {
            p.block(false);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while mode_of(members[leader].client) != "follower" {
        assert!(
            Instant::now() < deadline,
            "the isolated member did not rejoin"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let history = workload.join().unwrap();
    let answered = history.iter().filter(|e| e.answered != u64::MAX).count();
    eprintln!(
        "register history: {} operations, {answered} answered",
        history.len()
    );
    assert!(answered > 20, "the workload made progress");
    let start = State {
        value: 0,
        version: 0,
    };
    linearizable::check(&history, start).unwrap();
    let counts = counter.join().unwrap();
    let increments = counts
        .iter()
        .filter(|e| matches!(e.outcome, linearizable::Outcome::Written { .. }))
        .count();
    eprintln!(
        "counter history: {} operations, {increments} increments",
        counts.len()
    );
    assert!(increments > 5, "the counter made progress");
    linearizable::check(&counts, start).unwrap();
    // The lease outlived the partition: the deposed leader's expiry was not applied.
    std::thread::sleep(Duration::from_secs(1));
    stop_pinging.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut holder = pinger.join().unwrap();
    let mut check = RawClient::connect(members[majority_member].client);
    assert_eq!(
        check
            .call(Request::Sync(PathRequest { path: "/".into() }))
            .err,
        0
    );
    match check
        .call(corral_testkit::exists("/part-lease", false))
        .body
    {
        Some(Response::Stat(st)) => assert_eq!(st.ephemeral_owner, holder_session),
        other => panic!("the live session's ephemeral was deleted: {other:?}"),
    }
    assert_eq!(holder.ping().err, 0, "the live session was expired");
    // Every member holds the same whole tree. Looked at again while they differ: a session of
    // the test expiring between two looks changes the tree under them.
    let deadline = Instant::now() + Duration::from_secs(15);
    let tree = loop {
        let trees: Vec<_> = members.iter().map(|m| whole_tree(m.client)).collect();
        if trees[0] == trees[1] && trees[1] == trees[2] {
            break trees[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "members hold different trees: {:?}",
            differences(&trees)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(tree.contains_key("/part/before"));
    for k in 0..20 {
        assert!(
            tree.contains_key(&format!("/part/majority-{k}")),
            "acknowledged majority-{k} missing"
        );
    }
    members.clear();
    drop(proxies);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Resumes `client`'s session on the first of `addrs` that takes it, trying them in turn: a
/// member that does not serve closes the connection unanswered. An "expired" answer fails the
/// test (the session was to be kept alive throughout).
fn resume_anywhere(addrs: &[SocketAddr], client: &RawClient) -> RawClient {
    let deadline = Instant::now() + Duration::from_millis(client.timeout_ms as u64);
    for addr in addrs.iter().cycle() {
        match RawClient::resume(
            *addr,
            client.session_id,
            client.passwd.clone(),
            0,
            client.timeout_ms,
        ) {
            Ok(resumed) => return resumed,
            Err(e) if e == "session expired" => panic!("the holder's session expired"),
            Err(_) => {
                assert!(
                    Instant::now() < deadline,
                    "no member resumed the session in time"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    unreachable!("addrs is not empty")
}

/// The paths whose data or Stat differ between the members' trees.
fn differences(trees: &[Tree]) -> Vec<String> {
    let paths: std::collections::BTreeSet<&String> = trees.iter().flat_map(|t| t.keys()).collect();
    paths
        .into_iter()
        .filter(|p| trees.iter().any(|t| t.get(*p) != trees[0].get(*p)))
        .cloned()
        .collect()
}
