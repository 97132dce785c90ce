//! Deliberately broken variants of the server, for proving that the simulation's checks can
//! fail: a checker that never fails proves nothing.
//!
//! Each variant is one well-known way a coordination service goes wrong, planted at the spot
//! where the real code gets it right. They exist only with the `broken` feature, which only
//! `corral-sim` turns on (and only `scripts/simulate.sh` builds it with). Without the feature
//! [`is`] is a constant `false`, so the hooks vanish from every other build.

use std::fmt;

/// One planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The log tells Raft that appended entries are durable without fsyncing them.
    AckBeforeFsync = 1,
    /// A member that serves goes on serving whatever its lease says.
    SkipServingRule = 2,
    /// After a restart, the first batch of writes a member applies is applied twice (the
    /// classic off-by-one of a replay that starts at the last applied entry, not after it).
    ApplyTwice = 3,
    /// Setting a watch a connection already holds drops it (a toggle where a set was meant).
    DropWatch = 4,
    /// Bugs the simulation found, fixed, and planted back here as regression tests.
    ///
    /// Recovery reads the purge point (an `Option<LogId>`) as a bare `LogId`.
    PurgeMisread = 5,
    /// A member whose log stopped tells its pending writes "not applied" (NotReadOnly) though,
    /// in an ensemble, the leader may still commit them.
    RefusePending = 6,
    /// A leader that restarts takes up its term again (openraft's way when its stored vote is
    /// committed), though a crash may have taken entries from its log that followers hold.
    ResumeLeadership = 7,
    /// The proposer waits for openraft's answer to a log write without a bound, though a
    /// deposed leader may never get one.
    UnboundedLogWrite = 8,
}

impl Broken {
    pub const ALL: [Broken; 8] = [
        Broken::AckBeforeFsync,
        Broken::SkipServingRule,
        Broken::ApplyTwice,
        Broken::DropWatch,
        Broken::PurgeMisread,
        Broken::RefusePending,
        Broken::ResumeLeadership,
        Broken::UnboundedLogWrite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Broken::AckBeforeFsync => "ack-before-fsync",
            Broken::SkipServingRule => "skip-serving-rule",
            Broken::ApplyTwice => "apply-twice",
            Broken::DropWatch => "drop-watch",
            Broken::PurgeMisread => "purge-misread",
            Broken::RefusePending => "refuse-pending",
            Broken::ResumeLeadership => "resume-leadership",
            Broken::UnboundedLogWrite => "unbounded-log-write",
        }
    }

    pub fn parse(name: &str) -> Option<Broken> {
        Broken::ALL.into_iter().find(|b| b.name() == name)
    }
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "broken")]
static ACTIVE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Plants `variant` (or none) in this process. Fails in a build without the `broken` feature.
pub fn plant(variant: Option<Broken>) -> Result<(), &'static str> {
    #[cfg(feature = "broken")]
    {
        let v = variant.map_or(0, |b| b as u8);
        ACTIVE.store(v, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    #[cfg(not(feature = "broken"))]
    {
        match variant {
            None => Ok(()),
            Some(_) => Err("built without the `broken` feature"),
        }
    }
}

/// Whether `variant` is planted.
#[cfg(feature = "broken")]
pub fn is(variant: Broken) -> bool {
    ACTIVE.load(std::sync::atomic::Ordering::Relaxed) == variant as u8
}

/// Whether `variant` is planted: never, in this build.
#[cfg(not(feature = "broken"))]
#[inline(always)]
pub const fn is(_variant: Broken) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for b in Broken::ALL {
            assert_eq!(Broken::parse(b.name()), Some(b));
        }
        assert_eq!(Broken::parse("nothing"), None);
    }
}
