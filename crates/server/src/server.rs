//! The listener: accepts connections, enforces `maxClientCnxns` per address, and runs the core.

use crate::admin_http::AdminServer;
use crate::config::ServerConfig;
use crate::connection;
use crate::console::client::Dialer;
use crate::console::config::AdminTransport;
use crate::console::Console;
use crate::core::driver::Driver;
use crate::core::CoreMsg;
use crate::status::StatusSource;
use crate::tls::{HandshakeError, QuorumNet, TlsAcceptor};
use corral_io::hash::HashMap;
use corral_io::BoxStream;
use corral_io::Listener;
use corral_proto::records::Id;
use corral_replication::{LeaseTimes, Member, ReplicaConfig, ReplicaHandle, ReplicationError};
use corral_tree::TreeConfig;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Requests queued from connections to the core before readers wait.
const CORE_QUEUE: usize = 16 * 1024;

/// How long a standalone server waits to serve before it opens its client port anyway.
const STANDALONE_START: Duration = Duration::from_secs(10);

/// Raft's timers, fixed rather than derived from tickTime: a leader that dies is replaced at
/// once (its followers see its peer port refuse connections), one cut off within about
/// `2 × ELECTION_TIMEOUT_MAX_MS`. A voter refuses other candidates for
/// `ELECTION_TIMEOUT_MAX_MS` after it last heard from its leader (openraft's leader lease).
const HEARTBEAT_MS: u64 = 100;
const ELECTION_TIMEOUT_MIN_MS: u64 = 250;
const ELECTION_TIMEOUT_MAX_MS: u64 = 350;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot recover the data in {dir}: {source}")]
    Recovery {
        dir: std::path::PathBuf,
        source: ReplicationError,
    },
    #[error("cannot start replication: {0}")]
    Replication(ReplicationError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// A running server; dropping it does not stop it, [`Server::stop`] does.
pub struct Server {
    /// The client port (the secure one when there is no plain one).
    pub local_addr: SocketAddr,
    /// The TLS-only client port (`secureClientPort`), if any.
    pub secure_addr: Option<SocketAddr>,
    /// Where the admin HTTP server listens, if it runs.
    pub admin_addr: Option<SocketAddr>,
    admin: Option<AdminServer>,
    stop: Option<watch::Sender<bool>>,
    core_stop: Option<oneshot::Sender<()>>,
    accept: JoinHandle<()>,
    core: JoinHandle<()>,
    core_tx: mpsc::Sender<CoreMsg>,
    replica: ReplicaHandle,
    status: StatusSource,
}

/// The replication settings a server configuration implies: an ensemble from `server.N` lines,
/// or a one-member ensemble for a standalone server.
pub fn replica_config(cfg: &ServerConfig) -> ReplicaConfig {
    let client_port = cfg.client_port;
    let members: BTreeMap<u64, Member> = if cfg.servers.is_empty() {
        let client_addr = SocketAddr::new(cfg.client_address, client_port).to_string();
        [(
            cfg.my_id,
            Member {
                raft_addr: String::new(),
                election_port: 0,
                client_addr,
                observer: false,
            },
        )]
        .into()
    } else {
        cfg.servers
            .iter()
            .map(|(id, s)| (*id, crate::ensemble::member_of(s)))
            .collect()
    };
    // See ARCHITECTURE.md, "The serving rule": these times and the lease must keep its
    // inequality, which `LeaseTimes::is_safe` checks.
    let tick_ms = u64::from(cfg.tick_time_ms);
    let lease = LeaseTimes::new(
        tick_ms,
        u64::from(cfg.sync_limit),
        u64::from(cfg.min_session_timeout_ms),
        ELECTION_TIMEOUT_MAX_MS,
    );
    debug_assert!(lease.is_safe(
        ELECTION_TIMEOUT_MAX_MS,
        u64::from(cfg.min_session_timeout_ms)
    ));
    ReplicaConfig {
        id: cfg.my_id,
        members,
        // As ZooKeeper: one server line runs standalone unless standaloneEnabled=false.
        standalone: cfg.servers.len() <= usize::from(cfg.standalone_enabled),
        data_dir: cfg.data_dir.clone(),
        tree: TreeConfig {
            extended_types: cfg.extended_types,
            enforce_quota: cfg.enforce_quota,
        },
        segment_bytes: cfg.log_segment_bytes,
        snapshot_retain: cfg.snap_retain_count,
        heartbeat_ms: HEARTBEAT_MS,
        election_timeout_min_ms: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max_ms: ELECTION_TIMEOUT_MAX_MS,
        lease,
        install_snapshot_timeout_ms: tick_ms * u64::from(cfg.init_limit),
        io: cfg.io.clone(),
    }
}

impl Server {
    /// This member's replication timings and counters (shared, live).
    pub fn replica_timings(&self) -> Arc<crate::ReplicaTimings> {
        self.replica.timings_shared()
    }

    /// Recovers the data directory, joins the replicated log, binds the client port and serves.
    pub async fn start(cfg: ServerConfig) -> Result<Server, ServerError> {
        let mut rcfg = replica_config(&cfg);
        let limits = Arc::new(crate::budget::Global::default());
        if cfg.tls.ssl_quorum {
            let net = QuorumNet::new(cfg.io.net.clone(), &cfg.tls.quorum, limits.clone())
                .map_err(ServerError::Tls)?;
            tracing::info!("members talk over TLS (sslQuorum)");
            rcfg.io.net = Arc::new(net);
        }
        if let Some(logins) = cfg.auth.quorum.logins.clone() {
            let hosts = cfg.servers.values().map(|s| s.host.clone()).collect();
            let quorum = &cfg.auth.quorum;
            let sasl = crate::auth::quorum::QuorumSasl::new(quorum, logins, hosts);
            tracing::info!(
                learner_require = quorum.learner_require,
                server_require = quorum.server_require,
                "members log in to each other by SASL (quorum.auth.enableSasl)"
            );
            let net = crate::auth::SaslNet::new(rcfg.io.net.clone(), sasl, limits.clone());
            rcfg.io.net = Arc::new(net);
        }
        let recover_cfg = rcfg.clone();
        let (tree, mark, storage) = cfg
            .io
            .blocking(move || corral_replication::recover(&recover_cfg))
            .await
            .map_err(|source| ServerError::Recovery {
                dir: cfg.data_dir.clone(),
                source,
            })?;
        let tls = match cfg.tls.enabled() {
            true => Some(Arc::new(
                TlsAcceptor::new(cfg.tls.clone(), limits.clone()).map_err(ServerError::Tls)?,
            )),
            false => None,
        };
        let mut listeners = Vec::new();
        if cfg.plain_port {
            let addr = SocketAddr::new(cfg.client_address, cfg.client_port);
            let mode = match (&tls, cfg.tls.port_unification) {
                (Some(tls), true) => Mode::Unified(tls.clone()),
                _ => Mode::Plain,
            };
            listeners.push((bind(&cfg, addr).await?, mode));
        }
        if let (Some(port), Some(tls)) = (cfg.tls.secure_port, &tls) {
            let ip = cfg.tls.secure_address.unwrap_or(IpAddr::from([0, 0, 0, 0]));
            let addr = SocketAddr::new(ip, port);
            listeners.push((bind(&cfg, addr).await?, Mode::Tls(tls.clone())));
        }
        let addrs: Vec<SocketAddr> = listeners.iter().map(|(l, _)| l.1).collect();
        let local_addr = addrs[0];
        let secure_addr = cfg.tls.secure_port.map(|_| *addrs.last().expect("bound"));
        let cfg = Arc::new(cfg);
        let (replica, proposals) = corral_replication::handle(&rcfg);
        let (core_tx, core_rx) = mpsc::channel(CORE_QUEUE);
        let (to_core, from_replication) = mpsc::channel(1024);
        let (core_stop, core_stop_rx) = oneshot::channel();
        let standalone = rcfg.members.len() == 1;
        let driver = Driver::new(
            cfg.clone(),
            tree,
            mark,
            replica.clone(),
            core_tx.clone(),
            limits.clone(),
        );
        let mut serving = driver.serving_watch();
        let core = tokio::spawn(driver.run(core_rx, from_replication, core_stop_rx));
        let status = StatusSource {
            core: core_tx.clone(),
            cfg: cfg.clone(),
            limits: limits.clone(),
            replica: replica.clone(),
        };
        corral_replication::start(rcfg, storage, replica.clone(), proposals, to_core)
            .await
            .map_err(ServerError::Replication)?;
        if standalone {
            // A standalone server serves as soon as it has elected itself (milliseconds): its
            // first clients should not be turned away for the want of that. An ensemble member
            // waits for its peers, which may not have started yet.
            let elected = serving.wait_for(|s| *s);
            if tokio::time::timeout(STANDALONE_START, elected)
                .await
                .is_err()
            {
                tracing::warn!("not serving yet; accepting connections anyway");
            }
        }
        let next_conn = Arc::new(AtomicU64::new(1));
        let dialer = Dialer {
            cfg: cfg.clone(),
            core: core_tx.clone(),
            global: limits.clone(),
            status: status.clone(),
            next_conn: next_conn.clone(),
        };
        let admin = match cfg.admin_addr {
            Some(addr) => start_admin(addr, &status, dialer).await?,
            None => None,
        };
        let (stop, stop_rx) = watch::channel(false);
        let per_ip: PerIp = Arc::default();
        let mut loops = Vec::new();
        for ((listener, local), mode) in listeners {
            let what = mode.describe();
            tracing::info!(local_addr = %local, what, "serving ZooKeeper clients");
            loops.push(tokio::spawn(accept_loop(
                listener,
                mode,
                Accepting {
                    cfg: cfg.clone(),
                    core: core_tx.clone(),
                    global: limits.clone(),
                    status: status.clone(),
                    per_ip: per_ip.clone(),
                    next_conn: next_conn.clone(),
                },
                stop_rx.clone(),
            )));
        }
        let accept = tokio::spawn(async move {
            for l in loops {
                let _ = l.await;
            }
        });
        Ok(Server {
            local_addr,
            secure_addr,
            admin_addr: admin.as_ref().map(|a| a.local_addr),
            admin,
            stop: Some(stop),
            core_stop: Some(core_stop),
            accept,
            core,
            core_tx,
            replica,
            status,
        })
    }

    /// Where this server's status snapshots come from (what the four-letter words render).
    pub fn status_source(&self) -> StatusSource {
        self.status.clone()
    }

    /// Stops gracefully: stops accepting, answers the writes in flight (for up to 5 s), stops
    /// replication, closes every connection and waits for the tasks.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        let _ = (&mut self.accept).await;
        if let Some(admin) = self.admin.take() {
            admin.stop().await;
        }
        let (done, drained) = oneshot::channel();
        if self.core_tx.send(CoreMsg::Drain { done }).await.is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drained).await;
        }
        self.replica.shutdown().await;
        if let Some(s) = self.core_stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.core).await;
    }
}

