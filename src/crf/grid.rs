//! The CRF's smoothness kernel (a Gaussian on position alone) as a separable filter on the voxel
//! grid.
//!
//! A Gaussian whose features are only the voxel's position is separable: three 1-D convolutions,
//! one per axis, give the exact filter (up to the truncation at [`RADIUS_STD`] standard
//! deviations). The permutohedral lattice answers the general case (position + density), but for
//! this kernel it was the most expensive part of the CRF — a 126 000-vertex lattice over 3 M
//! voxels built in 0.44–0.59 s, then approximate (its kernel is piecewise linear and slightly
//! anisotropic) — while three passes of a short convolution are exact, need no table per voxel
//! and vectorise: each pass is a sum of shifted rows times a weight.
//!
//! As with the lattice, mean-field uses the *normalised* filter (divided by the filtered constant),
//! so the zero padding at the box's faces only shortens the kernel there.

use super::Filter;
use crate::error::{Error, Result, try_filled};
use crate::parallel::for_each_chunk;

/// Taps reach this many standard deviations from the centre (the Gaussian's weight beyond it is
/// e^(−4.5) ≈ 1 % of the centre's, and 0.3 % of the kernel's mass).
pub const RADIUS_STD: f32 = 3.0;

/// A normalised separable Gaussian on a `[z, y, x]` grid.
#[derive(Debug, Clone)]
pub struct GridGaussian {
    dims: (usize, usize, usize),
    /// Taps per axis (z, y, x): `taps[a][k]` is the weight at offset `k − radius`.
    taps: [Vec<f32>; 3],
    /// `1 / filter(1)` per voxel.
    inv_norm: Vec<f32>,
}

impl GridGaussian {
    /// The filter for a grid of `dims` voxels (z, y, x) with Gaussian std `std_voxels` (z, y, x)
    /// measured in voxels of each axis. Taps never reach past the grid: a kernel wider than the
    /// box costs at most the box's length per voxel.
    pub fn new(dims: (usize, usize, usize), std_voxels: [f32; 3]) -> Result<Self> {
        let mut taps: [Vec<f32>; 3] = Default::default();
        let lengths = [dims.0, dims.1, dims.2];
        for (a, (t, &s)) in taps.iter_mut().zip(&std_voxels).enumerate() {
            if s.is_nan() || s <= 0.0 {
                return Err(Error::InvalidInput(format!(
                    "Gaussian std {s} voxels along axis {a}: must be a positive number"
                )));
            }
            let r = (RADIUS_STD * s)
                .ceil()
                .min(lengths[a].saturating_sub(1) as f32) as i32;
            *t = (-r..=r)
                .map(|k| (-0.5 * (k as f32 / s).powi(2)).exp())
                .collect();
        }
        let n = dims.0 * dims.1 * dims.2;
        let mut g = GridGaussian {
            dims,
            taps,
            inv_norm: Vec::new(),
        };
        let ones = try_filled(n, 1f32, "the CRF normaliser")?;
        let mut norm = try_filled(n, 0f32, "the CRF normaliser")?;
        g.filter(&ones, &mut norm)?;
        for v in norm.iter_mut() {
            // The centre tap is 1 and every weight is positive, so this is ≥ 1.
            *v = 1.0 / *v;
        }
        g.inv_norm = norm;
        Ok(g)
    }

    /// Bytes held between filter calls.
    pub fn bytes(&self) -> usize {
        self.inv_norm.len() * 4
    }

    /// `out = G * values` (unnormalised): the x pass, then y, then z, with zero padding.
    pub fn filter(&self, values: &[f32], out: &mut [f32]) -> Result<()> {
        let (nz, ny, nx) = self.dims;
        let n = nz * ny * nx;
        if values.len() != n || out.len() != n {
            return Err(Error::InvalidInput(format!(
                "grid filter built for {n} voxels was given {} values and {} outputs",
                values.len(),
                out.len()
            )));
        }
        if n == 0 {
            return Ok(());
        }
        let mut tmp = try_filled(n, 0f32, "the CRF filter buffer")?;
        // x and y within each slice (slices in parallel), into `tmp`.
        let plane = ny * nx;
        let (tx, ty) = (&self.taps[2], &self.taps[1]);
        for_each_chunk(&mut tmp, plane, |start, slice| {
            let src = &values[start..start + plane];
            let mut xs = vec![0f32; plane];
            for (s, d) in src.chunks_exact(nx).zip(xs.chunks_exact_mut(nx)) {
                convolve_row(s, tx, d);
            }
            convolve_rows(&xs, nx, ty, slice);
        });
        // z across slices: every slice of `out` sums shifted slices of `tmp` (slices in parallel).
        let (tz, tmp) = (&self.taps[0], &tmp);
        for_each_chunk(out, plane, |start, slice| {
            weighted_row(tmp, plane, tz, start / plane, slice);
        });
        Ok(())
    }
}

/// `dst = taps * src` along one contiguous row (zero padding), written as one shifted
/// multiply-add per tap so that the inner loop is a plain vector loop.
fn convolve_row(src: &[f32], taps: &[f32], dst: &mut [f32]) {
    let n = src.len();
    let r = taps.len() / 2;
    dst.fill(0.0);
    for (k, &w) in taps.iter().enumerate() {
        // Output x reads src[x + k − r].
        let (o0, s0) = if k >= r { (0, k - r) } else { (r - k, 0) };
        if o0 >= n || s0 >= n {
            continue;
        }
        let len = n - o0.max(s0);
        for (o, &v) in dst[o0..o0 + len].iter_mut().zip(&src[s0..s0 + len]) {
            *o += w * v;
        }
    }
}

