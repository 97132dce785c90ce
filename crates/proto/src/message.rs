//! Typed requests and responses: the body of a frame after its header, keyed by opcode.
//!
//! Decoding a request needs its opcode (from the `RequestHeader`); decoding a response needs the
//! opcode of the request it answers, which only the client knows. Both directions are here so that
//! the server, the test clients and the benchmark share one codec.

use crate::codes::{ErrorCode, OpCode};
use crate::jute::{DecodeError, Jute, Reader};
use crate::records::*;
use bytes::Bytes;

/// A client request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// create, create2 and createContainer share a body; `op` says which was asked.
    Create {
        op: OpCode,
        req: CreateRequest,
    },
    CreateTtl(CreateTtlRequest),
    Delete(PathVersionRequest),
    /// The body ZooKeeper's own container reaper uses: the raw UTF-8 path, not a jute record.
    DeleteContainer(String),
    Exists(PathWatchRequest),
    GetData(PathWatchRequest),
    SetData(SetDataRequest),
    GetAcl(PathRequest),
    SetAcl(SetAclRequest),
    GetChildren(PathWatchRequest),
    GetChildren2(PathWatchRequest),
    Sync(PathRequest),
    Ping,
    Check(PathVersionRequest),
    Multi(Vec<Request>),
    MultiRead(Vec<Request>),
    Reconfig(ReconfigRequest),
    CheckWatches(WatchTypeRequest),
    RemoveWatches(WatchTypeRequest),
    Auth(AuthPacket),
    SetWatches(SetWatches),
    SetWatches2(SetWatches2),
    GetEphemerals(PathRequest),
    GetAllChildrenNumber(PathRequest),
    AddWatch(AddWatchRequest),
    WhoAmI,
    CloseSession,
    /// A SASL token from the client (`GetSASLRequest`): one step of the negotiation.
    Sasl(Bytes),
}

impl Request {
    pub fn op_code(&self) -> OpCode {
        match self {
            Request::Create { op, .. } => *op,
            Request::CreateTtl(_) => OpCode::CreateTtl,
            Request::Delete(_) => OpCode::Delete,
            Request::DeleteContainer(_) => OpCode::DeleteContainer,
            Request::Exists(_) => OpCode::Exists,
            Request::GetData(_) => OpCode::GetData,
            Request::SetData(_) => OpCode::SetData,
            Request::GetAcl(_) => OpCode::GetAcl,
            Request::SetAcl(_) => OpCode::SetAcl,
            Request::GetChildren(_) => OpCode::GetChildren,
            Request::GetChildren2(_) => OpCode::GetChildren2,
            Request::Sync(_) => OpCode::Sync,
            Request::Ping => OpCode::Ping,
            Request::Check(_) => OpCode::Check,
            Request::Multi(_) => OpCode::Multi,
            Request::MultiRead(_) => OpCode::MultiRead,
            Request::Reconfig(_) => OpCode::Reconfig,
            Request::CheckWatches(_) => OpCode::CheckWatches,
            Request::RemoveWatches(_) => OpCode::RemoveWatches,
            Request::Auth(_) => OpCode::Auth,
            Request::SetWatches(_) => OpCode::SetWatches,
            Request::SetWatches2(_) => OpCode::SetWatches2,
            Request::GetEphemerals(_) => OpCode::GetEphemerals,
            Request::GetAllChildrenNumber(_) => OpCode::GetAllChildrenNumber,
            Request::AddWatch(_) => OpCode::AddWatch,
            Request::WhoAmI => OpCode::WhoAmI,
            Request::CloseSession => OpCode::CloseSession,
            Request::Sasl(_) => OpCode::Sasl,
        }
    }

