//! The commands of zkCli, run against one session.
//!
//! Output goes where zkCli sends it: results to stdout, errors and "Created ..." to stderr, so
//! scripts written against zkCli read the same streams. Watch notifications arrive on their own
//! tasks and are printed as zkCli prints them.

use crate::format::{self, error_text, java_list, stat_lines};
use crate::quota;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use zookeeper_client as zk;

/// Where the shell prints; a test captures it, the binary prints it.
pub trait Sink: Send + Sync {
    fn out(&self, line: &str);
    fn err(&self, line: &str);
}

/// stdout and stderr.
pub struct Stdio;

impl Sink for Stdio {
    fn out(&self, line: &str) {
        println!("{line}");
    }
    fn err(&self, line: &str) {
        eprintln!("{line}");
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Quit,
}

/// Watches this shell set, by path, so `removewatches` can drop them.
type Watches = Arc<Mutex<HashMap<String, Vec<(WatchKind, oneshot::Sender<()>)>>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WatchKind {
    Data,
    Child,
    Persistent,
}

pub struct Shell {
    pub server: String,
    client: Option<zk::Client>,
    sink: Arc<dyn Sink>,
    history: Vec<String>,
    watches: Watches,
    print_watches: Arc<std::sync::atomic::AtomicBool>,
    session_timeout: Duration,
}

pub const USAGE: &[&str] = &[
    "ZooKeeper -server host:port -client-configuration properties-file cmd args",
    "\taddWatch [-m mode] path # optional mode is one of [PERSISTENT, PERSISTENT_RECURSIVE] - default is PERSISTENT_RECURSIVE",
    "\taddauth scheme auth",
    "\tclose ",
    "\tconfig [-c] [-w] [-s]",
    "\tconnect host:port",
    "\tcreate [-s] [-e] [-c] [-t ttl] path [data] [acl]",
    "\tdelete [-v version] path",
    "\tdeleteall path [-b batch size]",
    "\tdelquota [-n|-b|-N|-B] path",
    "\tget [-s] [-w] path",
    "\tgetAcl [-s] path",
    "\tgetAllChildrenNumber path",
    "\tgetEphemerals path",
    "\thistory ",
    "\tlistquota path",
    "\tls [-s] [-w] [-R] path",
    "\tprintwatches on|off",
    "\tquit ",
    "\treconfig [-s] [-v version] [[-file path] | [-members serverID=host:port1:port2;port3[,...]*]] | [-add serverId=host:port1:port2;port3[,...]]* [-remove serverId[,...]*]",
    "\tredo cmdno",
    "\tremovewatches path [-c|-d|-a] [-l]",
    "\tset [-s] [-v version] path data",
    "\tsetAcl [-s] [-v version] [-R] path acl",
    "\tsetquota -n|-b|-N|-B val path",
    "\tstat [-w] path",
    "\tsync path",
    "\tversion ",
    "\twhoami ",
];

/// The command names, for completion.
pub const COMMANDS: &[&str] = &[
    "addWatch",
    "addauth",
    "close",
    "config",
    "connect",
    "create",
    "delete",
    "deleteall",
    "delquota",
    "get",
    "getAcl",
    "getAllChildrenNumber",
    "getEphemerals",
    "history",
    "listquota",
    "ls",
    "printwatches",
    "quit",
    "reconfig",
    "redo",
    "removewatches",
    "set",
    "setAcl",
    "setquota",
    "stat",
    "sync",
    "version",
    "whoami",
];

/// A command line split into flags (with their values) and positional arguments.
pub struct Args {
    flags: HashMap<char, Option<String>>,
    pub positional: Vec<String>,
}

impl Args {
    /// `takes_value` lists the flags followed by a value (`-v 3`, `-t 100`).
    pub fn parse(words: &[String], takes_value: &str) -> Result<Args, String> {
        let mut flags = HashMap::new();
        let mut positional = Vec::new();
        let mut it = words.iter();
        while let Some(w) = it.next() {
            // `-x` with a letter is a flag; `-1` is a value (data, a version).
            let is_flag =
                w.len() == 2 && w.starts_with('-') && w.as_bytes()[1].is_ascii_alphabetic();
            if is_flag {
                let c = w.chars().nth(1).expect("two characters");
                let value = if takes_value.contains(c) {
                    Some(
                        it.next()
                            .ok_or(format!("option -{c} needs a value"))?
                            .clone(),
                    )
                } else {
                    None
                };
                flags.insert(c, value);
            } else {
                positional.push(w.clone());
            }
        }
        Ok(Args { flags, positional })
    }

