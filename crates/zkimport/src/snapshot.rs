//! Reading one snapshot file (`FileSnap.deserialize`): header, sessions, the ACL table, the
//! nodes in pre-order, the Adler-32 seal, and the optional 3.6+ digest and 3.9+ lastZxid
//! trailers, each with its own (cumulative) seal. The checksum covers the uncompressed stream.

use crate::error::ImportError;
use crate::files::Compression;
use crate::jute::{JuteError, JuteReader};
use crate::snappy::{self, SnappyJavaReader};
use crate::ztree::{NodeAcl, StatPersisted, ZNode, ZkTree};
use corral_proto::Acl;
use flate2::bufread::MultiGzDecoder;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

const SNAP_MAGIC: i32 = 0x5A4B_534E; // "ZKSN"
/// What a seal's string (`int 1, '/'`) looks like at the very end of a plain snapshot.
const SEAL_TAIL: [u8; 5] = [0, 0, 0, 1, b'/'];
/// A lastZxid trailer alone: long zxid, long checksum, ustring "/".
const LAST_ZXID_TRAILER_LEN: usize = 8 + 8 + 5;
/// More than this after the first seal is not a trailer (a digest trailer is 33 bytes).
const TRAILER_LIMIT: usize = 4096;

/// The digest a 3.6+ snapshot records: the tree digest after txn `zxid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZxidDigest {
    pub zxid: i64,
    pub version: i32,
    /// `None` for pre-release (version < 2) digests, which were hex strings.
    pub digest: Option<i64>,
}

/// A snapshot's contents.
#[derive(Debug)]
pub struct Snapshot {
    pub sessions: BTreeMap<i64, i32>,
    pub tree: ZkTree,
    pub digest: Option<ZxidDigest>,
}

/// Why a snapshot stream is bad, and where.
#[derive(Debug)]
struct Bad {
    offset: u64,
    what: String,
}

impl From<JuteError> for Bad {
    fn from(e: JuteError) -> Self {
        Bad {
            offset: e.offset(),
            what: e.to_string(),
        }
    }
}

fn bad(offset: u64, what: impl Into<String>) -> Bad {
    Bad {
        offset,
        what: what.into(),
    }
}

/// ZooKeeper's cheap pre-check (`SnapStream.isValidSnapshot`) before reading a file in full:
/// plain files must end in a seal's "/", compressed ones must start with their magic.
pub fn quick_check(path: &Path, compression: Compression) -> Result<(), String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let (at, expect): (u64, &[u8]) = match compression {
        Compression::None if len < 10 => return Err(format!("only {len} bytes")),
        Compression::None => (len - 5, &SEAL_TAIL),
        Compression::Gzip => (0, &[0x1f, 0x8b]),
        Compression::Snappy => (0, &snappy::MAGIC),
    };
    let mut found = vec![0u8; expect.len()];
    file.seek(SeekFrom::Start(at))
        .and_then(|_| file.read_exact(&mut found))
        .map_err(|_| format!("only {len} bytes"))?;
    if found != expect {
        return Err(match compression {
            Compression::None => "does not end with a snapshot seal (incomplete file?)".into(),
            Compression::Gzip => "no gzip magic".into(),
            Compression::Snappy => "no snappy-java magic".into(),
        });
    }
    Ok(())
}

/// Reads and verifies the snapshot at `path`.
pub fn read(path: &Path, compression: Compression) -> Result<Snapshot, ImportError> {
    let file = File::open(path).map_err(|source| ImportError::Io {
        path: path.to_owned(),
        source,
    })?;
    let file = BufReader::with_capacity(256 * 1024, file);
    let stream: Box<dyn BufRead> = match compression {
        Compression::None => Box::new(file),
        // Java's GZIPInputStream reads concatenated members, as MultiGzDecoder does.
        Compression::Gzip => Box::new(BufReader::new(MultiGzDecoder::new(file))),
        Compression::Snappy => Box::new(BufReader::new(SnappyJavaReader::new(file))),
    };
    parse(&mut JuteReader::new(stream)).map_err(|b| ImportError::Snapshot {
        path: path.to_owned(),
        offset: b.offset,
        compressed: compression != Compression::None,
        what: b.what,
    })
}

