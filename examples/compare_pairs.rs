//! Measure `compare` on pairs made by `ichnet synth --pairs` against their truth.
//!
//! ```text
//! cargo run --profile dev --example compare_pairs -- DIR [--registration-only] [--no-crf] [--max-points N]
//! ```
//!
//! `--max-points` overrides [`RegistrationConfig::max_points`] (points compared per level), for
//! measuring its effect on accuracy and time.
//!
//! Per pair: registration error at the baseline's brain voxels against the known transform
//! (mean / max mm) for NCC and for mutual information; then (unless `--registration-only`) the
//! whole comparison with the bundled model (both scans segmented, registered with the default,
//! mutual information): Δ mL against the true growth, the expansion verdict against the true
//! one, and the time of the comparison against the two segmentations in the same run. Summary
//! lines at the end.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::Device;
use ichnet::io::Scan;
use ichnet::pipeline::SegmentOptions;
use ichnet::preprocess::brain_mask;
use ichnet::registration::compare::segment_and_compare;
use ichnet::registration::{
    Image, RegistrationConfig, Rigid, Similarity, brain_error_mm, register,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(
        args.first()
            .ok_or("usage: compare_pairs DIR [--registration-only] [--no-crf]")?,
    );
    let reg_only = args.iter().any(|a| a == "--registration-only");
    let no_crf = args.iter().any(|a| a == "--no-crf");
    let base_cfg = match args.iter().position(|a| a == "--max-points") {
        Some(i) => RegistrationConfig {
            max_points: args
                .get(i + 1)
                .ok_or("--max-points needs a number")?
                .parse()?,
            ..RegistrationConfig::default()
        },
        None => RegistrationConfig::default(),
    };
    let tsv = fs::read_to_string(dir.join("pairs.tsv"))?;
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines.next().ok_or("empty pairs.tsv")?.split('\t').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or(format!("no column {name}"))
    };
    let (c_name, c_growth, c_exp) = (col("name")?, col("growth_ml")?, col("expansion")?);
    let c_rot = col("rot_x_deg")?;
    let c_shift = col("shift_x_mm")?;
    let device = Device::flex();
    let model = if reg_only {
        None
    } else {
        Some(ichnet::model::load(
            ichnet::model::BUNDLED_WEIGHTS.to_vec(),
            &device,
        )?)
    };
    let opts = SegmentOptions {
        crf: if no_crf {
            None
        } else {
            SegmentOptions::default().crf
        },
        // `synth --pairs` stores some scans as windowed uint8 exports, as `synth` does; like
        // `eval --assume-hu`, their values are taken as HU.
        assume_hu: true,
        ..SegmentOptions::default()
    };
    let mut reg_err = [Vec::new(), Vec::new()];
    let mut reg_max = [Vec::new(), Vec::new()];
    let mut reg_ms = [Vec::new(), Vec::new()];
    let (mut delta_err, mut verdict_ok, mut n_full, mut false_small, mut n_small) =
        (Vec::new(), 0usize, 0usize, 0usize, 0usize);
    let mut ratios = Vec::new();
    println!(
        "pair\ttrue_growth_ml\tncc_mean_mm\tncc_max_mm\tmi_mean_mm\tmi_max_mm\tncc_quality\tmeasured_delta_ml\tdelta_err_ml\ttrue_exp\tmeasured_exp\tseg_b_s\tseg_f_s\tcompare_s"
    );
    for line in lines {
        let f: Vec<&str> = line.split('\t').collect();
        let name = f[c_name];
        let growth: f64 = f[c_growth].parse()?;
        let true_exp = f[c_exp] == "1";
        let p = |i: usize| -> Result<f64, std::num::ParseFloatError> { f[i].parse() };
        let truth = Rigid {
            angles_deg: [p(c_rot)?, p(c_rot + 1)?, p(c_rot + 2)?],
            translation_mm: [p(c_shift)?, p(c_shift + 1)?, p(c_shift + 2)?],
            centre_mm: [0.0; 3],
        };
        let bb = fs::read(dir.join("baseline").join(format!("{name}.nii.gz")))?;
        let fb = fs::read(dir.join("followup").join(format!("{name}.nii.gz")))?;
        let (bs, fs_) = (Scan::from_bytes(&bb)?, Scan::from_bytes(&fb)?);
        let (bm, fm) = (brain_mask(&bs.stack)?, brain_mask(&fs_.stack)?);
        let (ba, fa) = (bs.stack_affine(), fs_.stack_affine());
        let bi = Image {
            hu: &bs.stack.hu,
            brain: &bm,
            affine: &ba,
        };
        let fi = Image {
            hu: &fs_.stack.hu,
            brain: &fm,
            affine: &fa,
        };
        let mut row = format!("{name}\t{growth:.2}");
        let mut quality = String::new();
        for (k, sim) in [Similarity::Ncc, Similarity::MutualInformation]
            .into_iter()
            .enumerate()
        {
            let cfg = RegistrationConfig {
                similarity: sim,
                ..base_cfg.clone()
            };
            let t = Instant::now();
            let r = register(bi, fi, &cfg)?;
            reg_ms[k].push(t.elapsed().as_secs_f64() * 1000.0);
            let (mean, max) = brain_error_mm(&r.transform, &truth, &bi);
            reg_err[k].push(mean);
            reg_max[k].push(max);
            row.push_str(&format!("\t{mean:.2}\t{max:.2}"));
            if k == 0 {
                quality = format!(
                    "ncc={:.2},fov={:.2},brain={:.2},poor={}",
                    r.quality.ncc, r.quality.fov_overlap, r.quality.brain_overlap, r.quality.poor
                );
            }
        }
        row.push('\t');
        row.push_str(&quality);
        if let Some(model) = &model {
            let pair = segment_and_compare(&bb, &fb, model, &device, &opts, &base_cfg)?;
            let c = &pair.comparison;
            let err = (c.delta_ml - growth).abs();
            delta_err.push(err);
            n_full += 1;
            verdict_ok += usize::from(c.expansion.expanded == true_exp);
            if growth < 2.0 {
                n_small += 1;
                false_small += usize::from(c.expansion.expanded);
            }
            let [sb, sf, sc] = pair.seconds;
            ratios.push((sb + sf + sc) / sb.max(1e-9));
            row.push_str(&format!(
                "\t{:.2}\t{err:.2}\t{}\t{}\t{sb:.1}\t{sf:.1}\t{sc:.2}",
                c.delta_ml,
                u8::from(true_exp),
                u8::from(c.expansion.expanded)
            ));
        }
        println!("{row}");
    }
    let stats = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let med = if s.is_empty() { 0.0 } else { s[s.len() / 2] };
        let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
        (mean, med, s.last().copied().unwrap_or(0.0))
    };
    for (k, name) in ["NCC", "MI"].iter().enumerate() {
        let (mean, _, worst_mean) = stats(&reg_err[k]);
        let (_, _, worst_max) = stats(&reg_max[k]);
        let (ms, _, _) = stats(&reg_ms[k]);
        let ok = reg_err[k]
            .iter()
            .zip(&reg_max[k])
            .filter(|(a, b)| **a <= 1.0 && **b <= 2.0)
            .count();
        println!(
            "# {name}: {} pairs; mean error {mean:.2} mm (worst pair {worst_mean:.2}), largest max error {worst_max:.2} mm; {ok} pairs within 1 mm mean / 2 mm max; {ms:.0} ms per registration",
            reg_err[k].len()
        );
    }
    if n_full > 0 {
        let (mean, med, worst) = stats(&delta_err);
        let (rmean, _, rworst) = stats(&ratios);
        println!(
            "# Δ mL error: median {med:.2}, mean {mean:.2}, worst {worst:.2} mL over {n_full} pairs; verdict correct on {verdict_ok}/{n_full}; expansion flagged on {false_small} of {n_small} pairs with true growth < 2 mL; compare / one segment: mean {rmean:.2}×, worst {rworst:.2}×"
        );
    }
    Ok(())
}
