//! `ichnet compare` as a user runs it: the bundled scan against itself moved in the world (the
//! same voxels under a rotated, shifted affine, so the head moved and nothing else changed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ichnet::io::{Geometry, Scan, Storage, write_nifti_gz};
use ichnet::registration::Rigid;

const BIN: &str = env!("CARGO_BIN_EXE_ichnet");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pipeline");

fn ichnet(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The fixture's voxels written with affine `T · A`: the same head, moved by `t`.
fn moved_fixture(t: &Rigid, path: &Path) {
    let bytes = std::fs::read(format!("{FIXTURE}/image.nii.gz")).unwrap();
    let scan = Scan::from_bytes(&bytes).unwrap();
    let a = scan.info.affine;
    let m = t.affine();
    let mut moved = [[0.0; 4]; 4];
    for (r, row) in moved.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..4).map(|k| m[r][k] * a[k][c]).sum();
        }
    }
    let dims = scan.geometry().dims;
    let values = scan.to_file_order(&scan.stack.hu).unwrap();
    let arr = ndarray::Array3::from_shape_vec((dims[2], dims[1], dims[0]), values).unwrap();
    let geom = Geometry::from_affine(dims, &moved).unwrap();
    let out = write_nifti_gz(&arr, &geom, Storage::F32).unwrap();
    std::fs::write(path, out).unwrap();
}

#[test]
fn compare_finds_the_movement_and_no_growth_when_only_the_head_moved() {
    let dir = scratch("cli-compare");
    let baseline = format!("{FIXTURE}/image.nii.gz");
    let followup = dir.join("followup.nii.gz");
    let mut t = Rigid {
        angles_deg: [7.0, -4.0, 10.0],
        translation_mm: [12.0, -9.0, 6.0],
        centre_mm: [0.0; 3],
    };
    // Rotate about the brain's rough centre, where registration reports its centre too.
    let scan = Scan::from_bytes(&std::fs::read(&baseline).unwrap()).unwrap();
    let a = scan.info.affine;
    let d = scan.geometry().dims.map(|n| (n as f64 - 1.0) / 2.0);
    t.centre_mm = [0, 1, 2].map(|r| a[r][0] * d[0] + a[r][1] * d[1] + a[r][2] * d[2] + a[r][3]);
    moved_fixture(&t, &followup);
    let out = dir.join("out");
    let o = ichnet(&[
        "compare",
        &baseline,
        followup.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = &r["comparison"];
    let (b, f) = (
        c["baseline_ml"].as_f64().unwrap(),
        c["followup_ml"].as_f64().unwrap(),
    );
    assert!(b > 5.0, "the fixture has a bleed: {b} mL");
    assert!((f - b).abs() < 0.05 * b, "{b} vs {f} mL");
    assert_eq!(c["expansion"]["expanded"], false);
    assert!(
        c["verdict"]
            .as_str()
            .unwrap()
            .starts_with("no haematoma expansion")
    );
    assert_eq!(
        c["registration"]["quality"]["poor"], false,
        "{}",
        c["registration"]
    );
    let h = c["haematomas"].as_array().unwrap();
    assert!(h.iter().any(|x| x["status"] == "persisting"), "{h:?}");
    // The recovered transform moves the baseline's brain where the truth does.
    let est = &c["registration"]["transform"];
    let v3 = |v: &serde_json::Value| [0, 1, 2].map(|k| v[k].as_f64().unwrap());
    let e = Rigid {
        angles_deg: v3(&est["angles_deg"]),
        translation_mm: v3(&est["translation_mm"]),
        centre_mm: v3(&est["centre_mm"]),
    };
    for dx in [-40.0, 40.0] {
        for dy in [-40.0, 40.0] {
            let p = [t.centre_mm[0] + dx, t.centre_mm[1] + dy, t.centre_mm[2]];
            let (q1, q2) = (e.apply(p), t.apply(p));
            let err = (0..3).map(|k| (q1[k] - q2[k]).powi(2)).sum::<f64>().sqrt();
            assert!(err < 2.0, "{err:.2} mm at {p:?}: {est}");
        }
    }
    for name in [
        "baseline_mask.nii.gz",
        "followup_mask.nii.gz",
        "followup_mask_in_baseline.nii.gz",
        "report.json",
    ] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    // The resampled follow-up mask is on the baseline's grid and lies on the baseline's mask.
    let read = |n: &str| Scan::from_bytes(&std::fs::read(out.join(n)).unwrap()).unwrap();
    let (bm, fm) = (
        read("baseline_mask.nii.gz"),
        read("followup_mask_in_baseline.nii.gz"),
    );
    assert_eq!(bm.stack.hu.dim(), fm.stack.hu.dim());
    assert_eq!(bm.info.affine, fm.info.affine);
    let both = bm
        .stack
        .hu
        .iter()
        .zip(fm.stack.hu.iter())
        .filter(|(a, b)| **a > 0.5 && **b > 0.5)
        .count() as f64;
    let base = bm.stack.hu.iter().filter(|v| **v > 0.5).count() as f64;
    assert!(both > 0.8 * base, "{both} of {base} voxels overlap");
}

#[test]
fn a_missing_follow_up_is_one_sentence_and_a_failing_exit_code() {
    let dir = scratch("cli-compare-missing");
    let baseline = format!("{FIXTURE}/image.nii.gz");
    let o = ichnet(&[
        "compare",
        &baseline,
        dir.join("nothing.nii.gz").to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nothing.nii.gz"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
