//! Transaction-log entries: `TxnHeader ‖ txn record ‖ [TxnDigest]`, decoded as
//! `SerializeUtils.deserializeTxn` does, into typed transactions.
//!
//! Where ZooKeeper's reader guesses from end of data (a pre-3.3 create without parentCVersion, a
//! pre-3.6 closeSession without a body, a txn without the 3.6+ digest), this decides from the
//! bytes left, since the entry is complete in memory. Unlike ZooKeeper, an entry whose checksum
//! holds but whose bytes do not parse, or leave bytes over, is an error rather than the silent
//! end of the log: it means a format this importer does not know.

use corral_proto::jute::java_string;
use corral_proto::{Acl, DecodeError, Jute};

/// The opcodes that appear in logs: `corral_proto::OpCode`'s, as the ints a log holds.
pub mod op {
    use corral_proto::OpCode;

    pub const CREATE: i32 = OpCode::Create as i32;
    pub const DELETE: i32 = OpCode::Delete as i32;
    pub const SET_DATA: i32 = OpCode::SetData as i32;
    pub const SET_ACL: i32 = OpCode::SetAcl as i32;
    pub const CHECK: i32 = OpCode::Check as i32;
    pub const MULTI: i32 = OpCode::Multi as i32;
    pub const CREATE2: i32 = OpCode::Create2 as i32;
    pub const RECONFIG: i32 = OpCode::Reconfig as i32;
    pub const CREATE_CONTAINER: i32 = OpCode::CreateContainer as i32;
    pub const DELETE_CONTAINER: i32 = OpCode::DeleteContainer as i32;
    pub const CREATE_TTL: i32 = OpCode::CreateTtl as i32;
    pub const ERROR: i32 = OpCode::Error as i32;
    pub const CREATE_SESSION: i32 = OpCode::CreateSession as i32;
    pub const CLOSE_SESSION: i32 = OpCode::CloseSession as i32;
}

const HEADER_LEN: usize = 32;
const DIGEST_LEN: usize = 12;

/// `TxnHeader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnHeader {
    pub client_id: i64,
    pub cxid: i32,
    pub zxid: i64,
    pub time: i64,
    pub op: i32,
}

/// `TxnDigest` (3.6+): the tree digest after this txn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnDigest {
    pub version: i32,
    pub tree_digest: i64,
}

/// `CreateTxn`, `CreateContainerTxn` and `CreateTTLTxn`, told apart by `op`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    pub op: i32,
    pub path: String,
    pub data: Option<Vec<u8>>,
    pub acl: Option<Vec<Acl>>,
    pub ephemeral: bool,
    pub parent_cversion: i32,
    pub ttl: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txn {
    Create(Create),
    /// delete and deleteContainer.
    Delete {
        path: String,
    },
    /// setData and reconfig.
    SetData {
        path: String,
        data: Option<Vec<u8>>,
        version: i32,
    },
    SetAcl {
        path: String,
        acl: Option<Vec<Acl>>,
        version: i32,
    },
    Check {
        path: String,
        version: i32,
    },
    Error {
        err: i32,
    },
    CreateSession {
        timeout_ms: i32,
    },
    /// `paths` is the 3.6+ CloseSessionTxn list; `None` for older logs.
    CloseSession {
        paths: Option<Vec<String>>,
    },
    /// A multi whose sub-txns include an error is applied as nothing (`failed`).
    Multi {
        failed: bool,
        txns: Vec<Txn>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub header: TxnHeader,
    pub txn: Txn,
    pub digest: Option<TxnDigest>,
}

/// Why an entry is not a transaction.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("{what} (at byte {at} of the entry)")]
    Malformed { at: u64, what: String },
    #[error("unsupported transaction type {op}")]
    Unsupported { op: i32, zxid: i64 },
}

