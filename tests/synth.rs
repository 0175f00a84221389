//! `ichnet synth`: determinism, exact masks, lesion placement, confounders, and files that read
//! back through `io` on the right grid.
//!
//! Uses the small vendored template (assets/anatomy/scct_cormack_hu.nii.gz, 2 mm) and small
//! grid limits so that each case renders in well under a second.

use std::sync::OnceLock;

use ichnet::io::Scan;
use ichnet::synth::{self, Anatomy, BLOOD_HU, Case, Limits, Preset};

const TEMPLATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/anatomy/scct_cormack_hu.nii.gz"
);
const SMALL: Limits = Limits {
    max_matrix: 96,
    max_slices: 14,
};

fn anatomy() -> &'static [Anatomy] {
    static A: OnceLock<Vec<Anatomy>> = OnceLock::new();
    A.get_or_init(|| {
        let bytes = std::fs::read(TEMPLATE).expect("vendored template present");
        let scan = Scan::from_bytes(&bytes).expect("template reads");
        vec![Anatomy::new("scct_cormack_hu", &scan.stack).expect("template labels")]
    })
}

fn case(seed: u64, index: u64) -> Case {
    synth::generate_with(anatomy(), seed, index, Preset::Random, SMALL, |_| ())
        .expect("case generates")
}

/// The first `n` cases of seed 11 (cached: several tests look at the same cases).
fn cases() -> &'static [Case] {
    static C: OnceLock<Vec<Case>> = OnceLock::new();
    C.get_or_init(|| (0..24).map(|i| case(11, i)).collect())
}

#[test]
fn anatomy_labels_are_plausible() {
    let a = &anatomy()[0];
    let ml = a.brain_ml();
    assert!((900.0..1900.0).contains(&ml), "brain {ml:.0} mL");
    assert!(a.ventricle_points.len() > 100, "ventricles found");
    assert!(a.atria.is_some(), "atria found");
}

#[test]
fn same_seed_gives_identical_bytes_and_other_seeds_differ() {
    let a = case(5, 3);
    let b = case(5, 3);
    assert_eq!(a.image_nifti_gz().unwrap(), b.image_nifti_gz().unwrap());
    assert_eq!(a.mask_nifti_gz().unwrap(), b.mask_nifti_gz().unwrap());
    assert_eq!(a.tsv_row(), b.tsv_row());
    let c = case(6, 3);
    assert_ne!(a.image_nifti_gz().unwrap(), c.image_nifti_gz().unwrap());
    let d = case(5, 4);
    assert_ne!(a.image_nifti_gz().unwrap(), d.image_nifti_gz().unwrap());
}

#[test]
fn blood_ml_is_mask_voxels_times_voxel_volume_and_matches_the_tsv() {
    for c in cases() {
        let voxels = c.mask.iter().filter(|&&m| m != 0).count();
        let want = voxels as f64 * c.acq.voxel_ml();
        assert!(
            (c.blood_ml - want).abs() < 1e-9,
            "{}: {} vs {want}",
            c.name,
            c.blood_ml
        );
        let tsv: f64 = c.tsv_row().split('\t').nth(3).unwrap().parse().unwrap();
        assert!(
            (tsv - want).abs() < 0.0006,
            "{}: tsv {tsv} vs {want}",
            c.name
        );
        // And the same from the written mask, read back by io (voxel volume from the affine).
        let scan = Scan::from_bytes(&c.mask_nifti_gz().unwrap()).unwrap();
        let read_ml =
            scan.stack.hu.iter().filter(|&&v| v > 0.5).count() as f64 * scan.stack.voxel_ml;
        assert!(
            (read_ml - want).abs() < 1e-6 * want.max(1.0),
            "{}: read {read_ml} vs {want}",
            c.name
        );
    }
}

