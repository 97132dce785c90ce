//! The tree pages' API. Each call is one or a few ZooKeeper requests on the login's session, so
//! what a user sees and may change is what their ACLs allow, and a conflicting edit gets
//! ZooKeeper's own error (BadVersion, NodeExists, NotEmpty).

use super::client::{CallError, Event};
use super::logins::Login;
use super::Console;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use bytes::Bytes;
use corral_proto::codes::{add_watch_mode, ephemeral_owner, perms};
use corral_proto::records::*;
use corral_proto::{CreateMode, ErrorCode, MultiResult, OpCode, Request, Response as Zk};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// Children listed per page, at most.
const MAX_PAGE: usize = 500;
/// Nodes one recursive delete may remove; a larger subtree is refused, not half deleted.
const MAX_RECURSIVE_DELETE: usize = 10_000;
/// How often a quiet live view checks that its session still lives.
const SESSION_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

type Params = Query<HashMap<String, String>>;

/// A JSON error the pages show as it is.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

fn failed(e: CallError) -> Response {
    match e {
        CallError::Zk(code) => {
            let status = match code {
                ErrorCode::NoNode => StatusCode::NOT_FOUND,
                ErrorCode::NoAuth | ErrorCode::AuthFailed => StatusCode::FORBIDDEN,
                ErrorCode::BadVersion | ErrorCode::NodeExists | ErrorCode::NotEmpty => {
                    StatusCode::CONFLICT
                }
                ErrorCode::BadArguments
                | ErrorCode::InvalidAcl
                | ErrorCode::NoChildrenForEphemerals => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(status, &format!("{code:?}"), &explain(code))
        }
        CallError::Lost(why) => error(StatusCode::SERVICE_UNAVAILABLE, "ConnectionLoss", why),
    }
}

fn explain(code: ErrorCode) -> String {
    match code {
        ErrorCode::NoAuth => "your identity's ACL permissions do not allow this".into(),
        ErrorCode::BadVersion => {
            "the node changed since you loaded it (its version moved); reload and try again".into()
        }
        ErrorCode::NodeExists => "a node with this path exists already".into(),
        ErrorCode::NotEmpty => "the node has children; delete recursively".into(),
        ErrorCode::NoNode => "no such node".into(),
        other => format!("ZooKeeper error {other}"),
    }
}

async fn call(console: &Console, login: &Login, req: Request) -> Result<Zk, CallError> {
    login.session(&console.dialer).await?.call(req).await
}

fn param<'a>(q: &'a HashMap<String, String>, key: &str) -> &'a str {
    q.get(key).map(String::as_str).unwrap_or("")
}

fn child_path(parent: &str, name: &str) -> String {
    match parent {
        "/" => format!("/{name}"),
        p => format!("{p}/{name}"),
    }
}

/// A Stat as the pages show it: zxids and the owner in hex, as zkCli prints them.
pub fn stat_json(s: &Stat) -> Value {
    json!({
        "czxid": format!("0x{:x}", s.czxid),
        "mzxid": format!("0x{:x}", s.mzxid),
        "pzxid": format!("0x{:x}", s.pzxid),
        "ctime": s.ctime,
        "mtime": s.mtime,
        "version": s.version,
        "cversion": s.cversion,
        "aversion": s.aversion,
        "ephemeralOwner": format!("0x{:x}", s.ephemeral_owner),
        "dataLength": s.data_length,
        "numChildren": s.num_children,
    })
}

/// Whether a node's owner is a session (containers and TTL nodes mark the field otherwise).
fn is_ephemeral(owner: i64) -> bool {
    owner != 0 && owner != ephemeral_owner::CONTAINER && ephemeral_owner::ttl_of(owner).is_none()
}

