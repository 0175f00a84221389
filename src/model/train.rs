//! Training ICHNet from image/mask pairs (native only): slice cache, pixel sampling, Adam loop.
//!
//! Every case is read and preprocessed once into a cache of network-grid slices (HU as i16 at
//! [`PIXEL_MM`], label and brain planes), so epochs never touch NIfTI again. A step draws crops
//! from that cache, samples pixels inside the brain (as many haemorrhage as background pixels:
//! the paper's class balancing) and trains on those pixels' hypercolumns only.

use std::io::{Read, Write};
use std::path::Path;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::TensorData;
use ndarray::{Array3, Axis};

use super::input::{Layout, SliceGrid, context_z, input_into};
use super::{IchNet, IchNetConfig, Samples};
use crate::error::{Error, Result, try_vec};
use crate::model::input::BOX_MARGIN_MM;
use crate::preprocess::bounding_box;
use crate::synth::scanner::blur_121;
use crate::volume::Stack;

/// One cached slice on the network grid.
#[derive(Debug, Clone)]
pub struct CachedSlice {
    /// Grid height.
    pub h: usize,
    /// Grid width.
    pub w: usize,
    /// HU rounded to integers (the windows are 40–400 HU wide, so rounding is invisible).
    pub hu: Vec<i16>,
    /// The two context planes ([`context_z`]: below, then above), HU as `hu`, one after the
    /// other; empty when the cache is for a single-slice network (they would double its size).
    pub context: Vec<i16>,
    /// Haemorrhage label (0/1).
    pub label: Vec<u8>,
    /// Brain mask (0/1): pixels are sampled only here.
    pub brain: Vec<u8>,
    /// Number of haemorrhage pixels inside the brain.
    pub positives: usize,
}

/// Cache the brain-containing slices of one case. Slices without blood are kept with
/// probability `keep_negative` (drawn from `rng`): they carry the look-alikes the network must
/// learn to reject, but are far more numerous than bleeding slices. The context planes are
/// cached only for a network of `layout` [`Layout::Context`].
#[allow(clippy::too_many_arguments)]
pub fn cache_case(
    stack: &Stack,
    label: &Array3<u8>,
    brain: &Array3<u8>,
    multiple: usize,
    keep_negative: f32,
    layout: Layout,
    rng: &mut Rng,
) -> Result<Vec<CachedSlice>> {
    if label.dim() != stack.hu.dim() || brain.dim() != stack.hu.dim() {
        return Err(Error::InvalidInput(format!(
            "mask dims {:?} / brain dims {:?} differ from the image's {:?}",
            label.dim(),
            brain.dim(),
            stack.hu.dim()
        )));
    }
    let Some(b) = bounding_box(brain) else {
        return Ok(Vec::new());
    };
    let (zr, yr, xr) = (
        (b.start[0], b.end[0]),
        (b.start[1], b.end[1]),
        (b.start[2], b.end[2]),
    );
    let grid = SliceGrid::around(
        yr,
        xr,
        [stack.spacing[1], stack.spacing[2]],
        BOX_MARGIN_MM,
        multiple,
    )?;
    let mut out = Vec::new();
    let mut hu = vec![0.0f32; grid.len()];
    let mut tmp = vec![0.0f32; grid.len()];
    let to_i16 = |v: &f32| v.round().clamp(-1024.0, 3071.0) as i16;
    for z in zr.0..zr.1 {
        let mut lab = vec![0u8; grid.len()];
        let mut br = vec![0u8; grid.len()];
        grid.resample_labels(label.index_axis(Axis(0), z), &mut lab);
        grid.resample_labels(brain.index_axis(Axis(0), z), &mut br);
        let brain_px = br.iter().filter(|&&b| b != 0).count();
        if brain_px < 50 {
            continue;
        }
        let positives = lab
            .iter()
            .zip(&br)
            .filter(|&(&l, &b)| l != 0 && b != 0)
            .count();
        if positives == 0 && rng.unit() >= keep_negative {
            continue;
        }
        grid.resample(stack.hu.index_axis(Axis(0), z), &mut hu);
        let centre = hu.iter().map(to_i16).collect();
        let mut context = Vec::new();
        if layout == Layout::Context {
            context.reserve(2 * grid.len());
            for zf in context_z(z, stack.hu.dim().0, stack.spacing[0]) {
                grid.resample_z(stack.hu.view(), zf, &mut hu, &mut tmp);
                context.extend(hu.iter().map(to_i16));
            }
        }
        out.push(CachedSlice {
            h: grid.h,
            w: grid.w,
            hu: centre,
            context,
            label: lab,
            brain: br,
            positives,
        });
    }
    Ok(out)
}