/// Parses an uncompressed snapshot stream.
fn parse<R: BufRead>(r: &mut JuteReader<R>) -> Result<Snapshot, Bad> {
    let magic = r.int("file header magic")?;
    if magic != SNAP_MAGIC {
        return Err(bad(
            0,
            format!("bad magic {magic:#010x} (expected 0x5a4b534e, \"ZKSN\")"),
        ));
    }
    r.int("file header version")?;
    r.long("file header dbid")?;
    let sessions = sessions(r)?;
    let acls = acl_table(r)?;
    let tree = nodes(r, &acls)?;
    seal(r)?;
    let digest = trailers(r)?;
    Ok(Snapshot {
        sessions,
        tree,
        digest,
    })
}

/// `int count; count × { long id; int timeout }` (a count ≤ 0 means none, as in ZooKeeper).
fn sessions<R: BufRead>(r: &mut JuteReader<R>) -> Result<BTreeMap<i64, i32>, Bad> {
    let count = r.int("session count")?;
    let mut sessions = BTreeMap::new();
    for _ in 0..count.max(0) {
        let id = r.long("session id")?;
        let timeout = r.int("session timeout")?;
        sessions.insert(id, timeout);
    }
    Ok(sessions)
}

/// `ReferenceCountedACLCache.deserialize`: `int size; size × { long key; vector<ACL> }`.
fn acl_table<R: BufRead>(r: &mut JuteReader<R>) -> Result<HashMap<i64, Arc<Vec<Acl>>>, Bad> {
    let count = r.int("ACL table size")?;
    let mut table = HashMap::new();
    for _ in 0..count.max(0) {
        let key = r.long("ACL key")?;
        let at = r.offset();
        let list = r
            .acl_list()?
            .ok_or_else(|| bad(at, format!("ACL table entry {key} is null")))?;
        table.insert(key, Arc::new(list));
    }
    Ok(table)
}

/// `repeat { ustring path; DataNode }` until the path "/". Parents come before children.
fn nodes<R: BufRead>(
    r: &mut JuteReader<R>,
    acls: &HashMap<i64, Arc<Vec<Acl>>>,
) -> Result<ZkTree, Bad> {
    let open = Arc::new(corral_tree::acl::open_acl());
    let mut tree = ZkTree::default();
    loop {
        let at = r.offset();
        let path = r.string("node path")?;
        if path == "/" {
            break;
        }
        check_parent(&tree, &path, at)?;
        let data = r.buffer("node data")?;
        let key = r.long("node ACL key")?;
        let stat = stat(r)?;
        // -1 is ZooKeeper's OPEN_UNSAFE_ACL_ID, never stored in the table.
        let acl = match key {
            -1 => NodeAcl::List(open.clone()),
            k => acls
                .get(&k)
                .cloned()
                .map_or(NodeAcl::Missing(k), NodeAcl::List),
        };
        tree.insert(path, ZNode { stat, acl, data });
    }
    if !tree.contains("") {
        return Err(bad(r.offset(), "the snapshot has no root node"));
    }
    Ok(tree)
}

fn check_parent(tree: &ZkTree, path: &str, at: u64) -> Result<(), Bad> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(slash) = path.rfind('/') else {
        return Err(bad(at, format!("node path {path:?} is not absolute")));
    };
    let parent = &path[..slash];
    if !tree.contains(parent) {
        return Err(bad(
            at,
            format!("node {path} has no parent {parent:?} before it"),
        ));
    }
    Ok(())
}

/// `StatPersisted`, 68 bytes.
fn stat<R: BufRead>(r: &mut JuteReader<R>) -> Result<StatPersisted, Bad> {
    Ok(StatPersisted {
        czxid: r.long("czxid")?,
        mzxid: r.long("mzxid")?,
        ctime: r.long("ctime")?,
        mtime: r.long("mtime")?,
        version: r.int("version")?,
        cversion: r.int("cversion")?,
        aversion: r.int("aversion")?,
        ephemeral_owner: r.long("ephemeralOwner")?,
        pzxid: r.long("pzxid")?,
    })
}

/// `SnapStream.checkSealIntegrity`: the Adler-32 of everything so far, then a string (ZooKeeper
/// writes "/" and does not check it).
fn seal<R: BufRead>(r: &mut JuteReader<R>) -> Result<(), Bad> {
    let computed = r.sum().value();
    let at = r.offset();
    let stored = r.long("checksum")?;
    r.ustring("seal")?;
    if stored != i64::from(computed) {
        return Err(bad(
            at,
            format!("checksum mismatch: stored {stored:#x}, computed {computed:#x}"),
        ));
    }
    Ok(())
}

