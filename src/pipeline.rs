//! The one staged segmentation, shared by the command line and the browser.
//!
//! ```text
//! Prepared::new(bytes)            io + brain mask + network grid
//!   loop over slice batches:
//!     prepared.slice_batch(r)     → network input [n, c, h, w]
//!     (caller runs the network: native reads back synchronously, wasm with into_data_async)
//!     prepared.accept_probs(r, p) ← probabilities on the network grid
//! prepared.apply_crf(cfg)         optional 3D dense CRF on the stack grid
//! prepared.finish(threshold)      mask in stack order + NIfTI in the input grid + report
//! ```
//!
//! No async and no browser types here: the page drives the same stages from a worker, so the
//! CLI and the browser produce the same mask bytes for the same input, options and backend.
//! Everything is deterministic (no sampling, no randomness at inference).

use std::ops::Range;

use burn::prelude::*;
use burn::tensor::TensorData;
use ndarray::{Array3, Axis};
use serde::Serialize;

use crate::crf::{self, CrfConfig};
use crate::error::{Error, Result, try_filled};
use crate::io::Scan;
use crate::metrics::{self, Abc2, Haematoma, Midline};
use crate::model::input::{CHANNELS, SliceGrid, window_into};
use crate::model::{IchNet, IchNetConfig};
use crate::preprocess::{bounding_box, brain_mask};

/// Margin around the brain's bounding box on the network grid, mm: the network sees the inner
/// skull surface around the brain (blood's look-alikes live there).
pub const BOX_MARGIN_MM: f32 = 8.0;

/// Default probability threshold for the mask.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// Connected components smaller than this (mL) are dropped from the final mask: isolated
/// voxels are noise, and no reported bleed is smaller than 0.05 mL.
pub const MIN_COMPONENT_ML: f64 = 0.05;

/// How long one stage took.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Stage name ("read", "brain", "network", "crf", "finish").
    pub stage: String,
    /// Milliseconds.
    pub ms: f64,
}

/// The result of a segmentation.
#[derive(Debug, Clone, Serialize)]
pub struct Segmentation {
    /// Haemorrhage mask in stack order (`[z, y, x]`, 0/1).
    #[serde(skip)]
    pub mask: Array3<u8>,
    /// The mask as gzipped NIfTI-1 in the input file's voxel grid and affine.
    #[serde(skip)]
    pub mask_nifti_gz: Vec<u8>,
    /// Haemorrhage volume, mL (voxel count × voxel volume).
    pub volume_ml: f64,
    /// The headline ABC/2: Kothari's ABC/2 of the largest haematoma (`haematomas[0]`).
    pub abc2: Abc2,
    /// Every haematoma (connected component of the mask), largest first, each with its volume,
    /// slices, side and own ABC/2.
    pub haematomas: Vec<Haematoma>,
    /// Axial slices containing blood.
    pub slices_with_blood: usize,
    /// Brain volume from the brain mask, mL.
    pub brain_ml: f64,
    /// Whether the 3D CRF refined the network's probabilities.
    pub crf: bool,
    /// Probability threshold used.
    pub threshold: f32,
    /// Time per stage (filled natively; the browser adds its own).
    pub timings: Vec<Timing>,
    /// Reader warnings (not HU, 4-D, NaN voxels, ...).
    pub warnings: Vec<String>,
}

/// A scan read and prepared for the network, collecting probabilities slice batch by batch.
#[derive(Debug)]
pub struct Prepared {
    scan: Scan,
    brain: Array3<u8>,
    /// Stack slices the network runs on (those with brain).
    z: Range<usize>,
    /// Network grid (`None` when the scan has no brain: nothing to segment).
    grid: Option<SliceGrid>,
    /// Probabilities on the network grid, `[z.len(), h, w]`.
    net_probs: Vec<f32>,
    /// Which network slices have received probabilities.
    done: Vec<bool>,
    /// Probabilities on the stack grid after the CRF.
    refined: Option<Array3<f32>>,
    timings: Vec<Timing>,
}

