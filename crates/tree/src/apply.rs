//! Applying stamped entries: the only way the tree changes.
//!
//! An [`Entry`] carries everything a write depends on that is not already in the tree: its zxid,
//! the time, the session and that session's identities, all stamped by whoever orders the log.
//! `apply` reads no clock and no randomness, so every replica that applies the same entries in
//! the same order holds the same tree and gives the same answers. Validation happens here too
//! (not before the entry is logged): the checks see exactly the state the write lands on.
//!
//! A multi runs its operations one by one, recording how to undo each; the first failure rolls
//! the earlier ones back, so the tree never shows a partial multi.

use crate::acl;
use crate::path;
use crate::tree::{
    container_emptied, key, ttl_expired, DataTree, Node, CONFIG_PATH, QUOTA_PATH, ZOOKEEPER_PATH,
};
use corral_proto::codes::{ephemeral_owner, perms};
use corral_proto::records::*;
use corral_proto::{CreateMode, ErrorCode, EventType, MultiResult, OpCode, Request, Response};
use std::sync::Arc;

/// One ordered write, ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub zxid: i64,
    /// Wall-clock milliseconds stamped when the entry was ordered; becomes ctime/mtime.
    pub time_ms: i64,
    pub session_id: i64,
    /// The session's identities when it sent the request (ip, digest, super): ACL checks use them.
    pub auth: Vec<Id>,
    /// The ACL schemes the member that proposed it has providers for (see [`acl::Providers`]).
    pub providers: acl::Providers,
    pub txn: Txn,
}

/// What an entry does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txn {
    /// A new session with its negotiated timeout.
    CreateSession { timeout_ms: i32 },
    /// The session ends, by the client's request or because it expired; its ephemerals go.
    CloseSession,
    /// A client write: create*, delete, setData, setACL, check, multi, reconfig, deleteContainer.
    Client(Request),
    /// The server's reaper removes a container or TTL node, if it is still due at `time_ms`.
    Reap { path: String },
    /// The ensemble's membership is published in `/zookeeper/config`: `text` is its
    /// `server.N=...` lines; applying adds `version=` with this entry's zxid in hex, as
    /// ZooKeeper's reconfig does (the same lines again make a new version, as a reconfig that
    /// changes nothing does in ZooKeeper).
    SetConfig { text: String },
    /// ZooKeeper's ErrorTxn: a request refused before it reached the tree (a reconfig) still
    /// spends a zxid, and its client is answered `code` when it is applied.
    Error { code: i32 },
}

/// A change that fires watches. `acl` is the ACL of the node the event names (for a deleted
/// node, the ACL it had): a watcher without READ on it is not told (ZooKeeper's CVE-2024-23944 fix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub path: String,
    pub kind: EventType,
    pub acl: Arc<[Acl]>,
}

/// What applying an entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub zxid: i64,
    pub result: Result<Response, ErrorCode>,
    pub events: Vec<Event>,
    /// Set when a session was closed by this entry.
    pub closed_session: Option<i64>,
}

/// How to take back one step of a multi.
enum Undo {
    Created {
        path: String,
        parent_cversion: i32,
        parent_pzxid: i64,
    },
    Deleted {
        path: String,
        node: Node,
        acl: Arc<[Acl]>,
        parent_pzxid: i64,
    },
    DataSet {
        path: String,
        data: crate::tree::Data,
        version: i32,
        mzxid: i64,
        mtime: i64,
    },
    AclSet {
        path: String,
        acl: Vec<Acl>,
        aversion: i32,
    },
}

struct Ctx<'a> {
    zxid: i64,
    time_ms: i64,
    session_id: i64,
    auth: &'a [Id],
    providers: acl::Providers,
}

/// `/zookeeper/config`'s data without its last line, `version=...`: the membership it shows.
pub fn config_lines(data: &[u8]) -> &[u8] {
    match data.iter().rposition(|b| *b == b'\n') {
        Some(end) if data[end + 1..].starts_with(b"version=") => &data[..=end],
        _ if data.starts_with(b"version=") => &[],
        _ => data,
    }
}

