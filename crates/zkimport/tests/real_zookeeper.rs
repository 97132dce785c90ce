//! Imports data directories written by the real Apache ZooKeeper 3.8 (made by
//! `make_zk_datadir.sh`, which kills ZooKeeper with SIGKILL right after reading its tree through
//! kazoo) and compares the result with that tree node by node: every Stat field as clients see
//! it, the data and the ACLs. Plain, gzip and snappy snapshots each get a run.

use base64::Engine;
use corral_proto::Acl;
use corral_zkimport::{import_with_digest_check, DigestCheck, ImportOptions, Imported};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One node as kazoo read it: stat fields by ZooKeeper's names, data, ACL list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    stat: BTreeMap<String, i64>,
    /// `None`: null data.
    data: Option<Vec<u8>>,
    acl: Vec<Acl>,
}

struct Expected {
    last_zxid: i64,
    snapshot_zxid: i64,
    nodes: BTreeMap<String, Seen>,
}

fn zookeeper_missing() -> Option<String> {
    if Command::new("java").arg("-version").output().is_err() {
        return Some("java is not installed".into());
    }
    let jar = Path::new("/usr/share/java/zookeeper.jar");
    (!jar.exists()).then(|| format!("{} is missing (apt-get install zookeeper)", jar.display()))
}

/// Runs the script into a fresh directory; `None` (test skipped) without java or ZooKeeper.
fn make_datadir(name: &str, compression: Option<&str>) -> Option<PathBuf> {
    if let Some(why) = zookeeper_missing() {
        eprintln!("SKIPPED: {why}; cannot make a real ZooKeeper data directory");
        return None;
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("zkimport-{name}"));
    let _ = std::fs::remove_dir_all(&out);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/make_zk_datadir.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).arg(&out);
    if let Some(c) = compression {
        cmd.env("ZK_SNAPSHOT_COMPRESSION", c);
    }
    let result = cmd.output().expect("run make_zk_datadir.sh");
    assert!(
        result.status.success(),
        "make_zk_datadir.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    Some(out)
}

fn load_expected(out: &Path) -> Expected {
    let text = std::fs::read_to_string(out.join("expected.json")).expect("expected.json");
    let json: Value = serde_json::from_str(&text).expect("expected.json is JSON");
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut nodes = BTreeMap::new();
    for (path, n) in json["nodes"].as_object().expect("nodes") {
        let stat = n["stat"]
            .as_object()
            .expect("stat")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_i64().expect("stat field")))
            .collect();
        let acl = n["acl"]
            .as_array()
            .expect("acl")
            .iter()
            .map(|a| {
                let perms = a["perms"].as_i64().expect("perms") as i32;
                Acl::new(
                    perms,
                    a["scheme"].as_str().expect("scheme"),
                    a["id"].as_str().expect("id"),
                )
            })
            .collect();
        let data = n["data"].as_str().map(|d| b64.decode(d).expect("base64"));
        nodes.insert(path.clone(), Seen { stat, data, acl });
    }
    Expected {
        last_zxid: json["last_zxid"].as_i64().expect("last_zxid"),
        snapshot_zxid: json["snapshot_zxid"].as_i64().expect("snapshot_zxid"),
        nodes,
    }
}

/// The imported tree as kazoo would have read it from Corral.
fn seen_in(imported: &Imported) -> BTreeMap<String, Seen> {
    let tree = &imported.tree;
    tree.nodes()
        .map(|(path, node)| {
            let s = node.stat();
            let stat = [
                ("czxid", s.czxid),
                ("mzxid", s.mzxid),
                ("ctime", s.ctime),
                ("mtime", s.mtime),
                ("version", s.version.into()),
                ("cversion", s.cversion.into()),
                ("aversion", s.aversion.into()),
                ("ephemeralOwner", s.ephemeral_owner),
                ("dataLength", s.data_length.into()),
                ("numChildren", s.num_children.into()),
                ("pzxid", s.pzxid),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let seen = Seen {
                stat,
                data: node.data.to_buffer().map(|b| b.to_vec()),
                acl: tree.acl(node).to_vec(),
            };
            (path.to_owned(), seen)
        })
        .collect()
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "/",
    }
}

