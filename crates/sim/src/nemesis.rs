//! The nemesis: a schedule of faults drawn from the seed before the run starts, so the schedule
//! is part of what a seed replays, and printed with the trace.

use rand::rngs::StdRng;
use rand::Rng;
use std::fmt;

/// The slowest a message gets under a `Slow` fault.
pub const MAX_LATENCY_MS: u64 = 300;

#[derive(Debug, Clone)]
pub enum Fault {
    /// Cut one member off from every other host, both ways.
    Isolate { member: usize },
    /// Cut one member off from the other members, both ways, while its clients still reach it:
    /// the case the serving rule is for.
    CutPeers { member: usize },
    /// Messages from `from` to `to` are dropped; the other way still works.
    OneWay { from: usize, to: usize },
    /// SIGKILL a member. At the crash, each file keeps a prefix of its unsynced tail chosen by
    /// `torn_seed` (a torn write); the member restarts on what survived.
    Crash { member: usize, torn_seed: u64 },
    /// Power loss in the whole ensemble: every member crashes at once, each disk torn as for
    /// `Crash`; all restart when the fault ends.
    PowerLoss { torn_seed: u64 },
    /// SIGSTOP a member, SIGCONT it when the fault ends: nothing of it runs meanwhile, and its
    /// clock jumps on waking (turmoil patched, `vendor/turmoil.patch`).
    Pause { member: usize },
    /// Every message takes up to this long.
    Slow { max_latency_ms: u64 },
    /// The member's next fsyncs fail; the member is then restarted, as an operator would.
    FailSyncs { member: usize, count: u32 },
    /// The member's disk is full; freed when the fault ends and the member restarted.
    DiskFull { member: usize },
    /// A client stops talking (no requests, no pings) for longer than its session timeout, so
    /// its session expires.
    Freeze { client: usize },
    /// Cut a client off from one member.
    CutClient { client: usize, member: usize },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Isolate { member } => write!(f, "isolate m{}", member + 1),
            Fault::CutPeers { member } => write!(f, "cut m{} from its peers", member + 1),
            Fault::OneWay { from, to } => write!(f, "drop m{} -> m{}", from + 1, to + 1),
            Fault::Crash { member, torn_seed } => {
                write!(f, "crash m{} (torn {torn_seed:x})", member + 1)
            }
            Fault::PowerLoss { torn_seed } => write!(f, "power loss (torn {torn_seed:x})"),
            Fault::Pause { member } => write!(f, "pause m{}", member + 1),
            Fault::Slow { max_latency_ms } => write!(f, "latency up to {max_latency_ms} ms"),
            Fault::FailSyncs { member, count } => {
                write!(f, "fail {count} fsyncs on m{}", member + 1)
            }
            Fault::DiskFull { member } => write!(f, "disk full on m{}", member + 1),
            Fault::Freeze { client } => write!(f, "freeze c{client}"),
            Fault::CutClient { client, member } => write!(f, "cut c{client} from m{}", member + 1),
        }
    }
}

/// A fault and when it starts and ends, in simulated milliseconds.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub start_ms: u64,
    pub end_ms: u64,
    pub fault: Fault,
}

/// Draws a schedule of faults over `0..until_ms` for `clients` clients and `members` members: one every 0.3–1.5 s,
/// each lasting 0.2–2.5 s (a cut from peers 1.5 s more), all over by `until_ms`.
pub fn schedule(rng: &mut StdRng, until_ms: u64, clients: usize, members: usize) -> Vec<Scheduled> {
    let mut out = Vec::new();
    let mut at = rng.gen_range(300..1500);
    while at < until_ms {
        let mut lasts = rng.gen_range(200..2500);
        let member = rng.gen_range(0..members);
        let fault = match rng.gen_range(0..100) {
            0..=11 => Fault::Isolate { member },
            12..=19 => {
                // Long enough, often, for the member's lease to run out while its clients
                // still reach it.
                lasts += 1500;
                Fault::CutPeers { member }
            }
            20..=29 => Fault::OneWay {
                from: member,
                to: (member + rng.gen_range(1..members)) % members,
            },
            30..=44 => Fault::Crash {
                member,
                torn_seed: rng.gen(),
            },
            45..=49 => Fault::PowerLoss {
                torn_seed: rng.gen(),
            },
            55..=59 => Fault::Pause { member },
            50..=54 => Fault::Slow {
                max_latency_ms: rng.gen_range(20..MAX_LATENCY_MS),
            },
            60..=66 => Fault::FailSyncs {
                member,
                count: rng.gen_range(1..4),
            },
            67..=72 => Fault::DiskFull { member },
            73..=84 => Fault::Freeze {
                client: rng.gen_range(0..clients),
            },
            _ => Fault::CutClient {
                client: rng.gen_range(0..clients),
                member,
            },
        };
        out.push(Scheduled {
            start_ms: at,
            end_ms: (at + lasts).min(until_ms),
            fault,
        });
        at += rng.gen_range(300..1500);
    }
    out
}