    /// Whether the request changes replicated state and so goes through the write path.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Create { .. }
                | Request::CreateTtl(_)
                | Request::Delete(_)
                | Request::DeleteContainer(_)
                | Request::SetData(_)
                | Request::SetAcl(_)
                | Request::Check(_)
                | Request::Multi(_)
                | Request::Reconfig(_)
                | Request::CloseSession
        )
    }

    /// Decodes the body of a request whose header carried `op`.
    pub fn decode(op: i32, body: &[u8]) -> Result<Request, DecodeError> {
        let op = OpCode::from_i32(op).ok_or(DecodeError::UnknownOpCode(op))?;
        let r = &mut Reader::new(body);
        Ok(match op {
            OpCode::Create | OpCode::Create2 | OpCode::CreateContainer => Request::Create {
                op,
                req: CreateRequest::decode(r)?,
            },
            OpCode::CreateTtl => Request::CreateTtl(CreateTtlRequest::decode(r)?),
            OpCode::Delete => Request::Delete(PathVersionRequest::decode(r)?),
            OpCode::DeleteContainer => Request::DeleteContainer(
                std::str::from_utf8(body)
                    .map_err(|_| DecodeError::InvalidUtf8)?
                    .to_owned(),
            ),
            OpCode::Exists => Request::Exists(PathWatchRequest::decode(r)?),
            OpCode::GetData => Request::GetData(PathWatchRequest::decode(r)?),
            OpCode::SetData => Request::SetData(SetDataRequest::decode(r)?),
            OpCode::GetAcl => Request::GetAcl(PathRequest::decode(r)?),
            OpCode::SetAcl => Request::SetAcl(SetAclRequest::decode(r)?),
            OpCode::GetChildren => Request::GetChildren(PathWatchRequest::decode(r)?),
            OpCode::GetChildren2 => Request::GetChildren2(PathWatchRequest::decode(r)?),
            OpCode::Sync => Request::Sync(PathRequest::decode(r)?),
            OpCode::Ping => Request::Ping,
            OpCode::Check => Request::Check(PathVersionRequest::decode(r)?),
            OpCode::Multi => Request::Multi(decode_multi(r, false)?),
            OpCode::MultiRead => Request::MultiRead(decode_multi(r, true)?),
            OpCode::Reconfig => Request::Reconfig(ReconfigRequest::decode(r)?),
            OpCode::CheckWatches => Request::CheckWatches(WatchTypeRequest::decode(r)?),
            OpCode::RemoveWatches => Request::RemoveWatches(WatchTypeRequest::decode(r)?),
            OpCode::Auth => Request::Auth(AuthPacket::decode(r)?),
            OpCode::SetWatches => Request::SetWatches(SetWatches::decode(r)?),
            OpCode::SetWatches2 => Request::SetWatches2(SetWatches2::decode(r)?),
            OpCode::GetEphemerals => Request::GetEphemerals(PathRequest::decode(r)?),
            OpCode::GetAllChildrenNumber => Request::GetAllChildrenNumber(PathRequest::decode(r)?),
            OpCode::AddWatch => Request::AddWatch(AddWatchRequest::decode(r)?),
            OpCode::WhoAmI => Request::WhoAmI,
            OpCode::CloseSession => Request::CloseSession,
            OpCode::Sasl => Request::Sasl(Bytes::decode(r)?),
            OpCode::Notification | OpCode::CreateSession | OpCode::Error => {
                return Err(DecodeError::UnknownOpCode(op as i32))
            }
        })
    }

    /// Encodes the body (without the request header).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Request::Create { req, .. } => req.encode(out),
            Request::CreateTtl(r) => r.encode(out),
            Request::Delete(r) | Request::Check(r) => r.encode(out),
            Request::DeleteContainer(p) => out.extend_from_slice(p.as_bytes()),
            Request::Exists(r)
            | Request::GetData(r)
            | Request::GetChildren(r)
            | Request::GetChildren2(r) => r.encode(out),
            Request::SetData(r) => r.encode(out),
            Request::GetAcl(r)
            | Request::Sync(r)
            | Request::GetEphemerals(r)
            | Request::GetAllChildrenNumber(r) => r.encode(out),
            Request::SetAcl(r) => r.encode(out),
            Request::Multi(ops) | Request::MultiRead(ops) => encode_multi(ops, out),
            Request::Reconfig(r) => r.encode(out),
            Request::CheckWatches(r) | Request::RemoveWatches(r) => r.encode(out),
            Request::Auth(r) => r.encode(out),
            Request::SetWatches(r) => r.encode(out),
            Request::SetWatches2(r) => r.encode(out),
            Request::AddWatch(r) => r.encode(out),
            Request::Sasl(token) => token.encode(out),
            Request::Ping | Request::WhoAmI | Request::CloseSession => {}
        }
    }

    /// The path the request names, if it names one.
    pub fn path(&self) -> Option<&str> {
        Some(match self {
            Request::Create { req, .. } => &req.path,
            Request::CreateTtl(r) => &r.path,
            Request::Delete(r) | Request::Check(r) => &r.path,
            Request::DeleteContainer(p) => p,
            Request::Exists(r)
            | Request::GetData(r)
            | Request::GetChildren(r)
            | Request::GetChildren2(r) => &r.path,
            Request::SetData(r) => &r.path,
            Request::GetAcl(r)
            | Request::Sync(r)
            | Request::GetEphemerals(r)
            | Request::GetAllChildrenNumber(r) => &r.path,
            Request::SetAcl(r) => &r.path,
            Request::CheckWatches(r) | Request::RemoveWatches(r) => &r.path,
            Request::AddWatch(r) => &r.path,
            _ => return None,
        })
    }
}

