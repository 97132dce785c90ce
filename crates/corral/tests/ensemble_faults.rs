//! A three-member ensemble of real `corral` processes on loopback, under faults: the leader is
//! SIGKILLed during a write load, then every member is SIGKILLed and restarted. Every acknowledged
//! write must survive, the client's session must survive the leader's death, and a restarted
//! member must catch up.

use corral_proto::{OpCode, PathRequest, Request, Response};
use corral_testkit::linearizable::{self, State, Workload};
use corral_testkit::{
    create, exists, four_letter, free_port, mode_of, temp_data_dir, wait_for_serving_leader,
    RawClient,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Member {
    addr: SocketAddr,
    cfg: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["server", "--config"])
            .arg(&self.cfg)
            .env("RUST_LOG", "info,openraft=warn")
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    fn mode(&self) -> String {
        mode_of(self.addr)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ensemble(dir: &std::path::Path) -> Vec<Member> {
    let ports: Vec<(u16, u16, u16)> = (0..3)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let lines: String = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer, election))| format!("server.{}=127.0.0.1:{peer}:{election}\n", i + 1))
        .collect();
    (0..3)
        .map(|i| {
            let data = dir.join(format!("m{}", i + 1));
            std::fs::create_dir_all(&data).unwrap();
            std::fs::write(data.join("myid"), format!("{}\n", i + 1)).unwrap();
            let cfg = dir.join(format!("zoo{}.cfg", i + 1));
            let text = format!(
                "tickTime=500\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n4lw.commands.whitelist=*\nmaxClientCnxns=0\n{lines}",
                data.display(),
                ports[i].0
            );
            std::fs::write(&cfg, text).unwrap();
            Member {
                addr: format!("127.0.0.1:{}", ports[i].0).parse().unwrap(),
                cfg,
                log: dir.join(format!("m{}.log", i + 1)),
                child: None,
            }
        })
        .collect()
}

fn wait_for_leader(members: &[Member], alive: &[usize]) -> usize {
    let addrs: Vec<SocketAddr> = members.iter().map(|m| m.addr).collect();
    wait_for_serving_leader(&addrs, alive)
}

fn sync(c: &mut RawClient) {
    assert_eq!(
        c.call(Request::Sync(PathRequest { path: "/".into() })).err,
        0
    );
}