/// An entry being decoded: `corral_proto`'s reader (and its ACL decoding), with the names of the
/// fields for error messages and Java's string decoding.
struct Reader<'a> {
    inner: corral_proto::Reader<'a>,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader {
            inner: corral_proto::Reader::new(bytes),
        }
    }

    fn offset(&self) -> u64 {
        self.inner.offset() as u64
    }

    /// Decodes one value; an error says which field and where it started.
    fn field<T>(
        &mut self,
        what: &str,
        decode: impl FnOnce(&mut corral_proto::Reader<'a>) -> Result<T, DecodeError>,
    ) -> Result<T, EntryError> {
        let at = self.offset();
        decode(&mut self.inner).map_err(|e| EntryError::Malformed {
            at,
            what: format!("{what}: {e}"),
        })
    }

    fn int(&mut self, what: &str) -> Result<i32, EntryError> {
        self.field(what, |r| r.i32())
    }

    fn long(&mut self, what: &str) -> Result<i64, EntryError> {
        self.field(what, |r| r.i64())
    }

    fn boolean(&mut self, what: &str) -> Result<bool, EntryError> {
        self.field(what, |r| r.bool())
    }

    fn buffer(&mut self, what: &str) -> Result<Option<Vec<u8>>, EntryError> {
        self.field(what, |r| Ok(r.buffer()?.map(<[u8]>::to_vec)))
    }

    /// A string that must not be null.
    fn string(&mut self, what: &str) -> Result<String, EntryError> {
        let at = self.offset();
        match self.field(what, |r| r.buffer())? {
            Some(bytes) => Ok(java_string(bytes)),
            None => Err(EntryError::Malformed {
                at,
                what: format!("null {what}"),
            }),
        }
    }

    fn vector_len(&mut self, what: &str, elem_min: usize) -> Result<Option<usize>, EntryError> {
        self.field(what, |r| r.vector_len(elem_min))
    }

    /// `vector<ACL>`; `None` for a null vector. A null scheme or id (which ZooKeeper's API
    /// cannot create) reads as empty.
    fn acl_list(&mut self) -> Result<Option<Vec<Acl>>, EntryError> {
        let Some(count) = self.vector_len("ACL list", Acl::MIN_LEN)? else {
            return Ok(None);
        };
        let mut acls = Vec::with_capacity(count);
        for _ in 0..count {
            acls.push(self.field("ACL", Acl::decode)?);
        }
        Ok(Some(acls))
    }

    /// `vector<ustring>`; `None` for a null vector. Null elements read as empty strings.
    fn string_list(&mut self, what: &str) -> Result<Option<Vec<String>>, EntryError> {
        let Some(count) = self.vector_len(what, 4)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let s = self.field(what, |r| r.buffer())?;
            out.push(s.map(java_string).unwrap_or_default());
        }
        Ok(Some(out))
    }
}

fn left(r: &Reader<'_>, total: usize) -> usize {
    total.saturating_sub(r.offset() as usize)
}

fn malformed(r: &Reader<'_>, what: impl Into<String>) -> EntryError {
    EntryError::Malformed {
        at: r.offset(),
        what: what.into(),
    }
}

/// Decodes one log entry.
pub fn parse_entry(bytes: &[u8]) -> Result<LogEntry, EntryError> {
    let mut r = Reader::new(bytes);
    if bytes.len() < HEADER_LEN {
        return Err(malformed(
            &r,
            format!(
                "entry of {} bytes is shorter than a txn header",
                bytes.len()
            ),
        ));
    }
    let header = TxnHeader {
        client_id: r.long("clientId")?,
        cxid: r.int("cxid")?,
        zxid: r.long("zxid")?,
        time: r.long("time")?,
        op: r.int("type")?,
    };
    let txn = top_level_body(&header, &mut r, bytes)?;
    let digest = match left(&r, bytes.len()) {
        0 => None,
        DIGEST_LEN => Some(TxnDigest {
            version: r.int("digest version")?,
            tree_digest: r.long("tree digest")?,
        }),
        n => return Err(malformed(&r, format!("{n} unexpected bytes after the txn"))),
    };
    Ok(LogEntry {
        header,
        txn,
        digest,
    })
}

fn top_level_body(h: &TxnHeader, r: &mut Reader<'_>, bytes: &[u8]) -> Result<Txn, EntryError> {
    match h.op {
        op::CLOSE_SESSION => close_session(r, bytes),
        op::MULTI => multi(r),
        op::CREATE => create(op::CREATE, r, Some(bytes.len())),
        // Before ZOOKEEPER-2623 a lone `check` could be logged; it changes nothing.
        op::CHECK | op::CREATE_SESSION | op::ERROR => body(h.op, r),
        o if is_multi_sub_op(o) || o == op::SET_ACL || o == op::RECONFIG => body(o, r),
        o => Err(EntryError::Unsupported {
            op: o,
            zxid: h.zxid,
        }),
    }
}

/// The record of a txn type that has exactly one layout.
fn body(op: i32, r: &mut Reader<'_>) -> Result<Txn, EntryError> {
    Ok(match op {
        op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => create(op, r, None)?,
        op::DELETE | op::DELETE_CONTAINER => Txn::Delete {
            path: r.string("path")?,
        },
        op::SET_DATA | op::RECONFIG => Txn::SetData {
            path: r.string("path")?,
            data: r.buffer("data")?,
            version: r.int("version")?,
        },
        op::SET_ACL => Txn::SetAcl {
            path: r.string("path")?,
            acl: r.acl_list()?,
            version: r.int("version")?,
        },
        op::CHECK => Txn::Check {
            path: r.string("path")?,
            version: r.int("version")?,
        },
        op::ERROR => Txn::Error { err: r.int("err")? },
        op::CREATE_SESSION => Txn::CreateSession {
            timeout_ms: r.int("timeOut")?,
        },
        other => return Err(malformed(r, format!("txn type {other} has no record here"))),
    })
}

