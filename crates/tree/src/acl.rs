//! Access control as ZooKeeper does it: the schemes `world`, `auth`, `digest`, `ip`, `sasl`,
//! `x509` and the `super` identity, the permission check (`checkACL`), the normalisation of ACLs
//! given to create and setACL (`fixupACL`), and the table that stores each distinct ACL list
//! once.

use base64::Engine;
use corral_proto::codes::perms;
use corral_proto::{Acl, ErrorCode, Id};
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// `world:anyone` with every permission: ZooKeeper's `OPEN_ACL_UNSAFE`.
pub fn open_acl() -> Vec<Acl> {
    vec![Acl::new(perms::ALL, "world", "anyone")]
}

/// `world:anyone` with read only: ZooKeeper's `READ_ACL_UNSAFE`.
pub fn read_acl() -> Vec<Acl> {
    vec![Acl::new(perms::READ, "world", "anyone")]
}

/// The digest id for `user:password`: `user:base64(sha1("user:password"))`.
pub fn digest_id(user_password: &str) -> String {
    let user = user_password.split(':').next().unwrap_or("");
    let hash = Sha1::digest(user_password.as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// Whether the identities `ids` hold permission `perm` on a node with `acl` (ZooKeeper's
/// `checkACL`). The `super` identity holds every permission; an empty ACL grants everything.
pub fn check(acl: &[Acl], perm: i32, ids: &[Id]) -> Result<(), ErrorCode> {
    if acl.is_empty() || ids.iter().any(|id| id.scheme == "super") {
        return Ok(());
    }
    for entry in acl.iter().filter(|a| a.perms & perm != 0) {
        let id = &entry.id;
        if id.scheme == "world" && id.id == "anyone" {
            return Ok(());
        }
        if ids
            .iter()
            .any(|auth| auth.scheme == id.scheme && matches(&id.scheme, &auth.id, &id.id))
        {
            return Ok(());
        }
    }
    Err(ErrorCode::NoAuth)
}

/// Whether an authenticated id matches an ACL's id in one scheme (`AuthenticationProvider.matches`).
fn matches(scheme: &str, auth_id: &str, acl_id: &str) -> bool {
    match scheme {
        "digest" | "x509" => auth_id == acl_id,
        // ZooKeeper's SASL provider lets the SASL user `super` match every `sasl` ACL.
        "sasl" => auth_id == acl_id || auth_id == "super",
        "ip" => ip_matches(auth_id, acl_id),
        _ => false,
    }
}

/// `addr` against `pattern`, an address or `address/bits`.
fn ip_matches(addr: &str, pattern: &str) -> bool {
    let (net, bits) = match pattern.split_once('/') {
        Some((n, b)) => (n, b.parse::<u32>().ok()),
        None => (pattern, None),
    };
    let (Ok(addr), Ok(net)) = (addr.parse::<IpAddr>(), net.parse::<IpAddr>()) else {
        return false;
    };
    let (a, n): (Vec<u8>, Vec<u8>) = match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (a.octets().to_vec(), n.octets().to_vec()),
        (IpAddr::V6(a), IpAddr::V6(n)) => (a.octets().to_vec(), n.octets().to_vec()),
        _ => return false,
    };
    let bits = bits.unwrap_or(a.len() as u32 * 8).min(a.len() as u32 * 8) as usize;
    (0..bits).all(|i| {
        let mask = 0x80u8 >> (i % 8);
        a[i / 8] & mask == n[i / 8] & mask
    })
}

/// ZooKeeper's ip provider accepts IPv4 patterns only: `a.b.c.d` or `a.b.c.d/bits`.
fn ip_pattern_is_valid(pattern: &str) -> bool {
    let (net, bits) = match pattern.split_once('/') {
        Some((n, b)) => (n, Some(b)),
        None => (pattern, None),
    };
    net.parse::<std::net::Ipv4Addr>().is_ok()
        && bits.is_none_or(|b| b.parse::<u32>().is_ok_and(|b| b <= 32))
}

/// ZooKeeper's `KerberosName` parse: a plain name, or `name[/host]@REALM` with no further `/`
/// or `@`.
fn kerberos_name_is_valid(id: &str) -> bool {
    let Some((rest, realm)) = id.split_once('@') else {
        return true;
    };
    let name_host_ok = match rest.split_once('/') {
        Some((name, host)) => !name.contains('@') && !host.contains('/'),
        None => true,
    };
    name_host_ok && !realm.contains('@') && !realm.contains('/')
}

/// Whether an x509 id reads as a distinguished name (`CN=alice,O=Corral`), as Java's
/// `X500Principal` requires: comma-separated `type=value` parts (a `\,` is part of a value).
fn distinguished_name_is_valid(id: &str) -> bool {
    let mut parts = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in id.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            ',' if !escaped => {
                parts.push(&id[start..i]);
                start = i + 1;
            }
            _ => escaped = false,
        }
    }
    parts.push(&id[start..]);
    parts.iter().all(|p| {
        p.split_once('=')
            .is_some_and(|(k, _)| !k.trim().is_empty() && !k.contains(['"', '\\']))
    })
}