const MULTI_END: MultiHeader = MultiHeader {
    op_type: -1,
    done: true,
    err: -1,
};

fn decode_multi(r: &mut Reader<'_>, read_only: bool) -> Result<Vec<Request>, DecodeError> {
    let mut ops = Vec::new();
    loop {
        let h = MultiHeader::decode(r)?;
        if h.done {
            return Ok(ops);
        }
        let op = OpCode::from_i32(h.op_type).ok_or(DecodeError::UnknownOpCode(h.op_type))?;
        let sub = match (op, read_only) {
            (OpCode::Create | OpCode::Create2 | OpCode::CreateContainer, false) => {
                Request::Create {
                    op,
                    req: CreateRequest::decode(r)?,
                }
            }
            (OpCode::CreateTtl, false) => Request::CreateTtl(CreateTtlRequest::decode(r)?),
            (OpCode::Delete, false) => Request::Delete(PathVersionRequest::decode(r)?),
            (OpCode::SetData, false) => Request::SetData(SetDataRequest::decode(r)?),
            (OpCode::Check, false) => Request::Check(PathVersionRequest::decode(r)?),
            (OpCode::GetChildren, true) => Request::GetChildren(PathWatchRequest::decode(r)?),
            (OpCode::GetData, true) => Request::GetData(PathWatchRequest::decode(r)?),
            _ => return Err(DecodeError::Invalid("invalid type of op in multi")),
        };
        ops.push(sub);
    }
}

fn encode_multi(ops: &[Request], out: &mut Vec<u8>) {
    for op in ops {
        MultiHeader {
            op_type: op.op_code() as i32,
            done: false,
            err: -1,
        }
        .encode(out);
        op.encode(out);
    }
    MULTI_END.encode(out);
}

/// A successful reply body. Errors travel in the reply header and have no body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// delete, check, ping, auth, setWatches, closeSession, checkWatches, removeWatches, addWatch.
    Empty,
    /// create, createContainer, createTTL (when not create2-style) and sync.
    Path(String),
    Create2(Create2Response),
    /// exists, setData and setACL.
    Stat(Stat),
    GetData(GetDataResponse),
    GetChildren(Vec<String>),
    GetChildren2(GetChildren2Response),
    GetAcl(GetAclResponse),
    Count(i32),
    Ephemerals(Vec<String>),
    WhoAmI(Vec<ClientInfo>),
    Multi(Vec<MultiResult>),
    /// addWatch's success body: an `ErrorResponse` holding 0.
    ErrorBody(i32),
    /// The server's SASL token (`SetSASLResponse`); null when it has none to send.
    Sasl(Option<Bytes>),
    /// A body already in wire form, built where its data lives (a server's getChildren writes
    /// the names straight from its tree, with no string allocated per child). Never decoded.
    Raw(bytes::Bytes),
}

/// One result of a multi or multiRead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiResult {
    Ok(OpCode, Response),
    Error(ErrorCode),
}

