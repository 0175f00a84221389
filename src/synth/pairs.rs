//! Baseline / follow-up pairs with known truth, for measuring `compare`.
//!
//! One anatomy and one intraparenchymal haematoma; the follow-up shows the same head moved by a
//! known rigid transform (up to ±15° about each axis and ±20 mm along each), scanned with its own
//! acquisition (slice thickness, pixel size, slab position, gantry tilt, axis order, storage), and
//! the same clot grown about its centre by a known factor (or not at all). The confounders are
//! the same on both (they are anatomy). Truth volumes are those of the exact masks, each on its
//! own grid, so the true growth is what a perfect segmentation would measure.

use super::confound::Confounders;
use super::lesion::{IphStyle, Lesion, Lesions};
use super::rng::Rng;
use super::scanner::{self, AcqSpec, Pose};
use super::{Anatomy, Case, Limits, place_iph};
use crate::metrics::haematoma_expansion;
use crate::registration::Rigid;
use crate::{Error, Result};

/// Column names of `pairs.tsv`, tab-separated.
pub const PAIRS_TSV_HEADER: &str = "name\tanatomy\tbaseline_ml\tfollowup_ml\tgrowth_ml\texpansion\trot_x_deg\trot_y_deg\trot_z_deg\tshift_x_mm\tshift_y_mm\tshift_z_mm\tbaseline_slice_mm\tfollowup_slice_mm\tbaseline_tilt_deg\tfollowup_tilt_deg\tbaseline_dims\tfollowup_dims";

/// A generated pair and its truth.
#[derive(Debug, Clone)]
pub struct PairCase {
    /// File stem ("pair_00007").
    pub name: String,
    /// The baseline scan.
    pub baseline: Case,
    /// The follow-up scan.
    pub followup: Case,
    /// Baseline world → follow-up world (centre at the world origin).
    pub truth: Rigid,
}

impl PairCase {
    /// True growth (mL): follow-up mask volume minus baseline mask volume, each on its own grid.
    pub fn growth_ml(&self) -> f64 {
        self.followup.blood_ml - self.baseline.blood_ml
    }

    /// This pair's line of `pairs.tsv`.
    pub fn tsv_row(&self) -> String {
        let (b, f) = (&self.baseline, &self.followup);
        let dims = |c: &Case| format!("{}x{}x{}", c.acq.dims[0], c.acq.dims[1], c.acq.dims[2]);
        let a = self.truth.angles_deg;
        let t = self.truth.translation_mm;
        format!(
            "{}\t{}\t{:.3}\t{:.3}\t{:.3}\t{}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.1}\t{:.1}\t{}\t{}",
            self.name,
            b.anatomy,
            b.blood_ml,
            f.blood_ml,
            self.growth_ml(),
            u8::from(haematoma_expansion(b.blood_ml, f.blood_ml).expanded),
            a[0],
            a[1],
            a[2],
            t[0],
            t[1],
            t[2],
            b.acq.thickness,
            f.acq.thickness,
            b.acq.tilt_deg,
            f.acq.tilt_deg,
            dims(b),
            dims(f),
        )
    }
}

/// The name of pair `index`.
pub fn pair_name(index: u64) -> String {
    format!("pair_{index:05}")
}

/// Generate pair `index` of a run seeded with `seed`: a baseline haematoma of 8–50 mL (large
/// enough that growth under 2 mL is under 33 %, so "no expansion" is the truth there); growth
/// drawn from 0–1.5 mL (three pairs in ten) or 0–30 mL.
pub fn generate_pair(
    anatomies: &[Anatomy],
    seed: u64,
    index: u64,
    limits: Limits,
) -> Result<PairCase> {
    if anatomies.is_empty() {
        return Err(Error::InvalidInput(
            "no base anatomy to simulate pairs from: check --anatomy".into(),
        ));
    }
    let mut rng = Rng::for_case(seed ^ 0x9A1F_5EED_0F0F_1234, index);
    let anat = &anatomies[rng.index(anatomies.len())];
    let mut lesion_rng = rng.fork(1);
    let mut conf_rng = rng.fork(2);
    let mut pose_rng = rng.fork(3);
    let (mut acq_b, mut acq_f) = (rng.fork(4), rng.fork(5));
    let (mut noise_b, mut noise_f) = (rng.fork(6), rng.fork(7));
    let volume = lesion_rng.log_range(8.0, 50.0);
    let growth = if lesion_rng.chance(0.3) {
        lesion_rng.range(0.0, 1.5)
    } else {
        lesion_rng.range(0.0, 30.0)
    };
    let iph = place_iph(&mut lesion_rng, anat, volume, IphStyle::ACUTE).ok_or_else(|| {
        Error::InvalidInput(format!(
            "anatomy {} has no parenchyma deep enough for a {volume:.0} mL haematoma",
            anat.name
        ))
    })?;
    let placed = 4.0 / 3.0 * std::f64::consts::PI * iph.radius.powi(3) / 1000.0;
    let grown = iph.grown(((placed + growth) / placed).cbrt());
    let before = Lesions {
        list: vec![Lesion::Iph(iph)],
    };
    let after = Lesions {
        list: vec![Lesion::Iph(grown)],
    };
    // Confounders keep clear of the larger clot, so they are the same on both scans.
    let confounders = Confounders::new(&mut conf_rng, anat, &after);
    let truth = Rigid {
        angles_deg: [0, 1, 2].map(|_| pose_rng.range(-15.0, 15.0)),
        translation_mm: [0, 1, 2].map(|_| pose_rng.range(-20.0, 20.0)),
        centre_mm: [0.0; 3],
    };
    let base_pose = Pose::identity(anat);
    let follow_pose = Pose::rigid(anat, truth.rotation(), truth.translation_mm);
    let name = pair_name(index);
    let render = |pose: &Pose,
                  lesions: &Lesions,
                  acq_rng: &mut Rng,
                  noise_rng: &mut Rng,
                  suffix: &str|
     -> Result<Case> {
        let mut spec = AcqSpec::random(acq_rng);
        // Slices of 2–5 mm: thinner ones make a slab (at most `max_slices`) that may cut the clot
        // differently on the two scans, and then the two volumes are not of the same clot.
        spec.thickness = [2.0, 2.5, 3.0, 4.0, 5.0][acq_rng.index(5)];
        spec.max_matrix = spec.max_matrix.min(limits.max_matrix);
        spec.max_slices = spec.max_slices.min(limits.max_slices);
        let focus = lesions.list.iter().find_map(|l| match l {
            Lesion::Iph(i) => Some(pose.to_world(i.centre)[2]),
            _ => None,
        });
        let acq = spec.grid(anat, pose, focus, acq_rng)?;
        let r = scanner::render(anat, pose, lesions, &confounders, &acq, |_| ())?;
        let mut image = r.clean.clone();
        scanner::add_noise(&mut image, acq.noise_sd, noise_rng)?;
        let mask = r.blood.mapv(|f| u8::from(f >= 0.5));
        let blood_ml = mask.iter().filter(|&&m| m != 0).count() as f64 * acq.voxel_ml();
        Ok(Case {
            name: format!("{name}_{suffix}"),
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
    };
    let baseline = render(&base_pose, &before, &mut acq_b, &mut noise_b, "baseline")?;
    let followup = render(&follow_pose, &after, &mut acq_f, &mut noise_f, "followup")?;
    Ok(PairCase {
        name,
        baseline,
        followup,
        truth,
    })
}