/// The length of Java's `s.split(sep)`, which drops trailing empty strings.
fn java_split_len(s: &str, sep: char) -> usize {
    let parts: Vec<&str> = s.split(sep).collect();
    parts.len() - parts.iter().rev().take_while(|p| p.is_empty()).count()
}

/// The user name ZooKeeper reports for an identity (whoAmI): digest ids up to the colon.
pub fn user_name(id: &Id) -> String {
    match id.scheme.as_str() {
        "digest" => id.id.split(':').next().unwrap_or("").to_owned(),
        "ip" | "sasl" | "x509" => id.id.clone(),
        _ => String::new(),
    }
}

/// The schemes beyond `world`, `digest` and `ip` that the proposing member had a provider for,
/// stamped on each entry: ZooKeeper's leader checks an ACL against its own providers when it
/// prepares a request, so the check travels in the log and every member applies the same
/// answer. `sasl` needs `authProvider.N=...SASLAuthenticationProvider`; `x509` comes with a TLS
/// client port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Providers {
    pub sasl: bool,
    pub x509: bool,
}

impl Providers {
    /// Every scheme: what entries written before providers were stamped were checked with.
    pub const ALL: Providers = Providers {
        sasl: true,
        x509: true,
    };

    /// Whether ACLs may name `scheme` (and `auth` may stand for its identities).
    pub fn has(&self, scheme: &str) -> bool {
        match scheme {
            "sasl" => self.sasl,
            "x509" => self.x509,
            _ => true,
        }
    }

    /// One byte in the log: bit 0 `sasl`, bit 1 `x509`.
    pub fn to_byte(self) -> u8 {
        u8::from(self.sasl) | u8::from(self.x509) << 1
    }

    pub fn from_byte(b: u8) -> Providers {
        Providers {
            sasl: b & 1 != 0,
            x509: b & 2 != 0,
        }
    }
}

/// Normalises the ACL of a create or setACL (ZooKeeper's `fixupACL`): empty is invalid, `auth`
/// entries become one entry per authenticated identity of the session, unknown schemes, schemes
/// without a provider and malformed ids are invalid, duplicates are dropped.
pub fn fixup(acl: &[Acl], ids: &[Id], providers: Providers) -> Result<Vec<Acl>, ErrorCode> {
    if acl.is_empty() {
        return Err(ErrorCode::InvalidAcl);
    }
    let mut out: Vec<Acl> = Vec::with_capacity(acl.len());
    let mut push = |a: Acl| {
        if !out.contains(&a) {
            out.push(a);
        }
    };
    for entry in acl {
        match entry.id.scheme.as_str() {
            "world" if entry.id.id == "anyone" => push(entry.clone()),
            "auth" => {
                // Only schemes whose identities prove who the client is can stand in for `auth`,
                // and, as in ZooKeeper, only those the server has a provider for.
                let mut any = false;
                let proven = |id: &&Id| {
                    matches!(id.scheme.as_str(), "digest" | "sasl" | "x509")
                        && providers.has(&id.scheme)
                };
                for id in ids.iter().filter(proven) {
                    any = true;
                    push(Acl {
                        perms: entry.perms,
                        id: id.clone(),
                    });
                }
                if !any {
                    return Err(ErrorCode::InvalidAcl);
                }
            }
            "digest" if java_split_len(&entry.id.id, ':') == 2 => push(entry.clone()),
            "ip" if ip_pattern_is_valid(&entry.id.id) => push(entry.clone()),
            "sasl" if providers.sasl && kerberos_name_is_valid(&entry.id.id) => push(entry.clone()),
            "x509" if providers.x509 && distinguished_name_is_valid(&entry.id.id) => {
                push(entry.clone())
            }
            _ => return Err(ErrorCode::InvalidAcl),
        }
    }
    Ok(out)
}

