//! Requests answered from this member's tree (reads, watches, `whoAmI`), and the ones that are
//! answered here without the log: `auth`, `sync`'s wait for the leader's read index, and
//! read-only sessions' refusals.

use super::{Core, Effect};
use crate::watch::{ConnId, WatchKind, WatcherType};
use bytes::Bytes;
use corral_proto::codes::{add_watch_mode, perms};
use corral_proto::records::*;
use corral_proto::reply::{children_body, notification_frame, reply_frame, NO_ZXID};
use corral_proto::{ErrorCode, EventType, MultiResult, OpCode, Request, Response};
use corral_tree::acl;
use std::time::Instant;

impl Core {
    /// A read-only session's request that is not answered from the tree: writes and `sync` get
    /// NotReadOnly, as from ZooKeeper's read-only server; closing the session is local.
    /// Returns whether the request was handled here.
    pub(super) fn refused_read_only(
        &mut self,
        conn: ConnId,
        xid: i32,
        request: &Request,
        received: Instant,
    ) -> bool {
        let zxid = self.tree.last_zxid();
        match request {
            Request::CloseSession => {
                let id = self.conns[&conn].session_id;
                self.read_only.close(id);
                self.finish(conn, xid, zxid, Ok(Response::Empty), received);
                self.session_closed(conn);
            }
            r if r.is_write() || matches!(r, Request::Sync(_)) => {
                self.finish(conn, xid, zxid, Err(ErrorCode::NotReadOnly), received);
            }
            _ => return false,
        }
        true
    }

