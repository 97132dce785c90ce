//! Limits on what one client, and all clients together, may make the server hold.
//!
//! A connection's reader stops reading its socket (and TCP pushes back on the client) while
//! any of these is over its limit:
//! - requests read and not yet answered, on this connection (`corral.maxOutstandingRequests`);
//! - requests read from any connection and not yet taken up by the core (ZooKeeper's
//!   `globalOutstandingLimit`): the core's backlog. Requests the core holds back for one
//!   connection (below) do not count there, so a client that does not read cannot use up what
//!   the others need;
//! - the bytes of this connection's unanswered requests (`corral.maxOutstandingRequestBytes`);
//! - the bytes of replies and notifications queued for its socket and not yet written
//!   (`corral.maxQueuedReplyBytes`).
//!
//! The core also holds back a connection's reads while its queued replies are over the budget,
//! so requests already read cannot pile up large replies either; the writer wakes it when the
//! queue has drained to half. Notifications, which a client does not ask for, are the one thing
//! that can still grow the queue: a connection over four budgets is closed at once. And a
//! connection with replies queued whose socket has taken no byte for `corral.slowClientGraceMs`
//! (its client reads nothing, the kernel's buffers are full) is closed too, with a log line that
//! names the client.
//!
//! The counters are atomics shared by the connection's reader, its writer and the core. Each
//! connection's replies go out in request order, so the core releases a request's bytes from the
//! front of a per-connection list when it answers it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The limits, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests read and not answered, per connection.
    pub max_outstanding: usize,
    /// Bytes of those requests, per connection.
    pub max_request_bytes: usize,
    /// Bytes of replies and notifications queued for one connection's socket.
    pub max_reply_bytes: usize,
    /// Requests read from any connection and not yet taken up by the core.
    pub global_outstanding: usize,
    /// How long a connection with replies queued may take no byte before it is closed.
    pub stall_grace: Duration,
    /// Bytes of this member's proposals on their way to the log and not yet applied. Over it,
    /// clients' writes wait in their connections' queues (and those connections' readers stop
    /// at their own limits), so the proposal queue stays bounded.
    pub max_pending_proposal_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_outstanding: 1000,
            max_request_bytes: 16 << 20,
            max_reply_bytes: 16 << 20,
            global_outstanding: 1000,
            stall_grace: Duration::from_secs(10),
            max_pending_proposal_bytes: 64 << 20,
        }
    }
}

/// A queue this many times over its budget is closed without waiting for the grace time.
const HARD_CAP_FACTOR: usize = 4;
/// How often a throttled reader looks again (the global limit has no per-reader wake-up).
const RECHECK: Duration = Duration::from_millis(10);

/// What all connections hold together, and how often the limits were reached.
#[derive(Debug, Default)]
pub struct Global {
    /// Requests read and not yet taken up by the core.
    inbox: AtomicUsize,
    reply_bytes: AtomicUsize,
    /// Times a connection's reader paused for one of its own limits.
    pub throttled: AtomicU64,
    /// Times a reader paused because all connections together were at the global limit.
    pub globally_throttled: AtomicU64,
    /// Connections closed for letting their replies pile up.
    pub closed_slow: AtomicU64,
    /// Times writes were held back because this member's proposals in flight were at
    /// `corral.maxPendingProposalBytes`.
    pub proposals_throttled: AtomicU64,
    /// TLS handshakes under way, and those that failed (a bad or missing certificate, a
    /// plaintext client on a TLS port, a timeout) or were refused at the limit.
    pub tls_outstanding: AtomicUsize,
    pub tls_failed: AtomicU64,
    pub tls_exceeded: AtomicU64,
    /// Console logins open, refused for a wrong user or password, and refused because
    /// `console::logins::MAX_LOGINS` were open.
    pub console_logins: AtomicUsize,
    pub console_login_failed: AtomicU64,
    pub console_logins_exceeded: AtomicU64,
    /// Live console views dropped for falling `console::client::EVENT_QUEUE` events behind.
    pub console_events_lagged: AtomicU64,
    /// Times a member link waited because `gate::CHECKS_IN_FLIGHT` links were being checked
    /// (their TLS handshakes or SASL logins) already.
    pub member_link_checks_exceeded: AtomicU64,
}

impl Global {
    /// Requests read and not yet taken up by the core.
    pub fn inbox(&self) -> usize {
        self.inbox.load(Relaxed)
    }

    /// The core took up a request (whether or not its connection still exists).
    pub fn taken(&self) {
        saturating_sub(&self.inbox, 1);
    }

    pub fn reply_bytes(&self) -> usize {
        self.reply_bytes.load(Relaxed)
    }
}

