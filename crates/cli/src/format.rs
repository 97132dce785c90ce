//! How zkCli prints things: Stat blocks, ACLs, lists, events and errors.

use corral_proto::time::java_date;
use zookeeper_client as zk;

/// A Stat as `get -s` / `stat` print it.
pub fn stat_lines(s: &zk::Stat) -> Vec<String> {
    vec![
        format!("cZxid = {:#x}", s.czxid),
        format!("ctime = {}", java_date(s.ctime)),
        format!("mZxid = {:#x}", s.mzxid),
        format!("mtime = {}", java_date(s.mtime)),
        format!("pZxid = {:#x}", s.pzxid),
        format!("cversion = {}", s.cversion),
        format!("dataVersion = {}", s.version),
        format!("aclVersion = {}", s.aversion),
        format!("ephemeralOwner = {:#x}", s.ephemeral_owner),
        format!("dataLength = {}", s.data_length),
        format!("numChildren = {}", s.num_children),
    ]
}

/// Java's `List.toString`: `[a, b]`.
pub fn java_list<S: AsRef<str>>(items: &[S]) -> String {
    let parts: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    format!("[{}]", parts.join(", "))
}

/// Permissions as zkCli prints them: the letters of `cdrwa` that are granted, in that order.
pub fn perms_text(p: zk::Permission) -> String {
    [
        (zk::Permission::CREATE, 'c'),
        (zk::Permission::DELETE, 'd'),
        (zk::Permission::READ, 'r'),
        (zk::Permission::WRITE, 'w'),
        (zk::Permission::ADMIN, 'a'),
    ]
    .iter()
    .filter(|(bit, _)| p.has(*bit))
    .map(|(_, c)| *c)
    .collect()
}

/// `getAcl`: two lines per entry, `'scheme,'id` and `: perms`.
pub fn acl_lines(acls: &[zk::Acl]) -> Vec<String> {
    acls.iter()
        .flat_map(|a| {
            [
                format!("'{},'{}", a.scheme(), a.id()),
                format!(": {}", perms_text(a.permission())),
            ]
        })
        .collect()
}

/// Parses zkCli's ACL syntax: `scheme:id:perms[,scheme:id:perms...]`; the id may hold colons
/// (`digest:user:hash:cdrwa`), the permissions are the text after the last one.
pub fn parse_acls(text: &str) -> Result<Vec<zk::Acl>, String> {
    text.split(',')
        .map(|entry| {
            let (scheme_id, perms) = entry
                .rsplit_once(':')
                .ok_or_else(|| format!("{entry} does not have the form scheme:id:perm"))?;
            let (scheme, id) = scheme_id
                .split_once(':')
                .ok_or_else(|| format!("{entry} does not have the form scheme:id:perm"))?;
            Ok(zk::Acl::new(
                parse_perms(perms)?,
                zk::AuthId::new(scheme, id),
            ))
        })
        .collect()
}

fn parse_perms(text: &str) -> Result<zk::Permission, String> {
    text.chars().try_fold(zk::Permission::NONE, |acc, c| {
        let bit = match c {
            'c' => zk::Permission::CREATE,
            'd' => zk::Permission::DELETE,
            'r' => zk::Permission::READ,
            'w' => zk::Permission::WRITE,
            'a' => zk::Permission::ADMIN,
            _ => return Err(format!("unknown permission {c:?} in {text:?}")),
        };
        Ok(acc | bit)
    })
}

/// A watch notification as zkCli prints it (after a blank line and `WATCHER::`).
pub fn event_lines(event: &zk::WatchedEvent) -> Vec<String> {
    let kind = match event.event_type {
        zk::EventType::Session => "None",
        zk::EventType::NodeCreated => "NodeCreated",
        zk::EventType::NodeDeleted => "NodeDeleted",
        zk::EventType::NodeDataChanged => "NodeDataChanged",
        zk::EventType::NodeChildrenChanged => "NodeChildrenChanged",
    };
    let path = if event.path.is_empty() {
        "null"
    } else {
        &event.path
    };
    watcher_lines(state_name(event.session_state), kind, path)
}

pub fn watcher_lines(state: &str, kind: &str, path: &str) -> Vec<String> {
    vec![
        String::new(),
        "WATCHER::".into(),
        String::new(),
        format!("WatchedEvent state:{state} type:{kind} path:{path}"),
    ]
}

pub fn state_name(s: zk::SessionState) -> &'static str {
    match s {
        zk::SessionState::Disconnected => "Disconnected",
        zk::SessionState::SyncConnected => "SyncConnected",
        zk::SessionState::AuthFailed => "AuthFailed",
        zk::SessionState::ConnectedReadOnly => "ConnectedReadOnly",
        zk::SessionState::Expired => "Expired",
        zk::SessionState::Closed => "Closed",
    }
}

/// An error as zkCli reports it for `path`.
pub fn error_text(e: &zk::Error, path: &str) -> String {
    use zk::Error as E;
    let code = match e {
        E::NoNode => return format!("Node does not exist: {path}"),
        E::BadVersion => return format!("version No is not valid : {path}"),
        E::NotEmpty => return format!("Node not empty: {path}"),
        E::NodeExists => return format!("Node already exists: {path}"),
        E::NoAuth => return format!("Insufficient permission : {path}"),
        E::NoChildrenForEphemerals => return format!("Ephemerals cannot have children: {path}"),
        E::BadArguments(why) => return format!("Invalid arguments for {path}: {why}"),
        E::InvalidAcl => "InvalidACL",
        E::AuthFailed => "AuthFailed",
        E::SessionExpired => "Session expired",
        E::NoWatcher => "No such watcher",
        E::QuotaExceeded => "Quota has exceeded",
        E::NotReadOnly => "Not a read-only call",
        E::Unimplemented => "Unimplemented",
        E::ConnectionLoss => "ConnectionLoss",
        other => return format!("{other} for {path}"),
    };
    format!("KeeperErrorCode = {code} for {path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acls_parse_and_print_like_zkcli() {
        let acls = parse_acls("world:anyone:cdrwa,digest:u:abc=:rw,ip:10.0.0.1:r").unwrap();
        assert_eq!(
            acl_lines(&acls),
            [
                "'world,'anyone",
                ": cdrwa",
                "'digest,'u:abc=",
                ": rw",
                "'ip,'10.0.0.1",
                ": r"
            ]
        );
        assert!(parse_acls("world:anyone").is_err());
        assert!(parse_acls("world:anyone:x").is_err());
    }

    #[test]
    fn lists_print_like_java() {
        assert_eq!(java_list(&["a", "b"]), "[a, b]");
        assert_eq!(java_list::<&str>(&[]), "[]");
    }
}
