//! Semi-synthetic training data: real haemorrhage-free head CT anatomy with simulated bleeds
//! whose masks are exact.
//!
//! No public head CT with voxel-wise haemorrhage masks is reachable here (see the data README),
//! so training data is made: a base anatomy ([`anatomy`]) is placed in the world by a random pose
//! (rotation, scaling, mirror, elastic warp), lesions and confounders are drawn as continuous
//! fields in the anatomy's mm frame ([`lesion`], [`confound`]), and a simulated scanner samples
//! them on a clinical grid with slice-profile averaging, noise, gantry tilt, any axis order and
//! int16/uint8 storage ([`scanner`]). The mask is the blood fraction ≥ ½ of each final voxel, so it
//! is what a reader would outline on the image that is written, not on some finer hidden grid.
//!
//! Deterministic: case `i` of seed `s` depends on `(s, i)` only (not on how many cases a run
//! makes, nor on threads), through the crate's own generator ([`rng`]).

pub mod anatomy;
pub mod confound;
pub mod field;
pub mod lesion;
pub mod montage;
pub mod pairs;
pub mod rng;
pub mod scanner;

use ndarray::Array3;

pub use anatomy::Anatomy;
pub use lesion::{BLOOD_HU, IphStyle, LesionKind};
pub use scanner::Acquisition;

use confound::Confounders;
use field::{V3, norm, scale, sub};
use lesion::{ExtraAxial, Iph, Ivh, Lesion, Lesions, Sah};
use rng::Rng;
use scanner::{AcqSpec, Pose};

use crate::io::{Geometry, Storage, write_nifti_gz};
use crate::{Error, Result};

/// What kind of cases to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The training distribution: every anatomy, lesion, confounder and scanner variation.
    Random,
    /// The web page's sample: the real head CT, unmoved, one intraparenchymal bleed of 20–30 mL,
    /// 5 mm slices at the native pixel size, int16, no added noise, no added confounders.
    Demo,
    /// A tiny regression case: the real head CT, one 10–30 mL bleed, 1.6 mm pixels, a slab of at
    /// most 20 slices of 5 mm, int16.
    Fixture,
    /// Like `Random`, but every case holds exactly one lesion of this kind: test splits with a
    /// known number of each failure mode, scored per kind.
    Only(CaseKind),
}

/// The lesion kinds a case can be asked for (`ichnet synth --kind`), as named in `cases.tsv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseKind {
    /// Acute deep or lobar intraparenchymal clot.
    Iph,
    /// Low-density (38–55 HU) intraparenchymal clot, sometimes with a fluid level.
    IphLow,
    /// Small clot against the inner table, often near the skull base.
    IphCortical,
    /// Intraventricular.
    Ivh,
    /// Subdural.
    Sdh,
    /// Epidural.
    Edh,
    /// Subarachnoid.
    Sah,
}

impl CaseKind {
    /// Every kind, in the order of the per-kind tables.
    pub const ALL: [CaseKind; 7] = [
        CaseKind::Iph,
        CaseKind::IphLow,
        CaseKind::IphCortical,
        CaseKind::Ivh,
        CaseKind::Sdh,
        CaseKind::Edh,
        CaseKind::Sah,
    ];

    /// The name in `cases.tsv`.
    pub fn name(self) -> &'static str {
        match self {
            CaseKind::Iph => IphStyle::ACUTE.label,
            CaseKind::IphLow => IphStyle::LOW.label,
            CaseKind::IphCortical => IphStyle::CORTICAL.label,
            CaseKind::Ivh => LesionKind::Ivh.name(),
            CaseKind::Sdh => LesionKind::Sdh.name(),
            CaseKind::Edh => LesionKind::Edh.name(),
            CaseKind::Sah => LesionKind::Sah.name(),
        }
    }

    /// The kind named `name` (as in `cases.tsv`).
    pub fn parse(name: &str) -> Result<CaseKind> {
        CaseKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let all: Vec<&str> = CaseKind::ALL.iter().map(|k| k.name()).collect();
                Error::InvalidInput(format!(
                    "unknown lesion kind {name:?}: one of {}",
                    all.join(", ")
                ))
            })
    }
}

/// Column names of `cases.tsv`, tab-separated.
pub const TSV_HEADER: &str = "name\tanatomy\tlesions\tblood_ml\tslice_mm\tinplane_mm\tdims\tstorage\ttilt_deg\taxes\tnoise_sd\tconfounders";

