//! `corral`: the one binary. Subcommands: `server`, `bench`, `cli` (and `import`).

use clap::{Parser, Subcommand};
use corral_server::{Server, ServerConfig};
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc: the server makes and frees many small allocations per request (paths, entries,
/// replies), where glibc's allocator showed as a fifth of the profile; jemalloc is also safe to
/// use in the forked snapshot child (it takes its locks around fork).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "A ZooKeeper-compatible coordination service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter: a level (error, warn, info, debug, trace) or a RUST_LOG-style directive list
    /// such as `info,corral_replication=debug`. Without it, RUST_LOG decides (default: info).
    #[arg(long, global = true)]
    log_level: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a server (standalone, or an ensemble member when the config has server.N lines).
    /// Defaults: 127.0.0.1:2181, data under ./corral-data.
    Server(ServerArgs),
    /// Generates load against any ZooKeeper-protocol server and reports throughput and latency.
    Bench(BenchArgs),
    /// A shell with zkCli's commands: `corral cli -server host:port [cmd args...]`. Without a
    /// command it is interactive (or reads commands from a pipe); with one it runs it and exits
    /// non-zero if it failed.
    Cli(CliCommand),
    /// Draws docs/benchmarks.md's chart (SVG) from `bench/compare --out` results.
    BenchPlot {
        /// The JSON written by `bench/compare --out`.
        results: PathBuf,
        /// Where to write the SVG.
        #[arg(long)]
        svg: PathBuf,
    },
    /// Migrates an Apache ZooKeeper (3.4-3.9) data directory into a new Corral data directory:
    /// the newest valid snapshot plus the transaction logs after it, checksums verified.
    Import(ImportArgs),
}

#[derive(clap::Args)]
struct ImportArgs {
    /// ZooKeeper's dataDir (or its version-2 directory). ZooKeeper should be stopped.
    #[arg(long = "from-zookeeper", value_name = "DATADIR")]
    from_zookeeper: PathBuf,
    /// The Corral data directory to create; it must be empty or absent. Seed every member of an
    /// ensemble from the same ZooKeeper data.
    #[arg(long = "to", value_name = "CORRALDIR")]
    to: PathBuf,
    /// Keep ZooKeeper's sessions and their ephemeral nodes (they expire on Corral unless their
    /// clients resume them); by default they are dropped, as ZooKeeper's sessions cannot move.
    #[arg(long)]
    keep_sessions: bool,
}

