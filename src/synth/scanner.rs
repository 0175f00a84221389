//! The scanner simulation: pose, acquisition grid, slice-profile averaging, noise and storage.
//!
//! Each output voxel is the average of several samples spread across its slice profile (the
//! nominal slice thickness, along the slice normal, so gantry-tilted slices average along the tilted
//! normal). Each sample maps its world position through the inverse pose (rigid rotation, scaling,
//! mirror, smooth elastic warp) into the base anatomy, where the lesions, confounders and tissue
//! are read. Averaging tissue and blood fraction together is what makes thick slices blur small
//! bleeds and the inner skull, and it defines the mask: blood fraction ≥ ½ of the voxel.

// Axis loops (`for a in 0..3`) index several 3-vectors and matrices at once; iterator chains
// over one of them would hide the symmetry between the others.
#![allow(clippy::needless_range_loop)]

use ndarray::{Array3, Axis};

use super::anatomy::Anatomy;
use super::confound::Confounders;
use super::field::{CoarseField, M3, V3, Waves, add, matmul, mul, rotation, scale};
use super::lesion::Lesions;
use super::rng::Rng;
use crate::error::try_filled;
use crate::io::{Affine, Storage};
use crate::{Error, Result};

/// How the anatomy is placed in the world: world point → anatomy point.
#[derive(Debug, Clone)]
pub struct Pose {
    /// Anatomy point that lands on the world origin.
    centre: V3,
    /// World → anatomy linear part (mirror · 1/scale · rotationᵀ).
    inv: M3,
    /// Anatomy → world linear part (for bounding boxes).
    fwd: M3,
    /// Smooth displacement (mm) added to a world point before the linear part.
    elastic: Option<CoarseField>,
}

impl Pose {
    /// The identity placement (centre of the brain at the world origin).
    pub fn identity(anat: &Anatomy) -> Pose {
        let i = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        Pose {
            centre: anat.centre,
            inv: i,
            fwd: i,
            elastic: None,
        }
    }

    /// A rigid placement: the anatomy point at world `x` in the identity placement lands at
    /// `rotation · x + shift` (follow-up pairs with a known head movement).
    pub fn rigid(anat: &Anatomy, rotation: M3, shift: V3) -> Pose {
        let inv = super::field::transpose(&rotation);
        Pose {
            centre: super::field::sub(anat.centre, mul(&inv, shift)),
            inv,
            fwd: rotation,
            elastic: None,
        }
    }

    /// A random placement: yaw ±10°, pitch ±12°, roll ±6°, scale 0.9–1.1 (±4 % per axis), a
    /// left–right mirror half of the time, and an elastic warp of up to ~3 mm.
    pub fn random(rng: &mut Rng, anat: &Anatomy) -> Pose {
        let r = rotation(
            rng.range(-10.0, 10.0).to_radians(),
            rng.range(-12.0, 12.0).to_radians(),
            rng.range(-6.0, 6.0).to_radians(),
        );
        let s = rng.range(0.9, 1.1);
        let sc = [0, 1, 2].map(|_| s * rng.range(0.96, 1.04));
        let mirror = if rng.chance(0.5) { -1.0 } else { 1.0 };
        let fwd_s = [
            [sc[0] * mirror, 0.0, 0.0],
            [0.0, sc[1], 0.0],
            [0.0, 0.0, sc[2]],
        ];
        let inv_s = [
            [mirror / sc[0], 0.0, 0.0],
            [0.0, 1.0 / sc[1], 0.0],
            [0.0, 0.0, 1.0 / sc[2]],
        ];
        let fwd = matmul(&r, &fwd_s);
        let inv = matmul(&inv_s, &super::field::transpose(&r));
        let amp = rng.range(0.0, 3.0);
        let waves = [0, 1, 2].map(|_| Waves::new(rng, 4, 60.0, 160.0));
        let mut pose = Pose {
            centre: anat.centre,
            inv,
            fwd,
            elastic: None,
        };
        if amp > 0.3 {
            let (lo, hi) = pose.world_box(anat.head_box);
            let lo = add(lo, [-20.0; 3]);
            let hi = add(hi, [20.0; 3]);
            pose.elastic = Some(CoarseField::sample(lo, hi, 8.0, |p| {
                [
                    amp * waves[0].at(p),
                    amp * waves[1].at(p),
                    amp * waves[2].at(p),
                ]
            }));
        }
        pose
    }

    /// The anatomy point imaged at world point `w`.
    pub fn to_anatomy(&self, w: V3) -> V3 {
        let w = match &self.elastic {
            Some(e) => add(w, e.at(w)),
            None => w,
        };
        add(self.centre, mul(&self.inv, w))
    }