impl Prepared {
    /// Read NIfTI bytes, extract the brain and place the network grid.
    pub fn new(bytes: &[u8]) -> Result<Self> {
        let t = clock();
        let scan = Scan::from_bytes(bytes)?;
        let mut p = Self::from_scan_untimed(scan)?;
        p.timings.insert(
            0,
            Timing {
                stage: "read+brain".into(),
                ms: elapsed_ms(t),
            },
        );
        Ok(p)
    }

    /// Prepare an already-read scan.
    pub fn from_scan(scan: Scan) -> Result<Self> {
        let t = clock();
        let mut p = Self::from_scan_untimed(scan)?;
        p.timings.insert(
            0,
            Timing {
                stage: "brain".into(),
                ms: elapsed_ms(t),
            },
        );
        Ok(p)
    }

    fn from_scan_untimed(scan: Scan) -> Result<Self> {
        let brain = brain_mask(&scan.stack)?;
        let multiple = IchNetConfig::new().size_multiple();
        let (z, grid) = match bounding_box(&brain) {
            Some(b) => {
                let g = SliceGrid::around(
                    (b.start[1], b.end[1]),
                    (b.start[2], b.end[2]),
                    [scan.stack.spacing[1], scan.stack.spacing[2]],
                    BOX_MARGIN_MM,
                    multiple,
                )?;
                (b.start[0]..b.end[0], Some(g))
            }
            None => (0..0, None),
        };
        let per = grid.map_or(0, |g| g.len());
        let net_probs = try_filled(z.len() * per, 0.0f32, "network probabilities")?;
        Ok(Prepared {
            done: vec![false; z.len()],
            scan,
            brain,
            z,
            grid,
            net_probs,
            refined: None,
            timings: Vec::new(),
        })
    }

    /// The scan as read.
    pub fn scan(&self) -> &Scan {
        &self.scan
    }

    /// The brain mask in stack order.
    pub fn brain(&self) -> &Array3<u8> {
        &self.brain
    }

    /// Number of network slices (axial slices containing brain); batches index `0..slices()`.
    pub fn slices(&self) -> usize {
        self.z.len()
    }

    /// Network grid height and width (0 × 0 without brain).
    pub fn grid_hw(&self) -> (usize, usize) {
        self.grid.map_or((0, 0), |g| (g.h, g.w))
    }

    /// Record a stage time measured by the caller (the browser measures with its own clock).
    pub fn add_timing(&mut self, stage: &str, ms: f64) {
        self.timings.push(Timing {
            stage: stage.into(),
            ms,
        });
    }

    fn check_range(&self, r: &Range<usize>) -> Result<SliceGrid> {
        let Some(g) = self.grid else {
            return Err(Error::InvalidInput(
                "no brain was found in this scan, so there are no slices to run the network on"
                    .into(),
            ));
        };
        if r.start >= r.end || r.end > self.slices() {
            return Err(Error::InvalidInput(format!(
                "slice range {}..{} is outside the scan's {} network slices",
                r.start,
                r.end,
                self.slices()
            )));
        }
        Ok(g)
    }

    /// Network input for slices `r`: `[n, CHANNELS, h, w]` values, batch-major.
    pub fn slice_batch(&self, r: Range<usize>) -> Result<(Vec<f32>, [usize; 4])> {
        let g = self.check_range(&r)?;
        let n = r.len();
        let plane = g.len();
        let mut x = try_filled(n * CHANNELS * plane, 0.0f32, "the network input")?;
        let mut hu = try_filled(plane, 0.0f32, "a resampled slice")?;
        for (k, i) in r.enumerate() {
            g.resample(self.scan.stack.slice(self.z.start + i), &mut hu);
            window_into(
                &hu,
                &mut x[k * CHANNELS * plane..(k + 1) * CHANNELS * plane],
            );
        }
        Ok((x, [n, CHANNELS, g.h, g.w]))
    }

