//! The sessions, ensemble and metrics pages' data: the same status snapshot the admin commands
//! render, as JSON shaped for the pages.

use super::Console;
use crate::core::status::Detail;
use crate::status::Status;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the ensemble page waits for another member's `srvr`.
const SRVR_TIMEOUT: Duration = Duration::from_secs(1);

async fn snapshot(console: &Console, detail: Detail) -> Result<Status, Response> {
    console.status.status(detail).await.ok_or_else(|| {
        super::tree::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Stopping",
            "the server is stopping",
        )
    })
}

/// `GET /api/sessions`: the sessions connected here (address, timeout, last seen, ephemerals,
/// watches), then the ensemble's other sessions.
pub async fn sessions(State(console): State<Arc<Console>>) -> Response {
    let detail = Detail {
        watches: true,
        sessions: true,
        digest: false,
    };
    let st = match snapshot(&console, detail).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    Json(sessions_json(&st)).into_response()
}

fn sessions_json(st: &Status) -> Value {
    let snap = &st.snap;
    let ephemerals: HashMap<i64, &Vec<String>> =
        snap.ephemerals.iter().map(|(id, p)| (*id, p)).collect();
    let watches: HashMap<i64, &Vec<String>> = snap
        .watches_by_session
        .iter()
        .map(|(id, p)| (*id, p))
        .collect();
    let none = Vec::new();
    let connected: Vec<Value> = snap
        .conns
        .iter()
        .map(|c| {
            json!({
                "session": format!("0x{:x}", c.session_id),
                "client": c.peer.to_string(),
                "timeout_ms": c.timeout_ms,
                "established_ms": c.stats.established_ms,
                "last_seen_ms": c.stats.last_response_ms.max(c.stats.established_ms),
                "requests": c.stats.received,
                "ephemerals": ephemerals.get(&c.session_id).copied().unwrap_or(&none),
                "watches": watches.get(&c.session_id).copied().unwrap_or(&none),
            })
        })
        .collect();
    let here: std::collections::HashSet<i64> = snap.conns.iter().map(|c| c.session_id).collect();
    let elsewhere: Vec<Value> = snap
        .replicated_sessions
        .iter()
        .filter(|(id, _)| !here.contains(id))
        .map(|(id, timeout)| {
            json!({
                "session": format!("0x{id:x}"),
                "timeout_ms": timeout,
                "ephemerals": ephemerals.get(id).copied().unwrap_or(&none),
            })
        })
        .collect();
    json!({ "now_ms": snap.taken_ms, "connected": connected, "elsewhere": elsewhere })
}

/// `GET /api/ensemble`: every member with its role and, as this member knows it, its progress.
/// The leader knows each member's acknowledged log index and last contact; another member
/// knows only itself, and says which member leads.
pub async fn ensemble(State(console): State<Arc<Console>>) -> Response {
    let st = match snapshot(&console, Detail::default()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut view = ensemble_json(&st, Instant::now());
    let asks = view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["self"] != true)
        .filter_map(|m| Some((m["id"].as_u64()?, m["client"].as_str()?.to_owned())))
        .filter(|(_, client)| !client.is_empty())
        .map(|(id, client)| async move { (id, srvr(&client).await) });
    let answers: HashMap<u64, Option<Srvr>> = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .collect();
    for m in view["members"].as_array_mut().into_iter().flatten() {
        if m["self"] == true {
            m["zxid"] = format!("0x{:x}", st.snap.last_zxid).into();
            m["mode"] = st.snap.mode.into();
        } else if let Some(answer) = m["id"].as_u64().and_then(|id| answers.get(&id)) {
            // What the member says of itself beats what the leader infers.
            let mode = answer.as_ref().map_or("unreachable", |a| a.mode.as_str());
            m["serving"] = matches!(mode, "leader" | "follower" | "observer").into();
            m["mode"] = mode.into();
            m["zxid"] = answer.as_ref().and_then(|a| a.zxid.clone()).into();
        }
    }
    Json(view).into_response()
}

/// What another member's `srvr` says of it.
struct Srvr {
    /// `leader`, `follower`, `observer`, or `not serving`.
    mode: String,
    zxid: Option<String>,
}

/// Asks a member's client port for `srvr` (on the default whitelist), as an operator would:
/// its own zxid and mode, which only it knows. None if it does not answer within a second.
async fn srvr(client: &str) -> Option<Srvr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(client).await.ok()?;
        s.write_all(b"srvr").await.ok()?;
        let mut text = String::new();
        s.take(64 * 1024).read_to_string(&mut text).await.ok()?;
        Some(text)
    };
    let text = tokio::time::timeout(SRVR_TIMEOUT, ask).await.ok()??;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    match field("Mode:") {
        Some(mode) => Some(Srvr {
            mode,
            zxid: field("Zxid:"),
        }),
        None if text.contains("not currently serving") => Some(Srvr {
            mode: "not serving".into(),
            zxid: None,
        }),
        None => None,
    }
}

fn ensemble_json(st: &Status, now: Instant) -> Value {
    let snap = &st.snap;
    let me = st.replica.id();
    let progress = st.replica.progress(now);
    let lease = st.replica.lease_times().serve;
    let membership = st.replica.membership();
    let members: Vec<Value> = membership
        .members
        .iter()
        .map(|(id, m)| {
            let p = progress
                .as_ref()
                .and_then(|p| p.members.iter().find(|mp| mp.id == *id));
            let matched = p.and_then(|p| p.matched);
            let lag = progress
                .as_ref()
                .zip(matched)
                .map(|(pr, m)| pr.last_index.saturating_sub(m));
            let contact = p.and_then(|p| p.last_contact);
            let serving = if *id == me {
                Some(snap.serving)
            } else if *id == snap.leader_id.unwrap_or(0) && snap.serving {
                // This member serves on the leader's grants, so the leader vouched recently.
                Some(true)
            } else if m.observer {
                None
            } else {
                // A voter serves while its lease, renewed by the leader's contact, lasts.
                contact.map(|c| c < lease)
            };
            json!({
                "id": id,
                "role": if m.observer { "observer" } else { "participant" },
                "client": m.client_addr,
                "peer": m.raft_addr,
                "leader": snap.leader_id == Some(*id),
                "self": *id == me,
                "matched_index": matched,
                "lag": lag,
                "last_contact_ms": contact.map(|c| c.as_millis() as u64),
                "serving": serving,
            })
        })
        .collect();
    json!({
        "me": me,
        "mode": snap.mode,
        "serving": snap.serving,
        "leader": snap.leader_id,
        "last_zxid": format!("0x{:x}", snap.last_zxid),
        "leader_last_index": progress.as_ref().map(|p| p.last_index),
        "standalone": st.replica.standalone(),
        "members": members,
    })
}

/// `GET /api/metrics`: the `monitor` command's numbers, which the page charts over time.
pub async fn metrics(State(console): State<Arc<Console>>) -> Response {
    let st = match snapshot(&console, Detail::default()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut m = crate::metrics::render_json(&st.metrics());
    m.insert("now_ms".into(), st.snap.taken_ms.into());
    Json(Value::Object(m)).into_response()
}
