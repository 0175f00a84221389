//! Brain extraction on real and synthetic heads; windows and resampling through the public API.
//!
//! Fixtures (tests/fixtures/ct, see its README.md): a real adult head CT reduced ×2 in-plane, and
//! the scct CT template with skull (converted to HU) with a reference brain mask made from the
//! skull-stripped template on the same 2 mm grid.

use ichnet::Stack;
use ichnet::io::Scan;
use ichnet::metrics::{dice, volume_ml};
use ichnet::preprocess::{BrainConfig, bounding_box, brain_mask, brain_mask_with};
use ndarray::{Array3, Axis, s};

fn fixture(name: &str) -> Scan {
    let path = format!("{}/tests/fixtures/ct/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Scan::from_bytes(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn count(m: &Array3<u8>) -> usize {
    m.iter().filter(|&&v| v != 0).count()
}

#[test]
fn head_ct_brain_has_an_adult_intracranial_volume() {
    let scan = fixture("cranium_promed0051_half.nii.gz");
    let mask = brain_mask(&scan.stack).unwrap();
    let ml = volume_ml(&mask, &scan.stack).unwrap();
    eprintln!("head CT fixture: brain {ml:.1} mL, {} voxels", count(&mask));
    assert!((1100.0..=1700.0).contains(&ml), "brain volume {ml:.1} mL");
    // The mask is soft tissue: its mean HU is brain-like, not scalp/bone/air.
    let mean: f64 = mask
        .iter()
        .zip(scan.stack.hu.iter())
        .filter(|(m, _)| **m != 0)
        .map(|(_, &h)| f64::from(h))
        .sum::<f64>()
        / count(&mask) as f64;
    assert!(
        (15.0..=45.0).contains(&mean),
        "mean HU in the mask {mean:.1}"
    );
    // One body, well inside the field of view left-right and front-back.
    let b = bounding_box(&mask).unwrap();
    let (_, ny, nx) = scan.stack.dims();
    assert!(
        b.start[1] > 0 && b.end[1] < ny && b.start[2] > 0 && b.end[2] < nx,
        "{b:?}"
    );
}

#[test]
fn template_brain_agrees_with_the_skull_stripped_template() {
    let scan = fixture("scct_cormack_hu.nii.gz");
    let reference = fixture("scct_brain_ref_2mm.nii.gz");
    assert_eq!(scan.stack.dims(), reference.stack.dims());
    let truth = reference.stack.hu.mapv(|v| u8::from(v > 0.5));
    let mask = brain_mask(&scan.stack).unwrap();
    let d = dice(&mask, &truth).unwrap();
    let (ours, theirs) = (
        volume_ml(&mask, &scan.stack).unwrap(),
        volume_ml(&truth, &scan.stack).unwrap(),
    );
    // Above the skull base (stack z ≥ 30 = MNI z ≥ −12 mm) the skull is a closed ring; below it
    // the averaged template's blurred skull base lets face and orbit tissue join the brain.
    let above = dice(
        &mask.slice(s![30.., .., ..]).to_owned(),
        &truth.slice(s![30.., .., ..]).to_owned(),
    )
    .unwrap();
    eprintln!(
        "scct template: Dice {d:.4} (above the skull base {above:.4}), ours {ours:.1} mL, \
         stripped template {theirs:.1} mL"
    );
    assert!(d >= 0.87, "Dice {d:.4}");
    assert!(above >= 0.98, "Dice above the skull base {above:.4}");
}

/// Apply one of the 8 axis flips and the optional y/x transpose to a stack (spacing follows).
fn transform(stack: &Stack, flips: [bool; 3], transpose: bool) -> Stack {
    let mut hu = stack.hu.clone();
    for (a, &f) in flips.iter().enumerate() {
        if f {
            hu.invert_axis(Axis(a));
        }
    }
    let mut spacing = stack.spacing;
    if transpose {
        hu = hu.permuted_axes([0, 2, 1]);
        spacing.swap(1, 2);
    }
    Stack {
        hu: hu.as_standard_layout().into_owned(),
        spacing,
        voxel_ml: stack.voxel_ml,
    }
}

fn untransform(mask: Array3<u8>, flips: [bool; 3], transpose: bool) -> Array3<u8> {
    let mut m = mask;
    if transpose {
        m = m.permuted_axes([0, 2, 1]);
    }
    for (a, &f) in flips.iter().enumerate() {
        if f {
            m.invert_axis(Axis(a));
        }
    }
    m.as_standard_layout().into_owned()
}

#[test]
fn brain_mask_does_not_depend_on_flips_or_axis_order() {
    let scan = fixture("cranium_promed0051_half.nii.gz");
    // A slab of the head keeps the test quick while crossing the skull base; odd sizes along
    // every axis, and 4 mm cells (2×2 pixels × 3 slices) as well as the default (here 1 pixel),
    // so that cells which straddle the centre of an axis are exercised.
    let slab = Stack {
        hu: scan.stack.hu.slice(s![20..69, 1.., ..127]).to_owned(),
        spacing: scan.stack.spacing,
        voxel_ml: scan.stack.voxel_ml,
    };
    let coarse = BrainConfig {
        cell_mm: 4.0,
        ..BrainConfig::default()
    };
    for cfg in [BrainConfig::default(), coarse] {
        let base = brain_mask_with(&slab, &cfg).unwrap();
        assert!(count(&base) > 10_000);
        let cases = [
            ([true, false, false], false),
            ([false, true, false], false),
            ([false, false, true], false),
            ([true, true, true], false),
            ([false, false, false], true),
            ([true, false, true], true),
        ];
        for (flips, transpose) in cases {
            let m = brain_mask_with(&transform(&slab, flips, transpose), &cfg).unwrap();
            let back = untransform(m, flips, transpose);
            let what = format!("{flips:?} transpose={transpose} cell {} mm", cfg.cell_mm);
            assert_eq!(count(&back), count(&base), "{what}");
            assert!(back == base, "{what}: voxels differ");
        }
    }
}

#[test]
fn same_brain_mask_from_every_stored_orientation() {
    // The io fixtures hold one volume stored in several axis orders and flips (niivue, BSD-2).
    let dir = format!("{}/tests/fixtures/nifti/niivue", env!("CARGO_MANIFEST_DIR"));
    let mut masks = Vec::new();
    for name in ["RAS", "LPI", "ASL", "IRP", "SPR"] {
        let bytes = std::fs::read(format!("{dir}/{name}.nii.gz")).unwrap();
        let scan = Scan::from_bytes(&bytes).unwrap();
        let mask = brain_mask(&scan.stack).unwrap();
        // Written back in the file's own voxel order and re-read, it is the same mask again.
        let back = Scan::from_bytes(&scan.mask_nifti_gz(&mask).unwrap()).unwrap();
        assert!(
            back.stack.hu.mapv(|v| u8::from(v > 0.5)) == mask,
            "{name}: write-back"
        );
        masks.push((name, mask));
    }
    let (_, first) = &masks[0];
    assert!(count(first) > 1000);
    for (name, m) in &masks[1..] {
        assert_eq!(count(m), count(first), "{name}");
        assert!(m == first, "{name}: voxels differ from RAS");
    }
}

#[test]
fn bounding_box_is_tight_and_padding_is_in_millimetres() {
    let mut m = Array3::<u8>::zeros((10, 20, 30));
    m[[2, 5, 7]] = 1;
    m[[6, 12, 20]] = 1;
    let b = bounding_box(&m).unwrap();
    assert_eq!(
        (b.start, b.end, b.shape()),
        ([2, 5, 7], [7, 13, 21], [5, 8, 14])
    );
    // 5 mm margin: 1 slice of 5 mm, 10 pixels of 0.5 mm, clipped at the volume's edges.
    let p = b.padded(5.0, [5.0, 0.5, 0.5], (10, 20, 30));
    assert_eq!((p.start, p.end), ([1, 0, 0], [8, 20, 30]));
    assert_eq!(bounding_box(&Array3::<u8>::zeros((2, 2, 2))), None);
}

/// The row-by-row box against the obvious scan of every voxel, on sparse random masks in
/// standard and transposed memory order.
#[test]
fn bounding_box_equals_the_voxel_by_voxel_box() {
    let obvious = |m: &Array3<u8>| {
        let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
        for ((z, y, x), &v) in m.indexed_iter() {
            if v != 0 {
                for (a, i) in [z, y, x].into_iter().enumerate() {
                    lo[a] = lo[a].min(i);
                    hi[a] = hi[a].max(i + 1);
                }
            }
        }
        (lo[0] != usize::MAX).then_some((lo, hi))
    };
    let mut state = 12345u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    for case in 0..40 {
        let dims = (1 + next() % 6, 1 + next() % 9, 1 + next() % 11);
        let mut m = Array3::<u8>::zeros(dims);
        for _ in 0..case % 5 {
            m[[next() % dims.0, next() % dims.1, next() % dims.2]] = 1 + (next() % 200) as u8;
        }
        let t = m.clone().reversed_axes();
        for mask in [&m, &t] {
            let got = bounding_box(mask).map(|b| (b.start, b.end));
            assert_eq!(got, obvious(mask), "case {case}, dims {:?}", mask.dim());
        }
    }
}

/// A synthetic head: brain ball (30 HU, with a CSF ventricle and a calcification) inside a bone
/// shell, scalp outside, a neck block below joined to the brain through a narrow foramen.
fn synthetic_head(dims: (usize, usize, usize), spacing: [f32; 3]) -> (Stack, Array3<u8>) {
    let (nz, ny, nx) = dims;
    let c = [nz as f32 / 2.0, ny as f32 / 2.0, nx as f32 / 2.0].map(|v| v - 0.5);
    let pos = |z: usize, y: usize, x: usize| {
        [
            (z as f32 - c[0]) * spacing[0],
            (y as f32 - c[1]) * spacing[1],
            (x as f32 - c[2]) * spacing[2],
        ]
    };
    let hu = Array3::from_shape_fn(dims, |(z, y, x)| {
        let p = pos(z, y, x);
        let r = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
        let in_foramen = p[1].abs() < 3.0 && p[2].abs() < 3.0 && p[0] < 0.0;
        if r < 60.0 {
            if (p[0] * p[0] + (p[1] - 10.0).powi(2) + p[2] * p[2]).sqrt() < 4.0 {
                300.0 // calcification: filled as a hole
            } else if (p[0] * p[0] + p[1] * p[1] + (p[2] - 15.0).powi(2)).sqrt() < 8.0 {
                5.0 // ventricle
            } else {
                30.0
            }
        } else if r < 66.0 {
            if in_foramen { 30.0 } else { 1200.0 }
        } else if r < 71.0 || (p[0] < -60.0 && p[1].abs() < 40.0 && p[2].abs() < 40.0) {
            40.0 // scalp, neck
        } else {
            -1000.0
        }
    });
    let truth = Array3::from_shape_fn(dims, |(z, y, x)| {
        let p = pos(z, y, x);
        u8::from((p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt() < 60.0)
    });
    (stack_of(hu, spacing), truth)
}

#[test]
fn synthetic_head_brain_is_found_at_any_spacing() {
    for (dims, spacing) in [
        ((30, 90, 90), [5.0, 1.8, 1.8]),
        ((80, 80, 80), [2.0, 2.0, 2.0]),
        ((32, 200, 200), [5.0, 0.8, 0.8]),
    ] {
        let (stack, truth) = synthetic_head(dims, spacing);
        let mask = brain_mask(&stack).unwrap();
        let d = dice(&mask, &truth).unwrap();
        assert!(d > 0.97, "{dims:?} {spacing:?}: Dice {d:.4}");
        // Scalp and neck stay out: only the foramen's few millimetres may be added.
        let outside = mask
            .iter()
            .zip(truth.iter())
            .filter(|(m, t)| **m != 0 && **t == 0)
            .count();
        let v = count(&truth);
        assert!(
            outside * 100 < v,
            "{dims:?}: {outside} voxels outside the brain of {v}"
        );
    }
}

fn stack_of(hu: Array3<f32>, spacing: [f32; 3]) -> Stack {
    let voxel_ml = spacing.iter().map(|&v| f64::from(v)).product::<f64>() / 1000.0;
    Stack {
        hu,
        spacing,
        voxel_ml,
    }
}

#[test]
fn odd_volumes_give_a_mask_not_a_panic() {
    let cases = [
        ("one voxel", Array3::from_elem((1, 1, 1), 30.0f32), [1.0; 3]),
        (
            "all air",
            Array3::from_elem((4, 16, 16), -1000.0),
            [5.0, 0.5, 0.5],
        ),
        ("all bone", Array3::from_elem((4, 16, 16), 1500.0), [1.0; 3]),
        (
            "one slice",
            Array3::from_elem((1, 64, 64), 30.0),
            [0.6, 0.5, 0.5],
        ),
        ("one row", Array3::from_elem((3, 1, 50), 30.0), [1.0; 3]),
        ("NaN", Array3::from_elem((2, 8, 8), f32::NAN), [1.0; 3]),
    ];
    for (name, hu, spacing) in cases {
        let stack = stack_of(hu, spacing);
        let m = brain_mask(&stack).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.dim(), stack.dims(), "{name}");
        if name == "all air" || name == "all bone" || name == "NaN" {
            assert_eq!(count(&m), 0, "{name}");
        }
    }
    let empty = stack_of(Array3::zeros((0, 4, 4)), [1.0; 3]);
    assert!(brain_mask(&empty).is_err());
    let flat = stack_of(Array3::zeros((2, 4, 4)), [0.0, 1.0, 1.0]);
    let e = brain_mask(&flat).unwrap_err().to_string();
    assert!(e.contains("voxel size"), "{e}");
}

#[test]
fn mask_round_trips_through_the_scan_grid() {
    let scan = fixture("cranium_promed0051_half.nii.gz");
    let mask = brain_mask(&scan.stack).unwrap();
    let bytes = scan.mask_nifti_gz(&mask).unwrap();
    let back = Scan::from_bytes(&bytes).unwrap();
    assert_eq!(back.stack.dims(), scan.stack.dims());
    let reread = back.stack.hu.mapv(|v| u8::from(v > 0.5));
    assert!(
        reread == mask,
        "the written mask reads back to different voxels"
    );
}

/// Extra-axial blood (subdural, epidural) lies against the inner table, where the brain mask's
/// erosion could cut it, and probabilities outside the brain mask are zeroed: measured on
/// semi-synthetic cases of the real head (figures printed), the mask must hold nearly all of it.
///
/// Measured when this test was written: 12 cases, 0.980 of the extra-axial blood inside the brain
/// mask (per case 0.936–0.996; the rest is the partial-volume rim against bone, above 100 HU).
/// After the generator drew more kinds (2026-11-30) the 12 cases differ, and two keep less: a
/// large subdural with a clot (68.5 mL, 0.896; its 462 outside voxels at a mean of 193 HU) and an
/// epidural scanned in 6 mm slices of 1.6 mm pixels with 14° tilt (24.6 mL, 0.826; outside
/// voxels 108–167 HU, the uint8 export's ceiling). Both are the same bone rim: voxels over half
/// blood by volume whose remaining bone lifts them above 100 HU, which show as bone in a brain
/// window. So a single case may fall to 0.8; the pooled fraction is held to 0.97 as before.
/// Blood is 40–100 HU soft tissue, so it joins the brain's component instead of being cut off. A
/// region grown from the brain into 40–100 HU voxels (up to 30 mm) was tried: it added none of
/// the missing 2 % and 0.5–12 mL of other voxels per case, the inner-table strips that are the
/// known false positives, so the brain mask stays the analysis region.
#[test]
fn extra_axial_blood_lies_inside_the_brain_mask() {
    use ichnet::synth::{self, Limits, Preset, anatomy::Anatomy};
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/anatomy/cranium_promed0051_head.nii.gz"
    );
    let scan = Scan::from_bytes(&std::fs::read(path).unwrap()).unwrap();
    let anatomy = Anatomy::new("head", &scan.stack).unwrap();
    let limits = Limits {
        max_matrix: 160,
        max_slices: 40,
    };
    let (mut blood, mut in_brain, mut cases) = (0usize, 0usize, 0);
    for index in 0..200u64 {
        let case = synth::generate_with(
            std::slice::from_ref(&anatomy),
            21,
            index,
            Preset::Random,
            limits,
            |_| (),
        )
        .unwrap();
        if !(case.lesions.contains("sdh") || case.lesions.contains("edh")) || case.blood_ml < 1.0 {
            continue;
        }
        // As the pipeline sees them: the files read back onto the canonical stack.
        let stack = Scan::from_bytes(&case.image_nifti_gz().unwrap())
            .unwrap()
            .stack;
        let truth = Scan::from_bytes(&case.mask_nifti_gz().unwrap())
            .unwrap()
            .stack;
        let truth = truth.hu.mapv(|v| u8::from(v > 0.5));
        let brain = brain_mask(&stack).unwrap();
        let inside = brain
            .iter()
            .zip(truth.iter())
            .filter(|(a, b)| **a != 0 && **b != 0)
            .count();
        let fraction = inside as f64 / count(&truth) as f64;
        eprintln!(
            "{} ({}, {:.1} mL): {fraction:.3} of the blood in the brain mask",
            case.name, case.lesions, case.blood_ml
        );
        assert!(
            fraction >= 0.8,
            "{}: {fraction:.3} inside the brain mask",
            case.name
        );
        blood += count(&truth);
        in_brain += inside;
        cases += 1;
        if cases == 12 {
            break;
        }
    }
    let fraction = in_brain as f64 / blood as f64;
    eprintln!("{cases} extra-axial cases: {fraction:.3} of the blood in the brain mask");
    assert!(cases >= 8, "only {cases} extra-axial cases were drawn");
    assert!(
        fraction >= 0.97,
        "the brain mask holds {fraction:.3} of the extra-axial blood"
    );
}
