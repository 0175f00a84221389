//! The one staged segmentation, shared by the command line and the browser.
//!
//! ```text
//! Prepared::new(bytes, assume_hu) io + brain mask + network grid (refuses non-HU, blank, no brain)
//!   loop over slice batches:
//!     prepared.slice_batch(r, l)  → network input [n, c, h, w] in the network's input layout
//!     (caller runs the network: native reads back synchronously, wasm with into_data_async)
//!     prepared.accept_probs(r, p) ← probabilities on the network grid
//! prepared.apply_crf(cfg)         optional 3D dense CRF (on the network grid, back to the stack)
//! prepared.finish(threshold)      mask in stack order + NIfTI in the input grid + report
//! ```
//!
//! No async and no browser types here: the page drives the same stages from a worker, so the
//! CLI and the browser produce the same mask bytes for the same input, options and backend.
//! Everything is deterministic (no sampling, no randomness at inference).

use std::borrow::Cow;
use std::ops::Range;

use burn::prelude::*;
use burn::tensor::TensorData;
use ndarray::{Array3, Axis};
use serde::{Deserialize, Serialize};

use crate::crf::{self, CrfConfig};
use crate::error::{Error, Result, try_filled};
use crate::io::Scan;
use crate::metrics::{self, Abc2, Haematoma, Measures, Midline};
use crate::model::input::{BOX_MARGIN_MM, Layout, SliceGrid, context_z, input_into};
use crate::model::{IchNet, IchNetConfig};
use crate::parallel::for_each_chunk;
use crate::preprocess::{bounding_box, brain_mask, brain_volume_warning};
use crate::volume::Stack;

/// Default probability threshold for the mask.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// Connected components smaller than this (mL) are dropped from the final mask: isolated
/// voxels are noise, and no reported bleed is smaller than 0.05 mL.
pub const MIN_COMPONENT_ML: f64 = 0.05;

/// [`MIN_COMPONENT_ML`] in voxels of `stack`: what the final mask drops, and the smallest true
/// component `eval` and `train`'s validation count as a lesion.
pub fn min_component_voxels(stack: &Stack) -> usize {
    (MIN_COMPONENT_ML / stack.voxel_ml.max(1e-12)).ceil() as usize
}

/// The stages of a segmentation, in the order they run, named once for the CLI's report, the
/// page's progress and its report: the page drives the same stages and takes these names from
/// here (through the wasm layer) instead of spelling its own.
pub mod stage {
    /// Bytes to a scan in HU.
    pub const READ: &str = "read";
    /// Brain extraction and the network grid.
    pub const BRAIN: &str = "brain";
    /// The network over every slice batch.
    pub const NETWORK: &str = "network";
    /// The 3D dense CRF.
    pub const CRF: &str = "crf";
    /// Threshold, clean-up, measurements, the mask file.
    pub const FINISH: &str = "finish";
    /// All of them, in order.
    pub const ALL: [&str; 5] = [READ, BRAIN, NETWORK, CRF, FINISH];
}

/// The stages a segmentation with `opts` runs, in order ([`stage::ALL`] less the CRF when it is
/// off): the page asks for this list instead of knowing the sequence itself.
pub fn stages(opts: &SegmentOptions) -> Vec<&'static str> {
    stage::ALL
        .into_iter()
        .filter(|s| *s != stage::CRF || opts.crf.is_some())
        .collect()
}

/// How long one stage took.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Stage name, one of [`stage::ALL`] (the page adds its own, e.g. loading the engine).
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
    /// For a DICOM input, when [`SegmentOptions::dicom_seg`] asked for it: the mask as a binary
    /// DICOM SEG of the source series. Made only on request: the SEG writer (dicom-rs's object
    /// writer and dictionary) would otherwise be linked into every page engine.
    #[serde(skip)]
    pub mask_seg_dcm: Option<Vec<u8>>,
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
    /// Whether the scan says which side is left; without it no side is shown or reported.
    pub orientation_known: bool,
    /// Whether the values were taken as HU only because the caller said so (`assume_hu`),
    /// although they did not look like HU: every mL figure then rests on that word.
    pub hu_assumed: bool,
    /// Reader and plausibility warnings (4-D, NaN voxels, unusual brain volume, ...).
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
    /// Warnings of this segmentation on top of the reader's (brain volume, assumed HU).
    warnings: Vec<String>,
    hu_assumed: bool,
}

