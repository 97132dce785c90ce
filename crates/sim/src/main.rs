//! `corral-sim`: runs seeds of the deterministic simulation (see `scripts/simulate.sh`).

mod client;
mod io;
mod nemesis;
mod run;
mod workload;

use clap::Parser;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "Deterministic simulation of a Corral ensemble under faults")]
struct Args {
    /// How many seeds to run, from --first-seed on.
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Run one seed, print its trace hash (and its trace with --trace).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    trace: bool,
    /// Simulated milliseconds of workload and faults per seed.
    #[arg(long, default_value_t = 8_000)]
    workload_ms: u64,
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Server logs on stderr (RUST_LOG syntax), for replaying a seed.
    #[arg(long)]
    log: Option<String>,
    /// A file of seeds known to stall (one per line, `#` comments): where such a seed's only
    /// failures are stalls, it is reported as a known stall and not counted as a failure.
    #[arg(long)]
    known_stalls: Option<std::path::PathBuf>,
}

/// A failure that is about progress, not safety: a member that never served again once the
/// faults stopped, or a run whose clients never finished.
fn is_stall(failure: &str) -> bool {
    failure.contains("never answered once faults stopped") || failure.contains("without completing")
}

fn read_known_stalls(path: &std::path::Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().unwrap_or_else(|_| panic!("not a seed: {l}")))
        .collect()
}

fn run_seed(args: &Args, seed: u64) -> run::Report {
    let opts = run::Options {
        seed,
        clients: args.clients,
        workload_ms: args.workload_ms,
    };
    match std::panic::catch_unwind(|| run::run(&opts)) {
        Ok(report) => report,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            run::Report {
                failures: vec![format!("panicked: {why}")],
                trace: Vec::new(),
                trace_hash: 0,
                summary: String::new(),
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(filter) = &args.log {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.first_seed..args.first_seed + args.seeds).collect(),
    };
    let known = args
        .known_stalls
        .as_deref()
        .map(read_known_stalls)
        .unwrap_or_default();
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    let mut stalled = Vec::new();
    for &seed in &seeds {
        let report = run_seed(&args, seed);
        if args.seed.is_some() {
            if args.trace {
                for line in &report.trace {
                    println!("{line}");
                }
            }
            println!("seed {seed}: trace hash {:016x}", report.trace_hash);
            println!("seed {seed}: {}", report.summary);
        }
        let known_stall = known.contains(&seed)
            && !report.failures.is_empty()
            && report.failures.iter().all(|f| is_stall(f));
        if known_stall {
            println!("seed {seed}: known stall: {}", report.failures.join("; "));
            stalled.push(seed);
        } else if !report.failures.is_empty() {
            for f in &report.failures {
                println!("seed {seed} FAILED: {f}");
            }
            println!("  replay: scripts/simulate.sh --seed {seed}");
            failed.push(seed);
        }
    }
    println!(
        "simulation: {} seeds, {} failures, {} known stalls ({:.1} s)",
        seeds.len(),
        failed.len(),
        stalled.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
