//! Server settings, read from a ZooKeeper-style `zoo.cfg` (`key=value` lines, `#` comments).
//!
//! An existing ZooKeeper configuration should work unchanged: the keys Corral knows are read with
//! ZooKeeper's meaning and defaults, keys that only matter to ZooKeeper's JVM or to features
//! Corral does not have are warned about, and a value that cannot be used is an error naming the
//! key and the value, so the server refuses to start rather than run with a setting it ignored.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected key=value, found {text:?}")]
    Syntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("invalid value for {key}: {value:?} ({why})")]
    Value {
        key: String,
        value: String,
        why: String,
    },
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The disk, network and clocks the server runs on: the machine's, but in the simulation.
    pub io: corral_io::Io,
    pub tick_time_ms: u32,
    /// Ticks a member may go without quorum contact and still serve (`syncLimit`; the lease is
    /// also bounded by `minSessionTimeout`).
    pub sync_limit: u32,
    /// Ticks a lagging member may take to receive a snapshot from the leader (`initLimit`).
    pub init_limit: u32,
    pub client_port: u16,
    pub client_address: IpAddr,
    /// Whether the plaintext `clientPort` is served: not when only `secureClientPort` is
    /// given, as in ZooKeeper.
    pub plain_port: bool,
    pub data_dir: PathBuf,
    pub min_session_timeout_ms: u32,
    pub max_session_timeout_ms: u32,
    /// Connections allowed from one IP address; 0 means no limit.
    pub max_client_cnxns: usize,
    /// Four-letter words that are answered; `*` in the file allows all.
    pub four_letter_whitelist: Vec<String>,
    /// `jute.maxbuffer`: the largest frame accepted from a client.
    pub max_frame_len: usize,
    /// How long a new connection may go without sending its connect request (ZooKeeper's
    /// `zookeeper.nio.sessionlessCnxnTimeout`, 10 s).
    pub sessionless_timeout_ms: u64,
    pub extended_types: bool,
    /// `user:base64(sha1(user:password))` of the super user, if any.
    pub super_digest: Option<String>,
    /// How often containers and TTL nodes are checked for removal.
    pub container_check_interval_ms: u64,
    /// Entries applied between snapshots (ZooKeeper's `snapCount`).
    pub snap_count: u64,
    /// Snapshots kept on disk (ZooKeeper's `autopurge.snapRetainCount`, at least 1).
    pub snap_retain_count: usize,
    /// Bytes a transaction-log segment grows to before the next starts (`logSegmentBytes`).
    pub log_segment_bytes: u64,
    /// Ensemble members from `server.N` lines (in zoo.cfg or the `dynamicConfigFile`); empty
    /// for a standalone server. They seed a new ensemble: once its log holds a membership,
    /// reconfigurations change it there.
    pub servers: BTreeMap<u64, ServerLine>,
    /// ZooKeeper's `reconfigEnabled`: whether `reconfig` requests are taken.
    pub reconfig_enabled: bool,
    /// ZooKeeper's `standaloneEnabled`: with it, a reconfiguration must leave two voters.
    pub standalone_enabled: bool,
    /// ZooKeeper's `zookeeper.skipACL=yes`: no ACL is checked (reconfig included).
    pub skip_acl: bool,
    /// `dynamicConfigFile`, when the `server.N` lines come from there.
    pub dynamic_config_file: Option<PathBuf>,
    /// This member's id (`dataDir/myid`); 1 for a standalone server.
    pub my_id: u64,
    /// Where the admin HTTP server listens (`admin.serverAddress`, `admin.serverPort`); None
    /// when `admin.enableServer=false`.
    pub admin_addr: Option<SocketAddr>,
    /// Whether hard quotas refuse writes (`zookeeper.enforceQuota`); soft ones are only logged.
    pub enforce_quota: bool,
    /// ZooKeeper's read-only mode (`-Dreadonlymode.enabled=true`): a member that is not serving
    /// still takes sessions that ask for read-only access, answers their reads and refuses
    /// their writes.
    pub read_only_mode: bool,
    /// What one client, and all of them, may make the server hold (see `budget`).
    pub limits: crate::budget::Limits,
    /// The configuration file as read, for the admin `initial_configuration` command.
    pub initial_text: String,
    /// Keys that were in the file but mean nothing to Corral, for the start-up warning.
    pub ignored_keys: Vec<String>,
    /// SASL and required authentication (see `auth`).
    pub auth: Arc<crate::auth::AuthConfig>,
    /// TLS on the client port (see `tls`).
    pub tls: Arc<crate::tls::config::TlsConfig>,
    /// The web console and the admin port's HTTPS (see `console`).
    pub console: Arc<crate::console::config::ConsoleConfig>,
}

impl ServerConfig {
    /// The ACL schemes beyond `world`, `digest` and `ip` this server has providers for, as
    /// ZooKeeper registers them: `sasl` with `authProvider.N=...SASLAuthenticationProvider`,
    /// `x509` with a TLS client port (`secureClientPort` or `client.portUnification`).
    pub fn acl_providers(&self) -> corral_tree::acl::Providers {
        corral_tree::acl::Providers {
            sasl: self.auth.sasl_provider,
            x509: self.tls.enabled(),
        }
    }
}