    /// The world position of anatomy point `a` (without the elastic warp, a few mm at most).
    pub fn to_world(&self, a: V3) -> V3 {
        mul(&self.fwd, super::field::sub(a, self.centre))
    }

    /// World bounding box of an anatomy box (its 8 corners mapped).
    pub fn world_box(&self, b: (V3, V3)) -> (V3, V3) {
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for c in 0..8 {
            let p = [
                if c & 1 == 0 { b.0[0] } else { b.1[0] },
                if c & 2 == 0 { b.0[1] } else { b.1[1] },
                if c & 4 == 0 { b.0[2] } else { b.1[2] },
            ];
            let w = self.to_world(p);
            for a in 0..3 {
                lo[a] = lo[a].min(w[a]);
                hi[a] = hi[a].max(w[a]);
            }
        }
        (lo, hi)
    }
}

/// The acquisition: grid, slice profile, noise, and how the file is stored.
#[derive(Debug, Clone)]
pub struct Acquisition {
    /// Voxel counts `(ni, nj, nk)` of the canonical grid (i → x, j → y, k → z).
    pub dims: [usize; 3],
    /// In-plane pixel size (mm).
    pub pixel: f64,
    /// Slice thickness = slice spacing (mm) along the table.
    pub thickness: f64,
    /// Gantry tilt (degrees; 0 = none).
    pub tilt_deg: f64,
    /// Canonical voxel index → world (mm), possibly sheared by the tilt.
    pub affine: Affine,
    /// Sample offsets (mm) along the slice normal averaged into each voxel.
    pub profile: Vec<f64>,
    /// Standard deviation of the added noise (HU; 0 = none).
    pub noise_sd: f64,
    /// Storage of the written image.
    pub storage: Storage,
    /// File axis `a` holds canonical axis `order[a]` (0 = x, 1 = y, 2 = z) ...
    pub order: [usize; 3],
    /// ... running backwards when `flip[a]`.
    pub flip: [bool; 3],
}

/// Knobs for an acquisition; [`AcqSpec::random`] draws a realistic spread.
#[derive(Debug, Clone)]
pub struct AcqSpec {
    /// In-plane pixel (mm) wanted.
    pub pixel: f64,
    /// Largest in-plane matrix (the pixel grows when the head does not fit).
    pub max_matrix: usize,
    /// Slice thickness (mm).
    pub thickness: f64,
    /// Most slices kept (a slab around `slab_centre_z` when the brain needs more).
    pub max_slices: usize,
    /// Gantry tilt (degrees).
    pub tilt_deg: f64,
    /// Noise standard deviation (HU).
    pub noise_sd: f64,
    /// Storage.
    pub storage: Storage,
    /// File axis order and flips.
    pub order: [usize; 3],
    /// Flips.
    pub flip: [bool; 3],
    /// Margin below / above the brain (mm).
    pub margin: (f64, f64),
    /// In-plane shift of the field of view (mm).
    pub shift: [f64; 2],
}

/// Slice thicknesses seen in practice (mm).
const COMMON_THICKNESS: [f64; 9] = [0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0];

impl AcqSpec {
    /// A random acquisition within the ranges of clinical head CT.
    pub fn random(rng: &mut Rng) -> AcqSpec {
        let pixel = if rng.chance(0.5) {
            rng.range(0.4, 0.6)
        } else {
            rng.range(0.6, 1.0)
        };
        let max_matrix = if rng.chance(0.25) { 512 } else { 384 };
        let thickness = if rng.chance(0.5) {
            COMMON_THICKNESS[rng.index(COMMON_THICKNESS.len())]
        } else {
            rng.range(0.6, 6.0)
        };
        let tilt_deg = if rng.chance(0.2) {
            rng.sign() * rng.range(8.0, 25.0)
        } else {
            0.0
        };
        let storage = match rng.weighted(&[0.45, 0.25, 0.3]) {
            0 => Storage::I16 {
                slope: 1.0,
                inter: 0.0,
            },
            1 => Storage::I16 {
                slope: 1.0,
                inter: -1024.0,
            },
            _ => {
                let lo = rng.range(-40.0, -10.0);
                let hi = rng.range(100.0, 180.0);
                Storage::U8 {
                    slope: ((hi - lo) / 255.0) as f32,
                    inter: lo as f32,
                }
            }
        };
        let (order, flip) = match rng.weighted(&[0.5, 0.2, 0.3]) {
            0 => ([0, 1, 2], [false; 3]),
            1 => ([0, 1, 2], [true, false, false]),
            _ => {
                let perms = [
                    [0, 1, 2],
                    [0, 2, 1],
                    [1, 0, 2],
                    [1, 2, 0],
                    [2, 0, 1],
                    [2, 1, 0],
                ];
                (
                    perms[rng.index(6)],
                    [rng.chance(0.5), rng.chance(0.5), rng.chance(0.5)],
                )
            }
        };
        AcqSpec {
            pixel,
            max_matrix,
            thickness,
            max_slices: 64,
            tilt_deg,
            noise_sd: rng.range(3.0, 8.0),
            storage,
            order,
            flip,
            margin: (rng.range(4.0, 20.0), rng.range(0.0, 10.0)),
            shift: [rng.range(-5.0, 5.0), rng.range(-5.0, 5.0)],
        }
    }