impl Prepared {
    /// Read NIfTI bytes, extract the brain and place the network grid (see
    /// [`Prepared::from_scan`] for what is refused).
    pub fn new(bytes: &[u8], assume_hu: bool) -> Result<Self> {
        let t = clock();
        let scan = Scan::from_bytes(bytes)?;
        let read_ms = elapsed_ms(t);
        let mut p = Self::from_scan(scan, assume_hu)?;
        p.timings.insert(
            0,
            Timing {
                stage: stage::READ.into(),
                ms: read_ms,
            },
        );
        Ok(p)
    }

    /// Prepare an already-read scan: brain mask and network grid.
    ///
    /// Refused, because any volume measured on them would be a confident wrong answer: a blank
    /// scan ([`Error::BlankScan`]); values that cannot be HU ([`Error::NotHu`]) unless
    /// `assume_hu`, which the report then records; a scan where no brain is found
    /// ([`Error::NoBrain`]). A brain volume outside the adult range is a warning.
    pub fn from_scan(scan: Scan, assume_hu: bool) -> Result<Self> {
        let t = clock();
        let (min, max) = (scan.info.hu_min, scan.info.hu_max);
        if min == max {
            return Err(Error::BlankScan { value: min });
        }
        let mut warnings = Vec::new();
        let hu_assumed = crate::io::not_hu_reason(min, max).is_some();
        if hu_assumed {
            if !assume_hu {
                return Err(Error::NotHu { min, max });
            }
            warnings.push(format!(
                "the values ({min} to {max}) do not look like Hounsfield units and were taken as \
                 HU because you said so; every volume below rests on that"
            ));
        }
        let mut p = Self::from_scan_untimed(scan, warnings, hu_assumed)?;
        p.timings.insert(
            0,
            Timing {
                stage: stage::BRAIN.into(),
                ms: elapsed_ms(t),
            },
        );
        Ok(p)
    }

    fn from_scan_untimed(scan: Scan, mut warnings: Vec<String>, hu_assumed: bool) -> Result<Self> {
        let brain = brain_mask(&scan.stack)?;
        let brain_ml = scan.stack.mask_ml(&brain);
        if brain.iter().all(|&v| v == 0) {
            return Err(Error::NoBrain {
                hu_min: scan.info.hu_min,
                hu_max: scan.info.hu_max,
            });
        }
        warnings.extend(brain_volume_warning(brain_ml));
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
            warnings,
            hu_assumed,
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

    /// Network input for slices `r` in `layout` (the network's: [`IchNet::layout`]):
    /// `[n, layout.channels(), h, w]` values, batch-major.
    pub fn slice_batch(&self, r: Range<usize>, layout: Layout) -> Result<(Vec<f32>, [usize; 4])> {
        let g = self.check_range(&r)?;
        let n = r.len();
        let plane = g.len();
        let c = layout.channels();
        let mut x = try_filled(n * c * plane, 0.0f32, "the network input")?;
        let mut work = try_filled(4 * plane, 0.0f32, "resampled slices")?;
        let (hu, rest) = work.split_at_mut(plane);
        let (below, rest) = rest.split_at_mut(plane);
        let (above, tmp) = rest.split_at_mut(plane);
        let stack = &self.scan.stack;
        for (k, i) in r.enumerate() {
            let z = self.z.start + i;
            g.resample(stack.slice(z), hu);
            if layout == Layout::Context {
                let [zb, za] = context_z(z, stack.hu.dim().0, stack.spacing[0]);
                g.resample_z(stack.hu.view(), zb, below, tmp);
                g.resample_z(stack.hu.view(), za, above, tmp);
            }
            input_into(
                layout,
                hu,
                [below, above],
                &mut x[k * c * plane..(k + 1) * c * plane],
            );
        }
        Ok((x, [n, c, g.h, g.w]))
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
        Ok(self.probability_view()?.into_owned())
    }

    /// [`Prepared::probability`] without copying the CRF's refinement (33 MB for a 512×512×32
    /// scan): copying it had taken a third of the finish stage (`cargo bench --bench segment`:
    /// finish 0.048 s median against 0.073 s with the copy, six alternating runs, 2026-12-02).
    fn probability_view(&self) -> Result<Cow<'_, Array3<f32>>> {
        match &self.refined {
            Some(r) => Ok(Cow::Borrowed(r)),
            None => self.network_probability().map(Cow::Owned),
        }
    }