/// The optional trailers after the first seal. Which are present depends on the writer's
/// settings, so it is decided by the bytes left: none, a digest (3.6+), a lastZxid (3.9+), or
/// both in that order. ZooKeeper ignores the lastZxid (the file name's zxid wins), and so do we.
fn trailers<R: BufRead>(r: &mut JuteReader<R>) -> Result<Option<ZxidDigest>, Bad> {
    let (at, sum) = (r.offset(), r.sum());
    let rest = r.rest(TRAILER_LIMIT + 1)?;
    if rest.len() > TRAILER_LIMIT {
        return Err(bad(at, "unexpected data after the snapshot's seal"));
    }
    let mut t = JuteReader::resume(&rest[..], at, sum);
    let mut digest = None;
    if !rest.is_empty() && rest.len() != LAST_ZXID_TRAILER_LEN {
        digest = Some(zxid_digest(&mut t)?);
        seal(&mut t)?;
    }
    if !t.at_end()? {
        t.long("lastProcessedZxid")?;
        seal(&mut t)?;
    }
    if !t.at_end()? {
        return Err(bad(
            t.offset(),
            "unexpected data after the snapshot's trailers",
        ));
    }
    Ok(digest)
}

/// `DataTree.ZxidDigest.deserialize`.
fn zxid_digest(r: &mut JuteReader<&[u8]>) -> Result<ZxidDigest, Bad> {
    let zxid = r.long("digest zxid")?;
    let version = r.int("digest version")?;
    let digest = if version < 2 {
        r.ustring("digest")?;
        None
    } else {
        Some(r.long("digest")?)
    };
    Ok(ZxidDigest {
        zxid,
        version,
        digest,
    })
}

/// Writes snapshots for tests, as `FileSnap.serialize` does.
#[cfg(test)]
pub mod write {
    use crate::adler32::Adler32;
    use crate::txn::encode::{acls, buffer, int, long, string};
    use crate::ztree::StatPersisted;
    use corral_proto::Acl;