/// One generated case, on the canonical grid (`[z, y, x]`, before the file's axis order).
#[derive(Debug, Clone)]
pub struct Case {
    /// File stem ("synth_00042").
    pub name: String,
    /// Base anatomy's name.
    pub anatomy: String,
    /// Lesion kinds ("iph,ivh", "none").
    pub lesions: String,
    /// Confounders present ("choroid,falx,beam-hardening", "none").
    pub confounders: String,
    /// The simulated acquisition.
    pub acq: Acquisition,
    /// The image in HU, noise included.
    pub image: Array3<f32>,
    /// The image in HU before noise.
    pub clean: Array3<f32>,
    /// Blood fraction per voxel.
    pub blood: Array3<f32>,
    /// The mask: blood fraction ≥ ½.
    pub mask: Array3<u8>,
    /// The anatomy's brain mask at each voxel centre.
    pub brain: Array3<u8>,
    /// Where a calcification or the falx dominates.
    pub confounder: Array3<u8>,
    /// Mask volume in mL (voxel count × voxel volume).
    pub blood_ml: f64,
}

/// The name of case `index`.
pub fn case_name(index: u64) -> String {
    format!("synth_{index:05}")
}

impl Case {
    /// The image as stored: gzipped NIfTI-1 in the acquisition's axis order and storage.
    pub fn image_nifti_gz(&self) -> Result<Vec<u8>> {
        let (values, affine) = scanner::to_file_order(&self.acq, &self.image)?;
        let geom = self.geometry(&values, &affine)?;
        write_nifti_gz(&values, &geom, self.acq.storage)
    }

    /// The mask on exactly the image's grid (u8 0/1).
    pub fn mask_nifti_gz(&self) -> Result<Vec<u8>> {
        let as_f32 = self.mask.mapv(f32::from);
        let (values, affine) = scanner::to_file_order(&self.acq, &as_f32)?;
        let geom = self.geometry(&values, &affine)?;
        write_nifti_gz(
            &values,
            &geom,
            Storage::U8 {
                slope: 1.0,
                inter: 0.0,
            },
        )
    }

    fn geometry(&self, values: &Array3<f32>, affine: &crate::io::Affine) -> Result<Geometry> {
        let (nk, nj, ni) = values.dim();
        Geometry::from_affine([ni, nj, nk], affine)
    }

    /// This case's line of `cases.tsv` (see [`TSV_HEADER`]).
    pub fn tsv_row(&self) -> String {
        let [ni, nj, nk] = self.acq.dims;
        format!(
            "{}\t{}\t{}\t{:.3}\t{:.3}\t{:.3}\t{}x{}x{}\t{}\t{:.1}\t{}\t{:.1}\t{}",
            self.name,
            self.anatomy,
            self.lesions,
            self.blood_ml,
            self.acq.thickness,
            self.acq.pixel,
            ni,
            nj,
            nk,
            self.acq.storage_label(),
            self.acq.tilt_deg,
            self.acq.axis_codes(),
            self.acq.noise_sd,
            self.confounders,
        )
    }
}

/// Caps on the size of generated grids (smaller caps make smaller, faster cases; the pixel grows
/// to keep the whole head in the field of view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest in-plane matrix (random cases use 384, sometimes 512, at most this).
    pub max_matrix: usize,
    /// Most slices (a slab around the bleed when the brain needs more).
    pub max_slices: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_matrix: 512,
            max_slices: 64,
        }
    }
}

/// Generate case `index` of a run seeded with `seed` from `anatomies` (which must not be empty),
/// with the default [`Limits`].
pub fn generate(anatomies: &[Anatomy], seed: u64, index: u64, preset: Preset) -> Result<Case> {
    generate_with(anatomies, seed, index, preset, Limits::default(), |_| ())
}

/// [`generate`] with explicit limits; `progress(k)` is called after each rendered slice.
pub fn generate_with(
    anatomies: &[Anatomy],
    seed: u64,
    index: u64,
    preset: Preset,
    limits: Limits,
    mut progress: impl FnMut(usize),
) -> Result<Case> {
    if limits.max_matrix < 16 || limits.max_slices < 1 {
        return Err(Error::InvalidInput(format!(
            "limits of {}×{} pixels and {} slices: need at least 16 pixels and 1 slice",
            limits.max_matrix, limits.max_matrix, limits.max_slices
        )));
    }
    if anatomies.is_empty() {
        return Err(Error::InvalidInput(
            "no base anatomy to simulate cases from: check --anatomy and --only-anatomy / \
             --exclude-anatomy"
                .into(),
        ));
    }
    let range = match preset {
        Preset::Random | Preset::Only(_) => {
            return generate_once(
                anatomies,
                Rng::for_case(seed, index),
                index,
                preset,
                limits,
                &mut progress,
            );
        }
        Preset::Demo => (20.0, 30.0),
        Preset::Fixture => (10.0, 30.0),
    };
    // The haematoma's final volume depends on its lobes and on the grid; draw again until it lands
    // in the preset's range (deterministically: attempt a uses its own stream).
    let mut last = None;
    for attempt in 0..40u64 {
        let rng = Rng::for_case(seed ^ attempt.wrapping_mul(0x5851_F42D_4C95_7F2D), index);
        let case = generate_once(anatomies, rng, index, preset, limits, &mut progress)?;
        if case.blood_ml >= range.0 && case.blood_ml <= range.1 {
            return Ok(case);
        }
        last = Some(case.blood_ml);
    }
    Err(Error::InvalidInput(format!(
        "could not draw a {preset:?} bleed of {}–{} mL in 40 attempts (last {:.1} mL)",
        range.0,
        range.1,
        last.unwrap_or(0.0)
    )))
}