fn acl_json(acl: &[Acl]) -> Value {
    let letters = |p: i32| {
        [
            (perms::CREATE, 'c'),
            (perms::DELETE, 'd'),
            (perms::READ, 'r'),
            (perms::WRITE, 'w'),
            (perms::ADMIN, 'a'),
        ]
        .iter()
        .filter(|(bit, _)| p & bit != 0)
        .map(|(_, c)| *c)
        .collect::<String>()
    };
    acl.iter()
        .map(|a| json!({ "scheme": a.id.scheme, "id": a.id.id, "perms": letters(a.perms) }))
        .collect()
}

/// `GET /api/children?path=&offset=&limit=&filter=`: one page of a node's children, sorted,
/// those whose name contains `filter`, each with its child count.
pub async fn children(
    State(console): State<Arc<Console>>,
    Extension(login): Extension<Arc<Login>>,
    Query(q): Params,
) -> Response {
    let path = param(&q, "path");
    let offset: usize = param(&q, "offset").parse().unwrap_or(0);
    let limit: usize = param(&q, "limit").parse().unwrap_or(100).clamp(1, MAX_PAGE);
    let filter = param(&q, "filter");
    let req = Request::GetChildren(PathWatchRequest {
        path: path.into(),
        watch: false,
    });
    let mut names = match call(&console, &login, req).await {
        Ok(Zk::GetChildren(names)) => names,
        Ok(_) => return error(StatusCode::BAD_GATEWAY, "Unexpected", "an unexpected reply"),
        Err(e) => return failed(e),
    };
    names.retain(|n| n.contains(filter));
    names.sort();
    let total = names.len();
    let mut page = Vec::new();
    for name in names.into_iter().skip(offset).take(limit) {
        let req = Request::Exists(PathWatchRequest {
            path: child_path(path, &name),
            watch: false,
        });
        // A child deleted since the list was read is left out.
        if let Ok(Zk::Stat(s)) = call(&console, &login, req).await {
            page.push(json!({
                "name": name,
                "numChildren": s.num_children,
                "ephemeral": is_ephemeral(s.ephemeral_owner),
            }));
        }
    }
    Json(json!({ "path": path, "total": total, "offset": offset, "children": page }))
        .into_response()
}

/// `GET /api/node?path=`: data (base64), Stat, ACL. What the ACL keeps from this user comes
/// back as an error beside what it allows.
pub async fn node(
    State(console): State<Arc<Console>>,
    Extension(login): Extension<Arc<Login>>,
    Query(q): Params,
) -> Response {
    let path = param(&q, "path").to_owned();
    let exists = Request::Exists(PathWatchRequest {
        path: path.clone(),
        watch: false,
    });
    let stat = match call(&console, &login, exists).await {
        Ok(Zk::Stat(s)) => s,
        Ok(_) => return error(StatusCode::BAD_GATEWAY, "Unexpected", "an unexpected reply"),
        Err(e) => return failed(e),
    };
    let mut out = json!({
        "path": path,
        "stat": stat_json(&stat),
        "ephemeral": is_ephemeral(stat.ephemeral_owner),
    });
    let get = Request::GetData(PathWatchRequest {
        path: path.clone(),
        watch: false,
    });
    match call(&console, &login, get).await {
        Ok(Zk::GetData(d)) => {
            let data = d.data.unwrap_or_default();
            out["data"] = base64::engine::general_purpose::STANDARD
                .encode(&data)
                .into();
            out["stat"] = stat_json(&d.stat);
        }
        Ok(_) => {}
        Err(e) => out["dataError"] = e.to_string().into(),
    }
    match call(&console, &login, Request::GetAcl(PathRequest { path })).await {
        Ok(Zk::GetAcl(a)) => out["acl"] = acl_json(&a.acl),
        Ok(_) => {}
        Err(e) => out["aclError"] = e.to_string().into(),
    }
    Json(out).into_response()
}

/// The data of a create or set: text, or base64 with `"encoding": "base64"`.
fn data_of(body: &Value) -> Option<Bytes> {
    let text = body["data"].as_str().unwrap_or("");
    match body["encoding"].as_str() {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .map(Bytes::from),
        _ => Some(Bytes::copy_from_slice(text.as_bytes())),
    }
}