/// One connection's share, used by its reader, its writer and the core.
#[derive(Debug)]
pub struct ConnBudget {
    limits: Limits,
    global: Arc<Global>,
    outstanding: AtomicUsize,
    request_bytes: AtomicUsize,
    reply_bytes: AtomicUsize,
    /// The core holds this connection's reads until its replies drain.
    core_paused: AtomicBool,
    freed: Notify,
    /// Bytes its socket has taken so far: progress, for telling a stalled client from a slow one.
    sent_bytes: AtomicU64,
    /// The core closed the connection for not reading: its reader and writer stop at once,
    /// even in the middle of a write the client would never take.
    aborted: AtomicBool,
    abort: Notify,
}

/// Why a reader is waiting, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Outstanding,
    RequestBytes,
    ReplyBytes,
    Global,
}

impl ConnBudget {
    pub fn new(limits: Limits, global: Arc<Global>) -> Self {
        ConnBudget {
            limits,
            global,
            outstanding: AtomicUsize::new(0),
            request_bytes: AtomicUsize::new(0),
            reply_bytes: AtomicUsize::new(0),
            core_paused: AtomicBool::new(false),
            freed: Notify::new(),
            aborted: AtomicBool::new(false),
            abort: Notify::new(),
            sent_bytes: AtomicU64::new(0),
        }
    }

    /// The socket took `bytes` (part of a write, as the kernel accepted it).
    pub fn sent(&self, bytes: usize) {
        self.sent_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Bytes the socket has taken so far.
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes.load(Relaxed)
    }

    /// Stops the connection's reader and writer where they are.
    pub fn abort(&self) {
        self.aborted.store(true, Relaxed);
        self.abort.notify_waiters();
    }

