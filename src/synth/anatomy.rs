//! Base anatomy: a real haemorrhage-free head CT (or template) and the labels lesions need.
//!
//! Lesions are placed by anatomy, not at random: an intraparenchymal haematoma sits in brain
//! tissue, intraventricular blood in the ventricles, a subdural collection against the inner skull,
//! calcifications in the atria and the pineal. This module finds those places once per anatomy
//! (brain mask from [`crate::preprocess`], depth below the inner skull, ventricles, midline,
//! landmarks) and then answers point queries in millimetres by trilinear interpolation.

// Axis loops (`for a in 0..3`) index several 3-vectors at once; see scanner.rs.
#![allow(clippy::needless_range_loop)]

use std::collections::VecDeque;

use ndarray::Array3;

use super::field::V3;
use crate::error::{try_filled, try_vec};
use crate::{Error, Result, Stack};

/// CSF reads about 0–15 HU; ventricles are the deep, central part of it.
const CSF_MAX_HU: f32 = 16.0;
/// Ventricles lie at least this deep below the inner skull (sulci and the convexity do not).
const VENTRICLE_MIN_DEPTH_MM: f32 = 12.0;
/// ... and within this distance of the midline.
const VENTRICLE_MAX_LATERAL_MM: f64 = 32.0;
/// Head = everything denser than this (scalp, bone, brain; the headrest too).
const HEAD_MIN_HU: f32 = -400.0;

/// One base anatomy, labelled.
#[derive(Debug, Clone)]
pub struct Anatomy {
    /// Short name used in `cases.tsv` and `--only-anatomy` ("cranium_promed0051_head").
    pub name: String,
    hu: Array3<f32>,
    /// Voxel size `(x, y, z)` mm.
    spacing: V3,
    /// `(nx, ny, nz)`.
    dims: [usize; 3],
    /// 1 inside the brain mask (intracranial soft tissue), stack order.
    brain: Vec<f32>,
    /// Depth below the brain surface (≈ inner table of the skull) in mm; 0 outside the brain.
    depth: Vec<f32>,
    /// 1 in the ventricles.
    ventricles: Vec<f32>,
    /// Subarachnoid CSF spaces (sulci, fissures, cisterns), widened by one voxel: where
    /// subarachnoid blood can lie (0..1).
    sah_space: Vec<f32>,
    /// Points (mm) of brain parenchyma at least 6 mm deep and outside the ventricles: where
    /// intraparenchymal haematomas may be centred.
    pub parenchyma: Vec<V3>,
    /// Points (mm) inside the ventricles.
    pub ventricle_points: Vec<V3>,
    /// Centroid of the brain mask (mm).
    pub centre: V3,
    /// Bounding box (mm) of the brain mask.
    pub brain_box: (V3, V3),
    /// Bounding box (mm) of the head (everything above −400 HU).
    pub head_box: (V3, V3),
    /// The midline's x (mm) per axial slice of the anatomy (mean x of the brain mask).
    midline: Vec<f64>,
    /// Centroid of each lateral ventricle's atrium (left, right), when ventricles were found.
    pub atria: Option<(V3, V3)>,
    /// Centroid of the ventricles.
    pub ventricle_centre: Option<V3>,
    /// Highest z (mm) of the ventricles.
    pub ventricle_top: Option<f64>,
}

