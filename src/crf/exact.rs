//! The exact O(N²) Gaussian filter: the oracle the lattice is tested against.
//!
//! It computes what the lattice approximates, `Σ_j exp(-|f_i - f_j|² / 2) v_j`, term by term. Only
//! usable on tiny volumes, so it refuses more than [`MAX_POINTS`] points instead of running for
//! minutes.

use super::Filter;
use crate::error::{Error, Result};

/// Most points the exact filter accepts (≈ 10⁸ kernel evaluations per filter call).
pub const MAX_POINTS: usize = 10_000;

/// Exact dense Gaussian filter over `n` feature points of dimension `d`.
#[derive(Debug, Clone)]
pub struct ExactGaussian {
    d: usize,
    features: Vec<f32>,
    inv_norm: Vec<f32>,
}

impl ExactGaussian {
    /// `features`: point-major, each coordinate already divided by its kernel std.
    pub fn new(features: &[f32], d: usize) -> Result<Self> {
        if d == 0 || !features.len().is_multiple_of(d) {
            return Err(Error::InvalidInput(format!(
                "{} feature values is not a whole number of {d}-dimensional points",
                features.len()
            )));
        }
        let n = features.len() / d;
        if n > MAX_POINTS {
            return Err(Error::TooLarge(format!(
                "the exact dense filter is O(N²) and accepts at most {MAX_POINTS} points, not {n}"
            )));
        }
        let mut g = ExactGaussian {
            d,
            features: features.to_vec(),
            inv_norm: Vec::new(),
        };
        let mut norm = vec![0f32; n];
        g.filter(&vec![1f32; n], &mut norm)?;
        g.inv_norm = norm.iter().map(|&v| 1.0 / v).collect();
        Ok(g)
    }

    /// `out_i = Σ_j exp(-|f_i - f_j|² / 2) values_j`, self term included.
    pub fn filter(&self, values: &[f32], out: &mut [f32]) -> Result<()> {
        let n = self.features.len() / self.d;
        if values.len() != n || out.len() != n {
            return Err(Error::InvalidInput(format!(
                "exact filter built for {n} points was given {} values and {} outputs",
                values.len(),
                out.len()
            )));
        }
        for (fi, o) in self.features.chunks_exact(self.d).zip(out.iter_mut()) {
            let mut acc = 0f64;
            for (fj, &v) in self.features.chunks_exact(self.d).zip(values) {
                let r2: f32 = fi.iter().zip(fj).map(|(a, b)| (a - b) * (a - b)).sum();
                acc += f64::from((-0.5 * r2).exp() * v);
            }
            *o = acc as f32;
        }
        Ok(())
    }
}

impl Filter for ExactGaussian {
    fn len(&self) -> usize {
        self.features.len() / self.d
    }

    fn filter_sum(&self, values: &[f32], out: &mut [f32]) -> Result<()> {
        self.filter(values, out)
    }

    fn inverse_norm(&self) -> &[f32] {
        &self.inv_norm
    }
}
