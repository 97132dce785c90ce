//! The four-letter words: plain-text status commands sent as the first four bytes of a
//! connection, answered in ZooKeeper's formats and then closed.

use crate::core::Core;
use crate::stats::{java_double, op_abbrev};
use std::fmt::Write;

/// The version Corral reports where ZooKeeper reports its own: the protocol level it matches,
/// then Corral's own version, so tools that parse the number keep working.
pub const VERSION_LINE: &str = concat!(
    "3.8.4-corral-",
    env!("CARGO_PKG_VERSION"),
    ", built on 2026-11-25 00:00 UTC"
);

/// The first four bytes of a connection, if they spell a four-letter word.
pub fn parse_word(first4: &[u8]) -> Option<&'static str> {
    crate::config::ALL_FOUR_LETTER_WORDS
        .iter()
        .copied()
        .find(|w| w.as_bytes() == first4)
        .or(match first4 {
            b"gtmk" => Some("gtmk"),
            b"stmk" => Some("stmk"),
            b"hash" => Some("hash"),
            _ => None,
        })
}

impl Core {
    pub fn four_letter(&mut self, word: &str) -> String {
        if !self.cfg.four_letter_allowed(word) {
            return format!("{word} is not executed because it is not in the whitelist.\n");
        }
        match word {
            "ruok" => "imok".into(),
            "isro" => "rw".into(),
            "srvr" => format!(
                "Zookeeper version: {VERSION_LINE}\n{}",
                self.server_summary()
            ),
            "stat" => {
                let mut out = format!("Zookeeper version: {VERSION_LINE}\nClients:\n");
                for line in self.connection_lines(false) {
                    out.push_str(&line);
                    out.push('\n');
                }
                out.push('\n');
                out.push_str(&self.server_summary());
                out
            }
            "cons" => {
                let mut out = String::new();
                for line in self.connection_lines(true) {
                    out.push_str(&line);
                    out.push('\n');
                }
                out.push('\n');
                out
            }
            "conf" => self.conf(),
            "mntr" => self.mntr(),
            "wchs" => {
                let (total, paths, conns) = self.watches.counts();
                format!("{conns} connections watching {paths} paths\nTotal watches:{total}\n")
            }
            "wchc" => {
                let mut out = String::new();
                for (conn, paths) in self.watches.by_connection() {
                    let sid = self.conns.get(&conn).map_or(0, |c| c.session_id);
                    let _ = writeln!(out, "{sid:#x}");
                    for p in paths {
                        let _ = writeln!(out, "\t{p}");
                    }
                }
                out.push('\n');
                out
            }
            "wchp" => {
                let mut out = String::new();
                for (path, conns) in self.watches.by_path() {
                    let _ = writeln!(out, "{path}");
                    for conn in conns {
                        let sid = self.conns.get(&conn).map_or(0, |c| c.session_id);
                        let _ = writeln!(out, "\t{sid:#x}");
                    }
                }
                out.push('\n');
                out
            }
            "dirs" => "datadir_size: 0\nlogdir_size: 0\n".into(),
            "envi" => self.envi(),
            "crst" => {
                for c in self.conns.values_mut() {
                    c.stats.reset();
                }
                "Connection stats reset.\n".into()
            }
            "srst" => {
                self.stats.reset();
                "Server stats reset.\n".into()
            }
            "dump" => self.dump(),
            _ => format!("{word} is not executed because it is not in the whitelist.\n"),
        }
    }

    /// The part of srvr and stat after the version (and client) lines.
    fn server_summary(&self) -> String {
        let l = &self.stats.latency;
        format!(
            "Latency min/avg/max: {}/{}/{}\nReceived: {}\nSent: {}\nConnections: {}\nOutstanding: 0\nZxid: {:#x}\nMode: {}\nNode count: {}\n",
            l.min(),
            java_double(l.avg()),
            l.max_ms,
            self.stats.packets_received,
            self.stats.packets_sent,
            self.conns.len(),
            self.tree.last_zxid(),
            self.role.zk_mode(),
            // ZooKeeper's count includes its "" alias of the root.
            self.tree.node_count() + 1,
        )
    }

