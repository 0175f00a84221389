//! Rigid registration of a follow-up head CT to its baseline, for measuring haematoma growth.
//!
//! Both scans are of the same skull, so a rigid (6 degrees of freedom) transform is the right
//! model: the brain inside does not deform between two CTs a day apart except around a growing
//! clot, which is a small part of the voxels compared. The transform maps a point of the
//! baseline's world (RAS+ mm, from its file's affine, shear and all) to the follow-up's world:
//! `y = R (x − c) + c + t`, `c` the baseline brain's centroid, so rotations turn about the head
//! rather than about the scanner's origin, which keeps angles and translations uncoupled.
//!
//! The recipe is the usual one, written here because no pure-Rust crate does it (and it must run
//! in the browser): windowed HU (0–100 HU, so bone and air saturate and the inner skull table, the
//! ventricles and the sulci carry the signal), compared on the baseline's brain voxels and a
//! margin around them; a coarse-to-fine pyramid (4 mm and 2 mm isotropic grids, box-averaged from
//! the scan's own voxels so thin and thick slices look alike, then the native voxels); a
//! similarity for two CTs of one patient (normalised cross-correlation, or mutual information);
//! a derivative-free compass search (robust to the similarity's small-scale roughness, no
//! gradient to get wrong) started from the scanner geometry plus the brain centroids, with a few
//! extra rotated starts on the coarsest grid so a head turned by 15° is not a local optimum.
//!
//! Volumes are never measured on resampled data: registration only decides where the follow-up's
//! haematomas lie in the baseline's space, for matching them and for display.

pub mod compare;

use ndarray::Array3;
use serde::Serialize;

use crate::error::try_filled;
use crate::io::Affine;
use crate::preprocess::bounding_box;
use crate::{Error, Result};

type V3 = [f64; 3];
type M3 = [[f64; 3]; 3];

/// Typical distance (mm) of brain voxels from the head's centre: converts a rotation step to the
/// displacement it causes, so the search treats 1 mm and `1/RADIUS_MM` rad as equal moves.
const RADIUS_MM: f64 = 70.0;

/// A rigid transform from the baseline's world to the follow-up's world (both RAS+ mm):
/// `y = R (x − centre) + centre + translation`, `R = Rz · Ry · Rx`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rigid {
    /// Rotation angles about the world x (left–right), y (front–back) and z (up–down) axes,
    /// degrees; applied in the order x, y, z.
    pub angles_deg: V3,
    /// Translation, mm.
    pub translation_mm: V3,
    /// Centre of rotation, mm (the baseline brain's centroid).
    pub centre_mm: V3,
}

impl Rigid {
    /// The identity transform.
    pub fn identity() -> Rigid {
        Rigid {
            angles_deg: [0.0; 3],
            translation_mm: [0.0; 3],
            centre_mm: [0.0; 3],
        }
    }

    /// The rotation matrix `Rz · Ry · Rx`.
    pub fn rotation(&self) -> M3 {
        let [a, b, g] = self.angles_deg.map(f64::to_radians);
        let (sa, ca) = a.sin_cos();
        let (sb, cb) = b.sin_cos();
        let (sg, cg) = g.sin_cos();
        let rx = [[1.0, 0.0, 0.0], [0.0, ca, -sa], [0.0, sa, ca]];
        let ry = [[cb, 0.0, sb], [0.0, 1.0, 0.0], [-sb, 0.0, cb]];
        let rz = [[cg, -sg, 0.0], [sg, cg, 0.0], [0.0, 0.0, 1.0]];
        mat_mul(&rz, &mat_mul(&ry, &rx))
    }

    /// The follow-up point corresponding to baseline point `x`.
    pub fn apply(&self, x: V3) -> V3 {
        let r = self.rotation();
        let d = sub(x, self.centre_mm);
        let m = mat_vec(&r, d);
        [0, 1, 2].map(|k| m[k] + self.centre_mm[k] + self.translation_mm[k])
    }

    /// The transform as a 4×4 world-to-world affine.
    pub fn affine(&self) -> Affine {
        let r = self.rotation();
        let o = self.apply([0.0; 3]);
        let mut a = [[0.0; 4], [0.0; 4], [0.0; 4], [0.0, 0.0, 0.0, 1.0]];
        for k in 0..3 {
            a[k][..3].copy_from_slice(&r[k]);
            a[k][3] = o[k];
        }
        a
    }

    fn from_params(p: &[f64; 6], centre: V3) -> Rigid {
        Rigid {
            angles_deg: [p[0], p[1], p[2]].map(f64::to_degrees),
            translation_mm: [p[3], p[4], p[5]],
            centre_mm: centre,
        }
    }
}

/// Which similarity the search maximises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Similarity {
    /// Normalised cross-correlation: the two scans have the same HU scale, so a linear relation
    /// between their intensities is the right assumption, and it is smooth and cheap.
    Ncc,
    /// Mutual information (32-bin joint histogram, linear binning of the follow-up value): makes
    /// no assumption on the intensity relation; the general choice across modalities.
    MutualInformation,
}

impl Similarity {
    /// The similarity by the name `ichnet compare --similarity` and the page's options use:
    /// `"mi"` or `"ncc"`.
    pub fn from_name(name: &str) -> crate::Result<Self> {
        match name {
            "mi" => Ok(Similarity::MutualInformation),
            "ncc" => Ok(Similarity::Ncc),
            other => Err(crate::Error::InvalidInput(format!(
                "similarity {other:?} is neither \"mi\" (mutual information) nor \"ncc\" \
                 (normalised cross-correlation)"
            ))),
        }
    }
}