    pub fn has(&self, c: char) -> bool {
        self.flags.contains_key(&c)
    }

    pub fn value(&self, c: char) -> Option<&str> {
        self.flags.get(&c).and_then(|v| v.as_deref())
    }
}

/// Splits a command line into words; double or single quotes group words (as zkCli does).
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

impl Shell {
    pub fn new(server: &str, sink: Arc<dyn Sink>, session_timeout: Duration) -> Shell {
        Shell {
            server: server.to_owned(),
            client: None,
            sink,
            history: Vec::new(),
            watches: Arc::default(),
            print_watches: Arc::new(true.into()),
            session_timeout,
        }
    }

    pub fn client(&self) -> Option<&zk::Client> {
        self.client.as_ref()
    }

    /// `CONNECTED`, `CLOSED` and so on, for the prompt.
    pub fn state_text(&self) -> &'static str {
        match self.client.as_ref().map(|c| c.state()) {
            None => "CLOSED",
            Some(zk::SessionState::SyncConnected) => "CONNECTED",
            Some(zk::SessionState::ConnectedReadOnly) => "CONNECTEDREADONLY",
            Some(zk::SessionState::Disconnected) => "CONNECTING",
            Some(zk::SessionState::Expired) => "EXPIRED",
            Some(zk::SessionState::AuthFailed) => "AUTH_FAILED",
            Some(zk::SessionState::Closed) => "CLOSED",
        }
    }

    pub fn commands_run(&self) -> usize {
        self.history.len()
    }

    fn out(&self, line: impl AsRef<str>) {
        self.sink.out(line.as_ref());
    }

    fn err(&self, line: impl AsRef<str>) {
        self.sink.err(line.as_ref());
    }

    /// Opens a session with the server (closing any previous one).
    pub async fn connect(&mut self, server: &str) -> Result<(), String> {
        self.close().await;
        self.server = server.to_owned();
        let client = zk::Client::connector()
            .with_session_timeout(self.session_timeout)
            .with_connection_timeout(Duration::from_secs(10))
            .connect(server)
            .await
            .map_err(|e| format!("cannot connect to {server}: {e}"))?;
        self.client = Some(client);
        Ok(())
    }