/// One `server.N=host:peerPort:electionPort[:observer|:participant][;[clientHost:]clientPort]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLine {
    pub host: String,
    pub peer_port: u16,
    pub election_port: u16,
    pub observer: bool,
    /// The client address if the line names one (`;clientPort` or `;host:clientPort`).
    pub client: Option<(String, u16)>,
}

impl ServerLine {
    pub fn parse(key: &str, value: &str) -> Result<ServerLine, ConfigError> {
        let (members, client) = match value.split_once(';') {
            Some((m, c)) => (m.trim(), Some(c.trim())),
            None => (value.trim(), None),
        };
        let parts: Vec<&str> = members.split(':').collect();
        let port = |s: &str| -> Result<u16, ConfigError> {
            s.parse()
                .map_err(|_| bad(key, value, &format!("{s:?} is not a port")))
        };
        if parts.len() < 3 || parts.len() > 4 || parts[0].is_empty() {
            return Err(bad(
                key,
                value,
                "expected host:peerPort:electionPort[:observer]",
            ));
        }
        let observer = match parts.get(3).copied() {
            None | Some("participant") => false,
            Some("observer") => true,
            Some(other) => return Err(bad(key, value, &format!("unknown role {other:?}"))),
        };
        let client = match client {
            None | Some("") => None,
            Some(c) => Some(match c.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), port(p)?),
                // As ZooKeeper: a client port alone listens on every address.
                None => ("0.0.0.0".to_owned(), port(c)?),
            }),
        };
        Ok(ServerLine {
            host: parts[0].to_owned(),
            peer_port: port(parts[1])?,
            election_port: port(parts[2])?,
            observer,
            client,
        })
    }
}

/// The shortest lease an ensemble member may serve on, in ms.
const MIN_LEASE_MS: u64 = 200;

/// Four-letter words ZooKeeper answers when the whitelist allows everything.
pub const ALL_FOUR_LETTER_WORDS: &[&str] = &[
    "conf", "cons", "crst", "dump", "envi", "ruok", "srst", "srvr", "stat", "wchs", "wchc", "wchp",
    "dirs", "mntr", "isro",
];

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            io: corral_io::Io::real(),
            tick_time_ms: 2000,
            // ZooKeeper's sample zoo.cfg.
            sync_limit: 5,
            init_limit: 10,
            client_port: 2181,
            client_address: IpAddr::from([127, 0, 0, 1]),
            plain_port: true,
            data_dir: PathBuf::from("./corral-data"),
            min_session_timeout_ms: 4000,
            max_session_timeout_ms: 40000,
            max_client_cnxns: 60,
            four_letter_whitelist: vec!["srvr".into()],
            max_frame_len: corral_proto::frame::DEFAULT_MAX_FRAME_LEN,
            sessionless_timeout_ms: 10_000,
            extended_types: false,
            super_digest: None,
            container_check_interval_ms: 60_000,
            snap_count: 100_000,
            snap_retain_count: 3,
            log_segment_bytes: 64 << 20,
            servers: BTreeMap::new(),
            reconfig_enabled: false,
            standalone_enabled: true,
            skip_acl: false,
            dynamic_config_file: None,
            my_id: 1,
            admin_addr: Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
            enforce_quota: false,
            read_only_mode: false,
            limits: crate::budget::Limits::default(),
            initial_text: String::new(),
            ignored_keys: Vec::new(),
            auth: Arc::default(),
            tls: Arc::default(),
            console: Arc::default(),
        }
    }
}

/// Keys ZooKeeper knows that Corral accepts without acting on them (yet).
const KNOWN_BUT_UNUSED: &[&str] = &[
    "dataLogDir",
    // Corral's read-only sessions are always local; it has no other local sessions.
    "localSessionsEnabled",
    "localSessionsUpgradingEnabled",
    "autopurge.purgeInterval",
    "preAllocSize",
    "metricsProvider.className",
];

/// The JVM system properties (`-Dname=value`) Corral reads, as ZooKeeper's operators pass them
/// in `SERVER_JVMFLAGS` or `JVMFLAGS`. Each is read as the zoo.cfg key of the same name.
pub const KNOWN_PROPERTIES: &[&str] = &[
    "readonlymode.enabled",
    "zookeeper.extendedTypesEnabled",
    "znode.container.checkIntervalMs",
    "zookeeper.DigestAuthenticationProvider.superDigest",
    "jute.maxbuffer",
    "zookeeper.jute.maxbuffer",
    "zookeeper.nio.sessionlessCnxnTimeout",
    "zookeeper.enforceQuota",
    "zookeeper.admin.enableServer",
    "zookeeper.admin.serverPort",
    "zookeeper.admin.serverAddress",
    "zookeeper.4lw.commands.whitelist",
    "zookeeper.globalOutstandingLimit",
    "zookeeper.request_throttle_max_requests",
    "zookeeper.request_throttle_stall_time",
    "zookeeper.request_throttle_drop_stale",
    "zookeeper.skipACL",
    "zookeeper.reconfigEnabled",
    "zookeeper.standaloneEnabled",
];

