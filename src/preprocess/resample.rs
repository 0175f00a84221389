//! In-plane resampling: the network sees slices at one fixed pixel size; results go back to the
//! scan's own pixels.
//!
//! Convention (the "pixel-area" or half-pixel convention of PyTorch `align_corners=false` and
//! OpenCV): an image of `n` pixels covers the interval `[0, n)` in pixel units, pixel `i` is the
//! square `[i, i+1)` with its centre at `i + 0.5`. Resampling to `m` pixels keeps that same field
//! of view, so output pixel `j` has its centre at source coordinate
//! `u = (j + 0.5) · n / m − 0.5` (in source pixel indices). Going there and back therefore never
//! shifts the image by half a pixel, whatever the factors. Samples beyond the first/last pixel
//! centre take the edge value.

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis};

use crate::error::try_filled;
use crate::{Error, Result};

/// How values between pixel centres are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    /// The pixel whose square contains the sample point: for masks and labels.
    Nearest,
    /// Linear in y and x between the four surrounding centres: for HU and probabilities.
    Bilinear,
}

/// The shape `(ny, nx)` of a slice of `shape` pixels of `spacing` mm `[y, x]` resampled to square
/// pixels of `target_mm`, keeping the field of view (rounded to whole pixels, at least 1).
pub fn shape_for_pixel_size(
    shape: (usize, usize),
    spacing: [f32; 2],
    target_mm: f32,
) -> Result<(usize, usize)> {
    if !(target_mm.is_finite() && target_mm > 0.0)
        || spacing.iter().any(|s| !(s.is_finite() && *s > 0.0))
    {
        return Err(Error::InvalidInput(format!(
            "pixel size {target_mm} mm from {}×{} mm: sizes must be positive",
            spacing[1], spacing[0]
        )));
    }
    let f = |n: usize, s: f32| {
        ((n as f64 * f64::from(s) / f64::from(target_mm)).round() as usize).max(1)
    };
    Ok((f(shape.0, spacing[0]), f(shape.1, spacing[1])))
}

/// Where output index `j` of `m` samples lands in a source of `n` samples (half-pixel rule).
fn source_coord(j: usize, m: usize, n: usize) -> f64 {
    (j as f64 + 0.5) * (n as f64 / m as f64) - 0.5
}

/// Per output index: the two source indices and the weight of the second.
fn taps(m: usize, n: usize, interp: Interp) -> Vec<(usize, usize, f32)> {
    (0..m)
        .map(|j| {
            let u = source_coord(j, m, n).clamp(0.0, (n - 1) as f64);
            match interp {
                Interp::Nearest => {
                    // Half-way points go to the higher index, the same rule in both directions.
                    let i = ((u + 0.5).floor() as usize).min(n - 1);
                    (i, i, 0.0)
                }
                Interp::Bilinear => {
                    let i0 = u.floor() as usize;
                    let i1 = (i0 + 1).min(n - 1);
                    (i0, i1, (u - i0 as f64) as f32)
                }
            }
        })
        .collect()
}

/// Resample one `[y, x]` slice to `shape` pixels over the same field of view.
pub fn resample_slice(
    src: ArrayView2<'_, f32>,
    shape: (usize, usize),
    interp: Interp,
) -> Result<Array2<f32>> {
    let (ny, nx) = src.dim();
    let (my, mx) = shape;
    if ny == 0 || nx == 0 || my == 0 || mx == 0 {
        return Err(Error::InvalidInput(format!(
            "resampling a {nx}×{ny} slice to {mx}×{my}: both need at least one pixel"
        )));
    }
    let ty = taps(my, ny, interp);
    let tx = taps(mx, nx, interp);
    let mut out = try_filled(my * mx, 0.0f32, "a resampled slice")?;
    for (row, &(y0, y1, wy)) in out.chunks_mut(mx).zip(&ty) {
        for (o, &(x0, x1, wx)) in row.iter_mut().zip(&tx) {
            let top = src[[y0, x0]] * (1.0 - wx) + src[[y0, x1]] * wx;
            let bottom = src[[y1, x0]] * (1.0 - wx) + src[[y1, x1]] * wx;
            *o = top * (1.0 - wy) + bottom * wy;
        }
    }
    Array2::from_shape_vec((my, mx), out)
        .map_err(|e| Error::InvalidInput(format!("resampled slice {mx}×{my}: {e}")))
}

