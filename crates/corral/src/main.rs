//! `corral`: the one binary. Subcommands: `server` (more to come: cli, bench, import).

use clap::{Parser, Subcommand};
use corral_server::{Server, ServerConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "A ZooKeeper-compatible coordination service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a server (standalone). Defaults: 127.0.0.1:2181, data under ./corral-data.
    Server(ServerArgs),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Server(args) => run_server(args),
    }
}

fn load_config(args: &ServerArgs) -> Result<ServerConfig, corral_server::ConfigError> {
    let mut cfg = match &args.config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    if let Some(p) = args.port {
        cfg.client_port = p;
    }
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(a) = args.address {
        cfg.client_address = a;
    }
    if let Some(s) = &args.super_digest {
        cfg.super_digest = Some(s.clone());
    }
    Ok(cfg)
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("corral: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match Server::start(cfg).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("corral: {e}");
                return ExitCode::FAILURE;
            }
        };
        wait_for_signal().await;
        tracing::info!("stopping");
        server.stop().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
