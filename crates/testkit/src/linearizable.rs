//! A linearizability checker (Wing & Gong's search, with Lowe's memoisation) for a versioned
//! register: the data and version of one znode, written with setData (unconditionally, or as a
//! compare-and-set on the version) and read after `sync`.
//!
//! A history is a list of operations with the times they were invoked and answered. It is
//! linearizable if each operation can be placed at one instant between its invocation and its
//! answer so that, in that order, a single register explains every answer. An operation whose
//! answer never came (the connection was lost) may take effect at any instant after its
//! invocation, or not at all.

use std::collections::HashSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct State {
    pub value: u64,
    pub version: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// setData with version -1.
    Write { value: u64 },
    /// setData expecting `expected_version`.
    Cas { expected_version: i32, value: u64 },
    /// sync, then getData.
    Read,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The write took effect; the Stat showed this version.
    Written { version: i32 },
    /// BadVersion: the compare-and-set did not match.
    CasFailed,
    /// A read saw this.
    Saw(State),
    /// Refused by a member that could not take writes: certainly no effect.
    Refused,
    /// No answer: it may or may not have taken effect.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub client: usize,
    pub op: Op,
    pub outcome: Outcome,
    /// Nanoseconds on one clock shared by every client.
    pub invoked: u64,
    /// `u64::MAX` when no answer came.
    pub answered: u64,
}

/// The register's next state if `op` with `outcome` is linearized in `state`; `None` if that
/// answer could not have come from this state.
fn step(state: State, op: Op, outcome: Outcome) -> Option<State> {
    let next = |value| State {
        value,
        version: state.version + 1,
    };
    match (op, outcome) {
        (Op::Write { value }, Outcome::Written { version }) => {
            (version == state.version + 1).then(|| next(value))
        }
        (Op::Write { value }, Outcome::Unknown) => Some(next(value)),
        (
            Op::Cas {
                expected_version,
                value,
            },
            Outcome::Written { version },
        ) => {
            (expected_version == state.version && version == state.version + 1).then(|| next(value))
        }
        (
            Op::Cas {
                expected_version, ..
            },
            Outcome::CasFailed,
        ) => (expected_version != state.version).then_some(state),
        (
            Op::Cas {
                expected_version,
                value,
            },
            Outcome::Unknown,
        ) => Some(if expected_version == state.version {
            next(value)
        } else {
            state
        }),
        (Op::Read, Outcome::Saw(seen)) => (seen == state).then_some(state),
        _ => None,
    }
}

/// Checks a history from `initial`; on failure, says which operations could not be placed.
pub fn check(history: &[Event], initial: State) -> Result<(), String> {
    // Refused operations had no effect and constrain nothing; unanswered reads neither.
    let ops: Vec<&Event> = history
        .iter()
        .filter(|e| !matches!(e.outcome, Outcome::Refused))
        .filter(|e| !(e.op == Op::Read && e.outcome == Outcome::Unknown))
        .collect();
    let n = ops.len();
    let required: Vec<bool> = ops.iter().map(|e| e.outcome != Outcome::Unknown).collect();
    let words = n.div_ceil(64);
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(Vec<u64>, State)> = vec![(vec![0; words], initial)];
    let mut deepest = 0usize;
    while let Some((done, state)) = stack.pop() {
        let is_done = |i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        let placed = (0..n).filter(|i| is_done(*i)).count();
        deepest = deepest.max(placed);
        if (0..n).all(|i| is_done(i) || !required[i]) {
            return Ok(());
        }
        // Only an operation invoked before every remaining answer can come next.
        let horizon = (0..n)
            .filter(|i| !is_done(*i))
            .map(|i| ops[i].answered)
            .min()
            .unwrap_or(u64::MAX);
        for i in (0..n).filter(|i| !is_done(*i) && ops[*i].invoked < horizon) {
            if let Some(next) = step(state, ops[i].op, ops[i].outcome) {
                let mut d = done.clone();
                d[i / 64] |= 1 << (i % 64);
                if seen.insert((d.clone(), next)) {
                    stack.push((d, next));
                }
            }
        }
    }
    Err(format!(
        "not linearizable: at most {deepest} of {n} operations can be placed; history: {:?}",
        ops
    ))
}

/// What the clients do to the znode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Unconditional writes, compare-and-sets and reads of arbitrary values.
    Register,
    /// A counter: only increments by compare-and-set (read, then setData(value + 1, version)),
    /// and reads.
    Counter,
}

