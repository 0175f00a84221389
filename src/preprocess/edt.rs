//! Exact Euclidean distance transform in millimetres on anisotropic grids.
//!
//! Morphology with a ball of radius `r` mm is a threshold of a distance map (erode: distance to the
//! nearest background voxel `> r`; dilate: distance to the nearest foreground voxel `<= r`). That
//! costs the same for every radius and is exact with 5 mm slices and 0.4 mm pixels alike, where a
//! voxel structuring element would be a lopsided box. The transform is the separable lower-envelope
//! algorithm of Felzenszwalb & Huttenlocher (2012): one pass per axis, linear time.

use crate::Result;
use crate::error::try_filled;

/// Squared distance (mm²) from every voxel to the nearest voxel where `is_site` holds.
///
/// `dims` is `(nz, ny, nx)` for a C-ordered buffer, `spacing` the voxel size in mm in the same
/// order. Voxels outside the array are not sites, so a site-free volume gives `f64::INFINITY`
/// everywhere (callers read that as "no boundary anywhere").
pub(crate) fn squared_distance_to(
    dims: (usize, usize, usize),
    spacing: [f64; 3],
    is_site: impl Fn(usize) -> bool,
) -> Result<Vec<f64>> {
    let (nz, ny, nx) = dims;
    let n = nz * ny * nx;
    let mut d = try_filled(n, f64::INFINITY, "a distance map")?;
    for (i, v) in d.iter_mut().enumerate() {
        if is_site(i) {
            *v = 0.0;
        }
    }
    let longest = nz.max(ny).max(nx);
    let mut scratch = Envelope::new(longest)?;
    // x lines (contiguous), then y, then z.
    for line in 0..nz * ny {
        scratch.transform(&mut d, line * nx, 1, nx, spacing[2]);
    }
    for z in 0..nz {
        for x in 0..nx {
            scratch.transform(&mut d, z * ny * nx + x, nx, ny, spacing[1]);
        }
    }
    for yx in 0..ny * nx {
        scratch.transform(&mut d, yx, ny * nx, nz, spacing[0]);
    }
    Ok(d)
}

/// Reusable buffers for the 1-D lower envelope of parabolas.
struct Envelope {
    f: Vec<f64>,
    v: Vec<usize>,
    z: Vec<f64>,
}

impl Envelope {
    fn new(len: usize) -> Result<Self> {
        Ok(Envelope {
            f: try_filled(len, 0.0, "a distance-transform line")?,
            v: try_filled(len, 0, "a distance-transform line")?,
            z: try_filled(len + 1, 0.0, "a distance-transform line")?,
        })
    }

    /// In-place 1-D transform of the `len` samples `d[start + k * stride]`, sample pitch `s` mm:
    /// `out[q] = min_p (in[p] + ((q - p) s)²)`, with infinite inputs taking no part.
    fn transform(&mut self, d: &mut [f64], start: usize, stride: usize, len: usize, s: f64) {
        let s2 = s * s;
        let mut k: usize = 0;
        let mut any = false;
        for q in 0..len {
            let fq = d[start + q * stride];
            self.f[q] = fq;
            if !fq.is_finite() {
                continue;
            }
            if !any {
                any = true;
                self.v[0] = q;
                self.z[0] = f64::NEG_INFINITY;
                self.z[1] = f64::INFINITY;
                k = 0;
                continue;
            }
            let qf = q as f64;
            loop {
                let p = self.v[k];
                let pf = p as f64;
                // Where the parabola from q overtakes the one from p (in sample units).
                let cross =
                    ((fq + s2 * qf * qf) - (self.f[p] + s2 * pf * pf)) / (2.0 * s2 * (qf - pf));
                if cross <= self.z[k] && k > 0 {
                    k -= 1;
                    continue;
                }
                if cross <= self.z[k] {
                    // k == 0: q dominates everywhere the first parabola did.
                    self.v[0] = q;
                    self.z[0] = f64::NEG_INFINITY;
                    self.z[1] = f64::INFINITY;
                    break;
                }
                k += 1;
                self.v[k] = q;
                self.z[k] = cross;
                self.z[k + 1] = f64::INFINITY;
                break;
            }
        }
        if !any {
            return;
        }
        let mut k = 0;
        for q in 0..len {
            let qf = q as f64;
            while self.z[k + 1] < qf {
                k += 1;
            }
            let p = self.v[k];
            let dq = (qf - p as f64) * s;
            d[start + q * stride] = self.f[p] + dq * dq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force reference: nearest site by exhaustive search.
    fn brute(dims: (usize, usize, usize), sp: [f64; 3], sites: &[bool]) -> Vec<f64> {
        let (nz, ny, nx) = dims;
        let mut out = vec![f64::INFINITY; sites.len()];
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let i = (z * ny + y) * nx + x;
                    for (j, &s) in sites.iter().enumerate() {
                        if !s {
                            continue;
                        }
                        let (jz, jy, jx) = (j / (ny * nx), (j / nx) % ny, j % nx);
                        let dz = (z as f64 - jz as f64) * sp[0];
                        let dy = (y as f64 - jy as f64) * sp[1];
                        let dx = (x as f64 - jx as f64) * sp[2];
                        out[i] = out[i].min(dz * dz + dy * dy + dx * dx);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_brute_force_on_anisotropic_random_sites() {
        let dims = (5, 7, 9);
        let sp = [5.0, 0.45, 0.8];
        let mut seed = 12345u64;
        let sites: Vec<bool> = (0..dims.0 * dims.1 * dims.2)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33).is_multiple_of(13)
            })
            .collect();
        let got = squared_distance_to(dims, sp, |i| sites[i]).unwrap();
        let want = brute(dims, sp, &sites);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-9, "{g} vs {w}");
        }
    }

    #[test]
    fn no_sites_gives_infinity() {
        let got = squared_distance_to((2, 3, 4), [1.0; 3], |_| false).unwrap();
        assert!(got.iter().all(|v| v.is_infinite()));
    }
}