/// Settings of [`register`].
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationConfig {
    /// Isotropic grid spacings (mm) of the coarse levels, coarsest first; the native voxels
    /// follow them as the last level.
    pub levels_mm: Vec<f64>,
    /// The similarity maximised.
    pub similarity: Similarity,
    /// Whether a last level compares on the scans' own voxels (the follow-up interpolated
    /// trilinearly) after the isotropic ones; on by default: measured on the 5 mm / 3 mm test
    /// pair it halves the rotation error left by the 1 mm box-averaged grid.
    pub native_level: bool,
    /// HU window `(low, high)`: values are clamped to it.
    pub window_hu: (f32, f32),
    /// Margin (mm) around the baseline brain mask whose voxels are compared too (the inner
    /// skull table is the sharpest landmark a head CT has).
    pub margin_mm: f64,
    /// Most baseline voxels compared per level (a regular subsample beyond it). 80 000, by
    /// measurement: on the eight synthetic pairs of seed 7 (`compare_pairs --registration-only
    /// --max-points N`) MI's mean / worst error was 0.09 / 0.41 mm with 120 000 and 0.11 / 0.36 mm
    /// with 50 000, but the phantom pair with 5 mm follow-up slices (`registration::tests`) left
    /// 1.38 / 2.42 mm at 50 000 against its 1.2 / 2 mm bound; 80 000 keeps it within, and every
    /// point less is time saved on the finer levels.
    pub max_points: usize,
    /// Extra starting rotations (degrees, about each axis in turn, both signs) tried on the
    /// coarsest level; 0 for none.
    pub start_angle_deg: f64,
    /// Below this NCC on brain voxels the registration is reported as poor.
    pub poor_ncc: f64,
    /// Below this fraction of baseline brain landing in the follow-up's brain (where the
    /// follow-up covers it) the registration is reported as poor.
    pub poor_brain_overlap: f64,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            levels_mm: vec![4.0, 2.0],
            similarity: Similarity::MutualInformation,
            native_level: true,
            window_hu: (0.0, 100.0),
            margin_mm: 6.0,
            max_points: 80_000,
            start_angle_deg: 10.0,
            poor_ncc: 0.25,
            poor_brain_overlap: 0.9,
        }
    }
}

/// One scan as registration sees it: HU on the canonical stack, its brain mask and the stack's
/// voxel-to-world affine ([`crate::io::Scan::stack_affine`]).
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    /// HU, `[z, y, x]`.
    pub hu: &'a Array3<f32>,
    /// Brain mask, same shape.
    pub brain: &'a Array3<u8>,
    /// Stack index `(x, y, z, 1)` → world mm.
    pub affine: &'a Affine,
}

/// How trustworthy a registration is, measured after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quality {
    /// NCC of the windowed HU over the baseline's brain voxels that the follow-up covers.
    pub ncc: f64,
    /// Fraction of the baseline's brain voxels that fall inside the follow-up's field of view.
    pub fov_overlap: f64,
    /// Of those, the fraction that land inside the follow-up's brain mask.
    pub brain_overlap: f64,
    /// Whether the registration is poor (then matching and display are unreliable; the volumes
    /// and the expansion verdict on totals are not affected).
    pub poor: bool,
    /// Why it is poor, as a sentence with the numbers.
    pub reason: Option<String>,
}

/// Work done on one pyramid level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Level {
    /// Grid spacing (mm); 0 for the native voxels.
    pub spacing_mm: f64,
    /// Baseline voxels compared.
    pub points: usize,
    /// Similarity evaluations.
    pub evaluations: usize,
    /// Similarity at the end of the level (NCC, or MI in nats).
    pub similarity: f64,
}

/// The result of [`register`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Registration {
    /// Baseline world → follow-up world.
    pub transform: Rigid,
    /// The similarity that was maximised.
    pub similarity: Similarity,
    /// Quality figures and the poor/good verdict.
    pub quality: Quality,
    /// Per-level work, coarsest first.
    pub levels: Vec<Level>,
}

/// A scalar grid with its world-to-index affine; NaN marks "no data" (outside the field of view).
struct Grid {
    data: Vec<f32>,
    /// `(nx, ny, nz)`.
    dims: [usize; 3],
    /// World mm → continuous index `(x, y, z)`.
    to_index: Affine,
}