fn not_base64() -> Response {
    error(StatusCode::BAD_REQUEST, "BadData", "data is not base64")
}

/// Data too large for one request: the server would close the connection, so it is refused
/// here with the reason.
fn too_large(console: &Console, data: &Bytes) -> Option<Response> {
    let max = console.status.cfg.max_frame_len;
    (data.len() + 1024 > max).then(|| {
        let why = format!(
            "{} bytes of data is more than one request may carry (jute.maxbuffer is {max})",
            data.len()
        );
        error(StatusCode::PAYLOAD_TOO_LARGE, "TooLarge", &why)
    })
}

/// `POST /api/node {path, data, mode, acl}`: mode is persistent (the default),
/// persistent_sequential or container; acl is `open` (world:anyone, the default, as zkCli's
/// create) or `creator` (only the logged-in user).
pub async fn create(
    State(console): State<Arc<Console>>,
    Extension(login): Extension<Arc<Login>>,
    Json(body): Json<Value>,
) -> Response {
    let Some(data) = data_of(&body) else {
        return not_base64();
    };
    if let Some(refused) = too_large(&console, &data) {
        return refused;
    }
    let (op, mode) = match body["mode"].as_str().unwrap_or("persistent") {
        "persistent" => (OpCode::Create2, CreateMode::Persistent),
        "persistent_sequential" => (OpCode::Create2, CreateMode::PersistentSequential),
        "container" => (OpCode::CreateContainer, CreateMode::Container),
        other => {
            let why =
                format!("unknown mode {other:?}: persistent, persistent_sequential or container");
            return error(StatusCode::BAD_REQUEST, "BadArguments", &why);
        }
    };
    let acl = match body["acl"].as_str().unwrap_or("open") {
        "creator" => vec![Acl::new(perms::ALL, "auth", "")],
        "open" => vec![Acl::new(perms::ALL, "world", "anyone")],
        other => {
            let why = format!("unknown acl {other:?}: open or creator");
            return error(StatusCode::BAD_REQUEST, "BadArguments", &why);
        }
    };
    let req = Request::Create {
        op,
        req: CreateRequest {
            path: body["path"].as_str().unwrap_or("").into(),
            data: Some(data),
            acl,
            flags: mode as i32,
        },
    };
    match call(&console, &login, req).await {
        Ok(Zk::Create2(c)) => {
            tracing::info!(user = %login.user, path = %c.path, "console: created");
            Json(json!({ "path": c.path, "stat": stat_json(&c.stat) })).into_response()
        }
        Ok(Zk::Path(p)) => {
            tracing::info!(user = %login.user, path = %p, "console: created");
            Json(json!({ "path": p })).into_response()
        }
        Ok(_) => error(StatusCode::BAD_GATEWAY, "Unexpected", "an unexpected reply"),
        Err(e) => failed(e),
    }
}

/// `PUT /api/node {path, data, version}`: the version the page loaded, so an edit made
/// meanwhile by someone else is refused with BadVersion rather than overwritten.
pub async fn set(
    State(console): State<Arc<Console>>,
    Extension(login): Extension<Arc<Login>>,
    Json(body): Json<Value>,
) -> Response {
    let Some(data) = data_of(&body) else {
        return not_base64();
    };
    if let Some(refused) = too_large(&console, &data) {
        return refused;
    }
    let path = body["path"].as_str().unwrap_or("").to_owned();
    let Some(version) = body["version"]
        .as_i64()
        .or(body["version"].is_null().then_some(-1))
        .and_then(|v| i32::try_from(v).ok())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadArguments",
            "version must be a number",
        );
    };
    let req = Request::SetData(SetDataRequest {
        path: path.clone(),
        data: Some(data),
        version,
    });
    match call(&console, &login, req).await {
        Ok(Zk::Stat(s)) => {
            tracing::info!(user = %login.user, %path, version = s.version, "console: set");
            Json(json!({ "path": path, "stat": stat_json(&s) })).into_response()
        }
        Ok(_) => error(StatusCode::BAD_GATEWAY, "Unexpected", "an unexpected reply"),
        Err(e) => failed(e),
    }
}