/// CreateTxn / CreateContainerTxn / CreateTTLTxn. `total` is the entry length for a top-level
/// `create`, which may be a pre-3.3 CreateTxnV0 (no parentCVersion: ZooKeeper uses -1).
fn create(op: i32, r: &mut Reader<'_>, total: Option<usize>) -> Result<Txn, EntryError> {
    let path = r.string("path")?;
    let data = r.buffer("data")?;
    let acl = r.acl_list()?;
    let ephemeral = matches!(op, op::CREATE | op::CREATE2) && r.boolean("ephemeral")?;
    let v0 = total.is_some_and(|t| left(r, t) < 4);
    let parent_cversion = if v0 { -1 } else { r.int("parentCVersion")? };
    let ttl = if op == op::CREATE_TTL {
        r.long("ttl")?
    } else {
        0
    };
    Ok(Txn::Create(Create {
        op,
        path,
        data,
        acl,
        ephemeral,
        parent_cversion,
        ttl,
    }))
}

/// CloseSessionTxn (3.6+) or nothing (older, or 3.6+ with closeSessionTxn disabled, where only
/// the 12-byte digest follows the header).
fn close_session(r: &mut Reader<'_>, bytes: &[u8]) -> Result<Txn, EntryError> {
    let rest = &bytes[r.offset() as usize..];
    let digest_only = rest.len() == DIGEST_LEN && rest[..4] == 2i32.to_be_bytes();
    if rest.is_empty() || digest_only {
        return Ok(Txn::CloseSession { paths: None });
    }
    Ok(Txn::CloseSession {
        paths: r.string_list("paths2Delete")?,
    })
}

/// The sub-txn types `DataTree.processTxn` accepts inside a multi.
fn is_multi_sub_op(op: i32) -> bool {
    matches!(
        op,
        op::CREATE
            | op::CREATE2
            | op::CREATE_TTL
            | op::CREATE_CONTAINER
            | op::DELETE
            | op::DELETE_CONTAINER
            | op::SET_DATA
            | op::CHECK
            | op::ERROR
    )
}

/// MultiTxn: `vector<Txn { int type; buffer data }>`. Like ZooKeeper, the sub-records of a
/// failed multi (one that contains an error) are not decoded: none of it is applied.
fn multi(r: &mut Reader<'_>) -> Result<Txn, EntryError> {
    let count = r.vector_len("multi txns", 8)?.unwrap_or(0);
    let mut raw = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let at = r.offset();
        let op = r.int("multi sub-txn type")?;
        let data = r.buffer("multi sub-txn data")?;
        if !is_multi_sub_op(op) {
            return Err(EntryError::Malformed {
                at,
                what: format!("txn type {op} is not allowed in a multi"),
            });
        }
        raw.push((at, op, data));
    }
    let failed = raw.iter().any(|(_, op, _)| *op == op::ERROR);
    if failed {
        return Ok(Txn::Multi {
            failed,
            txns: Vec::new(),
        });
    }
    let mut txns = Vec::with_capacity(raw.len());
    for (at, op, data) in raw {
        txns.push(sub_txn(at, op, data.as_deref())?);
    }
    Ok(Txn::Multi { failed, txns })
}

fn sub_txn(at: u64, op: i32, data: Option<&[u8]>) -> Result<Txn, EntryError> {
    let at_sub = |e: EntryError| match e {
        EntryError::Malformed { at: inner, what } => EntryError::Malformed {
            at,
            what: format!("multi sub-txn: {what} (at byte {inner} of its record)"),
        },
        other => other,
    };
    let data = data.ok_or(EntryError::Malformed {
        at,
        what: "multi sub-txn has no record".into(),
    })?;
    let mut r = Reader::new(data);
    let txn = body(op, &mut r).map_err(at_sub)?;
    match left(&r, data.len()) {
        0 => Ok(txn),
        n => Err(at_sub(malformed(
            &r,
            format!("{n} unexpected bytes after the record"),
        ))),
    }
}

/// Encoders for tests: the inverse of the parsers above, on `corral_proto`'s encoding.
#[cfg(test)]
pub mod encode {
    use super::*;
    use bytes::Bytes;

