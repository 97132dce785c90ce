//! Session identities as ZooKeeper makes them.
//!
//! Ids are `(time_ms << 24) >>> 8 | server_id << 56`, then counted up; passwords are 16 bytes of
//! `java.util.Random` seeded with `session_id ^ 0xB3415C00`. A password is therefore a function of
//! the id: any server can check it without storing it, and clients see the same kind of values
//! they see from ZooKeeper.

use corral_proto::codes::ephemeral_owner;

const SUPER_SECRET: i64 = 0xB341_5C00;

/// Hands out session ids for one server.
#[derive(Debug, Clone)]
pub struct SessionIds {
    next: i64,
}

impl SessionIds {
    pub fn new(server_id: u8, now_ms: i64) -> Self {
        let mut next = (((now_ms << 24) as u64) >> 8) as i64 | ((server_id as i64) << 56);
        if next == ephemeral_owner::CONTAINER {
            next += 1;
        }
        SessionIds { next }
    }

    pub fn next_id(&mut self) -> i64 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        id
    }
}

/// The 16-byte password of a session.
pub fn password(session_id: i64) -> [u8; 16] {
    let mut rng = JavaRandom::new(session_id ^ SUPER_SECRET);
    let mut out = [0u8; 16];
    rng.next_bytes(&mut out);
    out
}

/// `java.util.Random`, just enough of it to derive passwords.
struct JavaRandom {
    seed: i64,
}

impl JavaRandom {
    const MULTIPLIER: i64 = 0x5_DEEC_E66D;
    const MASK: i64 = (1 << 48) - 1;

    fn new(seed: i64) -> Self {
        JavaRandom {
            seed: (seed ^ Self::MULTIPLIER) & Self::MASK,
        }
    }

    fn next_int(&mut self) -> i32 {
        self.seed = (self.seed.wrapping_mul(Self::MULTIPLIER).wrapping_add(0xB)) & Self::MASK;
        (self.seed >> 16) as i32
    }

    fn next_bytes(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(4) {
            let mut rnd = self.next_int();
            for b in chunk {
                *b = rnd as u8;
                rnd >>= 8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_random_matches_the_jdk() {
        // new java.util.Random(42).nextInt() == -1170105035 and the next is 234785527.
        let mut r = JavaRandom::new(42);
        assert_eq!(r.next_int(), -1170105035);
        assert_eq!(r.next_int(), 234785527);
    }

    #[test]
    fn ids_count_up_and_carry_the_server_id() {
        let mut ids = SessionIds::new(3, 1_700_000_000_000);
        let a = ids.next_id();
        assert_eq!(ids.next_id(), a + 1);
        assert_eq!(a >> 56, 3);
        assert_ne!(password(a), password(a + 1));
        assert_eq!(password(a), password(a));
    }
}