    /// Resolves once the connection has been aborted.
    pub async fn aborted(&self) {
        loop {
            let notified = self.abort.notified();
            if self.aborted.load(Relaxed) {
                return;
            }
            notified.await;
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The limit this connection is over now, if any: the reader must not read.
    pub fn over(&self) -> Option<Over> {
        let l = &self.limits;
        if self.outstanding.load(Relaxed) >= l.max_outstanding {
            Some(Over::Outstanding)
        } else if self.request_bytes.load(Relaxed) >= l.max_request_bytes {
            Some(Over::RequestBytes)
        } else if self.reply_bytes.load(Relaxed) >= l.max_reply_bytes {
            Some(Over::ReplyBytes)
        } else if self.global.inbox.load(Relaxed) >= l.global_outstanding {
            Some(Over::Global)
        } else {
            None
        }
    }

    /// Waits until the connection may read again; returns at once when it may.
    pub async fn room_to_read(&self) -> Option<Over> {
        let first = self.over()?;
        let counter = match first {
            Over::Global => &self.global.globally_throttled,
            _ => &self.global.throttled,
        };
        counter.fetch_add(1, Relaxed);
        while self.over().is_some() {
            let freed = self.freed.notified();
            if self.over().is_none() {
                break;
            }
            let _ = tokio::time::timeout(RECHECK, freed).await;
        }
        Some(first)
    }

    /// The reader handed a request of `bytes` to the core.
    pub fn request_read(&self, bytes: usize) {
        self.outstanding.fetch_add(1, Relaxed);
        self.request_bytes.fetch_add(bytes, Relaxed);
        self.global.inbox.fetch_add(1, Relaxed);
    }

    /// The core answered a request of `bytes`. Does nothing for a connection already released.
    pub fn answered(&self, bytes: usize) {
        let taken = self
            .outstanding
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if taken {
            saturating_sub(&self.request_bytes, bytes);
            self.freed.notify_one();
        }
    }

    /// The core queued a reply or notification of `bytes` for the socket. Returns whether the
    /// queue is now past its hard cap (the connection must be closed at once).
    pub fn queued(&self, bytes: usize) -> bool {
        let now = self.reply_bytes.fetch_add(bytes, Relaxed) + bytes;
        self.global.reply_bytes.fetch_add(bytes, Relaxed);
        now > self.limits.max_reply_bytes.saturating_mul(HARD_CAP_FACTOR)
    }

    /// The writer wrote `bytes` of what was queued. Returns whether the core had paused this
    /// connection and may now resume it (the queue drained to half its budget).
    pub fn written(&self, bytes: usize) -> bool {
        let now = saturating_sub(&self.reply_bytes, bytes);
        saturating_sub(&self.global.reply_bytes, bytes);
        self.freed.notify_one();
        now <= self.limits.max_reply_bytes / 2 && self.core_paused.swap(false, Relaxed)
    }

    /// Bytes queued for the socket and not yet written.
    pub fn reply_bytes(&self) -> usize {
        self.reply_bytes.load(Relaxed)
    }

    /// Whether the core should hold this connection's reads back, because its replies are
    /// over the budget. Marks it paused, so the writer wakes the core when they drain.
    pub fn hold_reads(&self) -> bool {
        if self.reply_bytes.load(Relaxed) < self.limits.max_reply_bytes {
            return false;
        }
        self.core_paused.store(true, Relaxed);
        // The writer may have drained the queue between the check and the mark.
        if self.reply_bytes.load(Relaxed) <= self.limits.max_reply_bytes / 2 {
            self.core_paused.store(false, Relaxed);
            return false;
        }
        true
    }

    /// The connection is gone: what it still held no longer counts.
    pub fn release(&self) {
        self.outstanding.store(0, Relaxed);
        self.request_bytes.store(0, Relaxed);
        let queued = self.reply_bytes.swap(0, Relaxed);
        saturating_sub(&self.global.reply_bytes, queued);
    }
}

/// Subtracts, stopping at zero (a counter must never wrap); returns the new value.
fn saturating_sub(counter: &AtomicUsize, n: usize) -> usize {
    let old = counter
        .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)))
        .expect("the closure always returns Some");
    old.saturating_sub(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limits: Limits) -> (ConnBudget, Arc<Global>) {
        let global = Arc::new(Global::default());
        (ConnBudget::new(limits, global.clone()), global)
    }

    /// A connection whose requests the core takes up as soon as they are read.
    struct Reading<'a>(&'a ConnBudget, &'a Global);

    impl std::ops::Deref for Reading<'_> {
        type Target = ConnBudget;
        fn deref(&self) -> &ConnBudget {
            self.0
        }
    }

    impl Reading<'_> {
        fn request_read(&self, bytes: usize) {
            self.0.request_read(bytes);
            self.1.taken();
        }
    }

    fn small() -> Limits {
        Limits {
            max_outstanding: 2,
            max_request_bytes: 100,
            max_reply_bytes: 1000,
            global_outstanding: 3,
            stall_grace: Duration::from_secs(1),
            max_pending_proposal_bytes: 1 << 20,
        }
    }

    #[test]
    fn each_limit_stops_reading_and_answers_make_room() {
        let (b, global) = budget(small());
        // The core takes every request up at once here; only this connection's limits apply.
        let b = Reading(&b, &global);
        assert_eq!(b.over(), None);
        b.request_read(10);
        b.request_read(10);
        assert_eq!(b.over(), Some(Over::Outstanding));
        b.answered(10);
        assert_eq!(b.over(), None);
        b.request_read(100);
        assert_eq!(b.over(), Some(Over::Outstanding));
        b.answered(10);
        assert_eq!(
            b.over(),
            Some(Over::RequestBytes),
            "100 bytes still unanswered"
        );
        b.answered(100);
        assert!(!b.queued(1000));
        assert_eq!(b.over(), Some(Over::ReplyBytes));
        assert!(!b.written(1000));
        assert_eq!(b.over(), None);
    }

    #[test]
    fn the_global_limit_counts_what_the_core_has_not_taken_up() {
        let global = Arc::new(Global::default());
        let a = ConnBudget::new(small(), global.clone());
        let b = ConnBudget::new(small(), global.clone());
        a.request_read(1);
        a.request_read(1);
        b.request_read(1);
        assert_eq!(b.over(), Some(Over::Global));
        // Taken up (and held for `a`, say): no longer the others' concern.
        global.taken();
        global.taken();
        assert_eq!(global.inbox(), 1);
        assert_eq!(b.over(), None);
        assert_eq!(
            a.over(),
            Some(Over::Outstanding),
            "a's own limit still holds"
        );
        a.release();
        assert_eq!(a.over(), None);
        // An answer after the release (the core had not seen the close yet) changes nothing.
        a.answered(1);
        assert_eq!(a.over(), None);
    }

    #[test]
    fn the_core_is_resumed_once_the_queue_drains_to_half() {
        let (b, _) = budget(small());
        assert!(!b.hold_reads());
        b.queued(1200);
        assert!(b.hold_reads());
        assert!(!b.written(300), "900 bytes still queued");
        assert!(b.written(400), "500: half the budget");
        assert!(!b.written(100), "resumed once");
    }

    #[test]
    fn a_queue_four_budgets_deep_must_close() {
        let (b, global) = budget(small());
        assert!(!b.queued(4000));
        assert!(b.queued(1));
        assert_eq!(global.reply_bytes(), 4001);
        b.release();
        assert_eq!(global.reply_bytes(), 0);
    }

    #[tokio::test]
    async fn a_throttled_reader_waits_until_an_answer() {
        let global = Arc::new(Global::default());
        let b = Arc::new(ConnBudget::new(small(), global.clone()));
        b.request_read(1);
        b.request_read(1);
        let answer = {
            let b = b.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                b.answered(1);
            })
        };
        assert_eq!(b.room_to_read().await, Some(Over::Outstanding));
        assert_eq!(b.over(), None);
        assert_eq!(global.throttled.load(Relaxed), 1);
        answer.await.unwrap();
    }
}
