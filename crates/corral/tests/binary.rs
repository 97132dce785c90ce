//! The `corral` binary as an operator meets it: configuration errors, flags, start and stop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn corral() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corral"))
}

fn write_cfg(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("zoo.cfg");
    std::fs::write(&p, text).unwrap();
    p
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("corral-bin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn bad_value_stops_with_exit_code_2_naming_key_and_value() {
    let dir = temp_dir("bad");
    let cfg = write_cfg(&dir, "tickTime=2000\nclientPort=twenty\n");
    let out = corral()
        .args(["server", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("clientPort") && err.contains("twenty"),
        "{err}"
    );
}

#[test]
fn missing_config_file_and_bad_syntax_are_reported() {
    let out = corral()
        .args(["server", "--config", "/nonexistent/zoo.cfg"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/zoo.cfg"));
    let dir = temp_dir("syntax");
    let cfg = write_cfg(&dir, "tickTime 2000\n");
    let out = corral()
        .args(["server", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("key=value"));
}

#[test]
fn flags_override_the_file_and_sigterm_stops_cleanly() {
    let dir = temp_dir("run");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = write_cfg(
        &dir,
        "clientPort=1\nmysteryKey=5\n4lw.commands.whitelist=ruok\n",
    );
    let mut child = corral()
        .args(["server", "--config"])
        .arg(&cfg)
        .args(["--port", &port.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"ruok").unwrap();
            let mut a = String::new();
            s.read_to_string(&mut a).unwrap();
            break a;
        }
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(answer, "imok");
    unsafe_kill_term(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("mysteryKey"),
        "unknown keys are warned about: {err}"
    );
    // stderr is a pipe here, not a terminal: plain text, no colour codes.
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escape codes in a log that is not a terminal: {err:?}"
    );
}

fn unsafe_kill_term(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The binary on a data dir it must not serve: it exits non-zero at once, saying which file is
/// damaged or what is missing, and never starts listening.
#[test]
fn damaged_or_incomplete_data_stops_the_binary_with_the_reason() {
    use corral_testkit::{create, free_port, spawn_server_with, RawClient};
    let dir = temp_dir("damaged");
    let data = dir.join("data");
    let port = free_port();
    let mut server = spawn_server_with(
        env!("CARGO_BIN_EXE_corral"),
        &data,
        port,
        "logSegmentBytes=1024\nsnapCount=40\nautopurge.snapRetainCount=3\n",
        Stdio::null(),
    );
    let mut c = RawClient::connect(format!("127.0.0.1:{port}").parse().unwrap());
    // One write at a time: each its own entry, so the log spans many small segments and
    // snapshots (every 40 writes) let the oldest be purged.
    for i in 0..200 {
        assert_eq!(c.call(create(&format!("/d{i}"), b"v", 0)).err, 0);
    }
    drop(c);
    server.kill();
    let start = |data: &std::path::Path| {
        let out = corral()
            .args([
                "server",
                "--admin-port",
                "0",
                "--port",
                &port.to_string(),
                "--data-dir",
            ])
            .arg(data)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A flipped byte in a segment that is not the last one.
    let damaged = dir.join("damaged");
    copy_dir(&data, &damaged);
    let mut segs: Vec<_> = std::fs::read_dir(damaged.join("raft").join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    assert!(segs.len() > 2, "{segs:?}");
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[40] ^= 0x10;
    std::fs::write(&segs[0], bytes).unwrap();
    let (code, err) = start(&damaged);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("corrupt") && err.contains(&segs[0].display().to_string()),
        "{err}"
    );

    // Every snapshot deleted after the log was purged behind them.
    let gone = dir.join("gone");
    copy_dir(&data, &gone);
    std::fs::remove_dir_all(gone.join("snapshots")).unwrap();
    let (code, err) = start(&gone);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("no usable snapshot") && err.contains("refusing"),
        "{err}"
    );

    // The untouched copy still serves every write.
    let mut server =
        spawn_server_with(env!("CARGO_BIN_EXE_corral"), &data, port, "", Stdio::null());
    let mut c = RawClient::connect(format!("127.0.0.1:{port}").parse().unwrap());
    for i in 0..200 {
        assert_eq!(
            c.call(corral_testkit::exists(&format!("/d{i}"), false)).err,
            0
        );
    }
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