    /// `sync`: answered once this member has applied what the leader had committed when asked.
    /// The connection's later reads wait for it, as they wait for its writes.
    pub(super) fn sync(&mut self, conn: ConnId, xid: i32, path: String, received: Instant) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.in_flight += 1;
            c.syncs_in_flight += 1;
        }
        self.effect(Effect::SyncIndex(super::SyncRequest {
            conn,
            xid,
            path,
            received,
        }));
    }

    pub(super) fn auth(&mut self, conn: ConnId, xid: i32, p: AuthPacket) {
        let ids = match p.scheme.as_str() {
            "digest" => {
                let id = acl::digest_id(&String::from_utf8_lossy(&p.auth));
                let mut ids = Vec::new();
                if self.cfg.super_digest.as_deref() == Some(id.as_str()) {
                    ids.push(Id::new("super", ""));
                }
                ids.push(Id::new("digest", &id));
                Some(ids)
            }
            "ip" => Some(Vec::new()),
            _ => None,
        };
        self.answered(conn);
        let zxid = self.tree.last_zxid();
        match ids {
            Some(ids) => {
                self.add_ids(conn, ids);
                self.send(conn, reply_frame(xid, 0, &Ok(Response::Empty)));
            }
            None => {
                let peer = self.conns.get(&conn).map(|c| c.peer);
                if p.scheme == "sasl" {
                    // As ZooKeeper's SASL provider: SASL is negotiated with SASL packets.
                    tracing::warn!(
                        ?peer,
                        "an auth packet with scheme sasl (SASL takes SASL packets); closing"
                    );
                } else {
                    tracing::warn!(?peer, scheme = %p.scheme, "authentication with an unknown scheme; closing");
                }
                self.stats.auth_refused += 1;
                self.send(
                    conn,
                    reply_frame(xid, zxid.min(0), &Err(ErrorCode::AuthFailed)),
                );
                self.close_connection(conn);
            }
        }
    }

    pub(super) fn read(
        &mut self,
        conn: ConnId,
        session_id: i64,
        req: Request,
    ) -> Result<Response, ErrorCode> {
        let auth = &self.conns[&conn].auth;
        let req_op = req.op_code();
        match req {
            Request::Ping => Ok(Response::Empty),
            Request::Exists(r) => {
                if r.path.contains('\0') {
                    return Err(ErrorCode::BadArguments);
                }
                let node = self.tree.get(&r.path);
                // ZooKeeper 3.8.4+ and 3.9.2+ require READ on an existing node (ZOOKEEPER-2590).
                if let Some(n) = node {
                    acl::check(self.tree.acl(n), perms::READ, auth)?;
                }
                let stat = node.map(|n| n.stat());
                if r.watch {
                    // Registered even when the node is missing: it fires on NodeCreated.
                    self.watches.add(conn, &r.path, WatchKind::Data);
                }
                stat.map(Response::Stat).ok_or(ErrorCode::NoNode)
            }
            Request::GetData(r) => {
                let (data, stat) = self.readable(&r.path, auth)?;
                if r.watch {
                    self.watches.add(conn, &r.path, WatchKind::Data);
                }
                Ok(Response::GetData(GetDataResponse { data, stat }))
            }
            Request::GetChildren(r) | Request::GetChildren2(r) => {
                let with_stat = matches!(req_op, OpCode::GetChildren2);
                let body = self.children_body(&r.path, auth, with_stat)?;
                if r.watch {
                    self.watches.add(conn, &r.path, WatchKind::Child);
                }
                Ok(Response::Raw(body))
            }
            Request::GetAcl(r) => {
                let node = self.tree.get(&r.path).ok_or(ErrorCode::NoNode)?;
                let list = self.tree.acl(node);
                acl::check(list, perms::READ | perms::ADMIN, auth)?;
                let mut list = list.to_vec();
                if acl::check(&list, perms::ADMIN, auth).is_err() {
                    // Without ADMIN, digest hashes are not shown (ZooKeeper replaces them by "x").
                    for a in list.iter_mut().filter(|a| a.id.scheme == "digest") {
                        let user = a.id.id.split(':').next().unwrap_or("").to_owned();
                        a.id.id = format!("{user}:x");
                    }
                }
                Ok(Response::GetAcl(GetAclResponse {
                    acl: list,
                    stat: node.stat(),
                }))
            }
            Request::GetAllChildrenNumber(r) => {
                let node = self.tree.get(&r.path).ok_or(ErrorCode::NoNode)?;
                acl::check(self.tree.acl(node), perms::READ, auth)?;
                Ok(Response::Count(self.tree.descendant_count(&r.path) as i32))
            }
            Request::GetEphemerals(r) => {
                let prefix = r.path.trim();
                let all = self.tree.ephemerals_of(session_id);
                Ok(Response::Ephemerals(
                    if prefix.is_empty() || prefix == "/" {
                        all
                    } else {
                        all.into_iter().filter(|p| p.starts_with(&r.path)).collect()
                    },
                ))
            }
            Request::Sync(r) => Ok(Response::Path(r.path)),
            Request::WhoAmI => Ok(Response::WhoAmI(
                auth.iter()
                    .map(|id| ClientInfo {
                        auth_scheme: id.scheme.clone(),
                        user: acl::user_name(id),
                    })
                    .collect(),
            )),
            Request::AddWatch(r) => {
                let kind = match r.mode {
                    add_watch_mode::PERSISTENT => WatchKind::Persistent,
                    add_watch_mode::PERSISTENT_RECURSIVE => WatchKind::Recursive,
                    _ => return Err(ErrorCode::MarshallingError),
                };
                self.watches.add(conn, &r.path, kind);
                Ok(Response::ErrorBody(0))
            }
            Request::CheckWatches(ref r) | Request::RemoveWatches(ref r) => {
                let which =
                    WatcherType::from_i32(r.watcher_type).ok_or(ErrorCode::MarshallingError)?;
                let found = if matches!(req, Request::RemoveWatches(_)) {
                    self.watches.remove(conn, &r.path, which)
                } else {
                    self.watches.contains(conn, &r.path, which)
                };
                found.then_some(Response::Empty).ok_or(ErrorCode::NoWatcher)
            }
            Request::SetWatches(w) => self.read(conn, session_id, Request::SetWatches2(w.into())),
            Request::SetWatches2(w) => {
                self.set_watches(conn, w);
                Ok(Response::Empty)
            }
            Request::MultiRead(ops) => {
                // ZooKeeper's multiRead sets no watches, whatever the ops' flags say.
                let results = ops
                    .into_iter()
                    .map(|op| match op {
                        Request::GetData(r) => {
                            Request::GetData(PathWatchRequest { watch: false, ..r })
                        }
                        Request::GetChildren(r) => {
                            Request::GetChildren(PathWatchRequest { watch: false, ..r })
                        }
                        other => other,
                    })
                    .map(|op| {
                        let code = op.op_code();
                        match self.read(conn, session_id, op) {
                            Ok(resp) => MultiResult::Ok(code, resp),
                            Err(e) => MultiResult::Error(e),
                        }
                    })
                    .collect();
                Ok(Response::Multi(results))
            }
            _ => Err(ErrorCode::Unimplemented),
        }
    }

    /// A node's data (`None` when null) and Stat, if `auth` may read it.
    pub(super) fn readable(
        &self,
        path: &str,
        auth: &[Id],
    ) -> Result<(Option<Bytes>, Stat), ErrorCode> {
        let node = self.tree.get(path).ok_or(ErrorCode::NoNode)?;
        acl::check(self.tree.acl(node), perms::READ, auth)?;
        Ok((node.data.to_buffer(), node.stat()))
    }

    /// getChildren's (or getChildren2's) reply body, written straight from the tree.
    pub(super) fn children_body(
        &self,
        path: &str,
        auth: &[Id],
        with_stat: bool,
    ) -> Result<Bytes, ErrorCode> {
        let node = self.tree.get(path).ok_or(ErrorCode::NoNode)?;
        acl::check(self.tree.acl(node), perms::READ, auth)?;
        let stat = with_stat.then(|| node.stat());
        Ok(children_body(self.tree.child_names(node), stat.as_ref()))
    }

    /// Restores a reconnecting client's watches; fires at once what changed after `relative_zxid`.
    pub(super) fn set_watches(&mut self, conn: ConnId, w: SetWatches2) {
        let relative_zxid = w.relative_zxid;
        let (data, exist, child) = (w.data_watches, w.exist_watches, w.child_watches);
        let (persistent, recursive) = (w.persistent_watches, w.persistent_recursive_watches);
        let mut fire = Vec::new();
        for p in data {
            match self.tree.get(&p) {
                None => fire.push((p, EventType::NodeDeleted)),
                Some(n) if n.mzxid > relative_zxid => fire.push((p, EventType::NodeDataChanged)),
                Some(_) => self.watches.add(conn, &p, WatchKind::Data),
            }
        }
        for p in exist {
            match self.tree.get(&p) {
                Some(_) => fire.push((p, EventType::NodeCreated)),
                None => self.watches.add(conn, &p, WatchKind::Data),
            }
        }
        for p in child {
            match self.tree.get(&p) {
                None => fire.push((p, EventType::NodeDeleted)),
                Some(n) if n.pzxid > relative_zxid => {
                    fire.push((p, EventType::NodeChildrenChanged))
                }
                Some(_) => self.watches.add(conn, &p, WatchKind::Child),
            }
        }
        for p in persistent {
            self.watches.add(conn, &p, WatchKind::Persistent);
        }
        for p in recursive {
            self.watches.add(conn, &p, WatchKind::Recursive);
        }
        for (p, kind) in fire {
            self.send(conn, notification_frame(&p, kind, NO_ZXID));
        }
    }
}
