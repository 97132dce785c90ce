//! Feeds arbitrary bytes to everything that decodes client input: the frame decoder, the connect
//! handshake, and request bodies under every opcode. Nothing may panic, and whatever decodes must
//! encode back to bytes that decode to the same request.
#![no_main]

use bytes::BytesMut;
use corral_proto::frame::{FrameDecoder, Handshake};
use corral_proto::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Handshake::decode(data);
    let mut buf = BytesMut::from(data);
    let decoder = FrameDecoder::new(1 << 16);
    while let Ok(Some(_frame)) = decoder.decode(&mut buf) {}
    if data.len() >= 4 {
        let op = i32::from_be_bytes([data[0], data[1], data[2], data[3]]) % 128;
        if let Ok(req) = Request::decode(op, &data[4..]) {
            let mut again = Vec::new();
            req.encode(&mut again);
            assert_eq!(Request::decode(op, &again).as_ref(), Ok(&req));
        }
    }
});