/// A small deterministic generator (SplitMix64): training is reproducible from its seed without
/// pulling a random-number crate into the library.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Standard normal (Box–Muller; one of the pair is discarded, the cost is negligible).
    pub fn normal(&mut self) -> f32 {
        let u = (1.0 - self.unit()).max(f32::MIN_POSITIVE);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

/// Training hyper-parameters.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Adam steps to run in total (a resumed run continues to this count).
    pub steps: usize,
    /// Crops per step.
    pub batch: usize,
    /// Crop side in network pixels (a multiple of the model's size multiple).
    pub crop: usize,
    /// Haemorrhage pixels sampled per crop (background pixels: see `negatives`).
    pub pixels: usize,
    /// Background pixels sampled per haemorrhage pixel. Each background sample weighs
    /// `1 / negatives` in the loss, so both classes keep equal weight (the paper's balance, and
    /// the probabilities the CRF was tuned on) while the network sees more of the background per
    /// step: its false positives are rare pixels of the background (rims, spots), which one
    /// background sample per blood pixel reaches seldom. 1 (the default) is the paper's recipe.
    pub negatives: usize,
    /// Peak learning rate (cosine-decayed to 5 % of it).
    pub lr: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Steps between checkpoints / validations.
    pub checkpoint_every: usize,
    /// Scanner-variation augmentation of every crop ([`augment_crop`]). On by default: the
    /// shipped weights were trained with it, and it is what let the model trained without the
    /// real head reach its targets on that head (README model card).
    pub augment: bool,
    /// End the run after this step (with a checkpoint) without changing the schedule, which is
    /// still set by `steps`; `None` runs to `steps`. A later `resume` continues from there.
    pub stop_after: Option<usize>,
    /// Input layout of the network trained: the slice alone (the default, the shipped model's)
    /// or with its context planes.
    pub layout: Layout,
    /// Share of each crop's background samples drawn from brain within 4 mm of bone
    /// ([`near_bone`]); 0 (the default, the shipped weights' recipe) samples the background by
    /// density only. A quarter was measured (README model card): fewer false positives on the
    /// GE anatomy's cases, lower Dice on the test split, so it is not the default.
    pub rim_share: f32,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            steps: 3000,
            batch: 8,
            crop: 80,
            pixels: 48,
            negatives: 1,
            lr: 2e-3,
            seed: 1,
            checkpoint_every: 250,
            augment: true,
            stop_after: None,
            layout: Layout::Slice,
            rim_share: 0.0,
        }
    }
}

impl TrainOptions {
    /// Refuse options no run can use, with the number that is wrong; [`train`] calls it, and a
    /// caller that builds a slice cache first can call it before that slow step.
    pub fn check(&self) -> Result<()> {
        let m = IchNetConfig::new().size_multiple();
        if !self.crop.is_multiple_of(m) || self.crop == 0 {
            return Err(Error::InvalidInput(format!(
                "crop {} must be a positive multiple of {m}",
                self.crop
            )));
        }
        if !(1..=16).contains(&self.negatives) {
            return Err(Error::InvalidInput(format!(
                "{} background samples per blood sample: give 1 to 16 (--negatives; default 1)",
                self.negatives
            )));
        }
        if !(0.0..=1.0).contains(&self.rim_share) {
            return Err(Error::InvalidInput(format!(
                "a rim share of {} is not a share of the background samples: give a value from \
                 0 to 1 (--rim-negatives; default 0)",
                self.rim_share
            )));
        }
        Ok(())
    }
}

/// One training batch: `[b, channels, crop, crop]` input, sampled pixels, targets.
pub struct Batch {
    /// Input planes, batch-major.
    pub x: Vec<f32>,
    /// Input channels.
    pub channels: usize,
    /// Batch size.
    pub b: usize,
    /// Crop side.
    pub crop: usize,
    /// Sampled pixels.
    pub samples: Samples,
    /// Target of each sampled pixel (1 = haemorrhage).
    pub target: Vec<f32>,
}