/// `DELETE /api/node?path=&version=&recursive=true`: recursively in one `multi`, children
/// first, so it deletes all or nothing: a wrong version, or a child created meanwhile, leaves
/// the subtree whole. A subtree larger than [`MAX_RECURSIVE_DELETE`] is refused.
pub async fn delete(
    State(console): State<Arc<Console>>,
    Extension(login): Extension<Arc<Login>>,
    Query(q): Params,
) -> Response {
    let path = param(&q, "path").to_owned();
    let Some(version) = version_of(param(&q, "version")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadArguments",
            "version must be a number",
        );
    };
    if path == "/" {
        return error(
            StatusCode::BAD_REQUEST,
            "BadArguments",
            "the root cannot be deleted",
        );
    }
    let mut doomed = vec![path.clone()];
    if param(&q, "recursive") == "true" {
        match subtree(&console, &login, &path).await {
            Ok(all) => doomed = all,
            Err(Subtree::Call(e)) => return failed(e),
            Err(Subtree::TooLarge) => {
                let why = format!(
                    "more than {MAX_RECURSIVE_DELETE} nodes under {path}; delete its subtrees one at a time"
                );
                return error(StatusCode::PAYLOAD_TOO_LARGE, "TooLarge", &why);
            }
        }
    }
    let bytes: usize = doomed.iter().map(|p| p.len() + 32).sum();
    if bytes + 1024 > console.status.cfg.max_frame_len {
        let why = format!("{path}'s subtree is too large for one request (jute.maxbuffer); delete its subtrees one at a time");
        return error(StatusCode::PAYLOAD_TOO_LARGE, "TooLarge", &why);
    }
    // Deepest first: a parent goes once its children have.
    let deletes = doomed
        .iter()
        .enumerate()
        .rev()
        .map(|(i, p)| {
            Request::Delete(PathVersionRequest {
                path: p.clone(),
                version: if i == 0 { version } else { -1 },
            })
        })
        .collect();
    match call(&console, &login, Request::Multi(deletes)).await {
        Ok(Zk::Multi(results)) => {
            if let Some(code) = first_failure(&results) {
                return failed(CallError::Zk(code));
            }
        }
        Ok(_) => return error(StatusCode::BAD_GATEWAY, "Unexpected", "an unexpected reply"),
        Err(e) => return failed(e),
    }
    tracing::info!(user = %login.user, %path, nodes = doomed.len(), "console: deleted");
    Json(json!({ "path": path, "deleted": doomed.len() })).into_response()
}

/// The error that failed a multi (the others in it are marked RuntimeInconsistency or Ok).
fn first_failure(results: &[MultiResult]) -> Option<ErrorCode> {
    results.iter().find_map(|r| match r {
        MultiResult::Error(ErrorCode::Ok | ErrorCode::RuntimeInconsistency) => None,
        MultiResult::Error(code) => Some(*code),
        MultiResult::Ok(..) => None,
    })
}

/// A version from a form: a number, or nothing for "any version" (-1).
fn version_of(text: &str) -> Option<i32> {
    match text {
        "" => Some(-1),
        t => t.parse().ok(),
    }
}

/// Why a subtree was not listed.
enum Subtree {
    Call(CallError),
    TooLarge,
}