/// The admin server, with the console and HTTPS as configured. A port that cannot be bound
/// is reported and the server goes on without it, as ZooKeeper does; key stores that do not
/// load stop the start, as they do on the client port.
async fn start_admin(
    addr: SocketAddr,
    status: &StatusSource,
    dialer: Dialer,
) -> Result<Option<AdminServer>, ServerError> {
    let cfg = &status.cfg;
    let transport = cfg.console.transport;
    let tls = match transport {
        AdminTransport::Http => None,
        t => {
            let acceptor = crate::console::https::acceptor(&cfg.tls).map_err(ServerError::Tls)?;
            Some((acceptor, t))
        }
    };
    let console = cfg.console.enabled.then(|| {
        if tls.is_none() {
            tracing::warn!(%addr, "the web console is served over plain HTTP: passwords cross the network in clear; set admin.forceHttps=true with ssl.quorum.keyStore.location");
        }
        Console::new(dialer, status.clone(), tls.is_some())
    });
    match AdminServer::start(addr, status.clone(), console, tls).await {
        Ok(a) => Ok(Some(a)),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot start the admin server");
            Ok(None)
        }
    }
}

/// How a client port takes its connections.
enum Mode {
    Plain,
    /// `secureClientPort`: TLS only.
    Tls(Arc<TlsAcceptor>),
    /// `client.portUnification`: TLS or plaintext, told apart by the first byte.
    Unified(Arc<TlsAcceptor>),
}

