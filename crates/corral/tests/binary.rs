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
}

fn unsafe_kill_term(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