impl Grid {
    /// Trilinear value at continuous index `p`; NaN outside (half a voxel of slack at the edges,
    /// so a one-slice grid or the last slice of a slab still has a value) or next to no data.
    #[inline]
    fn at_index(&self, p: V3) -> f32 {
        let mut i0 = [0usize; 3];
        let mut i1 = [0usize; 3];
        let mut f = [0f32; 3];
        for k in 0..3 {
            let n = self.dims[k];
            let v = p[k];
            if !(v >= -0.5 && v <= n as f64 - 0.5) {
                return f32::NAN;
            }
            let c = v.clamp(0.0, (n - 1) as f64);
            let lo = c.floor() as usize;
            i0[k] = lo;
            i1[k] = (lo + 1).min(n - 1);
            f[k] = (c - lo as f64) as f32;
        }
        let [nx, ny, _] = self.dims;
        let idx = |x: usize, y: usize, z: usize| x + nx * (y + ny * z);
        let d = &self.data;
        let c00 = lerp(
            d[idx(i0[0], i0[1], i0[2])],
            d[idx(i1[0], i0[1], i0[2])],
            f[0],
        );
        let c10 = lerp(
            d[idx(i0[0], i1[1], i0[2])],
            d[idx(i1[0], i1[1], i0[2])],
            f[0],
        );
        let c01 = lerp(
            d[idx(i0[0], i0[1], i1[2])],
            d[idx(i1[0], i0[1], i1[2])],
            f[0],
        );
        let c11 = lerp(
            d[idx(i0[0], i1[1], i1[2])],
            d[idx(i1[0], i1[1], i1[2])],
            f[0],
        );
        lerp(lerp(c00, c10, f[1]), lerp(c01, c11, f[1]), f[2])
    }
}

#[inline]
fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// Baseline voxels compared on one level: world position and windowed value.
struct Points {
    world: Vec<V3>,
    value: Vec<f32>,
}

/// Register `followup` to `baseline`: the rigid transform from the baseline's world to the
/// follow-up's, and how good it is.
pub fn register(
    baseline: Image<'_>,
    followup: Image<'_>,
    cfg: &RegistrationConfig,
) -> Result<Registration> {
    check(&baseline, "baseline")?;
    check(&followup, "follow-up")?;
    let (w0, w1) = cfg.window_hu;
    if w0.is_nan() || w1.is_nan() || w1 <= w0 || cfg.max_points < 100 {
        return Err(Error::InvalidInput(format!(
            "registration window {:?} HU and {} points: the window must be increasing and at \
             least 100 points compared",
            cfg.window_hu, cfg.max_points
        )));
    }
    let c_fixed = brain_centroid(&baseline)?;
    let c_moving = brain_centroid(&followup)?;
    let mut params = [
        0.0,
        0.0,
        0.0,
        c_moving[0] - c_fixed[0],
        c_moving[1] - c_fixed[1],
        c_moving[2] - c_fixed[2],
    ];
    let mut levels = Vec::new();
    let mut coarse_levels: Vec<f64> = cfg.levels_mm.clone();
    coarse_levels.retain(|h| h.is_finite() && *h > 0.0);
    let (fixed_native, moving_native) = crate::parallel::join(
        || Native::new(&baseline, cfg.window_hu),
        || Native::new(&followup, cfg.window_hu),
    );
    let (fixed_native, moving_native) = (fixed_native?, moving_native?);
    let mut fixed_region: Option<(Grid, Vec<u8>)> = None;
    for (li, &h) in coarse_levels.iter().enumerate() {
        let (fg, fbrain) = iso_grid(&baseline, &fixed_native, h, cfg)?;
        let (mg, _) = iso_grid(&followup, &moving_native, h, cfg)?;
        let region = dilate(&fbrain, fg.dims, (cfg.margin_mm / h).ceil() as usize);
        let pts = grid_points(&fg, &region, cfg.max_points);
        let mut evals = 0;
        // The first level starts from the geometry and may be far off; later ones refine.
        let step = if li == 0 { 2.0 * h } else { h };
        let min_step = h / 8.0;
        if li == 0 && cfg.start_angle_deg > 0.0 {
            // The starts only pick a basin: a fifth of the level's points tell them apart.
            let few = grid_points(&fg, &region, cfg.max_points.min(8_000));
            let a = cfg.start_angle_deg.to_radians();
            let mut best = (f64::INFINITY, params);
            let mut starts = vec![params];
            for axis in 0..3 {
                for s in [-1.0, 1.0] {
                    let mut p = params;
                    p[axis] = s * a;
                    starts.push(p);
                }
            }
            for s in starts {
                let (p, c, e) = compass(&few, &mg, c_fixed, cfg, s, step, h / 2.0);
                evals += e;
                if c < best.0 {
                    best = (c, p);
                }
            }
            params = best.1;
        }
        let (mut p, mut c, e) = compass(&pts, &mg, c_fixed, cfg, params, step, min_step);
        evals += e;
        // Coordinate moves stall in valleys where rotation and translation are coupled; a
        // restart with a fresh step walks on along them (up to three times, while it helps).
        for _ in 0..3 {
            let (q, cq, e) = compass(&pts, &mg, c_fixed, cfg, p, h / 2.0, min_step);
            evals += e;
            if cq >= c - 1e-6 {
                break;
            }
            (p, c) = (q, cq);
        }
        params = p;
        levels.push(Level {
            spacing_mm: h,
            points: pts.world.len(),
            evaluations: evals,
            similarity: 1.0 - c,
        });
        fixed_region = Some((fg, region));
    }
    // The native voxels: the follow-up's own stack, the baseline's own voxels near its brain.
    let moving = moving_native.hu;
    if cfg.native_level || coarse_levels.is_empty() {
        let pts = native_points(&baseline, fixed_region.as_ref(), cfg)?;
        let finest = coarse_levels.last().copied().unwrap_or(2.0);
        // Down to 0.1 mm steps (rotations: 0.1 mm at RADIUS_MM): a tenth of the 1 mm target;
        // each halving below costs as much as the one before on the scan's full-size grid.
        // The last grid level ended at steps of finest/8, so the native level starts there.
        let (p, c, e) = compass(&pts, &moving, c_fixed, cfg, params, finest / 8.0, 0.1);
        params = p;
        levels.push(Level {
            spacing_mm: 0.0,
            points: pts.world.len(),
            evaluations: e,
            similarity: 1.0 - c,
        });
    }
    let transform = Rigid::from_params(&params, c_fixed);
    let quality = quality(&baseline, &followup, &moving, &transform, cfg)?;
    Ok(Registration {
        transform,
        similarity: cfg.similarity,
        quality,
        levels,
    })
}

