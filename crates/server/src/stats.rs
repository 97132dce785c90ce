//! Counters behind srvr, stat, cons and mntr.

use corral_proto::OpCode;
use std::time::{Duration, Instant};

/// Request latencies in milliseconds, as ZooKeeper reports them.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub min_ms: u64,
    pub max_ms: u64,
    pub total_ms: u64,
    pub count: u64,
}

impl Latency {
    pub fn new() -> Self {
        Latency {
            min_ms: u64::MAX,
            max_ms: 0,
            total_ms: 0,
            count: 0,
        }
    }

    pub fn record(&mut self, d: Duration) {
        let ms = d.as_millis() as u64;
        self.min_ms = self.min_ms.min(ms);
        self.max_ms = self.max_ms.max(ms);
        self.total_ms += ms;
        self.count += 1;
    }

    pub fn min(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min_ms
        }
    }

    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total_ms as f64 / self.count as f64
        }
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone)]
pub struct ServerStats {
    pub packets_received: u64,
    pub packets_sent: u64,
    pub latency: Latency,
    pub started: Instant,
    pub read_latency: crate::metrics::Summary,
    pub update_latency: crate::metrics::Summary,
    /// From losing (or never having) a leader to knowing one.
    pub election_time: crate::metrics::Summary,
    /// Times this member found itself without a leader.
    pub looking_count: u64,
    /// Authentications refused by the core: failed SASL logins, auth packets of an unknown
    /// scheme, and sessions without a required scheme. ZooKeeper's `auth_failed_count` counts
    /// none of these (only failed TLS handshakes), so they are Corral's own `auth_refused_count`.
    pub auth_refused: u64,
    /// Reconfigurations committed through this member, and refused here.
    pub reconfigs: u64,
    pub reconfigs_refused: u64,
}

impl ServerStats {
    pub fn new(started: Instant) -> Self {
        ServerStats {
            packets_received: 0,
            packets_sent: 0,
            latency: Latency::new(),
            started,
            read_latency: Default::default(),
            update_latency: Default::default(),
            election_time: Default::default(),
            looking_count: 0,
            auth_refused: 0,
            reconfigs: 0,
            reconfigs_refused: 0,
        }
    }

    pub fn record_latency(&mut self, d: Duration) {
        self.latency.record(d);
    }

    /// `srst`: the counters start again (the uptime does not).
    pub fn reset(&mut self) {
        *self = ServerStats::new(self.started);
    }
}

#[derive(Debug, Clone)]
pub struct ConnStats {
    pub received: u64,
    pub sent: u64,
    pub established_ms: i64,
    pub last_op: Option<OpCode>,
    pub last_cxid: i32,
    pub last_zxid: i64,
    pub last_response_ms: i64,
    pub last_latency_ms: u64,
    pub latency: Latency,
}

impl ConnStats {
    /// Counters for a connection established at `established_ms` (since the epoch).
    pub fn new(established_ms: i64) -> Self {
        ConnStats {
            received: 0,
            sent: 0,
            established_ms,
            last_op: None,
            last_cxid: -1,
            last_zxid: -1,
            last_response_ms: 0,
            last_latency_ms: 0,
            latency: Latency::new(),
        }
    }

    /// A reply with `zxid` went out at `now_ms` (since the epoch), `d` after its request came.
    pub fn record(&mut self, d: Duration, zxid: i64, now_ms: i64) {
        self.latency.record(d);
        self.last_latency_ms = d.as_millis() as u64;
        self.last_zxid = zxid;
        self.last_response_ms = now_ms;
    }

    /// `crst`: the counters start again (the connection's age does not).
    pub fn reset(&mut self) {
        *self = ConnStats::new(self.established_ms);
    }
}

/// ZooKeeper's four-letter abbreviation of an operation (`lop` in cons).
pub fn op_abbrev(op: Option<OpCode>) -> &'static str {
    use OpCode::*;
    match op {
        Some(Ping) => "PING",
        Some(CreateSession) => "SESS",
        Some(Multi) => "MULT",
        Some(MultiRead) => "MLTR",
        Some(Create | Create2 | CreateContainer | CreateTtl) => "CREA",
        Some(Delete | DeleteContainer) => "DELE",
        Some(SetData) => "SETD",
        Some(Reconfig) => "RECO",
        Some(SetAcl) => "SETA",
        Some(CloseSession) => "CLOS",
        Some(Sync) => "SYNC",
        Some(Check) => "CHEC",
        Some(Exists) => "EXIS",
        Some(GetData) => "GETD",
        Some(SetWatches) => "SETW",
        Some(SetWatches2) => "STW2",
        Some(AddWatch) => "ADDW",
        Some(GetAcl) => "GETA",
        Some(GetChildren | GetChildren2) => "GETC",
        Some(GetAllChildrenNumber) => "GETACN",
        Some(CheckWatches) => "CHKW",
        Some(RemoveWatches) => "REMW",
        Some(WhoAmI) => "HOMI",
        Some(GetEphemerals) => "GETE",
        _ => "NA",
    }
}

/// Formats a double as Java's `Double.toString` does for ordinary values ("0.0", "1.3517").
pub fn java_double(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e7 {
        format!("{v:.1}")
    } else {
        let s = format!("{:.4}", v);
        let s = s.trim_end_matches('0');
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_print_like_java() {
        assert_eq!(java_double(0.0), "0.0");
        assert_eq!(java_double(2.0), "2.0");
        assert_eq!(java_double(1.3517), "1.3517");
        assert_eq!(java_double(0.25), "0.25");
    }
}
