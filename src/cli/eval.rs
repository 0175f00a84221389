//! `ichnet eval`: ICHNet (with and without the CRF) and the naive threshold baseline against the
//! true masks of a data folder, per case and summarised.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use ichnet::crf::CrfConfig;
use ichnet::metrics::{self, Confusion, LesionDetection};
use ichnet::pipeline;
use ichnet::{Error, Result, Stack};
use ndarray::Array3;

use super::segment::{device, load_model};
use ichnet::labelled::{list_cases, open_case};

/// Evaluate ICHNet and the naive baseline on image/mask pairs.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Folder with images/ and masks/ (same file names).
    #[arg(long)]
    pub data: PathBuf,
    /// Print JSON (per case and summary) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Weights file (.bpk) instead of the bundled weights.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Probability threshold.
    #[arg(long, default_value_t = pipeline::DEFAULT_THRESHOLD)]
    pub threshold: f32,
    /// Skip the CRF variant (faster).
    #[arg(long)]
    pub no_crf: bool,
    /// Evaluate at most this many cases (sorted by name).
    #[arg(long)]
    pub max_cases: Option<usize>,
    /// Run the network on the GPU (wgpu).
    #[arg(long)]
    pub gpu: bool,
    /// Also print mean Dice (≥ 1 mL) and median |ΔV| of ICHNet without CRF at these thresholds
    /// (comma-separated), to tune the threshold on a validation folder.
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<f32>,
    /// CRF parameters as a JSON object (fields of `CrfConfig`; missing ones keep the defaults).
    #[arg(long, value_name = "FILE.json")]
    pub crf_config: Option<PathBuf>,
    /// Also score ICHNet+CRF under each CRF configuration of this JSON array (partial `CrfConfig`
    /// objects), reusing each case's network output: tunes the CRF on a validation folder.
    #[arg(long, value_name = "FILE.json")]
    pub crf_sweep: Option<PathBuf>,
    /// Take every image's values as Hounsfield units even when they do not look like HU. The
    /// synthetic folders need it: three cases in ten are stored as windowed uint8 exports (no
    /// air below −200 HU), which `segment` refuses without `--assume-hu`.
    #[arg(long)]
    pub assume_hu: bool,
}

/// Scores of one method on one case.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    /// Dice overlap (1 when both masks are empty).
    pub dice: f64,
    /// Predicted volume, mL.
    pub pred_ml: f64,
    /// Predicted − true volume, mL.
    pub volume_error_ml: f64,
    /// 95th-percentile Hausdorff distance, mm (absent when a mask is empty).
    pub hd95_mm: Option<f64>,
    /// Sensitivity (absent without true blood).
    pub sensitivity: Option<f64>,
    /// Precision (absent without predicted blood).
    pub precision: Option<f64>,
    /// Headline ABC/2 of the predicted mask (its largest haematoma's, Kothari), mL.
    pub abc2_ml: f64,
    /// True lesions (connected components of the true mask), how many the prediction found
    /// (≥ 30 % covered) and its components that touch no true blood.
    pub lesions: LesionDetection,
}

/// One evaluated case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// Lesion kinds of the case from `cases.tsv` (sorted, `+`-joined: "iph", "iph+ivh",
    /// "none"); absent without a `cases.tsv`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// True volume, mL.
    pub true_ml: f64,
    /// ABC/2 of the true mask, mL.
    pub true_abc2_ml: f64,
    /// ICHNet without CRF.
    pub ichnet: Scores,
    /// ICHNet with CRF.
    pub ichnet_crf: Option<Scores>,
    /// The 50–90 HU baseline.
    pub baseline: Scores,
}

/// Summary of one method.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    /// Cases with ≥ 1 mL of true blood.
    pub cases_ge_1ml: usize,
    /// Mean Dice over those cases.
    pub mean_dice_ge_1ml: f64,
    /// Median Dice over those cases.
    pub median_dice_ge_1ml: f64,
    /// Median |volume error| over all cases, mL.
    pub median_abs_volume_error_ml: f64,
    /// Mean |volume error| over all cases, mL.
    pub mean_abs_volume_error_ml: f64,
    /// Mean HD95 where defined, mm.
    pub mean_hd95_mm: Option<f64>,
    /// Mean sensitivity where defined.
    pub mean_sensitivity: Option<f64>,
    /// Mean precision where defined.
    pub mean_precision: Option<f64>,
    /// Cases without true blood (< 0.05 mL).
    pub negative_cases: usize,
    /// Largest predicted volume on those cases, mL.
    pub max_ml_on_negatives: Option<f64>,
    /// True lesions over all cases (components of ≥ 0.05 mL, the pipeline's smallest).
    pub lesions: usize,
    /// Of those, found (≥ 30 % covered).
    pub lesions_found: usize,
    /// True components under 0.05 mL over all cases (fragments; not lesions).
    pub specks: usize,
    /// `lesions_found / lesions` (absent without lesions).
    pub lesion_sensitivity: Option<f64>,
    /// Predicted components touching no true blood, over all cases.
    pub false_positive_components: usize,
}