    pub fn int(out: &mut Vec<u8>, v: i32) {
        v.encode(out);
    }
    pub fn long(out: &mut Vec<u8>, v: i64) {
        v.encode(out);
    }
    pub fn buffer(out: &mut Vec<u8>, v: Option<&[u8]>) {
        v.map(Bytes::copy_from_slice).encode(out);
    }
    pub fn string(out: &mut Vec<u8>, s: &str) {
        s.to_owned().encode(out);
    }
    pub fn acls(out: &mut Vec<u8>, acls: Option<&[Acl]>) {
        match acls {
            Some(acls) => acls.to_vec().encode(out),
            None => int(out, -1),
        }
    }

    pub fn header(out: &mut Vec<u8>, h: &TxnHeader) {
        long(out, h.client_id);
        int(out, h.cxid);
        long(out, h.zxid);
        long(out, h.time);
        int(out, h.op);
    }

    /// The record of `txn` (without header) as ZooKeeper writes it for `op`.
    pub fn record(out: &mut Vec<u8>, op: i32, txn: &Txn) {
        match txn {
            Txn::Create(c) => {
                string(out, &c.path);
                buffer(out, c.data.as_deref());
                acls(out, c.acl.as_deref());
                if matches!(op, op::CREATE | op::CREATE2) {
                    out.push(u8::from(c.ephemeral));
                }
                int(out, c.parent_cversion);
                if op == op::CREATE_TTL {
                    long(out, c.ttl);
                }
            }
            Txn::Delete { path } => string(out, path),
            Txn::SetData {
                path,
                data,
                version,
            } => {
                string(out, path);
                buffer(out, data.as_deref());
                int(out, *version);
            }
            Txn::SetAcl { path, acl, version } => {
                string(out, path);
                acls(out, acl.as_deref());
                int(out, *version);
            }
            Txn::Check { path, version } => {
                string(out, path);
                int(out, *version);
            }
            Txn::Error { err } => int(out, *err),
            Txn::CreateSession { timeout_ms } => int(out, *timeout_ms),
            Txn::CloseSession { paths } => {
                if let Some(paths) = paths {
                    int(out, paths.len() as i32);
                    for p in paths {
                        string(out, p);
                    }
                }
            }
            Txn::Multi { txns, .. } => {
                int(out, txns.len() as i32);
                for t in txns {
                    let sub_op = op_of(t);
                    int(out, sub_op);
                    let mut rec = Vec::new();
                    record(&mut rec, sub_op, t);
                    buffer(out, Some(&rec));
                }
            }
        }
    }

    /// The opcode a sub-txn is logged with.
    pub fn op_of(t: &Txn) -> i32 {
        match t {
            Txn::Create(c) => c.op,
            Txn::Delete { .. } => op::DELETE,
            Txn::SetData { .. } => op::SET_DATA,
            Txn::SetAcl { .. } => op::SET_ACL,
            Txn::Check { .. } => op::CHECK,
            Txn::Error { .. } => op::ERROR,
            Txn::CreateSession { .. } => op::CREATE_SESSION,
            Txn::CloseSession { .. } => op::CLOSE_SESSION,
            Txn::Multi { .. } => op::MULTI,
        }
    }

