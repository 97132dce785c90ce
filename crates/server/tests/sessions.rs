//! Sessions and watches over real sockets: creation, reconnection, expiry, ordering guarantees.

use bytes::Bytes;
use corral_proto::records::*;
use corral_proto::{ErrorCode, EventType, Request, Response};
use corral_testkit::*;
use std::time::{Duration, Instant};

#[test]
fn timeout_is_negotiated_into_bounds() {
    let server = TestServer::start();
    let c = RawClient::resume(server.addr, 0, Bytes::from_static(&[0; 16]), 0, 1).unwrap();
    assert_eq!(c.timeout_ms, 400);
    let c = RawClient::resume(server.addr, 0, Bytes::from_static(&[0; 16]), 0, 999_999).unwrap();
    assert_eq!(c.timeout_ms, 10_000);
    assert_eq!(c.passwd.len(), 16);
}

#[test]
fn reconnect_keeps_session_and_ephemerals_and_old_connection_is_closed() {
    let server = TestServer::start();
    let mut a = RawClient::connect(server.addr);
    assert_eq!(a.call(create("/eph", b"x", 1)).err, 0);
    let zxid = a.ping().zxid;
    let mut b = RawClient::resume(server.addr, a.session_id, a.passwd.clone(), zxid, 5000).unwrap();
    assert_eq!(b.session_id, a.session_id);
    assert!(a.is_closed(), "the session's old connection is closed");
    let r = b.call(exists("/eph", false));
    let Some(Response::Stat(stat)) = r.body else {
        panic!("{r:?}")
    };
    assert_eq!(stat.ephemeral_owner, b.session_id);
    // getEphemerals lists only this session's nodes.
    let r = b.call(Request::GetEphemerals(PathRequest { path: "/".into() }));
    assert_eq!(r.body, Some(Response::Ephemerals(vec!["/eph".into()])));
}

#[test]
fn wrong_password_or_unknown_session_is_told_expired() {
    let server = TestServer::start();
    let a = RawClient::connect(server.addr);
    let wrong = RawClient::resume(
        server.addr,
        a.session_id,
        Bytes::from_static(&[7; 16]),
        0,
        5000,
    );
    assert_eq!(wrong.err(), Some("session expired".to_string()));
    let unknown = RawClient::resume(server.addr, 0x1234, Bytes::from_static(&[0; 16]), 0, 5000);
    assert_eq!(unknown.err(), Some("session expired".to_string()));
}

#[test]
fn client_ahead_of_server_is_refused() {
    let server = TestServer::start();
    let r = RawClient::resume(server.addr, 0, Bytes::from_static(&[0; 16]), 1 << 40, 5000);
    assert!(
        r.is_err(),
        "a client that saw a later zxid must not get a session here"
    );
}

#[test]
fn silent_session_expires_and_its_ephemerals_go_with_watches_fired() {
    let server = TestServer::start();
    let mut doomed =
        RawClient::resume(server.addr, 0, Bytes::from_static(&[0; 16]), 0, 400).unwrap();
    assert_eq!(doomed.call(create("/lease", b"", 1)).err, 0);
    let mut watcher = RawClient::connect(server.addr);
    assert_eq!(watcher.call(exists("/lease", true)).err, 0);
    assert_eq!(watcher.call(get_children("/", true)).err, 0);
    // The doomed client goes silent; the watcher keeps pinging.
    let start = Instant::now();
    let mut seen = Vec::new();
    watcher
        .stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while seen.len() < 2 && start.elapsed() < Duration::from_secs(5) {
        match watcher.next_event() {
            Ok(e) => seen.push((e.event_type, e.path)),
            Err(_) => {
                watcher
                    .stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                watcher.ping();
                watcher
                    .stream
                    .set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
            }
        }
    }
    watcher
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (EventType::NodeDeleted as i32, "/lease".to_string()),
            (EventType::NodeChildrenChanged as i32, "/".to_string())
        ]
    );
    assert_eq!(
        watcher.call(exists("/lease", false)).code(),
        ErrorCode::NoNode
    );
    assert!(doomed.is_closed());
    let again = RawClient::resume(
        server.addr,
        doomed.session_id,
        doomed.passwd.clone(),
        0,
        400,
    );
    assert!(again.is_err(), "an expired session cannot be resumed");
}