/// What clients would see once the session ephemerals are gone: each parent has one child
/// fewer and, by ZooKeeper's formula (2 × creations − children), a cversion one higher.
fn without_ephemerals(nodes: &BTreeMap<String, Seen>) -> (BTreeMap<String, Seen>, usize) {
    let ephemerals: Vec<String> = nodes
        .iter()
        .filter(|(_, n)| n.stat["ephemeralOwner"] != 0)
        .map(|(p, _)| p.clone())
        .collect();
    let mut out = nodes.clone();
    for p in &ephemerals {
        out.remove(p);
        let parent = out.get_mut(parent_of(p)).expect("parent of an ephemeral");
        *parent.stat.get_mut("numChildren").expect("numChildren") -= 1;
        *parent.stat.get_mut("cversion").expect("cversion") += 1;
    }
    (out, ephemerals.len())
}

/// The quota stats node holds the usage the server derives (no txn); recompute it.
fn fix_quota_stats(nodes: &mut BTreeMap<String, Seen>) {
    let stats = "/zookeeper/quota/app/zookeeper_stats";
    let under = |p: &str| p == "/app" || p.starts_with("/app/");
    let count = nodes.keys().filter(|p| under(p)).count();
    let bytes: usize = nodes
        .iter()
        .filter(|(p, _)| under(p))
        .map(|(_, n)| n.data.as_ref().map_or(0, Vec::len))
        .sum();
    let node = nodes.get_mut(stats).expect("quota stats node");
    let stats = format!("count={count},bytes={bytes}").into_bytes();
    *node.stat.get_mut("dataLength").expect("dataLength") = stats.len() as i64;
    node.data = Some(stats);
}