/// [`resample_slice`] on every slice of a `[z, y, x]` stack (z is never resampled).
pub fn resample_stack(
    src: ArrayView3<'_, f32>,
    shape: (usize, usize),
    interp: Interp,
) -> Result<Array3<f32>> {
    let nz = src.dim().0;
    let (my, mx) = shape;
    let mut out = try_filled(nz * my * mx, 0.0f32, "a resampled stack")?;
    for (z, chunk) in out.chunks_mut((my * mx).max(1)).enumerate().take(nz) {
        let s = resample_slice(src.index_axis(Axis(0), z), shape, interp)?;
        for (o, &v) in chunk.iter_mut().zip(s.iter()) {
            *o = v;
        }
    }
    Array3::from_shape_vec((nz, my, mx), out)
        .map_err(|e| Error::InvalidInput(format!("resampled stack {mx}×{my}×{nz}: {e}")))
}

/// A u8 mask through [`Interp::Nearest`], per slice, e.g. a brain mask onto the network's grid.
pub fn resample_mask(src: ArrayView3<'_, u8>, shape: (usize, usize)) -> Result<Array3<u8>> {
    let as_f32 = src.mapv(f32::from);
    let r = resample_stack(as_f32.view(), shape, Interp::Nearest)?;
    Ok(r.mapv(|v| u8::from(v >= 0.5)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_when_shape_is_unchanged() {
        let a = Array2::from_shape_fn((5, 7), |(y, x)| (y * 10 + x) as f32);
        for interp in [Interp::Nearest, Interp::Bilinear] {
            assert_eq!(resample_slice(a.view(), (5, 7), interp).unwrap(), a);
        }
    }

    #[test]
    fn bilinear_keeps_linear_ramps_and_centres() {
        // A ramp in source pixel coordinates stays the same function of physical position:
        // output pixel j (centre at u) must read 3u + 1 away from the clamped edges.
        let a = Array2::from_shape_fn((4, 10), |(_, x)| 3.0 * x as f32 + 1.0);
        let up = resample_slice(a.view(), (4, 25), Interp::Bilinear).unwrap();
        for j in 0..25 {
            let u = source_coord(j, 25, 10);
            if (0.0..=9.0).contains(&u) {
                assert!((up[[0, j]] - (3.0 * u as f32 + 1.0)).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn nearest_up_then_down_is_exact_for_whole_factors() {
        let a = Array2::from_shape_fn((6, 5), |(y, x)| ((y * 7 + x * 3) % 5) as f32);
        for f in [2, 3, 4] {
            let up = resample_slice(a.view(), (6 * f, 5 * f), Interp::Nearest).unwrap();
            let back = resample_slice(up.view(), (6, 5), Interp::Nearest).unwrap();
            assert_eq!(back, a, "factor {f}");
        }
    }

    #[test]
    fn round_trip_does_not_shift_a_blob() {
        // Centroid of a smooth blob is preserved by bilinear there-and-back at odd factors.
        let a = Array2::from_shape_fn((40, 40), |(y, x)| {
            let (dy, dx) = (y as f32 - 17.3, x as f32 - 22.6);
            (-(dy * dy + dx * dx) / 30.0).exp()
        });
        let centroid = |m: &Array2<f32>| {
            let (mut s, mut sy, mut sx) = (0.0, 0.0, 0.0);
            for ((y, x), &v) in m.indexed_iter() {
                s += v;
                sy += v * y as f32;
                sx += v * x as f32;
            }
            (sy / s, sx / s)
        };
        let mid = resample_slice(a.view(), (57, 31), Interp::Bilinear).unwrap();
        let back = resample_slice(mid.view(), (40, 40), Interp::Bilinear).unwrap();
        let (c0, c1) = (centroid(&a), centroid(&back));
        assert!(
            (c0.0 - c1.0).abs() < 0.05 && (c0.1 - c1.1).abs() < 0.05,
            "{c0:?} {c1:?}"
        );
        let max_err = a
            .iter()
            .zip(back.iter())
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(max_err < 0.05, "{max_err}");
    }

    #[test]
    fn target_shape_keeps_field_of_view() {
        assert_eq!(
            shape_for_pixel_size((512, 512), [0.45, 0.45], 0.9).unwrap(),
            (256, 256)
        );
        assert_eq!(
            shape_for_pixel_size((1, 3), [0.5, 0.5], 10.0).unwrap(),
            (1, 1)
        );
        assert!(shape_for_pixel_size((4, 4), [0.5, 0.0], 1.0).is_err());
    }

    #[test]
    fn stack_and_mask_per_slice() {
        let m = Array3::from_shape_fn((3, 4, 4), |(z, y, x)| u8::from(y >= 2 && x == z));
        let up = resample_mask(m.view(), (8, 8)).unwrap();
        assert_eq!(up.dim(), (3, 8, 8));
        let back = resample_mask(up.view(), (4, 4)).unwrap();
        assert_eq!(back, m);
    }
}
