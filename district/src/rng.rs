//! A tiny deterministic pseudo-random generator (SplitMix64).
//!
//! The generator must give byte-identical maps for a seed on every build, so it does not depend
//! on an external crate's stream stability. Values are also derivable from a key (seed plus a
//! few integers), so that e.g. the wiggle of a shared edge depends only on the edge, never on
//! the order in which edges are visited.

/// SplitMix64 state.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A stream seeded by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Rng(mix(seed ^ 0x6772_6964_636c_7565))
    }

    /// A stream that depends only on `seed` and `key`.
    pub(crate) fn keyed(seed: u64, key: &[i64]) -> Self {
        let mut s = mix(seed.wrapping_add(GOLDEN));
        for &k in key {
            s = mix(s ^ mix((k as u64).wrapping_add(GOLDEN)));
        }
        Rng(s)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub(crate) fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Uniform in 0..n (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        // Multiply-shift; the bias for n far below 2^64 is negligible and, more to the point,
        // deterministic.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// True with probability p.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Fisher–Yates shuffle.
    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_keyed() {
        let a: Vec<u64> = (0..5).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut r = Rng::new(7);
        let x = r.next_u64();
        assert_ne!(x, r.next_u64());
        assert_eq!(
            Rng::keyed(1, &[2, 3]).next_u64(),
            Rng::keyed(1, &[2, 3]).next_u64()
        );
        assert_ne!(
            Rng::keyed(1, &[2, 3]).next_u64(),
            Rng::keyed(1, &[3, 2]).next_u64()
        );
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            let f = r.f64();
            assert!((0.0..1.0).contains(&f));
            assert!(r.below(7) < 7);
        }
    }
}
