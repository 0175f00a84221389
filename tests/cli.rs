//! The `ichnet` command line as a user runs it: exit codes, one-sentence errors, files written,
//! and the JSON that scripts (and the CRF tuning in the README) read.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ichnet");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pipeline");

fn ichnet(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh scratch folder under the target dir (no tempfile dependency; removed first).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A data folder in `ichnet train`/`eval` layout holding the bundled case.
/// `ichnet train --data DATA --out OUT --batch 2` and `extra`.
fn train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut v = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--batch",
        "2",
    ];
    v.extend_from_slice(extra);
    ichnet(&v)
}

fn data_folder(name: &str) -> PathBuf {
    let dir = scratch(name);
    for sub in ["images", "masks"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::copy(
        Path::new(FIXTURE).join("image.nii.gz"),
        dir.join("images/case.nii.gz"),
    )
    .unwrap();
    std::fs::copy(
        Path::new(FIXTURE).join("mask.nii.gz"),
        dir.join("masks/case.nii.gz"),
    )
    .unwrap();
    dir
}

#[test]
fn segment_writes_a_mask_and_reports_json() {
    let dir = scratch("cli-segment");
    let out = dir.join("mask.nii.gz");
    let image = format!("{FIXTURE}/image.nii.gz");
    let o = ichnet(&["segment", &image, "-o", out.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ml = report["volume_ml"].as_f64().unwrap();
    // Against the simulated truth (19.4 mL, the fixture's README): the shipped model with its
    // CRF must land within a tenth of it.
    let truth =
        ichnet::io::Scan::from_bytes(&std::fs::read(format!("{FIXTURE}/mask.nii.gz")).unwrap())
            .unwrap();
    let true_ml = truth
        .stack
        .mask_ml(&truth.stack.hu.mapv(|v| u8::from(v > 0.5)));
    assert!((true_ml - 19.4).abs() < 0.05, "fixture truth {true_ml} mL");
    assert!(
        (ml - true_ml).abs() <= 0.10 * true_ml,
        "volume {ml} mL, truth {true_ml:.2} mL"
    );
    assert_eq!(report["orientation_known"], serde_json::Value::Bool(true));
    assert_eq!(report["hu_assumed"], serde_json::Value::Bool(false));
    assert_eq!(report["crf"], serde_json::Value::Bool(true));
    // The per-haematoma list: largest first, volumes adding up to the total, the headline ABC/2
    // being the largest's; the fixture's header carries an orientation, so sides are known.
    let list = report["haematomas"].as_array().unwrap();
    assert!(!list.is_empty());
    assert_eq!(list[0]["id"], 1);
    assert_eq!(report["abc2"], list[0]["abc2"]);
    let sum: f64 = list.iter().map(|h| h["volume_ml"].as_f64().unwrap()).sum();
    assert!((sum - ml).abs() < 1e-6, "{sum} vs {ml}");
    for h in list {
        let side = h["side"].as_str().unwrap();
        assert!(["left", "right", "midline"].contains(&side), "{h}");
    }
    let mask = ichnet::io::Scan::from_bytes(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(mask.stack.hu.dim(), (20, 152, 152));
}

#[test]
fn a_crf_config_with_a_misspelt_field_is_refused_by_name() {
    let dir = scratch("cli-crf-typo");
    let cfg = dir.join("crf.json");
    std::fs::write(&cfg, r#"{"apperance_weight": 2}"#).unwrap();
    let image = format!("{FIXTURE}/image.nii.gz");
    let out = dir.join("mask.nii.gz");
    let o = ichnet(&[
        "segment",
        &image,
        "-o",
        out.to_str().unwrap(),
        "--crf-config",
        cfg.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("apperance_weight"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!out.exists(), "no mask may be written after an error");
}

#[test]
fn eval_crf_sweep_scores_each_configuration_from_one_network_pass() {
    let data = data_folder("cli-eval-data");
    // A cases.tsv as `ichnet synth` writes it gives the per-kind summary.
    std::fs::write(
        data.join("cases.tsv"),
        "name\tanatomy\tlesions\tblood_ml\ncase\tfixture\tiph,iph\t18.0\n",
    )
    .unwrap();
    let sweep = scratch("cli-eval-sweep").join("sweep.json");
    // The first entry is the default configuration, so it must reproduce the main CRF column;
    // the second switches both kernels off, which leaves the network's own mask.
    std::fs::write(
        &sweep,
        r#"[{}, {"smooth_weight": 0, "appearance_weight": 0}]"#,
    )
    .unwrap();
    let o = ichnet(&[
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--json",
        "--crf-sweep",
        sweep.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Progress per case on stderr, while stdout stays one JSON document.
    assert!(stderr(&o).contains("case: true"), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = r["crf_sweep"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["summary"], r["ichnet_crf"]);
    let dice = |v: &serde_json::Value| v["mean_dice_ge_1ml"].as_f64().unwrap();
    assert!((dice(&rows[1]["summary"]) - dice(&r["ichnet"])).abs() < 0.01);
    assert!(dice(&r["ichnet_crf"]) >= 0.8, "{}", r["ichnet_crf"]);
    assert_eq!(
        r["crf"]["appearance_weight"],
        rows[0]["crf"]["appearance_weight"]
    );
    // Lesion-level detection: the fixture's one bleed is found with the CRF.
    assert_eq!(r["cases"][0]["kind"], "iph");
    assert!(r["ichnet_crf"]["lesions"].as_u64().unwrap() >= 1);
    assert_eq!(r["ichnet_crf"]["lesion_sensitivity"], 1.0);
    let kinds = r["per_kind"].as_array().unwrap();
    assert_eq!(kinds.len(), 1);
    assert_eq!(kinds[0]["kind"], "iph");
    assert_eq!(kinds[0]["summary"], r["ichnet_crf"]);
}

#[test]
fn unreadable_input_is_one_sentence_and_a_failing_exit_code() {
    let dir = scratch("cli-garbage");
    let bad = dir.join("notes.nii");
    std::fs::write(&bad, b"this is not a scan").unwrap();
    let o = ichnet(&["info", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("notes.nii"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// The network of `bytes` on a fixed 32×32 input: two weight files compared by what they compute.
fn net_outputs(bytes: Vec<u8>) -> Vec<f32> {
    use burn::prelude::*;
    let dev = Device::flex();
    let net = ichnet::model::load(bytes, &dev).unwrap();
    // Five planes; a single-slice network sees the first three (the slice without its context
    // planes), so a network widened from it with zero weights answers exactly as it did.
    let c = net.in_channels();
    let x: Vec<f32> = (0..c * 32 * 32)
        .map(|i| ((i * 37 % 101) as f32) / 101.0)
        .collect();
    let x = Tensor::<4>::from_data(burn::tensor::TensorData::new(x, [1, c, 32, 32]), &dev);
    net.forward_dense(x)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Euclidean distance between two outputs.
fn dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f32>()
        .sqrt()
}

/// Training in sessions: `--stop-after` ends the run at that step with a checkpoint, and
/// `--resume` with the same options carries it on to `--steps`.
#[test]
fn train_stops_after_the_given_step_and_resumes_to_the_end() {
    let data = data_folder("cli-train-data");
    let out = scratch("cli-train-out").join("w.bpk");
    let state = out.with_file_name("w.ckpt.txt");
    let args = |extra: &[&str]| {
        let mut e = vec!["--steps", "4", "--checkpoint-every", "2"];
        e.extend_from_slice(extra);
        train(&data, &out, &e)
    };
    let o = args(&["--stop-after", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("stopped after step 2 of 4"),
        "{}",
        stderr(&o)
    );
    let step = |p: &Path| {
        let s = std::fs::read_to_string(p).unwrap();
        s.split_whitespace().next().unwrap().to_owned()
    };
    assert_eq!(step(&state), "2");
    assert!(out.exists(), "no weights after the first session");
    // Stopping where the run already is would do nothing: refused, naming both steps.
    let o = args(&["--resume", "--stop-after", "2"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("stop after step 2: the run is already at step 2"),
        "{}",
        stderr(&o)
    );
    // The resume must carry on from the checkpoint's weights, not from a fresh start: put a
    // differently seeded network in the checkpoint, and the resumed run must end near it (two
    // Adam steps away), far from where the first session's weights were.
    use burn::prelude::*;
    let ckpt = out.with_extension("ckpt.bpk");
    let dev = Device::flex();
    let first_session = net_outputs(std::fs::read(&ckpt).unwrap());
    dev.seed(999);
    let other = ichnet::model::IchNetConfig::new().init(&dev);
    let other_bytes = ichnet::model::to_bytes(other).unwrap();
    std::fs::write(&ckpt, &other_bytes).unwrap();
    let other = net_outputs(other_bytes);
    let o = args(&["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resumed at step 2"), "{}", stderr(&o));
    assert_eq!(step(&state), "4");
    let resumed = net_outputs(std::fs::read(&ckpt).unwrap());
    let (to_ckpt, to_first) = (dist(&resumed, &other), dist(&resumed, &first_session));
    assert!(
        to_ckpt < 0.5 * to_first,
        "after the resume the network is {to_ckpt} from the checkpoint it resumed and {to_first} \
         from the first session's weights"
    );
}

/// The `case Dice X` of every checkpoint note in a training log, in step order.
fn case_scores(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| l.split_once(": case Dice ")?.1.split_whitespace().next())
        .map(|v| v.parse().unwrap())
        .collect()
}

/// `--val` scores every checkpoint the way `eval` scores a model (whole cases segmented, CRF
/// included) and keeps the best one, not the last, across a resume: the kept weights' `eval`
/// Dice is the highest checkpoint score of the logs.
#[test]
fn train_keeps_the_checkpoint_with_the_best_case_dice() {
    let data = data_folder("cli-train-val-data");
    let out = scratch("cli-train-val-out").join("w.bpk");
    let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/ichnet.bpk");
    let val = data.to_str().unwrap();
    let run = |steps: &str, extra: &[&str]| {
        let mut e = vec![
            "--lr",
            "1e-4",
            "--steps",
            steps,
            "--checkpoint-every",
            "1",
            "--val",
            val,
        ];
        e.extend_from_slice(extra);
        let o = train(&data, &out, &e);
        let log = stderr(&o);
        assert!(o.status.success(), "{log}");
        log
    };
    // Two checkpoints near the shipped weights: they segment the fixture's bleed.
    let log = run("4", &["--init", bundled, "--stop-after", "2"]);
    assert!(
        log.contains("validation: 1 cases (1 with ≥ 1 mL of blood), CRF included"),
        "{log}"
    );
    let good = case_scores(&log);
    assert_eq!(good.len(), 2, "{log}");
    let best = good.iter().copied().fold(f64::MIN, f64::max);
    assert!(best > 0.8, "{log}");
    // The run goes on from an untrained network put in the checkpoint: its two checkpoints
    // score far lower, and the kept weights must stay those of the best early one.
    let ckpt = out.with_extension("ckpt.bpk");
    let dev = burn::prelude::Device::flex();
    dev.seed(999);
    let fresh = ichnet::model::IchNetConfig::new().init(&dev);
    std::fs::write(&ckpt, ichnet::model::to_bytes(fresh).unwrap()).unwrap();
    let log = run("4", &["--resume"]);
    assert!(log.contains("resumed at step 2\n"), "{log}");
    let bad = case_scores(&log);
    assert_eq!(bad.len(), 2, "{log}");
    assert!(
        bad.iter().all(|&s| s < best - 0.3),
        "the untrained checkpoints scored {bad:?}, the good ones {good:?}"
    );
    let o = ichnet(&[
        "eval",
        "--data",
        val,
        "--weights",
        out.to_str().unwrap(),
        "--assume-hu",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kept = report["ichnet_crf"]["mean_dice_ge_1ml"].as_f64().unwrap();
    assert!(
        (kept - best).abs() < 1e-3,
        "the kept weights score {kept} in eval; the best checkpoint scored {best} ({good:?}, \
         then {bad:?})"
    );
    // The resume state names its measure: resumed with the slice measure, the saved best (a
    // case Dice) is not compared with slice scores, so the next checkpoint becomes the best.
    let state = std::fs::read_to_string(out.with_file_name("w.ckpt.txt")).unwrap();
    assert_eq!(
        state.split_whitespace().nth(3),
        Some("case-dice"),
        "{state}"
    );
    let log = run("5", &["--resume", "--validate-by", "slices"]);
    assert!(
        log.contains("the best so far was scored by case-dice, this run scores by slice-dice"),
        "{log}"
    );
    assert!(
        log.contains("step 5: validation Dice") && log.contains("(best, saved)"),
        "{log}"
    );
}

/// A validation folder with nothing to score by case Dice is refused before training, with
/// the way out named.
#[test]
fn train_refuses_case_validation_without_blood() {
    let data = data_folder("cli-train-noblood-data");
    let val = data_folder("cli-train-noblood-val");
    let image =
        ichnet::io::Scan::from_bytes(&std::fs::read(val.join("images/case.nii.gz")).unwrap())
            .unwrap();
    let mut stack = image.stack.clone();
    stack.hu.fill(0.0);
    let empty = ichnet::io::write_stack_nifti_gz(
        &stack,
        ichnet::io::Storage::U8 {
            slope: 1.0,
            inter: 0.0,
        },
    )
    .unwrap();
    std::fs::write(val.join("masks/case.nii.gz"), empty).unwrap();
    let out = scratch("cli-train-noblood-out").join("w.bpk");
    let o = train(
        &data,
        &out,
        &["--steps", "1", "--val", val.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("none of its 1 cases has 1 mL of blood or more") && err.contains("slices"),
        "{err}"
    );
    assert!(
        !out.exists(),
        "weights written although the run was refused"
    );
    // By slices the same folder is a valid (if weak) validation.
    let o = train(
        &data,
        &out,
        &[
            "--steps",
            "1",
            "--val",
            val.to_str().unwrap(),
            "--validate-by",
            "slices",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("(slices, network alone)"),
        "{}",
        stderr(&o)
    );
}

/// Fine-tuning: `--init WEIGHTS` starts from those weights (the shipped model here), so two
/// small Adam steps end near them and far from a fresh network of the same seed.
#[test]
fn train_init_starts_from_the_given_weights() {
    let data = data_folder("cli-train-init-data");
    let dir = scratch("cli-train-init-out");
    let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/ichnet.bpk");
    let run = |name: &str, extra: &[&str]| -> std::path::PathBuf {
        let out = dir.join(name);
        let mut e = vec!["--steps", "2", "--lr", "1e-4"];
        e.extend_from_slice(extra);
        let o = train(&data, &out, &e);
        assert!(o.status.success(), "{}", stderr(&o));
        out
    };
    let tuned = run("tuned.bpk", &["--init", bundled]);
    let fresh = run("fresh.bpk", &[]);
    let shipped = net_outputs(std::fs::read(bundled).unwrap());
    let tuned = net_outputs(std::fs::read(tuned).unwrap());
    let fresh = net_outputs(std::fs::read(fresh).unwrap());
    let (to_shipped, fresh_to_shipped) = (dist(&tuned, &shipped), dist(&fresh, &shipped));
    assert!(
        to_shipped < 0.2 * fresh_to_shipped,
        "after --init the network is {to_shipped} from the weights it started from; a fresh \
         network is {fresh_to_shipped} from them"
    );
    // --init and --resume are two different starts: refused together.
    let o = ichnet(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        dir.join("x.bpk").to_str().unwrap(),
        "--init",
        bundled,
        "--resume",
    ]);
    assert!(!o.status.success());
    // Widened to context planes (zero weights on them), the tuned network still answers as
    // the weights it started from; such a network cannot be narrowed to a single-slice run.
    let wide = run("wide.bpk", &["--init", bundled, "--input", "context"]);
    let wide_out = net_outputs(std::fs::read(&wide).unwrap());
    assert!(
        dist(&wide_out, &shipped) < 0.2 * fresh_to_shipped,
        "widened: {} from the weights it started from",
        dist(&wide_out, &shipped)
    );
    let o = train(
        &data,
        &dir.join("narrow.bpk"),
        &[
            "--steps",
            "1",
            "--input",
            "slice",
            "--init",
            wide.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("those weights take the context input, the run trains the slice input"),
        "{}",
        stderr(&o)
    );
    // A rim share that is not a share is refused with its number.
    let o = train(
        &data,
        &dir.join("rim.bpk"),
        &["--steps", "1", "--rim-negatives", "1.5"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("a rim share of 1.5 is not a share"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_mr_scan_is_refused_with_a_reason_and_no_mask() {
    // nibabel's anatomical.nii: a T1 MR (values −610..30393), which used to get "0.00 mL".
    let mr = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/nifti/nibabel/anatomical.nii"
    );
    let dir = scratch("cli-mr");
    let out = dir.join("mask.nii.gz");
    let o = ichnet(&["segment", mr, "-o", out.to_str().unwrap(), "--json"]);
    assert!(
        !o.status.success(),
        "an MR must not get a volume: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = stderr(&o);
    assert!(err.contains("anatomical.nii"), "{err}");
    assert!(err.contains("no brain was found"), "{err}");
    assert!(err.contains("-610") && err.contains("30393"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(o.stdout.is_empty(), "no report after a refusal");
    assert!(!out.exists());
}

/// The negative control on a real DICOM series without haemorrhage: the GE head CT of dcm2niix's
/// validation set, gantry tilt 18.5° and unequal slice steps (tests/fixtures/dicom/README.md),
/// read as a scanner writes it. Measured when written: 0.14 mL in two specks of 0.07 mL, brain
/// 1464 mL. Since 2026-11-30 this head is also one of the training anatomies (synthetic bleeds
/// placed in it, assets/anatomy), so it no longer tests a head the model never saw; none of the
/// real heads here does (README, model card).
#[test]
fn a_real_dicom_head_without_haemorrhage_gets_at_most_half_a_ml() {
    let head = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dicom/ge-head-half.zip"
    );
    let dir = scratch("cli-negative-control");
    let out = dir.join("mask.nii.gz");
    let o = ichnet(&["segment", head, "-o", out.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ml = report["volume_ml"].as_f64().unwrap();
    let brain = report["brain_ml"].as_f64().unwrap();
    assert!((1200.0..=1700.0).contains(&brain), "brain {brain} mL");
    assert!(
        ml <= 0.5,
        "{ml} mL of haemorrhage found in a head without any"
    );
    assert!(out.exists());
}

/// The DICOM path end to end, against the NIfTI path and dcm2niix: the page's sample (a real head
/// with a simulated 28 mL bleed) written as a DICOM series by pydicom (nifti_to_dicom.py, voxels
/// unchanged), segmented as that folder, as the original NIfTI, and as dcm2niix's NIfTI of the
/// folder. All three must give the same mask, voxel for voxel in the same place, and the same
/// volume: one pipeline, whatever the reader. Skipped (with a line) without python3+pydicom or dcm2niix.
#[test]
fn a_dicom_series_segments_as_its_nifti_and_as_dcm2niix_output() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/www/samples/sample_head_ct_simulated_bleed.nii.gz"
    );
    let dir = scratch("cli-dicom-vs-nifti");
    let series = dir.join("series");
    let made = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/dicom/nifti_to_dicom.py"
        ))
        .arg(sample)
        .arg(&series)
        .output();
    if !made.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIP: python3 with numpy and pydicom is needed (scripts/setup.sh installs them)"
        );
        return;
    }
    let run = |input: &Path, tag: &str| -> (serde_json::Value, ichnet::io::Scan) {
        let out = dir.join(format!("{tag}.nii.gz"));
        let o = ichnet(&[
            "segment",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{tag}: {}", stderr(&o));
        let mask = ichnet::io::Scan::from_bytes(&std::fs::read(&out).unwrap()).unwrap();
        (serde_json::from_slice(&o.stdout).unwrap(), mask)
    };
    // The masks, each read back in canonical stack order with its world affine: equal voxel for
    // voxel and placed alike (a flipped or shifted grid fails here, not only a volume change).
    let same_place = |a: &ichnet::io::Scan, b: &ichnet::io::Scan, what: &str| {
        assert_eq!(a.stack.hu, b.stack.hu, "mask voxels, {what}");
        let (fa, fb) = (a.stack_affine(), b.stack_affine());
        for r in 0..3 {
            for c in 0..4 {
                assert!(
                    (fa[r][c] - fb[r][c]).abs() < 1e-3,
                    "{what}: affine {fa:?} vs {fb:?}"
                );
            }
        }
    };
    let (dicom, m_dicom) = run(&series, "dicom");
    let (nifti, m_nifti) = run(Path::new(sample), "nifti");
    let ml = |r: &serde_json::Value| r["volume_ml"].as_f64().unwrap();
    assert!(
        ml(&nifti) > 20.0,
        "the sample's bleed was found: {}",
        ml(&nifti)
    );
    same_place(&m_dicom, &m_nifti, "DICOM vs NIfTI");
    assert!(
        (ml(&dicom) - ml(&nifti)).abs() < 1e-6,
        "{} vs {}",
        ml(&dicom),
        ml(&nifti)
    );

    if Command::new("dcm2niix").arg("-v").output().is_err() {
        eprintln!("SKIP: dcm2niix is not installed (scripts/setup.sh installs it)");
        return;
    }
    let conv = dir.join("dcm2niix");
    std::fs::create_dir_all(&conv).unwrap();
    let o = Command::new("dcm2niix")
        .args(["-z", "y", "-b", "n", "-f", "scan", "-o"])
        .arg(&conv)
        .arg(&series)
        .output()
        .unwrap();
    assert!(o.status.success(), "dcm2niix: {}", stderr(&o));
    let (theirs, m_theirs) = run(&conv.join("scan.nii.gz"), "dcm2niix");
    same_place(&m_dicom, &m_theirs, "ours vs dcm2niix's NIfTI");
    assert!(
        (ml(&dicom) - ml(&theirs)).abs() < 1e-6,
        "{} vs {}",
        ml(&dicom),
        ml(&theirs)
    );
}
