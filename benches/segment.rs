//! `cargo bench --bench segment`: `pipeline::segment` of a 512×512×32 head CT on the CPU (flex),
//! without the CRF, with it, and with its appearance kernel's other extent (brain only or whole
//! box), printing wall time per stage and peak memory (VmHWM).
//!
//! The scan is the bundled real head CT (assets/anatomy) resampled to 0.45 mm pixels and 32
//! slices of 4.5 mm, the usual clinical geometry, written as int16 NIfTI.

use std::time::Instant;

use burn::prelude::*;
use ichnet::model;
use ichnet::pipeline::{self, SegmentOptions};

mod common;
use common::{clinical_scan, peak_mb};

fn main() {
    let bytes = clinical_scan();
    println!(
        "scan: 512×512×32, 0.45×0.45×4.5 mm, {} bytes gzipped; peak RSS so far {:.0} MB",
        bytes.len(),
        peak_mb().unwrap_or(f64::NAN)
    );
    let device = Device::flex();
    let net = model::load(model::BUNDLED_WEIGHTS.to_vec(), &device).expect("bundled weights");
    // CRF off, the default CRF, and the default with the appearance kernel's other extent (the
    // brain alone or the whole box), so the two CRFs' cost is compared in the same run.
    let default = ichnet::crf::CrfConfig::default();
    let other = ichnet::crf::CrfConfig {
        appearance_region_only: !default.appearance_region_only,
        ..default.clone()
    };
    let other_name = if other.appearance_region_only {
        "on, appearance kernel in the brain only"
    } else {
        "on, appearance kernel over the whole box"
    };
    for (name, crf) in [
        ("off", None),
        ("on", Some(default)),
        (other_name, Some(other)),
    ] {
        let opts = SegmentOptions {
            crf,
            ..SegmentOptions::default()
        };
        let t = Instant::now();
        let seg = pipeline::segment(&bytes, &net, &device, &opts, &mut |_| true).expect("segment");
        let total = t.elapsed().as_secs_f64();
        let stages: Vec<String> = seg
            .timings
            .iter()
            .map(|t| format!("{} {:.3} s", t.stage, t.ms / 1000.0))
            .collect();
        println!(
            "segment (CRF {name}): {total:.2} s [{}], {:.2} mL predicted, peak RSS {:.0} MB",
            stages.join(", "),
            seg.volume_ml,
            peak_mb().unwrap_or(f64::NAN)
        );
    }
}