/// `dst = taps * src` across rows of length `nx` (the y axis of a slice, zero padding): each
/// output row is a weighted sum of whole input rows.
fn convolve_rows(src: &[f32], nx: usize, taps: &[f32], dst: &mut [f32]) {
    for (y, out) in dst.chunks_exact_mut(nx).enumerate() {
        weighted_row(src, nx, taps, y, out);
    }
}

/// Row `y` of the convolution of `src` (rows of `len` values) with `taps` across rows, zero
/// padding: the taps' weighted sum of the rows around `y`. Rows are image rows for the y pass and
/// whole slices for the z pass.
fn weighted_row(src: &[f32], len: usize, taps: &[f32], y: usize, out: &mut [f32]) {
    let rows = src.len() / len;
    let r = taps.len() / 2;
    out.fill(0.0);
    for (k, &w) in taps.iter().enumerate() {
        let Some(yy) = (y + k).checked_sub(r) else {
            continue;
        };
        if yy >= rows {
            break;
        }
        for (o, &v) in out.iter_mut().zip(&src[yy * len..(yy + 1) * len]) {
            *o += w * v;
        }
    }
}

impl Filter for GridGaussian {
    fn len(&self) -> usize {
        self.inv_norm.len()
    }

    fn filter_sum(&self, values: &[f32], out: &mut [f32]) -> Result<()> {
        self.filter(values, out)
    }

    fn inverse_norm(&self) -> &[f32] {
        &self.inv_norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crf::exact::ExactGaussian;

    /// Normalised grid filter against the exact O(N²) filter on the same positions.
    #[test]
    fn matches_the_exact_gaussian_on_an_anisotropic_grid() {
        let dims = (5, 9, 13);
        let spacing = [4.0f32, 0.9, 0.7]; // mm
        let std_mm = 3.0f32;
        let (nz, ny, nx) = dims;
        let mut features = Vec::new();
        let mut values = Vec::new();
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    features.extend_from_slice(&[
                        z as f32 * spacing[0] / std_mm,
                        y as f32 * spacing[1] / std_mm,
                        x as f32 * spacing[2] / std_mm,
                    ]);
                    // A sharp step and a ramp: where a wrong width or shift would show.
                    let step = if x > 6 && y < 5 { 0.9 } else { 0.1 };
                    values.push(step + 0.01 * z as f32);
                }
            }
        }
        let g = GridGaussian::new(dims, spacing.map(|s| std_mm / s)).unwrap();
        let e = ExactGaussian::new(&features, 3).unwrap();
        let (mut a, mut b) = (vec![0f32; values.len()], vec![0f32; values.len()]);
        g.filter_normalised(&values, &mut a).unwrap();
        e.filter_normalised(&values, &mut b).unwrap();
        let max = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        // Truncation at 3 std is all that differs (the lattice's error here is ~0.05).
        assert!(max < 0.004, "largest difference {max}");
        // Unnormalised, term by term: every voxel within reach times its three taps.
        let mut raw = vec![0f32; values.len()];
        g.filter(&values, &mut raw).unwrap();
        let r = g.taps.clone().map(|t| (t.len() / 2) as i64);
        for (z, y, x) in [(0, 0, 0), (2, 4, 6), (4, 8, 12), (1, 7, 2)] {
            let mut expect = 0f64;
            for (i, &v) in values.iter().enumerate() {
                let (zz, yy, xx) = (i / (ny * nx), i / nx % ny, i % nx);
                let off = [
                    zz as i64 - z as i64,
                    yy as i64 - y as i64,
                    xx as i64 - x as i64,
                ];
                if (0..3).all(|a| off[a].abs() <= r[a]) {
                    let w: f32 = (0..3)
                        .map(|a| g.taps[a][(off[a] + r[a]) as usize])
                        .product();
                    expect += f64::from(w * v);
                }
            }
            let got = raw[(z * ny + y) * nx + x];
            assert!(
                (f64::from(got) - expect).abs() < 1e-4 * expect.max(1.0),
                "{got} vs {expect}"
            );
        }
    }

    #[test]
    fn bad_widths_and_lengths_are_errors() {
        assert!(GridGaussian::new((2, 2, 2), [0.0, 1.0, 1.0]).is_err());
        assert!(GridGaussian::new((2, 2, 2), [f32::NAN, 1.0, 1.0]).is_err());
        // A kernel far wider than the grid is cut at the grid's length: a flat average.
        let wide = GridGaussian::new((1, 1, 4), [1.0, 1.0, f32::INFINITY]).unwrap();
        let mut flat = vec![0f32; 4];
        wide.filter_normalised(&[0.0, 0.0, 0.0, 1.0], &mut flat)
            .unwrap();
        assert!(flat.iter().all(|v| (v - 0.25).abs() < 1e-6), "{flat:?}");
        let g = GridGaussian::new((2, 2, 2), [1.0, 1.0, 1.0]).unwrap();
        let mut out = vec![0f32; 8];
        assert!(g.filter_normalised(&[0.0; 7], &mut out).is_err());
        let mut one = vec![0f32; 1];
        let g1 = GridGaussian::new((1, 1, 1), [1.0, 1.0, 1.0]).unwrap();
        g1.filter_normalised(&[0.25], &mut one).unwrap();
        assert_eq!(one[0], 0.25);
    }
}