    /// Lay the grid over the head placed by `pose`; `focus_z` (world mm) picks the slab when the
    /// brain needs more than `max_slices`.
    pub fn grid(
        &self,
        anat: &Anatomy,
        pose: &Pose,
        focus_z: Option<f64>,
        rng: &mut Rng,
    ) -> Result<Acquisition> {
        if !(self.pixel > 0.0 && self.thickness > 0.0 && self.max_matrix > 0 && self.max_slices > 0)
        {
            return Err(Error::InvalidInput(format!(
                "acquisition pixel {} mm, thickness {} mm, matrix {}, slices {}: all must be \
                 positive",
                self.pixel, self.thickness, self.max_matrix, self.max_slices
            )));
        }
        let (hlo, hhi) = pose.world_box(anat.head_box);
        let (blo, bhi) = pose.world_box(anat.brain_box);
        let fov = (hhi[0] - hlo[0]).max(hhi[1] - hlo[1]) + 10.0;
        let mut pixel = self.pixel;
        let mut n = (fov / pixel).ceil() as usize;
        if n > self.max_matrix {
            n = self.max_matrix;
            pixel = fov / n as f64;
        }
        let t = self.thickness;
        let z_lo = blo[2] - self.margin.0;
        let z_hi = bhi[2] + self.margin.1;
        let mut nk = ((z_hi - z_lo) / t).ceil().max(1.0) as usize;
        let mut z0 = z_lo;
        if nk > self.max_slices {
            let span = self.max_slices as f64 * t;
            let centre = focus_z
                .map(|z| z + rng.range(-0.25, 0.25) * span)
                .unwrap_or_else(|| rng.range(z_lo + span / 2.0, z_hi - span / 2.0));
            z0 = (centre - span / 2.0).clamp(z_lo, z_hi - span);
            nk = self.max_slices;
        }
        let (st, ct) = self.tilt_deg.to_radians().sin_cos();
        let half = (n as f64 - 1.0) / 2.0;
        let cx = (hlo[0] + hhi[0]) / 2.0 + self.shift[0];
        let cy = (hlo[1] + hhi[1]) / 2.0 + self.shift[1];
        let origin = [
            cx - half * pixel,
            cy - half * pixel * ct,
            z0 - half * pixel * st,
        ];
        let affine = [
            [pixel, 0.0, 0.0, origin[0]],
            [0.0, pixel * ct, 0.0, origin[1]],
            [0.0, pixel * st, t, origin[2]],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let width = t * ct;
        // One sample per ~1.2 mm of profile: finer than that adds nothing, since the base anatomies
        // have 1.5–2 mm slices.
        let m = ((width / 1.2).ceil() as usize).clamp(1, 6);
        let profile = (0..m)
            .map(|i| width * ((i as f64 + 0.5) / m as f64 - 0.5))
            .collect();
        Ok(Acquisition {
            dims: [n, n, nk],
            pixel,
            thickness: t,
            tilt_deg: self.tilt_deg,
            affine,
            profile,
            noise_sd: self.noise_sd,
            storage: self.storage,
            order: self.order,
            flip: self.flip,
        })
    }
}

impl Acquisition {
    /// Volume of one voxel (mL): |det| of the sheared grid.
    pub fn voxel_ml(&self) -> f64 {
        let a = &self.affine;
        let det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
        det.abs() / 1000.0
    }

    /// World position of canonical voxel `(i, j, k)`.
    pub fn world(&self, i: f64, j: f64, k: f64) -> V3 {
        let a = &self.affine;
        [0, 1, 2].map(|r| a[r][0] * i + a[r][1] * j + a[r][2] * k + a[r][3])
    }

    /// Unit normal of the slice planes.
    pub fn normal(&self) -> V3 {
        let (st, ct) = self.tilt_deg.to_radians().sin_cos();
        [0.0, -st, ct]
    }

