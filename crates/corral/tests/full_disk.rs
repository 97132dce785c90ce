//! A full disk: the data directory sits on a small tmpfs and is written until it fills. Writes
//! must then be refused with a clear error while reads go on; after a restart with more room,
//! every acknowledged write is there and writes work again. Needs root (mount); as root it always
//! runs, which is how CI runs it.

use corral_proto::{ErrorCode, OpCode, Response};
use corral_testkit::{
    create, free_port, get_data, spawn_server, temp_data_dir, KillOnDrop, RawClient,
};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

fn mount(dir: &Path, size: &str, remount: bool) {
    let opts = if remount {
        format!("remount,size={size}")
    } else {
        format!("size={size}")
    };
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "mount {opts} failed");
}

struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

fn start(data: &Path, port: u16) -> KillOnDrop {
    spawn_server(env!("CARGO_BIN_EXE_corral"), data, port, Stdio::null())
}

#[test]
fn full_disk_refuses_writes_keeps_reads_and_loses_nothing() {
    if !is_root() {
        eprintln!("full-disk test skipped: it needs root to mount a small tmpfs");
        return;
    }
    let dir = temp_data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    mount(&dir, "3m", false);
    let _unmount = Unmount(&dir);
    let data = dir.join("data");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut server = start(&data, port);
    let mut c = RawClient::connect(addr);
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let payload = vec![7u8; 8 * 1024];
    let mut acked = Vec::new();
    let refusal = loop {
        let path = format!("/fill-{}", acked.len());
        c.send(1, &create(&path, &payload, 0));
        match c.read_reply(1, OpCode::Create) {
            Ok(r) if r.err == 0 => acked.push(path),
            Ok(r) => break Some(r.code()),
            Err(_) => break None,
        }
        assert!(acked.len() < 10_000, "a 3 MB disk never filled");
    };
    assert!(!acked.is_empty());
    assert_eq!(
        refusal,
        Some(ErrorCode::NotReadOnly),
        "a full disk is answered, not a hang or a crash"
    );
    // Reads go on.
    let r = c.call(get_data(&acked[0], false));
    assert!(matches!(r.body, Some(Response::GetData(_))), "{r:?}");
    server.kill();

    // More room, a restart: everything acknowledged is there, and writes work again.
    mount(&dir, "64m", true);
    let mut server = start(&data, port);
    let mut c = RawClient::connect(addr);
    for p in &acked {
        assert_eq!(
            c.call(corral_testkit::exists(p, false)).err,
            0,
            "acknowledged {p} lost"
        );
    }
    assert_eq!(c.call(create("/after-full", b"", 0)).err, 0);
    eprintln!(
        "{} writes acknowledged before the disk filled; all present after restart",
        acked.len()
    );
    server.kill();
}
