//! The records of ZooKeeper's `zookeeper.jute` that clients exchange with a server, field for
//! field in the order the format fixes. Names follow the jute file so that a reader can hold the
//! two side by side.

use crate::jute_record;
use bytes::Bytes;

jute_record! {
    /// An identity: a scheme (`world`, `auth`, `digest`, `ip`, `super`, ...) and an id in it.
    #[derive(Hash, PartialOrd, Ord)]
    pub struct Id { scheme: String, id: String }
}

jute_record! {
    /// One access-control entry: a permission bit set granted to an identity.
    #[derive(Hash, PartialOrd, Ord)]
    pub struct Acl { perms: i32, id: Id }
}

jute_record! {
    /// A znode's metadata as clients see it.
    #[derive(Copy)]
    pub struct Stat {
        czxid: i64,
        mzxid: i64,
        ctime: i64,
        mtime: i64,
        version: i32,
        cversion: i32,
        aversion: i32,
        ephemeral_owner: i64,
        data_length: i32,
        num_children: i32,
        pzxid: i64,
    }
}

jute_record! {
    pub struct ClientInfo { auth_scheme: String, user: String }
}

jute_record! {
    pub struct ConnectRequest {
        protocol_version: i32,
        last_zxid_seen: i64,
        time_out: i32,
        session_id: i64,
        passwd: Bytes,
    }
}

jute_record! {
    pub struct ConnectResponse {
        protocol_version: i32,
        time_out: i32,
        session_id: i64,
        passwd: Bytes,
    }
}

jute_record! {
    pub struct SetWatches {
        relative_zxid: i64,
        data_watches: Vec<String>,
        exist_watches: Vec<String>,
        child_watches: Vec<String>,
    }
}

jute_record! {
    pub struct SetWatches2 {
        relative_zxid: i64,
        data_watches: Vec<String>,
        exist_watches: Vec<String>,
        child_watches: Vec<String>,
        persistent_watches: Vec<String>,
        persistent_recursive_watches: Vec<String>,
    }
}

jute_record! {
    pub struct RequestHeader { xid: i32, op_type: i32 }
}

jute_record! {
    pub struct MultiHeader { op_type: i32, done: bool, err: i32 }
}

jute_record! {
    pub struct AuthPacket { auth_type: i32, scheme: String, auth: Bytes }
}

jute_record! {
    pub struct ReplyHeader { xid: i32, zxid: i64, err: i32 }
}

jute_record! {
    /// The body of getData, exists, getChildren and getChildren2 requests.
    pub struct PathWatchRequest { path: String, watch: bool }
}

jute_record! {
    /// The body of requests that carry only a path: sync, getACL, getAllChildrenNumber,
    /// getEphemerals.
    pub struct PathRequest { path: String }
}

jute_record! {
    pub struct SetDataRequest { path: String, data: Option<Bytes>, version: i32 }
}

jute_record! {
    pub struct ReconfigRequest {
        joining_servers: String,
        leaving_servers: String,
        new_members: String,
        cur_config_id: i64,
    }
}

jute_record! {
    pub struct StatResponse { stat: Stat }
}

jute_record! {
    pub struct CreateRequest { path: String, data: Option<Bytes>, acl: Vec<Acl>, flags: i32 }
}

jute_record! {
    pub struct CreateTtlRequest { path: String, data: Option<Bytes>, acl: Vec<Acl>, flags: i32, ttl: i64 }
}

jute_record! {
    /// The body of delete and check (CheckVersionRequest) requests.
    pub struct PathVersionRequest { path: String, version: i32 }
}

jute_record! {
    pub struct SetAclRequest { path: String, acl: Vec<Acl>, version: i32 }
}

jute_record! {
    pub struct AddWatchRequest { path: String, mode: i32 }
}

jute_record! {
    pub struct WatcherEvent { event_type: i32, state: i32, path: String }
}

jute_record! {
    pub struct ErrorResponse { err: i32 }
}

jute_record! {
    pub struct PathResponse { path: String }
}

jute_record! {
    pub struct Create2Response { path: String, stat: Stat }
}

jute_record! {
    pub struct GetDataResponse { data: Option<Bytes>, stat: Stat }
}

jute_record! {
    pub struct GetChildrenResponse { children: Vec<String> }
}

jute_record! {
    pub struct GetChildren2Response { children: Vec<String>, stat: Stat }
}

jute_record! {
    pub struct GetAclResponse { acl: Vec<Acl>, stat: Stat }
}

jute_record! {
    pub struct CountResponse { total_number: i32 }
}

jute_record! {
    /// The body of checkWatches and removeWatches requests.
    pub struct WatchTypeRequest { path: String, watcher_type: i32 }
}

jute_record! {
    pub struct GetEphemeralsResponse { ephemerals: Vec<String> }
}

jute_record! {
    pub struct WhoAmIResponse { client_info: Vec<ClientInfo> }
}

jute_record! {
    pub struct GetConfigResponse { value: Bytes, stat: Stat }
}

impl Id {
    pub fn new(scheme: &str, id: &str) -> Self {
        Id {
            scheme: scheme.to_owned(),
            id: id.to_owned(),
        }
    }
}

impl Acl {
    pub fn new(perms: i32, scheme: &str, id: &str) -> Self {
        Acl {
            perms,
            id: Id::new(scheme, id),
        }
    }
}

/// The watches of a `SetWatches` are a `SetWatches2` without persistent ones.
impl From<SetWatches> for SetWatches2 {
    fn from(w: SetWatches) -> Self {
        SetWatches2 {
            relative_zxid: w.relative_zxid,
            data_watches: w.data_watches,
            exist_watches: w.exist_watches,
            child_watches: w.child_watches,
            persistent_watches: Vec::new(),
            persistent_recursive_watches: Vec::new(),
        }
    }
}