/// Pipelined creates through `addrs`, moving the session to the next member when a connection
/// fails, until `stop`; returns the acknowledged paths and the longest pause between acks.
fn write_load(
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) -> (i64, Duration) {
    let mut client = RawClient::connect(addrs[0]);
    let session = client.session_id;
    let passwd = client.passwd.clone();
    // The session's ephemeral must outlive the leader's death with the session.
    assert_eq!(client.call(create("/writer-lease", b"", 1)).err, 0);
    let mut last_zxid = 0;
    let mut next = 0usize;
    let mut longest_pause = Duration::ZERO;
    let mut last_ack = Instant::now();
    let mut target = 0;
    'outer: while !stop.load(Ordering::Relaxed) {
        let batch: Vec<(i32, String)> = (0..20)
            .map(|k| {
                next += 1;
                (k + 1, format!("/load-{next}"))
            })
            .collect();
        for (xid, p) in &batch {
            client.send(*xid, &create(p, b"x", 0));
        }
        for (xid, p) in &batch {
            match client.read_reply(*xid, OpCode::Create) {
                Ok(r) if r.err == 0 => {
                    last_zxid = last_zxid.max(r.zxid);
                    acked.lock().unwrap().push(p.clone());
                    longest_pause = longest_pause.max(last_ack.elapsed());
                    last_ack = Instant::now();
                }
                Ok(r) => panic!("write refused: {r:?}"),
                Err(_) => {
                    // Connection lost: resume the same session on another member, as a client does.
                    let deadline = Instant::now() + Duration::from_secs(20);
                    loop {
                        target = (target + 1) % addrs.len();
                        if let Ok(c) = RawClient::resume(
                            addrs[target],
                            session,
                            passwd.clone(),
                            last_zxid,
                            10_000,
                        ) {
                            client = c;
                            continue 'outer;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "the session could not be resumed anywhere"
                        );
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }
    }
    (session, longest_pause)
}

fn assert_all_present(addr: SocketAddr, acked: &[String]) {
    let mut c = RawClient::connect(addr);
    sync(&mut c);
    for p in acked {
        assert_eq!(
            c.call(exists(p, false)).err,
            0,
            "{p} acknowledged but missing at {addr}"
        );
    }
}

#[test]
fn sigkill_leader_under_load_then_all_members() {
    let dir = temp_data_dir();
    let mut members = ensemble(&dir);
    for m in members.iter_mut() {
        m.start();
    }
    let leader = wait_for_leader(&members, &[0, 1, 2]);
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let addrs: Vec<SocketAddr> = followers.iter().map(|i| members[*i].addr).collect();
    // A register worked by clients on every member, the leader included, through the kill.
    let mut setup = RawClient::connect(members[leader].addr);
    assert_eq!(setup.call(create("/register", b"0", 0)).err, 0);
    assert_eq!(setup.call(create("/counter", b"0", 0)).err, 0);
    drop(setup);
    let all_addrs: Vec<SocketAddr> = members.iter().map(|m| m.addr).collect();
    let until = Instant::now() + Duration::from_secs(4);
    let record = |path: &'static str, clients, workload| {
        let addrs = all_addrs.clone();
        std::thread::spawn(move || linearizable::record(&addrs, path, clients, until, workload))
    };
    let register = record("/register", 3, Workload::Register);
    let counter = record("/counter", 2, Workload::Counter);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || write_load(addrs, stop, acked))
    };
    std::thread::sleep(Duration::from_millis(700));
    let before_kill = acked.lock().unwrap().len();
    assert!(before_kill > 0, "writes flow before the kill");
    members[leader].kill();
    let killed_at = Instant::now();
    let new_leader = wait_for_leader(&members, &followers);
    // Let writes run on the new leader for a while.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < before_kill + 200 {
        assert!(
            Instant::now() < deadline,
            "writes did not resume after the leader was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let resumed_after = killed_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (session, longest_pause) = writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "leader {} killed; new leader {}; {} writes acked; longest pause between acks {longest_pause:?}; 200 more acked {resumed_after:?} after the kill",
        leader + 1,
        new_leader + 1,
        acked.len()
    );
    for &i in &followers {
        assert_all_present(members[i].addr, &acked);
    }
    let history = register.join().unwrap();
    eprintln!("register history: {} operations", history.len());
    let start = State {
        value: 0,
        version: 0,
    };
    linearizable::check(&history, start).unwrap();
    let counts = counter.join().unwrap();
    eprintln!("counter history: {} operations", counts.len());
    linearizable::check(&counts, start).unwrap();
    // The writer's session survived the leader's death: its ephemeral is still there, owned
    // by it, read on the new leader.
    let mut probe = RawClient::connect(members[new_leader].addr);
    let lease = probe.call(exists("/writer-lease", false));
    match lease.body {
        Some(Response::Stat(s)) => assert_eq!(s.ephemeral_owner, session, "the lease's owner"),
        other => panic!("the writer's ephemeral is gone after the failover: {other:?}"),
    }
    assert!(probe.call(create("/probe", b"", 0)).err == 0);
    let back = RawClient::resume(
        members[followers[0]].addr,
        session,
        bytes::Bytes::new(),
        0,
        5000,
    );
    assert!(back.is_err(), "a wrong password is still refused");

    // The killed member comes back and catches up.
    members[leader].start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while members[leader].mode() != "follower" {
        assert!(
            Instant::now() < deadline,
            "the restarted member did not rejoin"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_all_present(members[leader].addr, &acked);

    // Every member killed at once, then restarted: nothing acknowledged is lost.
    for m in members.iter_mut() {
        m.kill();
    }
    for m in members.iter_mut() {
        m.start();
    }
    let leader = wait_for_leader(&members, &[0, 1, 2]);
    for m in &members {
        assert_all_present(m.addr, &acked);
    }
    let srvr = four_letter(members[leader].addr, "srvr");
    assert!(srvr.contains("Mode: leader"), "{srvr}");
    let probe = RawClient::connect(members[leader].addr).call(exists("/probe", false));
    assert!(matches!(probe.body, Some(Response::Stat(_))));
    drop(members);
    let _ = std::fs::remove_dir_all(&dir);
}