/// Whether Corral reads this JVM system property.
pub fn is_known_property(key: &str) -> bool {
    KNOWN_PROPERTIES.contains(&key)
        || crate::auth::is_auth_key(key)
        || crate::tls::config::is_tls_key(key)
        || crate::console::config::is_console_key(key)
}

/// One name for each setting that has several (`zookeeper.jute.maxbuffer`, `jute.maxbuffer`).
fn canonical_key(key: &str) -> &str {
    match key.strip_prefix("zookeeper.").unwrap_or(key) {
        "superDigest" => "DigestAuthenticationProvider.superDigest",
        k => k,
    }
}

/// The `-Dname=value` properties in JVM flags as a start-up script passes them (the value of
/// `SERVER_JVMFLAGS`, say), split on whitespace and with quotes around a value removed. Other
/// flags (`-Xmx1g`, `-XX:...`) are skipped.
pub fn jvm_properties(flags: &str) -> Vec<(String, String)> {
    flags
        .split_whitespace()
        .filter_map(|f| f.strip_prefix("-D"))
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (
                k.to_owned(),
                v.trim_matches(|c| c == '"' || c == '\'').to_owned(),
            ),
            // `-Dflag` alone is the property set to "" in Java; as a boolean it means nothing.
            None => (p.to_owned(), String::new()),
        })
        .collect()
}