    pub async fn close(&mut self) {
        self.watches.lock().expect("watch table").clear();
        if let Some(client) = self.client.take() {
            drop(client);
            // Dropping the client closes its session; give it a moment to say so.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs one command line and remembers it in the history.
    pub async fn run_line(&mut self, line: &str) -> Outcome {
        let words = split_words(line);
        if words.is_empty() {
            return Outcome::Ok;
        }
        self.history.push(line.trim().to_owned());
        self.run_words(&words).await
    }

    pub async fn run_words(&mut self, words: &[String]) -> Outcome {
        let (cmd, rest) = words.split_first().expect("a command");
        let result = match cmd.as_str() {
            "quit" => return Outcome::Quit,
            "history" => {
                let start = self.history.len().saturating_sub(11);
                for (i, line) in self.history.iter().enumerate().skip(start) {
                    self.out(format!("{i} - {line}"));
                }
                Ok(())
            }
            "redo" => return self.redo(rest).await,
            "connect" => match rest.first() {
                Some(server) => self.connect(server).await,
                None => Err(usage_of("connect")),
            },
            "close" => {
                self.close().await;
                Ok(())
            }
            "printwatches" => {
                let on = rest.first().map(String::as_str) != Some("off");
                self.print_watches
                    .store(on, std::sync::atomic::Ordering::Relaxed);
                self.out(format!("printwatches is {}", if on { "on" } else { "off" }));
                Ok(())
            }
            "version" => {
                self.out(format!(
                    "ZooKeeper CLI version: corral {}",
                    env!("CARGO_PKG_VERSION")
                ));
                Ok(())
            }
            name if COMMANDS.contains(&name) => self.run_with_session(name, rest).await,
            _ => {
                for line in USAGE {
                    self.err(line);
                }
                Err(String::new())
            }
        };
        match result {
            Ok(()) => Outcome::Ok,
            Err(e) => {
                if !e.is_empty() {
                    self.err(e);
                }
                Outcome::Failed
            }
        }
    }

    async fn redo(&mut self, rest: &[String]) -> Outcome {
        let line = rest
            .first()
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| self.history.get(n).cloned());
        match line {
            Some(line) if !line.starts_with("redo") => Box::pin(self.run_line(&line)).await,
            _ => {
                self.err("Command index out of range");
                Outcome::Failed
            }
        }
    }

    async fn run_with_session(&mut self, name: &str, rest: &[String]) -> Result<(), String> {
        if self.client.is_none() {
            return Err("Not connected".into());
        }
        let c = self.client.clone().expect("checked above");
        match name {
            "ls" => self.ls(&c, rest).await,
            "get" => self.get(&c, rest).await,
            "set" => self.set(&c, rest).await,
            "create" => self.create(&c, rest).await,
            "delete" => self.delete(&c, rest).await,
            "deleteall" => self.delete_all(&c, rest).await,
            "stat" => self.stat(&c, rest).await,
            "getAcl" => self.get_acl(&c, rest).await,
            "setAcl" => self.set_acl(&c, rest).await,
            "addauth" => self.add_auth(&c, rest).await,
            "sync" => {
                let path = one_path(rest, "sync")?;
                c.sync(&path).await.map_err(|e| error_text(&e, &path))?;
                self.out("Sync is OK");
                Ok(())
            }
            "config" => self.config(&c, rest).await,
            "reconfig" => self.reconfig(&c, rest).await,
            "whoami" => {
                let users = c.list_auth_users().await.map_err(|e| e.to_string())?;
                self.out("Auth scheme: User");
                for u in users {
                    self.out(format!("{}: {}", u.scheme(), u.user()));
                }
                Ok(())
            }
            "getEphemerals" => {
                let path = rest.first().cloned().unwrap_or_else(|| "/".into());
                let mut list = c
                    .list_ephemerals(&path)
                    .await
                    .map_err(|e| error_text(&e, &path))?;
                list.sort();
                self.out(java_list(&list));
                Ok(())
            }
            "getAllChildrenNumber" => {
                let path = one_path(rest, "getAllChildrenNumber")?;
                let n = c
                    .count_descendants_number(&path)
                    .await
                    .map_err(|e| error_text(&e, &path))?;
                self.out(n.to_string());
                Ok(())
            }
            "addWatch" => self.add_watch(&c, rest).await,
            "removewatches" => self.remove_watches(rest),
            "setquota" => quota::set(&c, self.sink.as_ref(), rest).await,
            "listquota" => quota::list(&c, self.sink.as_ref(), rest).await,
            "delquota" => quota::delete(&c, self.sink.as_ref(), rest).await,
            _ => unreachable!("every command is handled"),
        }
    }

    async fn ls(&self, c: &zk::Client, rest: &[String]) -> Result<(), String> {
        let a = Args::parse(rest, "")?;
        let path = one_path(&a.positional, "ls")?;
        if a.has('R') {
            for p in subtree_bfs(c, &path).await? {
                self.out(p);
            }
            return Ok(());
        }
        let (mut children, stat) = if a.has('w') {
            let (children, stat, watcher) = c
                .get_and_watch_children(&path)
                .await
                .map_err(|e| error_text(&e, &path))?;
            self.spawn_oneshot(&path, WatchKind::Child, watcher);
            (children, stat)
        } else {
            c.get_children(&path)
                .await
                .map_err(|e| error_text(&e, &path))?
        };
        children.sort();
        self.out(java_list(&children));
        if a.has('s') {
            stat_lines(&stat).iter().for_each(|l| self.out(l));
        }
        Ok(())
    }

    async fn get(&self, c: &zk::Client, rest: &[String]) -> Result<(), String> {
        let a = Args::parse(rest, "")?;
        let path = one_path(&a.positional, "get")?;
        let (data, stat) = if a.has('w') {
            let (data, stat, watcher) = c
                .get_and_watch_data(&path)
                .await
                .map_err(|e| error_text(&e, &path))?;
            self.spawn_oneshot(&path, WatchKind::Data, watcher);
            (data, stat)
        } else {
            c.get_data(&path).await.map_err(|e| error_text(&e, &path))?
        };
        // (zkCli prints "null" for null data; the client library reports no data as empty.)
        self.out(String::from_utf8_lossy(&data));
        if a.has('s') {
            stat_lines(&stat).iter().for_each(|l| self.out(l));
        }
        Ok(())
    }

    async fn set(&self, c: &zk::Client, rest: &[String]) -> Result<(), String> {
        let a = Args::parse(rest, "v")?;
        let [path, data] = a.positional.as_slice() else {
            return Err(usage_of("set"));
        };
        let version = parse_version(a.value('v'))?;
        let stat = c
            .set_data(path, data.as_bytes(), version)
            .await
            .map_err(|e| error_text(&e, path))?;
        if a.has('s') {
            stat_lines(&stat).iter().for_each(|l| self.out(l));
        }
        Ok(())
    }

    async fn create(&self, c: &zk::Client, rest: &[String]) -> Result<(), String> {
        let a = Args::parse(rest, "t")?;
        let Some(path) = a.positional.first() else {
            return Err(usage_of("create"));
        };
        let data = a.positional.get(1).map_or(&[][..], |d| d.as_bytes());
        let acls = match a.positional.get(2) {
            Some(text) => format::parse_acls(text)?,
            None => zk::Acls::anyone_all().to_vec(),
        };
        let sequential = a.has('s');
        let mode = match (a.has('e'), a.has('c'), sequential) {
            (true, _, false) => zk::CreateMode::Ephemeral,
            (true, _, true) => zk::CreateMode::EphemeralSequential,
            (false, true, _) => zk::CreateMode::Container,
            (false, false, true) => zk::CreateMode::PersistentSequential,
            (false, false, false) => zk::CreateMode::Persistent,
        };
        let mut options = mode.with_acls(zk::Acls::new(&acls));
        if let Some(ttl) = a.value('t') {
            let ms: u64 = ttl
                .parse()
                .map_err(|_| format!("ttl {ttl:?} is not a number"))?;
            options = options.with_ttl(Duration::from_millis(ms));
        }
        let (_, seq) = c
            .create(path, data, &options)
            .await
            .map_err(|e| error_text(&e, path))?;
        let created = if sequential {
            format!("{path}{seq}")
        } else {
            path.clone()
        };
        self.err(format!("Created {created}"));
        Ok(())
    }

    async fn delete(&self, c: &zk::Client, rest: &[String]) -> Result<(), String> {
        let a = Args::parse(rest, "v")?;
        let path = one_path(&a.positional, "delete")?;
        let version = parse_version(a.value('v'))?;
        c.delete(&path, version)
            .await
            .map_err(|e| error_text(&e, &path))
    }

    async fn delete_all(&self, c: &zk::Client, rest: &[String]) -> Result<(), String> {
        let a = Args::parse(rest, "b")?;
        let path = one_path(&a.positional, "deleteall")?;
        let mut nodes = subtree_bfs(c, &path).await?;
        // Children before parents.
        nodes.reverse();
        for p in nodes {
            match c.delete(&p, None).await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(error_text(&e, &p)),
            }
        }
        Ok(())
    }