/// Draw a batch from the cache: half the crops centred near blood (when the cache has any), the
/// rest anywhere in the brain; left–right flips; pixels sampled class-balanced inside the brain.
/// Background samples are stratified, so rare confounders are seen often: half from pixels of
/// 40 HU or more (where blood's look-alikes live), and, when `rim_share` asks for it, a share
/// from the rim of brain within 4 mm of bone (inner table, skull base), each when such pixels
/// exist.
/// With context planes, below and above are swapped in half the crops: scans are stacked head
/// first or feet first, and the network should not care which.
pub fn draw_batch(
    cache: &[CachedSlice],
    positive_ids: &[usize],
    o: &TrainOptions,
    rng: &mut Rng,
) -> Batch {
    let c = o.crop;
    let cc = c * c;
    let ch = o.layout.channels();
    let planes = if o.layout == Layout::Context { 3 } else { 1 };
    let mut x = vec![0.0f32; o.batch * ch * cc];
    let mut samples = Samples::default();
    let mut target = Vec::new();
    let mut hu = vec![0.0f32; planes * cc];
    let mut lab = vec![0u8; c * c];
    let mut br = vec![0u8; c * c];
    let mut scratch = Scratch::default();
    for n in 0..o.batch {
        let want_pos = !positive_ids.is_empty() && n % 2 == 0;
        let sid = if want_pos {
            positive_ids[rng.below(positive_ids.len())]
        } else {
            rng.below(cache.len())
        };
        let s = &cache[sid];
        // Crop centre: a blood pixel (jittered) or any brain pixel.
        let pick = |want: fn(&CachedSlice, usize) -> bool, rng: &mut Rng| -> Option<usize> {
            for _ in 0..64 {
                let i = rng.below(s.h * s.w);
                if want(s, i) {
                    return Some(i);
                }
            }
            None
        };
        let centre = if want_pos {
            pick(|s, i| s.label[i] != 0 && s.brain[i] != 0, rng)
        } else {
            None
        }
        .or_else(|| pick(|s, i| s.brain[i] != 0, rng))
        .unwrap_or(s.h / 2 * s.w + s.w / 2);
        let jitter = |rng: &mut Rng| rng.below(c / 2 + 1) as isize - (c / 4) as isize;
        let cy = (centre / s.w) as isize + jitter(rng);
        let cx = (centre % s.w) as isize + jitter(rng);
        let oy = cy - (c / 2) as isize;
        let ox = cx - (c / 2) as isize;
        let flip = rng.unit() < 0.5;
        let offset = (rng.unit() - 0.5) * 6.0; // ±3 HU calibration jitter
        for i in 0..c {
            for j in 0..c {
                let sy = oy + i as isize;
                let sx = ox
                    + if flip {
                        (c - 1 - j) as isize
                    } else {
                        j as isize
                    };
                let k = i * c + j;
                if sy >= 0 && sx >= 0 && (sy as usize) < s.h && (sx as usize) < s.w {
                    let si = sy as usize * s.w + sx as usize;
                    hu[k] = s.hu[si] as f32 + offset;
                    for p in 1..planes {
                        hu[p * cc + k] = s.context[(p - 1) * s.h * s.w + si] as f32 + offset;
                    }
                    lab[k] = s.label[si];
                    br[k] = s.brain[si];
                } else {
                    for p in 0..planes {
                        hu[p * cc + k] = super::input::OUTSIDE_HU;
                    }
                    lab[k] = 0;
                    br[k] = 0;
                }
            }
        }
        if o.augment {
            augment_crop(&mut hu, c, rng, &mut scratch);
        }
        let (centre, context) = hu.split_at(cc);
        let (mut below, mut above) = context.split_at(context.len() / 2);
        if planes > 1 && rng.unit() < 0.5 {
            std::mem::swap(&mut below, &mut above);
        }
        input_into(
            o.layout,
            centre,
            [below, above],
            &mut x[n * ch * cc..(n + 1) * ch * cc],
        );
        sample_pixels(
            n,
            c,
            centre,
            &lab,
            &br,
            Quota {
                pixels: o.pixels,
                negatives: o.negatives,
                rim_share: o.rim_share,
            },
            rng,
            &mut samples,
            &mut target,
        );
    }
    Batch {
        x,
        channels: ch,
        b: o.batch,
        crop: c,
        samples,
        target,
    }
}

/// Work planes of [`augment_crop`], reused across the crops of a batch.
#[derive(Debug, Default)]
pub struct Scratch {
    blur: Vec<f32>,
    tmp: Vec<f32>,
    noise: Vec<f32>,
    coarse: Vec<f32>,
}