impl ServerConfig {
    /// Reads a zoo.cfg file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::load(Some(path), &[])
    }

    /// Builds the configuration from an optional zoo.cfg and JVM system properties. A property
    /// Corral knows counts as the zoo.cfg line of the same name; a key the file sets as well
    /// keeps the file's value, as ZooKeeper's copy of zoo.cfg keys into system properties does.
    /// Properties Corral does not know are ignored: JVM flags carry many.
    pub fn load(path: Option<&Path>, properties: &[(String, String)]) -> Result<Self, ConfigError> {
        let (mut pairs, text) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let mut pairs = Self::parse_lines(path, &text)?;
                if let Some(dynamic) = pairs.get("dynamicConfigFile").cloned() {
                    Self::read_dynamic(Path::new(&dynamic), &mut pairs)?;
                }
                (pairs, text)
            }
            None => (BTreeMap::new(), String::new()),
        };
        // A setting zoo.cfg gives under any of its names keeps zoo.cfg's value.
        let in_file: std::collections::HashSet<String> =
            pairs.keys().map(|k| canonical_key(k).to_owned()).collect();
        for (key, value) in properties {
            if is_known_property(key) && !in_file.contains(canonical_key(key)) {
                pairs.insert(key.clone(), value.clone());
            }
        }
        let mut cfg = Self::from_pairs(&pairs)?;
        cfg.initial_text = text;
        Ok(cfg)
    }

    /// ZooKeeper 3.5's dynamic configuration file: the `server.N` lines (and a `version=`
    /// line, which the replicated log's membership supersedes). zoo.cfg may not give server
    /// lines as well.
    fn read_dynamic(path: &Path, pairs: &mut BTreeMap<String, String>) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        if let Some(key) = pairs.keys().find(|k| k.starts_with("server.")) {
            return Err(bad(
                key,
                &pairs[key],
                "server lines belong in the dynamicConfigFile when zoo.cfg names one",
            ));
        }
        for (key, value) in Self::parse_lines(path, &text)? {
            match key.as_str() {
                k if k.starts_with("server.") => {
                    pairs.insert(key, value);
                }
                "version" => {}
                _ => {
                    return Err(bad(
                        &key,
                        &value,
                        &format!("not a dynamic configuration key (in {})", path.display()),
                    ))
                }
            }
        }
        Ok(())
    }

    fn parse_lines(path: &Path, text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut pairs = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(ConfigError::Syntax {
                    path: path.to_owned(),
                    line: i + 1,
                    text: raw.to_owned(),
                });
            };
            pairs.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        Ok(pairs)
    }

    /// Builds a configuration from key/value pairs, over ZooKeeper's defaults.
    pub fn from_pairs(pairs: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut c = ServerConfig::default();
        let mut min_timeout = None;
        let mut max_timeout = None;
        let mut admin_enabled = true;
        let mut admin_ip = IpAddr::from([0, 0, 0, 0]);
        let mut admin_port = 8080;
        let mut throttle_max = None;
        let mut auth = crate::auth::AuthConfig::default();
        let mut tls = crate::tls::config::TlsConfig::default();
        let mut console = crate::console::config::ConsoleConfig::default();
        for (key, value) in pairs {
            match key.as_str() {
                "tickTime" => c.tick_time_ms = parse_positive(key, value)?,
                "syncLimit" => c.sync_limit = parse_positive(key, value)?,
                "initLimit" => c.init_limit = parse_positive(key, value)?,
                "clientPort" => c.client_port = parse(key, value)?,
                "clientPortAddress" => c.client_address = parse(key, value)?,
                "dataDir" => c.data_dir = PathBuf::from(value),
                "minSessionTimeout" => min_timeout = Some(parse_timeout(key, value)?),
                "maxSessionTimeout" => max_timeout = Some(parse_timeout(key, value)?),
                "maxClientCnxns" => c.max_client_cnxns = parse(key, value)?,
                "4lw.commands.whitelist" | "zookeeper.4lw.commands.whitelist" => {
                    c.four_letter_whitelist = parse_whitelist(key, value)?
                }
                "nio.sessionlessCnxnTimeout" | "zookeeper.nio.sessionlessCnxnTimeout" => {
                    c.sessionless_timeout_ms = parse_positive(key, value)?
                }
                "jute.maxbuffer" | "zookeeper.jute.maxbuffer" => {
                    c.max_frame_len = parse_positive::<usize>(key, value)?
                }
                "extendedTypesEnabled" | "zookeeper.extendedTypesEnabled" => {
                    c.extended_types = parse_bool(key, value)?
                }
                "superDigest"
                | "DigestAuthenticationProvider.superDigest"
                | "zookeeper.DigestAuthenticationProvider.superDigest" => {
                    if value.split(':').count() != 2 {
                        return Err(bad(key, value, "expected user:base64-digest"));
                    }
                    c.super_digest = Some(value.clone());
                }
                "admin.enableServer" | "zookeeper.admin.enableServer" => {
                    admin_enabled = parse_bool(key, value)?
                }
                "admin.serverPort" | "zookeeper.admin.serverPort" => {
                    admin_port = parse(key, value)?
                }
                "admin.serverAddress" | "zookeeper.admin.serverAddress" => {
                    admin_ip = parse(key, value)?
                }
                "enforceQuota" | "zookeeper.enforceQuota" => {
                    c.enforce_quota = parse_bool(key, value)?
                }
                "readonlymode.enabled" => c.read_only_mode = parse_bool(key, value)?,
                "globalOutstandingLimit" | "zookeeper.globalOutstandingLimit" => {
                    c.limits.global_outstanding = parse_positive(key, value)?
                }
                // ZooKeeper's request throttler (3.6+): 0 turns it off, anything else caps the
                // requests in flight over all connections, as the global limit does.
                "zookeeper.request_throttle_max_requests" => {
                    throttle_max = Some(parse::<usize>(key, value)?)
                }
                "zookeeper.request_throttle_stall_time"
                | "zookeeper.request_throttle_drop_stale" => {}
                "corral.maxOutstandingRequests" => {
                    c.limits.max_outstanding = parse_positive(key, value)?
                }
                "corral.maxOutstandingRequestBytes" => {
                    c.limits.max_request_bytes = parse_positive(key, value)?
                }
                "corral.maxQueuedReplyBytes" => {
                    c.limits.max_reply_bytes = parse_positive(key, value)?
                }
                "corral.maxPendingProposalBytes" => {
                    c.limits.max_pending_proposal_bytes = parse_positive(key, value)?
                }
                "corral.slowClientGraceMs" => {
                    c.limits.stall_grace =
                        std::time::Duration::from_millis(parse_positive(key, value)?)
                }
                "reconfigEnabled" | "zookeeper.reconfigEnabled" => {
                    c.reconfig_enabled = parse_bool(key, value)?
                }
                "standaloneEnabled" | "zookeeper.standaloneEnabled" => {
                    c.standalone_enabled = parse_bool(key, value)?
                }
                // ZooKeeper skips ACLs only for "yes".
                "skipACL" | "zookeeper.skipACL" => c.skip_acl = value == "yes",
                "dynamicConfigFile" => c.dynamic_config_file = Some(PathBuf::from(value)),
                "snapCount" => c.snap_count = parse_positive(key, value)?,
                "logSegmentBytes" => c.log_segment_bytes = parse_positive(key, value)?,
                "autopurge.snapRetainCount" => c.snap_retain_count = parse_positive(key, value)?,
                "znode.container.checkIntervalMs" => {
                    c.container_check_interval_ms = parse_positive(key, value)?
                }
                k if k.starts_with("server.") => {
                    let id: u64 = k["server.".len()..]
                        .parse()
                        .map_err(|_| bad(key, value, "server.N needs a numeric N"))?;
                    c.servers.insert(id, ServerLine::parse(key, value)?);
                }
                k if crate::auth::is_auth_key(k) => auth.set(key, value)?,
                k if crate::tls::config::is_tls_key(k) => tls.set(key, value)?,
                k if crate::console::config::is_console_key(k) => console.set(key, value)?,
                k if KNOWN_BUT_UNUSED.contains(&k) => {}
                other => c.ignored_keys.push(other.to_owned()),
            }
        }
        tls.finish()?;
        let x509 = tls.enabled() && tls.client.client_auth != crate::tls::config::ClientAuth::None;
        auth.finish(x509)?;
        console.finish(
            c.super_digest.as_deref(),
            tls.quorum.key_store.location.is_some(),
        )?;
        c.auth = Arc::new(auth);
        c.tls = Arc::new(tls);
        c.console = Arc::new(console);
        c.admin_addr = admin_enabled.then_some(SocketAddr::new(admin_ip, admin_port));
        if let Some(max) = throttle_max.filter(|m| *m > 0) {
            c.limits.global_outstanding = c.limits.global_outstanding.min(max);
        }
        // ZooKeeper: the bounds default to 2 and 20 ticks, and -1 means the default.
        c.min_session_timeout_ms = min_timeout.flatten().unwrap_or(2 * c.tick_time_ms);
        c.max_session_timeout_ms = max_timeout.flatten().unwrap_or(20 * c.tick_time_ms);
        if let Some(id) = c.servers.keys().find(|id| !(1..=254).contains(*id)) {
            // The id is the top byte of session ids, and 255 marks TTL nodes' owners.
            return Err(bad(
                &format!("server.{id}"),
                &id.to_string(),
                "server ids run from 1 to 254",
            ));
        }
        c.read_my_id()?;
        if !pairs.contains_key("clientPort") {
            c.client_from_own_server_line()?;
            let own_line_has_client = c.servers.get(&c.my_id).is_some_and(|l| l.client.is_some());
            c.plain_port = c.tls.secure_port.is_none() || own_line_has_client;
        }
        // A member's lease (see ARCHITECTURE.md, "The serving rule") must outlast a few of the
        // rounds that renew it (every 100 ms at most), or members stop serving at every hiccup.
        let lease_ms = (u64::from(c.tick_time_ms) * u64::from(c.sync_limit))
            .min(u64::from(c.min_session_timeout_ms));
        if !c.servers.is_empty() && lease_ms < MIN_LEASE_MS {
            return Err(bad(
                "minSessionTimeout",
                &c.min_session_timeout_ms.to_string(),
                &format!(
                    "an ensemble needs syncLimit × tickTime and minSessionTimeout of at least \
                     {MIN_LEASE_MS} ms each: they bound how long a member serves without hearing \
                     from its quorum"
                ),
            ));
        }
        if c.min_session_timeout_ms > c.max_session_timeout_ms {
            return Err(bad(
                "minSessionTimeout",
                &c.min_session_timeout_ms.to_string(),
                "must not be larger than maxSessionTimeout",
            ));
        }
        Ok(c)
    }

    /// Moves the data directory (`--data-dir` over the file's `dataDir`); an ensemble member
    /// then reads its `myid` from the new one.
    pub fn set_data_dir(&mut self, dir: PathBuf) -> Result<(), ConfigError> {
        self.data_dir = dir;
        self.read_my_id()
    }

    /// Without `clientPort`, a member listens where its own `server.N` line's client part says
    /// (ZooKeeper 3.5's layout, the client address in the dynamic configuration).
    fn client_from_own_server_line(&mut self) -> Result<(), ConfigError> {
        let Some((host, port)) = self.servers.get(&self.my_id).and_then(|l| l.client.clone())
        else {
            return Ok(());
        };
        self.client_port = port;
        self.client_address = host.parse().map_err(|_| {
            bad(
                &format!("server.{}", self.my_id),
                &host,
                "the client address must be an IP address",
            )
        })?;
        Ok(())
    }

    /// An ensemble member's id from `dataDir/myid`, which a `server.N` line must name.
    fn read_my_id(&mut self) -> Result<(), ConfigError> {
        if self.servers.is_empty() {
            return Ok(());
        }
        self.my_id = read_my_id(&self.data_dir)?;
        if !self.servers.contains_key(&self.my_id) {
            return Err(bad(
                "myid",
                &self.my_id.to_string(),
                "no server.N line has this id",
            ));
        }
        Ok(())
    }

    /// Clamps a requested session timeout to [minSessionTimeout, maxSessionTimeout].
    pub fn negotiate_timeout(&self, requested_ms: i32) -> i32 {
        (requested_ms.max(0) as u32).clamp(self.min_session_timeout_ms, self.max_session_timeout_ms)
            as i32
    }

    pub fn four_letter_allowed(&self, word: &str) -> bool {
        self.four_letter_whitelist.iter().any(|w| w == word)
    }
}