    pub fn entry(e: &LogEntry) -> Vec<u8> {
        let mut out = Vec::new();
        header(&mut out, &e.header);
        record(&mut out, e.header.op, &e.txn);
        if let Some(d) = e.digest {
            int(&mut out, d.version);
            long(&mut out, d.tree_digest);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::encode::*;
    use super::*;

    fn hdr(op: i32) -> TxnHeader {
        TxnHeader {
            client_id: 0x1234,
            cxid: 7,
            zxid: 0x1_0000_0005,
            time: 1_700_000_000_000,
            op,
        }
    }

    fn create(op: i32, path: &str) -> Txn {
        Txn::Create(Create {
            op,
            path: path.into(),
            data: Some(b"d".to_vec()),
            acl: Some(corral_tree::acl::open_acl()),
            ephemeral: op == op::CREATE,
            parent_cversion: 3,
            ttl: if op == op::CREATE_TTL { 5000 } else { 0 },
        })
    }

    fn round_trip(op: i32, txn: Txn, digest: Option<TxnDigest>) {
        let e = LogEntry {
            header: hdr(op),
            txn,
            digest,
        };
        assert_eq!(parse_entry(&entry(&e)).unwrap(), e);
    }

    #[test]
    fn every_txn_type_round_trips() {
        let d = Some(TxnDigest {
            version: 2,
            tree_digest: -5,
        });
        for op in [
            op::CREATE,
            op::CREATE2,
            op::CREATE_CONTAINER,
            op::CREATE_TTL,
        ] {
            round_trip(op, create(op, "/a"), None);
            round_trip(op, create(op, "/a"), d);
        }
        round_trip(op::DELETE, Txn::Delete { path: "/a".into() }, d);
        round_trip(
            op::DELETE_CONTAINER,
            Txn::Delete { path: "/a".into() },
            None,
        );
        let set = Txn::SetData {
            path: "/a".into(),
            data: Some(vec![0, 255]),
            version: 4,
        };
        round_trip(op::SET_DATA, set.clone(), d);
        round_trip(op::RECONFIG, set, None);
        round_trip(
            op::SET_ACL,
            Txn::SetAcl {
                path: "/a".into(),
                acl: None,
                version: 2,
            },
            d,
        );
        round_trip(
            op::CHECK,
            Txn::Check {
                path: "/a".into(),
                version: 1,
            },
            None,
        );
        round_trip(op::ERROR, Txn::Error { err: -101 }, d);
        round_trip(
            op::CREATE_SESSION,
            Txn::CreateSession { timeout_ms: 30000 },
            d,
        );
        round_trip(op::CLOSE_SESSION, Txn::CloseSession { paths: None }, None);
        round_trip(op::CLOSE_SESSION, Txn::CloseSession { paths: None }, d);
        let paths = Some(vec!["/e1".to_string(), "/e2".to_string()]);
        round_trip(
            op::CLOSE_SESSION,
            Txn::CloseSession {
                paths: paths.clone(),
            },
            d,
        );
        round_trip(op::CLOSE_SESSION, Txn::CloseSession { paths }, None);
        round_trip(
            op::CLOSE_SESSION,
            Txn::CloseSession {
                paths: Some(vec![]),
            },
            d,
        );
        let subs = vec![
            create(op::CREATE, "/m"),
            create(op::CREATE_CONTAINER, "/c"),
            Txn::Delete { path: "/x".into() },
            Txn::Check {
                path: "/m".into(),
                version: 0,
            },
        ];
        round_trip(
            op::MULTI,
            Txn::Multi {
                failed: false,
                txns: subs,
            },
            d,
        );
    }

    #[test]
    fn pre_3_3_create_has_no_parent_cversion() {
        let mut bytes = Vec::new();
        header(&mut bytes, &hdr(op::CREATE));
        string(&mut bytes, "/old");
        buffer(&mut bytes, Some(b"x"));
        acls(&mut bytes, None);
        bytes.push(0);
        let e = parse_entry(&bytes).unwrap();
        let Txn::Create(c) = e.txn else {
            panic!("{e:?}")
        };
        assert_eq!((c.path.as_str(), c.parent_cversion), ("/old", -1));
        // create2 has no such older form.
        bytes[28..32].copy_from_slice(&op::CREATE2.to_be_bytes());
        assert!(parse_entry(&bytes).is_err());
    }

    #[test]
    fn failed_multi_is_not_decoded_further() {
        let mut bytes = Vec::new();
        header(&mut bytes, &hdr(op::MULTI));
        int(&mut bytes, 2);
        int(&mut bytes, op::CREATE);
        buffer(&mut bytes, Some(b"garbage"));
        int(&mut bytes, op::ERROR);
        buffer(&mut bytes, Some(&(-101i32).to_be_bytes()));
        let e = parse_entry(&bytes).unwrap();
        assert_eq!(
            e.txn,
            Txn::Multi {
                failed: true,
                txns: vec![]
            }
        );
    }

    #[test]
    fn bad_entries_are_errors() {
        let mut bytes = Vec::new();
        header(&mut bytes, &hdr(99));
        assert_eq!(
            parse_entry(&bytes),
            Err(EntryError::Unsupported {
                op: 99,
                zxid: 0x1_0000_0005
            })
        );
        assert!(parse_entry(&bytes[..20]).is_err());
        // A setACL inside a multi cannot be logged by ZooKeeper.
        let mut m = Vec::new();
        header(&mut m, &hdr(op::MULTI));
        int(&mut m, 1);
        int(&mut m, op::SET_ACL);
        buffer(&mut m, Some(b""));
        assert!(parse_entry(&m).is_err());
        // Leftover bytes that are not a digest.
        let mut d = Vec::new();
        header(&mut d, &hdr(op::DELETE));
        string(&mut d, "/a");
        d.extend_from_slice(&[1, 2, 3]);
        let err = parse_entry(&d).unwrap_err();
        assert!(err.to_string().contains("3 unexpected bytes"), "{err}");
    }
}
