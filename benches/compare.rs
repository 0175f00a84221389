//! `cargo bench --bench compare`: `ichnet compare` of two 512×512×32 head CTs on the CPU (flex)
//! against one `segment` of the same scan in the same run: the target is the comparison
//! within twice one segmentation plus 2 s.
//!
//! The baseline is the benchmarks' clinical scan (the bundled real head at 0.45×0.45×4.5 mm) with
//! a 14 mL ball of 65 HU; the follow-up is the same head turned by (6°, −4°, 8°) and shifted by
//! (8, −10, 5) mm inside the same grid, the ball grown to 24 mL. Prints wall times (each
//! segmentation, the registration and matching), the registration's work per level and peak
//! memory; asserts nothing about speed.

use std::time::Instant;

use burn::prelude::*;
use ichnet::model;
use ichnet::pipeline::{self, SegmentOptions};
use ichnet::registration::RegistrationConfig;
use ichnet::registration::compare::segment_and_compare;

mod common;
use common::{Pose, peak_mb, posed_clinical_scan};

fn main() {
    let baseline = posed_clinical_scan(&Pose {
        clot_radius_mm: 15.0,
        ..Pose::default()
    });
    let followup = posed_clinical_scan(&Pose {
        angles_deg: [6.0, -4.0, 8.0],
        shift_mm: [8.0, -10.0, 5.0],
        clot_radius_mm: 18.0,
    });
    let device = Device::flex();
    let net = model::load(model::BUNDLED_WEIGHTS.to_vec(), &device).expect("bundled weights");
    let opts = SegmentOptions::default();
    let t = Instant::now();
    let one = pipeline::segment(&baseline, &net, &device, &opts, &mut |_| true).expect("segment");
    let segment_s = t.elapsed().as_secs_f64();
    println!(
        "one segment (baseline, CRF on): {segment_s:.2} s, {:.2} mL",
        one.volume_ml
    );
    let t = Instant::now();
    let pair = segment_and_compare(
        &baseline,
        &followup,
        &net,
        &device,
        &opts,
        &RegistrationConfig::default(),
    )
    .expect("compare");
    let total = t.elapsed().as_secs_f64();
    let [b, f, c] = pair.seconds;
    let cmp = &pair.comparison;
    let r = &cmp.registration;
    println!(
        "compare: {total:.2} s = baseline {b:.2} s + follow-up {f:.2} s + registration and matching {c:.2} s; \
         {:.2} → {:.2} mL (Δ {:.2} mL), expanded: {}",
        cmp.baseline_ml, cmp.followup_ml, cmp.delta_ml, cmp.expansion.expanded
    );
    for l in &r.levels {
        println!(
            "  level {} mm: {} points, {} evaluations, similarity {:.3}",
            l.spacing_mm, l.points, l.evaluations, l.similarity
        );
    }
    println!(
        "  transform: angles {:.2?}°, translation {:.2?} mm (applied: 6, −4, 8° and 8, −10, 5 mm, \
         signs by the NIfTI's axes); quality NCC {:.3}, poor: {}",
        r.transform.angles_deg, r.transform.translation_mm, r.quality.ncc, r.quality.poor
    );
    println!(
        "compare / (2 × one segment + 2 s) = {:.2} (target ≤ 1); registration and matching {c:.2} s \
         (target ≤ 2 s beside the two segmentations); peak RSS {:.0} MB",
        total / (2.0 * segment_s + 2.0),
        peak_mb().unwrap_or(f64::NAN)
    );
}