impl Anatomy {
    /// Label `stack` (canonical, HU). Fails when it has no brain to put lesions in.
    pub fn new(name: &str, stack: &Stack) -> Result<Anatomy> {
        let (nz, ny, nx) = stack.dims();
        let [sz, sy, sx] = stack.spacing.map(f64::from);
        let spacing = [sx, sy, sz];
        let dims = [nx, ny, nz];
        let mask = crate::preprocess::brain_mask(stack)?;
        let n = nx * ny * nz;
        let mut brain = try_filled(n, 0f32, "the anatomy's brain mask")?;
        for (b, &m) in brain.iter_mut().zip(mask.iter()) {
            *b = f32::from(m.min(1));
        }
        let voxel_ml = sx * sy * sz / 1000.0;
        let raw_ml = brain.iter().filter(|&&b| b > 0.0).count() as f64 * voxel_ml;
        if raw_ml > MAX_BRAIN_ML {
            keep_inside_skull(stack, &mut brain);
        }
        let count = brain.iter().filter(|&&b| b > 0.0).count();
        let brain_ml = count as f64 * sx * sy * sz / 1000.0;
        if brain_ml < 300.0 {
            return Err(Error::InvalidInput(format!(
                "anatomy {name}: the brain mask holds only {brain_ml:.0} mL (a head CT has \
                 ~1000–1500 mL); it cannot host simulated lesions"
            )));
        }
        let depth = chamfer_depth(&brain, dims, spacing)?;
        let idx = |x: usize, y: usize, z: usize| (z * ny + y) * nx + x;
        let pos = |x: usize, y: usize, z: usize| [x as f64 * sx, y as f64 * sy, z as f64 * sz];

        let mut midline = vec![f64::NAN; nz];
        let mut sum = [0.0; 3];
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        let mut hlo = [f64::INFINITY; 3];
        let mut hhi = [f64::NEG_INFINITY; 3];
        for z in 0..nz {
            let (mut sx_sum, mut cnt) = (0.0, 0usize);
            for y in 0..ny {
                for x in 0..nx {
                    let p = pos(x, y, z);
                    if stack.hu[[z, y, x]] > HEAD_MIN_HU {
                        for a in 0..3 {
                            hlo[a] = hlo[a].min(p[a]);
                            hhi[a] = hhi[a].max(p[a]);
                        }
                    }
                    if brain[idx(x, y, z)] > 0.0 {
                        sx_sum += p[0];
                        cnt += 1;
                        for a in 0..3 {
                            sum[a] += p[a];
                            lo[a] = lo[a].min(p[a]);
                            hi[a] = hi[a].max(p[a]);
                        }
                    }
                }
            }
            if cnt > 50 {
                midline[z] = sx_sum / cnt as f64;
            }
        }
        let centre = sum.map(|s| s / count as f64);
        fill_gaps(&mut midline, centre[0]);

        // Ventricles: deep, central CSF, in components big enough to be ventricles.
        let mut csf = try_filled(n, 0u8, "the ventricle mask")?;
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let i = idx(x, y, z);
                    let lateral = (x as f64 * sx - midline[z]).abs();
                    csf[i] = u8::from(
                        brain[i] > 0.0
                            && stack.hu[[z, y, x]] < CSF_MAX_HU
                            && depth[i] > VENTRICLE_MIN_DEPTH_MM
                            && lateral < VENTRICLE_MAX_LATERAL_MM,
                    );
                }
            }
        }
        let min_voxels = (0.3 / (sx * sy * sz / 1000.0)).ceil() as usize;
        keep_big_components(&mut csf, dims, min_voxels)?;
        let mut ventricles = try_filled(n, 0f32, "the ventricle mask")?;
        let mut ventricle_points = Vec::new();
        let mut parenchyma = Vec::new();
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let i = idx(x, y, z);
                    if csf[i] > 0 {
                        ventricles[i] = 1.0;
                        ventricle_points.push(pos(x, y, z));
                    } else if brain[i] > 0.0
                        && depth[i] > 6.0
                        && (x + y + z) % 2 == 0
                        && (18.0..=55.0).contains(&stack.hu[[z, y, x]])
                    {
                        parenchyma.push(pos(x, y, z));
                    }
                }
            }
        }
        if parenchyma.is_empty() {
            return Err(Error::InvalidInput(format!(
                "anatomy {name}: no brain parenchyma 6 mm below the skull was found (18–55 HU)"
            )));
        }
        let (atria, ventricle_centre, ventricle_top) =
            ventricle_landmarks(&ventricle_points, &midline, sz);
        let sah_space = subarachnoid_space(stack, &brain, &ventricles, dims)?;
        Ok(Anatomy {
            name: name.to_string(),
            hu: stack.hu.as_standard_layout().to_owned(),
            spacing,
            dims,
            brain,
            depth,
            ventricles,
            sah_space,
            parenchyma,
            ventricle_points,
            centre,
            brain_box: (lo, hi),
            head_box: (hlo, hhi),
            midline,
            atria,
            ventricle_centre,
            ventricle_top,
        })
    }

    /// HU at `p` (mm), trilinear; air (−1024) outside the volume.
    pub fn hu_at(&self, p: V3) -> f32 {
        match self.hu.as_slice() {
            Some(s) => self.trilinear(s, p, -1024.0),
            None => -1024.0,
        }
    }

    /// Fraction of brain at `p` (0..1).
    pub fn brain_at(&self, p: V3) -> f32 {
        self.trilinear(&self.brain, p, 0.0)
    }

    /// Depth below the inner skull at `p` in mm (0 outside the brain).
    pub fn depth_at(&self, p: V3) -> f32 {
        self.trilinear(&self.depth, p, 0.0)
    }

    /// Fraction of ventricle at `p` (0..1).
    pub fn ventricle_at(&self, p: V3) -> f32 {
        self.trilinear(&self.ventricles, p, 0.0)
    }

    /// How much `p` is subarachnoid CSF space (0..1; ventricles excluded).
    pub fn sah_space_at(&self, p: V3) -> f32 {
        self.trilinear(&self.sah_space, p, 0.0)
    }

    /// The midline's x (mm) at height `z` (mm).
    pub fn midline_x(&self, z: f64) -> f64 {
        let k = (z / self.spacing[2])
            .round()
            .clamp(0.0, (self.dims[2] - 1) as f64) as usize;
        self.midline.get(k).copied().unwrap_or(self.centre[0])
    }

    /// Brain volume in mL (for reports).
    pub fn brain_ml(&self) -> f64 {
        let v: f64 = self.brain.iter().map(|&b| f64::from(b)).sum();
        v * self.spacing.iter().product::<f64>() / 1000.0
    }

    fn trilinear(&self, data: &[f32], p: V3, outside: f32) -> f32 {
        let [nx, ny, nz] = self.dims;
        let fx = p[0] / self.spacing[0];
        let fy = p[1] / self.spacing[1];
        let fz = p[2] / self.spacing[2];
        if !(fx >= 0.0 && fy >= 0.0 && fz >= 0.0) {
            return outside;
        }
        let (x0, y0, z0) = (fx as usize, fy as usize, fz as usize);
        if x0 >= nx || y0 >= ny || z0 >= nz {
            return outside;
        }
        let x1 = (x0 + 1).min(nx - 1);
        let y1 = (y0 + 1).min(ny - 1);
        let z1 = (z0 + 1).min(nz - 1);
        let (tx, ty, tz) = (
            (fx - x0 as f64) as f32,
            (fy - y0 as f64) as f32,
            (fz - z0 as f64) as f32,
        );
        let at = |x: usize, y: usize, z: usize| data[(z * ny + y) * nx + x];
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let c00 = lerp(at(x0, y0, z0), at(x1, y0, z0), tx);
        let c10 = lerp(at(x0, y1, z0), at(x1, y1, z0), tx);
        let c01 = lerp(at(x0, y0, z1), at(x1, y0, z1), tx);
        let c11 = lerp(at(x0, y1, z1), at(x1, y1, z1), tx);
        lerp(lerp(c00, c10, ty), lerp(c01, c11, ty), tz)
    }
}