/// The summary of one method over the cases of one lesion kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindSummary {
    /// Kinds of the cases (see [`CaseResult::kind`]).
    pub kind: String,
    /// Cases of this kind.
    pub cases: usize,
    /// Their summary.
    pub summary: Summary,
}

/// One configuration of a `--crf-sweep` and how it scored.
#[derive(Serialize)]
struct SweepResult {
    crf: CrfConfig,
    summary: Summary,
    /// ICHNet+CRF per case, in the order of `cases` (so runs over parts of a folder can be merged).
    per_case: Vec<Scores>,
}

#[derive(Serialize)]
struct Report {
    data: String,
    threshold: f32,
    crf: Option<CrfConfig>,
    cases: Vec<CaseResult>,
    ichnet: Summary,
    ichnet_crf: Option<Summary>,
    baseline: Summary,
    /// ICHNet (+ CRF unless `--no-crf`) per lesion kind, when the folder has a `cases.tsv`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    per_kind: Vec<KindSummary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    crf_sweep: Vec<SweepResult>,
    seconds: f64,
}

/// The configurations of a `--crf-sweep` file.
fn sweep_configs(path: &std::path::Path) -> Result<Vec<CrfConfig>> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let items: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
        Error::InvalidInput(format!(
            "{}: a CRF sweep is a JSON array of CRF parameter objects: {e}",
            path.display()
        ))
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            CrfConfig::from_json(&v.to_string())
                .map_err(|e| Error::InvalidInput(format!("{}: entry {i}: {e}", path.display())))
        })
        .collect()
}

fn scores(pred: &Array3<u8>, truth: &Array3<u8>, stack: &Stack, true_ml: f64) -> Result<Scores> {
    let c = Confusion::new(pred, truth)?;
    let pred_ml = stack.mask_ml(pred);
    Ok(Scores {
        dice: c.dice(),
        pred_ml,
        volume_error_ml: pred_ml - true_ml,
        hd95_mm: metrics::hd95(pred, truth, stack.spacing)?,
        sensitivity: c.sensitivity(),
        precision: c.precision(),
        abc2_ml: metrics::abc2(pred, stack)?.ml,
        // Lesions as small as the pipeline reports (it drops smaller components).
        lesions: LesionDetection::new(pred, truth, pipeline::min_component_voxels(stack))?,
    })
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn summarise(cases: &[CaseResult], pick: impl Fn(&CaseResult) -> Option<&Scores>) -> Summary {
    let with: Vec<(f64, &Scores)> = cases
        .iter()
        .filter_map(|c| pick(c).map(|s| (c.true_ml, s)))
        .collect();
    summarise_scores(&with)
}

/// Summary of `(true mL, scores)` per case.
fn summarise_scores(with: &[(f64, &Scores)]) -> Summary {
    let big: Vec<f64> = with
        .iter()
        .filter(|(ml, _)| *ml >= 1.0)
        .map(|(_, s)| s.dice)
        .collect();
    let errs: Vec<f64> = with.iter().map(|(_, s)| s.volume_error_ml.abs()).collect();
    let neg: Vec<f64> = with
        .iter()
        .filter(|(ml, _)| *ml < 0.05)
        .map(|(_, s)| s.pred_ml)
        .collect();
    let lesions: usize = with.iter().map(|(_, s)| s.lesions.lesions).sum();
    let lesions_found: usize = with.iter().map(|(_, s)| s.lesions.found).sum();
    Summary {
        lesions,
        lesions_found,
        specks: with.iter().map(|(_, s)| s.lesions.specks).sum(),
        lesion_sensitivity: (lesions > 0).then(|| lesions_found as f64 / lesions as f64),
        false_positive_components: with.iter().map(|(_, s)| s.lesions.false_positives).sum(),
        cases_ge_1ml: big.len(),
        mean_dice_ge_1ml: mean(big.iter().copied()).unwrap_or(f64::NAN),
        median_dice_ge_1ml: median(big),
        median_abs_volume_error_ml: median(errs.clone()),
        mean_abs_volume_error_ml: mean(errs.into_iter()).unwrap_or(f64::NAN),
        mean_hd95_mm: mean(with.iter().filter_map(|(_, s)| s.hd95_mm)),
        mean_sensitivity: mean(with.iter().filter_map(|(_, s)| s.sensitivity)),
        mean_precision: mean(with.iter().filter_map(|(_, s)| s.precision)),
        negative_cases: neg.len(),
        max_ml_on_negatives: neg.into_iter().reduce(f64::max),
    }
}

/// Lesion kinds per case from `DIR/cases.tsv` (written by `ichnet synth`): the `lesions` column
/// ("iph,ivh,iph") as a sorted, de-duplicated, `+`-joined label ("iph+ivh"). Empty when the
/// folder has no `cases.tsv` (data from elsewhere).
///
/// The masks are binary, so a lesion's kind is known exactly only in a case of one kind; cases
/// mixing kinds form their own groups rather than being split by guess.
fn case_kinds(dir: &std::path::Path) -> Result<std::collections::HashMap<String, String>> {
    let path = dir.join("cases.tsv");
    let mut out = std::collections::HashMap::new();
    if !path.is_file() {
        return Ok(out);
    }
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let col = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| {
            Error::InvalidInput(format!(
                "{}: the header has no {name:?} column (columns: {})",
                path.display(),
                header.join(", ")
            ))
        })
    };
    let (name_col, kind_col) = (col("name")?, col("lesions")?);
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        if let (Some(n), Some(k)) = (f.get(name_col), f.get(kind_col)) {
            let mut kinds: Vec<&str> = k.split(',').map(str::trim).collect();
            kinds.sort_unstable();
            kinds.dedup();
            out.insert((*n).to_owned(), kinds.join("+"));
        }
    }
    Ok(out)
}

