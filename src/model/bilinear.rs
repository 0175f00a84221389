//! The one bilinear convention shared by the sparse (training) and dense (inference) paths.
//!
//! Dense inference equals sparse sampling only if both interpolate a block's feature map at
//! exactly the same source coordinates with the same weights, so the rule lives here, once.
//! Convention: pixel centres ("align_corners = false"). A full-resolution pixel `i` of a map
//! downsampled by `factor` sits at source coordinate `(i + 0.5) / factor - 0.5`, clamped to the
//! map's extent (edge replication), and is the linear blend of the two nearest source pixels.

/// The two source indices and their weights for one output coordinate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tap {
    /// Lower source index.
    pub i0: usize,
    /// Upper source index (`i0 + 1`, or `i0` at the edge).
    pub i1: usize,
    /// Weight of `i1`; the weight of `i0` is `1 - frac`.
    pub frac: f32,
}

/// Interpolation tap for full-resolution coordinate `i` on a map of `len` pixels downsampled by
/// `factor` (1 means same resolution: the tap is the pixel itself).
pub fn tap(i: usize, factor: usize, len: usize) -> Tap {
    if len <= 1 {
        return Tap {
            i0: 0,
            i1: 0,
            frac: 0.0,
        };
    }
    let f = factor.max(1) as f32;
    let src = ((i as f32 + 0.5) / f - 0.5).clamp(0.0, (len - 1) as f32);
    let i0 = (src.floor() as usize).min(len - 1);
    let i1 = (i0 + 1).min(len - 1);
    Tap {
        i0,
        i1,
        frac: src - i0 as f32,
    }
}

/// Dense interpolation matrix `[out_len, len]` (row-major): row `i` holds the weights of the
/// source pixels for output pixel `i`. Multiplying a map by it upsamples one axis with exactly
/// the weights [`tap`] gives the sparse path.
pub fn matrix(out_len: usize, factor: usize, len: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; out_len * len];
    for i in 0..out_len {
        let t = tap(i, factor, len);
        m[i * len + t.i0] += 1.0 - t.frac;
        m[i * len + t.i1] += t.frac;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_one_is_identity() {
        for i in 0..7 {
            let t = tap(i, 1, 7);
            assert_eq!((t.i0, t.frac), (i, 0.0));
        }
    }

    #[test]
    fn factor_two_blends_half_pixel_centres() {
        // Output pixel 1 at factor 2 sits at source 0.25: 3/4 of pixel 0, 1/4 of pixel 1.
        let t = tap(1, 2, 4);
        assert_eq!((t.i0, t.i1), (0, 1));
        assert!((t.frac - 0.25).abs() < 1e-6);
        // The first pixel clamps onto source pixel 0; the last onto the last.
        assert_eq!(tap(0, 2, 4).frac, 0.0);
        let last = tap(7, 2, 4);
        assert_eq!((last.i0, last.frac), (3, 0.0));
    }

    #[test]
    fn matrix_rows_sum_to_one() {
        let m = matrix(12, 4, 3);
        for row in m.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }
}
