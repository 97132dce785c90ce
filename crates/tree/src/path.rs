//! ZooKeeper's path rules (`PathUtils.validatePath`) and path arithmetic.

use corral_proto::ErrorCode;

/// Checks a path as ZooKeeper does: absolute, no trailing slash (except the root), no empty,
/// `.` or `..` segments, and none of the control or reserved characters ZooKeeper refuses.
pub fn validate(path: &str) -> Result<(), ErrorCode> {
    let bad = Err(ErrorCode::BadArguments);
    if path.is_empty() || !path.starts_with('/') {
        return bad;
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return bad;
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return bad;
        }
    }
    if path.chars().any(is_forbidden_char) {
        return bad;
    }
    Ok(())
}

/// ZooKeeper's `PathUtils.validatePath` bans these UTF-16 units. Java sees a character beyond
/// the Basic Multilingual Plane as a surrogate pair (\ud800-\udfff, inside its banned
/// \ud800-\uf8ff), so every such character is banned too.
fn is_forbidden_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{e000}'..='\u{f8ff}' | '\u{fff0}'..='\u{ffff}'
        | '\u{10000}'..)
}

/// The parent of a path as ZooKeeper computes it: everything before the last slash, where the
/// root's own key is the empty string. `None` when there is no slash at all.
pub fn parent_of(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

/// The last segment of a path.
pub fn name_of(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

/// Joins a parent (the root is `""` or `"/"`) and a child name.
pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" || parent.is_empty() {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Whether `path` is `prefix` or lies below it.
pub fn is_at_or_below(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_paths() {
        for ok in ["/", "/a", "/a/b", "/a-b_c.d", "/é", "/a/.b", "/..a"] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a",
            "/a/",
            "//",
            "/a//b",
            "/a/./b",
            "/a/..",
            "/.",
            "/a\u{0}",
            "/\u{1}",
            "/\u{fff5}",
            "/\u{1f600}",
        ] {
            assert_eq!(validate(bad), Err(ErrorCode::BadArguments), "{bad:?}");
        }
    }

    #[test]
    fn parents_and_names() {
        assert_eq!(parent_of("/a/b"), Some("/a"));
        assert_eq!(parent_of("/a"), Some(""));
        assert_eq!(parent_of("a"), None);
        assert_eq!(name_of("/a/b"), "b");
        assert_eq!(join("", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert!(is_at_or_below("/a/b", "/a"));
        assert!(!is_at_or_below("/ab", "/a"));
        assert!(is_at_or_below("/ab", "/"));
    }
}
