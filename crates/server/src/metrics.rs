//! One list of metrics, three renderings: `mntr` (ZooKeeper's `zk_name<TAB>value` lines), the
//! admin server's `monitor` (JSON) and `/metrics` (Prometheus text format). The names are
//! ZooKeeper's, so dashboards and alerts written for ZooKeeper keep working.

use crate::stats::java_double;
use crate::status::{Status, VERSION_LINE};
use hdrhistogram::Histogram;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Latencies with quantiles, kept in microseconds and shown in milliseconds.
#[derive(Debug, Clone)]
pub struct Summary {
    hist: Histogram<u64>,
    sum_us: u64,
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            // 1 µs to 1 hour at 2 significant digits: a few KiB per summary.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds"),
            sum_us: 0,
        }
    }
}

impl Summary {
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        self.hist.saturating_record(us);
        self.sum_us += us;
    }

    pub fn reset(&mut self) {
        *self = Summary::default();
    }

    pub fn reading(&self) -> SummaryReading {
        let ms = |us: u64| us as f64 / 1000.0;
        let count = self.hist.len();
        SummaryReading {
            count,
            sum_ms: ms(self.sum_us),
            min_ms: if count == 0 { 0.0 } else { ms(self.hist.min()) },
            max_ms: ms(self.hist.max()),
            quantiles_ms: Some(QUANTILES.map(|q| ms(self.hist.value_at_quantile(q)))),
        }
    }
}

/// The quantiles ZooKeeper reports for its latency summaries (p50, p95, p99, p999).
pub const QUANTILES: [f64; 4] = [0.5, 0.95, 0.99, 0.999];
const QUANTILE_NAMES: [&str; 4] = ["p50", "p95", "p99", "p999"];

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SummaryReading {
    pub count: u64,
    pub sum_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// None for ZooKeeper's "avg/min/max" counters, which have no quantiles.
    pub quantiles_ms: Option<[f64; 4]>,
}

impl SummaryReading {
    pub fn avg_ms(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_ms / self.count as f64
        }
    }
}

impl From<corral_replication::TimingReading> for SummaryReading {
    fn from(t: corral_replication::TimingReading) -> Self {
        SummaryReading {
            count: t.count,
            sum_ms: t.sum_ms,
            min_ms: t.min_ms,
            max_ms: t.max_ms,
            quantiles_ms: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number that goes up and down (a Prometheus gauge).
    Gauge(i64),
    /// A number that only goes up until reset (a Prometheus counter).
    Counter(u64),
    Text(String),
    Summary(SummaryReading),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub value: Value,
}

impl Metric {
    pub fn new(name: &'static str, help: &'static str, value: Value) -> Self {
        Metric { name, help, value }
    }
}

/// An integer as ZooKeeper prints a long, a millisecond value rounded down.
fn whole(ms: f64) -> i64 {
    ms.floor() as i64
}

/// `mntr`: one `zk_<name>\t<value>` line per value; a summary expands into
/// `zk_{avg,min,max,cnt,sum}_<name>` and, with quantiles, `zk_p50_<name>` and the others.
pub fn render_mntr(metrics: &[Metric]) -> String {
    let mut out = String::new();
    for m in metrics {
        match &m.value {
            Value::Gauge(v) => writeln!(out, "zk_{}\t{v}", m.name),
            Value::Counter(v) => writeln!(out, "zk_{}\t{v}", m.name),
            Value::Text(v) => writeln!(out, "zk_{}\t{v}", m.name),
            Value::Summary(s) => {
                for (key, value) in summary_fields(s) {
                    let _ = writeln!(out, "zk_{key}_{}\t{value}", m.name);
                }
                Ok(())
            }
        }
        .expect("writing to a String");
    }
    out
}

/// A summary's fields as ZooKeeper names them, with their printed values.
fn summary_fields(s: &SummaryReading) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("avg", crate::stats::java_double(s.avg_ms())),
        ("min", whole(s.min_ms).to_string()),
        ("max", whole(s.max_ms).to_string()),
        ("cnt", s.count.to_string()),
        ("sum", whole(s.sum_ms).to_string()),
    ];
    if let Some(q) = s.quantiles_ms {
        for (name, v) in QUANTILE_NAMES.iter().zip(q) {
            fields.push((name, whole(v).to_string()));
        }
    }
    fields
}