    async fn stat(&self, c: &zk::Client, rest: &[String]) -> Result<(), String> {
        let a = Args::parse(rest, "")?;
        let path = one_path(&a.positional, "stat")?;
        let stat = if a.has('w') {
            let (stat, watcher) = c
                .check_and_watch_stat(&path)
                .await
                .map_err(|e| error_text(&e, &path))?;
            self.spawn_oneshot(&path, WatchKind::Data, watcher);
            stat
        } else {
            c.check_stat(&path)
                .await
                .map_err(|e| error_text(&e, &path))?
        };
        let stat = stat.ok_or_else(|| format!("Node does not exist: {path}"))?;
        stat_lines(&stat).iter().for_each(|l| self.out(l));
        Ok(())
    }

    async fn get_acl(&self, c: &zk::Client, rest: &[String]) -> Result<(), String> {
        let a = Args::parse(rest, "")?;
        let path = one_path(&a.positional, "getAcl")?;
        let (acls, stat) = c.get_acl(&path).await.map_err(|e| error_text(&e, &path))?;
        format::acl_lines(&acls).iter().for_each(|l| self.out(l));
        if a.has('s') {
            stat_lines(&stat).iter().for_each(|l| self.out(l));
        }
        Ok(())
    }

    async fn set_acl(&self, c: &zk::Client, rest: &[String]) -> Result<(), String> {
        let a = Args::parse(rest, "v")?;
        let [path, acl_text] = a.positional.as_slice() else {
            return Err(usage_of("setAcl"));
        };
        let acls = format::parse_acls(acl_text)?;
        let version = parse_version(a.value('v'))?;
        let targets = if a.has('R') {
            subtree_bfs(c, path).await?
        } else {
            vec![path.clone()]
        };
        for p in targets {
            let stat = c
                .set_acl(&p, &acls, if p == *path { version } else { None })
                .await
                .map_err(|e| error_text(&e, &p))?;
            if a.has('s') && p == *path {
                stat_lines(&stat).iter().for_each(|l| self.out(l));
            }
        }
        Ok(())
    }