fn compare(got: &BTreeMap<String, Seen>, want: &BTreeMap<String, Seen>) {
    let got_paths: Vec<&String> = got.keys().collect();
    let want_paths: Vec<&String> = want.keys().collect();
    assert_eq!(got_paths, want_paths, "the imported paths differ");
    let mut differences = Vec::new();
    for (path, w) in want {
        let g = &got[path];
        if g != w {
            differences.push(format!("{path}:\n  imported {g:?}\n  zookeeper {w:?}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} nodes differ:\n{}",
        differences.len(),
        want.len(),
        differences.join("\n")
    );
}

fn check_summary(imported: &Imported, digests: &DigestCheck, expected: &Expected) {
    assert_eq!(imported.last_zxid, expected.last_zxid);
    assert_eq!(
        imported.snapshot_zxid, expected.snapshot_zxid,
        "not the newest snapshot"
    );
    assert!(imported.snapshot.is_some());
    assert!(
        imported.txns_replayed > 0,
        "the newest snapshot is followed by txns"
    );
    assert!(!imported.logs_read.is_empty());
    assert!(digests.checked > 0, "ZooKeeper 3.8 logs tree digests");
    assert_digests_match(digests, "from the newest snapshot");
    assert_eq!(imported.tree.last_zxid(), expected.last_zxid);
}

/// Every digest ZooKeeper recorded matches the rebuilt tree, but for one race of its own.
///
/// ZooKeeper records a fuzzy snapshot's digest as of the last txn it had finished when
/// serialisation ended (`DataTree.lastProcessedZxidDigest`, set after a txn's changes), but a
/// txn being applied at that moment may already be in the serialised nodes. The tree then
/// differs from that one digest, at its zxid only (ZooKeeper itself logs the mismatch), and the
/// next txn's replay makes it whole again.
fn assert_digests_match(digests: &DigestCheck, context: &str) {
    let race_only = digests.mismatches == 0
        || (digests.first_mismatch_zxid == digests.first_checked_zxid
            && digests.last_mismatch_zxid == digests.first_checked_zxid);
    assert!(race_only, "{context}: {digests:?}");
    assert!(
        digests.checked > digests.mismatches,
        "{context}: {digests:?}"
    );
}

fn run(name: &str, compression: Option<&str>) {
    let Some(out) = make_datadir(name, compression) else {
        return;
    };
    let expected = load_expected(&out);
    let data_dir = out.join("zk/data");

    // Sessions dropped (the default): no ephemerals, parents adjusted.
    let (imported, digests) =
        import_with_digest_check(&data_dir, &ImportOptions::default()).expect("import");
    eprintln!(
        "{name}: snapshot {:?}, {} logs, {} txns replayed, last zxid {:#x}, {} nodes, \
         {} ephemerals and {} sessions dropped, digests {digests:?}",
        imported.snapshot,
        imported.logs_read.len(),
        imported.txns_replayed,
        imported.last_zxid,
        imported.tree.node_count(),
        imported.ephemerals_dropped,
        imported.sessions_dropped,
    );
    check_summary(&imported, &digests, &expected);
    let (mut want, ephemerals) = without_ephemerals(&expected.nodes);
    fix_quota_stats(&mut want);
    assert_eq!(imported.ephemerals_dropped, ephemerals);
    assert!(ephemerals >= 3);
    assert!(imported.sessions_dropped >= 1);
    assert_eq!(imported.tree.sessions().count(), 0);
    compare(&seen_in(&imported), &want);

    // Sessions kept: exactly what ZooKeeper showed. The version-2 directory works as well.
    let keep = ImportOptions {
        keep_sessions: true,
    };
    let (kept, _) = import_with_digest_check(&data_dir.join("version-2"), &keep).expect("import");
    assert_eq!((kept.sessions_dropped, kept.ephemerals_dropped), (0, 0));
    assert!(kept.tree.sessions().count() >= 1);
    compare(&seen_in(&kept), &expected.nodes);

    if compression.is_none() {
        replay_from_older_snapshots(&out, &data_dir.join("version-2"), &want, expected.last_zxid);
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Imports again from each older snapshot (some of them fuzzy: ZooKeeper snapshots while writes
/// go on), and from no snapshot at all, so that every kind of txn the script made is replayed
/// and checked against ZooKeeper's digests and final tree. Each variant is a directory of
/// symlinks: all the logs and at most one snapshot.
fn replay_from_older_snapshots(
    out: &Path,
    version2: &Path,
    want: &BTreeMap<String, Seen>,
    last_zxid: i64,
) {
    let mut snapshots = Vec::new();
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(version2).expect("version-2") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name.starts_with("snapshot.") {
            snapshots.push(path);
        } else if name.starts_with("log.") {
            logs.push(path);
        }
    }
    assert!(snapshots.len() > 3, "ZooKeeper took several snapshots");
    let variants = snapshots.into_iter().map(Some).chain([None]);
    for (i, snapshot) in variants.enumerate() {
        let dir = out.join(format!("variant-{i}"));
        std::fs::create_dir_all(&dir).expect("variant dir");
        for file in logs.iter().chain(snapshot.as_ref()) {
            let link = dir.join(file.file_name().expect("name"));
            std::os::unix::fs::symlink(file, link).expect("symlink");
        }
        let (imported, digests) = import_with_digest_check(&dir, &ImportOptions::default())
            .unwrap_or_else(|e| panic!("import from {snapshot:?}: {e}"));
        assert_eq!(imported.last_zxid, last_zxid, "from {snapshot:?}");
        assert_digests_match(&digests, &format!("from {snapshot:?}"));
        compare(&seen_in(&imported), want);
    }
}

#[test]
fn plain_snapshots() {
    run("plain", None);
}

#[test]
fn gzip_snapshots() {
    run("gz", Some("gz"));
}

#[test]
fn snappy_snapshots() {
    run("snappy", Some("snappy"));
}
