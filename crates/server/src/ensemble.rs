//! The ensemble's membership in ZooKeeper's words: the text `/zookeeper/config` and `conf` show,
//! and the membership a `reconfig` request asks for, checked as ZooKeeper's
//! `PrepRequestProcessor` checks it. Pure functions; the core decides when they apply.

use crate::config::ServerLine;
use corral_proto::records::ReconfigRequest;
use corral_proto::ErrorCode;
use corral_replication::Member;
use std::collections::BTreeMap;

/// The membership as ZooKeeper's `QuorumMaj.toString` writes it: one
/// `server.N=host:peerPort:electionPort:role[;clientHost:clientPort]` line per member, in id
/// order, each ending in a newline (the `version=` line is added when it is published).
pub fn config_text(members: &BTreeMap<u64, Member>) -> String {
    members
        .iter()
        .map(|(id, m)| format!("{}\n", server_spec(*id, m)))
        .collect()
}

/// One member's line, without its newline.
pub fn server_spec(id: u64, m: &Member) -> String {
    let role = if m.observer {
        "observer"
    } else {
        "participant"
    };
    let election = match m.election_port {
        0 => String::new(),
        port => format!(":{port}"),
    };
    let client = match m.client_addr.as_str() {
        "" => String::new(),
        addr => format!(";{addr}"),
    };
    format!("server.{id}={}{election}:{role}{client}", m.raft_addr)
}

/// A member as a `server.N` line describes it (in zoo.cfg, a dynamic configuration file or a
/// reconfig request). The client address is left empty when the line names none.
pub fn member_of(line: &ServerLine) -> Member {
    Member {
        raft_addr: format!("{}:{}", line.host, line.peer_port),
        election_port: line.election_port,
        client_addr: line
            .client
            .as_ref()
            .map(|(h, p)| format!("{h}:{p}"))
            .unwrap_or_default(),
        observer: line.observer,
    }
}

/// The membership a reconfig request asks for, given the current one; refused with ZooKeeper's
/// error codes (a number that does not parse is its MarshallingError, from a Java exception it
/// does not catch). `standalone_enabled` is ZooKeeper's `standaloneEnabled`: with it, a
/// configuration needs at least two voters.
pub fn reconfig_target(
    current: &BTreeMap<u64, Member>,
    req: &ReconfigRequest,
    standalone_enabled: bool,
) -> Result<BTreeMap<u64, Member>, ErrorCode> {
    let target = if !req.new_members.trim().is_empty() {
        new_membership(&req.new_members)?
    } else {
        incremental(current, &req.joining_servers, &req.leaving_servers)?
    };
    let voters = target.values().filter(|m| !m.observer).count();
    if voters < if standalone_enabled { 2 } else { 1 } {
        return Err(ErrorCode::BadArguments);
    }
    Ok(target)
}

/// A non-incremental reconfiguration: the whole new membership, `server.N=...` entries
/// separated by commas or newlines (a `version=` entry is ignored).
fn new_membership(text: &str) -> Result<BTreeMap<u64, Member>, ErrorCode> {
    let mut members = BTreeMap::new();
    for entry in text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (key, value) = entry.split_once('=').ok_or(ErrorCode::BadArguments)?;
        let key = key.trim();
        if key == "version" {
            continue;
        }
        if !key.starts_with("server.") {
            return Err(ErrorCode::BadArguments);
        }
        // A whole membership may name members without a client address, as zoo.cfg may (and
        // as `/zookeeper/config` then shows them).
        let (id, member) = server(key, value.trim(), false)?;
        check_duplicates(&members, id, &member)?;
        members.insert(id, member);
    }
    if !members.is_empty() && members.values().all(|m| m.observer) {
        // ZooKeeper: "Observers w/o participants is an invalid configuration".
        return Err(ErrorCode::MarshallingError);
    }
    Ok(members)
}

/// An incremental reconfiguration: members join (or change, given an id already in) and leave.
/// Neither (or an id that is not a member leaving) is a new version of the same membership.
fn incremental(
    current: &BTreeMap<u64, Member>,
    joining: &str,
    leaving: &str,
) -> Result<BTreeMap<u64, Member>, ErrorCode> {
    let mut next = current.clone();
    for id in split_list(leaving) {
        let id: u64 = id.parse().map_err(|_| ErrorCode::MarshallingError)?;
        next.remove(&id);
    }
    let joining: Vec<&str> = split_list(joining);
    for spec in joining {
        let (key, value) = match spec.split_once('=') {
            Some((k, v)) if !v.contains('=') => (k.trim(), v.trim()),
            _ => return Err(ErrorCode::BadArguments),
        };
        let (id, member) = server(key, value, true)?;
        check_duplicates(&next, id, &member)?;
        next.insert(id, member);
    }
    Ok(next)
}

