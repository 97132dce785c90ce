//! The interactive loop (rustyline: line editing, history, completion) and the piped one.

use crate::shell::{Outcome, Shell, COMMANDS};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use std::io::BufRead;
use std::time::Duration;
use zookeeper_client as zk;

/// Completes command names, then znode paths by asking the server for children.
struct PathCompleter {
    client: Option<zk::Client>,
    runtime: tokio::runtime::Handle,
}

impl PathCompleter {
    fn children(&self, dir: &str) -> Vec<String> {
        let Some(client) = &self.client else {
            return Vec::new();
        };
        // The timer must be made inside the runtime.
        let ask =
            async { tokio::time::timeout(Duration::from_secs(2), client.list_children(dir)).await };
        match self.runtime.block_on(ask) {
            Ok(Ok(mut children)) => {
                children.sort();
                children
            }
            _ => Vec::new(),
        }
    }
}

impl Completer for PathCompleter {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        let pairs = if start == 0 {
            COMMANDS
                .iter()
                .filter(|c| c.starts_with(word))
                .map(|c| pair(format!("{c} ")))
                .collect()
        } else if word.starts_with('/') {
            let (dir, prefix) = word.rsplit_once('/').expect("starts with /");
            let dir_path = if dir.is_empty() { "/" } else { dir };
            self.children(dir_path)
                .into_iter()
                .filter(|c| c.starts_with(prefix))
                .map(|c| pair(format!("{dir}/{c}")))
                .collect()
        } else {
            Vec::new()
        };
        Ok((start, pairs))
    }
}

fn pair(s: String) -> Pair {
    Pair {
        display: s.clone(),
        replacement: s,
    }
}

impl Hinter for PathCompleter {
    type Hint = String;
}
impl Highlighter for PathCompleter {}
impl Validator for PathCompleter {}
impl Helper for PathCompleter {}

/// Prompts `[zk: host:port(CONNECTED) N] ` and runs each line until quit or end of input.
pub fn interactive(runtime: &tokio::runtime::Runtime, mut shell: Shell) -> i32 {
    let mut editor: Editor<PathCompleter, rustyline::history::DefaultHistory> = match Editor::new()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("corral cli: cannot start line editing: {e}");
            return piped(runtime, shell);
        }
    };
    println!("Connecting to {}", shell.server);
    println!("Welcome to ZooKeeper!");
    let mut failed = false;
    loop {
        editor.set_helper(Some(PathCompleter {
            client: shell.client().cloned(),
            runtime: runtime.handle().clone(),
        }));
        let prompt = format!(
            "[zk: {}({}) {}] ",
            shell.server,
            shell.state_text(),
            shell.commands_run()
        );
        match editor.readline(&prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                match runtime.block_on(shell.run_line(&line)) {
                    Outcome::Quit => break,
                    Outcome::Failed => failed = true,
                    Outcome::Ok => {}
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(_) => break,
        }
    }
    runtime.block_on(shell.close());
    i32::from(failed)
}

/// Commands from a pipe, one per line, as zkCli reads them without a terminal.
pub fn piped(runtime: &tokio::runtime::Runtime, mut shell: Shell) -> i32 {
    let mut failed = false;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match runtime.block_on(shell.run_line(&line)) {
            Outcome::Quit => break,
            Outcome::Failed => failed = true,
            Outcome::Ok => {}
        }
    }
    runtime.block_on(shell.close());
    i32::from(failed)
}
