//! The four-letter words: plain-text status commands sent as the first four bytes of a
//! connection, answered in ZooKeeper's formats and then closed.

use crate::core::status::Detail;
use crate::stats::{java_double, op_abbrev};
use crate::status::{Status, StatusSource, NOT_SERVING, VERSION_LINE};
use std::fmt::Write;

/// The line ZooKeeper's srvr and stat add in read-only mode.
const READ_ONLY_LINE: &str = "READ-ONLY mode; serving only read-only clients";

/// The words ZooKeeper answers with [`NOT_SERVING`] while it does not serve (ruok, envi and
/// isro are answered regardless).
const NEED_A_SERVING_MEMBER: &[&str] = &[
    "conf", "cons", "crst", "dirs", "dump", "stat", "srvr", "srst", "wchs", "wchc", "wchp", "mntr",
    "hash",
];

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

/// The lists a word needs in its snapshot.
fn detail_for(word: &str) -> Detail {
    Detail {
        watches: matches!(word, "wchc" | "wchp"),
        sessions: word == "dump",
        digest: false,
    }
}

/// Answers a four-letter word from `asker`.
pub async fn answer(source: &StatusSource, word: &str, asker: std::net::SocketAddr) -> String {
    if !source.cfg.four_letter_allowed(word) {
        return format!("{word} is not executed because it is not in the whitelist.\n");
    }
    let Some(status) = source.status(detail_for(word)).await else {
        return String::new();
    };
    if matches!(word, "crst" | "srst") && status.snap.answers_status() {
        source.reset(word == "crst").await;
    }
    status.four_letter(word, asker)
}