fn generate_once(
    anatomies: &[Anatomy],
    mut rng: Rng,
    index: u64,
    preset: Preset,
    limits: Limits,
    progress: &mut impl FnMut(usize),
) -> Result<Case> {
    let anat = match preset {
        Preset::Random | Preset::Only(_) => &anatomies[rng.index(anatomies.len())],
        Preset::Demo | Preset::Fixture => anatomies
            .iter()
            .find(|a| a.name.starts_with("cranium"))
            .unwrap_or(&anatomies[0]),
    };
    let mut pose_rng = rng.fork(1);
    let mut lesion_rng = rng.fork(2);
    let mut conf_rng = rng.fork(3);
    let mut acq_rng = rng.fork(4);
    let mut noise_rng = rng.fork(5);

    let pose = match preset {
        Preset::Random | Preset::Only(_) => Pose::random(&mut pose_rng, anat),
        _ => Pose::identity(anat),
    };
    let lesions = match preset {
        Preset::Random => random_lesions(&mut lesion_rng, anat),
        Preset::Only(kind) => Lesions {
            list: draw_lesion(&mut lesion_rng, anat, kind)
                .into_iter()
                .collect(),
        },
        Preset::Demo => single_iph(&mut lesion_rng, anat, 25.0),
        Preset::Fixture => single_iph(&mut lesion_rng, anat, 18.0),
    };
    let confounders = match preset {
        Preset::Random | Preset::Only(_) => Confounders::new(&mut conf_rng, anat, &lesions),
        _ => Confounders::default(),
    };
    let mut spec = match preset {
        Preset::Random | Preset::Only(_) => AcqSpec::random(&mut acq_rng),
        Preset::Demo => fixed_spec(0.957, 5.0, 64, 0.0),
        Preset::Fixture => fixed_spec(1.6, 5.0, 20, 3.0),
    };
    spec.max_matrix = spec.max_matrix.min(limits.max_matrix);
    spec.max_slices = spec.max_slices.min(limits.max_slices);
    let focus = lesions
        .list
        .iter()
        .find_map(Lesion::centre)
        .map(|c| pose.to_world(c)[2]);
    let acq = spec.grid(anat, &pose, focus, &mut acq_rng)?;
    let r = scanner::render(anat, &pose, &lesions, &confounders, &acq, &mut *progress)?;
    let mut image = r.clean.clone();
    scanner::add_noise(&mut image, acq.noise_sd, &mut noise_rng)?;
    let mask = r.blood.mapv(|f| u8::from(f >= 0.5));
    let blood_ml = mask.iter().filter(|&&m| m != 0).count() as f64 * acq.voxel_ml();
    Ok(Case {
        name: case_name(index),
        anatomy: anat.name.clone(),
        lesions: lesions.kinds(),
        confounders: confounders.names(),
        acq,
        image,
        clean: r.clean,
        blood: r.blood,
        mask,
        brain: r.brain,
        confounder: r.confounder,
        blood_ml,
    })
}

fn fixed_spec(pixel: f64, thickness: f64, max_slices: usize, noise_sd: f64) -> AcqSpec {
    AcqSpec {
        pixel,
        max_matrix: 512,
        thickness,
        max_slices,
        tilt_deg: 0.0,
        noise_sd,
        storage: Storage::I16 {
            slope: 1.0,
            inter: 0.0,
        },
        order: [0, 1, 2],
        flip: [false; 3],
        margin: (8.0, 4.0),
        shift: [0.0, 0.0],
    }
}

/// The training mix: 15 % without a lesion; otherwise 1–3 lesions. Acute deep clots are the
/// most common, but the kinds that a model trained on them misses on real scans (low-density,
/// cortical and skull-base clots, subarachnoid and intraventricular blood) are drawn often
/// enough to be learnt.
fn random_lesions(rng: &mut Rng, anat: &Anatomy) -> Lesions {
    let mut list = Vec::new();
    if rng.chance(0.15) {
        return Lesions { list };
    }
    let count = 1 + rng.weighted(&[0.65, 0.25, 0.10]);
    for _ in 0..count {
        let kind = CaseKind::ALL[rng.weighted(&[0.34, 0.10, 0.14, 0.12, 0.12, 0.06, 0.12])];
        list.extend(draw_lesion(rng, anat, kind));
    }
    // Large haematomas often rupture into the ventricles.
    let big = list
        .iter()
        .any(|l| matches!(l, Lesion::Iph(i) if i.radius > 18.0));
    if big && rng.chance(0.3) && !list.iter().any(|l| l.kind() == LesionKind::Ivh) {
        list.extend(Ivh::new(rng, anat).map(Lesion::Ivh));
    }
    Lesions { list }
}