/// ZooKeeper's `dataDir/myid`: this member's id, a number on one line.
fn read_my_id(data_dir: &Path) -> Result<u64, ConfigError> {
    let path = data_dir.join("myid");
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    text.trim().parse().map_err(|_| {
        bad(
            "myid",
            text.trim(),
            &format!("{} must hold a number", path.display()),
        )
    })
}

pub(crate) fn bad(key: &str, value: &str, why: &str) -> ConfigError {
    ConfigError::Value {
        key: key.to_owned(),
        value: value.to_owned(),
        why: why.to_owned(),
    }
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e: T::Err| bad(key, value, &e.to_string()))
}

fn parse_positive<T: std::str::FromStr + PartialOrd + Default>(
    key: &str,
    value: &str,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let v: T = parse(key, value)?;
    if v <= T::default() {
        return Err(bad(key, value, "must be positive"));
    }
    Ok(v)
}

fn parse_timeout(key: &str, value: &str) -> Result<Option<u32>, ConfigError> {
    match value.parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(v) if v > 0 && v <= u32::MAX as i64 => Ok(Some(v as u32)),
        _ => Err(bad(
            key,
            value,
            "expected milliseconds > 0, or -1 for the default",
        )),
    }
}

pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" => Ok(true),
        "false" | "no" => Ok(false),
        _ => Err(bad(key, value, "expected true or false")),
    }
}