/// Make one crop look as if another scanner had taken it: calibration (gain about brain level
/// and an offset), reconstruction kernel (blur or sharpen), extra fine noise and a faint
/// low-frequency texture.
///
/// Why: the synthetic cases are built on a few base anatomies, each with its own scanner's
/// texture. A model trained on one may learn that texture as "normal" and mark the other head's
/// grain, sharper edges and calibration as blood (the first leave-one-anatomy-out model, trained
/// on the smooth averaged template only, had a precision of 0.44 on the real head). Varying what
/// a scanner changes, and never the label, is meant to make texture useless as a cue. The ranges
/// stay within what clinical head CTs show (calibration within ±10 HU, noise 3–8 HU, soft to sharp
/// kernels), so blood (45–90 HU) stays brighter than brain. Measured on that split, the
/// network's own false positives stayed (precision 0.42), but they became ones the CRF removes:
/// with a validation-chosen CRF the model met its targets on the unseen head (README model card).
///
/// `hu` holds one or more planes of `c × c` (the slice, then its context planes): calibration,
/// kernel and texture are the scanner's and the same on every plane; the fine noise is drawn
/// per plane. The random draws for the first plane come first and in the same order whatever the
/// number of planes, so a single-slice run draws what it always drew.
pub fn augment_crop(hu: &mut [f32], c: usize, rng: &mut Rng, s: &mut Scratch) {
    let n = c * c;
    debug_assert!(n > 0 && hu.len().is_multiple_of(n));
    s.blur.resize(n, 0.0);
    s.tmp.resize(n, 0.0);
    // Calibration: a gain about 30 HU (brain) and an offset, on top of the ±3 HU jitter.
    let gain = 0.92 + 0.16 * rng.unit();
    let offset = (rng.unit() - 0.5) * 8.0;
    for v in hu.iter_mut() {
        if *v > -900.0 {
            *v = 30.0 + (*v - 30.0) * gain + offset;
        }
    }
    // Reconstruction kernel: a third of crops softer, a third sharper (unsharp mask).
    let kernel = rng.unit();
    let amount = rng.unit();
    if kernel < 2.0 / 3.0 {
        let k = if kernel < 1.0 / 3.0 { -amount } else { amount };
        for plane in hu.chunks_mut(n) {
            blur_121(plane, c, c, &mut s.tmp, &mut s.blur);
            for (v, &b) in plane.iter_mut().zip(&s.blur) {
                *v += k * (*v - b);
            }
        }
    }
    // Fine noise (correlated like reconstructed CT noise) in half of the crops.
    if rng.unit() < 0.5 {
        let sd = 4.0 * rng.unit();
        // Σw² of the 2-D [1 2 1]/4 kernel is (6/16)²: rescale to the drawn sd.
        let g = sd / (6.0 / 16.0);
        for plane in hu.chunks_mut(n) {
            s.noise.clear();
            s.noise.extend((0..n).map(|_| rng.normal()));
            blur_121(&s.noise, c, c, &mut s.tmp, &mut s.blur);
            for (v, &e) in plane.iter_mut().zip(&s.blur) {
                *v += g * e;
            }
        }
    }
    // Low-frequency texture (uneven grey/white matter, beam hardening residue) in half of them:
    // a coarse Gaussian grid every 4–8 pixels, bilinearly interpolated.
    if rng.unit() < 0.5 {
        let sd = 3.0 * rng.unit();
        let cell = 4 + rng.below(5);
        let m = c / cell + 2;
        s.coarse.clear();
        s.coarse.extend((0..m * m).map(|_| sd * rng.normal()));
        for i in 0..c {
            let fy = i as f32 / cell as f32;
            let (y0, ty) = (fy as usize, fy.fract());
            for j in 0..c {
                let fx = j as f32 / cell as f32;
                let (x0, tx) = (fx as usize, fx.fract());
                let at = |y: usize, x: usize| s.coarse[y * m + x];
                let top = at(y0, x0) * (1.0 - tx) + at(y0, x0 + 1) * tx;
                let bottom = at(y0 + 1, x0) * (1.0 - tx) + at(y0 + 1, x0 + 1) * tx;
                let t = top * (1.0 - ty) + bottom * ty;
                for plane in hu.chunks_mut(n) {
                    plane[i * c + j] += t;
                }
            }
        }
    }
}

/// How many pixels of each kind one crop contributes.
#[derive(Clone, Copy)]
struct Quota {
    /// Most blood pixels.
    pixels: usize,
    /// Background pixels per blood pixel.
    negatives: usize,
    /// Share of the background from the rim beside bone.
    rim_share: f32,
}

#[allow(clippy::too_many_arguments)]
fn sample_pixels(
    n: usize,
    c: usize,
    hu: &[f32],
    lab: &[u8],
    br: &[u8],
    quota: Quota,
    rng: &mut Rng,
    samples: &mut Samples,
    target: &mut Vec<f32>,
) {
    let mut pos = Vec::new();
    let mut neg_easy = Vec::new();
    let mut neg_hard = Vec::new();
    let mut neg_bone = Vec::new();
    // The dilation only when a rim share is asked for (the default takes none).
    let Quota {
        pixels: k,
        negatives,
        rim_share,
    } = quota;
    let near_bone = if rim_share > 0.0 {
        near_bone(hu, c)
    } else {
        Vec::new()
    };
    for i in 0..c * c {
        if br[i] == 0 {
            continue;
        }
        if lab[i] != 0 {
            pos.push(i);
        } else if near_bone.get(i) == Some(&true) {
            neg_bone.push(i);
        } else if hu[i] >= 40.0 {
            neg_hard.push(i);
        } else {
            neg_easy.push(i);
        }
    }
    let n_pos = pos.len().min(k);
    // Without blood in the crop, half the budget of background pixels keeps such crops useful
    // (look-alikes) without letting background dominate the loss.
    let n_neg = negatives.max(1) * if n_pos > 0 { n_pos } else { k / 2 };
    let mut take = |from: &mut Vec<usize>, count: usize, t: f32, rng: &mut Rng| {
        for _ in 0..count.min(from.len()) {
            let j = rng.below(from.len());
            let i = from.swap_remove(j);
            samples.push(n, i / c, i % c);
            target.push(t);
        }
    };
    take(&mut pos, n_pos, 1.0, rng);
    let bone = ((n_neg as f32 * rim_share.clamp(0.0, 1.0)).round() as usize).min(neg_bone.len());
    take(&mut neg_bone, bone, 0.0, rng);
    let hard = ((n_neg - bone) / 2).min(neg_hard.len());
    take(&mut neg_hard, hard, 0.0, rng);
    // The rest from ordinary tissue, topped up from the other pools when it runs short.
    let mut rest = n_neg - bone - hard;
    for pool in [&mut neg_easy, &mut neg_hard, &mut neg_bone] {
        let k = rest.min(pool.len());
        take(pool, k, 0.0, rng);
        rest -= k;
    }
}