    async fn add_auth(&self, c: &zk::Client, rest: &[String]) -> Result<(), String> {
        let [scheme, auth] = rest else {
            return Err(usage_of("addauth"));
        };
        c.auth(scheme, auth.as_bytes())
            .await
            .map_err(|e| format!("authentication failed: {e}"))
    }

    /// zkCli's `reconfig`: incremental (`-add`, `-remove`) or a whole new membership
    /// (`-members`, or the `server.N` lines of `-file`); `-v` is the version (hex) it must
    /// replace.
    async fn reconfig(&self, c: &zk::Client, rest: &[String]) -> Result<(), String> {
        let r = ReconfigArgs::parse(rest)?;
        let members = match &r.file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {path}: {e}"))?
                    .lines()
                    .map(str::trim)
                    .filter(|l| l.starts_with("server."))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            None => r.members.clone(),
        };
        let split = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
        let (joining, leaving, ensemble) = match &members {
            Some(m) => (Vec::new(), Vec::new(), split(m)),
            None => (
                r.add.iter().flat_map(|a| split(a)).collect(),
                r.remove.iter().flat_map(|a| split(a)).collect(),
                Vec::new(),
            ),
        };
        let update = match &members {
            Some(_) => zk::EnsembleUpdate::New {
                ensemble: ensemble.iter().map(String::as_str),
            },
            None => zk::EnsembleUpdate::Incremental {
                joinings: joining.iter().map(String::as_str),
                leavings: leaving.iter().map(String::as_str),
            },
        };
        let (data, stat) = c
            .update_ensemble(update, r.version)
            .await
            .map_err(|e| reconfig_error(&e))?;
        self.out("Committed new configuration:");
        String::from_utf8_lossy(&data)
            .lines()
            .for_each(|l| self.out(l));
        if r.stat {
            stat_lines(&stat).iter().for_each(|l| self.out(l));
        }
        Ok(())
    }

    async fn config(&self, c: &zk::Client, rest: &[String]) -> Result<(), String> {
        let a = Args::parse(rest, "")?;
        let (data, stat) = if a.has('w') {
            let (data, stat, watcher) = c
                .get_and_watch_config()
                .await
                .map_err(|e| error_text(&e, "/zookeeper/config"))?;
            self.spawn_oneshot("/zookeeper/config", WatchKind::Data, watcher);
            (data, stat)
        } else {
            c.get_config()
                .await
                .map_err(|e| error_text(&e, "/zookeeper/config"))?
        };
        let text = String::from_utf8_lossy(&data);
        if a.has('c') {
            // Only the client addresses: what follows ';' on each server line.
            let hosts: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("server."))
                .filter_map(|l| l.split_once(';').map(|(_, c)| c))
                .collect();
            self.out(hosts.join(","));
        } else if !text.is_empty() {
            text.lines().for_each(|l| self.out(l));
        }
        if a.has('s') {
            stat_lines(&stat).iter().for_each(|l| self.out(l));
        }
        Ok(())
    }

    async fn add_watch(&self, c: &zk::Client, rest: &[String]) -> Result<(), String> {
        let a = Args::parse(rest, "m")?;
        let path = one_path(&a.positional, "addWatch")?;
        let mode = match a.value('m').unwrap_or("PERSISTENT_RECURSIVE") {
            "PERSISTENT" => zk::AddWatchMode::Persistent,
            "PERSISTENT_RECURSIVE" => zk::AddWatchMode::PersistentRecursive,
            other => {
                return Err(format!(
                    "unknown mode {other}: use PERSISTENT or PERSISTENT_RECURSIVE"
                ))
            }
        };
        let mut watcher = c
            .watch(&path, mode)
            .await
            .map_err(|e| error_text(&e, &path))?;
        let (cancel, mut cancelled) = oneshot::channel();
        self.remember(&path, WatchKind::Persistent, cancel);
        let sink = self.sink.clone();
        let print = self.print_watches.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = watcher.changed() => {
                        if event.session_state.is_terminated() {
                            return;
                        }
                        print_event(sink.as_ref(), &print, &event);
                    }
                    _ = &mut cancelled => return,
                }
            }
        });
        Ok(())
    }

    /// Drops this shell's watches on a path: `-c` child, `-d` data, `-a` (default) all.
    fn remove_watches(&self, rest: &[String]) -> Result<(), String> {
        let a = Args::parse(rest, "")?;
        let path = one_path(&a.positional, "removewatches")?;
        let wanted = |k: WatchKind| {
            if a.has('c') {
                k == WatchKind::Child
            } else if a.has('d') {
                k == WatchKind::Data
            } else {
                true
            }
        };
        let mut table = self.watches.lock().expect("watch table");
        let entries = table.remove(&path).unwrap_or_default();
        let (gone, kept): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| wanted(*k));
        if !kept.is_empty() {
            table.insert(path.clone(), kept);
        }
        drop(table);
        if gone.is_empty() {
            return Err(error_text(&zk::Error::NoWatcher, &path));
        }
        for (kind, cancel) in gone {
            let _ = cancel.send(());
            let name = match kind {
                WatchKind::Data => "DataWatchRemoved",
                WatchKind::Child => "ChildWatchRemoved",
                WatchKind::Persistent => "PersistentWatchRemoved",
            };
            format::watcher_lines("SyncConnected", name, &path)
                .iter()
                .for_each(|l| self.out(l));
        }
        Ok(())
    }

    fn remember(&self, path: &str, kind: WatchKind, cancel: oneshot::Sender<()>) {
        self.watches
            .lock()
            .expect("watch table")
            .entry(path.to_owned())
            .or_default()
            .push((kind, cancel));
    }

    /// Prints the watcher's event when it fires, unless `removewatches` drops it first.
    fn spawn_oneshot(&self, path: &str, kind: WatchKind, watcher: zk::OneshotWatcher) {
        let (cancel, cancelled) = oneshot::channel();
        self.remember(path, kind, cancel);
        let sink = self.sink.clone();
        let print = self.print_watches.clone();
        let watches = self.watches.clone();
        let path = path.to_owned();
        tokio::spawn(async move {
            tokio::select! {
                event = watcher.changed() => {
                    forget_fired(&watches, &path, kind);
                    if !event.session_state.is_terminated() {
                        print_event(sink.as_ref(), &print, &event);
                    }
                }
                _ = cancelled => {}
            }
        });
    }
}

