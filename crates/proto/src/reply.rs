//! What a server writes back: framed replies (header, then the body when the request
//! succeeded), watch notifications, and getChildren bodies written straight from a list of
//! names. Sizes are known before encoding ([`reply_len`]), so a server can count a reply
//! against a client's budget before it is serialized.

use crate::codes::{keeper_state, xid};
use crate::message::encode_frame;
use crate::records::{ReplyHeader, Stat, WatcherEvent};
use crate::{ErrorCode, EventType, Jute, Response};
use bytes::Bytes;

/// The zxid in the header of an event that no change fired.
pub const NO_ZXID: i64 = -1;

/// Appends a framed reply: header, then the body when the request succeeded.
pub fn encode_reply(xid: i32, zxid: i64, result: &Result<Response, ErrorCode>, out: &mut Vec<u8>) {
    let err = match result {
        Ok(_) => 0,
        Err(e) => e.code(),
    };
    encode_frame(
        &ReplyHeader { xid, zxid, err },
        |o| {
            if let Ok(resp) = result {
                resp.encode(o)
            }
        },
        out,
    );
}

/// A framed reply as one buffer.
pub fn reply_frame(xid: i32, zxid: i64, result: &Result<Response, ErrorCode>) -> Bytes {
    let mut out = Vec::with_capacity(reply_len(result));
    encode_reply(xid, zxid, result, &mut out);
    Bytes::from(out)
}

/// The bytes [`encode_reply`] writes for `result`.
pub fn reply_len(result: &Result<Response, ErrorCode>) -> usize {
    const FRAME_AND_HEADER: usize = 4 + 16;
    FRAME_AND_HEADER + result.as_ref().map_or(0, Response::encoded_len)
}

/// A watch notification. Its header carries the zxid of the change that fired it, as ZooKeeper
/// 3.9 sends it (ZOOKEEPER-4655); [`NO_ZXID`] (3.8's value everywhere) for events no change
/// fired, such as those replayed for a reconnecting client's setWatches.
pub fn notification_frame(path: &str, kind: EventType, zxid: i64) -> Bytes {
    let mut out = Vec::with_capacity(32 + path.len());
    let header = ReplyHeader {
        xid: xid::NOTIFICATION,
        zxid,
        err: 0,
    };
    let event = WatcherEvent {
        event_type: kind as i32,
        state: keeper_state::SYNC_CONNECTED,
        path: path.to_owned(),
    };
    encode_frame(&header, |o| event.encode(o), &mut out);
    Bytes::from(out)
}

/// getChildren's (with `stat`, getChildren2's) reply body: the names in the order given (ZooKeeper
/// sends them unsorted; clients that care sort), then the Stat.
pub fn children_body<'a>(names: impl Iterator<Item = &'a str>, stat: Option<&Stat>) -> Bytes {
    let mut out = Vec::with_capacity(4 + 16 * names.size_hint().0 + 80);
    out.extend_from_slice(&[0; 4]);
    let mut count: i32 = 0;
    for name in names {
        out.extend_from_slice(&(name.len() as i32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        count += 1;
    }
    out[..4].copy_from_slice(&count.to_be_bytes());
    if let Some(stat) = stat {
        stat.encode(&mut out);
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_body_decodes_as_get_children2() {
        let stat = Stat {
            czxid: 3,
            ..Stat::default()
        };
        let body = children_body(["a", "bc"].into_iter(), Some(&stat));
        let mut r = crate::Reader::new(&body);
        let names: Vec<String> = Jute::decode(&mut r).unwrap();
        assert_eq!(names, ["a", "bc"]);
        assert_eq!(Stat::decode(&mut r).unwrap(), stat);
    }

    #[test]
    fn reply_len_is_what_is_written() {
        for result in [
            Ok(Response::Empty),
            Err(ErrorCode::NoNode),
            Ok(Response::Path("/x".into())),
        ] {
            let frame = reply_frame(7, 9, &result);
            assert_eq!(frame.len(), reply_len(&result));
        }
    }
}
