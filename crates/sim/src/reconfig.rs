//! Reconfigurations during a run (`--reconfig`): an operator removes one member at a time and
//! adds it back, as the super user, through whichever member answers, while the workload and the
//! nemesis go on (crashes, partitions and pauses land in the middle of joint steps). Every
//! member is back before the checker looks, so the run's checks (linearizability, lost writes,
//! ephemerals, convergence) hold across membership changes.
//!
//! The operator's choices come from their own generator, seeded from the run's seed: runs
//! without `--reconfig` draw exactly what they drew before.

use crate::client::{self, Conn};
use crate::run::Shared;
use crate::workload::{member_addr, sim_ms};
use bytes::Bytes;
use corral_proto::records::{AuthPacket, PathRequest, PathWatchRequest, ReconfigRequest};
use corral_proto::{ErrorCode, Request, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// The operator: changes the membership until `until_ms`, then adds back whoever is out, by
/// `back_by_ms` at the latest.
pub async fn operate(shared: Rc<RefCell<Shared>>, seed: u64, until_ms: u64, back_by_ms: u64) {
    let members = shared.borrow().members;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EC0_4F16_0000_0000);
    let mut out: Option<usize> = None;
    loop {
        let wait = rng.gen_range(800..2500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if sim_ms() >= until_ms {
            break;
        }
        let change = match out {
            None => Change::Remove(rng.gen_range(0..members)),
            Some(m) => Change::Add(m),
        };
        if change_membership(&shared, &mut rng, change, until_ms).await {
            out = match change {
                Change::Remove(m) => Some(m),
                Change::Add(_) => None,
            };
        }
    }
    // Every member back, whatever came of the changes whose outcome stayed unknown (a lost
    // connection may hide a removal that took effect).
    for m in 0..members {
        if !change_membership(&shared, &mut rng, Change::Add(m), back_by_ms).await {
            shared.borrow_mut().failures.push(format!(
                "m{} could not be added back by {back_by_ms} ms",
                m + 1
            ));
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Remove(usize),
    Add(usize),
}

impl Change {
    fn request(self) -> ReconfigRequest {
        let (joining, leaving) = match self {
            Change::Remove(m) => (String::new(), (m + 1).to_string()),
            Change::Add(m) => (
                format!("server.{0}=m{0}:2888:3888:participant;0.0.0.0:2181", m + 1),
                String::new(),
            ),
        };
        ReconfigRequest {
            joining_servers: joining,
            leaving_servers: leaving,
            new_members: String::new(),
            cur_config_id: -1,
        }
    }

    /// Whether `/zookeeper/config` shows it done.
    fn done(self, config: &str) -> bool {
        match self {
            Change::Remove(m) => !config.contains(&format!("server.{}=", m + 1)),
            Change::Add(m) => config.contains(&format!("server.{}=", m + 1)),
        }
    }
}

/// Asks for `change` through members drawn at random until `/zookeeper/config` shows it, or
/// `deadline_ms` passes. Refusals (another change in progress, no quorum yet, a member not
/// serving) and lost connections are tried again, as an operator would.
async fn change_membership(
    shared: &Rc<RefCell<Shared>>,
    rng: &mut StdRng,
    change: Change,
    deadline_ms: u64,
) -> bool {
    let members = shared.borrow().members;
    while sim_ms() < deadline_ms {
        let via = rng.gen_range(0..members);
        let outcome = match client::connect(&member_addr(via), None, 0, 3000).await {
            Ok((mut conn, _)) => attempt(&mut conn, change).await,
            Err(_) => "no session".to_owned(),
        };
        shared.borrow_mut().trace.push(format!(
            "{} reconfig {change:?} via m{}: {outcome}",
            sim_ms(),
            via + 1
        ));
        if outcome == "done" {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}

/// One try: as the super user, look whether it is done already, else ask for it.
async fn attempt(conn: &mut Conn, change: Change) -> String {
    let auth = Request::Auth(AuthPacket {
        auth_type: 0,
        scheme: "digest".into(),
        auth: Bytes::from_static(b"super:test"),
    });
    if conn.call(&auth).await.is_err() {
        return "lost".into();
    }
    match config(conn).await {
        Some(text) if change.done(&text) => return "done".into(),
        Some(_) => {}
        None => return "lost".into(),
    }
    let outcome = match conn.call(&Request::Reconfig(change.request())).await {
        Ok(r) if r.err == ErrorCode::Ok => "done".to_owned(),
        Ok(r) => format!("{:?}", r.err),
        // A connection given up on is not used again: its late reply would come first.
        Err(_) => return "lost".to_owned(),
    };
    let _ = conn.call(&Request::CloseSession).await;
    outcome
}

/// `/zookeeper/config` as the member shows it after a `sync`.
async fn config(conn: &mut Conn) -> Option<String> {
    let sync = Request::Sync(PathRequest { path: "/".into() });
    conn.call(&sync)
        .await
        .ok()
        .filter(|r| r.err == ErrorCode::Ok)?;
    let get = Request::GetData(PathWatchRequest {
        path: "/zookeeper/config".into(),
        watch: false,
    });
    match conn.call(&get).await.ok()?.body {
        Some(Response::GetData(d)) => {
            Some(String::from_utf8_lossy(&d.data.unwrap_or_default()).into())
        }
        _ => None,
    }
}