/// Larger than any adult intracranial volume (mL): a brain mask above it has taken the scalp.
const MAX_BRAIN_ML: f64 = 1800.0;

/// Bone for the enclosure test (HU): the skull's partial-volume rim is well above it.
const BONE_HU: f32 = 100.0;

/// Drop brain-mask voxels that the outside can reach without crossing bone, slice by slice
/// (used only when the brain mask is implausibly large, see [`MAX_BRAIN_ML`]).
///
/// On a smooth template the skull can be thin enough for scalp and brain to touch through
/// partial volume, and the brain mask then takes the scalp too; lesions must stay inside the
/// skull, so anything reachable from the slice's border through non-bone pixels is not brain.
/// Slices whose skull ring is open (skull base) lose their brain, which only costs lesion sites.
fn keep_inside_skull(stack: &Stack, brain: &mut [f32]) {
    let (nz, ny, nx) = stack.dims();
    let mut seen = vec![false; ny * nx];
    let mut queue = VecDeque::new();
    for z in 0..nz {
        seen.iter_mut().for_each(|v| *v = false);
        let open = |y: usize, x: usize| stack.hu[[z, y, x]] < BONE_HU;
        for y in 0..ny {
            for x in 0..nx {
                if (y == 0 || x == 0 || y + 1 == ny || x + 1 == nx) && open(y, x) {
                    seen[y * nx + x] = true;
                    queue.push_back((y, x));
                }
            }
        }
        while let Some((y, x)) = queue.pop_front() {
            brain[(z * ny + y) * nx + x] = 0.0;
            let mut visit = |yy: usize, xx: usize| {
                if !seen[yy * nx + xx] && open(yy, xx) {
                    seen[yy * nx + xx] = true;
                    queue.push_back((yy, xx));
                }
            };
            if y > 0 {
                visit(y - 1, x);
            }
            if y + 1 < ny {
                visit(y + 1, x);
            }
            if x > 0 {
                visit(y, x - 1);
            }
            if x + 1 < nx {
                visit(y, x + 1);
            }
        }
    }
}