    /// A short storage label for `cases.tsv` ("i16", "i16-1024", "u8*0.55-25").
    pub fn storage_label(&self) -> String {
        match self.storage {
            Storage::I16 { inter: 0.0, .. } => "i16".into(),
            Storage::I16 { slope, inter } => format!("i16*{slope}{inter:+}"),
            Storage::U8 { slope, inter } => format!("u8*{slope:.3}{inter:+.1}"),
            Storage::F32 => "f32".into(),
        }
    }

    /// Axis codes of the stored file ("RAS", "LAS", "SPL", ...).
    pub fn axis_codes(&self) -> String {
        (0..3)
            .map(|a| match (self.order[a], self.flip[a]) {
                (0, false) => 'R',
                (0, true) => 'L',
                (1, false) => 'A',
                (1, true) => 'P',
                (_, false) => 'S',
                (_, true) => 'I',
            })
            .collect()
    }
}

/// Density of air (HU), outside the anatomy.
const AIR_HU: f32 = -1024.0;

/// What the renderer produces on the canonical grid (`[k, j, i]` = `[z, y, x]`).
#[derive(Debug, Clone)]
pub struct Rendered {
    /// HU before noise.
    pub clean: Array3<f32>,
    /// Blood fraction of each voxel (0..1).
    pub blood: Array3<f32>,
    /// 1 where the voxel centre is in the anatomy's brain mask.
    pub brain: Array3<u8>,
    /// 1 where calcification or falx fills more than half of the voxel (never blood, so never in
    /// the mask).
    pub confounder: Array3<u8>,
}

/// Render the case: every voxel averaged over its slice profile.
pub fn render(
    anat: &Anatomy,
    pose: &Pose,
    lesions: &Lesions,
    confounders: &Confounders,
    acq: &Acquisition,
    mut progress: impl FnMut(usize),
) -> Result<Rendered> {
    let [ni, nj, nk] = acq.dims;
    let n = ni * nj * nk;
    let shape = (nk, nj, ni);
    let mut clean = try_filled(n, 0f32, "the simulated image")?;
    let mut blood = try_filled(n, 0f32, "the blood fraction")?;
    let mut brain = try_filled(n, 0u8, "the brain mask of the simulated image")?;
    let mut confounder = try_filled(n, 0u8, "the confounder map")?;
    let normal = acq.normal();
    let offsets: Vec<V3> = acq.profile.iter().map(|&u| scale(normal, u)).collect();
    let mid = offsets.len() / 2;
    let m = offsets.len() as f64;
    // Air around the head needs no sampling: the head's world box, padded by the elastic warp's
    // amplitude and the slice profile.
    let (hlo, hhi) = pose.world_box(anat.head_box);
    let pad = 8.0 + acq.thickness;
    let outside = |w: V3| (0..3).any(|a| w[a] < hlo[a] - pad || w[a] > hhi[a] + pad);
    let mut idx = 0;
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let centre = acq.world(i as f64, j as f64, k as f64);
                if outside(centre) {
                    clean[idx] = AIR_HU;
                    idx += 1;
                    continue;
                }
                let (mut hu_sum, mut f_sum, mut solid_sum) = (0.0f64, 0.0f64, 0.0f64);
                for (s, off) in offsets.iter().enumerate() {
                    let p = pose.to_anatomy(add(centre, *off));
                    let q = lesions.displace(p);
                    let base = anat.hu_at(q);
                    if base < -500.0 && !lesions.close_to(p, 0.0) {
                        hu_sum += f64::from(base);
                        continue;
                    }
                    let (mut t, solid) = confounders.apply(base, q, anat, acq.pixel);
                    let (we, ehu) = lesions.oedema(p);
                    if we > 0.0 && (5.0..70.0).contains(&base) {
                        t += (ehu - t) * we as f32;
                    }
                    let (f, bhu) = lesions.blood(p, q, anat, acq.pixel);
                    let f = f * (1.0 - solid);
                    hu_sum += f64::from(t) * (1.0 - f) + f64::from(bhu) * f;
                    f_sum += f;
                    solid_sum += solid;
                    if s == mid {
                        brain[idx] = u8::from(anat.brain_at(q) >= 0.5);
                    }
                }
                clean[idx] = (hu_sum / m) as f32;
                blood[idx] = (f_sum / m) as f32;
                confounder[idx] = u8::from(solid_sum / m > 0.5);
                idx += 1;
            }
        }
        progress(k);
    }
    let arr = |v: Vec<f32>| {
        Array3::from_shape_vec(shape, v)
            .map_err(|e| Error::InvalidInput(format!("render shape {shape:?}: {e}")))
    };
    let arr8 = |v: Vec<u8>| {
        Array3::from_shape_vec(shape, v)
            .map_err(|e| Error::InvalidInput(format!("render shape {shape:?}: {e}")))
    };
    Ok(Rendered {
        clean: arr(clean)?,
        blood: arr(blood)?,
        brain: arr8(brain)?,
        confounder: arr8(confounder)?,
    })
}