/// The version `/zookeeper/config`'s data names (its `version=` line, hex), 0 when none.
pub fn config_version(data: &[u8]) -> i64 {
    let last = data.rsplit(|b| *b == b'\n').next().unwrap_or_default();
    last.strip_prefix(b"version=")
        .and_then(|hex| std::str::from_utf8(hex).ok())
        .and_then(|hex| i64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

/// `checkAndIncVersion`: −1 matches any version.
fn next_version(current: i32, expected: i32) -> Result<i32, ErrorCode> {
    if expected != -1 && expected != current {
        return Err(ErrorCode::BadVersion);
    }
    Ok(current.wrapping_add(1))
}

impl DataTree {
    /// Applies one entry. Entries must come in zxid order.
    pub fn apply(&mut self, entry: &Entry) -> Applied {
        assert!(
            entry.zxid > self.last_zxid,
            "entries must be applied in zxid order: {} after {}",
            entry.zxid,
            self.last_zxid
        );
        self.last_zxid = entry.zxid;
        let ctx = Ctx {
            zxid: entry.zxid,
            time_ms: entry.time_ms,
            session_id: entry.session_id,
            auth: &entry.auth,
            providers: entry.providers,
        };
        let mut events = Vec::new();
        let mut closed_session = None;
        let result = match &entry.txn {
            Txn::CreateSession { timeout_ms } => {
                self.sessions.insert(entry.session_id, *timeout_ms);
                Ok(Response::Empty)
            }
            Txn::CloseSession => {
                closed_session = Some(entry.session_id);
                self.close_session(&ctx, &mut events);
                Ok(Response::Empty)
            }
            Txn::Reap { path } => self.reap(&ctx, path, &mut events),
            Txn::Client(req) => self.client_write(&ctx, req, &mut events),
            Txn::SetConfig { text } => self.set_config_text(&ctx, text, &mut events),
            Txn::Error { code } => {
                Err(ErrorCode::from_i32(*code).unwrap_or(ErrorCode::SystemError))
            }
        };
        Applied {
            zxid: entry.zxid,
            result,
            events,
            closed_session,
        }
    }

    fn client_write(
        &mut self,
        ctx: &Ctx,
        req: &Request,
        events: &mut Vec<Event>,
    ) -> Result<Response, ErrorCode> {
        if let Request::Reconfig(_) = req {
            return Err(ErrorCode::ReconfigDisabled);
        }
        if !self.sessions.contains_key(&ctx.session_id) {
            return Err(ErrorCode::SessionExpired);
        }
        if let Request::CloseSession = req {
            self.close_session(ctx, events);
            return Ok(Response::Empty);
        }
        match req {
            Request::Multi(ops) => Ok(self.multi(ctx, ops, events)),
            op => self
                .exec(ctx, op, &mut Vec::new(), events)
                .map(|(_, resp)| resp),
        }
    }

    fn set_config_text(
        &mut self,
        ctx: &Ctx,
        text: &str,
        events: &mut Vec<Event>,
    ) -> Result<Response, ErrorCode> {
        let data = format!("{text}version={:x}", ctx.zxid).into_bytes();
        let req = SetDataRequest {
            path: CONFIG_PATH.into(),
            data: Some(data.into()),
            version: -1,
        };
        // The node is read-only to clients; the server writes it as ZooKeeper's reconfig does.
        let superuser = [Id::new("super", "")];
        let server = Ctx {
            auth: &superuser,
            ..*ctx
        };
        self.set_data(&server, &req, &mut Vec::new(), events)?;
        // ZooKeeper writes it with a setData of version -1, which it stores as the version.
        let node = self.nodes.get_mut(CONFIG_PATH).expect("set above");
        node.version = -1;
        Ok(Response::Stat(node.stat()))
    }

    fn multi(&mut self, ctx: &Ctx, ops: &[Request], events: &mut Vec<Event>) -> Response {
        let mut undo = Vec::new();
        let events_before = events.len();
        let mut results = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            match self.exec(ctx, op, &mut undo, events) {
                Ok((code, resp)) => results.push(MultiResult::Ok(code, resp)),
                Err(err) => {
                    self.roll_back(undo);
                    events.truncate(events_before);
                    // ZooKeeper's marking: ops before the failure report Ok, the failing one its
                    // error, the ones after RuntimeInconsistency; none of them took effect.
                    let mut marked = vec![MultiResult::Error(ErrorCode::Ok); i];
                    marked.push(MultiResult::Error(err));
                    marked.resize(
                        ops.len(),
                        MultiResult::Error(ErrorCode::RuntimeInconsistency),
                    );
                    return Response::Multi(marked);
                }
            }
        }
        Response::Multi(results)
    }

    /// Runs one write operation; returns the opcode its multi result carries and its response.
    fn exec(
        &mut self,
        ctx: &Ctx,
        op: &Request,
        undo: &mut Vec<Undo>,
        events: &mut Vec<Event>,
    ) -> Result<(OpCode, Response), ErrorCode> {
        match op {
            Request::Create { op, req } => {
                let mode = CreateMode::from_flags(req.flags).ok_or(ErrorCode::BadArguments)?;
                let spec = CreateSpec {
                    path: &req.path,
                    data: req.data.as_deref(),
                    acl: &req.acl,
                    mode,
                    op: *op,
                    ttl: -1,
                };
                let (path, stat) = self.create(ctx, spec, undo, events)?;
                Ok(match op {
                    OpCode::Create => (OpCode::Create, Response::Path(path)),
                    _ => (
                        OpCode::Create2,
                        Response::Create2(Create2Response { path, stat }),
                    ),
                })
            }
            Request::CreateTtl(req) => {
                let mode = CreateMode::from_flags(req.flags).ok_or(ErrorCode::BadArguments)?;
                let spec = CreateSpec {
                    path: &req.path,
                    data: req.data.as_deref(),
                    acl: &req.acl,
                    mode,
                    op: OpCode::CreateTtl,
                    ttl: req.ttl,
                };
                let (path, stat) = self.create(ctx, spec, undo, events)?;
                Ok((
                    OpCode::Create2,
                    Response::Create2(Create2Response { path, stat }),
                ))
            }
            Request::Delete(req) => {
                self.delete(ctx, &req.path, req.version, undo, events)?;
                Ok((OpCode::Delete, Response::Empty))
            }
            // ZooKeeper 3.8 reads the path of a client's deleteContainer together with the request
            // header, so it always contains a NUL and is refused; only the server's reaper deletes
            // containers (Txn::Reap).
            Request::DeleteContainer(_) => Err(ErrorCode::BadArguments),
            Request::SetData(req) => {
                let stat = self.set_data(ctx, req, undo, events)?;
                Ok((OpCode::SetData, Response::Stat(stat)))
            }
            Request::SetAcl(req) => {
                let stat = self.set_acl(ctx, req, undo)?;
                Ok((OpCode::SetAcl, Response::Stat(stat)))
            }
            Request::Check(req) => {
                path::validate(&req.path)?;
                let node = self.get(&req.path).ok_or(ErrorCode::NoNode)?;
                acl::check(self.acl(node), perms::READ, ctx.auth)?;
                next_version(node.version, req.version)?;
                Ok((OpCode::Check, Response::Empty))
            }
            _ => Err(ErrorCode::Unimplemented),
        }
    }

    fn create(
        &mut self,
        ctx: &Ctx,
        spec: CreateSpec,
        undo: &mut Vec<Undo>,
        events: &mut Vec<Event>,
    ) -> Result<(String, Stat), ErrorCode> {
        let is_ttl = spec.op == OpCode::CreateTtl || spec.mode.is_ttl();
        if spec.mode.is_ttl() && !self.config.extended_types {
            return Err(ErrorCode::Unimplemented);
        }
        let ttl_valid = if spec.mode.is_ttl() {
            spec.ttl > 0 && spec.ttl <= ephemeral_owner::MAX_TTL_MS
        } else {
            spec.ttl < 0
        };
        if !ttl_valid || (is_ttl && !spec.mode.is_ttl()) {
            return Err(ErrorCode::BadArguments);
        }
        if spec.path.contains('\0') {
            return Err(ErrorCode::BadArguments);
        }
        let parent_path = path::parent_of(spec.path).ok_or(ErrorCode::BadArguments)?;
        let acl = acl::fixup(spec.acl, ctx.auth, ctx.providers)?;
        let parent = self.get(key(parent_path)).ok_or(ErrorCode::NoNode)?;
        acl::check(self.acl(parent), perms::CREATE, ctx.auth)?;
        let path = if spec.mode.is_sequential() {
            format!("{}{:010}", spec.path, parent.cversion)
        } else {
            spec.path.to_owned()
        };
        path::validate(&path)?;
        if self.nodes.contains(&path) {
            return Err(ErrorCode::NodeExists);
        }
        if parent.is_session_ephemeral() {
            return Err(ErrorCode::NoChildrenForEphemerals);
        }
        let data_len = spec.data.map_or(0, <[u8]>::len) as i64;
        self.check_quota(&path, 1, data_len)?;
        let owner = if spec.op == OpCode::CreateContainer {
            ephemeral_owner::CONTAINER
        } else if spec.mode.is_ttl() {
            ephemeral_owner::for_ttl(spec.ttl)
        } else if spec.mode.is_ephemeral() {
            ctx.session_id
        } else {
            0
        };
        let parent_key = key(parent_path).to_owned();
        let acl_ref = self.acls.intern(&acl);
        let node = Node::new(ctx.zxid, ctx.time_ms, owner, acl_ref, spec.data);
        let stat = node.stat();
        self.nodes.insert(&path, node);
        self.link_to_parent(&path);
        let parent = self
            .nodes
            .get_mut(parent_key.as_str())
            .expect("parent looked up above");
        undo.push(Undo::Created {
            path: path.clone(),
            parent_cversion: parent.cversion,
            parent_pzxid: parent.pzxid,
        });
        parent.cversion = parent.cversion.wrapping_add(1);
        parent.pzxid = ctx.zxid;
        let parent_acl = self.acls.get_shared(parent.acl);
        self.index_special(&path, owner);
        self.quota_changed(&path, 1, data_len);
        self.quota_node_created(&path);
        events.push(Event {
            path: path.clone(),
            kind: EventType::NodeCreated,
            acl: self.acls.get_shared(acl_ref),
        });
        events.push(Event {
            path: parent_key,
            kind: EventType::NodeChildrenChanged,
            acl: parent_acl,
        });
        Ok((path, stat))
    }

    /// Records a node in the side indexes its owner field puts it in.
    fn index_special(&mut self, path: &str, owner: i64) {
        if owner == ephemeral_owner::CONTAINER {
            self.containers.insert(path.into());
        } else if ephemeral_owner::ttl_of(owner).is_some() {
            self.ttls.insert(path.into());
        } else if owner != 0 {
            self.ephemerals
                .entry(owner)
                .or_default()
                .insert(path.into());
        }
    }

    /// For the snapshot decoder: puts a node into the index its owner field names.
    pub(crate) fn index_special_pub(&mut self, path: &str, owner: i64) {
        self.index_special(path, owner);
    }

    fn unindex_special(&mut self, path: &str, owner: i64) {
        if owner == ephemeral_owner::CONTAINER {
            self.containers.remove(path);
        } else if ephemeral_owner::ttl_of(owner).is_some() {
            self.ttls.remove(path);
        } else if owner != 0 {
            if let Some(set) = self.ephemerals.get_mut(&owner) {
                set.remove(path);
                if set.is_empty() {
                    self.ephemerals.remove(&owner);
                }
            }
        }
    }

    /// `getParentPathAndValidate`: the built-in nodes can't be deleted.
    fn deletable_parent(path: &str) -> Result<&str, ErrorCode> {
        if path.contains('\0') || ["/", ZOOKEEPER_PATH, QUOTA_PATH, CONFIG_PATH].contains(&path) {
            return Err(ErrorCode::BadArguments);
        }
        path::parent_of(path).ok_or(ErrorCode::BadArguments)
    }

    fn delete(
        &mut self,
        ctx: &Ctx,
        path: &str,
        version: i32,
        undo: &mut Vec<Undo>,
        events: &mut Vec<Event>,
    ) -> Result<(), ErrorCode> {
        let parent_path = Self::deletable_parent(path)?;
        let parent = self.get(key(parent_path)).ok_or(ErrorCode::NoNode)?;
        acl::check(self.acl(parent), perms::DELETE, ctx.auth)?;
        let node = self.get(path).ok_or(ErrorCode::NoNode)?;
        next_version(node.version, version)?;
        if node.child_count() > 0 {
            return Err(ErrorCode::NotEmpty);
        }
        self.remove_leaf(ctx.zxid, path, undo, events);
        Ok(())
    }

    /// Removes a childless node and fires its events.
    fn remove_leaf(
        &mut self,
        zxid: i64,
        path: &str,
        undo: &mut Vec<Undo>,
        events: &mut Vec<Event>,
    ) {
        // Unlinked while its slot still names it.
        self.unlink_from_parent(path);
        let node = self
            .nodes
            .remove(path)
            .expect("caller checked the node exists");
        let parent_key = key(path::parent_of(path).expect("absolute path")).to_owned();
        let parent = self
            .nodes
            .get_mut(parent_key.as_str())
            .expect("a node's parent exists");
        let parent_pzxid = parent.pzxid;
        parent.pzxid = parent.pzxid.max(zxid);
        let parent_acl = self.acls.get_shared(parent.acl);
        self.unindex_special(path, node.ephemeral_owner);
        self.quota_changed(path, -1, -(node.data.len() as i64));
        self.quota_node_deleted(path);
        let acl = self.acls.get_shared(node.acl);
        self.acls.release(node.acl);
        undo.push(Undo::Deleted {
            path: path.to_owned(),
            node,
            acl: acl.clone(),
            parent_pzxid,
        });
        events.push(Event {
            path: path.to_owned(),
            kind: EventType::NodeDeleted,
            acl,
        });
        events.push(Event {
            path: parent_key,
            kind: EventType::NodeChildrenChanged,
            acl: parent_acl,
        });
    }

    fn reap(
        &mut self,
        ctx: &Ctx,
        path: &str,
        events: &mut Vec<Event>,
    ) -> Result<Response, ErrorCode> {
        let node = self.get(path).ok_or(ErrorCode::NoNode)?;
        let due = if node.ephemeral_owner == ephemeral_owner::CONTAINER {
            container_emptied(node)
        } else {
            ttl_expired(node, ctx.time_ms)
        };
        if !due {
            return Err(ErrorCode::BadVersion);
        }
        self.remove_leaf(ctx.zxid, path, &mut Vec::new(), events);
        Ok(Response::Empty)
    }

    fn set_data(
        &mut self,
        ctx: &Ctx,
        req: &SetDataRequest,
        undo: &mut Vec<Undo>,
        events: &mut Vec<Event>,
    ) -> Result<Stat, ErrorCode> {
        path::validate(&req.path)?;
        let node = self.get(&req.path).ok_or(ErrorCode::NoNode)?;
        acl::check(self.acl(node), perms::WRITE, ctx.auth)?;
        let version = next_version(node.version, req.version)?;
        let new_len = req.data.as_ref().map_or(0, |d| d.len());
        let bytes_diff = new_len as i64 - node.data.len() as i64;
        self.check_quota(&req.path, 0, bytes_diff)?;
        self.quota_changed(&req.path, 0, bytes_diff);
        let node = self
            .nodes
            .get_mut(req.path.as_str())
            .expect("looked up above");
        undo.push(Undo::DataSet {
            path: req.path.clone(),
            data: std::mem::replace(&mut node.data, req.data.as_deref().into()),
            version: node.version,
            mzxid: node.mzxid,
            mtime: node.mtime,
        });
        node.version = version;
        node.mzxid = ctx.zxid;
        node.mtime = ctx.time_ms;
        let stat = node.stat();
        let acl = self.acls.get_shared(node.acl);
        events.push(Event {
            path: req.path.clone(),
            kind: EventType::NodeDataChanged,
            acl,
        });
        Ok(stat)
    }

    fn set_acl(
        &mut self,
        ctx: &Ctx,
        req: &SetAclRequest,
        undo: &mut Vec<Undo>,
    ) -> Result<Stat, ErrorCode> {
        path::validate(&req.path)?;
        let acl = acl::fixup(&req.acl, ctx.auth, ctx.providers)?;
        let node = self.get(&req.path).ok_or(ErrorCode::NoNode)?;
        acl::check(self.acl(node), perms::ADMIN, ctx.auth)?;
        let aversion = next_version(node.aversion, req.version)?;
        let new_ref = self.acls.intern(&acl);
        let node = self
            .nodes
            .get_mut(req.path.as_str())
            .expect("looked up above");
        let old_ref = std::mem::replace(&mut node.acl, new_ref);
        let old_aversion = std::mem::replace(&mut node.aversion, aversion);
        let stat = node.stat();
        undo.push(Undo::AclSet {
            path: req.path.clone(),
            acl: self.acls.get(old_ref).to_vec(),
            aversion: old_aversion,
        });
        self.acls.release(old_ref);
        Ok(stat)
    }

    fn roll_back(&mut self, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            match step {
                Undo::Created {
                    path,
                    parent_cversion,
                    parent_pzxid,
                } => {
                    self.unlink_from_parent(&path);
                    let node = self
                        .nodes
                        .remove(path.as_str())
                        .expect("created node exists");
                    self.unindex_special(&path, node.ephemeral_owner);
                    self.quota_changed(&path, -1, -(node.data.len() as i64));
                    self.quota_node_deleted(&path);
                    self.acls.release(node.acl);
                    let parent = self.parent_mut(&path);
                    parent.cversion = parent_cversion;
                    parent.pzxid = parent_pzxid;
                }
                Undo::Deleted {
                    path,
                    mut node,
                    acl,
                    parent_pzxid,
                } => {
                    let owner = node.ephemeral_owner;
                    let bytes = node.data.len() as i64;
                    node.acl = self.acls.intern(&acl);
                    self.nodes.insert(&path, node);
                    self.link_to_parent(&path);
                    self.index_special(&path, owner);
                    let parent = self.parent_mut(&path);
                    parent.pzxid = parent_pzxid;
                    self.quota_changed(&path, 1, bytes);
                    self.quota_node_created(&path);
                }
                Undo::DataSet {
                    path,
                    data,
                    version,
                    mzxid,
                    mtime,
                } => {
                    let bytes_diff = data.len() as i64
                        - self.get(&path).expect("changed node exists").data.len() as i64;
                    self.quota_changed(&path, 0, bytes_diff);
                    let node = self
                        .nodes
                        .get_mut(path.as_str())
                        .expect("changed node exists");
                    node.data = data;
                    node.version = version;
                    node.mzxid = mzxid;
                    node.mtime = mtime;
                }
                Undo::AclSet {
                    path,
                    acl,
                    aversion,
                } => {
                    let restored = self.acls.intern(&acl);
                    let node = self
                        .nodes
                        .get_mut(path.as_str())
                        .expect("changed node exists");
                    let current = std::mem::replace(&mut node.acl, restored);
                    node.aversion = aversion;
                    self.acls.release(current);
                }
            }
        }
    }

    fn parent_mut(&mut self, path: &str) -> &mut Node {
        let parent = key(path::parent_of(path).expect("absolute path"));
        self.nodes.get_mut(parent).expect("a node's parent exists")
    }

    /// Ends a session: deletes its ephemerals in path order (deterministic) and forgets it.
    fn close_session(&mut self, ctx: &Ctx, events: &mut Vec<Event>) {
        self.sessions.remove(&ctx.session_id);
        let Some(paths) = self.ephemerals.remove(&ctx.session_id) else {
            return;
        };
        // An ephemeral never has children, so each one is a leaf.
        for p in paths {
            self.remove_leaf(ctx.zxid, &p, &mut Vec::new(), events);
        }
    }
}