#[derive(clap::Args)]
struct CliCommand {
    /// zkCli's arguments: `-server host:port`, `-timeout ms`, then the command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Servers to connect to, comma-separated host:port (connections spread over them).
    #[arg(long, default_value = "127.0.0.1:2181")]
    hosts: String,
    /// create, get, set, exists, delete, children, multi, mix (reads and writes), ephemeral
    /// (create-and-delete churn), sessions (connect-and-close storm) or watch (fan-out: every
    /// connection watches one znode, which is then changed).
    #[arg(long, default_value = "create")]
    workload: corral_bench::Workload,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many operations in all.
    #[arg(long)]
    ops: Option<u64>,
    /// Bytes of data per znode written.
    #[arg(long, default_value_t = 16)]
    value_size: usize,
    /// Znodes pre-created for the read and update workloads.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// For mix: the share of reads (0.9 is 90% getData, 10% setData).
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Target operations per second in all, for latency at a fixed load.
    #[arg(long)]
    rate: Option<f64>,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Local addresses to connect from, comma-separated (for `hold` with more sessions than one
    /// address has ports: 127.0.0.2,127.0.0.3,...).
    #[arg(long, value_delimiter = ',')]
    source_ips: Vec<std::net::IpAddr>,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// A ZooKeeper-style zoo.cfg.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Client port; overrides clientPort.
    #[arg(long)]
    port: Option<u16>,
    /// Data directory; overrides dataDir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on; overrides clientPortAddress.
    #[arg(long)]
    address: Option<std::net::IpAddr>,
    /// The super user's digest, `super:base64(sha1(super:password))`.
    #[arg(long)]
    super_digest: Option<String>,
    /// Port of the admin HTTP server (/commands, /metrics, /ready); overrides
    /// admin.serverPort. 0 turns it off.
    #[arg(long)]
    admin_port: Option<u16>,
    /// A JAAS file whose `Server` section lists the SASL users (as
    /// `-Djava.security.auth.login.config=FILE`).
    #[arg(long, value_name = "FILE")]
    jaas: Option<PathBuf>,
    /// A ZooKeeper system property, as a JVM flag gives it: `-Dreadonlymode.enabled=true`.
    /// Also read from SERVER_JVMFLAGS and JVMFLAGS. Repeatable.
    #[arg(short = 'D', value_name = "NAME=VALUE")]
    properties: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match &cli.log_level {
        Some(level) => match tracing_subscriber::EnvFilter::try_new(level) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("corral: bad --log-level {level:?}: {e}");
                return ExitCode::from(2);
            }
        },
        None => {
            // The shell's output is the user's: only errors are logged there unless asked.
            let default = if matches!(cli.command, Command::Cli(_)) {
                "error"
            } else {
                "info"
            };
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
        }
    };
    // Colour codes only where a person reads them: a log file or journald gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    match cli.command {
        Command::Server(args) => run_server(args),
        Command::Bench(args) => run_bench(args),
        Command::Import(args) => run_import(args),
        Command::BenchPlot { results, svg } => run_bench_plot(&results, &svg),
        Command::Cli(cmd) => match corral_cli::CliArgs::parse(&cmd.args) {
            Ok(args) => ExitCode::from(corral_cli::main(args) as u8),
            Err(e) => {
                eprintln!("corral cli: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn run_bench(args: BenchArgs) -> ExitCode {
    let hosts: Result<Vec<std::net::SocketAddr>, _> = args
        .hosts
        .split(',')
        .map(|h| std::net::ToSocketAddrs::to_socket_addrs(h.trim()).map(|mut a| a.next()))
        .map(|r| {
            r.ok()
                .flatten()
                .ok_or_else(|| format!("cannot resolve {:?}", args.hosts))
        })
        .collect();
    let hosts = match hosts {
        Ok(h) if !h.is_empty() => h,
        Ok(_) => {
            eprintln!("corral bench: no hosts given");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("corral bench: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = corral_bench::BenchConfig {
        hosts,
        workload: args.workload,
        connections: args.connections.max(1),
        window: args.window.max(1),
        duration: std::time::Duration::from_secs_f64(args.duration.max(0.1)),
        ops: args.ops,
        value_size: args.value_size,
        keys: args.keys,
        read_ratio: args.read_ratio.clamp(0.0, 1.0),
        rate: args.rate,
        source_ips: args.source_ips.clone(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let progress = |ops: u64, elapsed: std::time::Duration| {
        eprint!(
            "\r{ops} ops in {:.0} s ({:.0} ops/s)   ",
            elapsed.as_secs_f64(),
            ops as f64 / elapsed.as_secs_f64()
        );
    };
    match runtime.block_on(corral_bench::run(cfg, progress)) {
        Ok(report) => {
            eprintln!();
            if args.json {
                println!("{}", report.json());
            } else {
                println!(
                    "{}\n{}",
                    corral_bench::Report::table_header(),
                    report.table_row()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ncorral bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_bench_plot(results: &std::path::Path, svg: &std::path::Path) -> ExitCode {
    let parsed = std::fs::read_to_string(results)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()));
    let json: serde_json::Value = match parsed {
        Ok(v) => v,
        Err(e) => {
            eprintln!("corral bench-plot: {}: {e}", results.display());
            return ExitCode::FAILURE;
        }
    };
    let bars = corral_bench::plot::throughput_bars(&json);
    match corral_bench::plot::throughput_svg(&bars)
        .and_then(|doc| std::fs::write(svg, doc).map_err(|e| e.to_string()))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral bench-plot: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_import(args: ImportArgs) -> ExitCode {
    let opts = corral_zkimport::ImportOptions {
        keep_sessions: args.keep_sessions,
    };
    let imported = match corral_zkimport::import(&args.from_zookeeper, &opts) {
        Ok(i) => i,
        Err(e) => {
            eprintln!(
                "corral import: cannot read {}: {e}",
                args.from_zookeeper.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = corral_replication::seed_data_dir(&args.to, &imported.tree) {
        eprintln!("corral import: cannot write {}: {e}", args.to.display());
        return ExitCode::FAILURE;
    }
    let snapshot = imported
        .snapshot
        .as_ref()
        .map_or("none".to_owned(), |p| p.display().to_string());
    println!(
        "imported {} znodes (last zxid {:#x}) from snapshot {snapshot} (zxid {:#x}) and {} transactions in {} log file(s)",
        imported.tree.node_count(),
        imported.last_zxid,
        imported.snapshot_zxid,
        imported.txns_replayed,
        imported.logs_read.len(),
    );
    if imported.sessions_dropped > 0 {
        println!(
            "dropped {} session(s) and their {} ephemeral node(s) (--keep-sessions keeps them)",
            imported.sessions_dropped, imported.ephemerals_dropped
        );
    }
    println!(
        "start it with: corral server --data-dir {}",
        args.to.display()
    );
    ExitCode::SUCCESS
}

/// ZooKeeper's system properties as its operators pass them: `SERVER_JVMFLAGS` then `JVMFLAGS`
/// (zkServer.sh runs java with `$SERVER_JVMFLAGS $JVMFLAGS`, as `conf/java.env` sets them), then
/// `-D` flags, later ones winning as in Java.
fn system_properties(args: &ServerArgs) -> Vec<(String, String)> {
    let mut props = Vec::new();
    for var in ["SERVER_JVMFLAGS", "JVMFLAGS"] {
        if let Ok(flags) = std::env::var(var) {
            props.extend(corral_server::config::jvm_properties(&flags));
        }
    }
    for p in &args.properties {
        props.extend(corral_server::config::jvm_properties(&format!("-D{p}")));
    }
    if let Some(jaas) = &args.jaas {
        let key = "java.security.auth.login.config".to_owned();
        props.push((key, jaas.display().to_string()));
    }
    // The last value given for a property is the one Java keeps.
    let mut seen = std::collections::HashSet::new();
    let mut last: Vec<(String, String)> = props
        .into_iter()
        .rev()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect();
    last.reverse();
    last
}

fn load_config(args: &ServerArgs) -> Result<ServerConfig, corral_server::ConfigError> {
    let mut cfg = ServerConfig::load(args.config.as_deref(), &system_properties(args))?;
    if let Some(p) = args.port {
        cfg.client_port = p;
    }
    if let Some(d) = &args.data_dir {
        cfg.set_data_dir(d.clone())?;
    }
    if let Some(a) = args.address {
        cfg.client_address = a;
    }
    if let Some(s) = &args.super_digest {
        cfg.super_digest = Some(s.clone());
    }
    match args.admin_port {
        Some(0) => cfg.admin_addr = None,
        Some(port) => {
            let ip = cfg.admin_addr.map_or([0, 0, 0, 0].into(), |a| a.ip());
            cfg.admin_addr = Some(std::net::SocketAddr::new(ip, port));
        }
        None => {}
    }
    Ok(cfg)
}

/// MIT Kerberos finds its keytabs and configuration in the environment; Java takes them from the
/// JAAS file's `keyTab` and `-Djava.security.krb5.conf`. Set here, before any thread starts, and
/// only where the operator has not set them already.
fn kerberos_environment(cfg: &ServerConfig) -> Result<(), String> {
    use corral_server::auth::{LearnerLogin, ServerLogin};
    let auth = &cfg.auth;
    let set = |var: &str, value: &std::path::Path| {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, value);
        }
    };
    match auth.acceptor_keytabs().as_slice() {
        _ if std::env::var_os("KRB5_KTNAME").is_some() => {}
        [] => {}
        [keytab] => set("KRB5_KTNAME", keytab),
        several => {
            // In the data directory, which only the server's user reads.
            let merged = cfg.data_dir.join("acceptor.keytab");
            std::fs::create_dir_all(&cfg.data_dir)
                .map_err(|e| format!("dataDir {}: {e}", cfg.data_dir.display()))?;
            corral_server::auth::keytab::merge(several, &merged)?;
            tracing::info!(keytabs = ?several, merged = %merged.display(), "one acceptor keytab for clients and members");
            set("KRB5_KTNAME", &merged);
        }
    }
    let clients = match auth.sasl.as_deref() {
        Some(ServerLogin::Kerberos { principal, .. }) => Some(principal),
        _ => None,
    };
    let members = matches!(
        auth.quorum.server_login(),
        Some(ServerLogin::Kerberos { .. })
    );
    let learner = match auth.quorum.learner_login() {
        Some(LearnerLogin::Kerberos { principal, keytab }) => Some((principal, keytab)),
        _ => None,
    };
    if let Some((principal, keytab)) = learner {
        if let Some(keytab) = keytab {
            set("KRB5_CLIENT_KTNAME", keytab);
            // Tickets got with the keytab stay in the process, as Java's Krb5LoginModule keeps
            // them: no ticket cache on disk is written. Without a keytab the member logs in
            // from the ticket cache it is given (KRB5CCNAME, as Java's useTicketCache).
            std::env::set_var("KRB5CCNAME", "MEMORY:corral-quorum-learner");
        }
        tracing::info!(%principal, "members log in to each other by Kerberos (GSSAPI)");
    }
    if clients.is_some() || members || learner.is_some() {
        if let Some(conf) = &auth.krb5_conf {
            set("KRB5_CONFIG", conf);
        }
    }
    if let Some(principal) = clients {
        tracing::info!(%principal, "SASL logins by Kerberos (GSSAPI)");
    }
    Ok(())
}

fn run_server(args: ServerArgs) -> ExitCode {
    let cfg = match load_config(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("corral: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    for key in &cfg.ignored_keys {
        tracing::warn!(key = %key, "unknown configuration key ignored");
    }
    if let Err(why) = kerberos_environment(&cfg) {
        eprintln!("corral: {why}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("corral: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Registered before starting, so a SIGTERM during startup (systemd stop, a slow boot)
        // waits for the start to finish and then stops gracefully instead of killing us.
        let stop_signal = match StopSignal::register() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("corral: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let server = match Server::start(cfg).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("corral: {e}");
                return ExitCode::FAILURE;
            }
        };
        stop_signal.wait().await;
        tracing::info!("stopping");
        server.stop().await;
        ExitCode::SUCCESS
    })
}

/// SIGTERM or SIGINT, whichever comes first.
struct StopSignal {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn register() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignal {
            term: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}
