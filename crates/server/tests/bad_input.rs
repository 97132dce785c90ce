//! Hostile and broken input: every case gets ZooKeeper's answer (an error code or a closed
//! connection), and the server keeps serving everyone else.

use corral_proto::{ErrorCode, Request, Response};
use corral_testkit::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

fn still_serving(server: &TestServer) {
    let mut c = RawClient::connect(server.addr);
    let r = c.call(get_data("/", false));
    assert_eq!(r.err, 0, "server still answers after bad input");
}

#[test]
fn oversized_frame_closes_only_that_connection() {
    let mut cfg = test_config();
    cfg.max_frame_len = 4096;
    let server = TestServer::start_with(cfg);
    let mut bystander = RawClient::connect(server.addr);
    let mut c = RawClient::connect(server.addr);
    let big = create("/big", &vec![7u8; 10_000], 0);
    c.stream
        .write_all(&corral_proto::message::request_frame(1, &big))
        .unwrap();
    assert!(c.is_closed());
    // Data just under the limit is fine.
    let mut ok = RawClient::connect(server.addr);
    assert_eq!(ok.call(create("/fits", &vec![1u8; 3000], 0)).err, 0);
    assert_eq!(bystander.call(exists("/fits", false)).err, 0);
    still_serving(&server);
}

#[test]
fn negative_and_short_frames_close_the_connection() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.addr);
    c.stream.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(c.is_closed());
    let mut c = RawClient::connect(server.addr);
    c.stream.write_all(&[0, 0, 0, 3, 1, 2, 3]).unwrap();
    assert!(c.is_closed());
    still_serving(&server);
}

#[test]
fn garbage_instead_of_handshake_is_closed() {
    let server = TestServer::start();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(&[0, 0, 0, 5, 9, 9, 9, 9, 9]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(read_frame(&mut s).is_err());
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(read_frame(&mut s).is_err());
    still_serving(&server);
}

#[test]
fn truncated_frame_then_disconnect_leaves_server_healthy() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.addr);
    let frame = corral_proto::message::request_frame(1, &create("/t", b"abc", 0));
    c.stream.write_all(&frame[..frame.len() - 3]).unwrap();
    drop(c);
    still_serving(&server);
}

#[test]
fn undecodable_body_is_a_marshalling_error_and_connection_survives() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.addr);
    // A create whose path length claims more bytes than the frame has.
    let mut frame = Vec::new();
    let body = [0u8, 0, 0, 1, 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff];
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(&body);
    c.stream.write_all(&frame).unwrap();
    let r = c.read_reply(1, corral_proto::OpCode::Create).unwrap();
    assert_eq!(r.code(), ErrorCode::MarshallingError);
    assert_eq!(c.call(get_data("/", false)).err, 0);
}

#[test]
fn unknown_opcode_is_unimplemented_then_closed() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.addr);
    let body = [0u8, 0, 0, 9, 0, 0, 0, 99];
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    c.stream.write_all(&frame).unwrap();
    let r = c.read_reply(9, corral_proto::OpCode::Ping).unwrap();
    assert_eq!((r.code(), r.zxid), (ErrorCode::Unimplemented, -1));
    assert!(c.is_closed());
    still_serving(&server);
}

#[test]
fn invalid_paths_get_bad_arguments() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.addr);
    for p in [
        "noslash",
        "/trailing/",
        "/double//slash",
        "/dot/.",
        "/nul\u{0}",
    ] {
        let r = c.call(set_data(p, b"", -1));
        assert_eq!(r.code(), ErrorCode::BadArguments, "{p:?}");
    }
    assert_eq!(
        c.call(create("relative", b"", 0)).code(),
        ErrorCode::BadArguments
    );
    assert_eq!(
        c.call(delete("/zookeeper", -1)).code(),
        ErrorCode::BadArguments
    );
    assert_eq!(c.call(delete("/", -1)).code(), ErrorCode::BadArguments);
    // Reads do not validate: a bad path is simply not there.
    assert_eq!(c.call(get_data("noslash", false)).code(), ErrorCode::NoNode);
    assert_eq!(
        c.call(Request::Sync(corral_proto::PathRequest {
            path: "anything".into()
        }))
        .body,
        Some(Response::Path("anything".into()))
    );
}

#[test]
fn connection_flood_is_capped_per_address_and_others_keep_working() {
    let mut cfg = test_config();
    cfg.max_client_cnxns = 20;
    let server = TestServer::start_with(cfg);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(RawClient::connect(server.addr));
    }
    // The 21st connection from the same address is closed without a handshake answer.
    let refused = corral_proto::Jute::to_bytes(&corral_proto::ConnectRequest::default());
    let mut s = TcpStream::connect(server.addr).unwrap();
    let mut frame = (refused.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&refused);
    let _ = s.write_all(&frame);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(read_frame(&mut s).is_err());
    for c in held.iter_mut().take(3) {
        assert_eq!(c.call(get_data("/", false)).err, 0);
    }
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    still_serving(&server);
}

#[test]
fn a_connection_that_never_asks_for_a_session_is_closed_and_frees_its_slot() {
    let mut cfg = test_config();
    cfg.max_client_cnxns = 2;
    cfg.sessionless_timeout_ms = 300;
    let server = TestServer::start_with(cfg);
    // Two silent connections fill this address's slots; a half-sent connect request is as
    // silent as none.
    let mut silent = TcpStream::connect(server.addr).unwrap();
    let mut half = TcpStream::connect(server.addr).unwrap();
    half.write_all(&[0, 0, 0, 44, 0, 0]).unwrap();
    for s in [&mut silent, &mut half] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        assert!(
            matches!(std::io::Read::read(s, &mut b), Ok(0)),
            "closed by the server"
        );
    }
    // Their slots are free again: two real sessions fit.
    let mut a = RawClient::connect(server.addr);
    let mut b = RawClient::connect(server.addr);
    assert_eq!(a.call(get_data("/", false)).err, 0);
    // A live session is not sessionless: idle past that timeout, it stays.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(b.call(get_data("/", false)).err, 0);
}

#[test]
fn a_queue_of_sasl_packets_behind_a_write_is_answered_in_order() {
    // Without a JAAS server section each SASL packet is answered at once, with no token, as
    // ZooKeeper does. Queued behind a write, hundreds are answered one after another when it
    // applies; handling each from the last one's effects once overflowed the driver's stack.
    let server = TestServer::start();
    let mut c = RawClient::connect(server.addr);
    let n = 900;
    c.send(1, &create("/sasl-queue", b"x", 0));
    for i in 0..n {
        c.send(2 + i, &Request::Sasl(bytes::Bytes::new()));
    }
    assert_eq!(
        c.read_reply(1, corral_proto::OpCode::Create).unwrap().err,
        0
    );
    for i in 0..n {
        let r = c.read_reply(2 + i, corral_proto::OpCode::Sasl).unwrap();
        assert_eq!((r.err, r.body), (0, Some(Response::Sasl(None))));
    }
    still_serving(&server);
}