/// Replace NaN entries (slices without brain) by the nearest known value, or `fallback`.
fn fill_gaps(v: &mut [f64], fallback: f64) {
    let known: Vec<usize> = (0..v.len()).filter(|&i| v[i].is_finite()).collect();
    if known.is_empty() {
        v.iter_mut().for_each(|x| *x = fallback);
        return;
    }
    for i in 0..v.len() {
        if !v[i].is_finite() {
            let nearest = known
                .iter()
                .min_by_key(|&&k| k.abs_diff(i))
                .copied()
                .unwrap_or(known[0]);
            v[i] = v[nearest];
        }
    }
}

/// Atria (posterior third of each lateral ventricle), centroid and top of the ventricles.
fn ventricle_landmarks(
    points: &[V3],
    midline: &[f64],
    sz: f64,
) -> (Option<(V3, V3)>, Option<V3>, Option<f64>) {
    if points.len() < 20 {
        return (None, None, None);
    }
    let mut c = [0.0; 3];
    for p in points {
        for a in 0..3 {
            c[a] += p[a] / points.len() as f64;
        }
    }
    let ylo = points.iter().map(|p| p[1]).fold(f64::INFINITY, f64::min);
    let yhi = points
        .iter()
        .map(|p| p[1])
        .fold(f64::NEG_INFINITY, f64::max);
    let top = points
        .iter()
        .map(|p| p[2])
        .fold(f64::NEG_INFINITY, f64::max);
    let cut = ylo + 0.35 * (yhi - ylo);
    let mut sides = [([0.0; 3], 0usize), ([0.0; 3], 0usize)];
    for p in points.iter().filter(|p| p[1] < cut) {
        let k = ((p[2] / sz).round().max(0.0) as usize).min(midline.len().saturating_sub(1));
        let mid = midline.get(k).copied().unwrap_or(c[0]);
        let side = usize::from(p[0] > mid);
        for a in 0..3 {
            sides[side].0[a] += p[a];
        }
        sides[side].1 += 1;
    }
    let atria = if sides[0].1 > 5 && sides[1].1 > 5 {
        let f = |(s, n): ([f64; 3], usize)| s.map(|v| v / n as f64);
        Some((f(sides[0]), f(sides[1])))
    } else {
        None
    };
    (atria, Some(c), Some(top))
}

