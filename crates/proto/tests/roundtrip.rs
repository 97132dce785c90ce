//! Every request and response survives encode → decode unchanged, and no byte string makes the
//! decoder panic.

use bytes::Bytes;
use corral_proto::message::request_frame;
use corral_proto::*;
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    "[/a-zA-Z0-9_é.-]{0,12}"
}

/// A buffer that may be null (znode data).
fn buffer() -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(bytes())
}

fn bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn stat() -> impl Strategy<Value = Stat> {
    (any::<[i64; 6]>(), any::<[i32; 5]>()).prop_map(|(l, i)| Stat {
        czxid: l[0],
        mzxid: l[1],
        ctime: l[2],
        mtime: l[3],
        version: i[0],
        cversion: i[1],
        aversion: i[2],
        ephemeral_owner: l[4],
        data_length: i[3],
        num_children: i[4],
        pzxid: l[5],
    })
}

fn acl() -> impl Strategy<Value = Vec<Acl>> {
    proptest::collection::vec(
        (any::<i32>(), text(), text()).prop_map(|(p, s, i)| Acl::new(p, &s, &i)),
        0..3,
    )
}

fn path_watch() -> impl Strategy<Value = PathWatchRequest> {
    (text(), any::<bool>()).prop_map(|(path, watch)| PathWatchRequest { path, watch })
}

fn path_version() -> impl Strategy<Value = PathVersionRequest> {
    (text(), any::<i32>()).prop_map(|(path, version)| PathVersionRequest { path, version })
}

fn create() -> impl Strategy<Value = Request> {
    (
        prop_oneof![
            Just(OpCode::Create),
            Just(OpCode::Create2),
            Just(OpCode::CreateContainer)
        ],
        text(),
        buffer(),
        acl(),
        any::<i32>(),
    )
        .prop_map(|(op, path, data, acl, flags)| Request::Create {
            op,
            req: CreateRequest {
                path,
                data,
                acl,
                flags,
            },
        })
}

fn write_op() -> impl Strategy<Value = Request> {
    prop_oneof![
        create(),
        (text(), buffer(), acl(), any::<i32>(), any::<i64>()).prop_map(
            |(path, data, acl, flags, ttl)| Request::CreateTtl(CreateTtlRequest {
                path,
                data,
                acl,
                flags,
                ttl
            })
        ),
        path_version().prop_map(Request::Delete),
        path_version().prop_map(Request::Check),
        (text(), buffer(), any::<i32>()).prop_map(|(path, data, version)| Request::SetData(
            SetDataRequest {
                path,
                data,
                version
            }
        )),
    ]
}

fn strings() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(text(), 0..4)
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        write_op(),
        path_watch().prop_map(Request::Exists),
        path_watch().prop_map(Request::GetData),
        path_watch().prop_map(Request::GetChildren),
        path_watch().prop_map(Request::GetChildren2),
        text().prop_map(|path| Request::GetAcl(PathRequest { path })),
        text().prop_map(|path| Request::Sync(PathRequest { path })),
        text().prop_map(|path| Request::GetEphemerals(PathRequest { path })),
        text().prop_map(|path| Request::GetAllChildrenNumber(PathRequest { path })),
        (text(), acl(), any::<i32>())
            .prop_map(|(path, acl, version)| Request::SetAcl(SetAclRequest { path, acl, version })),
        proptest::collection::vec(write_op(), 0..4).prop_map(Request::Multi),
        proptest::collection::vec(
            prop_oneof![
                path_watch().prop_map(Request::GetData),
                path_watch().prop_map(Request::GetChildren)
            ],
            0..4
        )
        .prop_map(Request::MultiRead),
        (text(), any::<i32>()).prop_map(|(path, watcher_type)| Request::RemoveWatches(
            WatchTypeRequest { path, watcher_type }
        )),
        (text(), any::<i32>())
            .prop_map(|(path, mode)| Request::AddWatch(AddWatchRequest { path, mode })),
        (any::<i32>(), text(), bytes()).prop_map(|(auth_type, scheme, auth)| Request::Auth(
            AuthPacket {
                auth_type,
                scheme,
                auth
            }
        )),
        (
            any::<i64>(),
            strings(),
            strings(),
            strings(),
            strings(),
            strings()
        )
            .prop_map(|(z, a, b, c, d, e)| Request::SetWatches2(SetWatches2 {
                relative_zxid: z,
                data_watches: a,
                exist_watches: b,
                child_watches: c,
                persistent_watches: d,
                persistent_recursive_watches: e
            })),
        (any::<i64>(), strings(), strings(), strings()).prop_map(|(z, a, b, c)| {
            Request::SetWatches(SetWatches {
                relative_zxid: z,
                data_watches: a,
                exist_watches: b,
                child_watches: c,
            })
        }),
        (text(), text(), text(), any::<i64>()).prop_map(|(j, l, n, id)| Request::Reconfig(
            ReconfigRequest {
                joining_servers: j,
                leaving_servers: l,
                new_members: n,
                cur_config_id: id,
            }
        )),
        (text(), any::<i32>()).prop_map(|(path, watcher_type)| Request::CheckWatches(
            WatchTypeRequest { path, watcher_type }
        )),
        "[/a-z]{1,10}".prop_map(Request::DeleteContainer),
        Just(Request::Ping),
        Just(Request::WhoAmI),
        Just(Request::CloseSession),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::Ok),
        Just(ErrorCode::NoNode),
        Just(ErrorCode::RuntimeInconsistency),
        Just(ErrorCode::BadVersion)
    ]
}

