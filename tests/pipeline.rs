//! The staged pipeline end to end on a small bundled case (semi-synthetic: the real head CT of
//! tests/fixtures/ct with one simulated bleed, written by `ichnet synth --preset fixture`).

use burn::prelude::*;
use ichnet::io::Scan;
use ichnet::model;
use ichnet::model::input::Layout;
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
    // The volume against the simulated truth, not against the formula that produced it: the
    // fixture's README states a 19.4 mL haematoma. The network alone (no CRF, as here) draws the
    // clot's rim a little wide and leaves scattered specks, which are the CRF's to remove (the
    // CLI test holds the full pipeline, with the CRF, to a tenth of the truth). So here the
    // haematoma itself, the largest component, must be within a fifth of the truth (measured
    // with the fine-tuned weights: 22.6 mL, +16 %), and the specks together under a third of
    // it (measured 4.1 mL, the largest 2.3 mL; the weights before the fine-tuning left 0.8 mL:
    // trained to see subarachnoid and cortical blood, the network alone marks more of the
    // cortex's bright rim, README model card).
    let voxels = truth.iter().filter(|&&v| v != 0).count();
    let true_ml = voxels as f64
        * input
            .stack
            .spacing
            .iter()
            .map(|&s| f64::from(s))
            .product::<f64>()
        / 1000.0;
    assert!(
        (true_ml - 19.4).abs() < 0.05,
        "fixture truth {true_ml:.2} mL"
    );
    let largest = seg
        .haematomas
        .iter()
        .map(|h| h.volume_ml)
        .fold(0.0, f64::max);
    assert!(
        (largest - true_ml).abs() <= TOLERANCE * true_ml,
        "largest haematoma {largest:.2} mL against the true {true_ml:.2} mL"
    );
    assert!(
        seg.volume_ml - largest <= true_ml / 3.0,
        "{:.2} mL outside the haematoma (total {:.2} mL)",
        seg.volume_ml - largest,
        seg.volume_ml
    );
}

/// Allowed relative volume error of the network alone on the bundled case.
const TOLERANCE: f64 = 0.20;

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
    let mut prep = Prepared::new(&bytes, false).unwrap();
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
    let mut p = Prepared::new(&bytes, false).unwrap();
    assert!(p.slices() > 0);
    for layout in Layout::ALL {
        let (x, shape) = p.slice_batch(0..1, layout).unwrap();
        assert_eq!(x.len(), shape.iter().product::<usize>());
        assert_eq!(shape[1], layout.channels());
    }
    assert!(p.accept_probs(0..1, &[0.5; 3]).is_err());
    assert!(p.slice_batch(0..p.slices() + 1, Layout::Context).is_err());
    // Unfinished work cannot be finished.
    assert!(p.finish(0.5).is_err());
}

/// A scan written from a stack: what a user's file with these voxels would be.
fn nifti_of(hu: ndarray::Array3<f32>, spacing: [f32; 3]) -> Vec<u8> {
    let voxel_ml = spacing.iter().map(|&s| f64::from(s)).product::<f64>() / 1000.0;
    let stack = ichnet::Stack {
        hu,
        spacing,
        voxel_ml,
    };
    ichnet::io::write_stack_nifti_gz(&stack, ichnet::io::Storage::F32).unwrap()
}

#[test]
fn a_scan_without_a_brain_is_refused_not_reported_as_zero_ml() {
    // Air with a bone ring: a CT with no soft tissue inside.
    let mut hu = ndarray::Array3::from_elem((8, 40, 40), -1000.0f32);
    for ((_, y, x), v) in hu.indexed_iter_mut() {
        let r = ((y as f32 - 20.0).powi(2) + (x as f32 - 20.0).powi(2)).sqrt();
        if (15.0..17.0).contains(&r) {
            *v = 1200.0;
        }
    }
    let bytes = nifti_of(hu, [5.0, 1.0, 1.0]);
    let device = Device::flex();
    let r = pipeline::segment(&bytes, &net(&device), &device, &no_crf(), &mut |_| true);
    match r {
        Err(e @ Error::NoBrain { .. }) => {
            let text = e.to_string();
            assert!(text.contains("no brain was found"), "{text}");
            assert!(text.contains("-1000") && text.contains("1200"), "{text}");
        }
        other => panic!("expected a no-brain refusal, got {other:?}"),
    }
}