/// The admin server's `monitor`: the same values as `mntr`, without the `zk_` prefix.
pub fn render_json(metrics: &[Metric]) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value as J;
    let mut out = serde_json::Map::new();
    for m in metrics {
        match &m.value {
            Value::Gauge(v) => {
                out.insert(m.name.into(), J::from(*v));
            }
            Value::Counter(v) => {
                out.insert(m.name.into(), J::from(*v));
            }
            Value::Text(v) => {
                out.insert(m.name.into(), J::from(v.clone()));
            }
            Value::Summary(s) => {
                out.insert(format!("avg_{}", m.name), J::from(s.avg_ms()));
                out.insert(format!("min_{}", m.name), J::from(whole(s.min_ms)));
                out.insert(format!("max_{}", m.name), J::from(whole(s.max_ms)));
                out.insert(format!("cnt_{}", m.name), J::from(s.count));
                out.insert(format!("sum_{}", m.name), J::from(whole(s.sum_ms)));
                if let Some(q) = s.quantiles_ms {
                    for (name, v) in QUANTILE_NAMES.iter().zip(q) {
                        out.insert(format!("{name}_{}", m.name), J::from(whole(v)));
                    }
                }
            }
        }
    }
    out
}

/// Prometheus' text exposition format (version 0.0.4), as ZooKeeper's Prometheus provider
/// names things: gauges and counters by their own name, summaries in milliseconds with
/// `quantile` labels plus `_sum` and `_count`. Text values are left out (Prometheus has none).
pub fn render_prometheus(metrics: &[Metric]) -> String {
    let mut out = String::new();
    for m in metrics {
        let kind = match m.value {
            Value::Gauge(_) => "gauge",
            Value::Counter(_) => "counter",
            Value::Summary(_) => "summary",
            Value::Text(_) => continue,
        };
        let _ = writeln!(out, "# HELP {} {}", m.name, m.help);
        let _ = writeln!(out, "# TYPE {} {kind}", m.name);
        match &m.value {
            Value::Gauge(v) => {
                let _ = writeln!(out, "{} {v}", m.name);
            }
            Value::Counter(v) => {
                let _ = writeln!(out, "{} {v}", m.name);
            }
            Value::Summary(s) => {
                if let Some(q) = s.quantiles_ms {
                    for (quantile, v) in QUANTILES.iter().zip(q) {
                        let _ = writeln!(out, "{}{{quantile=\"{quantile}\"}} {v}", m.name);
                    }
                }
                let _ = writeln!(out, "{}_sum {}", m.name, s.sum_ms);
                let _ = writeln!(out, "{}_count {}", m.name, s.count);
            }
            Value::Text(_) => {}
        }
    }
    out
}

