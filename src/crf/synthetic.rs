//! A synthetic head with a haematoma and a noisy probability map, for benchmarking the CRF
//! natively (`benches/crf.rs`) and in wasm (the same function, called from the web layer), so
//! both measure exactly the same work.

use crate::error::{Result, try_filled};
use crate::volume::Stack;
use ndarray::Array3;

/// A CT stack, a network-like probability volume and the brain mask.
pub struct SyntheticCase {
    /// The CT in HU.
    pub stack: Stack,
    /// P(haemorrhage): high in the clot, low elsewhere, with noise and scattered false positives.
    pub prob: Array3<f32>,
    /// The brain (the ellipsoid inside the skull).
    pub brain: Array3<u8>,
    /// The true haematoma.
    pub truth: Array3<u8>,
}

/// Deterministic xorshift noise: enough for a benchmark volume, no dependency.
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Approximately normal (sum of four uniforms, unit variance).
    fn normal(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum();
        (s - 2.0) * 3f32.sqrt()
    }
}

/// The benchmark case: a 512×512×32 scan at 0.45×0.45×5 mm (seed 7). Native (`cargo bench
/// --bench crf`) and wasm measurements call this, then [`crate::crf::refine`] with the brain as
/// region and default settings, so their figures compare.
pub fn benchmark_case() -> Result<SyntheticCase> {
    synthetic_head((32, 512, 512), [5.0, 0.45, 0.45], 7)
}

/// A head of `dims` (z, y, x) voxels of `spacing` mm: an ellipsoidal brain of semi-axes
/// 52 × 85 × 70 mm (≈ 1300 mL) at 30 HU inside a 6 mm skull, air outside, an ellipsoidal
/// haematoma (≈ 30 mL, 65 HU) in one hemisphere, CT noise of 5 HU; the probability is 0.9 in the
/// clot and 0.05 in the brain (± 0.05 noise), with 1 voxel in 500 a spurious 0.8.
pub fn synthetic_head(
    dims: (usize, usize, usize),
    spacing: [f32; 3],
    seed: u64,
) -> Result<SyntheticCase> {
    let n = dims.0 * dims.1 * dims.2;
    let mut hu = try_filled(n, -1000f32, "the synthetic CT")?;
    let mut prob = try_filled(n, 0f32, "the synthetic probability")?;
    let mut brain = try_filled(n, 0u8, "the synthetic brain mask")?;
    let mut truth = try_filled(n, 0u8, "the synthetic truth")?;
    let mut noise = Noise(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let centre = [dims.0, dims.1, dims.2].map(|d| d as f32 / 2.0);
    let axes = [52.0f32, 85.0, 70.0];
    let clot_centre = [0.0f32, 10.0, 30.0];
    let clot_axes = [18.0f32, 25.0, 16.0];
    let mut i = 0;
    for z in 0..dims.0 {
        for y in 0..dims.1 {
            for x in 0..dims.2 {
                let mm = [z, y, x].map(|v| v as f32);
                let p = [0, 1, 2].map(|a| (mm[a] - centre[a] + 0.5) * spacing[a]);
                let r2 = |c: [f32; 3], ax: [f32; 3]| {
                    (0..3).map(|a| ((p[a] - c[a]) / ax[a]).powi(2)).sum::<f32>()
                };
                let head = r2([0.0; 3], axes.map(|a| a + 6.0));
                let inner = r2([0.0; 3], axes);
                let clot = r2(clot_centre, clot_axes);
                let e = noise.normal();
                if inner <= 1.0 {
                    brain[i] = 1;
                    let bleed = clot <= 1.0;
                    truth[i] = u8::from(bleed);
                    hu[i] = if bleed { 65.0 } else { 30.0 } + 5.0 * e;
                    let base = if bleed { 0.9 } else { 0.05 };
                    let spurious = noise.uniform() < 0.002;
                    let q = if spurious {
                        0.8
                    } else {
                        base + 0.05 * (noise.uniform() - 0.5) * 2.0
                    };
                    prob[i] = q.clamp(0.0, 1.0);
                } else if head <= 1.0 {
                    hu[i] = 1200.0 + 50.0 * e;
                } else {
                    hu[i] = -1000.0 + 5.0 * e;
                }
                i += 1;
            }
        }
    }
    let shape = |v| Array3::from_shape_vec(dims, v);
    let err = |e: ndarray::ShapeError| crate::Error::InvalidInput(format!("synthetic head: {e}"));
    let voxel_ml = spacing.iter().map(|&s| f64::from(s)).product::<f64>() / 1000.0;
    Ok(SyntheticCase {
        stack: Stack {
            hu: shape(hu).map_err(err)?,
            spacing,
            voxel_ml,
        },
        prob: shape(prob).map_err(err)?,
        brain: Array3::from_shape_vec(dims, brain).map_err(err)?,
        truth: Array3::from_shape_vec(dims, truth).map_err(err)?,
    })
}