fn print_event(sink: &dyn Sink, print: &std::sync::atomic::AtomicBool, event: &zk::WatchedEvent) {
    if print.load(std::sync::atomic::Ordering::Relaxed) {
        format::event_lines(event).iter().for_each(|l| sink.out(l));
    }
}

/// A fired one-shot watch is gone: drop its (closed) entry.
fn forget_fired(watches: &Watches, path: &str, kind: WatchKind) {
    let mut table = watches.lock().expect("watch table");
    if let Some(list) = table.get_mut(path) {
        if let Some(i) = list
            .iter()
            .position(|(k, cancel)| *k == kind && cancel.is_closed())
        {
            list.remove(i);
        }
        if list.is_empty() {
            table.remove(path);
        }
    }
}

/// The subtree at `path`, breadth first, `path` itself first (ZKUtil.listSubTreeBFS).
pub async fn subtree_bfs(c: &zk::Client, path: &str) -> Result<Vec<String>, String> {
    let mut out = vec![path.to_owned()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        let mut children = match c.list_children(&p).await {
            Ok(ch) => ch,
            Err(zk::Error::NoNode) if i > 0 => Vec::new(),
            Err(e) => return Err(error_text(&e, &p)),
        };
        children.sort();
        for child in children {
            out.push(if p == "/" {
                format!("/{child}")
            } else {
                format!("{p}/{child}")
            });
        }
        i += 1;
    }
    Ok(out)
}

