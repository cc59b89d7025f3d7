//! The generators' pseudo-random numbers: `SplitMix64`, written here so that a seed produces the
//! same stream forever, whatever dependency versions are in use. Every event gets its own
//! generator derived from `(seed, event number)`, so an event's fields do not depend on which
//! other events were generated (three Nexmark table sources agree on the shared stream).

/// `SplitMix64` (Steele, Lea, Flood 2014): 64 bits of state, one add and a mix per output.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

/// The golden-ratio increment of `SplitMix64`.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The `SplitMix64` output function: a bijective 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The generator of event `event` in the stream of `seed`.
    pub(crate) fn for_event(seed: u64, event: u64) -> Self {
        Self::new(mix(seed ^ mix(event.wrapping_add(GAMMA))))
    }

    /// A generator for a sub-stream (e.g. one string's characters), advancing this one by one
    /// step, so that skipping the sub-stream does not change later draws.
    pub(crate) fn fork(&mut self) -> Self {
        Self::new(self.next_u64())
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// A number in `0..bound` (0 when `bound` is 0), by multiply-shift (Lemire).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A number in `[0, 1)` with 53 bits of precision.
    pub(crate) fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1_u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_first_outputs_never_change() {
        // Reference values of SplitMix64 seeded with 0 (as in the published reference code).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SplitMix64::new(7);
        let mut seen = [false; 6];
        for _ in 0..1000 {
            let v = rng.below(6);
            assert!(v < 6);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(rng.below(0), 0);
    }
}
