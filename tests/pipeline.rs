//! The staged pipeline end to end on a small bundled case (semi-synthetic: the real head CT of
//! tests/fixtures/ct with one simulated bleed, written by `ichnet synth --preset fixture`).

use burn::prelude::*;
use ichnet::io::Scan;
use ichnet::model;
use ichnet::pipeline::{self, Prepared, SegmentOptions};
use ichnet::{Error, metrics};

const CASE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/pipeline/image.nii.gz"
);
const MASK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/pipeline/mask.nii.gz"
);

fn net(device: &Device) -> model::IchNet {
    model::load(model::BUNDLED_WEIGHTS.to_vec(), device).unwrap()
}

fn no_crf() -> SegmentOptions {
    SegmentOptions {
        crf: None,
        ..SegmentOptions::default()
    }
}

#[test]
fn bundled_case_segments_with_dice_at_least_0_8_on_the_input_grid() {
    let device = Device::flex();
    let bytes = std::fs::read(CASE).unwrap();
    let seg = pipeline::segment(&bytes, &net(&device), &device, &no_crf(), &mut |_| true).unwrap();
    let input = Scan::from_bytes(&bytes).unwrap();
    let truth = Scan::from_bytes(&std::fs::read(MASK).unwrap()).unwrap();
    let truth = truth.stack.hu.mapv(|v| u8::from(v > 0.5));
    let dice = metrics::dice(&seg.mask, &truth).unwrap();
    assert!(
        dice >= 0.8,
        "Dice {dice:.3} on the bundled case (volume {:.2} mL)",
        seg.volume_ml
    );
    // The written mask lies on exactly the input's grid.
    let written = Scan::from_bytes(&seg.mask_nifti_gz).unwrap();
    assert_eq!(written.info.dims, input.info.dims);
    assert_eq!(written.info.affine, input.info.affine);
    assert_eq!(written.info.axis_codes, input.info.axis_codes);
    let back = written.stack.hu.mapv(|v| u8::from(v > 0.5));
    assert_eq!(
        back, seg.mask,
        "the NIfTI mask must hold the same voxels as the stack mask"
    );
    assert!((seg.volume_ml - input.stack.mask_ml(&seg.mask)).abs() < 1e-9);
}

#[test]
fn the_same_input_gives_byte_identical_masks() {
    let device = Device::flex();
    let bytes = std::fs::read(CASE).unwrap();
    let m = net(&device);
    let a = pipeline::segment(&bytes, &m, &device, &no_crf(), &mut |_| true).unwrap();
    // A different batching of slices must not change a byte either.
    let opts = SegmentOptions {
        batch_slices: 3,
        ..no_crf()
    };
    let b = pipeline::segment(&bytes, &m, &device, &opts, &mut |_| true).unwrap();
    assert_eq!(a.mask_nifti_gz, b.mask_nifti_gz);
}

#[test]
fn applying_the_crf_again_refines_the_network_output_not_the_last_refinement() {
    let device = Device::flex();
    let bytes = std::fs::read(CASE).unwrap();
    let m = net(&device);
    let mut prep = Prepared::new(&bytes).unwrap();
    pipeline::run_network(&mut prep, &m, &device, 4, &mut |_| true).unwrap();
    let network = prep.probability().unwrap();
    let strong = ichnet::crf::CrfConfig {
        smooth_weight: 30.0,
        ..Default::default()
    };
    prep.apply_crf(&strong, &mut |_, _| true).unwrap();
    let once = prep.probability().unwrap();
    assert_ne!(
        once, network,
        "a strong smoothness kernel must change something"
    );
    prep.apply_crf(&strong, &mut |_, _| true).unwrap();
    assert_eq!(prep.probability().unwrap(), once);
}

#[test]
fn cancelling_between_slices_stops_with_cancelled() {
    let device = Device::flex();
    let bytes = std::fs::read(CASE).unwrap();
    let mut calls = 0;
    let r = pipeline::segment(&bytes, &net(&device), &device, &no_crf(), &mut |p| {
        calls += 1;
        p.stage != "network" || p.done == 0
    });
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert!(calls >= 2);
}

#[test]
fn probabilities_of_the_wrong_size_are_refused() {
    let bytes = std::fs::read(CASE).unwrap();
    let mut p = Prepared::new(&bytes).unwrap();
    assert!(p.slices() > 0);
    let (x, shape) = p.slice_batch(0..1).unwrap();
    assert_eq!(x.len(), shape.iter().product::<usize>());
    assert!(p.accept_probs(0..1, &[0.5; 3]).is_err());
    assert!(p.slice_batch(0..p.slices() + 1).is_err());
    // Unfinished work cannot be finished.
    assert!(p.finish(0.5).is_err());
}