/// A reference to an ACL list held in the [`AclTable`].
pub type AclRef = u32;

/// Stores each distinct ACL list once, reference-counted, as ZooKeeper's `ReferenceCountedACLCache`:
/// a million znodes with the same ACL share one list.
#[derive(Debug, Clone, Default)]
pub struct AclTable {
    lists: Vec<Arc<[Acl]>>,
    refs: Vec<u32>,
    index: HashMap<Arc<[Acl]>, AclRef>,
    free: Vec<AclRef>,
}

impl AclTable {
    /// Takes a reference to `acl`, adding it if new.
    pub fn intern(&mut self, acl: &[Acl]) -> AclRef {
        if let Some(&r) = self.index.get(acl) {
            self.refs[r as usize] += 1;
            return r;
        }
        let list: Arc<[Acl]> = acl.into();
        let r = match self.free.pop() {
            Some(r) => {
                self.lists[r as usize] = list.clone();
                self.refs[r as usize] = 1;
                r
            }
            None => {
                self.lists.push(list.clone());
                self.refs.push(1);
                (self.lists.len() - 1) as AclRef
            }
        };
        self.index.insert(list, r);
        r
    }

    /// Drops one reference; the list is forgotten with its last reference.
    /// Takes one more reference to a list already held (no hashing of the list).
    pub fn retain(&mut self, r: AclRef) {
        self.refs[r as usize] += 1;
    }

    pub fn release(&mut self, r: AclRef) {
        let count = &mut self.refs[r as usize];
        debug_assert!(*count > 0, "ACL reference released more often than taken");
        *count -= 1;
        if *count == 0 {
            let list = std::mem::replace(&mut self.lists[r as usize], Arc::from(Vec::new()));
            self.index.remove(&list);
            self.free.push(r);
        }
    }

    pub fn get(&self, r: AclRef) -> &[Acl] {
        &self.lists[r as usize]
    }

    pub fn get_shared(&self, r: AclRef) -> Arc<[Acl]> {
        self.lists[r as usize].clone()
    }