    /// Store the probabilities (`[n, h, w]`, in `0..=1`) the network gave for slices `r`.
    pub fn accept_probs(&mut self, r: Range<usize>, probs: &[f32]) -> Result<()> {
        let g = self.check_range(&r)?;
        let plane = g.len();
        if probs.len() != r.len() * plane {
            return Err(Error::InvalidInput(format!(
                "{} probabilities for {} slices of {}×{}: expected {}",
                probs.len(),
                r.len(),
                g.h,
                g.w,
                r.len() * plane
            )));
        }
        if let Some(bad) = probs.iter().find(|p| !(0.0..=1.0).contains(*p)) {
            return Err(Error::Backend(format!(
                "the network returned {bad} where a probability in [0, 1] was expected"
            )));
        }
        self.net_probs[r.start * plane..r.end * plane].copy_from_slice(probs);
        for d in &mut self.done[r] {
            *d = true;
        }
        self.refined = None;
        Ok(())
    }

    /// Whether every network slice has its probabilities.
    pub fn complete(&self) -> bool {
        self.done.iter().all(|&d| d)
    }

    /// Haemorrhage probability on the stack grid (0 outside the brain), from the network, or the
    /// CRF's refinement once [`Prepared::apply_crf`] ran.
    pub fn probability(&self) -> Result<Array3<f32>> {
        match &self.refined {
            Some(r) => Ok(r.clone()),
            None => self.network_probability(),
        }
    }

    /// The network's own probabilities on the stack grid, ignoring any CRF refinement: the CRF
    /// always starts from these, so applying it again (another configuration, a retry) never
    /// compounds.
    fn network_probability(&self) -> Result<Array3<f32>> {
        if !self.complete() {
            let missing = self.done.iter().filter(|d| !**d).count();
            return Err(Error::InvalidInput(format!(
                "{missing} of {} network slices have no probabilities yet",
                self.slices()
            )));
        }
        let (nz, ny, nx) = self.scan.stack.dims();
        let buf = try_filled(nz * ny * nx, 0.0f32, "the probability volume")?;
        let mut out = Array3::from_shape_vec((nz, ny, nx), buf)
            .map_err(|e| Error::InvalidInput(format!("probability volume: {e}")))?;
        if let Some(g) = self.grid {
            let plane = g.len();
            for (i, z) in self.z.clone().enumerate() {
                let p = g.to_stack(&self.net_probs[i * plane..(i + 1) * plane], ny, nx)?;
                let mut dst = out.index_axis_mut(Axis(0), z);
                dst.assign(&p);
                let brain = self.brain.index_axis(Axis(0), z);
                dst.zip_mut_with(&brain, |v, &b| {
                    if b == 0 {
                        *v = 0.0;
                    }
                });
            }
        }
        Ok(out)
    }

