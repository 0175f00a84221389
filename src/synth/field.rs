//! Small geometry helpers and smooth random fields in millimetre space.
//!
//! Everything the synthesiser draws (lesion surfaces, blood density, elastic warps) is a function
//! of a continuous position in mm, evaluated wherever the scanner simulation samples, so that the
//! same lesion rasterises consistently on any grid, slice thickness or tilt.

use super::rng::Rng;

/// A point or vector `(x, y, z)` in mm (x → patient Right, y → Anterior, z → Superior).
pub type V3 = [f64; 3];

/// `a + b`.
pub fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

/// `a − b`.
pub fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

/// `a · s`.
pub fn scale(a: V3, s: f64) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

/// Dot product.
pub fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Euclidean length.
pub fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}

/// A 3×3 matrix, rows first.
pub type M3 = [[f64; 3]; 3];

/// `m · v`.
pub fn mul(m: &M3, v: V3) -> V3 {
    [dot(m[0], v), dot(m[1], v), dot(m[2], v)]
}

/// `a · b`.
pub fn matmul(a: &M3, b: &M3) -> M3 {
    let mut out = [[0.0; 3]; 3];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    out
}

/// The transpose (the inverse of a rotation).
pub fn transpose(m: &M3) -> M3 {
    let mut out = [[0.0; 3]; 3];
    for (r, row) in m.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            out[c][r] = *v;
        }
    }
    out
}

/// Rotation by `yaw` about z, then `pitch` about x, then `roll` about y (radians).
pub fn rotation(yaw: f64, pitch: f64, roll: f64) -> M3 {
    let (sy, cy) = yaw.sin_cos();
    let (sp, cp) = pitch.sin_cos();
    let (sr, cr) = roll.sin_cos();
    let rz = [[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]];
    let rx = [[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]];
    let ry = [[cr, 0.0, sr], [0.0, 1.0, 0.0], [-sr, 0.0, cr]];
    matmul(&ry, &matmul(&rx, &rz))
}

/// A random rotation matrix (uniform over orientations) for lesion lobes.
pub fn random_rotation(rng: &mut Rng) -> M3 {
    rotation(
        rng.range(0.0, std::f64::consts::TAU),
        rng.range(0.0, std::f64::consts::TAU),
        rng.range(0.0, std::f64::consts::TAU),
    )
}

/// Clamp to `[0, 1]`.
pub fn clamp01(x: f64) -> f64 {
    x.clamp(0.0, 1.0)
}

/// Hermite smoothstep from 0 at `lo` to 1 at `hi`.
pub fn smoothstep(lo: f64, hi: f64, x: f64) -> f64 {
    let t = clamp01((x - lo) / (hi - lo));
    t * t * (3.0 - 2.0 * t)
}

/// A smooth random scalar field: a sum of plane waves with random directions and phases.
///
/// Band-limited by construction (wavelengths in `[lo_mm, hi_mm]`), so it perturbs a surface into
/// smooth lobes instead of jagged noise; values lie in about `[-1, 1]` (normalised by the number of
/// waves' root).
#[derive(Debug, Clone)]
pub struct Waves {
    waves: Vec<(V3, f64)>,
    norm: f64,
}

impl Waves {
    /// `count` waves with wavelengths between `lo_mm` and `hi_mm`.
    pub fn new(rng: &mut Rng, count: usize, lo_mm: f64, hi_mm: f64) -> Waves {
        let waves: Vec<(V3, f64)> = (0..count)
            .map(|_| {
                let k = std::f64::consts::TAU / rng.range(lo_mm, hi_mm);
                (
                    scale(rng.direction(), k),
                    rng.range(0.0, std::f64::consts::TAU),
                )
            })
            .collect();
        let norm = if count == 0 {
            0.0
        } else {
            (2.0 / count as f64).sqrt()
        };
        Waves { waves, norm }
    }

    /// The field at `p`.
    pub fn at(&self, p: V3) -> f64 {
        self.waves
            .iter()
            .map(|(k, phase)| (dot(*k, p) + phase).sin())
            .sum::<f64>()
            * self.norm
    }
}

/// A trilinearly interpolated vector field on a coarse regular grid: the elastic warp.
///
/// Evaluating plane waves at every sample would cost a dozen `sin` calls per sample; a grid every
/// few mm, filled once per case, represents the same smooth field at a fraction of the cost.
#[derive(Debug, Clone)]
pub struct CoarseField {
    origin: V3,
    step: f64,
    n: [usize; 3],
    values: Vec<V3>,
}

impl CoarseField {
    /// Sample `f` on a grid of step `step` mm covering the box `lo..hi`.
    pub fn sample(lo: V3, hi: V3, step: f64, f: impl Fn(V3) -> V3) -> CoarseField {
        let n = [0, 1, 2].map(|a| (((hi[a] - lo[a]) / step).ceil().max(0.0) as usize + 2).min(512));
        let mut values = Vec::with_capacity(n[0] * n[1] * n[2]);
        for k in 0..n[2] {
            for j in 0..n[1] {
                for i in 0..n[0] {
                    values.push(f([
                        lo[0] + i as f64 * step,
                        lo[1] + j as f64 * step,
                        lo[2] + k as f64 * step,
                    ]));
                }
            }
        }
        CoarseField {
            origin: lo,
            step,
            n,
            values,
        }
    }

    /// The interpolated vector at `p` (clamped to the grid's edge outside it).
    pub fn at(&self, p: V3) -> V3 {
        let mut base = [0usize; 3];
        let mut frac = [0.0; 3];
        for a in 0..3 {
            let t = ((p[a] - self.origin[a]) / self.step).clamp(0.0, (self.n[a] - 1) as f64);
            let i = (t.floor() as usize).min(self.n[a].saturating_sub(2));
            base[a] = i;
            frac[a] = t - i as f64;
        }
        let idx = |i: usize, j: usize, k: usize| (k * self.n[1] + j) * self.n[0] + i;
        let mut out = [0.0; 3];
        for dk in 0..2 {
            let wk = if dk == 0 { 1.0 - frac[2] } else { frac[2] };
            for dj in 0..2 {
                let wj = if dj == 0 { 1.0 - frac[1] } else { frac[1] };
                for di in 0..2 {
                    let wi = if di == 0 { 1.0 - frac[0] } else { frac[0] };
                    let i = (base[0] + di).min(self.n[0] - 1);
                    let j = (base[1] + dj).min(self.n[1] - 1);
                    let k = (base[2] + dk).min(self.n[2] - 1);
                    let v = self.values[idx(i, j, k)];
                    let w = wi * wj * wk;
                    out[0] += w * v[0];
                    out[1] += w * v[1];
                    out[2] += w * v[2];
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_is_orthonormal() {
        let r = rotation(0.3, -0.2, 0.1);
        let i = matmul(&r, &transpose(&r));
        for (a, row) in i.iter().enumerate() {
            for (b, v) in row.iter().enumerate() {
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn coarse_field_reproduces_a_linear_field() {
        let f = |p: V3| [p[0] * 0.5, p[1] - p[2], 2.0];
        let g = CoarseField::sample([0.0; 3], [40.0; 3], 8.0, f);
        let p = [13.0, 21.5, 7.25];
        let (a, b) = (g.at(p), f(p));
        for ax in 0..3 {
            assert!((a[ax] - b[ax]).abs() < 1e-9, "{a:?} vs {b:?}");
        }
    }
}
