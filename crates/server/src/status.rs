//! Status as the four-letter words, the admin commands and `/metrics` see it: the core's
//! snapshot ([`crate::core::status`]) with the configuration, the limits' counters and the
//! replicated log's live view beside it. Rendering runs on the asking task, never the core's.

use crate::budget::Global;
use crate::config::ServerConfig;
use crate::core::status::{Detail, Snapshot};
use crate::core::{CoreMsg, Input};
use corral_replication::ReplicaHandle;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The version Corral reports where ZooKeeper reports its own: the protocol level it matches,
/// then Corral's own version, so tools that parse the number keep working.
pub const VERSION_LINE: &str = concat!(
    "3.8.4-corral-",
    env!("CARGO_PKG_VERSION"),
    ", built on 2026-11-25 00:00 UTC"
);

/// What ZooKeeper answers, to most status requests, while it is not serving clients.
pub const NOT_SERVING: &str = "This ZooKeeper instance is not currently serving requests";

/// Everything status renders from.
pub struct Status {
    pub snap: Snapshot,
    pub cfg: Arc<ServerConfig>,
    pub limits: Arc<Global>,
    pub replica: ReplicaHandle,
}

/// Where status comes from: asks the core for snapshots.
#[derive(Clone)]
pub struct StatusSource {
    pub core: mpsc::Sender<CoreMsg>,
    pub cfg: Arc<ServerConfig>,
    pub limits: Arc<Global>,
    pub replica: ReplicaHandle,
}

impl StatusSource {
    /// The status now, with the lists `detail` asks for; `None` once the core has stopped.
    pub async fn status(&self, detail: Detail) -> Option<Status> {
        let (reply, answer) = oneshot::channel();
        self.core
            .send(CoreMsg::Status { detail, reply })
            .await
            .ok()?;
        Some(Status {
            snap: answer.await.ok()?,
            cfg: self.cfg.clone(),
            limits: self.limits.clone(),
            replica: self.replica.clone(),
        })
    }

    /// `crst` (`connections`) or `srst`: the counters start again.
    pub async fn reset(&self, connections: bool) {
        let input = Input::ResetStats { connections };
        let _ = self.core.send(CoreMsg::Input(input)).await;
    }
}

impl Status {
    /// ZooKeeper's `envi` keys with this process's values (no JVM here).
    pub(crate) fn environment(&self) -> Vec<(&'static str, String)> {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let cwd = std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let env = |k: &str| std::env::var(k).unwrap_or_default();
        vec![
            ("zookeeper.version", VERSION_LINE.to_owned()),
            ("host.name", host.trim().to_owned()),
            ("java.version", "none (corral is native)".into()),
            ("java.vendor", "none".into()),
            ("java.home", String::new()),
            ("java.class.path", String::new()),
            ("java.library.path", String::new()),
            ("java.io.tmpdir", std::env::temp_dir().display().to_string()),
            ("java.compiler", "<NA>".into()),
            ("os.name", "Linux".into()),
            ("os.arch", std::env::consts::ARCH.into()),
            ("os.version", os_release()),
            ("user.name", env("USER")),
            ("user.home", env("HOME")),
            ("user.dir", cwd),
            ("os.memory.free", "0MB".into()),
            ("os.memory.max", "0MB".into()),
            ("os.memory.total", format!("{}MB", resident_bytes() >> 20)),
        ]
    }
}

/// The kernel release (`uname -r`).
fn os_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// This process's resident set size.
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
