//! The admin server's commands, answered by the core: ZooKeeper's AdminServer commands
//! (`/commands/<name>`, JSON with ZooKeeper's keys), `/metrics` (Prometheus) and `/ready`.
//! No HTTP here: [`crate::admin_http`] carries these answers over the wire.

use crate::core::status::Detail;
use crate::metrics;
use crate::stats::op_abbrev;
use crate::status::{Status, StatusSource};
use crate::status::{NOT_SERVING, VERSION_LINE};
use serde_json::{json, Map, Value};

/// What the admin server asks the core.
#[derive(Debug, Clone)]
pub enum AdminQuery {
    /// `/commands/<name>` (a command's name or one of its aliases).
    Command(String),
    /// `/metrics`.
    Metrics,
    /// `/ready`.
    Ready,
}

/// An answer, ready for HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// ZooKeeper's admin commands: the primary name, then its aliases (the four-letter words).
pub const COMMANDS: &[(&str, &[&str])] = &[
    ("configuration", &["conf", "config"]),
    ("connection_stat_reset", &["crst"]),
    ("connections", &["cons"]),
    ("dirs", &[]),
    ("dump", &[]),
    ("environment", &["envi", "env"]),
    ("get_trace_mask", &["gtmk"]),
    ("hash", &[]),
    ("initial_configuration", &["icfg"]),
    ("is_read_only", &["isro"]),
    ("last_snapshot", &["lsnp"]),
    ("leader", &["lead"]),
    ("monitor", &["mntr"]),
    ("observer_connection_stat_reset", &["orst"]),
    ("observers", &["obsr"]),
    ("ruok", &[]),
    ("server_stats", &["srvr"]),
    ("set_trace_mask", &["stmk"]),
    ("stat_reset", &["srst"]),
    ("stats", &["stat"]),
    ("system_properties", &["sysp"]),
    ("voting_view", &[]),
    ("watch_summary", &["wchs"]),
    ("watches", &["wchc"]),
    ("watches_by_path", &["wchp"]),
    ("zabstate", &[]),
];

/// The primary name of a command given by name or alias.
pub fn primary_name(name: &str) -> Option<&'static str> {
    COMMANDS
        .iter()
        .find(|(primary, aliases)| *primary == name || aliases.contains(&name))
        .map(|(primary, _)| *primary)
}

/// `/commands`: links to every command, as ZooKeeper lists them.
pub fn command_index() -> String {
    COMMANDS
        .iter()
        .map(|(name, _)| format!("<a href=\"/commands/{name}\">{name}</a>\n<br/>\n"))
        .collect()
}