    /// Distinct lists in use.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_zookeeper() {
        // The digest ZooKeeper's own documentation gives for super:test.
        assert_eq!(
            digest_id("super:test"),
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
        );
    }

    #[test]
    fn permission_checks() {
        let acl = vec![
            Acl::new(perms::READ, "digest", "bob:xyz"),
            Acl::new(perms::ALL, "ip", "10.0.0.0/8"),
        ];
        let bob = vec![Id::new("digest", "bob:xyz")];
        assert_eq!(check(&acl, perms::READ, &bob), Ok(()));
        assert_eq!(check(&acl, perms::WRITE, &bob), Err(ErrorCode::NoAuth));
        let local = vec![Id::new("ip", "10.1.2.3")];
        assert_eq!(check(&acl, perms::WRITE, &local), Ok(()));
        let other = vec![Id::new("ip", "11.1.2.3")];
        assert_eq!(check(&acl, perms::READ, &other), Err(ErrorCode::NoAuth));
        assert_eq!(check(&acl, perms::ADMIN, &[Id::new("super", "")]), Ok(()));
        assert_eq!(check(&[], perms::ADMIN, &[]), Ok(()));
    }

    #[test]
    fn fixup_expands_auth_and_rejects_bad_ids() {
        let ids = vec![Id::new("ip", "127.0.0.1"), Id::new("digest", "u:h")];
        let fixed = fixup(&[Acl::new(perms::ALL, "auth", "")], &ids, Providers::ALL).unwrap();
        assert_eq!(fixed, vec![Acl::new(perms::ALL, "digest", "u:h")]);
        assert_eq!(
            fixup(
                &[Acl::new(perms::ALL, "auth", "")],
                &ids[..1],
                Providers::ALL
            ),
            Err(ErrorCode::InvalidAcl)
        );
        assert_eq!(fixup(&[], &ids, Providers::ALL), Err(ErrorCode::InvalidAcl));
        for bad in [
            ("world", "bob"),
            ("digest", "nocolon"),
            ("digest", "a:"),
            ("digest", "a:b:c"),
            ("ip", "::1"),
            ("ip", "1.2.3.4/33"),
            ("foo", "x"),
        ] {
            assert_eq!(
                fixup(&[Acl::new(1, bad.0, bad.1)], &ids, Providers::ALL),
                Err(ErrorCode::InvalidAcl),
                "{bad:?}"
            );
        }
        let dup = [
            Acl::new(1, "world", "anyone"),
            Acl::new(1, "world", "anyone"),
        ];
        assert_eq!(fixup(&dup, &ids, Providers::ALL).unwrap().len(), 1);
    }

    #[test]
    fn sasl_and_x509_ids() {
        let alice = Id::new("sasl", "alice");
        let cert = Id::new("x509", "CN=alice,O=Corral");
        let ids = vec![Id::new("ip", "127.0.0.1"), alice.clone(), cert.clone()];
        let acl = fixup(&[Acl::new(perms::READ, "auth", "")], &ids, Providers::ALL).unwrap();
        assert_eq!(
            acl,
            vec![
                Acl {
                    perms: perms::READ,
                    id: alice.clone()
                },
                Acl {
                    perms: perms::READ,
                    id: cert.clone()
                }
            ]
        );
        assert_eq!(check(&acl, perms::READ, &[alice]), Ok(()));
        assert_eq!(check(&acl, perms::READ, &[cert]), Ok(()));
        assert_eq!(
            check(&acl, perms::READ, &[Id::new("sasl", "bob")]),
            Err(ErrorCode::NoAuth)
        );
        assert_eq!(
            check(&acl, perms::READ, &[Id::new("digest", "alice")]),
            Err(ErrorCode::NoAuth)
        );
        for good in [
            ("sasl", "alice"),
            ("sasl", "kafka/host@EXAMPLE.COM"),
            ("sasl", "a@B"),
            ("x509", "CN=a\\,b,O=c"),
        ] {
            assert!(
                fixup(&[Acl::new(1, good.0, good.1)], &ids, Providers::ALL).is_ok(),
                "{good:?}"
            );
        }
        for bad in [
            ("sasl", "a@b@c"),
            ("sasl", "a/b/c@R"),
            ("x509", "alice"),
            ("x509", "CN=a,"),
        ] {
            assert_eq!(
                fixup(&[Acl::new(1, bad.0, bad.1)], &ids, Providers::ALL),
                Err(ErrorCode::InvalidAcl),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn schemes_without_a_provider_are_invalid() {
        let alice = Id::new("sasl", "alice");
        let ids = vec![alice.clone(), Id::new("digest", "u:h")];
        let none = Providers {
            sasl: false,
            x509: false,
        };
        for acl in [("sasl", "alice"), ("x509", "CN=alice")] {
            assert_eq!(
                fixup(&[Acl::new(1, acl.0, acl.1)], &ids, none),
                Err(ErrorCode::InvalidAcl),
                "{acl:?}"
            );
        }
        // `auth` skips the identities of a scheme without a provider, as ZooKeeper does.
        let auth = [Acl::new(1, "auth", "")];
        assert_eq!(
            fixup(&auth, &ids, none).unwrap(),
            [Acl::new(1, "digest", "u:h")]
        );
        assert_eq!(fixup(&auth, &ids[..1], none), Err(ErrorCode::InvalidAcl));
        for p in [
            none,
            Providers::ALL,
            Providers {
                sasl: true,
                x509: false,
            },
        ] {
            assert_eq!(Providers::from_byte(p.to_byte()), p);
        }
    }

    #[test]
    fn table_shares_and_frees_lists() {
        let mut t = AclTable::default();
        let a = t.intern(&open_acl());
        let b = t.intern(&open_acl());
        assert_eq!(a, b);
        let c = t.intern(&read_acl());
        assert_ne!(a, c);
        t.release(a);
        assert_eq!(t.len(), 2);
        t.release(b);
        assert_eq!(t.len(), 1);
        assert_eq!(t.intern(&read_acl()), c);
    }
}