    /// Refine the network's probabilities with the 3D dense CRF inside the brain (replacing any
    /// earlier refinement); `progress(done, total)` returning `false` cancels.
    pub fn apply_crf(
        &mut self,
        cfg: &CrfConfig,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<()> {
        let t = clock();
        let prob = self.network_probability()?;
        let refined = crf::refine_with_progress(
            prob.view(),
            &self.scan.stack,
            Some(&self.brain),
            cfg,
            progress,
        )?;
        self.refined = Some(refined);
        // A repeated CRF replaces the earlier one, so its timing does too.
        self.timings.retain(|t| t.stage != "crf");
        self.timings.push(Timing {
            stage: "crf".into(),
            ms: elapsed_ms(t),
        });
        Ok(())
    }

    /// Threshold, clean up and measure: the final mask, its NIfTI bytes in the input grid, and
    /// the report.
    pub fn finish(&self, threshold: f32) -> Result<Segmentation> {
        if !(threshold > 0.0 && threshold < 1.0) {
            return Err(Error::InvalidInput(format!(
                "threshold {threshold}: must lie strictly between 0 and 1"
            )));
        }
        let t = clock();
        let prob = self.probability()?;
        let stack = &self.scan.stack;
        let mut mask = prob.mapv(|p| u8::from(p > threshold));
        let min_voxels = (MIN_COMPONENT_ML / stack.voxel_ml.max(1e-12)).ceil() as usize;
        remove_small_components(&mut mask, min_voxels.max(1))?;
        let mask_nifti_gz = self.scan.mask_nifti_gz(&mask)?;
        let haematomas = self.haematomas(&mask)?;
        let abc2 = haematomas.first().map_or(Abc2::NONE, |h| h.abc2);
        let mut timings = self.timings.clone();
        timings.push(Timing {
            stage: "finish".into(),
            ms: elapsed_ms(t),
        });
        Ok(Segmentation {
            volume_ml: stack.mask_ml(&mask),
            slices_with_blood: metrics::slices_with_blood(&mask),
            abc2,
            haematomas,
            brain_ml: stack.mask_ml(&self.brain),
            crf: self.refined.is_some(),
            threshold,
            timings,
            warnings: self.scan.warnings.clone(),
            mask,
            mask_nifti_gz,
        })
    }
}

impl Prepared {
    /// The per-haematoma report of `mask` (stack order) on this scan: the model's final mask in
    /// [`Prepared::finish`], and a reader's edited mask measured the same way. Sides come from
    /// the brain's midline, or are unknown when the file does not say where left is.
    pub fn haematomas(&self, mask: &Array3<u8>) -> Result<Vec<Haematoma>> {
        let midline = Midline::for_scan(&self.scan, &self.brain)?;
        metrics::haematomas(mask, &self.scan.stack, midline.as_ref())
    }
}

/// Run the network on a prepared batch: haemorrhage probabilities `[n, h, w]` as a tensor on
/// `device`. The caller reads it back (synchronously natively, `into_data_async` in the browser).
pub fn network_probs(model: &IchNet, x: Vec<f32>, shape: [usize; 4], device: &Device) -> Tensor<3> {
    let t = Tensor::<4>::from_data(TensorData::new(x, shape), device);
    burn::tensor::activation::sigmoid(model.forward_dense(t))
}

/// Options of [`segment`].
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// Probability threshold of the mask.
    pub threshold: f32,
    /// The CRF configuration, or `None` to skip the CRF.
    pub crf: Option<CrfConfig>,
    /// Slices per network call (memory ∝ this; 4 keeps a 200×200 grid well under 100 MB).
    pub batch_slices: usize,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            threshold: DEFAULT_THRESHOLD,
            crf: Some(CrfConfig::default()),
            batch_slices: 4,
        }
    }
}

/// Progress of [`segment`]: a stage name and `done` of `total` units.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// "brain", "network", "crf" or "finish".
    pub stage: &'a str,
    /// Units done.
    pub done: usize,
    /// Units in the stage.
    pub total: usize,
}

