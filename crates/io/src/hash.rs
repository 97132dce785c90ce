//! Hash maps whose iteration order a simulation can replay.
//!
//! std's `RandomState` draws its keys from the operating system, so the order a `HashMap` is
//! iterated in differs from run to run; where that order reaches the outside (the order watch
//! events go out to connections, or sessions expire), a simulated run could not be replayed from
//! its seed. These maps hash with std's SipHash, first fed two secret words: random per map in
//! production (drawn through std's `RandomState`, so as hard to collide on purpose as std's own
//! maps), and derived from the seed in a simulation ([`seed_hashes`]).

use std::cell::Cell;
use std::hash::{BuildHasher, DefaultHasher, Hasher};

thread_local! {
    /// The simulation's seed and how many maps this thread has keyed from it.
    static SEEDED: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// Keys this thread's new maps from `seed` (None: from the operating system again).
pub fn seed_hashes(seed: Option<u64>) {
    SEEDED.with(|s| s.set(seed.map(|seed| (seed, 0))));
}

/// A `BuildHasher` with per-map secret keys.
#[derive(Clone, Debug)]
pub struct Keyed {
    k0: u64,
    k1: u64,
}

impl Default for Keyed {
    fn default() -> Self {
        let seeded = SEEDED.with(|s| {
            let (seed, made) = s.get()?;
            s.set(Some((seed, made + 1)));
            Some(Keyed { k0: seed, k1: made })
        });
        seeded.unwrap_or_else(|| {
            let os = std::hash::RandomState::new();
            Keyed {
                k0: os.hash_one(0x6b65_7930u64),
                k1: os.hash_one(0x6b65_7931u64),
            }
        })
    }
}

impl BuildHasher for Keyed {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        let mut h = DefaultHasher::new();
        h.write_u64(self.k0);
        h.write_u64(self.k1);
        h
    }
}

pub type HashMap<K, V> = std::collections::HashMap<K, V, Keyed>;
pub type HashSet<T> = std::collections::HashSet<T, Keyed>;

#[cfg(test)]
mod tests {
    use super::*;

    fn order(seed: Option<u64>) -> Vec<u32> {
        seed_hashes(seed);
        let set: HashSet<u32> = (0..64).collect();
        seed_hashes(None);
        set.into_iter().collect()
    }

    #[test]
    fn a_seed_replays_the_iteration_order_and_the_os_does_not() {
        assert_eq!(order(Some(5)), order(Some(5)));
        assert_ne!(
            order(None),
            order(None),
            "OS-keyed maps differ (1 in 64! to fail)"
        );
    }
}