impl Status {
    /// Every metric, named as ZooKeeper names it: `mntr`, the admin `monitor` command and
    /// `/metrics` all render this one list.
    pub(crate) fn metrics(&self) -> Vec<Metric> {
        let l = &self.snap.stats.latency;
        let watches = self.snap.watch_count;
        let ephemerals = self.snap.ephemeral_count;
        let timings = self.replica.timings();
        let count = |n: usize| Value::Gauge(n as i64);
        let (data_dir_size, log_dir_size) = self.dir_sizes();
        let summary = |s: &crate::metrics::Summary| Value::Summary(s.reading());
        let mut metrics = vec![
            Metric::new("version", "the version", Value::Text(VERSION_LINE.into())),
            Metric::new(
                "server_state",
                "standalone, leader, follower or observer",
                Value::Text(self.snap.mode.into()),
            ),
            Metric::new("ephemerals_count", "ephemeral znodes", count(ephemerals)),
            Metric::new(
                "num_alive_connections",
                "open client connections",
                count(self.snap.conns.len()),
            ),
            Metric::new(
                "avg_latency",
                "mean request latency (ms)",
                Value::Text(java_double(l.avg())),
            ),
            Metric::new(
                "max_latency",
                "largest request latency (ms)",
                Value::Gauge(l.max_ms as i64),
            ),
            Metric::new(
                "min_latency",
                "smallest request latency (ms)",
                Value::Gauge(l.min() as i64),
            ),
            Metric::new(
                "outstanding_requests",
                "requests received and not yet answered",
                count(self.snap.outstanding_requests),
            ),
            Metric::new(
                "znode_count",
                "znodes, counting ZooKeeper's alias of the root",
                count(self.snap.node_count + 1),
            ),
            Metric::new(
                "global_sessions",
                "live sessions",
                count(self.snap.session_count),
            ),
            Metric::new(
                "local_sessions",
                "local sessions (Corral has none)",
                count(0),
            ),
            Metric::new(
                "packets_received",
                "requests received",
                Value::Counter(self.snap.stats.packets_received),
            ),
            Metric::new(
                "packets_sent",
                "replies and events sent",
                Value::Counter(self.snap.stats.packets_sent),
            ),
            Metric::new("watch_count", "watches set", count(watches)),
            Metric::new(
                "approximate_data_size",
                "bytes of paths and data in the tree",
                count(self.snap.data_size),
            ),
            Metric::new(
                "auth_failed_count",
                "failed authentications, as ZooKeeper counts them: TLS handshakes that failed",
                Value::Counter(self.limits.tls_failed.load(Relaxed)),
            ),
            Metric::new(
                "auth_refused_count",
                "authentications refused: failed SASL logins, auth of unknown schemes, sessions without a required scheme",
                Value::Counter(self.snap.stats.auth_refused),
            ),
            Metric::new(
                "unsuccessful_handshake",
                "TLS handshakes that failed: a bad or missing certificate, a plaintext client, a timeout",
                Value::Counter(self.limits.tls_failed.load(Relaxed)),
            ),
            Metric::new(
                "tls_handshake_exceeded",
                "TLS connections refused at netty.server.outstandingHandshake.limit",
                Value::Counter(self.limits.tls_exceeded.load(Relaxed)),
            ),
            Metric::new(
                "outstanding_tls_handshake",
                "TLS handshakes under way",
                count(self.limits.tls_outstanding.load(Relaxed)),
            ),
            Metric::new(
                "member_link_checks_exceeded_count",
                "member links that waited because 64 were in their TLS handshake or SASL login already",
                Value::Counter(self.limits.member_link_checks_exceeded.load(Relaxed)),
            ),
            Metric::new(
                "console_logins",
                "web console logins open",
                count(self.limits.console_logins.load(Relaxed)),
            ),
            Metric::new(
                "console_login_failed_count",
                "web console logins refused for a wrong user or password",
                Value::Counter(self.limits.console_login_failed.load(Relaxed)),
            ),
            Metric::new(
                "console_logins_exceeded_count",
                "web console logins refused because the most it keeps were open",
                Value::Counter(self.limits.console_logins_exceeded.load(Relaxed)),
            ),
            Metric::new(
                "console_events_lagged_count",
                "live console views that fell behind their event queue and resynced",
                Value::Counter(self.limits.console_events_lagged.load(Relaxed)),
            ),
            Metric::new(
                "open_file_descriptor_count",
                "open file descriptors",
                Value::Gauge(open_fds()),
            ),
            Metric::new(
                "max_file_descriptor_count",
                "the limit on open file descriptors",
                Value::Gauge(max_fds()),
            ),
            Metric::new(
                "data_dir_size",
                "bytes of snapshots",
                Value::Gauge(data_dir_size),
            ),
            Metric::new(
                "log_dir_size",
                "bytes of the transaction log",
                Value::Gauge(log_dir_size),
            ),
            Metric::new(
                "last_zxid",
                "the zxid of the last applied transaction",
                Value::Gauge(self.snap.last_zxid),
            ),
            Metric::new(
                "looking_count",
                "times this member found no leader",
                Value::Counter(self.snap.stats.looking_count),
            ),
            // ZooKeeper counts no reconfigurations; these are Corral's.
            Metric::new(
                "reconfig_count",
                "reconfigurations asked of this member and committed",
                Value::Counter(self.snap.stats.reconfigs),
            ),
            Metric::new(
                "reconfig_refused_count",
                "reconfigurations asked of this member and refused",
                Value::Counter(self.snap.stats.reconfigs_refused),
            ),
            Metric::new(
                "connection_throttled_count",
                "times a connection's reads were held back at one of its limits",
                Value::Counter(self.limits.throttled.load(Relaxed)),
            ),
            Metric::new(
                "global_outstanding_throttled_count",
                "times a connection's reads were held back at globalOutstandingLimit",
                Value::Counter(self.limits.globally_throttled.load(Relaxed)),
            ),
            Metric::new(
                "connection_closed_slow_count",
                "connections closed for not reading their replies",
                Value::Counter(self.limits.closed_slow.load(Relaxed)),
            ),
            Metric::new(
                "proposals_throttled_count",
                "times writes waited for this member's proposals in flight to drop under their byte limit",
                Value::Counter(self.limits.proposals_throttled.load(Relaxed)),
            ),
            Metric::new(
                "queued_reply_bytes",
                "bytes of replies and notifications queued for clients' sockets",
                Value::Gauge(self.limits.reply_bytes() as i64),
            ),
            Metric::new(
                "uptime",
                "milliseconds since the server started",
                Value::Gauge(self.snap.uptime.as_millis() as i64),
            ),
            Metric::new(
                "readlatency",
                "read request latency (ms)",
                summary(&self.snap.stats.read_latency),
            ),
            Metric::new(
                "updatelatency",
                "write request latency, until applied (ms)",
                summary(&self.snap.stats.update_latency),
            ),
            Metric::new(
                "fsynctime",
                "time of one fdatasync of the log (ms)",
                Value::Summary(timings.fsync.read().into()),
            ),
            Metric::new(
                "snapshottime",
                "time to write a snapshot (ms)",
                Value::Summary(timings.snapshot.read().into()),
            ),
            Metric::new(
                "election_time",
                "time without a leader until one is known (ms)",
                // ZooKeeper's election_time has no quantiles.
                Value::Summary(SummaryReading {
                    quantiles_ms: None,
                    ..self.snap.stats.election_time.reading()
                }),
            ),
        ];
        metrics.extend(self.quorum_metrics());
        metrics
    }