fn split_list(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// `server.N` (or just `N`) and its spec; an incremental joiner must name its client port too.
fn server(key: &str, value: &str, needs_client: bool) -> Result<(u64, Member), ErrorCode> {
    let id = key
        .rsplit_once('.')
        .map_or(key, |(_, id)| id)
        .parse::<u64>()
        .map_err(|_| ErrorCode::MarshallingError)?;
    if !(1..=254).contains(&id) {
        return Err(ErrorCode::BadArguments);
    }
    let line = ServerLine::parse(key, value).map_err(|_| ErrorCode::BadArguments)?;
    if needs_client && line.client.is_none() {
        // ZooKeeper: "each server should have 3 ports specified".
        return Err(ErrorCode::BadArguments);
    }
    Ok((id, member_of(&line)))
}

/// ZooKeeper's `checkAddressDuplicate`: no two members share a peer or election address.
/// Loopback and wildcard addresses are not compared (several members of a test ensemble share
/// 127.0.0.1), as in ZooKeeper.
fn check_duplicates(members: &BTreeMap<u64, Member>, id: u64, m: &Member) -> Result<(), ErrorCode> {
    let host = |a: &str| a.rsplit_once(':').map_or(a, |(h, _)| h).to_owned();
    let local = |h: &str| {
        let ip = h.trim_start_matches('[').trim_end_matches(']');
        h == "localhost"
            || ip
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
    };
    let addrs = |m: &Member| {
        let h = host(&m.raft_addr);
        if local(&h) {
            return Vec::new();
        }
        let mut a = vec![m.raft_addr.clone()];
        if m.election_port != 0 {
            a.push(format!("{h}:{}", m.election_port));
        }
        a
    };
    let mine = addrs(m);
    for (other_id, other) in members {
        if *other_id != id && addrs(other).iter().any(|a| mine.contains(a)) {
            return Err(ErrorCode::BadArguments);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(port: u16, observer: bool) -> Member {
        Member {
            raft_addr: format!("10.0.0.1:{port}"),
            election_port: port + 1000,
            client_addr: format!("127.0.0.1:{}", port - 700),
            observer,
        }
    }

    fn three() -> BTreeMap<u64, Member> {
        (1..=3)
            .map(|i| (i, member(2887 + i as u16, false)))
            .collect()
    }

    fn req(joining: &str, leaving: &str, new_members: &str) -> ReconfigRequest {
        ReconfigRequest {
            joining_servers: joining.into(),
            leaving_servers: leaving.into(),
            new_members: new_members.into(),
            cur_config_id: -1,
        }
    }

    #[test]
    fn the_text_is_zookeepers() {
        let mut m = three();
        m.get_mut(&3).unwrap().observer = true;
        m.get_mut(&2).unwrap().client_addr = String::new();
        assert_eq!(
            config_text(&m),
            "server.1=10.0.0.1:2888:3888:participant;127.0.0.1:2188\n\
             server.2=10.0.0.1:2889:3889:participant\n\
             server.3=10.0.0.1:2890:3890:observer;127.0.0.1:2190\n"
        );
    }

    #[test]
    fn members_join_and_leave() {
        let add = req(
            "server.4=127.0.0.1:2891:3891:participant;127.0.0.1:2191",
            "",
            "",
        );
        let next = reconfig_target(&three(), &add, true).unwrap();
        assert_eq!(next.len(), 4);
        assert_eq!(next[&4].client_addr, "127.0.0.1:2191");
        let next = reconfig_target(&three(), &req("", "3", ""), true).unwrap();
        assert_eq!(next.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        // A member given again with another role changes role.
        let demote = req(
            "server.3=10.0.0.1:2890:3890:observer;127.0.0.1:2190",
            "",
            "",
        );
        assert!(reconfig_target(&three(), &demote, true).unwrap()[&3].observer);
    }

    #[test]
    fn a_whole_new_membership_replaces_the_old() {
        let text = "server.1=10.0.0.1:2888:3888:participant;127.0.0.1:2188,\
                    server.5=10.0.0.1:2895:3895:participant;127.0.0.1:2195";
        let next = reconfig_target(&three(), &req("", "", text), true).unwrap();
        assert_eq!(next.keys().copied().collect::<Vec<_>>(), vec![1, 5]);
    }

    #[test]
    fn bad_requests_are_bad_arguments() {
        let bad = [
            req("server.5=127.0.0.1:1", "", ""),
            req("server.5=127.0.0.1:2895:3895:participant", "", ""),
            req("server.5", "", ""),
            // Port clash with member 1 (not on loopback, where ZooKeeper does not compare).
            req("server.5=10.0.0.1:2888:3895:participant;2195", "", ""),
            req("", "2,3", ""),
            req("", "", "foo=bar"),
        ];
        for r in bad {
            assert_eq!(
                reconfig_target(&three(), &r, true),
                Err(ErrorCode::BadArguments),
                "{r:?}"
            );
        }
        let unparsed = [
            req("server.x=127.0.0.1:2895:3895;2195", "", ""),
            req("", "two", ""),
            req("", "", "server.5=10.0.0.5:2888:3888:observer;2181"),
        ];
        for r in unparsed {
            let refused = reconfig_target(&three(), &r, true);
            assert_eq!(refused, Err(ErrorCode::MarshallingError), "{r:?}");
        }
        // Nothing to do, or a stranger leaving: the same membership, a new version.
        assert_eq!(
            reconfig_target(&three(), &req("", "", ""), true),
            Ok(three())
        );
        assert_eq!(
            reconfig_target(&three(), &req("", "9", ""), true),
            Ok(three())
        );
        let same_port = req("server.5=127.0.0.1:2888:3895:participant;2195", "", "");
        assert!(
            reconfig_target(&three(), &same_port, true).is_ok(),
            "loopback is not compared"
        );
        // Without standaloneEnabled one voter is enough.
        assert!(reconfig_target(&three(), &req("", "2,3", ""), false).is_ok());
        assert_eq!(
            reconfig_target(&three(), &req("", "1,2,3", ""), false),
            Err(ErrorCode::BadArguments)
        );
    }
}