/// Runs `clients` clients against the znode at `path` (created beforehand with data "0"), each
/// starting on its own member of `addrs` and moving on when a connection fails, until `until`.
/// Returns the history, timed on one clock.
pub fn record(
    addrs: &[std::net::SocketAddr],
    path: &str,
    clients: usize,
    until: std::time::Instant,
    workload: Workload,
) -> Vec<Event> {
    record_paced(
        addrs,
        path,
        clients,
        until,
        workload,
        std::time::Duration::ZERO,
    )
}

/// As [`record`], each client pausing `pace` between operations: a longer run with a history
/// the checker still goes through quickly.
pub fn record_paced(
    addrs: &[std::net::SocketAddr],
    path: &str,
    clients: usize,
    until: std::time::Instant,
    workload: Workload,
    pace: std::time::Duration,
) -> Vec<Event> {
    let epoch = std::time::Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let addrs = addrs.to_vec();
            let path = path.to_owned();
            let run = Run {
                until,
                epoch,
                workload,
                pace,
            };
            std::thread::spawn(move || client_loop(c, &addrs, &path, run))
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect()
}

/// How one client runs.
#[derive(Clone, Copy)]
struct Run {
    until: std::time::Instant,
    epoch: std::time::Instant,
    workload: Workload,
    pace: std::time::Duration,
}

