//! `ichnet train`: fit ICHNet on any folder of image/mask pairs (synthetic or real).
//!
//! Layout: `DIR/images/NAME.nii.gz` + `DIR/masks/NAME.nii.gz`. Each case is read once into a
//! slice cache (network grid, HU as i16, label and brain planes, and for a 2.5-D run the two context planes), saved as `DIR/ichnet-cache-*.bin`
//! so a second run or a `--resume` starts in seconds.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};

use ichnet::crf::CrfConfig;
use ichnet::labelled::{CaseDice, list_cases, read_mask, read_scan};
use ichnet::model::IchNetConfig;
use ichnet::model::input::Layout;
use ichnet::model::train::{
    self, CachedSlice, Rng, SliceDice, TrainMonitor, TrainOptions, TrainPaths, Validator,
};
use ichnet::preprocess::brain_mask;
use ichnet::{Error, Result};

/// Train ICHNet on image/mask pairs.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Training folder (images/ and masks/ with the same file names).
    #[arg(long)]
    pub data: PathBuf,
    /// Validation folder; the checkpoint that scores best on it (see --validate-by) is kept.
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// How checkpoints are scored on --val: `cases`, the mean Dice of whole validation scans
    /// (≥ 1 mL of blood) segmented as `segment` does, CRF included — what a user gets, and the
    /// default; or `slices`, the network's pooled Dice on at most 160 validation slices without
    /// the CRF — seconds instead of minutes per checkpoint, but it can keep a checkpoint the
    /// CRF makes worse.
    #[arg(long, value_name = "MEASURE", default_value = "cases", value_parser = ["cases", "slices"])]
    pub validate_by: String,
    /// Output weights file (.bpk); checkpoints are written beside it.
    #[arg(long)]
    pub out: PathBuf,
    /// Total Adam steps.
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,
    /// Crops per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Crop side in 1 mm pixels (multiple of 4).
    #[arg(long, default_value_t = 80)]
    pub crop: usize,
    /// Haemorrhage pixels per crop.
    #[arg(long, default_value_t = 48)]
    pub pixels: usize,
    /// Background pixels sampled per haemorrhage pixel, each weighing 1/N in the loss so both
    /// classes keep equal weight; 1 is the paper's recipe (and the shipped weights').
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub negatives: usize,
    /// Peak learning rate (cosine decay).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Steps between checkpoints and validations.
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: usize,
    /// Share of the background samples taken from brain within 4 mm of bone (inner table, skull
    /// base), where real scans' false positives lie; 0 (the shipped weights' recipe) samples the
    /// background by density only.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub rim_negatives: f32,
    /// Fraction of blood-free slices kept in the cache.
    #[arg(long, default_value_t = 0.35)]
    pub keep_negative: f32,
    /// Use at most this many cases (sorted by name).
    #[arg(long)]
    pub max_cases: Option<usize>,
    /// Continue from the checkpoint beside --out.
    #[arg(long, conflicts_with = "init")]
    pub resume: bool,
    /// Start from these trained weights (e.g. weights/ichnet.bpk) instead of a fresh network,
    /// with a fresh optimiser and schedule: fine-tuning on new data, usually with a lower --lr
    /// and fewer --steps.
    #[arg(long, value_name = "WEIGHTS")]
    pub init: Option<PathBuf>,
    /// Train on the GPU (wgpu) instead of the CPU (flex).
    #[arg(long)]
    pub gpu: bool,
    /// Turn off the scanner-variation augmentation (calibration, reconstruction kernel, noise,
    /// texture of every crop), which the shipped weights were trained with.
    #[arg(long)]
    pub no_augment: bool,
    /// End this run after step N, writing a checkpoint there, while keeping the learning-rate
    /// schedule of --steps; continue later with --resume. For training in sessions.
    #[arg(long, value_name = "N")]
    pub stop_after: Option<usize>,
    /// What the network sees: `slice`, the slice alone (the shipped model), or `context`, each
    /// slice with the planes 5 mm below and above it (2.5-D; see the README's model card for
    /// what it measured). `--init` with single-slice weights and `context` widens them (the new
    /// channels start at zero).
    #[arg(long, value_name = "LAYOUT", default_value = "slice", value_parser = ["slice", "context"])]
    pub input: String,
}