/// Depth (mm) of every voxel of `inside` below its surface: a two-pass 3×3×3 chamfer distance
/// to the nearest outside voxel, with true mm weights (good to a few percent, which is plenty
/// for placing subdural collections and sinuses).
/// The CSF of the sulci, fissures and cisterns: the HU smoothed over 3×3×3 voxels when the voxels
/// are small (real scans' noise would otherwise scatter specks through white matter, which reads
/// 20–30 HU; a coarse template is smooth already), mapped to
/// 1 at ≤ 9 HU and 0 at ≥ 15 HU, widened by one voxel (blood under pressure widens the space it
/// fills, and partial volume hides the narrowest sulci), inside the brain mask, outside the
/// ventricles.
fn subarachnoid_space(
    stack: &Stack,
    brain: &[f32],
    ventricles: &[f32],
    dims: [usize; 3],
) -> Result<Vec<f32>> {
    let [nx, ny, nz] = dims;
    let n = nx * ny * nz;
    let idx = |x: usize, y: usize, z: usize| (z * ny + y) * nx + x;
    let near = |c: usize, len: usize| c.saturating_sub(1)..(c + 2).min(len);
    let mut csf = try_filled(n, 0f32, "the subarachnoid space")?;
    // Smoothing a template (already an average, with ≥ 1.5 mm voxels) would erase its sulci.
    let smooth = stack.spacing.iter().all(|&s| s < 1.6);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                if brain[idx(x, y, z)] <= 0.0 {
                    continue;
                }
                if !smooth {
                    csf[idx(x, y, z)] = ((15.0 - stack.hu[[z, y, x]]) / 6.0).clamp(0.0, 1.0);
                    continue;
                }
                let (mut sum, mut cnt) = (0.0f32, 0.0f32);
                for zz in near(z, nz) {
                    for yy in near(y, ny) {
                        for xx in near(x, nx) {
                            sum += stack.hu[[zz, yy, xx]].clamp(-100.0, 100.0);
                            cnt += 1.0;
                        }
                    }
                }
                csf[idx(x, y, z)] = ((15.0 - sum / cnt) / 6.0).clamp(0.0, 1.0);
            }
        }
    }
    let mut out = try_filled(n, 0f32, "the subarachnoid space")?;
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let i = idx(x, y, z);
                if brain[i] <= 0.0 {
                    continue;
                }
                let (mut m, mut v) = (0f32, 0f32);
                for zz in near(z, nz) {
                    for yy in near(y, ny) {
                        for xx in near(x, nx) {
                            m = m.max(csf[idx(xx, yy, zz)]);
                            v = v.max(ventricles[idx(xx, yy, zz)]);
                        }
                    }
                }
                // The ventricles' walls stay clear too (blood there is intraventricular).
                out[i] = m * brain[i] * (1.0 - v);
            }
        }
    }
    Ok(out)
}

fn chamfer_depth(inside: &[f32], dims: [usize; 3], spacing: V3) -> Result<Vec<f32>> {
    let [nx, ny, nz] = dims;
    let mut d = try_vec::<f32>(inside.len(), "the depth map")?;
    d.extend(
        inside
            .iter()
            .map(|&b| if b > 0.0 { f32::INFINITY } else { 0.0 }),
    );
    let mut offs = Vec::new();
    for dz in -1i64..=1 {
        for dy in -1i64..=1 {
            for dx in -1i64..=1 {
                // Offsets that come earlier in C order: the forward pass's causal neighbours.
                if (dz, dy, dx) < (0, 0, 0) {
                    let w = ((dx as f64 * spacing[0]).powi(2)
                        + (dy as f64 * spacing[1]).powi(2)
                        + (dz as f64 * spacing[2]).powi(2))
                    .sqrt() as f32;
                    offs.push((dx, dy, dz, w));
                }
            }
        }
    }
    let dims_i = [nx as i64, ny as i64, nz as i64];
    let mut pass = |forward: bool| {
        let order: Box<dyn Iterator<Item = usize>> = if forward {
            Box::new(0..d.len())
        } else {
            Box::new((0..d.len()).rev())
        };
        for i in order {
            if d[i] == 0.0 {
                continue;
            }
            let x = (i % nx) as i64;
            let y = ((i / nx) % ny) as i64;
            let z = (i / (nx * ny)) as i64;
            let mut best = d[i];
            for &(dx, dy, dz, w) in &offs {
                let (dx, dy, dz) = if forward {
                    (dx, dy, dz)
                } else {
                    (-dx, -dy, -dz)
                };
                let (xx, yy, zz) = (x + dx, y + dy, z + dz);
                // Outside the volume counts as outside the brain.
                let v = if xx < 0
                    || yy < 0
                    || zz < 0
                    || xx >= dims_i[0]
                    || yy >= dims_i[1]
                    || zz >= dims_i[2]
                {
                    0.0
                } else {
                    d[((zz * dims_i[1] + yy) * dims_i[0] + xx) as usize]
                };
                best = best.min(v + w);
            }
            d[i] = best;
        }
    };
    pass(true);
    pass(false);
    for v in d.iter_mut() {
        if !v.is_finite() {
            *v = 0.0;
        }
    }
    Ok(d)
}

/// Keep the 6-connected components of `mask` with at least `min_voxels` voxels and at least a
/// tenth of the largest one.
fn keep_big_components(mask: &mut [u8], dims: [usize; 3], min_voxels: usize) -> Result<()> {
    let [nx, ny, nz] = dims;
    crate::preprocess::filter_components(mask, (nz, ny, nx), |size, largest| {
        size >= min_voxels.max(largest / 10)
    })
}