/// Brain pixels within [`BONE_NEIGHBOURHOOD`] pixels of bone (≥ 300 HU) in a `c × c` crop.
///
/// Why: on real scans the network's false positives are thin strips along the inner table and
/// spots at the skull base, where partial volume with bone and beam hardening lift brain to
/// blood's density; cortical, subdural and subarachnoid blood lie there too. A share of the
/// background samples can come from this rim (`TrainOptions::rim_share`, `train
/// --rim-negatives`) so that the network sees the look-alikes beside real blood's hardest cases
/// at every step, not only when a random draw lands there.
fn near_bone(hu: &[f32], c: usize) -> Vec<bool> {
    let r = BONE_NEIGHBOURHOOD;
    let bone: Vec<bool> = hu[..c * c].iter().map(|&v| v >= 300.0).collect();
    // Separable dilation by a (2r+1)² square: rows, then columns.
    let mut rows = vec![false; c * c];
    for y in 0..c {
        for x in 0..c {
            let (lo, hi) = (x.saturating_sub(r), (x + r).min(c - 1));
            rows[y * c + x] = bone[y * c + lo..=y * c + hi].iter().any(|&b| b);
        }
    }
    let mut out = vec![false; c * c];
    for y in 0..c {
        let (lo, hi) = (y.saturating_sub(r), (y + r).min(c - 1));
        for x in 0..c {
            out[y * c + x] = (lo..=hi).any(|yy| rows[yy * c + x]);
        }
    }
    out
}

/// Pixels (1 mm) from bone that count as the inner-table rim for hard-negative sampling.
const BONE_NEIGHBOURHOOD: usize = 4;

/// Binary cross-entropy of `logits` against `target` with a weight per sample,
/// `Σ w·loss / Σ w`, each term in the overflow-free form `max(z, 0) − z·t + log(1 + e^(−|z|))`.
/// Training's only loss: [`class_weights`] gives the weights (all 1, the plain mean, for the
/// paper's one background sample per blood sample).
pub fn weighted_bce_with_logits(logits: Tensor<1>, target: Tensor<1>, weight: &[f32]) -> Tensor<1> {
    let device = logits.device();
    let total: f32 = weight.iter().sum();
    let w = Tensor::<1>::from_data(TensorData::new(weight.to_vec(), [weight.len()]), &device);
    let relu = logits.clone().clamp_min(0.0);
    let softplus = logits.clone().abs().neg().exp().log1p();
    ((relu - logits * target + softplus) * w).sum() / total.max(f32::MIN_POSITIVE)
}

/// Loss weight of each sampled pixel given its target: blood 1, background `1 / negatives`
/// ([`TrainOptions::negatives`]), so with `negatives` background samples per blood sample the
/// two classes weigh the same; with 1 every weight is 1 and the loss is the plain mean.
pub fn class_weights(target: &[f32], negatives: usize) -> Vec<f32> {
    let background = 1.0 / negatives.max(1) as f32;
    target
        .iter()
        .map(|&t| if t > 0.5 { 1.0 } else { background })
        .collect()
}

/// Progress hook: `(step, total, loss)` after every step and a line of text at checkpoints.
pub trait TrainMonitor {
    /// Called after each step with the step number (1-based), total steps and smoothed loss.
    fn step(&mut self, step: usize, total: usize, loss: f32);
    /// Called with a human-readable note (checkpoint, validation result).
    fn note(&mut self, text: &str);
}

/// Where training writes: the final weights, a checkpoint (weights + optimiser + step) beside
/// them for `--resume`.
pub struct TrainPaths<'a> {
    /// Final (best-by-validation when validation data is given) weights.
    pub out: &'a Path,
}

impl TrainPaths<'_> {
    fn ckpt_model(&self) -> std::path::PathBuf {
        self.out.with_extension("ckpt.bpk")
    }
    fn ckpt_optim(&self) -> std::path::PathBuf {
        self.out.with_extension("optim.bpk")
    }
    fn ckpt_state(&self) -> std::path::PathBuf {
        self.out.with_extension("ckpt.txt")
    }
}

/// A checkpoint's score on held-out data; the run keeps the checkpoint with the highest value.
#[derive(Debug, Clone)]
pub struct Score {
    /// Higher is better.
    pub value: f32,
    /// One line for the progress notes (the value and whatever else a reader should see).
    pub detail: String,
}

/// Scores checkpoints. `train` takes any: the cheap slice measure below, or a case-level one
/// that segments whole validation scans (`crate::labelled::CaseDice`).
pub trait Validator {
    /// Name of the measure, kept in the resume state: a resumed run must not compare a best
    /// score of one measure with checkpoints scored by another.
    fn measure(&self) -> &'static str;
    /// Score inference weights `model` on `device`.
    fn score(&mut self, model: &IchNet, device: &Device) -> Result<Score>;
}