#[test]
fn intraparenchymal_masks_lie_inside_the_brain() {
    let mut seen = 0;
    for c in cases()
        .iter()
        .filter(|c| c.lesions.split(',').all(|k| k == "iph"))
    {
        let total = c.mask.iter().filter(|&&m| m != 0).count();
        let inside = c
            .mask
            .iter()
            .zip(c.brain.iter())
            .filter(|&(&m, &b)| m != 0 && b != 0)
            .count();
        if total > 0 {
            seen += 1;
            assert!(
                inside as f64 >= 0.98 * total as f64,
                "{}: {inside} of {total} mask voxels in the brain",
                c.name
            );
        }
    }
    assert!(
        seen >= 3,
        "only {seen} cases with intraparenchymal blood only"
    );
}

#[test]
fn blood_density_is_within_the_acute_range_before_noise() {
    let mut full = 0;
    for c in cases() {
        for (&f, &hu) in c.blood.iter().zip(c.clean.iter()) {
            if f >= 0.9999 {
                full += 1;
                assert!(
                    hu >= BLOOD_HU.0 - 0.5 && hu <= BLOOD_HU.1 + 0.5,
                    "{}: voxel fully blood at {hu} HU",
                    c.name
                );
            }
        }
        // (Mask-edge voxels are mixtures by design: ≥ ½ blood, the rest brain, CSF or bone.)
    }
    assert!(full > 1000, "only {full} voxels fully blood");
}

#[test]
fn cases_without_lesions_have_empty_masks_and_about_15_percent_have_none() {
    let none: Vec<&Case> = cases().iter().filter(|c| c.lesions == "none").collect();
    assert!(!none.is_empty(), "no lesion-free case among the first 24");
    for c in &none {
        assert!(c.mask.iter().all(|&m| m == 0), "{}: mask not empty", c.name);
        assert_eq!(c.blood_ml, 0.0);
    }
    let with = cases().iter().filter(|c| c.lesions != "none").count();
    assert!(with >= 15, "only {with} of 24 cases have a lesion");
}

#[test]
fn confounders_are_never_in_the_mask() {
    let mut confounder_voxels = 0;
    for c in cases() {
        for (&m, &k) in c.mask.iter().zip(c.confounder.iter()) {
            confounder_voxels += usize::from(k);
            assert!(
                !(m != 0 && k != 0),
                "{}: a calcification/falx voxel is in the mask",
                c.name
            );
        }
        // Nothing denser than the densest blood is labelled blood (calcifications, bone).
        for ((&m, &hu), &f) in c.mask.iter().zip(c.clean.iter()).zip(c.blood.iter()) {
            if m != 0 && f >= 0.9999 {
                assert!(hu <= BLOOD_HU.1 + 0.5, "{}: {hu} HU in the mask", c.name);
            }
        }
    }
    assert!(confounder_voxels > 0, "no confounder was drawn in 24 cases");
}

#[test]
fn written_files_read_back_on_the_right_grid_in_any_orientation() {
    let mut permuted = 0;
    let mut tilted = 0;
    for c in cases().iter().take(16) {
        let img = Scan::from_bytes(&c.image_nifti_gz().unwrap()).unwrap();
        let mask = Scan::from_bytes(&c.mask_nifti_gz().unwrap()).unwrap();
        let [ni, nj, nk] = c.acq.dims;
        assert_eq!(img.stack.dims(), (nk, nj, ni), "{}", c.name);
        assert_eq!(mask.stack.dims(), (nk, nj, ni), "{}", c.name);
        assert!((img.stack.voxel_ml - c.acq.voxel_ml()).abs() < 1e-6 * c.acq.voxel_ml());
        assert_eq!(
            img.info.affine, mask.info.affine,
            "{}: image and mask grids differ",
            c.name
        );
        assert_eq!(img.info.axis_codes, c.acq.axis_codes(), "{}", c.name);
        let back = mask.stack.hu.mapv(|v| u8::from(v > 0.5));
        assert_eq!(
            back, c.mask,
            "{}: mask changed on the way through the file",
            c.name
        );
        // Values: exact up to the storage's quantisation step (inside its range).
        let (step, lo, hi) = match c.acq.storage {
            ichnet::io::Storage::U8 { slope, inter } => (slope, inter, inter + 255.0 * slope),
            ichnet::io::Storage::I16 { slope, inter } => {
                (slope, inter - 32768.0 * slope, inter + 32767.0 * slope)
            }
            ichnet::io::Storage::F32 => (0.0, f32::MIN, f32::MAX),
        };
        for (&a, &b) in img.stack.hu.iter().zip(c.image.iter()) {
            let want = b.clamp(lo, hi);
            assert!(
                (a - want).abs() <= step / 2.0 + 1e-3,
                "{}: read {a}, wrote {b}",
                c.name
            );
        }
        permuted += usize::from(c.acq.axis_codes() != "RAS");
        tilted += usize::from(c.acq.tilt_deg != 0.0);
    }
    assert!(
        permuted > 0 && tilted > 0,
        "16 cases had {permuted} permuted and {tilted} tilted grids"
    );
}

