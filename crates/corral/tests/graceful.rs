//! SIGTERM while under a write load: the server answers what it took, exits cleanly, and after a
//! restart every acknowledged write is there.

use corral_proto::OpCode;
use corral_testkit::{
    create, exists, free_port, spawn_server, temp_data_dir, KillOnDrop, RawClient,
};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn start(dir: &std::path::Path, port: u16) -> KillOnDrop {
    spawn_server(env!("CARGO_BIN_EXE_corral"), dir, port, Stdio::null())
}

#[test]
fn sigterm_under_load_exits_cleanly_and_loses_nothing_acknowledged() {
    let dir = temp_data_dir();
    let port = free_port();
    let mut server = start(&dir, port);
    let pid = server.0.id();
    let (first_ack_tx, first_ack) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let mut c = RawClient::connect(format!("127.0.0.1:{port}").parse().unwrap());
        let mut acked = Vec::new();
        let mut next = 0;
        'load: loop {
            let batch: Vec<(i32, String)> = (0..50)
                .map(|k| {
                    next += 1;
                    (k + 1, format!("/g-{next}"))
                })
                .collect();
            for (xid, p) in &batch {
                c.send(*xid, &create(p, b"x", 0));
            }
            for (xid, p) in &batch {
                match c.read_reply(*xid, OpCode::Create) {
                    Ok(r) if r.err == 0 => {
                        acked.push(p.clone());
                        let _ = first_ack_tx.send(());
                    }
                    _ => break 'load,
                }
            }
        }
        acked
    });
    // The signal must land while writes are flowing, not while the server is still starting.
    first_ack
        .recv_timeout(Duration::from_secs(20))
        .expect("the server acknowledges writes");
    std::thread::sleep(Duration::from_millis(300));
    let term = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let stopped_at = Instant::now();
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(15),
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "a graceful stop exits with 0: {status:?}");
    let acked = writer.join().unwrap();
    assert!(!acked.is_empty());
    let _server = start(&dir, port);
    let mut c = RawClient::connect(format!("127.0.0.1:{port}").parse().unwrap());
    for p in &acked {
        assert_eq!(c.call(exists(p, false)).err, 0, "acknowledged {p} lost");
    }
    eprintln!(
        "{} writes acknowledged before SIGTERM, all present after restart",
        acked.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