/// Dice of thresholded dense predictions over all cached validation pixels inside the brain
/// (one pooled Dice, which weighs large bleeds more, but is cheap and stable). The network
/// alone, without the CRF: it can prefer a checkpoint the CRF makes worse (see
/// `crate::labelled`).
pub struct SliceDice<'a> {
    /// The validation slices.
    pub slices: &'a [CachedSlice],
}

impl Validator for SliceDice<'_> {
    fn measure(&self) -> &'static str {
        "slice-dice"
    }

    fn score(&mut self, model: &IchNet, device: &Device) -> Result<Score> {
        let value = validate(model, self.slices, device)?;
        Ok(Score {
            value,
            detail: format!("validation Dice {value:.4} (slices, network alone)"),
        })
    }
}

/// Pooled slice Dice of `model` on `val` (see [`SliceDice`]).
pub fn validate(model: &IchNet, val: &[CachedSlice], device: &Device) -> Result<f32> {
    let mut inter = 0usize;
    let mut sum = 0usize;
    let layout = model.layout()?;
    let ch = layout.channels();
    for s in val {
        let mut x = vec![0.0f32; ch * s.h * s.w];
        let hu: Vec<f32> = s.hu.iter().map(|&v| v as f32).collect();
        let context: Vec<f32> = s.context.iter().map(|&v| v as f32).collect();
        let (below, above) = context.split_at(context.len() / 2);
        input_into(layout, &hu, [below, above], &mut x);
        let t = Tensor::<4>::from_data(TensorData::new(x, [1, ch, s.h, s.w]), device);
        let logits = model.forward_dense(t);
        let v = logits
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Backend(format!("reading validation logits: {e:?}")))?;
        for ((&logit, &b), &lab) in v.iter().zip(&s.brain).zip(&s.label) {
            if b == 0 {
                continue;
            }
            let p = logit > 0.0;
            let l = lab != 0;
            inter += usize::from(p && l);
            sum += usize::from(p) + usize::from(l);
        }
    }
    Ok(if sum == 0 {
        1.0
    } else {
        2.0 * inter as f32 / sum as f32
    })
}

/// Where a run starts from.
pub enum Start {
    /// Freshly initialised weights (seeded).
    Fresh,
    /// These trained weights (burnpack bytes), with a fresh optimiser and schedule: fine-tuning
    /// a shipped model on new data, which costs a fraction of training from scratch.
    Weights(Vec<u8>),
    /// The checkpoint beside `paths.out`: weights, optimiser, step and sampler state.
    Resume,
}