fn client_loop(client: usize, addrs: &[std::net::SocketAddr], path: &str, run: Run) -> Vec<Event> {
    let Run {
        until,
        epoch,
        workload,
        pace,
    } = run;
    use crate::{set_data, RawClient};
    use corral_proto::{ErrorCode, OpCode, PathRequest, PathWatchRequest, Request, Response};
    let now = || epoch.elapsed().as_nanos() as u64;
    let mut history = Vec::new();
    let mut member = client % addrs.len();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ client as u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut counter = 0u64;
    let mut last_version = 0;
    let mut last_value = 0u64;
    let connect = |member: usize| {
        let c = RawClient::resume(
            addrs[member],
            0,
            bytes::Bytes::from_static(&[0; 16]),
            0,
            4000,
        )
        .ok()?;
        c.stream
            .set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .ok()?;
        Some(c)
    };
    let mut conn = connect(member);
    while std::time::Instant::now() < until {
        let Some(c) = conn.as_mut() else {
            member = (member + 1) % addrs.len();
            std::thread::sleep(std::time::Duration::from_millis(20));
            conn = connect(member);
            continue;
        };
        counter += 1;
        let value = ((client as u64) << 32) | counter;
        let op = match (workload, rand() % 3) {
            (Workload::Register, 0) => Op::Write { value },
            (Workload::Register, 1) => Op::Cas {
                expected_version: last_version,
                value,
            },
            (Workload::Counter, 0 | 1) => Op::Cas {
                expected_version: last_version,
                value: last_value + 1,
            },
            _ => Op::Read,
        };
        let invoked = now();
        let outcome = match op {
            Op::Write { value } | Op::Cas { value, .. } => {
                let version = match op {
                    Op::Cas {
                        expected_version, ..
                    } => expected_version,
                    _ => -1,
                };
                c.send(1, &set_data(path, value.to_string().as_bytes(), version));
                match c.read_reply(1, OpCode::SetData) {
                    Ok(r) if r.err == 0 => match r.body {
                        Some(Response::Stat(s)) => {
                            last_version = s.version;
                            last_value = value;
                            Outcome::Written { version: s.version }
                        }
                        other => panic!("setData answered {other:?}"),
                    },
                    Ok(r) if r.code() == ErrorCode::BadVersion => Outcome::CasFailed,
                    Ok(r) if r.code() == ErrorCode::NotReadOnly => Outcome::Refused,
                    Ok(r) => panic!("setData failed: {r:?}"),
                    Err(_) => Outcome::Unknown,
                }
            }
            Op::Read => {
                c.send(1, &Request::Sync(PathRequest { path: path.into() }));
                let synced = matches!(c.read_reply(1, OpCode::Sync), Ok(r) if r.err == 0);
                let read = if synced {
                    c.send(
                        2,
                        &Request::GetData(PathWatchRequest {
                            path: path.into(),
                            watch: false,
                        }),
                    );
                    c.read_reply(2, OpCode::GetData).ok()
                } else {
                    None
                };
                match read.and_then(|r| r.body) {
                    Some(Response::GetData(d)) => {
                        let value = std::str::from_utf8(d.data.as_deref().unwrap_or_default())
                            .unwrap()
                            .parse()
                            .unwrap();
                        last_version = d.stat.version;
                        last_value = value;
                        Outcome::Saw(State {
                            value,
                            version: d.stat.version,
                        })
                    }
                    _ => Outcome::Unknown,
                }
            }
        };
        let answered = if outcome == Outcome::Unknown {
            u64::MAX
        } else {
            now()
        };
        if outcome == Outcome::Unknown {
            conn = None;
        }
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
        history.push(Event {
            client,
            op,
            outcome,
            invoked,
            answered,
        });
    }
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(client: usize, op: Op, outcome: Outcome, invoked: u64, answered: u64) -> Event {
        Event {
            client,
            op,
            outcome,
            invoked,
            answered,
        }
    }

    const S0: State = State {
        value: 0,
        version: 0,
    };

    #[test]
    fn sequential_history_passes() {
        let h = vec![
            ev(
                0,
                Op::Write { value: 5 },
                Outcome::Written { version: 1 },
                0,
                10,
            ),
            ev(
                1,
                Op::Read,
                Outcome::Saw(State {
                    value: 5,
                    version: 1,
                }),
                20,
                30,
            ),
            ev(
                0,
                Op::Cas {
                    expected_version: 1,
                    value: 6,
                },
                Outcome::Written { version: 2 },
                40,
                50,
            ),
            ev(
                1,
                Op::Cas {
                    expected_version: 1,
                    value: 7,
                },
                Outcome::CasFailed,
                60,
                70,
            ),
        ];
        assert!(check(&h, S0).is_ok());
    }

    #[test]
    fn stale_read_after_acknowledged_write_fails() {
        let h = vec![
            ev(
                0,
                Op::Write { value: 5 },
                Outcome::Written { version: 1 },
                0,
                10,
            ),
            ev(1, Op::Read, Outcome::Saw(S0), 20, 30),
        ];
        assert!(check(&h, S0).is_err());
    }

    #[test]
    fn concurrent_operations_may_be_ordered_either_way() {
        let h = vec![
            ev(
                0,
                Op::Write { value: 5 },
                Outcome::Written { version: 2 },
                0,
                100,
            ),
            ev(
                1,
                Op::Write { value: 6 },
                Outcome::Written { version: 1 },
                10,
                90,
            ),
            ev(
                2,
                Op::Read,
                Outcome::Saw(State {
                    value: 5,
                    version: 2,
                }),
                95,
                120,
            ),
        ];
        assert!(check(&h, S0).is_ok());
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_have_happened() {
        let happened = vec![
            ev(0, Op::Write { value: 9 }, Outcome::Unknown, 0, u64::MAX),
            ev(
                1,
                Op::Read,
                Outcome::Saw(State {
                    value: 9,
                    version: 1,
                }),
                50,
                60,
            ),
        ];
        assert!(check(&happened, S0).is_ok());
        let did_not = vec![
            ev(0, Op::Write { value: 9 }, Outcome::Unknown, 0, u64::MAX),
            ev(1, Op::Read, Outcome::Saw(S0), 50, 60),
        ];
        assert!(check(&did_not, S0).is_ok());
        // But once seen, a write cannot be unseen.
        let flicker = vec![
            ev(0, Op::Write { value: 9 }, Outcome::Unknown, 0, u64::MAX),
            ev(
                1,
                Op::Read,
                Outcome::Saw(State {
                    value: 9,
                    version: 1,
                }),
                50,
                60,
            ),
            ev(1, Op::Read, Outcome::Saw(S0), 70, 80),
        ];
        assert!(check(&flicker, S0).is_err());
    }

    #[test]
    fn a_lost_acknowledged_write_fails() {
        let h = vec![
            ev(
                0,
                Op::Write { value: 1 },
                Outcome::Written { version: 1 },
                0,
                10,
            ),
            ev(
                0,
                Op::Write { value: 2 },
                Outcome::Written { version: 2 },
                20,
                30,
            ),
            ev(
                1,
                Op::Read,
                Outcome::Saw(State {
                    value: 1,
                    version: 1,
                }),
                40,
                50,
            ),
        ];
        assert!(check(&h, S0).is_err());
    }
}