/// Add CT-like noise: Gaussian, mildly correlated in-plane (a [1 2 1]² kernel, as reconstruction
/// kernels correlate neighbouring pixels), scaled to standard deviation `sd` HU.
pub fn add_noise(img: &mut Array3<f32>, sd: f64, rng: &mut Rng) -> Result<()> {
    if sd <= 0.0 {
        return Ok(());
    }
    let (nk, nj, ni) = img.dim();
    let mut white = try_filled(nj * ni, 0f32, "the noise field")?;
    let mut tmp = try_filled(nj * ni, 0f32, "the noise field")?;
    let mut blurred = try_filled(nj * ni, 0f32, "the noise field")?;
    // Σw² of the separable [1 2 1]/4 kernel in 2-D is (6/16)², so this restores the wanted sd.
    let gain = (sd / (6.0 / 16.0)) as f32;
    for k in 0..nk {
        for v in white.iter_mut() {
            *v = rng.normal() as f32;
        }
        blur_121(&white, nj, ni, &mut tmp, &mut blurred);
        for (o, &b) in img.index_axis_mut(Axis(0), k).iter_mut().zip(&blurred) {
            *o += gain * b;
        }
    }
    Ok(())
}

/// `out` = the `rows`×`cols` plane `src` blurred by the separable [1 2 1]/4 kernel, edges clamped;
/// `tmp` is work space; all three hold at least `rows`×`cols` values. Why this kernel: white noise
/// through it has the short-range correlation of reconstructed CT noise, and its 2-D Σw² is
/// (6/16)², so callers can rescale to a wanted sd. Shared by the scanner simulation and
/// training's augmentation, so both make the same grain.
pub fn blur_121(src: &[f32], rows: usize, cols: usize, tmp: &mut [f32], out: &mut [f32]) {
    let (r, c) = (rows, cols);
    debug_assert!(src.len() >= r * c && tmp.len() >= r * c && out.len() >= r * c);
    for i in 0..r {
        for j in 0..c {
            let l = src[i * c + j.saturating_sub(1)];
            let rt = src[i * c + (j + 1).min(c - 1)];
            tmp[i * c + j] = 0.25 * l + 0.5 * src[i * c + j] + 0.25 * rt;
        }
    }
    for i in 0..r {
        for j in 0..c {
            let u = tmp[i.saturating_sub(1) * c + j];
            let d = tmp[(i + 1).min(r - 1) * c + j];
            out[i * c + j] = 0.25 * u + 0.5 * tmp[i * c + j] + 0.25 * d;
        }
    }
}

/// The canonical volume in the file's axis order, and the file's affine.
pub fn to_file_order<T: Copy + Default>(
    acq: &Acquisition,
    canon: &Array3<T>,
) -> Result<(Array3<T>, Affine)> {
    let n = acq.dims;
    let fd = [0, 1, 2].map(|a| n[acq.order[a]]);
    let mut out = try_filled(
        fd[0] * fd[1] * fd[2],
        T::default(),
        "the image in file order",
    )?;
    let mut o = 0;
    for fk in 0..fd[2] {
        for fj in 0..fd[1] {
            for fi in 0..fd[0] {
                let f = [fi, fj, fk];
                let mut c = [0usize; 3];
                for a in 0..3 {
                    let ax = acq.order[a];
                    c[ax] = if acq.flip[a] { n[ax] - 1 - f[a] } else { f[a] };
                }
                out[o] = canon[[c[2], c[1], c[0]]];
                o += 1;
            }
        }
    }
    let mut aff = acq.affine;
    for a in 0..3 {
        let ax = acq.order[a];
        let sign = if acq.flip[a] { -1.0 } else { 1.0 };
        for r in 0..3 {
            aff[r][a] = acq.affine[r][ax] * sign;
        }
    }
    for r in 0..3 {
        aff[r][3] = acq.affine[r][3];
        for a in 0..3 {
            if acq.flip[a] {
                let ax = acq.order[a];
                aff[r][3] += acq.affine[r][ax] * (n[ax] - 1) as f64;
            }
        }
    }
    let arr = Array3::from_shape_vec((fd[2], fd[1], fd[0]), out)
        .map_err(|e| Error::InvalidInput(format!("file-order shape {fd:?}: {e}")))?;
    Ok((arr, aff))
}
