//! The text ZooKeeper keeps in quota nodes (its `StatsTrack`): `key=value` pairs such as
//! `count=10,bytes=-1,countHardLimit=20,byteHardLimit=-1`, where -1 means "no limit".

/// The limits in a `zookeeper_limits` node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Soft limit on nodes (logged when passed).
    pub count: i64,
    /// Soft limit on data bytes.
    pub bytes: i64,
    /// Hard limit on nodes (refused when enforced).
    pub count_hard: i64,
    /// Hard limit on data bytes.
    pub bytes_hard: i64,
}

impl Limits {
    pub const NONE: Limits = Limits {
        count: -1,
        bytes: -1,
        count_hard: -1,
        bytes_hard: -1,
    };

    /// Parses leniently: pairs separated by `,` or `;`, a value being the leading number after
    /// `=`. (ZooKeeper 3.8.0's zkCli writes `count=3,bytes=-1=;byteHardLimit=100;countHardLimit=-1`.)
    pub fn parse(data: &[u8]) -> Limits {
        let mut limits = Limits::NONE;
        let text = String::from_utf8_lossy(data);
        for pair in text.split([',', ';']) {
            let Some((key, rest)) = pair.split_once('=') else {
                continue;
            };
            let end = rest
                .char_indices()
                .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-')))
                .map_or(rest.len(), |(i, _)| i);
            let Ok(value) = rest[..end].parse::<i64>() else {
                continue;
            };
            match key.trim() {
                "count" => limits.count = value,
                "bytes" => limits.bytes = value,
                "countHardLimit" => limits.count_hard = value,
                "byteHardLimit" => limits.bytes_hard = value,
                _ => {}
            }
        }
        limits
    }

    /// The text to store: the soft limits, and the hard ones when any is set.
    pub fn text(&self) -> String {
        let mut s = format!("count={},bytes={}", self.count, self.bytes);
        if self.count_hard != -1 || self.bytes_hard != -1 {
            s += &format!(
                ",countHardLimit={},byteHardLimit={}",
                self.count_hard, self.bytes_hard
            );
        }
        s
    }
}

/// A quota'd subtree's usage as the `zookeeper_stats` node holds it.
pub fn stats_text(count: i64, bytes: i64) -> String {
    format!("count={count},bytes={bytes}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_zookeepers_formats_and_round_trip() {
        let l = Limits::parse(b"count=3,bytes=-1=;byteHardLimit=100;countHardLimit=-1");
        assert_eq!(
            (l.count, l.bytes, l.count_hard, l.bytes_hard),
            (3, -1, -1, 100)
        );
        assert_eq!(
            l.text(),
            "count=3,bytes=-1,countHardLimit=-1,byteHardLimit=100"
        );
        assert_eq!(Limits::parse(l.text().as_bytes()), l);
        assert_eq!(Limits::NONE.text(), "count=-1,bytes=-1");
        assert_eq!(Limits::parse(b"garbage"), Limits::NONE);
    }
}