#[test]
fn demo_preset_makes_one_bleed_of_20_to_30_ml() {
    let c = synth::generate_with(anatomy(), 1, 0, Preset::Demo, SMALL, |_| ()).unwrap();
    assert_eq!(c.lesions, "iph");
    assert!((20.0..=30.0).contains(&c.blood_ml), "{} mL", c.blood_ml);
    assert_eq!(c.acq.axis_codes(), "RAS");
    assert_eq!(c.acq.tilt_deg, 0.0);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    assert!(synth::generate(&[], 1, 0, Preset::Random).is_err());
    let tiny = Limits {
        max_matrix: 4,
        max_slices: 0,
    };
    assert!(synth::generate_with(anatomy(), 1, 0, Preset::Random, tiny, |_| ()).is_err());
}

/// `n` cases of one kind (`synth --kind`), seed 21.
fn kind_cases(kind: synth::CaseKind, n: u64) -> Vec<Case> {
    (0..n)
        .map(|i| {
            synth::generate_with(anatomy(), 21, i, Preset::Only(kind), SMALL, |_| ())
                .expect("case generates")
        })
        .collect()
}

/// Mean HU of the voxels that are entirely blood, before noise.
fn mean_full_blood_hu(cases: &[Case]) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for c in cases {
        for (&f, &hu) in c.blood.iter().zip(c.clean.iter()) {
            if f >= 0.9999 {
                sum += f64::from(hu);
                n += 1;
            }
        }
    }
    assert!(n > 50, "only {n} voxels entirely blood");
    sum / n as f64
}

#[test]
fn each_kind_asked_for_is_the_one_drawn_and_unknown_kinds_are_refused() {
    for kind in synth::CaseKind::ALL {
        let cases = kind_cases(kind, 3);
        for c in &cases {
            assert_eq!(c.lesions, kind.name(), "{}", c.name);
        }
        assert!(
            cases.iter().any(|c| c.blood_ml > 0.0),
            "{}: no blood in the mask of 3 cases",
            kind.name()
        );
    }
    let err = synth::CaseKind::parse("stroke").unwrap_err().to_string();
    assert!(err.contains("sah") && err.contains("iph-low"), "{err}");
}

#[test]
fn low_density_clots_are_darker_than_acute_ones() {
    let acute = mean_full_blood_hu(&kind_cases(synth::CaseKind::Iph, 4));
    let low = mean_full_blood_hu(&kind_cases(synth::CaseKind::IphLow, 4));
    assert!(
        (38.0..62.0).contains(&low) && low < acute - 10.0,
        "low-density clots {low:.1} HU, acute {acute:.1} HU"
    );
}

/// A cortical clot reaches the inner table: some of its mask voxels touch a voxel outside the
/// brain (in-plane), which a deep clot never does.
#[test]
fn cortical_clots_touch_the_edge_of_the_brain() {
    let touches = |c: &Case| {
        let (nk, nj, ni) = c.mask.dim();
        (0..nk).any(|k| {
            (1..nj - 1).any(|j| {
                (1..ni - 1).any(|i| {
                    c.mask[[k, j, i]] != 0
                        && [(0, 1), (0, -1), (1, 0), (-1, 0)].iter().any(|&(dj, di)| {
                            let (jj, ii) = ((j as i64 + dj) as usize, (i as i64 + di) as usize);
                            c.brain[[k, jj, ii]] == 0
                        })
                })
            })
        })
    };
    let cortical = kind_cases(synth::CaseKind::IphCortical, 6);
    let n = cortical.iter().filter(|c| touches(c)).count();
    assert!(
        n >= 3,
        "only {n} of 6 cortical clots reach the brain's edge"
    );
    let deep = kind_cases(synth::CaseKind::Iph, 6);
    let m = deep.iter().filter(|c| touches(c)).count();
    assert!(m <= 1, "{m} of 6 deep clots reach the brain's edge");
}