/// Per-kind summaries of one method, kinds in name order.
fn summarise_per_kind(
    cases: &[CaseResult],
    pick: impl Fn(&CaseResult) -> Option<&Scores>,
) -> Vec<KindSummary> {
    let mut kinds: Vec<&str> = cases.iter().filter_map(|c| c.kind.as_deref()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds
        .into_iter()
        .map(|k| {
            let with: Vec<(f64, &Scores)> = cases
                .iter()
                .filter(|c| c.kind.as_deref() == Some(k))
                .filter_map(|c| pick(c).map(|s| (c.true_ml, s)))
                .collect();
            KindSummary {
                kind: k.to_owned(),
                cases: with.len(),
                summary: summarise_scores(&with),
            }
        })
        .collect()
}

/// Run `ichnet eval`.
pub fn run(a: &EvalArgs) -> Result<()> {
    let t = Instant::now();
    let dev = device(a.gpu);
    let net = load_model(a.weights.as_deref(), &dev)?;
    let mut cases = list_cases(&a.data)?;
    if let Some(m) = a.max_cases {
        cases.truncate(m);
    }
    let kinds = case_kinds(&a.data)?;
    let crf_cfg = super::segment::crf_config(a.crf_config.as_deref())?;
    let sweep_cfgs = match &a.crf_sweep {
        Some(p) => sweep_configs(p)?,
        None => Vec::new(),
    };
    // Per sweep configuration: every case's (true mL, ICHNet+CRF scores).
    let mut crf_sweep: Vec<Vec<(f64, Scores)>> = vec![Vec::new(); sweep_cfgs.len()];
    let mut results = Vec::with_capacity(cases.len());
    // Per sweep threshold: (Dice on cases ≥ 1 mL, |ΔV| on all cases).
    let mut sweep: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); a.sweep.len()];
    for (name, img, msk) in &cases {
        let (mut prep, truth) = open_case(img, msk, a.assume_hu)?;
        let stack = prep.scan().stack.clone();
        let true_ml = stack.mask_ml(&truth);
        let true_abc2_ml = metrics::abc2(&truth, &stack)?.ml;
        pipeline::run_network(&mut prep, &net, &dev, 4, &mut |_| true)?;
        for (k, &th) in a.sweep.iter().enumerate() {
            let m = prep.finish(th)?.mask;
            let s = scores(&m, &truth, &stack, true_ml)?;
            if true_ml >= 1.0 {
                sweep[k].0.push(s.dice);
            }
            sweep[k].1.push(s.volume_error_ml.abs());
        }
        let plain = prep.finish(a.threshold)?;
        let ichnet = scores(&plain.mask, &truth, &stack, true_ml)?;
        for (cfg, out) in sweep_cfgs.iter().zip(crf_sweep.iter_mut()) {
            prep.apply_crf(cfg, &mut |_, _| true)?;
            let m = prep.finish(a.threshold)?.mask;
            out.push((true_ml, scores(&m, &truth, &stack, true_ml)?));
        }
        let ichnet_crf = if a.no_crf {
            None
        } else {
            prep.apply_crf(&crf_cfg, &mut |_, _| true)?;
            let refined = prep.finish(a.threshold)?;
            Some(scores(&refined.mask, &truth, &stack, true_ml)?)
        };
        let base = pipeline::baseline_mask(&stack, prep.brain())?;
        let baseline = scores(&base, &truth, &stack, true_ml)?;
        // Per-case lines go to stderr even with --json (stdout stays pure JSON): a folder takes
        // minutes, and silence would look like a hang.
        eprintln!(
            "{name}: true {true_ml:7.2} mL | ICHNet {:7.2} mL Dice {:.3}{} | baseline {:7.2} mL Dice {:.3}",
            ichnet.pred_ml,
            ichnet.dice,
            ichnet_crf
                .as_ref()
                .map(|s| format!(" | +CRF {:7.2} mL Dice {:.3}", s.pred_ml, s.dice))
                .unwrap_or_default(),
            baseline.pred_ml,
            baseline.dice
        );
        results.push(CaseResult {
            kind: kinds.get(name).cloned(),
            name: name.clone(),
            true_ml,
            true_abc2_ml,
            ichnet,
            ichnet_crf,
            baseline,
        });
    }
    for (k, th) in a.sweep.iter().enumerate() {
        let (d, e) = &sweep[k];
        eprintln!(
            "sweep threshold {th:.2}: mean Dice (≥1 mL, n={}) {:.4}  median |ΔV| {:.2} mL",
            d.len(),
            mean(d.iter().copied()).unwrap_or(f64::NAN),
            median(e.clone())
        );
    }
    let crf_sweep: Vec<SweepResult> = sweep_cfgs
        .into_iter()
        .zip(crf_sweep)
        .map(|(crf, per_case)| SweepResult {
            crf,
            summary: summarise_scores(&per_case.iter().map(|(ml, s)| (*ml, s)).collect::<Vec<_>>()),
            per_case: per_case.into_iter().map(|(_, s)| s).collect(),
        })
        .collect();
    for (i, r) in crf_sweep.iter().enumerate() {
        let s = &r.summary;
        eprintln!(
            "crf sweep {i}: mean Dice (≥1 mL, n={}) {:.4}  median |ΔV| {:.2} mL  mean |ΔV| {:.2} mL  max mL on negatives {}",
            s.cases_ge_1ml,
            s.mean_dice_ge_1ml,
            s.median_abs_volume_error_ml,
            s.mean_abs_volume_error_ml,
            s.max_ml_on_negatives
                .map_or("-".into(), |v| format!("{v:.2}")),
        );
    }
    let per_kind = if a.no_crf {
        summarise_per_kind(&results, |c| Some(&c.ichnet))
    } else {
        summarise_per_kind(&results, |c| c.ichnet_crf.as_ref())
    };
    let report = Report {
        per_kind,
        data: a.data.display().to_string(),
        threshold: a.threshold,
        crf: (!a.no_crf).then_some(crf_cfg),
        ichnet: summarise(&results, |c| Some(&c.ichnet)),
        ichnet_crf: (!a.no_crf).then(|| summarise(&results, |c| c.ichnet_crf.as_ref())),
        baseline: summarise(&results, |c| Some(&c.baseline)),
        cases: results,
        crf_sweep,
        seconds: t.elapsed().as_secs_f64(),
    };
    if a.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::InvalidInput(format!("JSON report: {e}")))?;
        println!("{text}");
    } else {
        let line = |label: &str, s: &Summary| {
            println!(
                "{label:<12} mean Dice (≥1 mL, n={}) {:.3}  median |ΔV| {:.2} mL  mean HD95 {} mm  max mL on {} negatives {}  lesions found {}/{} ({})  false-positive components {}",
                s.cases_ge_1ml,
                s.mean_dice_ge_1ml,
                s.median_abs_volume_error_ml,
                s.mean_hd95_mm.map_or("-".into(), |v| format!("{v:.1}")),
                s.negative_cases,
                s.max_ml_on_negatives
                    .map_or("-".into(), |v| format!("{v:.2}")),
                s.lesions_found,
                s.lesions,
                s.lesion_sensitivity
                    .map_or("-".into(), |v| format!("{v:.3}")),
                s.false_positive_components,
            )
        };
        line("ICHNet", &report.ichnet);
        if let Some(s) = &report.ichnet_crf {
            line("ICHNet+CRF", s);
        }
        line("baseline", &report.baseline);
        if !report.per_kind.is_empty() {
            println!(
                "per lesion kind ({}):",
                if a.no_crf { "ICHNet" } else { "ICHNet+CRF" }
            );
            for k in &report.per_kind {
                line(&format!("  {} ({})", k.kind, k.cases), &k.summary);
            }
        }
        println!("{} cases in {:.0} s", report.cases.len(), report.seconds);
    }
    Ok(())
}