/// Train on `cache` from `start`, scoring every checkpoint with `validator` when there is one,
/// and write the weights to `paths.out` (the best-scoring checkpoint, else the last).
pub fn train(
    cache: &[CachedSlice],
    mut validator: Option<&mut dyn Validator>,
    o: &TrainOptions,
    paths: &TrainPaths<'_>,
    start_from: Start,
    device: &Device,
    monitor: &mut dyn TrainMonitor,
) -> Result<()> {
    if cache.is_empty() {
        return Err(Error::InvalidInput(
            "no training slices: the data folder holds no case with brain tissue".into(),
        ));
    }
    o.check()?;
    let cfg = IchNetConfig::new().with_in_channels(o.layout.channels());
    let positive_ids: Vec<usize> = (0..cache.len())
        .filter(|&i| cache[i].positives > 0)
        .collect();
    device.seed(o.seed);
    let mut model = cfg.init(device);
    let mut optim: ModuleOptimizer = AdamConfig::new().init();
    let mut start = 0usize;
    let mut rng = Rng::new(o.seed);
    let mut best = f32::NEG_INFINITY;
    if let Start::Weights(bytes) = start_from {
        let len = bytes.len();
        let given = super::from_record_bytes(bytes, device, "--init")?;
        let from = given.layout()?;
        if from != o.layout && (from, o.layout) != (Layout::Slice, Layout::Context) {
            return Err(Error::InvalidInput(format!(
                "--init: those weights take the {} input, the run trains the {} input; a \
                 single-slice network can be widened to context planes, not the reverse",
                from.name(),
                o.layout.name()
            )));
        }
        model = given.widen_input(o.layout.channels())?;
        monitor.note(&format!(
            "starting from the given weights ({len} bytes, {} input{})",
            from.name(),
            if from == o.layout {
                ""
            } else {
                "; the context planes start with zero weights"
            }
        ));
    } else if let Start::Resume = start_from {
        let (step, rng_state, best_val, measure) = read_state(&paths.ckpt_state())?;
        let bytes =
            std::fs::read(paths.ckpt_model()).map_err(|e| Error::io(paths.ckpt_model(), e))?;
        let record =
            burn::store::ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
                .map_err(|e| Error::Weights(format!("checkpoint: {e}")))?;
        model = model
            .try_load_record(record)
            .map_err(|e| Error::Weights(format!("checkpoint does not fit the model: {e}")))?;
        // burn 0.22.1 builds the loaded Adam moments on `Device::default()` (wgpu when it is
        // compiled in) and moves them to the parameters' device at the next step. So a resume
        // on the CPU briefly starts wgpu, and the Vulkan loader may print "XDG_RUNTIME_DIR is
        // invalid" on a headless machine: harmless; `BURN_DEVICE=flex` avoids it.
        optim = optim
            .load(paths.ckpt_optim())
            .map_err(|e| Error::Weights(format!("optimiser checkpoint: {e}")))?;
        start = step;
        rng = Rng(rng_state);
        let now = validator.as_ref().map(|v| v.measure());
        if measure.as_deref() == now || best_val == f32::NEG_INFINITY {
            best = best_val;
            monitor.note(&format!("resumed at step {step}"));
        } else {
            // The saved best was scored by another measure (or none): the next checkpoint
            // starts a new comparison rather than being judged against a foreign number.
            monitor.note(&format!(
                "resumed at step {step}; the best so far was scored by {}, this run scores by \
                 {}: the next checkpoint becomes the best",
                measure.as_deref().unwrap_or("no validation"),
                now.unwrap_or("no validation")
            ));
        }
    }
    if let Some(n) = o.stop_after.filter(|&n| n <= start) {
        return Err(Error::InvalidInput(format!(
            "stop after step {n}: the run is already at step {start}; choose a later step"
        )));
    }
    let mut ema = f32::NAN;
    let end = o.stop_after.map_or(o.steps, |n| n.min(o.steps));
    for step in start..end {
        let b = draw_batch(cache, &positive_ids, o, &mut rng);
        if b.samples.is_empty() {
            continue;
        }
        let x = Tensor::<4>::from_data(
            TensorData::new(b.x, [b.b, b.channels, b.crop, b.crop]),
            device,
        );
        let p = b.target.len();
        let weight = class_weights(&b.target, o.negatives);
        let t = Tensor::<1>::from_data(TensorData::new(b.target, [p]), device);
        let logits = model.forward_sparse(x, &b.samples);
        let loss = weighted_bce_with_logits(logits, t, &weight);
        let loss_v = loss
            .clone()
            .into_data()
            .try_into_vec::<f32>()
            .ok()
            .and_then(|v| v.first().copied())
            .unwrap_or(f32::NAN);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let progress = step as f64 / o.steps.max(1) as f64;
        let lr = o.lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
        model = optim.step(lr, model, grads);
        ema = if ema.is_nan() {
            loss_v
        } else {
            0.98 * ema + 0.02 * loss_v
        };
        monitor.step(step + 1, o.steps, ema);
        let last = step + 1 == end;
        if (step + 1) % o.checkpoint_every.max(1) == 0 || last {
            let valid = model.valid();
            let plain = device.clone().inner();
            let score = match validator.as_deref_mut() {
                Some(v) => Some(v.score(&valid, &plain)?),
                None => None,
            };
            let bytes = super::to_bytes(valid)?;
            write_file(&paths.ckpt_model(), &bytes)?;
            optim
                .save(paths.ckpt_optim())
                .map_err(|e| Error::Weights(format!("saving the optimiser checkpoint: {e}")))?;
            match score {
                Some(s) if s.value > best => {
                    best = s.value;
                    write_file(paths.out, &bytes)?;
                    monitor.note(&format!("step {}: {} (best, saved)", step + 1, s.detail));
                }
                Some(s) => {
                    monitor.note(&format!("step {}: {} (best {best:.4})", step + 1, s.detail))
                }
                None => {
                    write_file(paths.out, &bytes)?;
                    monitor.note(&format!("step {}: checkpoint saved", step + 1));
                }
            }
            let measure = validator.as_ref().map(|v| v.measure());
            write_state(&paths.ckpt_state(), step + 1, rng.0, best, measure)?;
        }
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The resume state: one line `STEP RNG BEST [MEASURE]`.
fn write_state(path: &Path, step: usize, rng: u64, best: f32, measure: Option<&str>) -> Result<()> {
    let m = measure.map(|m| format!(" {m}")).unwrap_or_default();
    write_file(path, format!("{step} {rng} {best}{m}\n").as_bytes())
}

/// `(step, rng, best, measure)` of a resume state. States written before the measure was
/// recorded carry a best only when slice Dice, then the only measure, scored it.
fn read_state(path: &Path) -> Result<(usize, u64, f32, Option<String>)> {
    let mut s = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .map_err(|e| Error::io(path, e))?;
    let bad = || {
        Error::InvalidInput(format!(
            "{}: not a checkpoint state line: {s:?}",
            path.display()
        ))
    };
    let mut it = s.split_whitespace();
    let step = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let rng = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let best: f32 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let measure = match it.next() {
        Some(m) => Some(m.to_owned()),
        None if best.is_finite() => Some("slice-dice".to_owned()),
        None => None,
    };
    Ok((step, rng, best, measure))
}

/// Bytes of a cache of slices (for the progress report).
pub fn cache_bytes(cache: &[CachedSlice]) -> usize {
    // Per pixel: i16 HU, u8 label, u8 brain; i16 per context pixel.
    cache
        .iter()
        .map(|s| s.hu.len() * 4 + s.context.len() * 2)
        .sum()
}

/// Preallocate a cache vector, checked.
pub fn cache_vec(n: usize) -> Result<Vec<CachedSlice>> {
    try_vec(n, "the training slice cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_samples_take_the_asked_share_from_the_rim_beside_bone() {
        // A 40×40 crop: bone (1000 HU) in the first 3 rows, brain (30 HU) below it, blood
        // (70 HU) in a square far from the bone.
        let c = 40;
        let mut hu = vec![30.0f32; c * c];
        let mut lab = vec![0u8; c * c];
        let mut br = vec![1u8; c * c];
        for i in 0..3 * c {
            hu[i] = 1000.0;
            br[i] = 0;
        }
        for y in 25..35 {
            for x in 15..25 {
                hu[y * c + x] = 70.0;
                lab[y * c + x] = 1;
            }
        }
        let near = near_bone(&hu, c);
        // Rows 3..=6 are within 4 pixels of row 2, the last bone row; row 7 is not.
        assert!((3..=6).all(|y| near[y * c + 10]));
        assert!(!near[7 * c + 10]);
        // Background samples from the rim, for three shares of it. Without the rim pool (share
        // 0) the rim is ordinary brain: 4 of 37 brain rows, 40 background samples, expect ~4.
        for (share, want) in [(0.25f32, 10usize), (0.5, 20), (0.0, 0)] {
            let (mut samples, mut target) = (Samples::default(), Vec::new());
            let mut rng = Rng::new(3);
            sample_pixels(
                0,
                c,
                &hu,
                &lab,
                &br,
                Quota {
                    pixels: 40,
                    negatives: 1,
                    rim_share: share,
                },
                &mut rng,
                &mut samples,
                &mut target,
            );
            let pos = target.iter().filter(|&&t| t == 1.0).count();
            assert_eq!(pos, 40);
            assert_eq!(
                target.len(),
                80,
                "as many background pixels as blood pixels"
            );
            let rim = (0..samples.len())
                .filter(|&i| target[i] == 0.0 && (3..=6).contains(&samples.y[i]))
                .count();
            if share > 0.0 {
                assert_eq!(rim, want, "share {share} of the background from the rim");
            } else {
                assert!(rim <= 10, "no rim pool: {rim} rim samples of 40");
            }
        }
    }

    #[test]
    fn more_negatives_per_blood_pixel_keep_the_classes_equal_in_the_loss() {
        // A 40×40 crop of brain with a 10×10 clot: 100 blood pixels, 1,500 background.
        let c = 40;
        let hu = vec![30.0f32; c * c];
        let br = vec![1u8; c * c];
        let mut lab = vec![0u8; c * c];
        for y in 10..20 {
            for x in 10..20 {
                lab[y * c + x] = 1;
            }
        }
        for negatives in [1usize, 3] {
            let (mut samples, mut target) = (Samples::default(), Vec::new());
            let quota = Quota {
                pixels: 40,
                negatives,
                rim_share: 0.0,
            };
            sample_pixels(
                0,
                c,
                &hu,
                &lab,
                &br,
                quota,
                &mut Rng::new(5),
                &mut samples,
                &mut target,
            );
            let pos = target.iter().filter(|&&t| t == 1.0).count();
            assert_eq!(pos, 40);
            assert_eq!(target.len() - pos, 40 * negatives, "background samples");
            // Distinct pixels: the background is drawn without replacement.
            let mut at: Vec<(usize, usize)> = (0..samples.len())
                .map(|i| (samples.y[i], samples.x[i]))
                .collect();
            at.sort_unstable();
            at.dedup();
            assert_eq!(at.len(), target.len());
        }
        // The batch's weights: blood 1, background 1/3, so each class sums to the same weight.
        let cache = vec![CachedSlice {
            hu: hu.iter().map(|&v| v as i16).collect(),
            context: Vec::new(),
            label: lab.clone(),
            brain: br.clone(),
            h: c,
            w: c,
            positives: 100,
        }];
        let o = TrainOptions {
            batch: 2,
            crop: 40,
            pixels: 40,
            negatives: 3,
            augment: false,
            ..TrainOptions::default()
        };
        let b = draw_batch(&cache, &[0], &o, &mut Rng::new(9));
        let weight = class_weights(&b.target, o.negatives);
        let sum = |want: f32| -> f32 {
            b.target
                .iter()
                .zip(&weight)
                .filter(|(t, _)| **t == want)
                .map(|(_, w)| w)
                .sum()
        };
        assert!(sum(1.0) > 0.0);
        assert!(
            (sum(1.0) - sum(0.0)).abs() < 1e-3,
            "{} vs {}",
            sum(1.0),
            sum(0.0)
        );
    }
}