#[test]
fn close_session_deletes_ephemerals_and_closes_connection() {
    let server = TestServer::start();
    let mut a = RawClient::connect(server.addr);
    assert_eq!(a.call(create("/e1", b"", 1)).err, 0);
    assert_eq!(a.call(Request::CloseSession).err, 0);
    assert!(a.is_closed());
    let mut b = RawClient::connect(server.addr);
    assert_eq!(b.call(exists("/e1", false)).code(), ErrorCode::NoNode);
}

#[test]
fn watch_event_precedes_reply_that_observes_the_change() {
    let server = TestServer::start();
    let mut w = RawClient::connect(server.addr);
    let mut writer = RawClient::connect(server.addr);
    assert_eq!(w.call(create("/ordered", b"0", 0)).err, 0);
    assert_eq!(w.call(get_data("/ordered", true)).err, 0);
    assert_eq!(writer.call(set_data("/ordered", b"1", -1)).err, 0);
    // The watcher's next read sees the new data; the event must have arrived before it.
    let r = w.call(get_data("/ordered", false));
    let Some(Response::GetData(d)) = r.body else {
        panic!()
    };
    assert_eq!(d.data.as_deref().unwrap_or_default(), b"1");
    let e = w.events.pop_front().expect("event queued before the reply");
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (EventType::NodeDataChanged as i32, "/ordered")
    );
}

#[test]
fn watch_events_carry_the_zxid_of_the_change_that_fired_them() {
    // As ZooKeeper 3.9 (ZOOKEEPER-4655); 3.8 sent -1.
    let server = TestServer::start();
    let mut w = RawClient::connect(server.addr);
    let mut writer = RawClient::connect(server.addr);
    assert_eq!(w.call(exists("/z", true)).code(), ErrorCode::NoNode);
    let created = writer.call(create("/z", b"", 0));
    assert_eq!(w.call(get_data("/z", true)).err, 0);
    assert_eq!(w.call(get_children("/", true)).err, 0);
    // One multi: both events carry its one zxid.
    let multi = writer.call(Request::Multi(vec![
        set_data("/z", b"1", -1),
        create("/z2", b"", 0),
    ]));
    assert_eq!(multi.err, 0);
    w.ping();
    let got: Vec<(i32, i64)> = w.events.drain(..).map(|e| (e.event_type, e.zxid)).collect();
    assert_eq!(
        got,
        vec![
            (EventType::NodeCreated as i32, created.zxid),
            (EventType::NodeDataChanged as i32, multi.zxid),
            (EventType::NodeChildrenChanged as i32, multi.zxid),
        ]
    );
    assert!(created.zxid > 0 && multi.zxid > created.zxid);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.addr);
    for i in 0..200 {
        c.send(i + 1, &create(&format!("/p{i}"), b"", 0));
    }
    for i in 0..200 {
        let r = c.read_reply(i + 1, corral_proto::OpCode::Create).unwrap();
        assert_eq!(r.body, Some(Response::Path(format!("/p{i}"))));
    }
}

