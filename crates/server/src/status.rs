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
