//! One small deterministic pseudo-random generator (SplitMix64) for everything that must give
//! the same stream for a seed on every build and machine: the generated district map, the demo
//! and load data, benchmarks and property-style tests.
//!
//! It does not depend on an external crate's stream stability. Values can also be derived from a
//! key (a seed plus a few integers), so that e.g. the wiggle of a shared edge depends only on the
//! edge, never on the order in which edges are visited.

/// SplitMix64 state.
#[derive(Debug, Clone)]
pub struct Rng(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a well-mixed 64-bit function of a 64-bit input.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A stream seeded by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(mix(seed ^ 0x6772_6964_636c_7565))
    }

    /// A stream that depends only on `seed` and `key`.
    pub fn keyed(seed: u64, key: &[i64]) -> Self {
        let mut s = mix(seed.wrapping_add(GOLDEN));
        for &k in key {
            s = mix(s ^ mix((k as u64).wrapping_add(GOLDEN)));
        }
        Rng(s)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        // Multiply-shift; the bias for n far below 2^64 is negligible and, more to the point,
        // deterministic.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// True with probability p.
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
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
    fn the_stream_is_splitmix64() {
        // The reference SplitMix64 from state 0 starts with these two numbers.
        let mut r = Rng(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn keyed_streams_depend_on_the_key_and_its_order() {
        assert_eq!(
            Rng::keyed(1, &[2, 3]).next_u64(),
            Rng::keyed(1, &[2, 3]).next_u64()
        );
        assert_ne!(
            Rng::keyed(1, &[2, 3]).next_u64(),
            Rng::keyed(1, &[3, 2]).next_u64()
        );
    }

    #[test]
    fn draws_stay_in_their_ranges() {
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            assert!((0.0..1.0).contains(&r.f64()));
            assert!(r.below(7) < 7);
            assert!((2.0..3.0).contains(&r.range(2.0, 3.0)));
        }
        let mut v: Vec<u32> = (0..50).collect();
        r.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(v, sorted, "50 elements shuffled into their own order");
    }
}