impl Mode {
    fn describe(&self) -> &'static str {
        match self {
            Mode::Plain => "plaintext",
            Mode::Tls(_) => "TLS",
            Mode::Unified(_) => "TLS or plaintext (port unification)",
        }
    }

    /// The connection as the client port serves it: through the TLS handshake if it speaks
    /// TLS, with the identities its certificate proves. None (logged) when it cannot be.
    async fn secure(
        &self,
        stream: BoxStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Option<(BoxStream, Vec<Id>)> {
        let tls = match self {
            Mode::Plain => return Some((stream, Vec::new())),
            Mode::Tls(tls) => tls,
            Mode::Unified(tls) => match crate::tls::sniff(stream, timeout).await {
                Ok(crate::tls::Sniffed::Plain(s)) => return Some((s, Vec::new())),
                Ok(crate::tls::Sniffed::Tls(s)) => return accept_tls(tls, s, peer).await,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "closed before its first byte");
                    return None;
                }
            },
        };
        accept_tls(tls, stream, peer).await
    }
}

async fn accept_tls(
    tls: &TlsAcceptor,
    stream: BoxStream,
    peer: SocketAddr,
) -> Option<(BoxStream, Vec<Id>)> {
    match tls.accept(stream, peer).await {
        Ok(accepted) => Some(accepted),
        Err(e) => {
            let hint = match &e {
                HandshakeError::Failed(io) if io.to_string().contains("corrupt message") => {
                    " (a plaintext client on the TLS port?)"
                }
                _ => "",
            };
            tracing::warn!(%peer, error = %e, "refusing a TLS client{hint}");
            None
        }
    }
}