/// One lesion of `kind` (`None` only when the anatomy has no place for it, e.g. no ventricles;
/// an intraparenchymal clot is placed instead then).
fn draw_lesion(rng: &mut Rng, anat: &Anatomy, kind: CaseKind) -> Option<Lesion> {
    let lesion = match kind {
        CaseKind::Ivh => Ivh::new(rng, anat).map(Lesion::Ivh),
        CaseKind::Sdh => Some(Lesion::Extra(ExtraAxial::new(rng, anat, LesionKind::Sdh))),
        CaseKind::Edh => Some(Lesion::Extra(ExtraAxial::new(rng, anat, LesionKind::Edh))),
        CaseKind::Sah => Some(Lesion::Sah(Sah::new(rng, anat))),
        CaseKind::IphCortical => {
            let v = rng.log_range(0.3, 12.0);
            let skull_base = rng.chance(0.4);
            place_cortical(rng, anat, v, skull_base).map(Lesion::Iph)
        }
        CaseKind::IphLow => {
            let v = rng.log_range(1.0, 80.0);
            place_iph(rng, anat, v, IphStyle::LOW).map(Lesion::Iph)
        }
        CaseKind::Iph => None,
    };
    match lesion {
        Some(l) => Some(l),
        None => {
            let v = rng.log_range(0.5, 120.0);
            place_iph(rng, anat, v, IphStyle::ACUTE).map(Lesion::Iph)
        }
    }
}

fn single_iph(rng: &mut Rng, anat: &Anatomy, volume_ml: f64) -> Lesions {
    Lesions {
        list: place_iph(rng, anat, volume_ml, IphStyle::ACUTE)
            .map(Lesion::Iph)
            .into_iter()
            .collect(),
    }
}

/// A haematoma of about `volume_ml` centred in parenchyma deep enough to hold it (smaller if no
/// such place is found).
fn place_iph(rng: &mut Rng, anat: &Anatomy, volume_ml: f64, style: IphStyle) -> Option<Iph> {
    let mut v = volume_ml;
    for _ in 0..6 {
        let r = sphere_radius(v);
        for _ in 0..40 {
            let c = anat.parenchyma[rng.index(anat.parenchyma.len())];
            if f64::from(anat.depth_at(c)) >= 0.8 * r + 2.0 && anat.ventricle_at(c) < 0.2 {
                return Some(Iph::styled(rng, c, v, style));
            }
        }
        v *= 0.6;
    }
    None
}

/// A small clot of about `volume_ml` whose edge reaches the inner table; with `skull_base`, in
/// the lowest third of the brain (temporal lobes, posterior fossa). The centre is a parenchyma
/// point moved down the depth field's gradient (towards the nearest table) until the clot
/// reaches it.
fn place_cortical(rng: &mut Rng, anat: &Anatomy, volume_ml: f64, skull_base: bool) -> Option<Iph> {
    let r = sphere_radius(volume_ml);
    let (lo, hi) = anat.brain_box;
    let z_cut = lo[2] + 0.35 * (hi[2] - lo[2]);
    let depth = |p: V3| f64::from(anat.depth_at(p));
    for attempt in 0..400 {
        let c = anat.parenchyma[rng.index(anat.parenchyma.len())];
        if skull_base && attempt < 300 && c[2] > z_cut {
            continue;
        }
        let d = depth(c);
        if d > 40.0 {
            continue;
        }
        let g = [0, 1, 2].map(|a| {
            let mut p = c;
            let mut m = c;
            p[a] += 1.0;
            m[a] -= 1.0;
            (depth(p) - depth(m)) / 2.0
        });
        let len = norm(g);
        if len < 0.3 {
            continue;
        }
        let target = rng.range(0.3, 0.8) * r;
        let moved = sub(c, scale(g, (d - target) / len));
        let dm = depth(moved);
        if dm >= 0.2 * r && dm <= r + 1.0 && anat.ventricle_at(moved) < 0.2 {
            return Some(Iph::styled(rng, moved, volume_ml, IphStyle::CORTICAL));
        }
    }
    None
}

/// Radius (mm) of a sphere of `volume_ml`.
fn sphere_radius(volume_ml: f64) -> f64 {
    (3.0 * volume_ml * 1000.0 / (4.0 * std::f64::consts::PI)).cbrt()
}