fn json_reply(mut body: Map<String, Value>, command: &str, error: Option<String>) -> AdminReply {
    body.insert("command".into(), Value::from(command));
    body.insert("error".into(), error.map_or(Value::Null, Value::from));
    AdminReply {
        status: 200,
        content_type: "application/json",
        body: serde_json::to_string_pretty(&Value::Object(body)).expect("JSON of plain values"),
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The admin commands ZooKeeper answers while it does not serve clients; the others answer
/// with an error saying so.
const ANSWERED_WHEN_NOT_SERVING: &[&str] = &[
    "environment",
    "get_trace_mask",
    "monitor",
    "set_trace_mask",
    "system_properties",
    "zabstate",
    "is_read_only",
    "ruok",
];

/// The lists a query needs in its snapshot.
fn detail_for(query: &AdminQuery) -> Detail {
    let command = match query {
        AdminQuery::Command(name) => primary_name(name).unwrap_or(""),
        _ => "",
    };
    Detail {
        watches: matches!(command, "watches" | "watches_by_path"),
        sessions: command == "dump",
        digest: command == "hash",
    }
}

/// Answers an admin server's query.
pub async fn answer(source: &StatusSource, query: AdminQuery) -> AdminReply {
    let Some(status) = source.status(detail_for(&query)).await else {
        return AdminReply {
            status: 503,
            content_type: "text/plain; charset=utf-8",
            body: "stopping\n".into(),
        };
    };
    if let AdminQuery::Command(name) = &query {
        let reset = match primary_name(name) {
            Some("connection_stat_reset" | "observer_connection_stat_reset") => Some(true),
            Some("stat_reset") => Some(false),
            _ => None,
        };
        if let (Some(connections), true) = (reset, status.snap.answers_status()) {
            source.reset(connections).await;
        }
    }
    status.admin(query)
}

impl Status {
    /// The answer to `query` from this status (taken with [`detail_for`] of it).
    pub fn admin(&self, query: AdminQuery) -> AdminReply {
        match query {
            AdminQuery::Command(name) => match primary_name(&name) {
                Some(primary)
                    if !self.snap.answers_status()
                        && !ANSWERED_WHEN_NOT_SERVING.contains(&primary) =>
                {
                    json_reply(Map::new(), primary, Some(NOT_SERVING.into()))
                }
                Some(primary) => match self.admin_command(primary) {
                    Ok(body) => json_reply(body, primary, None),
                    Err(e) => json_reply(Map::new(), primary, Some(e)),
                },
                // ZooKeeper answers an unknown command with 200 and an error field.
                None => json_reply(Map::new(), &name, Some(format!("Unknown command: {name}"))),
            },
            AdminQuery::Metrics => AdminReply {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: metrics::render_prometheus(&self.metrics()),
            },
            AdminQuery::Ready => {
                let (status, body) = match self.not_ready_because() {
                    None => (200, "ready\n".to_owned()),
                    Some(why) => (503, format!("not ready: {why}\n")),
                };
                AdminReply {
                    status,
                    content_type: "text/plain; charset=utf-8",
                    body,
                }
            }
        }
    }

    /// Why this member cannot serve clients now, if it cannot.
    fn not_ready_because(&self) -> Option<&'static str> {
        if self.snap.draining {
            Some("stopping")
        } else if !self.snap.serving {
            Some("not serving: no contact with a quorum within the lease")
        } else if self.snap.leader_id.is_none() {
            Some("no leader is known")
        } else {
            None
        }
    }

    fn admin_command(&self, name: &str) -> Result<Map<String, Value>, String> {
        let body = match name {
            "configuration" => self.configuration_json(),
            // (Resets were asked of the core before this snapshot was taken.)
            "connection_stat_reset" | "observer_connection_stat_reset" => json!({}),
            "connections" => json!({
                "connections": self.connections_json(true),
                "secure_connections": [],
            }),
            "dirs" => {
                let (data, log) = self.dir_sizes();
                json!({ "datadir_size": data, "logdir_size": log })
            }
            "dump" => self.dump_json(),
            "environment" => Value::Object(
                self.environment()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), Value::from(v)))
                    .collect(),
            ),
            "get_trace_mask" => json!({ "tracemask": 0 }),
            "set_trace_mask" => return Err("setTraceMask requires long traceMask argument".into()),
            // ZooKeeper keeps a digest every 128 zxids; Corral computes the current one when asked
            // (a full pass over the tree), which is what comparing members needs.
            "hash" => json!({ "digests": [{
                "zxid": self.snap.last_zxid,
                "digest": self.snap.digest.unwrap_or(0) as i64,
                "digest_version": 2,
            }] }),
            "initial_configuration" => {
                json!({ "initial_configuration": self.cfg.initial_text })
            }
            "is_read_only" => json!({ "read_only": self.snap.read_only }),
            "last_snapshot" => {
                let (zxid, secs) = self.snap.last_snapshot;
                json!({ "zxid": format!("{zxid:x}"), "timestamp": secs })
            }
            "leader" => self.leader_json()?,
            "monitor" => Value::Object(metrics::render_json(&self.metrics())),
            "observers" => json!({ "synced_observers": 0, "observers": [] }),
            "ruok" => json!({}),
            "server_stats" => Value::Object(self.server_stats_json()),
            "stat_reset" => json!({}),
            "stats" => {
                let mut m = self.server_stats_json();
                m.insert("connections".into(), self.connections_json(false).into());
                m.insert("secure_connections".into(), json!([]));
                Value::Object(m)
            }
            "system_properties" => json!({
                "os.arch": std::env::consts::ARCH,
                "os.name": std::env::consts::OS,
                "zookeeper.4lw.commands.whitelist": self.cfg.four_letter_whitelist.join(","),
                "zookeeper.enforceQuota": self.cfg.enforce_quota.to_string(),
            }),
            "voting_view" => self.voting_view_json(),
            "watch_summary" => {
                let (total, paths, conns) = self.snap.watch_counts;
                json!({ "num_connections": conns, "num_paths": paths, "num_total_watches": total })
            }
            "watches" => {
                let mut m = Map::new();
                for (sid, paths) in &self.snap.watches_by_session {
                    m.insert(sid.to_string(), paths.clone().into());
                }
                json!({ "session_id_to_watched_paths": m })
            }
            "watches_by_path" => {
                let mut m = Map::new();
                for (path, sids) in &self.snap.watches_by_path {
                    m.insert(path.clone(), sids.clone().into());
                }
                json!({ "path_to_session_ids": m })
            }
            "zabstate" => {
                let voting = !self.replica.standalone();
                let state = if voting { self.snap.mode } else { "" };
                json!({ "voting": voting, "zabstate": state.to_uppercase() })
            }
            _ => unreachable!("every primary name is handled"),
        };
        Ok(object(body))
    }

    fn configuration_json(&self) -> Value {
        let c = &self.cfg;
        let dir = c.data_dir.join("version-2").display().to_string();
        json!({
            "client_port": c.client_port,
            "data_dir": dir,
            "data_log_dir": dir,
            "tick_time": c.tick_time_ms,
            "max_client_cnxns": c.max_client_cnxns,
            "min_session_timeout": c.min_session_timeout_ms,
            "max_session_timeout": c.max_session_timeout_ms,
            "server_id": if c.servers.is_empty() { 0 } else { c.my_id },
            "client_port_listen_backlog": -1,
        })
    }

    fn connections_json(&self, full: bool) -> Vec<Value> {
        self.snap
            .conns
            .iter()
            .map(|c| {
                let s = &c.stats;
                let mut v = json!({
                    "remote_socket_address": c.peer.to_string(),
                    "interest_ops": 1,
                    "outstanding_requests": 0,
                    "packets_received": s.received,
                    "packets_sent": s.sent,
                });
                if full {
                    let m = v.as_object_mut().expect("an object");
                    let extra = json!({
                        "session_id": c.session_id,
                        "last_operation": op_abbrev(s.last_op),
                        "established": s.established_ms,
                        "session_timeout": c.timeout_ms,
                        "last_cxid": s.last_cxid,
                        "last_zxid": s.last_zxid,
                        "last_response_time": s.last_response_ms,
                        "last_latency": s.last_latency_ms,
                        "min_latency": s.latency.min(),
                        "avg_latency": s.latency.avg() as u64,
                        "max_latency": s.latency.max_ms,
                    });
                    m.extend(object(extra));
                }
                v
            })
            .collect()
    }

    fn dump_json(&self) -> Value {
        let tick = i64::from(self.cfg.tick_time_ms.max(1));
        let mut expiry: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
        for s in &self.snap.sessions {
            // ZooKeeper groups sessions into buckets one tick wide.
            let bucket = (s.expires_ms / tick + 1) * tick;
            expiry.entry(bucket).or_default().push(s.id);
        }
        let expiry: Map<String, Value> = expiry
            .into_iter()
            .map(|(at, ids)| (at.to_string(), ids.into()))
            .collect();
        let mut ephemerals = Map::new();
        for (id, paths) in &self.snap.ephemerals {
            ephemerals.insert(id.to_string(), paths.clone().into());
        }
        json!({
            "expiry_time_to_session_ids": expiry,
            "session_id_to_ephemeral_paths": ephemerals,
        })
    }

    fn server_stats_json(&self) -> Map<String, Value> {
        let l = &self.snap.stats.latency;
        let (data, log) = self.dir_sizes();
        let response =
            json!({ "last_buffer_size": -1, "min_buffer_size": -1, "max_buffer_size": -1 });
        object(json!({
            "version": VERSION_LINE,
            "read_only": self.snap.read_only,
            "server_stats": {
                "packets_sent": self.snap.stats.packets_sent,
                "packets_received": self.snap.stats.packets_received,
                "fsync_threshold_exceed_count": 0,
                "client_response_stats": response,
                "data_dir_size": data,
                "log_dir_size": log,
                "provider_null": false,
                "server_state": self.snap.mode,
                "last_processed_zxid": self.snap.last_zxid,
                "outstanding_requests": self.snap.outstanding_requests,
                "avg_latency": l.avg(),
                "max_latency": l.max_ms,
                "min_latency": l.min(),
                "num_alive_client_connections": self.snap.conns.len(),
                "auth_failed_count": self.limits.tls_failed.load(std::sync::atomic::Ordering::Relaxed),
                "non_mtlsremote_conn_count": 0,
                "non_mtlslocal_conn_count": 0,
                "uptime": self.snap.uptime.as_millis() as u64,
            },
            "client_response": response,
            "node_count": self.snap.node_count + 1,
        }))
    }

    fn leader_json(&self) -> Result<Value, String> {
        let membership = self.replica.membership();
        let members = &membership.members;
        if self.replica.standalone() {
            // As ZooKeeper: a standalone server has no quorum peer to ask.
            return Err("server is not initialized".into());
        }
        let leader = self.snap.leader_id;
        let leader_ip = leader.and_then(|id| members.get(&id)).map(|m| {
            m.raft_addr
                .rsplit_once(':')
                .map_or("", |(h, _)| h)
                .to_owned()
        });
        Ok(json!({
            "is_leader": leader == Some(self.replica.id()),
            "leader_id": leader.map_or(-1, |id| id as i64),
            "leader_ip": leader_ip.unwrap_or_default(),
        }))
    }

    fn voting_view_json(&self) -> Value {
        let membership = self.replica.membership();
        let mut view = Map::new();
        if !self.replica.standalone() {
            for (id, m) in &membership.members {
                let line = crate::ensemble::server_spec(*id, m);
                let spec = line.split_once('=').map_or("", |(_, s)| s).to_owned();
                view.insert(id.to_string(), vec![spec].into());
            }
        }
        json!({ "current_config": view })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_name_their_command() {
        assert_eq!(primary_name("mntr"), Some("monitor"));
        assert_eq!(primary_name("monitor"), Some("monitor"));
        assert_eq!(primary_name("conf"), Some("configuration"));
        assert_eq!(primary_name("bogus"), None);
    }

    #[test]
    fn unknown_command_is_an_error_field() {
        let r = json_reply(Map::new(), "bogus", Some("Unknown command: bogus".into()));
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"], "Unknown command: bogus");
        assert_eq!(v["command"], "bogus");
    }
}