    /// One node as the snapshot stores it.
    pub struct Node<'a> {
        pub path: &'a str,
        pub data: &'a [u8],
        pub acl_key: i64,
        pub stat: StatPersisted,
    }

    pub fn stat(out: &mut Vec<u8>, s: &StatPersisted) {
        for v in [s.czxid, s.mzxid, s.ctime, s.mtime] {
            long(out, v);
        }
        for v in [s.version, s.cversion, s.aversion] {
            int(out, v);
        }
        long(out, s.ephemeral_owner);
        long(out, s.pzxid);
    }

    pub fn seal(out: &mut Vec<u8>) {
        let mut sum = Adler32::default();
        sum.update(out);
        long(out, i64::from(sum.value()));
        string(out, "/");
    }

    /// A whole snapshot; `digest` appends a 3.6+ digest trailer, `last_zxid` a 3.9+ one.
    pub fn snapshot(
        sessions: &[(i64, i32)],
        table: &[(i64, Vec<Acl>)],
        nodes: &[Node<'_>],
        digest: Option<(i64, i64)>,
        last_zxid: Option<i64>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        int(&mut out, 0x5A4B_534E);
        int(&mut out, 2);
        long(&mut out, -1);
        int(&mut out, sessions.len() as i32);
        for (id, timeout) in sessions {
            long(&mut out, *id);
            int(&mut out, *timeout);
        }
        int(&mut out, table.len() as i32);
        for (key, list) in table {
            long(&mut out, *key);
            acls(&mut out, Some(list));
        }
        for n in nodes {
            string(&mut out, n.path);
            buffer(&mut out, Some(n.data));
            long(&mut out, n.acl_key);
            stat(&mut out, &n.stat);
        }
        string(&mut out, "/");
        seal(&mut out);
        if let Some((zxid, digest)) = digest {
            long(&mut out, zxid);
            int(&mut out, 2);
            long(&mut out, digest);
            seal(&mut out);
        }
        if let Some(z) = last_zxid {
            long(&mut out, z);
            seal(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::write::{snapshot, Node};
    use super::*;
    use corral_proto::codes::ephemeral_owner;

    fn stat(czxid: i64, owner: i64) -> StatPersisted {
        StatPersisted {
            czxid,
            mzxid: czxid,
            pzxid: czxid,
            ctime: 1000,
            mtime: 1000,
            ephemeral_owner: owner,
            ..Default::default()
        }
    }

    fn sample(digest: Option<(i64, i64)>, last_zxid: Option<i64>) -> Vec<u8> {
        let digest_acl = vec![Acl::new(31, "digest", "u:hash")];
        snapshot(
            &[(0x100, 30000)],
            &[(1, digest_acl), (2, corral_tree::acl::read_acl())],
            &[
                Node {
                    path: "",
                    data: b"",
                    acl_key: -1,
                    stat: StatPersisted::default(),
                },
                Node {
                    path: "/a",
                    data: b"x",
                    acl_key: 1,
                    stat: stat(2, 0),
                },
                Node {
                    path: "/a/e",
                    data: b"",
                    acl_key: -1,
                    stat: stat(3, 0x100),
                },
                Node {
                    path: "/c",
                    data: b"",
                    acl_key: 9,
                    stat: stat(4, ephemeral_owner::CONTAINER),
                },
            ],
            digest,
            last_zxid,
        )
    }

    fn parse_bytes(bytes: &[u8]) -> Result<Snapshot, Bad> {
        parse(&mut JuteReader::new(bytes))
    }

    #[test]
    fn reads_every_part() {
        let s = parse_bytes(&sample(None, None)).unwrap();
        assert_eq!(s.sessions, BTreeMap::from([(0x100, 30000)]));
        assert_eq!(s.tree.len(), 4);
        let a = s.tree.get("/a").unwrap();
        assert_eq!(a.data.as_deref(), Some(&b"x"[..]));
        assert_eq!(
            a.acl,
            NodeAcl::List(Arc::new(vec![Acl::new(31, "digest", "u:hash")]))
        );
        assert_eq!(s.tree.get("/a/e").unwrap().stat.ephemeral_owner, 0x100);
        // A key the table lacks is remembered, for a later create to fill in.
        assert_eq!(s.tree.get("/c").unwrap().acl, NodeAcl::Missing(9));
        assert_eq!(s.digest, None);
    }

    #[test]
    fn reads_each_combination_of_trailers() {
        let d = Some(ZxidDigest {
            zxid: 7,
            version: 2,
            digest: Some(99),
        });
        assert_eq!(parse_bytes(&sample(Some((7, 99)), None)).unwrap().digest, d);
        assert_eq!(
            parse_bytes(&sample(Some((7, 99)), Some(8))).unwrap().digest,
            d
        );
        assert_eq!(parse_bytes(&sample(None, Some(8))).unwrap().digest, None);
    }

    #[test]
    fn checksum_mismatch_is_reported_with_offset() {
        let mut bytes = sample(None, None);
        let n = bytes.len();
        bytes[n - 10] ^= 1; // inside the stored checksum
        let err = parse_bytes(&bytes).unwrap_err();
        assert!(err.what.contains("checksum mismatch"), "{}", err.what);
        assert_eq!(err.offset, (n - 13) as u64);
        // A flipped data byte is caught by the seal too.
        let mut bytes = sample(Some((7, 99)), Some(8));
        bytes[60] ^= 0x40;
        assert!(parse_bytes(&bytes).is_err());
        // So is a corrupt trailer.
        let mut bytes = sample(Some((7, 99)), None);
        let n = bytes.len();
        bytes[n - 20] ^= 1;
        assert!(parse_bytes(&bytes).unwrap_err().what.contains("checksum"));
    }

    #[test]
    fn structural_errors() {
        let mut bytes = sample(None, None);
        bytes[0] = 0;
        assert!(parse_bytes(&bytes).unwrap_err().what.contains("bad magic"));
        let orphan = snapshot(
            &[],
            &[],
            &[
                Node {
                    path: "",
                    data: b"",
                    acl_key: -1,
                    stat: StatPersisted::default(),
                },
                Node {
                    path: "/a/b",
                    data: b"",
                    acl_key: -1,
                    stat: StatPersisted::default(),
                },
            ],
            None,
            None,
        );
        assert!(parse_bytes(&orphan).unwrap_err().what.contains("no parent"));
        let rootless = snapshot(&[], &[], &[], None, None);
        assert!(parse_bytes(&rootless).unwrap_err().what.contains("no root"));
        let mut trailing = sample(None, None);
        trailing.extend_from_slice(&[0; 5]);
        assert!(parse_bytes(&trailing).is_err());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample(Some((7, 99)), Some(8));
        // Cutting at a trailer boundary leaves a valid older-format snapshot; anywhere else
        // must fail.
        let boundaries = [bytes.len() - 21, bytes.len() - 54];
        for cut in 0..bytes.len() {
            let result = parse_bytes(&bytes[..cut]);
            assert_eq!(result.is_ok(), boundaries.contains(&cut), "cut at {cut}");
        }
    }
}
