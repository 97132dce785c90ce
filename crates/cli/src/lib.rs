//! # corral-cli
//!
//! `corral cli`: a shell with zkCli's commands, syntax and output, for Corral or any ZooKeeper.
//! Interactive with line editing, history and tab completion of paths (rustyline), or one
//! command from the command line for scripts (non-zero exit status when it fails), or commands
//! read from a pipe. The session is the `zookeeper-client` crate's.

pub mod format;
mod quota;
mod repl;
pub mod shell;

pub use shell::{Outcome, Shell, Sink, Stdio};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

/// What to run: zkCli's `-server host:port [-timeout ms] [cmd args...]`.
pub struct CliArgs {
    pub server: String,
    pub timeout: Duration,
    pub command: Vec<String>,
}

impl CliArgs {
    /// Parses zkCli-style arguments (single-dash options, then the command).
    pub fn parse(args: &[String]) -> Result<CliArgs, String> {
        let mut parsed = CliArgs {
            server: "localhost:2181".into(),
            timeout: Duration::from_secs(30),
            command: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "-server" | "--server" => {
                    parsed.server = it.next().ok_or("-server needs host:port")?.clone()
                }
                "-timeout" | "--timeout" => {
                    let ms = it.next().ok_or("-timeout needs milliseconds")?;
                    let ms: u64 = ms.parse().map_err(|_| format!("bad -timeout {ms:?}"))?;
                    parsed.timeout = Duration::from_millis(ms);
                }
                "-r" | "-client-configuration" => {
                    return Err(format!("{a} is not supported by corral cli"))
                }
                _ => {
                    parsed.command = std::iter::once(a.clone()).chain(it.cloned()).collect();
                    break;
                }
            }
        }
        Ok(parsed)
    }
}

/// Runs the shell; the process exit status (0 when every command succeeded).
pub fn main(args: CliArgs) -> i32 {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("corral cli: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let mut shell = Shell::new(&args.server, Arc::new(Stdio), args.timeout);
    if !args.command.is_empty() {
        return runtime.block_on(async {
            if let Err(e) = shell.connect(&args.server).await {
                eprintln!("{e}");
                return 1;
            }
            let outcome = shell.run_words(&args.command).await;
            shell.close().await;
            i32::from(outcome == Outcome::Failed)
        });
    }
    if let Err(e) = runtime.block_on(shell.connect(&args.server)) {
        eprintln!("{e}");
        return 1;
    }
    if std::io::stdin().is_terminal() {
        repl::interactive(&runtime, shell)
    } else {
        repl::piped(&runtime, shell)
    }
}
