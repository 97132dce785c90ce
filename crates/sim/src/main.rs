//! `corral-sim`: runs seeds of the deterministic simulation (see `scripts/simulate.sh`).

mod client;
mod counter;
mod io;
mod nemesis;
mod reconfig;
mod run;
mod workload;

use clap::Parser;
use corral_io::broken::Broken;
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
    /// Members in the ensemble: 3 or 5.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Server logs on stderr (RUST_LOG syntax), for replaying a seed.
    #[arg(long)]
    log: Option<String>,
    /// A file of seeds known to stall (one per line, `#` comments): where such a seed's only
    /// failures are stalls, it is reported as a known stall and not counted as a failure.
    #[arg(long)]
    known_stalls: Option<std::path::PathBuf>,
    /// Plant a deliberately broken variant (ack-before-fsync, skip-serving-rule, apply-twice,
    /// drop-watch, and the fixed bugs purge-misread, refuse-pending, resume-leadership,
    /// unbounded-log-write; needs the `broken` feature) and run seeds until one catches it: succeeds when one does within --seeds,
    /// fails when none does.
    #[arg(long)]
    broken: Option<String>,
    /// With --broken: run every seed and count how many catch the variant.
    #[arg(long)]
    tally: bool,
    /// An operator removes one member at a time and adds it back (`reconfig`, joint consensus)
    /// while the workload and the faults go on.
    #[arg(long)]
    reconfig: bool,
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
        members: args.members,
        clients: args.clients,
        workload_ms: args.workload_ms,
        reconfig: args.reconfig,
    };
    FIRST_PANIC.with(|p| p.borrow_mut().take());
    match std::panic::catch_unwind(|| run::run(&opts)) {
        Ok(report) => report,
        Err(_) => {
            // The payload that reaches here may be turmoil's or tokio's wrapper ("a spawned task
            // panicked"): the first panic's own message says what went wrong.
            let why = FIRST_PANIC
                .with(|p| p.borrow_mut().take())
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

thread_local! {
    static FIRST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Keeps each seed's first panic (where and what) for its report, printing it only with --log.
fn catch_panic_messages(print: bool) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let what = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        FIRST_PANIC.with(|p| {
            p.borrow_mut()
                .get_or_insert_with(|| format!("{what} (at {at})"));
        });
        if print {
            default(info);
        }
    }));
}

fn main() -> ExitCode {
    let args = Args::parse();
    if ![3, 5].contains(&args.members) {
        eprintln!("--members takes 3 or 5, not {}", args.members);
        return ExitCode::FAILURE;
    }
    catch_panic_messages(args.log.is_some());
    if let Some(filter) = &args.log {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    if let Some(name) = &args.broken {
        return hunt_broken(&args, name);
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

/// Runs seeds with a planted bug until one catches it.
fn hunt_broken(args: &Args, name: &str) -> ExitCode {
    let Some(variant) = Broken::parse(name) else {
        let names: Vec<&str> = Broken::ALL.iter().map(|b| b.name()).collect();
        eprintln!("no broken variant {name}; there are: {}", names.join(", "));
        return ExitCode::FAILURE;
    };
    if let Err(e) = corral_io::broken::plant(Some(variant)) {
        eprintln!("cannot plant {name}: {e}");
        return ExitCode::FAILURE;
    }
    let started = std::time::Instant::now();
    let mut caught_by = Vec::new();
    for (n, seed) in (args.first_seed..args.first_seed + args.seeds).enumerate() {
        let report = run_seed(args, seed);
        // Stalls count too: some planted bugs are about progress.
        let Some(first) = report.failures.first() else {
            continue;
        };
        if caught_by.is_empty() {
            println!(
                "broken variant {variant}: caught by seed {seed}, the {} tried ({:.1} s): {}",
                ordinal(n + 1),
                started.elapsed().as_secs_f64(),
                first.lines().next().unwrap_or_default()
            );
        }
        caught_by.push(seed);
        if !args.tally {
            break;
        }
    }
    if args.tally {
        println!(
            "broken variant {variant}: caught by {} of {} seeds from {}",
            caught_by.len(),
            args.seeds,
            args.first_seed
        );
    }
    if caught_by.is_empty() {
        println!(
            "broken variant {variant}: NOT caught in {} seeds from {}",
            args.seeds, args.first_seed
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}