    /// The network's own probabilities on the stack grid, ignoring any CRF refinement.
    fn network_probability(&self) -> Result<Array3<f32>> {
        self.check_complete()?;
        self.grid_to_stack(&self.net_probs)
    }

    fn check_complete(&self) -> Result<()> {
        if self.complete() {
            return Ok(());
        }
        Err(Error::Incomplete {
            missing: self.done.iter().filter(|d| !**d).count(),
            total: self.slices(),
        })
    }

    /// Planes on the network grid (one per network slice, `[z.len(), h, w]`) mapped back onto the
    /// stack bilinearly, 0 outside the brain and on slices without brain.
    fn grid_to_stack(&self, planes: &[f32]) -> Result<Array3<f32>> {
        let (nz, ny, nx) = self.scan.stack.dims();
        let mut buf = try_filled(nz * ny * nx, 0.0f32, "the probability volume")?;
        if let Some(g) = self.grid {
            let plane = g.len();
            if planes.len() != self.z.len() * plane {
                return Err(Error::InvalidInput(format!(
                    "internal error: {} probabilities for {} slices of {}×{}",
                    planes.len(),
                    self.z.len(),
                    g.h,
                    g.w
                )));
            }
            let views = planes
                .chunks_exact(plane.max(1))
                .map(|p| g.plane_view(p))
                .collect::<Result<Vec<_>>>()?;
            // 8 M voxels for a 512² scan: its slices side by side.
            let (z, brain) = (self.z.clone(), &self.brain);
            for_each_chunk(&mut buf, ny * nx, |start, dst| {
                let k = start / (ny * nx).max(1);
                if let Some(view) = k.checked_sub(z.start).and_then(|i| views.get(i)) {
                    g.fill_stack_plane(view.view(), dst, nx);
                    for (v, &b) in dst.iter_mut().zip(brain.index_axis(Axis(0), k)) {
                        if b == 0 {
                            *v = 0.0;
                        }
                    }
                }
            });
        }
        Array3::from_shape_vec((nz, ny, nx), buf)
            .map_err(|e| Error::InvalidInput(format!("probability volume: {e}")))
    }