fn build_cache(
    dir: &Path,
    keep_negative: f32,
    max: Option<usize>,
    seed: u64,
    layout: Layout,
) -> Result<Vec<CachedSlice>> {
    let tag = (keep_negative * 100.0).round() as u32;
    let cap = max.map_or("all".to_string(), |m| m.to_string());
    let path = dir.join(format!(
        "ichnet-cache-v3-{}-kn{tag}-n{cap}-s{seed}.bin",
        layout.name()
    ));
    if let Ok(c) = load_cache(&path) {
        eprintln!("{}: {} cached slices", path.display(), c.len());
        return Ok(c);
    }
    let mut cases = list_cases(dir)?;
    if let Some(m) = max {
        cases.truncate(m);
    }
    let multiple = IchNetConfig::new().size_multiple();
    let bar = ProgressBar::new(cases.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("caching {pos}/{len} cases [{elapsed}] {wide_bar} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rng = Rng::new(seed ^ 0xCAC4E);
    let mut cache = Vec::new();
    for (name, img, msk) in &cases {
        let scan = read_scan(img)?;
        let label = read_mask(msk, &scan)?;
        let brain = brain_mask(&scan.stack)?;
        let slices = train::cache_case(
            &scan.stack,
            &label,
            &brain,
            multiple,
            keep_negative,
            layout,
            &mut rng,
        )?;
        cache.extend(slices);
        bar.set_message(format!("{name}: {} slices", cache.len()));
        bar.inc(1);
    }
    bar.finish();
    save_cache(&path, &cache)?;
    Ok(cache)
}

fn save_cache(path: &Path, cache: &[CachedSlice]) -> Result<()> {
    let mut buf = Vec::new();
    buf.extend_from_slice(b"ICHC3");
    buf.extend_from_slice(&(cache.len() as u64).to_le_bytes());
    for s in cache {
        let context_planes = s.context.len() / (s.h * s.w).max(1);
        for v in [s.h, s.w, s.positives, context_planes] {
            buf.extend_from_slice(&(v as u64).to_le_bytes());
        }
        for v in s.hu.iter().chain(&s.context) {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        buf.extend_from_slice(&s.label);
        buf.extend_from_slice(&s.brain);
    }
    let mut f = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(&buf).map_err(|e| Error::io(path, e))
}

fn load_cache(path: &Path) -> Result<Vec<CachedSlice>> {
    let mut buf = Vec::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(|e| Error::io(path, e))?;
    let bad = || Error::InvalidInput(format!("{}: damaged cache file", path.display()));
    let mut pos = 5;
    if buf.get(..5) != Some(b"ICHC3".as_slice()) {
        return Err(bad());
    }
    let u64_at = |pos: &mut usize| -> Result<usize> {
        let b = buf.get(*pos..*pos + 8).ok_or_else(bad)?;
        *pos += 8;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(a)).map_err(|_| bad())
    };
    let n = u64_at(&mut pos)?;
    let mut out = train::cache_vec(n.min(1 << 24))?;
    for _ in 0..n {
        let h = u64_at(&mut pos)?;
        let w = u64_at(&mut pos)?;
        let positives = u64_at(&mut pos)?;
        let context_planes = u64_at(&mut pos)?;
        if context_planes != 0 && context_planes != 2 {
            return Err(bad());
        }
        let len = h.checked_mul(w).filter(|&l| l <= 1 << 20).ok_or_else(bad)?;
        let mut planes = |count: usize| -> Result<Vec<i16>> {
            let bytes = buf.get(pos..pos + 2 * count * len).ok_or_else(bad)?;
            pos += 2 * count * len;
            Ok(bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect())
        };
        let hu = planes(1)?;
        let context = planes(context_planes)?;
        let label = buf.get(pos..pos + len).ok_or_else(bad)?.to_vec();
        pos += len;
        let brain = buf.get(pos..pos + len).ok_or_else(bad)?.to_vec();
        pos += len;
        out.push(CachedSlice {
            h,
            w,
            hu,
            context,
            label,
            brain,
            positives,
        });
    }
    Ok(out)
}

struct Bar {
    bar: ProgressBar,
    start: Instant,
    first: Option<usize>,
}

impl TrainMonitor for Bar {
    fn step(&mut self, step: usize, total: usize, loss: f32) {
        self.bar.set_length(total as u64);
        self.bar.set_position(step as u64);
        let first = *self.first.get_or_insert(step);
        let secs = self.start.elapsed().as_secs_f32().max(1e-3);
        let rate = (step + 1 - first) as f32 / secs;
        let msg = format!("loss {loss:.4}  {rate:.2} steps/s");
        // Without a terminal (a log file) the bar is hidden: a plain line every 50 steps instead.
        if self.bar.is_hidden() && step.is_multiple_of(50) {
            eprintln!("step {step}/{total}: {msg}");
        }
        self.bar.set_message(msg);
    }

    fn note(&mut self, text: &str) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }
}

/// Validation slices kept (evenly spaced): thin-slice scans have hundreds of bleeding slices,
/// and a dense pass over all of them at every checkpoint would cost more than the training.
const MAX_VAL_SLICES: usize = 160;

fn thin(v: Vec<CachedSlice>, max: usize) -> Vec<CachedSlice> {
    let n = v.len();
    if n <= max {
        return v;
    }
    v.into_iter()
        .enumerate()
        .filter(|(i, _)| i * max / n != (i + 1) * max / n)
        .map(|(_, s)| s)
        .collect()
}

/// Run `ichnet train`.
pub fn run(a: &TrainArgs) -> Result<()> {
    let t = Instant::now();
    let layout = if a.input == "slice" {
        Layout::Slice
    } else {
        Layout::Context
    };
    let opts = TrainOptions {
        steps: a.steps,
        batch: a.batch,
        crop: a.crop,
        pixels: a.pixels,
        negatives: a.negatives,
        lr: a.lr,
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
        augment: !a.no_augment,
        stop_after: a.stop_after,
        layout,
        rim_share: a.rim_negatives,
    };
    // Bad options are refused before the (slow) slice cache is built.
    opts.check()?;
    // Validation data are read (and refused when unusable) before the training cache is built.
    let mut cases = match &a.val {
        Some(v) if a.validate_by == "cases" => Some(CaseDice::new(
            v,
            CrfConfig::default(),
            ichnet::pipeline::DEFAULT_THRESHOLD,
        )?),
        _ => None,
    };
    let cache = build_cache(&a.data, a.keep_negative, a.max_cases, a.seed, layout)?;
    let val = match &a.val {
        // Validation keeps every bleeding slice and a quarter of the clean ones (false positives
        // on clean slices must count, but a full pass over every slice would stall training).
        Some(v) if cases.is_none() => {
            thin(build_cache(v, 0.25, None, a.seed, layout)?, MAX_VAL_SLICES)
        }
        _ => Vec::new(),
    };
    let pos = cache.iter().filter(|s| s.positives > 0).count();
    let validation = match &cases {
        Some(c) => {
            let (n, scored) = c.counts();
            format!("validation: {n} cases ({scored} with ≥ 1 mL of blood), CRF included")
        }
        None if a.val.is_some() => format!("{} validation slices", val.len()),
        None => "no validation".to_owned(),
    };
    eprintln!(
        "cache: {} training slices ({pos} with blood, {:.0} MB), {validation}, {:.1} s",
        cache.len(),
        train::cache_bytes(&cache) as f64 / 1e6,
        t.elapsed().as_secs_f32()
    );
    let mut slices = SliceDice { slices: &val };
    let validator: Option<&mut dyn Validator> = match (&mut cases, a.val.is_some()) {
        (Some(c), _) => Some(c),
        (None, true) => Some(&mut slices),
        (None, false) => None,
    };
    let device = if a.gpu {
        Device::wgpu(Default::default())
    } else {
        Device::flex()
    }
    .autodiff();
    let start = match (&a.init, a.resume) {
        (Some(p), _) => train::Start::Weights(fs::read(p).map_err(|e| Error::io(p, e))?),
        (None, true) => train::Start::Resume,
        (None, false) => train::Start::Fresh,
    };
    let bar = ProgressBar::new(a.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{pos}/{len} [{elapsed} < {eta}] {wide_bar} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut mon = Bar {
        bar,
        start: Instant::now(),
        first: None,
    };
    train::train(
        &cache,
        validator,
        &opts,
        &TrainPaths { out: &a.out },
        start,
        &device,
        &mut mon,
    )?;
    mon.bar.finish();
    let minutes = t.elapsed().as_secs_f32() / 60.0;
    match a.stop_after {
        Some(n) if n < a.steps => eprintln!(
            "stopped after step {n} of {} ({minutes:.1} min); checkpoint beside {}: continue with \
             the same options and --resume",
            a.steps,
            a.out.display()
        ),
        _ => eprintln!(
            "trained {} steps in {minutes:.1} min; weights: {}",
            a.steps,
            a.out.display()
        ),
    }
    Ok(())
}