    fn connection_lines(&self, full: bool) -> Vec<String> {
        let mut conns: Vec<_> = self.conns.iter().collect();
        conns.sort_by_key(|(id, _)| **id);
        conns
            .into_iter()
            .map(|(_, c)| {
                let s = &c.stats;
                let mut line = format!(
                    " /{}:{}[1](queued=0,recved={},sent={}",
                    c.peer.ip(),
                    c.peer.port(),
                    s.received,
                    s.sent
                );
                if full {
                    let _ = write!(
                        line,
                        ",sid={:#x},lop={},est={},to={}",
                        c.session_id,
                        op_abbrev(s.last_op),
                        s.established_ms,
                        c.timeout_ms
                    );
                    if s.last_cxid >= 0 {
                        let _ = write!(line, ",lcxid={:#x}", s.last_cxid);
                    }
                    let _ = write!(
                        line,
                        ",lzxid={:#x},lresp={},llat={},minlat={},avglat={},maxlat={}",
                        s.last_zxid,
                        s.last_response_ms,
                        s.last_latency_ms,
                        s.latency.min(),
                        s.latency.avg() as u64,
                        s.latency.max_ms
                    );
                }
                line.push(')');
                line
            })
            .collect()
    }

    fn conf(&self) -> String {
        let c = &self.cfg;
        let data_dir = c.data_dir.join("version-2");
        format!(
            "clientPort={}\nsecureClientPort=-1\ndataDir={}\ndataDirSize=0\ndataLogDir={}\ndataLogSize=0\ntickTime={}\nmaxClientCnxns={}\nminSessionTimeout={}\nmaxSessionTimeout={}\nclientPortListenBacklog=-1\nserverId=0\n",
            c.client_port,
            data_dir.display(),
            data_dir.display(),
            c.tick_time_ms,
            c.max_client_cnxns,
            c.min_session_timeout_ms,
            c.max_session_timeout_ms,
        )
    }

    fn mntr(&self) -> String {
        let l = &self.stats.latency;
        let (watches, _, _) = self.watches.counts();
        let ephemerals: usize = self.tree.ephemeral_counts().map(|(_, n)| n).sum();
        let rows: Vec<(&str, String)> = vec![
            ("zk_version", VERSION_LINE.to_owned()),
            ("zk_server_state", self.role.zk_mode().into()),
            ("zk_ephemerals_count", ephemerals.to_string()),
            ("zk_num_alive_connections", self.conns.len().to_string()),
            ("zk_avg_latency", java_double(l.avg())),
            ("zk_outstanding_requests", "0".into()),
            ("zk_znode_count", (self.tree.node_count() + 1).to_string()),
            ("zk_global_sessions", self.session_count().to_string()),
            ("zk_non_mtls_remote_conn_count", "0".into()),
            ("zk_last_client_response_size", "-1".into()),
            ("zk_max_latency", l.max_ms.to_string()),
            ("zk_min_latency", l.min().to_string()),
            (
                "zk_packets_received",
                self.stats.packets_received.to_string(),
            ),
            ("zk_packets_sent", self.stats.packets_sent.to_string()),
            ("zk_watch_count", watches.to_string()),
            (
                "zk_approximate_data_size",
                self.tree.data_size().to_string(),
            ),
            (
                "zk_uptime",
                self.stats.started.elapsed().as_millis().to_string(),
            ),
        ];
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k}\t{v}");
        }
        out
    }

    fn envi(&self) -> String {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let cwd = std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        format!(
            "Environment:\nzookeeper.version={VERSION_LINE}\nhost.name={}\njava.version=none (corral is native)\njava.vendor=none\njava.home=\njava.class.path=\njava.library.path=\njava.io.tmpdir={}\njava.compiler=<NA>\nos.name={}\nos.arch={}\nos.version=\nuser.name={}\nuser.home={}\nuser.dir={}\n",
            host.trim(),
            std::env::temp_dir().display(),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::env::var("USER").unwrap_or_default(),
            std::env::var("HOME").unwrap_or_default(),
            cwd,
        )
    }

    fn dump(&self) -> String {
        let mut out = String::from("SessionTracker dump:\n");
        let sessions: Vec<_> = self.tree.sessions().collect();
        let _ = writeln!(out, "Global Sessions({}):", sessions.len());
        for (id, timeout) in &sessions {
            let _ = writeln!(out, "{id:#x}\t{timeout}ms");
        }
        let mut eph: Vec<_> = self.tree.ephemeral_counts().collect();
        eph.sort();
        let _ = writeln!(
            out,
            "ephemeral nodes dump:\nSessions with Ephemerals ({}):",
            eph.len()
        );
        for (id, _) in eph {
            let _ = writeln!(out, "{id:#x}:");
            for p in self.tree.ephemerals_of(id) {
                let _ = writeln!(out, "\t{p}");
            }
        }
        out
    }
}