    /// Refine the network's probabilities with the 3D dense CRF inside the brain (replacing any
    /// earlier refinement); `progress(done, total)` returning `false` cancels. It always starts
    /// from the network's own probabilities, so applying it again (another configuration, a
    /// retry) never compounds.
    ///
    /// The CRF runs on the network's own grid (1 mm pixels in-plane, the stack's slices), where
    /// the probabilities were made, with the CT resampled onto it as the network saw it; the
    /// refined probability then goes back to the stack as the network's does. The network's
    /// probabilities hold nothing finer than 1 mm, and the kernels are 3 and 10 mm wide, so the
    /// native 0.4–0.5 mm pixels of a 512² scan only cost time: five times the voxels, and the
    /// CRF had become the larger part of `segment` once the network was fast.
    pub fn apply_crf(
        &mut self,
        cfg: &CrfConfig,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<()> {
        let t = clock();
        self.check_complete()?;
        let refined = match self.grid {
            Some(g) => {
                let (hu, prob, brain) = self.network_grid_volumes(g)?;
                let q = crf::refine_with_progress(prob.view(), &hu, Some(&brain), cfg, progress)?;
                let q = q.as_standard_layout();
                let planes = q.as_slice().ok_or_else(|| {
                    Error::InvalidInput("internal error: CRF output not contiguous".into())
                })?;
                self.grid_to_stack(planes)?
            }
            None => self.network_probability()?,
        };
        self.refined = Some(refined);
        // A repeated CRF replaces the earlier one, so its timing does too.
        self.timings.retain(|t| t.stage != stage::CRF);
        self.timings.push(Timing {
            stage: stage::CRF.into(),
            ms: elapsed_ms(t),
        });
        Ok(())
    }

    /// What the CRF works on, on the network grid `g` over the network slices: the CT (bilinear,
    /// as the network's input), the network's probabilities (0 outside the brain, as on the
    /// stack) and the brain mask (nearest neighbour).
    fn network_grid_volumes(&self, g: SliceGrid) -> Result<(Stack, Array3<f32>, Array3<u8>)> {
        let (slices, plane) = (self.z.len(), g.len());
        let shape = (slices, g.h, g.w);
        let mut hu = try_filled(slices * plane, 0f32, "the CRF's CT on the network grid")?;
        let mut brain = try_filled(slices * plane, 0u8, "the CRF's brain on the network grid")?;
        let mut prob = try_filled(slices * plane, 0f32, "the CRF's probabilities")?;
        // Slices side by side (natively): each is independent of the others.
        let (z0, stack_hu) = (self.z.start, &self.scan.stack.hu);
        for_each_chunk(&mut hu, plane, |start, out| {
            g.resample(stack_hu.index_axis(Axis(0), z0 + start / plane), out);
        });
        for_each_chunk(&mut brain, plane, |start, out| {
            g.resample_labels(self.brain.index_axis(Axis(0), z0 + start / plane), out);
        });
        let (net, inside) = (&self.net_probs, &brain);
        for_each_chunk(&mut prob, plane, |start, out| {
            for ((p, &n), &b) in out.iter_mut().zip(&net[start..]).zip(&inside[start..]) {
                *p = if b != 0 { n } else { 0.0 };
            }
        });
        let shape_err =
            |e: ndarray::ShapeError| Error::InvalidInput(format!("network grid volume: {e}"));
        let [dz, dy, dx] = self.scan.stack.spacing;
        let spacing = [dz, g.sy * dy, g.sx * dx];
        let stack = Stack {
            hu: Array3::from_shape_vec(shape, hu).map_err(shape_err)?,
            spacing,
            voxel_ml: f64::from(spacing[0] * spacing[1] * spacing[2]) / 1000.0,
        };
        Ok((
            stack,
            Array3::from_shape_vec(shape, prob).map_err(shape_err)?,
            Array3::from_shape_vec(shape, brain).map_err(shape_err)?,
        ))
    }

    /// The FINISH stage as every caller runs it (the CLI through [`segment_scan`], the page stage
    /// by stage): [`Prepared::finish`] at the options' threshold, and the mask as a DICOM SEG when
    /// the options ask for it and the input was DICOM.
    pub fn finish_stage(&self, opts: &SegmentOptions) -> Result<Segmentation> {
        let mut seg = self.finish(opts.threshold)?;
        if opts.dicom_seg {
            seg.mask_seg_dcm = self
                .scan()
                .mask_seg_dcm(&seg.mask, &crate::io::dicom::seg::SegOptions::default())?;
        }
        Ok(seg)
    }

    /// Threshold, clean up and measure: the final mask, its NIfTI bytes in the input grid, and
    /// the report.
    pub fn finish(&self, threshold: f32) -> Result<Segmentation> {
        check_threshold(threshold)?;
        let t = clock();
        let prob = self.probability_view()?;
        let stack = &self.scan.stack;
        let mut mask = prob.mapv(|p| u8::from(p > threshold));
        let min_voxels = min_component_voxels(stack);
        remove_small_components(&mut mask, min_voxels.max(1))?;
        let mask_nifti_gz = self.scan.mask_nifti_gz(&mask)?;
        let measures = self.measure(&mask)?;
        let mut timings = self.timings.clone();
        timings.push(Timing {
            stage: stage::FINISH.into(),
            ms: elapsed_ms(t),
        });
        let mut warnings = self.scan.warnings.clone();
        warnings.extend(self.warnings.iter().cloned());
        Ok(Segmentation {
            volume_ml: measures.volume_ml,
            slices_with_blood: measures.slices_with_blood,
            abc2: measures.abc2,
            haematomas: measures.haematomas,
            brain_ml: stack.mask_ml(&self.brain),
            crf: self.refined.is_some(),
            threshold,
            timings,
            orientation_known: self.scan.info.orientation_known,
            hu_assumed: self.hu_assumed,
            warnings,
            mask,
            mask_nifti_gz,
            mask_seg_dcm: None,
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

    /// Volume, headline ABC/2, haematomas and slices with blood of `mask` (stack order) on this
    /// scan: [`metrics::measure`], as a reader's edit is measured ([`crate::review::Review`]).
    pub fn measure(&self, mask: &Array3<u8>) -> Result<Measures> {
        let midline = Midline::for_scan(&self.scan, &self.brain)?;
        metrics::measure(mask, &self.scan.stack, midline.as_ref())
    }

    /// The scan and its brain mask, for a review of the result: the network's probabilities and
    /// the CRF's refinement are dropped with the rest.
    pub fn into_scan_and_brain(self) -> (Scan, Array3<u8>) {
        (self.scan, self.brain)
    }
}

/// Run the network on a prepared batch: haemorrhage probabilities `[n, h, w]` as a tensor on
/// `device`. The caller reads it back (synchronously natively, `into_data_async` in the browser).
pub fn network_probs(model: &IchNet, x: Vec<f32>, shape: [usize; 4], device: &Device) -> Tensor<3> {
    let t = Tensor::<4>::from_data(TensorData::new(x, shape), device);
    burn::tensor::activation::sigmoid(model.forward_dense(t))
}

/// Options of a segmentation, the same for the CLI and the page (which passes them as JSON:
/// `{"threshold": 0.5, "crf": {...} | null, "assume_hu": false}`; missing fields keep the
/// defaults, unknown ones are refused so a typo is never silently ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentOptions {
    /// Probability threshold of the mask.
    pub threshold: f32,
    /// The CRF configuration, or `None` to skip the CRF.
    pub crf: Option<CrfConfig>,
    /// Slices per network call (memory ∝ this; 4 keeps a 200×200 grid well under 100 MB).
    pub batch_slices: usize,
    /// Take the values as HU even when they do not look like HU (see [`Error::NotHu`]).
    pub assume_hu: bool,
    /// Also write the mask as a DICOM SEG when the input is DICOM: `segment --seg-out` asks for
    /// it, the page always does (the wasm `Job.files` sets it). Not a JSON option: it says where
    /// a file goes, not how to segment, so JSON naming it is refused as unknown.
    #[serde(skip)]
    pub dicom_seg: bool,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            threshold: DEFAULT_THRESHOLD,
            crf: Some(CrfConfig::default()),
            batch_slices: 4,
            assume_hu: false,
            dicom_seg: false,
        }
    }
}

impl SegmentOptions {
    /// Options from JSON (the page's and the embedding API's form), checked.
    pub fn from_json(text: &str) -> Result<Self> {
        let o: SegmentOptions = serde_json::from_str(text).map_err(|e| {
            Error::InvalidInput(format!("the segmentation options could not be read: {e}"))
        })?;
        o.check()?;
        Ok(o)
    }