/// The whole pipeline natively, with synchronous readback: read, brain, network, optional CRF,
/// finish. `progress` returning `false` cancels between slice batches (and CRF iterations).
#[cfg(not(target_arch = "wasm32"))]
pub fn segment(
    bytes: &[u8],
    model: &IchNet,
    device: &Device,
    opts: &SegmentOptions,
    progress: &mut dyn FnMut(Progress<'_>) -> bool,
) -> Result<Segmentation> {
    let go = |p: &mut dyn FnMut(Progress<'_>) -> bool, stage, done, total| {
        if p(Progress { stage, done, total }) {
            Ok(())
        } else {
            Err(Error::Cancelled)
        }
    };
    go(progress, "brain", 0, 1)?;
    let mut prep = Prepared::new(bytes)?;
    run_network(&mut prep, model, device, opts.batch_slices, progress)?;
    if let Some(cfg) = &opts.crf {
        let mut cancelled = false;
        let res = prep.apply_crf(cfg, &mut |d, n| {
            let ok = progress(Progress {
                stage: "crf",
                done: d,
                total: n,
            });
            cancelled |= !ok;
            ok
        });
        if cancelled {
            return Err(Error::Cancelled);
        }
        res?;
    }
    go(progress, "finish", 0, 1)?;
    prep.finish(opts.threshold)
}

/// Run the network over every slice of `prep`, `batch` slices per call, reading back
/// synchronously (native only; the browser runs the same loop with asynchronous readback).
#[cfg(not(target_arch = "wasm32"))]
pub fn run_network(
    prep: &mut Prepared,
    model: &IchNet,
    device: &Device,
    batch: usize,
    progress: &mut dyn FnMut(Progress<'_>) -> bool,
) -> Result<()> {
    let total = prep.slices();
    let t = clock();
    let step = batch.max(1);
    let mut start = 0;
    while start < total {
        if !progress(Progress {
            stage: "network",
            done: start,
            total,
        }) {
            return Err(Error::Cancelled);
        }
        let r = start..(start + step).min(total);
        let (x, shape) = prep.slice_batch(r.clone())?;
        let probs = network_probs(model, x, shape, device)
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Backend(format!("reading the network's output: {e:?}")))?;
        prep.accept_probs(r.clone(), &probs)?;
        start = r.end;
    }
    prep.add_timing("network", elapsed_ms(t));
    Ok(())
}

/// The naive baseline: 50–90 HU inside the brain mask, components under
/// [`MIN_COMPONENT_ML`] × 2 removed (what a threshold-and-clean tool would report).
pub fn baseline_mask(stack: &crate::Stack, brain: &Array3<u8>) -> Result<Array3<u8>> {
    if brain.dim() != stack.hu.dim() {
        return Err(Error::InvalidInput(format!(
            "brain mask {:?} and scan {:?} differ in shape",
            brain.dim(),
            stack.hu.dim()
        )));
    }
    let mut m = Array3::zeros(stack.hu.dim());
    ndarray::Zip::from(&mut m)
        .and(&stack.hu)
        .and(brain)
        .for_each(|m, &h, &b| *m = u8::from(b != 0 && (50.0..=90.0).contains(&h)));
    let min_voxels = (2.0 * MIN_COMPONENT_ML / stack.voxel_ml.max(1e-12)).ceil() as usize;
    remove_small_components(&mut m, min_voxels.max(1))?;
    Ok(m)
}

/// Drop 6-connected components of fewer than `min_voxels` voxels, in place.
pub fn remove_small_components(mask: &mut Array3<u8>, min_voxels: usize) -> Result<()> {
    let dims = mask.dim();
    let data = mask
        .as_slice_mut()
        .ok_or_else(|| Error::InvalidInput("mask is not contiguous".into()))?;
    crate::preprocess::filter_components(data, dims, |size, _| size >= min_voxels)
}

#[cfg(not(target_arch = "wasm32"))]
type Clock = std::time::Instant;
/// On wasm `Instant` is unavailable; a zero-sized stand-in keeps the call sites identical.
#[cfg(target_arch = "wasm32")]
#[derive(Clone, Copy)]
struct Clock;

#[cfg(not(target_arch = "wasm32"))]
fn clock() -> Clock {
    std::time::Instant::now()
}

#[cfg(target_arch = "wasm32")]
fn clock() -> Clock {
    Clock
}

/// Milliseconds since `t` natively; 0 on wasm, where `Instant` is unavailable and the page
/// measures stages itself ([`Prepared::add_timing`]).
#[cfg(not(target_arch = "wasm32"))]
fn elapsed_ms(t: Clock) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

#[cfg(target_arch = "wasm32")]
fn elapsed_ms(_t: Clock) -> f64 {
    0.0
}