fn parse_whitelist(key: &str, value: &str) -> Result<Vec<String>, ConfigError> {
    let mut words = Vec::new();
    for w in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if w == "*" {
            return Ok(ALL_FOUR_LETTER_WORDS
                .iter()
                .map(|s| s.to_string())
                .collect());
        }
        if ALL_FOUR_LETTER_WORDS.contains(&w) {
            words.push(w.to_owned());
        } else {
            // ZooKeeper takes any word here; a list written for it (with `gtmk`, `stmk` or
            // `hash`, which Corral does not answer) must not stop the server.
            tracing::warn!(
                key,
                word = w,
                "not a four-letter word Corral answers; ignored"
            );
        }
    }
    // ZooKeeper always answers srvr.
    if !words.iter().any(|w| w == "srvr") {
        words.push("srvr".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_secure_port_alone_serves_no_plaintext_port() {
        let secure = [
            ("secureClientPort", "2281"),
            ("ssl.keyStore.location", "/etc/zk/server.pem"),
            ("ssl.clientAuth", "none"),
        ];
        let c = ServerConfig::from_pairs(&pairs(&secure)).unwrap();
        assert!(!c.plain_port && c.tls.secure_port == Some(2281));
        let both = [&secure[..], &[("clientPort", "2181")]].concat();
        assert!(ServerConfig::from_pairs(&pairs(&both)).unwrap().plain_port);
        assert!(ServerConfig::from_pairs(&pairs(&[])).unwrap().plain_port);
    }

    #[test]
    fn defaults_follow_tick_time() {
        let c = ServerConfig::from_pairs(&pairs(&[("tickTime", "1000")])).unwrap();
        assert_eq!(
            (c.min_session_timeout_ms, c.max_session_timeout_ms),
            (2000, 20000)
        );
        assert_eq!(c.negotiate_timeout(100), 2000);
        assert_eq!(c.negotiate_timeout(90000), 20000);
        assert_eq!(c.negotiate_timeout(5000), 5000);
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let err = ServerConfig::from_pairs(&pairs(&[("clientPort", "http")])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("clientPort") && msg.contains("http"), "{msg}");
        let err = ServerConfig::from_pairs(&pairs(&[("tickTime", "0")])).unwrap_err();
        assert!(err.to_string().contains("tickTime"));
    }

    #[test]
    fn whitelist_words_corral_does_not_answer_are_ignored_as_zookeeper_accepts_them() {
        let c = ServerConfig::from_pairs(&pairs(&[("4lw.commands.whitelist", "ruok, gtmk,hash")]))
            .unwrap();
        assert_eq!(c.four_letter_whitelist, ["ruok", "srvr"]);
    }

    #[test]
    fn server_lines_parse_as_zookeeper_writes_them() {
        let l = ServerLine::parse("server.1", "zk1:2888:3888").unwrap();
        assert_eq!(
            (
                l.host.as_str(),
                l.peer_port,
                l.election_port,
                l.observer,
                l.client
            ),
            ("zk1", 2888, 3888, false, None)
        );
        let l = ServerLine::parse("server.2", "10.0.0.2:2888:3888:observer;2181").unwrap();
        assert!(l.observer);
        // A client port alone listens on every address (ZooKeeper prints it as 0.0.0.0).
        assert_eq!(l.client, Some(("0.0.0.0".to_string(), 2181)));
        let l = ServerLine::parse("server.3", "h:1:2:participant;0.0.0.0:2182").unwrap();
        assert_eq!(l.client, Some(("0.0.0.0".to_string(), 2182)));
        for bad in ["h:1", "h:x:2", ":1:2", "h:1:2:boss"] {
            assert!(ServerLine::parse("server.9", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn data_dir_given_later_supplies_the_myid() {
        let base = std::env::temp_dir().join(format!("corral-myid-move-{}", std::process::id()));
        let (first, second) = (base.join("a"), base.join("b"));
        for (dir, id) in [(&first, "1"), (&second, "2")] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("myid"), id).unwrap();
        }
        let mut c = ServerConfig::from_pairs(&pairs(&[
            ("dataDir", first.to_str().unwrap()),
            ("server.1", "127.0.0.1:2888:3888"),
            ("server.2", "127.0.0.1:2889:3889"),
        ]))
        .unwrap();
        assert_eq!(c.my_id, 1);
        c.set_data_dir(second.clone()).unwrap();
        assert_eq!((c.my_id, &c.data_dir), (2, &second));
        std::fs::write(second.join("myid"), "9").unwrap();
        assert!(c.set_data_dir(second).is_err());
        let _ = std::fs::remove_dir_all(base);
    }

    #[test]
    fn ensemble_needs_myid() {
        let dir = std::env::temp_dir().join(format!("corral-myid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = pairs(&[
            ("server.1", "127.0.0.1:2888:3888"),
            ("server.2", "127.0.0.1:2889:3889"),
        ]);
        p.insert("dataDir".into(), dir.display().to_string());
        let err = ServerConfig::from_pairs(&p).unwrap_err().to_string();
        assert!(err.contains("myid"), "{err}");
        std::fs::write(dir.join("myid"), "2\n").unwrap();
        let c = ServerConfig::from_pairs(&p).unwrap();
        assert_eq!((c.my_id, c.servers.len()), (2, 2));
        std::fs::write(dir.join("myid"), "7").unwrap();
        assert!(ServerConfig::from_pairs(&p)
            .unwrap_err()
            .to_string()
            .contains("no server.N"));
    }

    #[test]
    fn a_dynamic_config_file_holds_the_server_lines() {
        let dir = std::env::temp_dir().join(format!("corral-dynamic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("myid"), "1\n").unwrap();
        let dynamic = dir.join("zoo.cfg.dynamic.100000000");
        std::fs::write(
            &dynamic,
            "server.1=127.0.0.1:2888:3888:participant;127.0.0.1:2181\n\
             server.2=127.0.0.1:2889:3889:participant;127.0.0.1:2182\nversion=100000000",
        )
        .unwrap();
        let cfg = dir.join("zoo.cfg");
        let base = format!(
            "tickTime=2000\ndataDir={}\nreconfigEnabled=true\nstandaloneEnabled=false\n\
             dynamicConfigFile={}\n",
            dir.display(),
            dynamic.display()
        );
        std::fs::write(&cfg, &base).unwrap();
        let c = ServerConfig::from_file(&cfg).unwrap();
        assert_eq!(c.servers.len(), 2);
        assert!(c.reconfig_enabled && !c.standalone_enabled && !c.skip_acl);
        // No clientPort: the member listens where its own line says.
        assert_eq!(
            (c.client_address.to_string(), c.client_port),
            ("127.0.0.1".into(), 2181)
        );
        assert_eq!(c.servers[&2].client, Some(("127.0.0.1".into(), 2182)));
        // Server lines in both places: ZooKeeper's layout has them in one.
        std::fs::write(&cfg, format!("{base}server.3=127.0.0.1:2890:3890\n")).unwrap();
        let err = ServerConfig::from_file(&cfg).unwrap_err().to_string();
        assert!(err.contains("dynamicConfigFile"), "{err}");
        std::fs::write(&dynamic, "server.1=127.0.0.1:2888:3888\nclientPort=2181\n").unwrap();
        std::fs::write(&cfg, &base).unwrap();
        let err = ServerConfig::from_file(&cfg).unwrap_err().to_string();
        assert!(err.contains("not a dynamic configuration key"), "{err}");
        let props = jvm_properties("-Dzookeeper.skipACL=yes -Dzookeeper.reconfigEnabled=true");
        let c = ServerConfig::load(None, &props).unwrap();
        assert!(c.skip_acl && c.reconfig_enabled);
    }

    #[test]
    fn jvm_flags_give_the_properties_corral_knows_and_skip_the_rest() {
        let props = jvm_properties(
            "-Xmx2g -Dreadonlymode.enabled=true -XX:+UseG1GC \
             -Dzookeeper.DigestAuthenticationProvider.superDigest=\"super:D/InIHSb7yEEbrWz8b9l71RjZJU=\" \
             -Dlog4j.configuration=file:/etc/zk/log4j.properties -Dzookeeper.extendedTypesEnabled=true \
             -Dznode.container.checkIntervalMs=500",
        );
        assert_eq!(props.len(), 5);
        let c = ServerConfig::load(None, &props).unwrap();
        assert!(c.read_only_mode && c.extended_types);
        assert_eq!(c.container_check_interval_ms, 500);
        assert_eq!(
            c.super_digest.as_deref(),
            Some("super:D/InIHSb7yEEbrWz8b9l71RjZJU=")
        );
        assert!(c.ignored_keys.is_empty(), "{:?}", c.ignored_keys);
        // A bad value is an error naming the property.
        let err = ServerConfig::load(None, &jvm_properties("-Dreadonlymode.enabled=maybe"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("readonlymode.enabled") && err.contains("maybe"),
            "{err}"
        );
    }

    #[test]
    fn zoo_cfg_keeps_its_value_under_any_of_its_names() {
        let dir = std::env::temp_dir().join(format!("corral-aliases-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("zoo.cfg");
        std::fs::write(
            &path,
            "extendedTypesEnabled=false\nsuperDigest=a:b\n4lw.commands.whitelist=ruok\n",
        )
        .unwrap();
        let props = jvm_properties(
            "-Dzookeeper.extendedTypesEnabled=true \
             -Dzookeeper.DigestAuthenticationProvider.superDigest=c:d \
             -Dzookeeper.4lw.commands.whitelist=*",
        );
        let c = ServerConfig::load(Some(&path), &props).unwrap();
        assert!(!c.extended_types);
        assert_eq!(c.super_digest.as_deref(), Some("a:b"));
        assert_eq!(c.four_letter_whitelist, ["ruok", "srvr"]);
        // Without them in zoo.cfg, the properties apply, the whitelist too.
        let c = ServerConfig::load(None, &props).unwrap();
        assert!(c.extended_types && c.four_letter_allowed("mntr"));
        assert!(c.ignored_keys.is_empty(), "{:?}", c.ignored_keys);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn zoo_cfg_keeps_its_value_over_a_property() {
        let dir = std::env::temp_dir().join(format!("corral-props-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("zoo.cfg");
        std::fs::write(
            &path,
            "zookeeper.extendedTypesEnabled=false\ntickTime=1000\n",
        )
        .unwrap();
        let props =
            jvm_properties("-Dzookeeper.extendedTypesEnabled=true -Dreadonlymode.enabled=true");
        let c = ServerConfig::load(Some(&path), &props).unwrap();
        assert!(!c.extended_types && c.read_only_mode);
        assert_eq!(c.tick_time_ms, 1000);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn limits_are_read_and_the_request_throttler_caps_the_global_one() {
        let c = ServerConfig::from_pairs(&pairs(&[
            ("globalOutstandingLimit", "500"),
            ("corral.maxOutstandingRequests", "20"),
            ("corral.maxOutstandingRequestBytes", "1000"),
            ("corral.maxQueuedReplyBytes", "2000"),
            ("corral.slowClientGraceMs", "300"),
            ("corral.maxPendingProposalBytes", "4096"),
            ("zookeeper.request_throttle_max_requests", "200"),
            ("zookeeper.request_throttle_stall_time", "100"),
        ]))
        .unwrap();
        let l = c.limits;
        assert_eq!(
            (
                l.global_outstanding,
                l.max_outstanding,
                l.max_request_bytes,
                l.max_reply_bytes
            ),
            (200, 20, 1000, 2000)
        );
        assert_eq!(l.stall_grace, std::time::Duration::from_millis(300));
        assert_eq!(l.max_pending_proposal_bytes, 4096);
        assert!(c.ignored_keys.is_empty(), "{:?}", c.ignored_keys);
        // 0 turns ZooKeeper's throttler off: the global limit stands.
        let c =
            ServerConfig::from_pairs(&pairs(&[("zookeeper.request_throttle_max_requests", "0")]))
                .unwrap();
        assert_eq!(c.limits.global_outstanding, 1000);
        assert!(ServerConfig::from_pairs(&pairs(&[("corral.maxQueuedReplyBytes", "0")])).is_err());
    }

    #[test]
    fn an_ensemble_refuses_a_lease_too_short_to_renew() {
        let dir = std::env::temp_dir().join(format!("corral-lease-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("myid"), "1").unwrap();
        let ensemble = |extra: &[(&str, &str)]| {
            let mut p = pairs(&[
                ("server.1", "127.0.0.1:2888:3888"),
                ("server.2", "127.0.0.1:2889:3889"),
            ]);
            p.insert("dataDir".into(), dir.display().to_string());
            for (k, v) in extra {
                p.insert(k.to_string(), v.to_string());
            }
            ServerConfig::from_pairs(&p)
        };
        let err = ensemble(&[("tickTime", "50")]).unwrap_err().to_string();
        assert!(
            err.contains("minSessionTimeout") && err.contains("200 ms"),
            "{err}"
        );
        assert!(ensemble(&[("tickTime", "100"), ("syncLimit", "1")]).is_err());
        assert!(
            ensemble(&[("tickTime", "100")]).is_ok(),
            "min(500, 200) = 200 ms"
        );
        // A standalone server leads itself: no lease to renew.
        assert!(ServerConfig::from_pairs(&pairs(&[("tickTime", "50")])).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn sync_and_init_limits_are_read() {
        let c =
            ServerConfig::from_pairs(&pairs(&[("syncLimit", "2"), ("initLimit", "7")])).unwrap();
        assert_eq!((c.sync_limit, c.init_limit), (2, 7));
        assert!(ServerConfig::from_pairs(&pairs(&[("syncLimit", "0")])).is_err());
    }

    #[test]
    fn whitelist_and_unknown_keys() {
        let c = ServerConfig::from_pairs(&pairs(&[
            ("4lw.commands.whitelist", "ruok, stat"),
            ("fancyFeature", "1"),
            ("initLimit", "10"),
        ]))
        .unwrap();
        assert!(c.four_letter_allowed("ruok") && c.four_letter_allowed("srvr"));
        assert!(!c.four_letter_allowed("conf"));
        assert_eq!(c.ignored_keys, vec!["fancyFeature"]);
        let all = ServerConfig::from_pairs(&pairs(&[("4lw.commands.whitelist", "*")])).unwrap();
        assert!(all.four_letter_allowed("mntr"));
    }
}