/// Subarachnoid blood fills CSF spaces inside the head: it lies in the brain mask (which holds
/// the sulci), never in the ventricles' core, and is spread thin (many slices, little volume).
#[test]
fn subarachnoid_blood_lies_in_the_intracranial_csf_spaces() {
    let cases = kind_cases(synth::CaseKind::Sah, 4);
    let mut with = 0;
    for c in &cases {
        let total = c.blood.iter().filter(|&&f| f > 0.25).count();
        if total == 0 {
            continue;
        }
        with += 1;
        let inside = c
            .blood
            .iter()
            .zip(c.brain.iter())
            .filter(|&(&f, &b)| f > 0.25 && b != 0)
            .count();
        assert!(
            inside as f64 >= 0.9 * total as f64,
            "{}: {inside} of {total} bloody voxels in the brain mask",
            c.name
        );
    }
    assert!(with >= 3, "only {with} of 4 cases show subarachnoid blood");
}

/// The space subarachnoid blood may fill: a few percent of the intracranial volume (1.7 % of the
/// 2 mm template's brain when written), none of it in the ventricles.
#[test]
fn the_subarachnoid_space_is_found_and_excludes_the_ventricles() {
    let a = &anatomy()[0];
    let (lo, hi) = a.brain_box;
    let (mut brain, mut space, mut in_ventricles) = (0usize, 0usize, 0usize);
    let mut z = lo[2];
    while z <= hi[2] {
        let mut y = lo[1];
        while y <= hi[1] {
            let mut x = lo[0];
            while x <= hi[0] {
                let p = [x, y, z];
                if a.brain_at(p) >= 0.5 {
                    brain += 1;
                    let s = a.sah_space_at(p) >= 0.5;
                    space += usize::from(s);
                    in_ventricles += usize::from(s && a.ventricle_at(p) >= 0.99);
                }
                x += 2.0;
            }
            y += 2.0;
        }
        z += 2.0;
    }
    let share = space as f64 / brain as f64;
    eprintln!("subarachnoid space: {space} of {brain} brain samples ({share:.3})");
    assert!((0.01..0.30).contains(&share), "share {share:.3}");
    assert_eq!(in_ventricles, 0);
}

/// Every vendored anatomy (`ichnet synth` uses them all by default) labels like a head: a brain
/// of adult size, ventricles with both atria, parenchyma to centre clots in, a subarachnoid
/// space. The GE head is the one rebuilt from a tilted thick-slice series (4 / 7 mm, the tilt
/// undone by make_anatomy.py): a wrong shear or axis would show as a brain of the wrong size or
/// no ventricles.
#[test]
fn every_vendored_anatomy_labels_like_a_head() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/anatomy");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).expect("assets/anatomy") {
        let path = entry.expect("entry").path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".nii.gz"))
        else {
            continue;
        };
        let scan = Scan::from_bytes(&std::fs::read(&path).expect("readable")).expect("reads");
        let a = Anatomy::new(name, &scan.stack).expect("labels");
        let ml = a.brain_ml();
        eprintln!(
            "{name}: brain {ml:.0} mL, {} ventricle points, {} parenchyma points",
            a.ventricle_points.len(),
            a.parenchyma.len()
        );
        assert!((900.0..1900.0).contains(&ml), "{name}: brain {ml:.0} mL");
        assert!(a.ventricle_points.len() > 100, "{name}: ventricles found");
        assert!(a.atria.is_some(), "{name}: atria found");
        assert!(a.parenchyma.len() > 1000, "{name}: parenchyma found");
        names.push(name.to_string());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "cranium_promed0051_head",
            "ge_hispeed_head",
            "scct_cormack_hu"
        ],
        "the anatomies the model card describes"
    );
}