#[test]
fn set_watches_on_reconnect_reports_what_changed() {
    let server = TestServer::start();
    let mut a = RawClient::connect(server.addr);
    for p in ["/sw-data", "/sw-same", "/sw-gone"] {
        assert_eq!(a.call(create(p, b"", 0)).err, 0);
    }
    let seen = a.ping().zxid;
    let mut other = RawClient::connect(server.addr);
    assert_eq!(other.call(set_data("/sw-data", b"new", -1)).err, 0);
    assert_eq!(other.call(delete("/sw-gone", -1)).err, 0);
    assert_eq!(other.call(create("/sw-born", b"", 0)).err, 0);
    let mut b = RawClient::resume(server.addr, a.session_id, a.passwd.clone(), seen, 5000).unwrap();
    b.send(
        -8,
        &Request::SetWatches(SetWatches {
            relative_zxid: seen,
            data_watches: vec!["/sw-data".into(), "/sw-same".into(), "/sw-gone".into()],
            exist_watches: vec!["/sw-born".into()],
            child_watches: vec![],
        }),
    );
    let r = b.read_reply(-8, corral_proto::OpCode::SetWatches).unwrap();
    assert_eq!(r.err, 0);
    let mut events: Vec<_> = b.events.drain(..).map(|e| (e.path, e.event_type)).collect();
    events.sort();
    assert_eq!(
        events,
        vec![
            ("/sw-born".to_string(), EventType::NodeCreated as i32),
            ("/sw-data".to_string(), EventType::NodeDataChanged as i32),
            ("/sw-gone".to_string(), EventType::NodeDeleted as i32),
        ]
    );
    // The unchanged one was registered and fires later.
    assert_eq!(other.call(set_data("/sw-same", b"x", -1)).err, 0);
    let e = b.next_event().unwrap();
    assert_eq!(e.path, "/sw-same");
}

#[test]
fn persistent_recursive_watch_sees_descendants_but_not_child_changes() {
    let server = TestServer::start();
    let mut w = RawClient::connect(server.addr);
    let r = w.call(Request::AddWatch(AddWatchRequest {
        path: "/tree".into(),
        mode: 1,
    }));
    assert_eq!(r.body, Some(Response::ErrorBody(0)));
    let mut other = RawClient::connect(server.addr);
    assert_eq!(other.call(create("/tree", b"", 0)).err, 0);
    assert_eq!(other.call(create("/tree/a", b"", 0)).err, 0);
    assert_eq!(other.call(set_data("/tree/a", b"v", -1)).err, 0);
    let got: Vec<_> = (0..3)
        .map(|_| w.next_event().unwrap())
        .map(|e| (e.event_type, e.path))
        .collect();
    assert_eq!(
        got,
        vec![
            (EventType::NodeCreated as i32, "/tree".to_string()),
            (EventType::NodeCreated as i32, "/tree/a".to_string()),
            (EventType::NodeDataChanged as i32, "/tree/a".to_string()),
        ]
    );
    let r = w.call(Request::RemoveWatches(WatchTypeRequest {
        path: "/tree".into(),
        watcher_type: 3,
    }));
    assert_eq!(r.err, 0);
    let r = w.call(Request::RemoveWatches(WatchTypeRequest {
        path: "/tree".into(),
        watcher_type: 3,
    }));
    assert_eq!(r.code(), ErrorCode::NoWatcher);
}

/// The sequence: removeWatches(Data) does not touch a persistent watch, which goes on
/// firing; the 3.9 types remove persistent and recursive watches one by one; Any removes the rest.
#[test]
fn watches_are_removed_by_their_own_type() {
    let server = TestServer::start();
    let mut c0 = RawClient::connect(server.addr);
    let mut c1 = RawClient::connect(server.addr);
    let remove = |c: &mut RawClient, watcher_type| {
        c.call(Request::RemoveWatches(WatchTypeRequest {
            path: "/w".into(),
            watcher_type,
        }))
        .code()
    };
    assert_eq!(c0.call(create("/w", b"", 0)).err, 0);
    for mode in [0, 1] {
        let r = c1.call(Request::AddWatch(AddWatchRequest {
            path: "/w".into(),
            mode,
        }));
        assert_eq!(r.err, 0);
    }
    assert_eq!(
        remove(&mut c1, 2),
        ErrorCode::NoWatcher,
        "Data names no persistent watch"
    );
    assert_eq!(
        remove(&mut c1, 1),
        ErrorCode::NoWatcher,
        "Children names no recursive watch"
    );
    assert_eq!(c0.call(create("/w/x", b"", 0)).err, 0);
    let mut events: Vec<(i32, String)> = (0..2)
        .map(|_| c1.next_event().unwrap())
        .map(|e| (e.event_type, e.path))
        .collect();
    events.sort();
    assert_eq!(
        events,
        vec![
            (EventType::NodeCreated as i32, "/w/x".to_string()),
            (EventType::NodeChildrenChanged as i32, "/w".to_string()),
        ]
    );
    assert_eq!(remove(&mut c1, 4), ErrorCode::Ok, "Persistent");
    assert_eq!(remove(&mut c1, 4), ErrorCode::NoWatcher);
    // The recursive watch remains, and fires.
    assert_eq!(c0.call(set_data("/w/x", b"v", -1)).err, 0);
    let e = c1.next_event().unwrap();
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (EventType::NodeDataChanged as i32, "/w/x")
    );
    assert_eq!(remove(&mut c1, 5), ErrorCode::Ok, "PersistentRecursive");
    assert_eq!(
        remove(&mut c1, 3),
        ErrorCode::NoWatcher,
        "nothing is left for Any"
    );
    assert_eq!(
        remove(&mut c1, 6),
        ErrorCode::MarshallingError,
        "no such type"
    );
}

