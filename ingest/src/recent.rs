//! The clue ids this instance recently had acknowledged by the broker, with a fingerprint of
//! what was reported under each.
//!
//! Used to answer a client's retry without producing again (the earlier command is already
//! durable), to refuse an idempotency key reused for a *different* clue, and to mark repeats in a
//! batch as `duplicate`. It is a per-instance optimisation, not the idempotency guarantee: a
//! retry through another replica or after a restart is produced again, and the clue processor
//! drops the repeat by its clue id. Bounded: two generations of at most `capacity / 2` ids each;
//! when the young one is full the old one is forgotten.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use gridclue_core::ClueId;

const SHARDS: usize = 16;

struct Generations {
    young: HashMap<ClueId, u64>,
    old: HashMap<ClueId, u64>,
}

pub struct RecentIds {
    per_generation: usize,
    hasher: RandomState,
    shards: Vec<Mutex<Generations>>,
}

/// What the cache knows about a clue id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not acknowledged recently by this instance.
    New,
    /// Acknowledged before, with the same content.
    Same,
    /// Acknowledged before with different content: the key was reused for another clue.
    Different,
}

impl RecentIds {
    /// `capacity == 0` disables the cache (every id is `New`).
    pub fn new(capacity: usize) -> Self {
        Self {
            per_generation: capacity / 2 / SHARDS,
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Generations {
                        young: HashMap::new(),
                        old: HashMap::new(),
                    })
                })
                .collect(),
        }
    }

    fn shard(&self, id: &ClueId) -> &Mutex<Generations> {
        &self.shards[(self.hasher.hash_one(id) as usize) % SHARDS]
    }

    pub fn check(&self, id: &ClueId, fingerprint: u64) -> Seen {
        if self.per_generation == 0 {
            return Seen::New;
        }
        let g = self.shard(id).lock().expect("recent ids lock");
        match g.young.get(id).or_else(|| g.old.get(id)) {
            None => Seen::New,
            Some(f) if *f == fingerprint => Seen::Same,
            Some(_) => Seen::Different,
        }
    }

    /// Records an id the broker acknowledged.
    pub fn insert(&self, id: ClueId, fingerprint: u64) {
        if self.per_generation == 0 {
            return;
        }
        let mut g = self.shard(&id).lock().expect("recent ids lock");
        if g.young.len() >= self.per_generation {
            g.old = std::mem::take(&mut g.young);
        }
        g.young.insert(id, fingerprint);
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let g = s.lock().expect("recent ids lock");
                g.young.len() + g.old.len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A stable 64-bit fingerprint of bytes (FNV-1a); only compared within one process.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_compares_content() {
        let r = RecentIds::new(1000);
        let id = ClueId::new_random();
        assert_eq!(r.check(&id, 1), Seen::New);
        r.insert(id, 1);
        assert_eq!(r.check(&id, 1), Seen::Same);
        assert_eq!(r.check(&id, 2), Seen::Different);
    }

    #[test]
    fn stays_bounded() {
        let r = RecentIds::new(320);
        for _ in 0..10_000 {
            r.insert(ClueId::new_random(), 0);
        }
        assert!(r.len() <= 320, "{}", r.len());
        let off = RecentIds::new(0);
        let id = ClueId::new_random();
        off.insert(id, 0);
        assert_eq!(off.check(&id, 0), Seen::New);
        assert!(off.is_empty());
    }

    #[test]
    fn fingerprints_differ() {
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
        assert_eq!(fingerprint(b"abc"), fingerprint(b"abc"));
    }
}