#[test]
fn values_that_are_not_hu_are_refused_unless_the_caller_vouches_for_them() {
    // The bundled case as a display render: HU mapped onto 0..255 (what a PNG export holds).
    let scan = Scan::from_bytes(&std::fs::read(CASE).unwrap()).unwrap();
    let render = scan
        .stack
        .hu
        .mapv(|h| ((h + 1024.0) / 16.0).clamp(0.0, 255.0));
    let bytes = nifti_of(render, scan.stack.spacing);
    let device = Device::flex();
    let m = net(&device);
    let r = pipeline::segment(&bytes, &m, &device, &no_crf(), &mut |_| true);
    let Err(e @ Error::NotHu { .. }) = r else {
        panic!("expected a not-HU refusal, got {r:?}");
    };
    assert!(e.to_string().contains("--assume-hu"), "{e}");
    // The user says the values are HU: it runs, and the report carries that word everywhere.
    let opts = SegmentOptions {
        assume_hu: true,
        ..no_crf()
    };
    match pipeline::segment(&bytes, &m, &device, &opts, &mut |_| true) {
        Ok(seg) => {
            assert!(seg.hu_assumed);
            assert!(
                seg.warnings
                    .iter()
                    .any(|w| w.contains("because you said so"))
            );
        }
        // Read as HU, a 0..255 render may well hold no brain: also a refusal, never a 0 mL.
        Err(Error::NoBrain { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn a_blank_scan_is_refused() {
    let bytes = nifti_of(
        ndarray::Array3::from_elem((4, 16, 16), 40.0f32),
        [5.0, 1.0, 1.0],
    );
    let r = Prepared::new(&bytes, true);
    assert!(
        matches!(r, Err(Error::BlankScan { value }) if value == 40.0),
        "{r:?}"
    );
}

#[test]
fn the_report_says_when_left_and_right_are_unknown() {
    let device = Device::flex();
    let m = net(&device);
    let bytes = std::fs::read(CASE).unwrap();
    let seg = pipeline::segment(&bytes, &m, &device, &no_crf(), &mut |_| true).unwrap();
    assert!(seg.orientation_known);
    // The same voxels with voxel sizes only (no qform, no sform): an Analyze-style header.
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut raw).unwrap();
    raw[252..254].copy_from_slice(&0i16.to_le_bytes()); // qform_code
    raw[254..256].copy_from_slice(&0i16.to_le_bytes()); // sform_code
    let seg = pipeline::segment(&raw, &m, &device, &no_crf(), &mut |_| true).unwrap();
    assert!(!seg.orientation_known);
    let json = serde_json::to_value(&seg).unwrap();
    assert_eq!(json["orientation_known"], serde_json::Value::Bool(false));
}

#[test]
fn a_header_in_metres_measures_the_same_brain_as_its_millimetre_twin() {
    let bytes = std::fs::read(CASE).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut raw).unwrap();
    let mm = Prepared::new(&raw, false).unwrap();
    let mm_ml = mm.scan().stack.mask_ml(mm.brain());
    // Every length / 1000, units code 1 (metre), time bits kept.
    let f32_at = |b: &[u8], o: usize| f32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let mut metres = raw.clone();
    let mut scale = |o: usize| {
        let v = f32_at(&metres, o) / 1000.0;
        metres[o..o + 4].copy_from_slice(&v.to_le_bytes());
    };
    for k in 1..=3 {
        scale(76 + 4 * k); // pixdim[1..=3]
    }
    for k in 0..3 {
        scale(268 + 4 * k); // qoffset
    }
    for k in 0..12 {
        scale(280 + 4 * k); // srow_x, srow_y, srow_z
    }
    metres[123] = (raw[123] & !0x07) | 1;
    let m = Prepared::new(&metres, false).unwrap();
    let m_ml = m.scan().stack.mask_ml(m.brain());
    assert!(mm_ml > 500.0, "brain {mm_ml} mL");
    assert!(
        (m_ml - mm_ml).abs() < 1e-3 * mm_ml,
        "metres {m_ml} mL vs mm {mm_ml} mL"
    );
    assert_eq!(m.scan().stack.spacing, mm.scan().stack.spacing);
    assert!(m.scan().warnings.iter().any(|w| w.contains("metres")));
    // A units code that is no length at all is refused, not guessed.
    let mut bad = raw.clone();
    bad[123] = (raw[123] & !0x07) | 5;
    let e = Scan::from_bytes(&bad).unwrap_err();
    assert!(e.to_string().contains("spatial unit code 5"), "{e}");
}

#[test]
fn options_arrive_as_json_and_typos_are_refused() {
    let o =
        SegmentOptions::from_json(r#"{"threshold": 0.4, "crf": null, "assume_hu": true}"#).unwrap();
    assert_eq!(o.threshold, 0.4);
    assert!(o.crf.is_none() && o.assume_hu);
    let o = SegmentOptions::from_json(r#"{"crf": {"appearance_weight": 2.5}}"#).unwrap();
    assert_eq!(o.crf.unwrap().appearance_weight, 2.5);
    let e = SegmentOptions::from_json(r#"{"treshold": 0.4}"#).unwrap_err();
    assert!(e.to_string().contains("treshold"), "{e}");
    let e = SegmentOptions::from_json(r#"{"threshold": 1.5}"#).unwrap_err();
    assert!(e.to_string().contains("threshold 1.5"), "{e}");
}