#[test]
fn watcher_without_read_permission_is_not_notified() {
    let server = TestServer::start();
    let mut w = RawClient::connect(server.addr);
    assert_eq!(w.call(exists("/secret", true)).code(), ErrorCode::NoNode);
    assert_eq!(w.call(exists("/public", true)).code(), ErrorCode::NoNode);
    let mut owner = RawClient::connect(server.addr);
    let digest = corral_tree::acl::digest_id("alice:pw");
    let secret = Request::Create {
        op: corral_proto::OpCode::Create,
        req: CreateRequest {
            path: "/secret".into(),
            data: Some(Bytes::new()),
            acl: vec![Acl::new(31, "digest", &digest)],
            flags: 0,
        },
    };
    assert_eq!(owner.call(secret).err, 0);
    assert_eq!(owner.call(create("/public", b"", 0)).err, 0);
    let e = w.next_event().unwrap();
    assert_eq!(e.path, "/public", "the /secret event was withheld");
}

#[test]
fn containers_are_reaped_once_emptied_and_ttl_nodes_once_stale() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.addr);
    let container = Request::Create {
        op: corral_proto::OpCode::CreateContainer,
        req: CreateRequest {
            path: "/box".into(),
            data: Some(Bytes::new()),
            acl: open_acl(),
            flags: 4,
        },
    };
    assert_eq!(c.call(container).err, 0);
    let ttl = Request::CreateTtl(CreateTtlRequest {
        path: "/ttl".into(),
        data: Some(Bytes::new()),
        acl: open_acl(),
        flags: 5,
        ttl: 300,
    });
    let r = c.call(ttl);
    let Some(Response::Create2(created)) = r.body else {
        panic!("{r:?}")
    };
    assert_eq!(
        created.stat.ephemeral_owner, 0,
        "clients see 0 for TTL nodes"
    );
    assert_eq!(c.call(create("/box/item", b"", 0)).err, 0);
    assert_eq!(c.call(delete("/box/item", -1)).err, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let box_gone = c.call(exists("/box", false)).code() == ErrorCode::NoNode;
        let ttl_gone = c.call(exists("/ttl", false)).code() == ErrorCode::NoNode;
        if box_gone && ttl_gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "container and TTL node should be reaped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn auth_whoami_and_super() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.addr);
    let r = c.call(Request::WhoAmI);
    let Some(Response::WhoAmI(infos)) = r.body else {
        panic!()
    };
    assert_eq!(
        infos,
        vec![ClientInfo {
            auth_scheme: "ip".into(),
            user: "127.0.0.1".into()
        }]
    );
    c.send(
        -4,
        &Request::Auth(AuthPacket {
            auth_type: 0,
            scheme: "digest".into(),
            auth: Bytes::from_static(b"super:test"),
        }),
    );
    let r = c.read_reply(-4, corral_proto::OpCode::Auth).unwrap();
    assert_eq!((r.err, r.zxid), (0, 0));
    let r = c.call(Request::WhoAmI);
    let Some(Response::WhoAmI(infos)) = r.body else {
        panic!()
    };
    assert!(infos.contains(&ClientInfo {
        auth_scheme: "super".into(),
        user: "".into()
    }));
    // Unknown schemes fail and close the connection.
    c.send(
        -4,
        &Request::Auth(AuthPacket {
            auth_type: 0,
            scheme: "kerberos9".into(),
            auth: Bytes::new(),
        }),
    );
    let r = c.read_reply(-4, corral_proto::OpCode::Auth).unwrap();
    assert_eq!(r.code(), ErrorCode::AuthFailed);
    assert!(c.is_closed());
}