struct CreateSpec<'a> {
    path: &'a str,
    /// `None`: null data.
    data: Option<&'a [u8]>,
    acl: &'a [Acl],
    mode: CreateMode,
    op: OpCode,
    ttl: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TreeConfig;
    use bytes::Bytes;

    struct T {
        tree: DataTree,
        zxid: i64,
    }

    impl T {
        fn new() -> Self {
            let mut t = T {
                tree: DataTree::new(TreeConfig {
                    extended_types: true,
                    ..Default::default()
                }),
                zxid: 0,
            };
            t.run(1, Txn::CreateSession { timeout_ms: 5000 });
            t
        }
        fn run(&mut self, session: i64, txn: Txn) -> Applied {
            self.zxid += 1;
            self.tree.apply(&Entry {
                providers: crate::acl::Providers::ALL,
                zxid: self.zxid,
                time_ms: 1000 * self.zxid,
                session_id: session,
                auth: vec![Id::new("ip", "127.0.0.1")],
                txn,
            })
        }
        fn create(&mut self, path: &str, flags: i32) -> Result<Response, ErrorCode> {
            self.run(1, Txn::Client(create_req(OpCode::Create, path, flags)))
                .result
        }
    }

    fn create_req(op: OpCode, path: &str, flags: i32) -> Request {
        Request::Create {
            op,
            req: CreateRequest {
                path: path.into(),
                data: Some(Bytes::from_static(b"d")),
                acl: acl::open_acl(),
                flags,
            },
        }
    }

    #[test]
    fn create_sets_stats_and_parent_counters() {
        let mut t = T::new();
        t.create("/a", 0).unwrap();
        let zxid = t.zxid;
        let a = t.tree.get("/a").unwrap().stat();
        assert_eq!((a.czxid, a.mzxid, a.pzxid), (zxid, zxid, zxid));
        assert_eq!((a.ctime, a.data_length, a.version), (1000 * zxid, 1, 0));
        let root = t.tree.get("/").unwrap();
        assert_eq!((root.cversion, root.pzxid), (1, zxid));
        assert_eq!(t.create("/a", 0), Err(ErrorCode::NodeExists));
        assert_eq!(t.create("/x/y", 0), Err(ErrorCode::NoNode));
        assert_eq!(t.create("/a/", 0), Err(ErrorCode::BadArguments));
        assert_eq!(t.create("noslash", 0), Err(ErrorCode::BadArguments));
        assert_eq!(t.create("/a", 9), Err(ErrorCode::BadArguments));
    }

    #[test]
    fn sequential_names_come_from_parent_cversion() {
        let mut t = T::new();
        t.create("/q", 0).unwrap();
        assert_eq!(
            t.create("/q/n-", 2),
            Ok(Response::Path("/q/n-0000000000".into()))
        );
        t.create("/q/other", 0).unwrap();
        assert_eq!(
            t.create("/q/n-", 2),
            Ok(Response::Path("/q/n-0000000002".into()))
        );
        assert_eq!(
            t.create("/q/", 2),
            Ok(Response::Path("/q/0000000003".into()))
        );
    }

    #[test]
    fn ephemerals_go_with_their_session() {
        let mut t = T::new();
        t.create("/e", 1).unwrap();
        assert_eq!(t.tree.get("/e").unwrap().ephemeral_owner, 1);
        assert_eq!(
            t.create("/e/child", 0),
            Err(ErrorCode::NoChildrenForEphemerals)
        );
        let closed = t.run(1, Txn::CloseSession);
        assert_eq!(closed.closed_session, Some(1));
        assert!(t.tree.get("/e").is_none());
        assert!(closed
            .events
            .iter()
            .any(|e| e.path == "/e" && e.kind == EventType::NodeDeleted));
        assert_eq!(t.create("/f", 0), Err(ErrorCode::SessionExpired));
    }

    #[test]
    fn ttl_and_containers() {
        let mut t = T::new();
        let ttl = Request::CreateTtl(CreateTtlRequest {
            path: "/t".into(),
            data: Some(Bytes::new()),
            acl: acl::open_acl(),
            flags: 5,
            ttl: 500,
        });
        t.run(1, Txn::Client(ttl)).result.unwrap();
        let owner = t.tree.get("/t").unwrap().ephemeral_owner;
        assert_eq!(ephemeral_owner::ttl_of(owner), Some(500));
        t.run(1, Txn::Client(create_req(OpCode::CreateContainer, "/c", 4)))
            .result
            .unwrap();
        assert_eq!(
            t.tree.get("/c").unwrap().ephemeral_owner,
            ephemeral_owner::CONTAINER
        );
        // A container that never had a child stays; one whose last child left goes.
        let now = 1000 * t.zxid + 10_000;
        assert_eq!(t.tree.reap_candidates(now), vec!["/t".to_string()]);
        t.create("/c/x", 0).unwrap();
        t.run(
            1,
            Txn::Client(Request::Delete(PathVersionRequest {
                path: "/c/x".into(),
                version: -1,
            })),
        )
        .result
        .unwrap();
        assert_eq!(
            t.tree.reap_candidates(now),
            vec!["/c".to_string(), "/t".to_string()]
        );
        assert!(t.run(0, Txn::Reap { path: "/c".into() }).result.is_ok());
        assert!(t.tree.get("/c").is_none());
        let mut disabled = DataTree::new(TreeConfig::default());
        disabled.apply(&Entry {
            providers: crate::acl::Providers::ALL,
            zxid: 1,
            time_ms: 0,
            session_id: 1,
            auth: vec![],
            txn: Txn::CreateSession { timeout_ms: 1 },
        });
        let ttl = Request::CreateTtl(CreateTtlRequest {
            path: "/t".into(),
            data: Some(Bytes::new()),
            acl: acl::open_acl(),
            flags: 5,
            ttl: 5,
        });
        let r = disabled.apply(&Entry {
            providers: crate::acl::Providers::ALL,
            zxid: 2,
            time_ms: 0,
            session_id: 1,
            auth: vec![],
            txn: Txn::Client(ttl),
        });
        assert_eq!(r.result, Err(ErrorCode::Unimplemented));
    }

    fn create_with(t: &mut T, path: &str, data: &'static [u8]) -> Result<Response, ErrorCode> {
        let mut req = create_req(OpCode::Create, path, 0);
        if let Request::Create { req, .. } = &mut req {
            req.data = Some(Bytes::from_static(data));
        }
        t.run(1, Txn::Client(req)).result
    }

    fn stats_of(t: &T, quota: &str) -> String {
        let p = format!("/zookeeper/quota{quota}/zookeeper_stats");
        String::from_utf8(t.tree.get(&p).unwrap().data.to_vec()).unwrap()
    }

    #[test]
    fn quotas_count_enforce_and_roll_back() {
        let mut t = T::new();
        t.tree.config.enforce_quota = true;
        create_with(&mut t, "/q", b"x").unwrap();
        create_with(&mut t, "/q/a", b"yy").unwrap();
        // What zkCli's `setquota -N 3 -B 10 /q` creates.
        create_with(&mut t, "/zookeeper/quota/q", b"").unwrap();
        create_with(
            &mut t,
            "/zookeeper/quota/q/zookeeper_limits",
            b"count=-1,bytes=-1=;byteHardLimit=10;countHardLimit=3",
        )
        .unwrap();
        create_with(
            &mut t,
            "/zookeeper/quota/q/zookeeper_stats",
            b"count=0,bytes=0",
        )
        .unwrap();
        assert_eq!(stats_of(&t, "/q"), "count=2,bytes=3");
        let stats_stat = t
            .tree
            .get("/zookeeper/quota/q/zookeeper_stats")
            .unwrap()
            .stat();

        create_with(&mut t, "/q/b", b"").unwrap();
        assert_eq!(stats_of(&t, "/q"), "count=3,bytes=3");
        // A fourth node is over the hard count: refused, and a multi holding it leaves no trace.
        assert_eq!(
            create_with(&mut t, "/q/c", b""),
            Err(ErrorCode::QuotaExceeded)
        );
        let ops = vec![
            Request::Delete(PathVersionRequest {
                path: "/q/b".into(),
                version: -1,
            }),
            create_req(OpCode::Create, "/q/c", 0),
            create_req(OpCode::Create, "/q/d", 0),
        ];
        let r = t.run(1, Txn::Client(Request::Multi(ops)));
        assert!(matches!(r.result, Ok(Response::Multi(ref v))
            if v[2] == MultiResult::Error(ErrorCode::QuotaExceeded)));
        assert_eq!(stats_of(&t, "/q"), "count=3,bytes=3");
        assert!(t.tree.get("/q/b").is_some());
        // Bytes: 3 - 2 + 10 > 10 refused; a set that shrinks is fine.
        let set = |data: &'static [u8]| {
            Txn::Client(Request::SetData(SetDataRequest {
                path: "/q/a".into(),
                data: Some(Bytes::from_static(data)),
                version: -1,
            }))
        };
        assert_eq!(
            t.run(1, set(b"1234567890")).result.unwrap_err(),
            ErrorCode::QuotaExceeded
        );
        t.run(1, set(b"")).result.unwrap();
        assert_eq!(stats_of(&t, "/q"), "count=3,bytes=1");
        // The stats node's data changes in place; its Stat does not.
        let now = t
            .tree
            .get("/zookeeper/quota/q/zookeeper_stats")
            .unwrap()
            .stat();
        assert_eq!(
            (now.mzxid, now.version),
            (stats_stat.mzxid, stats_stat.version)
        );
        // Usage survives a snapshot; without enforcement the limit is only logged.
        let mut back = DataTree::decode_snapshot(&t.tree.snapshot_bytes()).unwrap();
        assert_eq!(back.quotas().collect::<Vec<_>>().len(), 1);
        std::mem::swap(&mut t.tree, &mut back);
        create_with(&mut t, "/q/c", b"").unwrap();
        assert_eq!(stats_of(&t, "/q"), "count=4,bytes=1");
        // Deleting the limits node ends the quota.
        t.run(
            1,
            Txn::Client(Request::Delete(PathVersionRequest {
                path: "/zookeeper/quota/q/zookeeper_limits".into(),
                version: -1,
            })),
        )
        .result
        .unwrap();
        assert_eq!(t.tree.quotas().count(), 0);
    }

    #[test]
    fn failed_multi_leaves_no_trace() {
        let mut t = T::new();
        t.create("/m", 0).unwrap();
        let before = t.tree.get("/m").unwrap().clone();
        let ops = vec![
            create_req(OpCode::Create, "/m/a", 0),
            Request::SetData(SetDataRequest {
                path: "/m".into(),
                data: Some(Bytes::from_static(b"new")),
                version: -1,
            }),
            Request::Delete(PathVersionRequest {
                path: "/m".into(),
                version: -1,
            }),
            create_req(OpCode::Create, "/m/b", 0),
        ];
        let r = t.run(1, Txn::Client(Request::Multi(ops)));
        assert_eq!(
            r.result,
            Ok(Response::Multi(vec![
                MultiResult::Error(ErrorCode::Ok),
                MultiResult::Error(ErrorCode::Ok),
                MultiResult::Error(ErrorCode::NotEmpty),
                MultiResult::Error(ErrorCode::RuntimeInconsistency),
            ]))
        );
        assert!(r.events.is_empty());
        assert_eq!(t.tree.get("/m").unwrap(), &before);
        assert!(t.tree.get("/m/a").is_none());
    }

    #[test]
    fn acl_enforced_on_writes() {
        let mut t = T::new();
        let digest = acl::digest_id("bob:pw");
        let req = Request::Create {
            op: OpCode::Create,
            req: CreateRequest {
                path: "/s".into(),
                data: Some(Bytes::new()),
                acl: vec![Acl::new(perms::ALL, "digest", &digest)],
                flags: 0,
            },
        };
        t.run(1, Txn::Client(req)).result.unwrap();
        assert_eq!(t.create("/s/x", 0), Err(ErrorCode::NoAuth));
        t.zxid += 1;
        let as_bob = t.tree.apply(&Entry {
            providers: crate::acl::Providers::ALL,
            zxid: t.zxid,
            time_ms: 0,
            session_id: 1,
            auth: vec![Id::new("digest", &digest)],
            txn: Txn::Client(create_req(OpCode::Create, "/s/x", 0)),
        });
        assert!(as_bob.result.is_ok());
        let set = Request::SetAcl(SetAclRequest {
            path: "/s".into(),
            acl: acl::open_acl(),
            version: 5,
        });
        assert_eq!(t.run(1, Txn::Client(set)).result, Err(ErrorCode::NoAuth));
    }

    #[test]
    fn the_leader_publishes_the_membership_with_the_zxid_as_its_version() {
        let mut t = T::new();
        let text = "server.1=127.0.0.1:2888:3888:participant;0.0.0.0:2181\n".to_owned();
        let applied = t.run(0, Txn::SetConfig { text: text.clone() });
        let Ok(Response::Stat(stat)) = applied.result else {
            panic!("{applied:?}")
        };
        let zxid = t.zxid;
        assert_eq!(
            (stat.version, stat.mzxid, stat.mtime),
            (-1, zxid, 1000 * zxid)
        );
        assert_eq!(applied.events[0].path, CONFIG_PATH);
        assert_eq!(applied.events[0].kind, EventType::NodeDataChanged);
        let data = t.tree.get(CONFIG_PATH).unwrap().data.to_vec();
        assert_eq!(data, format!("{text}version={zxid:x}").into_bytes());
        assert_eq!(config_version(&data), zxid);
        assert_eq!(config_lines(&data), text.as_bytes());
        // The same membership again is a new version.
        let again = t.run(0, Txn::SetConfig { text: text.clone() });
        assert_eq!(again.events.len(), 1);
        let data = t.tree.get(CONFIG_PATH).unwrap().data.to_vec();
        assert_eq!(data, format!("{text}version={:x}", t.zxid).into_bytes());
        // Clients still may not write it.
        let set = SetDataRequest {
            path: CONFIG_PATH.into(),
            data: Some(Bytes::from_static(b"x")),
            version: -1,
        };
        let r = t.run(1, Txn::Client(Request::SetData(set))).result;
        assert_eq!(r, Err(ErrorCode::NoAuth));
    }

    #[test]
    fn config_text_without_a_version_reads_as_version_zero() {
        assert_eq!(config_version(b""), 0);
        assert_eq!(config_lines(b""), b"");
        assert_eq!(
            config_version(b"server.1=a:1:2\nversion=1a0000002f"),
            0x1a0000002f
        );
        assert_eq!(config_lines(b"version=100000000"), b"");
    }
}