async fn bind(
    cfg: &ServerConfig,
    addr: SocketAddr,
) -> Result<(Box<dyn Listener>, SocketAddr), ServerError> {
    let listener = cfg
        .io
        .net
        .bind(&addr.to_string())
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    Ok((listener, local))
}

/// Connections open per client address, shared by the client ports (`maxClientCnxns`).
type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// What every accept loop shares.
struct Accepting {
    cfg: Arc<ServerConfig>,
    core: mpsc::Sender<CoreMsg>,
    global: Arc<crate::budget::Global>,
    status: StatusSource,
    per_ip: PerIp,
    next_conn: Arc<AtomicU64>,
}

async fn accept_loop(
    mut listener: Box<dyn Listener>,
    mode: Mode,
    shared: Accepting,
    mut stop: watch::Receiver<bool>,
) {
    let mode = Arc::new(mode);
    let cfg = &shared.cfg;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        {
            let mut counts = shared.per_ip.lock().expect("connection counts lock");
            let n = counts.entry(peer.ip()).or_default();
            if cfg.max_client_cnxns > 0 && *n >= cfg.max_client_cnxns {
                tracing::warn!(%peer, max = cfg.max_client_cnxns, "too many connections from this address; closing");
                continue;
            }
            *n += 1;
        }
        let conn = shared.next_conn.fetch_add(1, Relaxed);
        let core = shared.core.clone();
        let status = shared.status.clone();
        let per_ip = shared.per_ip.clone();
        let mode = mode.clone();
        let limits = connection::ConnLimits {
            max_frame_len: cfg.max_frame_len,
            sessionless_timeout: Duration::from_millis(cfg.sessionless_timeout_ms),
            budget: cfg.limits,
            global: shared.global.clone(),
        };
        tokio::spawn(async move {
            if let Some((stream, ids)) = mode.secure(stream, peer, limits.sessionless_timeout).await
            {
                connection::serve(stream, peer, conn, core, limits, status, ids).await;
            }
            let mut counts = per_ip.lock().expect("connection counts lock");
            if let Some(n) = counts.get_mut(&peer.ip()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&peer.ip());
                }
            }
        });
    }
}