#[test]
fn four_letter_words_answer_and_respect_the_whitelist() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.addr);
    c.call(create("/w", b"", 0));
    c.call(get_data("/w", true));
    assert_eq!(four_letter(server.addr, "ruok"), "imok");
    let srvr = four_letter(server.addr, "srvr");
    assert!(
        srvr.contains("Mode: standalone") && srvr.contains("Node count: 6"),
        "{srvr}"
    );
    let wchs = four_letter(server.addr, "wchs");
    assert_eq!(wchs, "1 connections watching 1 paths\nTotal watches:1\n");
    let cons = four_letter(server.addr, "cons");
    assert!(cons.contains(&format!("sid={:#x}", c.session_id)), "{cons}");
    assert!(four_letter(server.addr, "mntr").contains("zk_znode_count\t6"));
    let mut cfg = test_config();
    cfg.four_letter_whitelist = vec!["srvr".into()];
    let strict = TestServer::start_with(cfg);
    assert_eq!(
        four_letter(strict.addr, "ruok"),
        "ruok is not executed because it is not in the whitelist.\n"
    );
}

#[test]
fn replies_after_a_sync_keep_request_order() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.addr);
    for round in 0..50 {
        c.send(1, &Request::Sync(PathRequest { path: "/".into() }));
        c.send(2, &create(&format!("/after-sync-{round}"), b"", 0));
        c.send(3, &get_data("/", false));
        // read_reply asserts that each reply carries the xid it waits for.
        assert_eq!(c.read_reply(1, corral_proto::OpCode::Sync).unwrap().err, 0);
        assert_eq!(
            c.read_reply(2, corral_proto::OpCode::Create).unwrap().err,
            0
        );
        assert_eq!(
            c.read_reply(3, corral_proto::OpCode::GetData).unwrap().err,
            0
        );
    }
}

/// Writes are proposed past the reads waiting behind earlier writes, yet each read sees exactly
/// the writes sent before it (not the ones after), and replies keep request order.
#[test]
fn pipelined_reads_see_exactly_the_writes_before_them() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.addr);
    assert_eq!(c.call(create("/fifo", b"v0", 0)).err, 0);
    let rounds = 200;
    let mut xid = 1;
    for i in 1..=rounds {
        c.send(xid, &set_data("/fifo", format!("v{i}").as_bytes(), -1));
        c.send(xid + 1, &get_data("/fifo", false));
        xid += 2;
    }
    let mut xid = 1;
    for i in 1..=rounds {
        let set = c.read_reply(xid, corral_proto::OpCode::SetData).unwrap();
        assert_eq!(set.err, 0);
        let get = c
            .read_reply(xid + 1, corral_proto::OpCode::GetData)
            .unwrap();
        let Some(Response::GetData(d)) = get.body else {
            panic!("getData: {get:?}")
        };
        assert_eq!(
            d.data.as_deref().unwrap_or_default(),
            format!("v{i}").as_bytes(),
            "read {i} saw another write"
        );
        assert_eq!(d.stat.version, i, "read {i}");
        xid += 2;
    }
}