    /// Refuse values no segmentation can use.
    pub fn check(&self) -> Result<()> {
        check_threshold(self.threshold)?;
        if self.batch_slices == 0 {
            return Err(Error::InvalidOption {
                name: "batch_slices",
                value: "0".into(),
                allowed: "at least one slice per network call",
            });
        }
        if let Some(c) = &self.crf {
            c.validate()?;
        }
        Ok(())
    }
}

fn check_threshold(threshold: f32) -> Result<()> {
    if threshold > 0.0 && threshold < 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidOption {
            name: "threshold",
            value: threshold.to_string(),
            allowed: "must lie strictly between 0 and 1",
        })
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
    opts.check()?;
    let t = clock();
    let scan = Scan::from_bytes(bytes)?;
    segment_scan(scan, elapsed_ms(t), model, device, opts, progress)
}

/// [`segment`] of a scan the caller read (a DICOM series, a zip, a `.hdr`/`.img` pair: see
/// [`crate::io::read_files`]) in `read_ms`, which the report gives as its read stage, so every
/// report names the same stages whoever read the files.
#[cfg(not(target_arch = "wasm32"))]
pub fn segment_scan(
    scan: Scan,
    read_ms: f64,
    model: &IchNet,
    device: &Device,
    opts: &SegmentOptions,
    progress: &mut dyn FnMut(Progress<'_>) -> bool,
) -> Result<Segmentation> {
    opts.check()?;
    announce(progress, stage::BRAIN, 0, 1)?;
    let mut prep = Prepared::from_scan(scan, opts.assume_hu)?;
    prep.timings.insert(
        0,
        Timing {
            stage: stage::READ.into(),
            ms: read_ms,
        },
    );
    prep.segment(model, device, opts, progress)
}

/// Tell `progress` where the work is; its `false` cancels.
#[cfg(not(target_arch = "wasm32"))]
fn announce(
    progress: &mut dyn FnMut(Progress<'_>) -> bool,
    stage: &'static str,
    done: usize,
    total: usize,
) -> Result<()> {
    if progress(Progress { stage, done, total }) {
        Ok(())
    } else {
        Err(Error::Cancelled)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Prepared {
    /// The rest of the pipeline on a prepared scan, natively: network, optional CRF, finish.
    /// The scan and its brain stay here for whoever needs them next (the follow-up
    /// comparison registers them), so every caller segments with this one sequence.
    pub fn segment(
        &mut self,
        model: &IchNet,
        device: &Device,
        opts: &SegmentOptions,
        progress: &mut dyn FnMut(Progress<'_>) -> bool,
    ) -> Result<Segmentation> {
        opts.check()?;
        run_network(self, model, device, opts.batch_slices, progress)?;
        if let Some(cfg) = &opts.crf {
            let mut cancelled = false;
            let res = self.apply_crf(cfg, &mut |d, n| {
                let ok = progress(Progress {
                    stage: stage::CRF,
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
        announce(progress, stage::FINISH, 0, 1)?;
        self.finish_stage(opts)
    }
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
    let layout = model.layout()?;
    let step = batch.max(1);
    let mut start = 0;
    while start < total {
        if !progress(Progress {
            stage: stage::NETWORK,
            done: start,
            total,
        }) {
            return Err(Error::Cancelled);
        }
        let r = start..(start + step).min(total);
        let (x, shape) = prep.slice_batch(r.clone(), layout)?;
        let probs = network_probs(model, x, shape, device)
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Backend(format!("reading the network's output: {e:?}")))?;
        prep.accept_probs(r.clone(), &probs)?;
        start = r.end;
    }
    prep.add_timing(stage::NETWORK, elapsed_ms(t));
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