fn response() -> impl Strategy<Value = (OpCode, Response)> {
    let single = prop_oneof![
        text().prop_map(|p| (OpCode::Create, Response::Path(p))),
        (text(), stat()).prop_map(|(path, stat)| (
            OpCode::Create2,
            Response::Create2(Create2Response { path, stat })
        )),
        stat().prop_map(|s| (OpCode::SetData, Response::Stat(s))),
        (buffer(), stat()).prop_map(|(data, stat)| (
            OpCode::GetData,
            Response::GetData(GetDataResponse { data, stat })
        )),
        strings().prop_map(|c| (OpCode::GetChildren, Response::GetChildren(c))),
        (strings(), stat()).prop_map(|(children, stat)| (
            OpCode::GetChildren2,
            Response::GetChildren2(GetChildren2Response { children, stat })
        )),
        (acl(), stat()).prop_map(|(acl, stat)| (
            OpCode::GetAcl,
            Response::GetAcl(GetAclResponse { acl, stat })
        )),
        any::<i32>().prop_map(|n| (OpCode::GetAllChildrenNumber, Response::Count(n))),
        Just((OpCode::Delete, Response::Empty)),
        strings().prop_map(|e| (OpCode::GetEphemerals, Response::Ephemerals(e))),
        proptest::collection::vec((text(), text()), 0..4).prop_map(|infos| (
            OpCode::WhoAmI,
            Response::WhoAmI(
                infos
                    .into_iter()
                    .map(|(auth_scheme, user)| ClientInfo { auth_scheme, user })
                    .collect()
            )
        )),
        any::<i32>().prop_map(|e| (OpCode::AddWatch, Response::ErrorBody(e))),
    ];
    prop_oneof![
        single.clone(),
        proptest::collection::vec(
            prop_oneof![
                single.prop_map(|(op, r)| MultiResult::Ok(op, r)),
                error_code().prop_map(MultiResult::Error)
            ],
            0..4
        )
        .prop_map(|r| (OpCode::Multi, Response::Multi(r))),
    ]
}

proptest! {
    #[test]
    fn requests_round_trip(req in request()) {
        let frame = request_frame(7, &req);
        let len = i32::from_be_bytes(frame[0..4].try_into().unwrap()) as usize;
        prop_assert_eq!(len, frame.len() - 4);
        let mut r = Reader::new(&frame[4..]);
        let header = RequestHeader::decode(&mut r).unwrap();
        prop_assert_eq!(header.xid, 7);
        let body = &frame[12..];
        prop_assert_eq!(Request::decode(header.op_type, body).unwrap(), req);
    }

    #[test]
    fn responses_round_trip((op, resp) in response()) {
        let mut body = Vec::new();
        resp.encode(&mut body);
        // What the server counts a queued reply as is exactly its encoding.
        prop_assert_eq!(resp.encoded_len(), body.len());
        prop_assert_eq!(Response::decode(op, &body).unwrap(), resp);
    }

    #[test]
    fn headers_and_events_round_trip(
        (xid, zxid, err) in (any::<i32>(), any::<i64>(), any::<i32>()),
        (event_type, state, path) in (any::<i32>(), any::<i32>(), text()),
    ) {
        let header = ReplyHeader { xid, zxid, err };
        let mut out = Vec::new();
        header.encode(&mut out);
        prop_assert_eq!(out.len(), 16);
        prop_assert_eq!(ReplyHeader::from_bytes(&out).unwrap(), header);
        let event = WatcherEvent { event_type, state, path };
        let mut out = Vec::new();
        event.encode(&mut out);
        prop_assert_eq!(WatcherEvent::from_bytes(&out).unwrap(), event);
    }

    #[test]
    fn handshakes_round_trip(
        (protocol_version, last_zxid_seen, time_out, session_id, passwd) in
            (any::<i32>(), any::<i64>(), any::<i32>(), any::<i64>(), bytes()),
        read_only in proptest::option::of(any::<bool>()),
    ) {
        let hs = frame::Handshake {
            request: ConnectRequest { protocol_version, last_zxid_seen, time_out, session_id, passwd: passwd.clone() },
            read_only,
        };
        let mut out = Vec::new();
        hs.encode(&mut out);
        prop_assert_eq!(frame::Handshake::decode(&out).unwrap(), hs);
        let resp = ConnectResponse { protocol_version, time_out, session_id, passwd };
        let framed = frame::connect_response_frame(&resp, read_only);
        let len = i32::from_be_bytes(framed[0..4].try_into().unwrap()) as usize;
        prop_assert_eq!(len, framed.len() - 4);
        // The reply carries the readOnly byte exactly when the request did.
        let body = &framed[4..];
        let mut r = Reader::new(body);
        prop_assert_eq!(ConnectResponse::decode(&mut r).unwrap(), resp);
        prop_assert_eq!(r.is_empty(), read_only.is_none());
    }

    #[test]
    fn decoder_never_panics(op in -20i32..120, body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Request::decode(op, &body);
        let _ = corral_proto::frame::Handshake::decode(&body);
    }
}
