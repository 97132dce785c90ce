//! A short run of `corral bench` against a `corral server` for every workload: it runs, reports,
//! and exits 0. No timing is asserted; speed is measured by the benchmark, not by tests.

use corral_testkit::{free_port, temp_data_dir, wait_listening, KillOnDrop};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn every_workload_runs_and_reports() {
    let dir = temp_data_dir();
    let port = free_port();
    let server = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["server", "--port", &port.to_string(), "--data-dir"])
        .arg(&dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = KillOnDrop(server);
    wait_listening(port, Duration::from_secs(20));
    let host = format!("127.0.0.1:{port}");
    let workloads = [
        "create",
        "get",
        "set",
        "exists",
        "delete",
        "children",
        "multi",
        "mix",
        "ephemeral",
        "sessions",
        "watch",
        "hold",
    ];
    for workload in workloads {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
        cmd.args([
            "bench",
            "--hosts",
            &host,
            "--workload",
            workload,
            "--keys",
            "50",
            "--json",
        ]);
        if workload == "watch" {
            // 20 watchers, rounds for half a second: at least 20 notifications.
            cmd.args(["--connections", "20", "--duration", "0.5"]);
        } else if workload == "hold" {
            // 400 sessions from eight local addresses (50 each: under the server's default
            // maxClientCnxns of 60 per address), held over one round of pings.
            cmd.args([
                "--connections",
                "400",
                "--duration",
                "6",
                "--source-ips",
                "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9",
            ]);
        } else {
            cmd.args(["--connections", "2", "--window", "20", "--ops", "400"]);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{workload}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.starts_with('{') && stdout.contains("\"p99_us\""),
            "{workload}: {stdout}"
        );
        let field = |name: &str| -> f64 {
            let at = stdout.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
            stdout[at..]
                .split([',', '}'])
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let least = if workload == "watch" { 20.0 } else { 400.0 };
        assert!(field("ops") >= least, "{workload}: {stdout}");
        assert_eq!(field("errors"), 0.0, "{workload}: {stdout}");
    }
    let table = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "bench",
            "--hosts",
            &host,
            "--ops",
            "200",
            "--workload",
            "get",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains("ops/s"));
    // At a fixed rate (paced on OS threads): it offers about rate x duration requests and
    // every one is answered; a count, not a timing.
    let paced = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "bench",
            "--hosts",
            &host,
            "--workload",
            "set",
            "--rate",
            "400",
            "--duration",
            "1",
            "--connections",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&paced.stdout);
    assert!(paced.status.success(), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let ops = report["ops"].as_f64().unwrap();
    assert!((380.0..=420.0).contains(&ops), "paced ops: {stdout}");
    assert_eq!(report["errors"].as_f64(), Some(0.0), "{stdout}");
    let refused = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["bench", "--hosts", "127.0.0.1:1", "--ops", "10"])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a server that is not there is an error"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
