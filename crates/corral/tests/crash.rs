//! SIGKILL during a write load, again and again: after every restart each acknowledged write is
//! there, and no multi is half applied. `CORRAL_CRASH_ROUNDS` sets the number of rounds (3 by
//! default, as in CI; raise it for a stress run). Snapshots are taken every few hundred writes
//! and the log is cut in small segments, so kills land while snapshots are written and old
//! segments purged, and recovery goes through snapshot plus log.

use bytes::Bytes;
use corral_proto::records::CreateRequest;
use corral_proto::{OpCode, Request, Response};
use corral_testkit::{
    create, exists, free_port, spawn_server_with, temp_data_dir, KillOnDrop, RawClient,
};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn start(dir: &std::path::Path, port: u16) -> KillOnDrop {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.with_extension("log"))
        .unwrap();
    spawn_server_with(
        env!("CARGO_BIN_EXE_corral"),
        dir,
        port,
        "snapCount=300\nlogSegmentBytes=16384\nautopurge.snapRetainCount=3\n",
        Stdio::from(log),
    )
}

fn multi(n: usize) -> Request {
    let op = |suffix: &str| Request::Create {
        op: OpCode::Create,
        req: CreateRequest {
            path: format!("/m{n}-{suffix}"),
            data: Some(Bytes::new()),
            acl: vec![corral_proto::Acl::new(31, "world", "anyone")],
            flags: 0,
        },
    };
    Request::Multi(vec![op("a"), op("b")])
}

/// Writes pipelined creates and multis until the connection dies; returns what was acknowledged
/// and how many multis were sent.
fn load(
    addr: SocketAddr,
    round: usize,
    stop_after: Duration,
    first_acked: std::sync::mpsc::Sender<()>,
) -> (Vec<String>, Vec<usize>, usize) {
    let mut c = RawClient::connect(addr);
    let mut first_ack = Some(first_acked);
    let mut acked = Vec::new();
    let mut acked_multis = Vec::new();
    let start = Instant::now();
    let mut sent_multis = 0;
    let mut batch = 0;
    while start.elapsed() < stop_after * 3 + Duration::from_secs(10) {
        let mut sent = Vec::new();
        for i in 0..50 {
            let xid = batch * 100 + i + 1;
            let req = if i % 10 == 0 {
                let n = round * 1_000_000 + sent_multis;
                sent_multis += 1;
                (multi(n), Some(n))
            } else {
                (create(&format!("/r{round}-{batch}-{i}"), b"x", 0), None)
            };
            c.send(xid, &req.0);
            sent.push((xid, req));
        }
        for (xid, (req, multi_n)) in sent {
            let reply = c.read_reply(xid, req.op_code());
            if let (Ok(r), Some(tx)) = (&reply, &first_ack) {
                if r.err == 0 {
                    let _ = tx.send(());
                    first_ack = None;
                }
            }
            match reply {
                Ok(r) if r.err == 0 => match (multi_n, r.body) {
                    (Some(n), Some(Response::Multi(_))) => acked_multis.push(n),
                    (None, Some(Response::Path(p))) => acked.push(p),
                    other => panic!("unexpected reply {other:?}"),
                },
                Ok(r) => panic!("write failed: {r:?}"),
                Err(_) => return (acked, acked_multis, sent_multis),
            }
        }
        batch += 1;
    }
    panic!("the server was never killed");
}

#[test]
fn sigkill_during_writes_loses_nothing_acknowledged() {
    let rounds: usize = std::env::var("CORRAL_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dir = temp_data_dir();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut all_acked: Vec<String> = Vec::new();
    let mut all_multis: Vec<(usize, usize)> = Vec::new(); // (round, sent)
    let mut acked_multis: Vec<usize> = Vec::new();
    for round in 0..rounds {
        let mut child = start(&dir, port);
        // After every restart, not only the last: each recovery must hold everything so far.
        verify(addr, &all_acked, &acked_multis, &all_multis);
        let kill_after = Duration::from_millis(150 + 97 * (round as u64 % 5));
        let (connected, session_ready) = std::sync::mpsc::channel();
        let killer = std::thread::spawn(move || {
            // The clock starts at the first acknowledged write, so the kill lands mid-load.
            let _ = session_ready.recv_timeout(Duration::from_secs(30));
            std::thread::sleep(kill_after);
            child.kill(); // SIGKILL
        });
        let (acked, multis, sent_multis) = load(addr, round, kill_after, connected);
        killer.join().unwrap();
        assert!(
            !acked.is_empty(),
            "round {round}: some writes were acknowledged before the kill"
        );
        all_acked.extend(acked);
        acked_multis.extend(multis);
        all_multis.push((round, sent_multis));
    }
    let mut child = start(&dir, port);
    verify(addr, &all_acked, &acked_multis, &all_multis);
    child.kill();
    let snapshots = std::fs::read_dir(dir.join("snapshots")).unwrap().count();
    assert!(snapshots >= 1, "the rounds went through snapshots");
    assert!(
        dir.join("raft").join("purged").exists(),
        "and through purges of the log"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("log"));
    let _ = std::fs::remove_file(dir.with_extension("cfg"));
    eprintln!(
        "{rounds} kills, {} acknowledged creates and {} multis all present",
        all_acked.len(),
        acked_multis.len()
    );
}

/// Every acknowledged create and multi is there, and no multi sent is half applied.
fn verify(
    addr: SocketAddr,
    acked: &[String],
    acked_multis: &[usize],
    sent_multis: &[(usize, usize)],
) {
    let mut c = RawClient::connect(addr);
    for p in acked {
        assert_eq!(c.call(exists(p, false)).err, 0, "acknowledged {p} was lost");
    }
    for n in acked_multis {
        assert_eq!(
            c.call(exists(&format!("/m{n}-b"), false)).err,
            0,
            "acknowledged multi {n} lost"
        );
    }
    for &(round, sent) in sent_multis {
        for k in 0..sent {
            let n = round * 1_000_000 + k;
            let a = c.call(exists(&format!("/m{n}-a"), false)).err == 0;
            let b = c.call(exists(&format!("/m{n}-b"), false)).err == 0;
            assert_eq!(a, b, "multi {n} is half applied");
        }
    }
    assert_eq!(c.call(Request::CloseSession).err, 0);
}