/// `root` and everything under it, parents before children.
async fn subtree(console: &Console, login: &Login, root: &str) -> Result<Vec<String>, Subtree> {
    let mut all = vec![root.to_owned()];
    let mut next = 0;
    while next < all.len() {
        let req = Request::GetChildren(PathWatchRequest {
            path: all[next].clone(),
            watch: false,
        });
        let names = match call(console, login, req).await {
            Ok(Zk::GetChildren(n)) => n,
            Ok(_) => Vec::new(),
            Err(CallError::Zk(ErrorCode::NoNode)) if next > 0 => Vec::new(),
            Err(e) => return Err(Subtree::Call(e)),
        };
        let parent = all[next].clone();
        all.extend(names.iter().map(|n| child_path(&parent, n)));
        if all.len() > MAX_RECURSIVE_DELETE {
            return Err(Subtree::TooLarge);
        }
        next += 1;
    }
    Ok(all)
}

/// `GET /api/events`: server-sent events for every change under `/` that this login may see,
/// from one persistent recursive watch on its session. A view that falls behind gets a
/// `resync` event and reloads what it shows.
pub async fn events(
    State(console): State<Arc<Console>>,
    Extension(login): Extension<Arc<Login>>,
) -> Response {
    let session = match login.session(&console.dialer).await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let rx = session.events();
    let watch = Request::AddWatch(AddWatchRequest {
        path: "/".into(),
        mode: add_watch_mode::PERSISTENT_RECURSIVE,
    });
    if let Err(e) = session.call(watch).await {
        return failed(e);
    }
    let global = console.status.limits.clone();
    let alive = Arc::downgrade(&session);
    drop(session);
    let stopping = console.stopping();
    let stream = futures_util::stream::unfold((rx, stopping), move |(mut rx, mut stopping)| {
        let (global, alive) = (global.clone(), alive.clone());
        async move {
            let event = loop {
                let next = tokio::select! {
                    next = tokio::time::timeout(SESSION_CHECK, rx.recv()) => next,
                    _ = stopping.wait_for(|s| *s) => return None,
                };
                match next {
                    Ok(Ok(Event { kind, path })) => {
                        let change = json!({ "type": format!("{kind:?}"), "path": path });
                        break sse::Event::default()
                            .event("change")
                            .data(change.to_string());
                    }
                    Ok(Err(RecvError::Lagged(n))) => {
                        global.console_events_lagged.fetch_add(1, Relaxed);
                        tracing::info!(missed = n, "a live console view fell behind; it reloads");
                        break sse::Event::default().event("resync").data("{}");
                    }
                    Ok(Err(RecvError::Closed)) => return None,
                    // The page's EventSource reconnects, and gets the login's next session.
                    Err(_) if !alive.upgrade().is_some_and(|s| s.is_alive()) => return None,
                    Err(_) => {}
                }
            };
            Some((Ok::<_, std::convert::Infallible>(event), (rx, stopping)))
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_numbers_or_any() {
        assert_eq!(version_of(""), Some(-1));
        assert_eq!(version_of("7"), Some(7));
        assert_eq!(version_of("seven"), None);
        assert_eq!(version_of("99999999999"), None);
    }

    #[test]
    fn a_failed_multi_names_the_error_that_failed_it() {
        let results = [
            MultiResult::Error(ErrorCode::Ok),
            MultiResult::Error(ErrorCode::BadVersion),
            MultiResult::Error(ErrorCode::RuntimeInconsistency),
        ];
        assert_eq!(first_failure(&results), Some(ErrorCode::BadVersion));
        let ok = [MultiResult::Ok(OpCode::Delete, Zk::Empty)];
        assert_eq!(first_failure(&ok), None);
    }

    #[test]
    fn only_sessions_own_ephemerals() {
        assert!(is_ephemeral(0x0100_0000_0000_0001));
        assert!(!is_ephemeral(0));
        assert!(!is_ephemeral(ephemeral_owner::CONTAINER));
        assert!(!is_ephemeral(ephemeral_owner::for_ttl(5000)));
    }

    #[test]
    fn children_paths_join_without_double_slashes() {
        assert_eq!(child_path("/", "a"), "/a");
        assert_eq!(child_path("/a", "b"), "/a/b");
    }
}