    /// What only quorum members report (`quorum_size`), and what only a leader reports: its
    /// learners, pending syncs and proposal sizes (ZooKeeper's `LeaderZooKeeperServer`).
    fn quorum_metrics(&self) -> Vec<Metric> {
        if self.replica.standalone() {
            return Vec::new();
        }
        let voters = self.replica.membership().voters().count();
        let mut out = vec![Metric::new(
            "quorum_size",
            "voting members",
            Value::Gauge(voters as i64),
        )];
        let (Some(view), Some(since)) = (self.replica.leader_view(), self.snap.leading_for) else {
            return out;
        };
        let counters = self.replica.leader_counters();
        let (last, min, max) = counters.proposal_sizes();
        let gauge = |n: usize| Value::Gauge(n as i64);
        out.extend([
            Metric::new(
                "learners",
                "members replicating from this leader",
                gauge(view.learners),
            ),
            Metric::new(
                "synced_followers",
                "voting members caught up with this leader's term",
                gauge(view.synced_followers),
            ),
            Metric::new(
                "synced_non_voting_followers",
                "non-voting followers (Corral has none)",
                gauge(0),
            ),
            Metric::new(
                "synced_observers",
                "observers caught up with this leader's term",
                gauge(view.synced_observers),
            ),
            Metric::new(
                "pending_syncs",
                "syncs being answered",
                Value::Gauge(counters.pending_syncs()),
            ),
            Metric::new(
                "leader_uptime",
                "milliseconds since this member became leader",
                Value::Counter(since.as_millis() as u64),
            ),
            Metric::new(
                "last_proposal_size",
                "bytes of the last log entry proposed",
                Value::Gauge(last),
            ),
            Metric::new(
                "max_proposal_size",
                "bytes of the largest log entry proposed",
                Value::Gauge(max),
            ),
            Metric::new(
                "min_proposal_size",
                "bytes of the smallest log entry proposed",
                Value::Gauge(min),
            ),
        ]);
        out
    }

    /// Bytes of the snapshot directory and of the log directory.
    pub(crate) fn dir_sizes(&self) -> (i64, i64) {
        let d = &self.cfg.data_dir;
        (dir_size(&d.join("snapshots")), dir_size(&d.join("raft")))
    }
}

/// The bytes of the files under `dir` (0 if it cannot be read).
fn dir_size(dir: &std::path::Path) -> i64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len() as i64,
            Err(_) => 0,
        })
        .sum()
}

fn open_fds() -> i64 {
    std::fs::read_dir("/proc/self/fd").map_or(-1, |d| d.count() as i64)
}

/// The soft limit on open files, from /proc/self/limits.
fn max_fds() -> i64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Metric> {
        let mut lat = Summary::default();
        lat.record(Duration::from_micros(1500));
        lat.record(Duration::from_micros(2500));
        vec![
            Metric::new("znode_count", "znodes", Value::Gauge(5)),
            Metric::new("packets_sent", "packets", Value::Counter(7)),
            Metric::new("version", "version", Value::Text("3.8.4".into())),
            Metric::new("readlatency", "read latency", Value::Summary(lat.reading())),
        ]
    }

    #[test]
    fn mntr_expands_summaries_like_zookeeper() {
        let out = render_mntr(&sample());
        assert!(out.starts_with("zk_znode_count\t5\nzk_packets_sent\t7\nzk_version\t3.8.4\n"));
        assert!(out.contains("zk_avg_readlatency\t2.0\n"), "{out}");
        assert!(out.contains("zk_cnt_readlatency\t2\n"));
        assert!(out.contains("zk_min_readlatency\t1\n"));
        assert!(out.contains("zk_p999_readlatency\t2\n"));
    }

    #[test]
    fn prometheus_has_types_quantiles_sum_and_count() {
        let out = render_prometheus(&sample());
        assert!(out.contains("# TYPE znode_count gauge\nznode_count 5\n"));
        assert!(out.contains("# TYPE packets_sent counter\n"));
        assert!(!out.contains("version"));
        assert!(out.contains("readlatency{quantile=\"0.5\"} 1.5"), "{out}");
        assert!(out.contains("readlatency_count 2\n"));
        assert!(out.contains("readlatency_sum 4\n"));
    }

    #[test]
    fn json_drops_the_prefix() {
        let out = render_json(&sample());
        assert_eq!(out["znode_count"], 5);
        assert_eq!(out["version"], "3.8.4");
        assert_eq!(out["cnt_readlatency"], 2);
    }
}