fn one_path(args: &[String], cmd: &str) -> Result<String, String> {
    match args {
        [path] => Ok(path.clone()),
        _ => Err(usage_of(cmd)),
    }
}

fn parse_version(v: Option<&str>) -> Result<Option<i32>, String> {
    v.map(|v| {
        v.parse::<i32>()
            .map_err(|_| format!("version {v:?} is not a number"))
    })
    .transpose()
    .map(|v| v.filter(|v| *v != -1))
}

/// `reconfig`'s options, as zkCli takes them (multi-letter flags, lower-cased values).
#[derive(Debug, Default, PartialEq)]
struct ReconfigArgs {
    stat: bool,
    version: Option<i64>,
    add: Vec<String>,
    remove: Vec<String>,
    members: Option<String>,
    file: Option<String>,
}

impl ReconfigArgs {
    fn parse(args: &[String]) -> Result<ReconfigArgs, String> {
        let mut r = ReconfigArgs::default();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().cloned().ok_or_else(|| usage_of("reconfig"));
            match flag.as_str() {
                "-s" => r.stat = true,
                "-v" => {
                    let v = value()?;
                    let v = i64::from_str_radix(v.trim_start_matches("0x"), 16).map_err(|_| {
                        "-v must be followed by a long (configuration version)".to_owned()
                    })?;
                    r.version = Some(v);
                }
                "-add" => r.add.push(value()?.to_lowercase()),
                "-remove" => r.remove.push(value()?.to_lowercase()),
                "-members" => r.members = Some(value()?.to_lowercase()),
                "-file" => r.file = Some(value()?),
                _ => return Err(usage_of("reconfig")),
            }
        }
        let incremental = !r.add.is_empty() || !r.remove.is_empty();
        let whole = r.members.is_some() || r.file.is_some();
        if incremental && whole {
            return Err(
                "Can't use -file or -members together with -add or -remove (mixing \
                        incremental and non-incremental modes is not allowed)"
                    .into(),
            );
        }
        if !incremental && !whole {
            return Err(usage_of("reconfig"));
        }
        Ok(r)
    }
}

/// What zkCli says when a reconfig is refused (its `CliWrapperException`; the path is empty).
fn reconfig_error(e: &zk::Error) -> String {
    match e {
        zk::Error::BadArguments(_) => "Arguments are not valid : ".into(),
        zk::Error::ReconfigDisabled => "KeeperErrorCode = Reconfig is disabled".into(),
        zk::Error::UnexpectedErrorCode(-13) => "No quorum of new config is connected and \
            up-to-date with the leader of last commmitted config - try invoking reconfiguration \
            after new servers are connected and synced"
            .into(),
        zk::Error::UnexpectedErrorCode(-14) => {
            "Another reconfiguration is in progress -- concurrent reconfigs not supported (yet)"
                .into()
        }
        other => error_text(other, ""),
    }
}

pub fn usage_of(cmd: &str) -> String {
    USAGE
        .iter()
        .find(|l| l.trim_start().split(' ').next() == Some(cmd))
        .map_or_else(
            || format!("unknown command {cmd}"),
            |l| l.trim_start().to_owned(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        split_words(s)
    }

    #[test]
    fn words_split_on_spaces_and_keep_quotes_together() {
        assert_eq!(
            words("create /a 'hello world'"),
            ["create", "/a", "hello world"]
        );
        assert_eq!(words("  set  /a \"x y\" "), ["set", "/a", "x y"]);
        assert_eq!(words("set /a ''"), ["set", "/a", ""]);
    }

    #[test]
    fn flags_and_values() {
        let a = Args::parse(&words("-s -v 3 /a data"), "v").unwrap();
        assert!(a.has('s'));
        assert_eq!(a.value('v'), Some("3"));
        assert_eq!(a.positional, ["/a", "data"]);
        assert!(Args::parse(&words("-v"), "v").is_err());
        // A negative number after the path is data, not a flag.
        let a = Args::parse(&words("/a -1"), "v").unwrap();
        assert_eq!(a.positional, ["/a", "-1"]);
    }

    #[test]
    fn usage_lines_name_their_command() {
        assert_eq!(usage_of("set"), "set [-s] [-v version] path data");
        assert_eq!(usage_of("ls"), "ls [-s] [-w] [-R] path");
    }
}