impl Status {
    /// The answer to `word` from this status (taken with [`detail_for`] of the word).
    pub fn four_letter(&self, word: &str, asker: std::net::SocketAddr) -> String {
        // ZooKeeper counts the asking connection as one that sent one packet.
        let asker_line = format!(
            " /{}:{}[0](queued=0,recved=1,sent=0)",
            asker.ip(),
            asker.port()
        );
        if !self.cfg.four_letter_allowed(word) {
            return format!("{word} is not executed because it is not in the whitelist.\n");
        }
        if !self.snap.answers_status() && NEED_A_SERVING_MEMBER.contains(&word) {
            return format!("{NOT_SERVING}\n");
        }
        // ZooKeeper's read-only server says so under its version line.
        let version = if self.snap.serving {
            format!("Zookeeper version: {VERSION_LINE}\n")
        } else {
            format!("Zookeeper version: {VERSION_LINE}\n{READ_ONLY_LINE}\n")
        };
        match word {
            "ruok" => "imok".into(),
            "isro" => match (self.snap.serving, self.snap.read_only) {
                (true, _) => "rw",
                (false, true) => "ro",
                (false, false) => "null",
            }
            .into(),
            "srvr" => format!("{version}{}", self.server_summary()),
            "stat" => {
                let mut out = format!("{version}Clients:\n");
                for line in self.connection_lines(false) {
                    out.push_str(&line);
                    out.push('\n');
                }
                out.push_str(&asker_line);
                out.push_str("\n\n");
                out.push_str(&self.server_summary());
                out
            }
            "cons" => {
                let mut out = String::new();
                for line in self.connection_lines(true) {
                    out.push_str(&line);
                    out.push('\n');
                }
                out.push_str(&asker_line);
                out.push_str("\n\n");
                out
            }
            "conf" => self.conf(),
            "mntr" => self.mntr(),
            "wchs" => {
                let (total, paths, conns) = self.snap.watch_counts;
                format!("{conns} connections watching {paths} paths\nTotal watches:{total}\n")
            }
            "wchc" => {
                let mut out = String::new();
                for (sid, paths) in &self.snap.watches_by_session {
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
                for (path, sids) in &self.snap.watches_by_path {
                    let _ = writeln!(out, "{path}");
                    for sid in sids {
                        let _ = writeln!(out, "\t{sid:#x}");
                    }
                }
                out.push('\n');
                out
            }
            "dirs" => {
                let (data, log) = self.dir_sizes();
                format!("datadir_size: {data}\nlogdir_size: {log}\n")
            }
            "envi" => self.envi(),
            // (The reset itself was asked of the core before this snapshot was taken.)
            "crst" => "Connection stats reset.\n".into(),
            "srst" => "Server stats reset.\n".into(),
            "dump" => self.dump(),
            _ => format!("{word} is not executed because it is not in the whitelist.\n"),
        }
    }

    /// The part of srvr and stat after the version (and client) lines.
    fn server_summary(&self) -> String {
        let l = &self.snap.stats.latency;
        format!(
            "Latency min/avg/max: {}/{}/{}\nReceived: {}\nSent: {}\nConnections: {}\nOutstanding: 0\nZxid: {:#x}\nMode: {}\nNode count: {}\n",
            l.min(),
            java_double(l.avg()),
            l.max_ms,
            self.snap.stats.packets_received,
            self.snap.stats.packets_sent,
            // ZooKeeper counts the connection asking.
            self.snap.conns.len() + 1,
            self.snap.last_zxid,
            self.snap.mode,
            // ZooKeeper's count includes its "" alias of the root.
            self.snap.node_count + 1,
        )
    }

    fn connection_lines(&self, full: bool) -> Vec<String> {
        self.snap
            .conns
            .iter()
            .map(|c| {
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
        let (data_size, log_size) = self.dir_sizes();
        format!(
            "clientPort={}\nsecureClientPort=-1\ndataDir={}\ndataDirSize={data_size}\ndataLogDir={}\ndataLogSize={log_size}\ntickTime={}\nmaxClientCnxns={}\nminSessionTimeout={}\nmaxSessionTimeout={}\nclientPortListenBacklog=-1\nserverId={}\n",
            c.client_port,
            data_dir.display(),
            data_dir.display(),
            c.tick_time_ms,
            c.max_client_cnxns,
            c.min_session_timeout_ms,
            c.max_session_timeout_ms,
            if c.servers.is_empty() { 0 } else { c.my_id },
        ) + &self.quorum_conf()
    }

    /// The lines a quorum member's `conf` adds: its ports and the membership.
    fn quorum_conf(&self) -> String {
        let c = &self.cfg;
        let Some(me) = c.servers.get(&c.my_id) else {
            return String::new();
        };
        let membership = self.replica.membership();
        let observer = membership
            .members
            .get(&c.my_id)
            .map_or(me.observer, |m| m.observer);
        let mut out = format!(
            "initLimit={}\nsyncLimit={}\nelectionAlg=3\nelectionPort={}\nquorumPort={}\npeerType={}\nmembership: \n",
            c.init_limit,
            c.sync_limit,
            me.election_port,
            me.peer_port,
            u8::from(observer),
        );
        // The membership as the replicated log has it, with the version `/zookeeper/config`
        // shows (ZooKeeper prints its quorum verifier here).
        out.push_str(&crate::ensemble::config_text(&membership.members));
        let version = corral_tree::apply::config_version(&self.snap.config);
        let _ = writeln!(out, "version={version:x}");
        out
    }

    fn mntr(&self) -> String {
        crate::metrics::render_mntr(&self.metrics())
    }

    fn envi(&self) -> String {
        let mut out = String::from("Environment:\n");
        for (k, v) in self.environment() {
            let _ = writeln!(out, "{k}={v}");
        }
        out
    }

    fn dump(&self) -> String {
        let mut out = String::from("SessionTracker dump:\n");
        if !self.replica.standalone() {
            // A quorum member's session tracker prints the sessions it knows with their timeouts.
            let sessions = &self.snap.replicated_sessions;
            let _ = writeln!(out, "Global Sessions({}):", sessions.len());
            for (id, timeout) in sessions {
                let _ = writeln!(out, "{id:#x}\t{timeout}ms");
            }
        } else {
            self.dump_session_sets(&mut out);
        }
        let eph = &self.snap.ephemerals;
        let _ = writeln!(
            out,
            "ephemeral nodes dump:\nSessions with Ephemerals ({}):",
            eph.len()
        );
        for (id, paths) in eph {
            let _ = writeln!(out, "{id:#x}:");
            for p in paths {
                let _ = writeln!(out, "\t{p}");
            }
        }
        self.dump_connections(&mut out);
        out
    }

    /// A standalone ZooKeeper's session dump: sessions grouped by the tick they expire in.
    fn dump_session_sets(&self, out: &mut String) {
        let tick = i64::from(self.cfg.tick_time_ms.max(1));
        let mut sets: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
        for s in &self.snap.sessions {
            sets.entry((s.expires_ms / tick + 1) * tick)
                .or_default()
                .push(s.id);
        }
        let total: usize = sets.values().map(Vec::len).sum();
        let _ = writeln!(out, "Session Sets ({})/({total}):", sets.len());
        for (at, ids) in sets {
            let _ = writeln!(
                out,
                "{} expire at {}:",
                ids.len(),
                corral_proto::time::java_date(at)
            );
            for id in ids {
                let _ = writeln!(out, "\t{id:#x}");
            }
        }
    }

    fn dump_connections(&self, out: &mut String) {
        let tick = i64::from(self.cfg.tick_time_ms.max(1));
        let at = (self.snap.taken_ms / tick + 1) * tick;
        let _ = writeln!(out, "Connections dump:");
        let conns = &self.snap.conns;
        if conns.is_empty() {
            let _ = writeln!(out, "Connections Sets (0)/(0):");
            return;
        }
        let _ = writeln!(out, "Connections Sets (1)/({}):", conns.len());
        let _ = writeln!(
            out,
            "{} expire at {}:",
            conns.len(),
            corral_proto::time::java_date(at)
        );
        for c in conns {
            let _ = writeln!(
                out,
                "\tip: /{}:{} sessionId: {:#x}",
                c.peer.ip(),
                c.peer.port(),
                c.session_id
            );
        }
    }
}
