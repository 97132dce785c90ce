//! Kerberos keytab files, as far as Corral needs them: MIT Kerberos reads one acceptor keytab
//! per process (`KRB5_KTNAME`), while Java reads one per JAAS section. When the clients' and
//! the members' server sections name different keytabs, the binary merges them into one.
//!
//! A keytab (MIT's format 0x0502, which Java and `ktutil` write too) is a two-byte version and
//! then length-prefixed entries, so a merge is one version and the entries of each file.

use std::io::Write;
use std::path::Path;

const VERSION: [u8; 2] = [0x05, 0x02];

/// Writes the entries of `files` into one keytab at `into`, readable by this user only.
pub fn merge(files: &[&Path], into: &Path) -> Result<(), String> {
    let mut merged = VERSION.to_vec();
    for file in files {
        let bytes = std::fs::read(file).map_err(|e| format!("keytab {}: {e}", file.display()))?;
        if bytes.len() < 2 || bytes[..2] != VERSION {
            return Err(format!(
                "keytab {}: not a version 0x0502 keytab (rewrite it with ktutil)",
                file.display()
            ));
        }
        merged.extend_from_slice(&bytes[2..]);
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options
        .open(into)
        .map_err(|e| format!("merged keytab {}: {e}", into.display()))?;
    out.write_all(&merged)
        .and_then(|()| out.sync_all())
        .map_err(|e| format!("merged keytab {}: {e}", into.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_both_files_under_one_version() {
        let dir = std::env::temp_dir().join(format!("corral-keytab-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b, out) = (dir.join("a"), dir.join("b"), dir.join("merged"));
        std::fs::write(&a, [5, 2, 0, 0, 0, 1, 0xaa]).unwrap();
        std::fs::write(&b, [5, 2, 0, 0, 0, 1, 0xbb]).unwrap();
        merge(&[&a, &b], &out).unwrap();
        let merged = std::fs::read(&out).unwrap();
        assert_eq!(merged, [5, 2, 0, 0, 0, 1, 0xaa, 0, 0, 0, 1, 0xbb]);
        std::fs::write(&b, [5, 1]).unwrap();
        assert!(merge(&[&a, &b], &out).unwrap_err().contains("0x0502"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