fn check(img: &Image<'_>, what: &str) -> Result<()> {
    if img.hu.dim() != img.brain.dim() {
        return Err(Error::InvalidInput(format!(
            "the {what} scan is {:?} voxels but its brain mask is {:?} (z, y, x)",
            img.hu.dim(),
            img.brain.dim()
        )));
    }
    let det = det3(&linear(img.affine));
    if !det.is_finite() || det.abs() < 1e-9 {
        return Err(Error::InvalidInput(format!(
            "the {what} scan's affine is degenerate (determinant {det}): it cannot be placed in \
             the world"
        )));
    }
    Ok(())
}

/// World centroid of the brain mask.
fn brain_centroid(img: &Image<'_>) -> Result<V3> {
    let mut s = [0.0f64; 3];
    let mut n = 0usize;
    for ((z, y, x), &b) in img.brain.indexed_iter() {
        if b != 0 {
            s[0] += x as f64;
            s[1] += y as f64;
            s[2] += z as f64;
            n += 1;
        }
    }
    if n == 0 {
        return Err(Error::Registration(
            "no brain was found in one of the scans, so the two cannot be aligned".into(),
        ));
    }
    Ok(affine_apply(img.affine, s.map(|v| v / n as f64)))
}

/// The scan on an isotropic world-aligned grid of spacing `h` around its brain: each cell the
/// mean of the scan's voxels falling in it (so 0.5 mm pixels are averaged, not skipped), cells
/// no voxel falls in (between thick slices) sampled trilinearly, then a [1 2 1] smoothing. Also
/// the brain mask on that grid (majority of the voxels in the cell).
fn iso_grid(
    img: &Image<'_>,
    native: &Native,
    h: f64,
    cfg: &RegistrationConfig,
) -> Result<(Grid, Vec<u8>)> {
    let (nz, ny, nx) = img.hu.dim();
    let bb = bounding_box(img.brain).ok_or_else(|| {
        Error::Registration("no brain was found in one of the scans to align".into())
    })?;
    let margin = cfg.margin_mm + 2.0 * h;
    let (mut lo, mut hi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
    for c in 0..8 {
        let corner = |bit: usize, axis: usize| {
            (if c & bit == 0 {
                bb.start[axis]
            } else {
                bb.end[axis] - 1
            }) as f64
        };
        let p = [corner(1, 2), corner(2, 1), corner(4, 0)];
        let w = affine_apply(img.affine, p);
        for k in 0..3 {
            lo[k] = lo[k].min(w[k] - margin);
            hi[k] = hi[k].max(w[k] + margin);
        }
    }
    let dims = [0, 1, 2].map(|k| ((hi[k] - lo[k]) / h).ceil() as usize + 1);
    let cells = dims[0] * dims[1] * dims[2];
    let (w0, w1) = cfg.window_hu;
    // Only the voxels near the brain box matter; the stack-index box covering the world box.
    let inv = native.hu.to_index;
    let (mut slo, mut shi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
    for c in 0..8 {
        let w = [
            if c & 1 == 0 { lo[0] } else { hi[0] },
            if c & 2 == 0 { lo[1] } else { hi[1] },
            if c & 4 == 0 { lo[2] } else { hi[2] },
        ];
        let s = affine_apply(&inv, w);
        for k in 0..3 {
            slo[k] = slo[k].min(s[k]);
            shi[k] = shi[k].max(s[k]);
        }
    }
    let n = [nx, ny, nz];
    let r = |k: usize| {
        let a = slo[k].floor().max(0.0) as usize;
        let b = (shi[k].ceil().max(0.0) as usize + 1).min(n[k]);
        a..b.max(a)
    };
    let (rx, ry, rz) = (r(0), r(1), r(2));
    let a = img.affine;
    // Cell sums per part of the slices, natively one part per core: a fixed number of parts,
    // added in order, so the grid is the same on any machine.
    let zs: Vec<usize> = rz.collect();
    let parts = crate::parallel::map_ranges(zs.len(), ISO_PARTS, |range| -> Result<CellSums> {
        let mut acc = CellSums {
            sum: try_filled(cells, 0f32, "a registration grid")?,
            count: try_filled(cells, 0u32, "a registration grid")?,
            brain: try_filled(cells, 0u32, "a registration grid")?,
        };
        for &z in &zs[range] {
            for y in ry.clone() {
                let row = [
                    a[0][1] * y as f64 + a[0][2] * z as f64 + a[0][3],
                    a[1][1] * y as f64 + a[1][2] * z as f64 + a[1][3],
                    a[2][1] * y as f64 + a[2][2] * z as f64 + a[2][3],
                ];
                for x in rx.clone() {
                    // Nearest cell: floor(v + ½) by a cast, for v ≥ −½ (round() is a libm call
                    // on baseline x86-64, and this loop visits every voxel of the box).
                    let c = [0, 1, 2].map(|k| (row[k] + a[k][0] * x as f64 - lo[k]) / h + 0.5);
                    if c.iter()
                        .zip(dims)
                        .any(|(&v, d)| !(v >= 0.0 && v < d as f64))
                    {
                        continue;
                    }
                    let c = c.map(|v| v as usize);
                    let i = c[0] + dims[0] * (c[1] + dims[1] * c[2]);
                    acc.sum[i] += img.hu[[z, y, x]].clamp(w0, w1);
                    acc.count[i] += 1;
                    acc.brain[i] += u32::from(img.brain[[z, y, x]] != 0);
                }
            }
        }
        Ok(acc)
    });
    let mut parts = parts.into_iter();
    let mut total = parts.next().ok_or_else(|| {
        Error::Registration("internal error: no part of a registration grid".into())
    })??;
    for part in parts {
        let part = part?;
        for i in 0..cells {
            total.sum[i] += part.sum[i];
            total.count[i] += part.count[i];
            total.brain[i] += part.brain[i];
        }
    }
    let CellSums {
        sum,
        count,
        brain: brain_count,
    } = total;
    let mut data = try_filled(cells, f32::NAN, "a registration grid")?;
    let mut brain = try_filled(cells, 0u8, "a registration grid")?;
    for zc in 0..dims[2] {
        for yc in 0..dims[1] {
            for xc in 0..dims[0] {
                let i = xc + dims[0] * (yc + dims[1] * zc);
                if count[i] > 0 {
                    data[i] = sum[i] / count[i] as f32;
                    brain[i] = u8::from(2 * brain_count[i] >= count[i]);
                } else {
                    let w = [
                        lo[0] + xc as f64 * h,
                        lo[1] + yc as f64 * h,
                        lo[2] + zc as f64 * h,
                    ];
                    let s = affine_apply(&inv, w);
                    data[i] = native.hu.at_index(s);
                    brain[i] = u8::from(native.brain.at_index(s) >= 0.5);
                }
            }
        }
    }
    smooth_121(&mut data, dims);
    let mut to_index = [[0.0; 4], [0.0; 4], [0.0; 4], [0.0, 0.0, 0.0, 1.0]];
    for k in 0..3 {
        to_index[k][k] = 1.0 / h;
        to_index[k][3] = -lo[k] / h;
    }
    Ok((
        Grid {
            data,
            dims,
            to_index,
        },
        brain,
    ))
}

/// Parts of the slices [`iso_grid`] sums separately (one per core on this 2-core machine; a
/// fixed number, see there).
const ISO_PARTS: usize = 2;

/// Per-cell sums of one part of [`iso_grid`]'s voxels.
struct CellSums {
    sum: Vec<f32>,
    count: Vec<u32>,
    brain: Vec<u32>,
}

/// A scan's windowed HU and its brain mask as grids on its own voxels.
struct Native {
    hu: Grid,
    brain: Grid,
}

impl Native {
    fn new(img: &Image<'_>, (w0, w1): (f32, f32)) -> Result<Native> {
        let (nz, ny, nx) = img.hu.dim();
        let inv = invert(img.affine)?;
        let mut hu = try_filled(nx * ny * nz, 0f32, "the registration's copy of a scan")?;
        for (d, &v) in hu.iter_mut().zip(img.hu.iter()) {
            *d = v.clamp(w0, w1);
        }
        let mut brain = try_filled(nx * ny * nz, 0f32, "the registration's brain mask")?;
        for (d, &v) in brain.iter_mut().zip(img.brain.iter()) {
            *d = f32::from(u8::from(v != 0));
        }
        Ok(Native {
            hu: Grid {
                data: hu,
                dims: [nx, ny, nz],
                to_index: inv,
            },
            brain: Grid {
                data: brain,
                dims: [nx, ny, nz],
                to_index: inv,
            },
        })
    }
}

/// Separable [1 2 1]/4 smoothing that ignores missing (NaN) neighbours.
fn smooth_121(data: &mut [f32], dims: [usize; 3]) {
    let stride = [1, dims[0], dims[0] * dims[1]];
    let mut tmp = data.to_vec();
    for axis in 0..3 {
        tmp.copy_from_slice(data);
        let n = dims[axis];
        let s = stride[axis];
        for (i, out) in data.iter_mut().enumerate() {
            let c = tmp[i];
            if c.is_nan() {
                continue;
            }
            let pos = (i / s) % n;
            let (mut acc, mut w) = (2.0 * c, 2.0);
            if pos > 0 && !tmp[i - s].is_nan() {
                acc += tmp[i - s];
                w += 1.0;
            }
            if pos + 1 < n && !tmp[i + s].is_nan() {
                acc += tmp[i + s];
                w += 1.0;
            }
            *out = acc / w;
        }
    }
}

/// Box dilation of a 0/1 grid by `r` cells along each axis.
fn dilate(mask: &[u8], dims: [usize; 3], r: usize) -> Vec<u8> {
    let stride = [1, dims[0], dims[0] * dims[1]];
    let mut cur = mask.to_vec();
    for axis in 0..3 {
        let n = dims[axis];
        let s = stride[axis];
        let src = cur.clone();
        for (i, out) in cur.iter_mut().enumerate() {
            if *out != 0 {
                continue;
            }
            let pos = (i / s) % n;
            let lo = pos.saturating_sub(r);
            let hi = (pos + r).min(n - 1);
            *out = u8::from((lo..=hi).any(|p| src[i - pos * s + p * s] != 0));
        }
    }
    cur
}

/// Cells of `g` inside `region` with data: their world centres and values, a regular subsample
/// of at most `max` of them.
fn grid_points(g: &Grid, region: &[u8], max: usize) -> Points {
    let inv = invert(&g.to_index).unwrap_or(g.to_index);
    let total = region
        .iter()
        .zip(&g.data)
        .filter(|(r, v)| **r != 0 && !v.is_nan())
        .count();
    let stride = total.div_ceil(max.max(1)).max(1);
    let mut pts = Points {
        world: Vec::new(),
        value: Vec::new(),
    };
    let [nx, ny, _] = g.dims;
    let mut k = 0usize;
    for (i, (&r, &v)) in region.iter().zip(&g.data).enumerate() {
        if r == 0 || v.is_nan() {
            continue;
        }
        if k.is_multiple_of(stride) {
            let p = [
                (i % nx) as f64,
                ((i / nx) % ny) as f64,
                (i / (nx * ny)) as f64,
            ];
            pts.world.push(affine_apply(&inv, p));
            pts.value.push(v);
        }
        k += 1;
    }
    pts
}

/// The baseline's own voxels within the coarse level's dilated brain region (or its brain mask
/// when there was no coarse level), windowed, a regular subsample of at most `max_points`.
fn native_points(
    img: &Image<'_>,
    region: Option<&(Grid, Vec<u8>)>,
    cfg: &RegistrationConfig,
) -> Result<Points> {
    let (w0, w1) = cfg.window_hu;
    // Stack index → coarse-grid index, composed once.
    let to_region = region.map(|(g, r)| (affine_mul(&g.to_index, img.affine), g.dims, r));
    let inside = |x: usize, y: usize, z: usize| -> bool {
        match &to_region {
            Some((m, dims, r)) => {
                let p = affine_apply(m, [x as f64, y as f64, z as f64]);
                // Nearest cell: floor(v + ½) by a cast, for v ≥ −½ (see `iso_grid`).
                let c = p.map(|v| v + 0.5);
                if c.iter()
                    .zip(dims)
                    .any(|(&v, &d)| !(v >= 0.0 && v < d as f64))
                {
                    return false;
                }
                let c = c.map(|v| v as usize);
                r[c[0] + dims[0] * (c[1] + dims[1] * c[2])] != 0
            }
            None => img.brain[[z, y, x]] != 0,
        }
    };
    let bb = bounding_box(img.brain)
        .ok_or_else(|| Error::Registration("no brain was found in the baseline scan".into()))?;
    let (nz, ny, nx) = img.hu.dim();
    let spacing = [0, 1, 2].map(|c| {
        let a = img.affine;
        (a[0][c] * a[0][c] + a[1][c] * a[1][c] + a[2][c] * a[2][c]).sqrt() as f32
    });
    let bb = bb.padded(
        (cfg.margin_mm + 1.0) as f32,
        [spacing[2], spacing[1], spacing[0]],
        (nz, ny, nx),
    );
    // Every voxel of the box is tested: slices in parts (one per core natively), kept in order.
    let zs: Vec<usize> = (bb.start[0]..bb.end[0]).collect();
    let idx: Vec<[usize; 3]> = crate::parallel::map_ranges(zs.len(), ISO_PARTS, |range| {
        let mut part = Vec::new();
        for &z in &zs[range] {
            for y in bb.start[1]..bb.end[1] {
                for x in bb.start[2]..bb.end[2] {
                    if inside(x, y, z) {
                        part.push([x, y, z]);
                    }
                }
            }
        }
        part
    })
    .into_iter()
    .flatten()
    .collect();
    let stride = idx.len().div_ceil(cfg.max_points.max(1)).max(1);
    let mut pts = Points {
        world: Vec::with_capacity(idx.len() / stride + 1),
        value: Vec::with_capacity(idx.len() / stride + 1),
    };
    for [x, y, z] in idx.into_iter().step_by(stride) {
        pts.world
            .push(affine_apply(img.affine, [x as f64, y as f64, z as f64]));
        pts.value.push(img.hu[[z, y, x]].clamp(w0, w1));
    }
    Ok(pts)
}

/// Parts the points of [`cost`] are cut into: natively they run on every core; a fixed number
/// (not the thread count) keeps the sums, and so the registration, identical everywhere.
const COST_PARTS: usize = 16;

/// `1 − similarity` (lower is better) of the baseline points against the follow-up grid under
/// `params`; 2 when fewer than a quarter of the points land on follow-up data.
fn cost(pts: &Points, moving: &Grid, centre: V3, cfg: &RegistrationConfig, p: &[f64; 6]) -> f64 {
    let t = Rigid::from_params(p, centre).affine();
    let m = affine_mul(&moving.to_index, &t);
    // The follow-up value at each point that lands on data, with the point's own value.
    let sampled = |range: std::ops::Range<usize>| {
        pts.world[range.clone()]
            .iter()
            .zip(&pts.value[range])
            .filter_map(|(w, &f)| {
                let v = moving.at_index(affine_apply(&m, *w));
                (!v.is_nan()).then_some((f, v))
            })
    };
    match cfg.similarity {
        Similarity::Ncc => {
            // n, Σf, Σm, Σf², Σm², Σfm per part, added in part order.
            let parts = crate::parallel::map_ranges(pts.world.len(), COST_PARTS, |r| {
                let mut s = [0f64; 6];
                for (f, v) in sampled(r) {
                    let (f, v) = (f64::from(f), f64::from(v));
                    s[0] += 1.0;
                    s[1] += f;
                    s[2] += v;
                    s[3] += f * f;
                    s[4] += v * v;
                    s[5] += f * v;
                }
                s
            });
            let mut s = [0f64; 6];
            for part in &parts {
                for (a, b) in s.iter_mut().zip(part) {
                    *a += b;
                }
            }
            let [nf, sf, sm, sff, smm, sfm] = s;
            let n = nf as usize;
            if n * 4 < pts.world.len() || n < 10 {
                return 2.0;
            }
            let cov = sfm - sf * sm / nf;
            let vf = sff - sf * sf / nf;
            let vm = smm - sm * sm / nf;
            if vf <= 0.0 || vm <= 0.0 {
                return 2.0;
            }
            1.0 - cov / (vf * vm).sqrt()
        }
        Similarity::MutualInformation => {
            const B: usize = 32;
            let (w0, w1) = cfg.window_hu;
            let scale = (B - 1) as f32 / (w1 - w0);
            let parts = crate::parallel::map_ranges(pts.world.len(), COST_PARTS, |r| {
                let mut joint = [[0f64; B]; B];
                let mut n = 0usize;
                for (f, v) in sampled(r) {
                    let fb = (((f - w0) * scale).round() as usize).min(B - 1);
                    let mv = ((v - w0) * scale).clamp(0.0, (B - 1) as f32);
                    let m0 = mv.floor() as usize;
                    let m1 = (m0 + 1).min(B - 1);
                    let t = f64::from(mv - m0 as f32);
                    joint[fb][m0] += 1.0 - t;
                    joint[fb][m1] += t;
                    n += 1;
                }
                (joint, n)
            });
            let mut joint = [[0f64; B]; B];
            let mut n = 0usize;
            for (part, pn) in &parts {
                n += pn;
                for (row, prow) in joint.iter_mut().zip(part) {
                    for (a, b) in row.iter_mut().zip(prow) {
                        *a += b;
                    }
                }
            }
            if n * 4 < pts.world.len() || n < 10 {
                return 2.0;
            }
            let total = n as f64;
            let mut pf = [0f64; B];
            let mut pm = [0f64; B];
            for (i, row) in joint.iter().enumerate() {
                for (j, &c) in row.iter().enumerate() {
                    pf[i] += c;
                    pm[j] += c;
                }
            }
            let mut mi = 0.0;
            for (i, row) in joint.iter().enumerate() {
                for (j, &c) in row.iter().enumerate() {
                    if c > 0.0 {
                        mi += c / total * (c * total / (pf[i] * pm[j])).ln();
                    }
                }
            }
            1.0 - mi
        }
    }
}

/// Compass (pattern) search: try ± one step along each parameter, keep any improvement and keep
/// going that way while it improves, halve the step when no direction helps. Translations step
/// in mm, rotations by the angle that moves a point [`RADIUS_MM`] from the centre by that much.
fn compass(
    pts: &Points,
    moving: &Grid,
    centre: V3,
    cfg: &RegistrationConfig,
    start: [f64; 6],
    step_mm: f64,
    min_step_mm: f64,
) -> ([f64; 6], f64, usize) {
    const MAX_EVALS: usize = 2_000;
    let mut p = start;
    let mut best = cost(pts, moving, centre, cfg, &p);
    let mut evals = 1;
    let mut step = step_mm;
    while step >= min_step_mm && evals < MAX_EVALS {
        let mut improved = false;
        for i in 0..6 {
            let d = if i < 3 { step / RADIUS_MM } else { step };
            for s in [1.0, -1.0] {
                let mut q = p;
                q[i] += s * d;
                let c = cost(pts, moving, centre, cfg, &q);
                evals += 1;
                if c < best {
                    best = c;
                    p = q;
                    improved = true;
                    loop {
                        q[i] += s * d;
                        let c = cost(pts, moving, centre, cfg, &q);
                        evals += 1;
                        if c < best && evals < MAX_EVALS {
                            best = c;
                            p = q;
                        } else {
                            break;
                        }
                    }
                    break;
                }
            }
        }
        if !improved {
            step /= 2.0;
        }
    }
    (p, best, evals)
}

/// Quality after registration: NCC on the baseline's brain voxels, field-of-view and brain
/// overlap, and the verdict.
fn quality(
    baseline: &Image<'_>,
    followup: &Image<'_>,
    moving: &Grid,
    t: &Rigid,
    cfg: &RegistrationConfig,
) -> Result<Quality> {
    let total = baseline.brain.iter().filter(|&&b| b != 0).count();
    let stride = total.div_ceil(200_000).max(1);
    let m = affine_mul(&moving.to_index, &t.affine());
    let (w0, w1) = cfg.window_hu;
    let (mut n, mut in_fov, mut in_brain) = (0usize, 0usize, 0usize);
    let (mut sf, mut sm, mut sff, mut smm, mut sfm) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let (fz, fy, fx) = followup.brain.dim();
    let mut k = 0usize;
    for ((z, y, x), &b) in baseline.brain.indexed_iter() {
        if b == 0 {
            continue;
        }
        k += 1;
        if !k.is_multiple_of(stride) {
            continue;
        }
        n += 1;
        let w = affine_apply(baseline.affine, [x as f64, y as f64, z as f64]);
        let p = affine_apply(&m, w);
        let v = moving.at_index(p);
        if v.is_nan() {
            continue;
        }
        in_fov += 1;
        let c = p.map(|v| v.round().max(0.0) as usize);
        if c[0] < fx && c[1] < fy && c[2] < fz && followup.brain[[c[2], c[1], c[0]]] != 0 {
            in_brain += 1;
        }
        let f = f64::from(baseline.hu[[z, y, x]].clamp(w0, w1));
        let v = f64::from(v);
        sf += f;
        sm += v;
        sff += f * f;
        smm += v * v;
        sfm += f * v;
    }
    let nf = in_fov.max(1) as f64;
    let (vf, vm) = (sff - sf * sf / nf, smm - sm * sm / nf);
    let ncc = if vf > 0.0 && vm > 0.0 {
        (sfm - sf * sm / nf) / (vf * vm).sqrt()
    } else {
        0.0
    };
    let fov_overlap = in_fov as f64 / n.max(1) as f64;
    let brain_overlap = in_brain as f64 / in_fov.max(1) as f64;
    let mut reasons = Vec::new();
    if ncc < cfg.poor_ncc {
        reasons.push(format!(
            "the aligned scans correlate poorly inside the brain (NCC {ncc:.2}, below {:.2})",
            cfg.poor_ncc
        ));
    }
    if brain_overlap < cfg.poor_brain_overlap {
        reasons.push(format!(
            "only {:.0} % of the baseline brain lands in the follow-up's brain (below {:.0} %)",
            100.0 * brain_overlap,
            100.0 * cfg.poor_brain_overlap
        ));
    }
    if fov_overlap < 0.2 {
        reasons.push(format!(
            "the follow-up covers only {:.0} % of the baseline brain",
            100.0 * fov_overlap
        ));
    }
    let poor = !reasons.is_empty();
    Ok(Quality {
        ncc,
        fov_overlap,
        brain_overlap,
        poor,
        reason: poor.then(|| {
            let mut s = reasons.join("; ");
            s.push_str(": the registration is poor, so the haematoma matching and the overlay may be wrong; the volumes are measured on each scan separately and stay valid");
            s
        }),
    })
}

/// Mean and largest distance (mm) between where `a` and `b` send the baseline brain voxels: the
/// registration error against a known transform.
pub fn brain_error_mm(a: &Rigid, b: &Rigid, img: &Image<'_>) -> (f64, f64) {
    let (mut sum, mut max, mut n) = (0.0f64, 0.0f64, 0usize);
    let total = img.brain.iter().filter(|&&v| v != 0).count();
    let stride = total.div_ceil(500_000).max(1);
    for (k, ((z, y, x), _)) in img
        .brain
        .indexed_iter()
        .filter(|(_, v)| **v != 0)
        .enumerate()
    {
        if !k.is_multiple_of(stride) {
            continue;
        }
        let w = affine_apply(img.affine, [x as f64, y as f64, z as f64]);
        let d = sub(a.apply(w), b.apply(w));
        let e = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        sum += e;
        max = max.max(e);
        n += 1;
    }
    (sum / n.max(1) as f64, max)
}

// ---- small linear algebra -----------------------------------------------------------------

fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn mat_vec(m: &M3, v: V3) -> V3 {
    [0, 1, 2].map(|r| m[r][0] * v[0] + m[r][1] * v[1] + m[r][2] * v[2])
}

fn mat_mul(a: &M3, b: &M3) -> M3 {
    let mut o = [[0.0; 3]; 3];
    for (r, row) in o.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    o
}

fn linear(a: &Affine) -> M3 {
    [0, 1, 2].map(|r| [a[r][0], a[r][1], a[r][2]])
}

fn det3(m: &M3) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// `a · (p, 1)`.
pub(crate) fn affine_apply(a: &Affine, p: V3) -> V3 {
    [0, 1, 2].map(|r| a[r][0] * p[0] + a[r][1] * p[1] + a[r][2] * p[2] + a[r][3])
}

/// `a · b`.
pub(crate) fn affine_mul(a: &Affine, b: &Affine) -> Affine {
    let mut o = [[0.0; 4]; 4];
    for (r, row) in o.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..4).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    o
}

/// Inverse of an affine (3×3 part by its adjugate).
pub(crate) fn invert(a: &Affine) -> Result<Affine> {
    let m = linear(a);
    let det = det3(&m);
    if !det.is_finite() || det.abs() < 1e-12 {
        return Err(Error::InvalidInput(format!(
            "the affine {a:?} cannot be inverted (determinant {det})"
        )));
    }
    let mut inv = [[0.0; 3]; 3];
    for (r, row) in inv.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
            let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
            *v = (m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]) / det;
        }
    }
    let t = [a[0][3], a[1][3], a[2][3]];
    let it = mat_vec(&inv, t);
    let mut o = [[0.0; 4], [0.0; 4], [0.0; 4], [0.0, 0.0, 0.0, 1.0]];
    for r in 0..3 {
        o[r][..3].copy_from_slice(&inv[r]);
        o[r][3] = -it[r];
    }
    Ok(o)
}

#[cfg(test)]
mod tests;
