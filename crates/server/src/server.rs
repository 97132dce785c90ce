//! The listener: accepts connections, enforces `maxClientCnxns` per address, and runs the core.

use crate::config::ServerConfig;
use crate::connection;
use crate::core::{Core, CoreMsg, Durability};
use crate::durability;
use corral_tree::TreeConfig;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Requests queued from connections to the core before readers wait.
const CORE_QUEUE: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot recover the data in {dir}: {source}")]
    Recovery {
        dir: std::path::PathBuf,
        source: durability::RecoveryError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running server; dropping it does not stop it, [`Server::stop`] does.
pub struct Server {
    pub local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    core_stop: Option<oneshot::Sender<()>>,
    accept: JoinHandle<()>,
    core: JoinHandle<()>,
    log_thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Recovers the data directory, binds the client port and starts serving.
    pub async fn start(cfg: ServerConfig) -> Result<Server, ServerError> {
        let tree_config = TreeConfig {
            extended_types: cfg.extended_types,
        };
        let data_dir = cfg.data_dir.clone();
        let (retain, segment) = (cfg.snap_retain_count, cfg.log_segment_bytes);
        let recovered = tokio::task::spawn_blocking(move || {
            durability::recover(&data_dir, tree_config, retain, segment)
        })
        .await
        .expect("recovery task")
        .map_err(|source| ServerError::Recovery {
            dir: cfg.data_dir.clone(),
            source,
        })?;
        let addr = SocketAddr::new(cfg.client_address, cfg.client_port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let cfg = Arc::new(cfg);
        let (core_tx, core_rx) = mpsc::channel(CORE_QUEUE);
        let (log, log_thread) = durability::spawn_log_thread(recovered.log, core_tx.clone());
        let durability = Durability {
            log,
            snapshots: Arc::new(recovered.snapshots),
            inbox: core_tx.clone(),
        };
        let (core_stop, core_stop_rx) = oneshot::channel();
        let core = Core::new(cfg.clone(), recovered.tree, durability);
        let core = tokio::spawn(core.run(core_rx, core_stop_rx));
        let (stop, stop_rx) = oneshot::channel();
        let accept = tokio::spawn(accept_loop(listener, cfg, core_tx, stop_rx));
        tracing::info!(%local_addr, "serving ZooKeeper clients");
        Ok(Server {
            local_addr,
            stop: Some(stop),
            core_stop: Some(core_stop),
            accept,
            core,
            log_thread: Some(log_thread),
        })
    }

    /// Stops accepting, closes every connection and waits for the tasks to end.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.accept).await;
        if let Some(s) = self.core_stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.core).await;
        // The core held the log thread's only sender; with it gone the thread finishes its last
        // sync and ends.
        if let Some(t) = self.log_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    cfg: Arc<ServerConfig>,
    core: mpsc::Sender<CoreMsg>,
    mut stop: oneshot::Receiver<()>,
) {
    let per_ip: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let mut next_conn = 1u64;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stop => return,
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
            let mut counts = per_ip.lock().expect("connection counts lock");
            let n = counts.entry(peer.ip()).or_default();
            if cfg.max_client_cnxns > 0 && *n >= cfg.max_client_cnxns {
                tracing::warn!(%peer, max = cfg.max_client_cnxns, "too many connections from this address; closing");
                continue;
            }
            *n += 1;
        }
        let conn = next_conn;
        next_conn += 1;
        let core = core.clone();
        let per_ip = per_ip.clone();
        let max_frame = cfg.max_frame_len;
        tokio::spawn(async move {
            connection::serve(stream, peer, conn, core, max_frame).await;
            let mut counts = per_ip.lock().expect("connection counts lock");
            if let Some(n) = counts.get_mut(&peer.ip()) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&peer.ip());
                }
            }
        });
    }
}