impl Response {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Response::Empty => {}
            Response::Path(p) => p.encode(out),
            Response::Create2(r) => r.encode(out),
            Response::Stat(s) => s.encode(out),
            Response::GetData(r) => r.encode(out),
            Response::GetChildren(c) | Response::Ephemerals(c) => c.encode(out),
            Response::GetChildren2(r) => r.encode(out),
            Response::GetAcl(r) => r.encode(out),
            Response::Count(n) | Response::ErrorBody(n) => n.encode(out),
            Response::Raw(body) => out.extend_from_slice(body),
            Response::Sasl(token) => token.encode(out),
            Response::WhoAmI(c) => c.encode(out),
            Response::Multi(results) => {
                for res in results {
                    match res {
                        MultiResult::Ok(op, body) => {
                            MultiHeader {
                                op_type: *op as i32,
                                done: false,
                                err: 0,
                            }
                            .encode(out);
                            body.encode(out);
                        }
                        MultiResult::Error(code) => {
                            MultiHeader {
                                op_type: OpCode::Error as i32,
                                done: false,
                                err: code.code(),
                            }
                            .encode(out);
                            code.code().encode(out);
                        }
                    }
                }
                MULTI_END.encode(out);
            }
        }
    }

    /// The length of [`Response::encode`]'s output, computed without encoding: what a reply
    /// queued for a client's socket will cost, counted before it is encoded.
    pub fn encoded_len(&self) -> usize {
        const STAT: usize = 68;
        const INT: usize = 4;
        let string = |s: &str| INT + s.len();
        let strings = |v: &[String]| INT + v.iter().map(|s| string(s)).sum::<usize>();
        match self {
            Response::Empty => 0,
            Response::Path(p) => string(p),
            Response::Create2(r) => string(&r.path) + STAT,
            Response::Stat(_) => STAT,
            Response::GetData(r) => INT + r.data.as_ref().map_or(0, |d| d.len()) + STAT,
            Response::GetChildren(c) | Response::Ephemerals(c) => strings(c),
            Response::GetChildren2(r) => strings(&r.children) + STAT,
            Response::GetAcl(r) => {
                let acl: usize = r
                    .acl
                    .iter()
                    .map(|a| INT + string(&a.id.scheme) + string(&a.id.id))
                    .sum();
                INT + acl + STAT
            }
            Response::Count(_) | Response::ErrorBody(_) => INT,
            Response::Raw(body) => body.len(),
            Response::Sasl(token) => INT + token.as_ref().map_or(0, |t| t.len()),
            Response::WhoAmI(c) => {
                INT + c
                    .iter()
                    .map(|i| string(&i.auth_scheme) + string(&i.user))
                    .sum::<usize>()
            }
            Response::Multi(results) => {
                // Each result has a 9-byte header (op, done, err), and the list an end marker.
                const HEADER: usize = 9;
                let body: usize = results
                    .iter()
                    .map(|r| match r {
                        MultiResult::Ok(_, body) => HEADER + body.encoded_len(),
                        MultiResult::Error(_) => HEADER + INT,
                    })
                    .sum();
                body + HEADER
            }
        }
    }

    /// Decodes the body of a successful reply to a request of type `op`.
    pub fn decode(op: OpCode, body: &[u8]) -> Result<Response, DecodeError> {
        let r = &mut Reader::new(body);
        Self::decode_from(op, r)
    }

    fn decode_from(op: OpCode, r: &mut Reader<'_>) -> Result<Response, DecodeError> {
        use OpCode::*;
        Ok(match op {
            Create | CreateContainer | Sync => Response::Path(String::decode(r)?),
            Create2 | CreateTtl => Response::Create2(Create2Response::decode(r)?),
            Exists | SetData | SetAcl => Response::Stat(Stat::decode(r)?),
            GetData | Reconfig => Response::GetData(GetDataResponse::decode(r)?),
            GetChildren => Response::GetChildren(Vec::<String>::decode(r)?),
            GetChildren2 => Response::GetChildren2(GetChildren2Response::decode(r)?),
            GetAcl => Response::GetAcl(GetAclResponse::decode(r)?),
            GetAllChildrenNumber => Response::Count(i32::decode(r)?),
            GetEphemerals => Response::Ephemerals(Vec::<String>::decode(r)?),
            WhoAmI => Response::WhoAmI(Vec::<ClientInfo>::decode(r)?),
            AddWatch => Response::ErrorBody(i32::decode(r)?),
            Sasl => Response::Sasl(Option::<Bytes>::decode(r)?),
            Multi | MultiRead => {
                let mut results = Vec::new();
                loop {
                    let h = MultiHeader::decode(r)?;
                    if h.done {
                        break;
                    }
                    let sub =
                        OpCode::from_i32(h.op_type).ok_or(DecodeError::UnknownOpCode(h.op_type))?;
                    if sub == OpCode::Error {
                        let code = i32::decode(r)?;
                        results.push(MultiResult::Error(
                            ErrorCode::from_i32(code)
                                .ok_or(DecodeError::Invalid("unknown error code"))?,
                        ));
                    } else {
                        results.push(MultiResult::Ok(sub, Self::decode_from(sub, r)?));
                    }
                }
                Response::Multi(results)
            }
            _ => Response::Empty,
        })
    }
}

/// Encodes a whole outgoing frame: the 4-byte length, the header, then the body.
pub fn encode_frame(header: &impl Jute, body: impl FnOnce(&mut Vec<u8>), out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    header.encode(out);
    body(out);
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Convenience for tests and clients: a whole request frame.
pub fn request_frame(xid: i32, req: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    let header = RequestHeader {
        xid,
        op_type: req.op_code() as i32,
    };
    encode_frame(&header, |o| req.encode(o), &mut out);
    out
}
