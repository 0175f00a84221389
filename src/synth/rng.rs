//! A small deterministic random number generator (SplitMix64).
//!
//! Synthetic data must be byte-identical for the same seed on every platform and every version of
//! every dependency, so the generator is ours (a few lines) rather than a crate whose stream may
//! change. SplitMix64 passes BigCrush, needs no warm-up, and any 64-bit state is a valid seed,
//! which makes per-case and per-component streams ("fork") trivial.

/// SplitMix64 (Steele, Lea & Flood 2014): a 64-bit counter passed through a mixing function.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function: a bijective mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose whole stream is determined by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: mix(seed) }
    }

    /// The generator of case `index` of a run seeded with `seed`: independent of how many cases
    /// the run makes, so case 7 of `--n 10` equals case 7 of `--n 1000`.
    pub fn for_case(seed: u64, index: u64) -> Rng {
        Rng::new(mix(seed ^ mix(index.wrapping_add(GOLDEN))))
    }

    /// A child stream for one component (lesions, noise, ...), so that drawing more numbers in one
    /// component does not shift the numbers of the next.
    pub fn fork(&mut self, tag: u64) -> Rng {
        Rng::new(self.next_u64() ^ mix(tag))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Log-uniform in `[lo, hi)` (both positive): every factor of two equally likely, which is
    /// how lesion volumes spread.
    pub fn log_range(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + (hi.ln() - lo.ln()) * self.unit()).exp()
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform index in `0..n` (`n > 0`; 0 when `n == 0`).
    pub fn index(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        ((self.unit() * n as f64) as usize).min(n - 1)
    }

    /// Either sign with equal probability.
    pub fn sign(&mut self) -> f64 {
        if self.chance(0.5) { 1.0 } else { -1.0 }
    }

    /// Standard normal (Box–Muller; one of the pair is discarded for simplicity).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-300);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// A uniformly random unit vector.
    pub fn direction(&mut self) -> [f64; 3] {
        let z = self.range(-1.0, 1.0);
        let phi = self.range(0.0, std::f64::consts::TAU);
        let r = (1.0 - z * z).max(0.0).sqrt();
        [r * phi.cos(), r * phi.sin(), z]
    }

    /// One of `weights.len()` choices, with probability proportional to its weight.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_cases_are_independent() {
        let a: Vec<u64> = (0..5).map(|_| Rng::new(3).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::for_case(1, 0).next_u64(),
            Rng::for_case(1, 1).next_u64()
        );
        assert_ne!(
            Rng::for_case(1, 0).next_u64(),
            Rng::for_case(2, 0).next_u64()
        );
    }

    #[test]
    fn unit_is_in_range_and_roughly_uniform() {
        let mut r = Rng::new(9);
        let xs: Vec<f64> = (0..20_000).map(|_| r.unit()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        let n: Vec<f64> = (0..20_000).map(|_| r.normal()).collect();
        let var = n.iter().map(|x| x * x).sum::<f64>() / n.len() as f64;
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }
}