#[test]
fn check_on_its_own_answers_like_the_check_inside_a_multi() {
    // ZooKeeper 3.8 never answers a successful stand-alone check (a NullPointerException in its
    // FinalRequestProcessor); Corral answers OK with an empty body, and the failures as
    // ZooKeeper does (compared in differential.rs).
    let server = TestServer::start();
    let mut c = RawClient::connect(server.addr);
    assert_eq!(c.call(create("/checked", b"", 0)).err, 0);
    assert_eq!(c.call(set_data("/checked", b"v", -1)).err, 0);
    let check = |version| {
        Request::Check(PathVersionRequest {
            path: "/checked".into(),
            version,
        })
    };
    for version in [1, -1] {
        let r = c.call(check(version));
        assert_eq!(
            (r.err, r.body),
            (0, Some(Response::Empty)),
            "version {version}"
        );
    }
    assert_eq!(c.call(check(0)).code(), ErrorCode::BadVersion);
    // It changed nothing.
    let r = c.call(get_data("/checked", false));
    let Some(Response::GetData(d)) = r.body else {
        panic!("{r:?}")
    };
    assert_eq!(
        (d.stat.version, d.data.as_deref().unwrap_or_default()),
        (1, &b"v"[..])
    );
}

#[test]
fn ttl_nodes_live_while_modified_or_parents_and_sequential_ones_expire_too() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.addr);
    let ttl = |path: &str, flags: i32| {
        Request::CreateTtl(CreateTtlRequest {
            path: path.into(),
            data: Some(Bytes::new()),
            acl: open_acl(),
            flags,
            ttl: 1000,
        })
    };
    assert_eq!(c.call(ttl("/kept-fresh", 5)).err, 0);
    assert_eq!(c.call(ttl("/parent", 5)).err, 0);
    assert_eq!(c.call(create("/parent/child", b"", 0)).err, 0);
    let r = c.call(ttl("/seq-", 6));
    let Some(Response::Create2(seq)) = r.body else {
        panic!("{r:?}")
    };
    let suffix = seq
        .path
        .strip_prefix("/seq-")
        .expect("named after the request");
    assert!(
        suffix.len() == 10 && suffix.bytes().all(|b| b.is_ascii_digit()),
        "{}",
        seq.path
    );
    // Written every 100 ms for twice its TTL: a modified TTL node is not stale.
    let until = Instant::now() + Duration::from_millis(2000);
    while Instant::now() < until {
        assert_eq!(c.call(set_data("/kept-fresh", b"x", -1)).err, 0);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.call(exists("/kept-fresh", false)).err, 0);
    assert_eq!(
        c.call(exists("/parent", false)).err,
        0,
        "a TTL node with children stays"
    );
    let gone = |c: &mut RawClient, p: &str| c.call(exists(p, false)).code() == ErrorCode::NoNode;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(&mut c, &seq.path) {
        assert!(Instant::now() < deadline, "the sequential TTL node expires");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Once childless and untouched for its TTL, the parent goes as well.
    assert_eq!(c.call(delete("/parent/child", -1)).err, 0);
    while !(gone(&mut c, "/parent") && gone(&mut c, "/kept-fresh")) {
        assert!(Instant::now() < deadline, "stale TTL nodes are removed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn one_connection_holds_a_persistent_and_a_recursive_watch_on_one_path() {
    // As ZooKeeper 3.9 (ZOOKEEPER-4466): both stay, each fires as its kind does, and an event
    // both would fire for reaches the connection once.
    let server = TestServer::start();
    let mut w = RawClient::connect(server.addr);
    let mut writer = RawClient::connect(server.addr);
    assert_eq!(w.call(create("/both", b"", 0)).err, 0);
    for mode in [0, 1] {
        let add = Request::AddWatch(AddWatchRequest {
            path: "/both".into(),
            mode,
        });
        assert_eq!(w.call(add).err, 0);
    }
    assert_eq!(writer.call(create("/both/kid", b"", 0)).err, 0);
    assert_eq!(writer.call(set_data("/both", b"1", -1)).err, 0);
    assert_eq!(writer.call(set_data("/both/kid", b"1", -1)).err, 0);
    w.ping();
    let got: Vec<(i32, String)> = w.events.drain(..).map(|e| (e.event_type, e.path)).collect();
    let (created, changed, children) = (
        EventType::NodeCreated as i32,
        EventType::NodeDataChanged as i32,
        EventType::NodeChildrenChanged as i32,
    );
    assert_eq!(
        got,
        vec![
            (created, "/both/kid".to_string()),
            (children, "/both".to_string()),
            (changed, "/both".to_string()),
            (changed, "/both/kid".to_string()),
        ]
    );
}
