//! Dense 3-D CRF refinement of the network's haemorrhage probability.
//!
//! The network decides voxel by voxel (slice by slice, even); the CRF makes the decisions agree
//! with each other: nearby voxels of similar density should get the same label, across slices
//! too. It is the fully connected CRF of Krähenbühl & Koltun (2011) in its 3-D form (Kamnitsas et
//! al. 2017, DeepMedic): unary `-ln p`, Potts pairwise with
//!
//! - a *smoothness* kernel on position (mm): removes isolated voxels and ragged borders;
//! - an *appearance* kernel on position (mm) and CT density: labels spread through tissue of
//!   similar HU and stop at density edges (blood ≈ 50–90 HU against brain ≈ 20–40 HU).
//!
//! Positions are in millimetres, so a 5 mm slice counts as 5 mm, not as one voxel. The appearance
//! kernel is filtered by the permutohedral lattice ([`lattice`]) in O(N); the smoothness kernel,
//! a Gaussian on position alone, is separable and filtered exactly on the voxel grid ([`grid`]);
//! [`exact`] is the O(N²) oracle for tests.
//!
//! Entry point: [`refine`] (or [`refine_with_progress`] for a progress bar and cancel button).
//! Pure Rust, on every core natively and on one in a wasm web worker, with the same result.

pub mod exact;
pub mod grid;
pub mod lattice;
pub mod meanfield;
pub mod synthetic;

use crate::error::{Error, Result, try_filled, try_vec};
use crate::parallel::for_each_chunk;
use crate::preprocess::bounding_box;
use crate::volume::Stack;
use ndarray::{Array3, ArrayView3, s};

pub use grid::GridGaussian;
pub use lattice::Lattice;
pub use meanfield::{Kernel, mean_field};

/// A normalised Gaussian filter over a fixed set of points, as mean-field consumes it.
pub trait Filter {
    /// Number of points the filter was built for.
    fn len(&self) -> usize;

    /// `true` when built for no points.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `out_i = Σ_j k_ij values_j`, unnormalised.
    fn filter_sum(&self, values: &[f32], out: &mut [f32]) -> Result<()>;

    /// `1 / Σ_j k_ij` per point, computed once when the filter is built.
    fn inverse_norm(&self) -> &[f32];

    /// `out_i = Σ_j k_ij values_j / Σ_j k_ij` (self term included, as in Krähenbühl & Koltun's
    /// implementation: its weight is 1 / (number of voxels within a kernel width), negligible
    /// for kernels a few mm wide).
    fn filter_normalised(&self, values: &[f32], out: &mut [f32]) -> Result<()> {
        self.filter_sum(values, out)?;
        for (o, &s) in out.iter_mut().zip(self.inverse_norm()) {
            *o *= s;
        }
        Ok(())
    }
}

/// Kernel parameters of the CRF. Lengths are in mm, densities in HU.
///
/// The kernel widths are Kamnitsas et al.'s (DeepMedic) values carried over from ~1 mm voxels to
/// mm, with the density scale chosen for CT. The two weights are tuned with
/// `ichnet eval --crf-sweep` on the validation split of the shipped weights (synthetic cases,
/// never the test split), by one rule: the best Dice with at most 1 mL left on blood-free cases.
/// DeepMedic's strong weights (5 and 3) remove every false positive but also eat thin
/// subdural/epidural crescents, small clots and the rims of clots; weights of 1 keep more blood
/// but leave the network's scattered false positives on blood-free scans. Since the CRF runs on
/// the network's grid the rule has a second bound, at most 0.5 mL on a real haemorrhage-free
/// head (the GE series of `tests/fixtures/dicom`, full length): synthetic blood-free cases alone
/// chose weights (2 and 0.5) that left 1.4 mL of strips along its inner table. Appearance 2.5
/// with smoothness 1 is the choice (validation Dice 0.827 against 0.818 for 3 and 1, the earlier
/// choice; 0.29 mL on the real head). The README's model card has the table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
// Unknown fields are refused: a misspelt parameter silently left at its default would tune nothing.
#[serde(default, deny_unknown_fields)]
pub struct CrfConfig {
    /// Mean-field iterations. DeepMedic uses 2–5; the labels barely move after 5.
    pub iterations: usize,
    /// Smoothness kernel std θγ in mm. 3 mm (DeepMedic: 3 voxels of ~1 mm): reaches the next
    /// 5 mm slice at a quarter weight, enough to remove isolated voxels without eroding small bleeds.
    pub smooth_std_mm: f32,
    /// Smoothness kernel weight w2 (tuned, see above).
    pub smooth_weight: f32,
    /// Appearance kernel spatial std θα in mm. 10 mm (DeepMedic: 10–17 voxels): a haematoma's
    /// own extent, so its label spreads over the whole clot of similar density.
    pub appearance_std_mm: f32,
    /// Appearance kernel density std θβ in HU. 10 HU: above CT noise in brain (≈ 3–6 HU), well
    /// below the blood–brain contrast (≈ 30–50 HU), so the kernel sees the clot's edge.
    pub appearance_std_hu: f32,
    /// Appearance kernel weight w1 (tuned, see above).
    pub appearance_weight: f32,
    /// Density window `[lo, hi]` HU the appearance kernel sees. Values outside are clamped: bone
    /// and air are simply "very different" from blood, and clamping keeps the lattice small.
    pub window_hu: [f32; 2],
    /// Probabilities are clamped to `[eps, 1-eps]` before `-ln p`, so a confident voxel's unary
    /// stays finite (≈ 11.5 at 1e-5: more than the pairwise weights can overturn).
    pub prob_eps: f32,
    /// Context kept around the region's bounding box, in mm: voxels at the brain's edge still see
    /// a full kernel width of neighbours.
    pub margin_mm: f32,
    /// Memory the CRF may use, in bytes (per-voxel arrays and both lattices); larger boxes are
    /// refused with a message rather than exhausting a browser tab.
    pub max_memory_bytes: usize,
    /// Voxels the network gives at least this probability stay blood whatever the mean field
    /// says (the refined value is the larger of the two); `None`, the default, lets the CRF
    /// overturn any voxel. The appearance kernel's 10 mm reach averages a thin sulcal or
    /// cortical bleed with the brain around it, which is how the CRF loses small subarachnoid
    /// lesions the network found; this keeps the network's confident ones.
    pub keep_above: Option<f32>,
    /// The appearance kernel links only voxels inside the region (the brain mask): the box's
    /// other voxels (bone, scalp, air, with their densities clamped into the window) then send
    /// no appearance message, and the lattice is built over the region's voxels alone (under
    /// half of a brain box's). `false`, the default, lets every voxel of the box take part, as
    /// the shipped CRF was tuned. Bone clamped to the window's top reads as dense blood to the
    /// appearance kernel, so along the inner table it is background of blood's density, which
    /// pulls thin rim blood (subdural, subarachnoid) and the network's strips there alike
    /// towards background.
    pub appearance_region_only: bool,
}

/// The CRF's default memory cap. A browser tab's wasm memory tops out at 4 GiB and must also hold
/// the scan and the network, so the page allows 1 GiB (enough for a 512×512×40 scan's brain box);
/// natively a thin-slice 512×512×64 box (9.7 M voxels) needs over 1 GiB, so the CLI allows 4 GiB.
#[cfg(target_arch = "wasm32")]
pub const DEFAULT_MAX_MEMORY: usize = 1 << 30;
/// The CRF's default memory cap natively (see the wasm32 definition for why it differs).
#[cfg(not(target_arch = "wasm32"))]
pub const DEFAULT_MAX_MEMORY: usize = 4 << 30;

impl Default for CrfConfig {
    fn default() -> Self {
        CrfConfig {
            iterations: 5,
            smooth_std_mm: 3.0,
            smooth_weight: 1.0,
            appearance_std_mm: 10.0,
            appearance_std_hu: 10.0,
            appearance_weight: 2.5,
            window_hu: [0.0, 100.0],
            prob_eps: 1e-5,
            margin_mm: 5.0,
            max_memory_bytes: DEFAULT_MAX_MEMORY,
            keep_above: None,
            appearance_region_only: false,
        }
    }
}

/// Narrowest kernel width accepted (mm, or HU for the density width).
const MIN_WIDTH: f32 = 1e-3;
/// Widest kernel width accepted (mm, or HU).
const MAX_WIDTH: f32 = 1e4;

impl CrfConfig {
    /// Parse a JSON object of CRF parameters (missing fields keep their defaults), validated.
    pub fn from_json(text: &str) -> Result<Self> {
        let bad = |e: serde_json::Error| Error::InvalidInput(format!("CRF parameters: {e}"));
        let value: serde_json::Value = serde_json::from_str(text).map_err(bad)?;
        // serde would also read a struct from a bare array by field position: refuse that, a
        // list of numbers says nothing about which parameter each one is.
        if !value.is_object() {
            return Err(Error::InvalidInput(format!(
                "CRF parameters: expected a JSON object such as {{\"smooth_weight\": 3.0}}, found {}",
                json_kind(&value)
            )));
        }
        let cfg: CrfConfig = serde_json::from_value(value).map_err(bad)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuse parameters that would make the CRF meaningless or unbounded.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("smooth_std_mm", self.smooth_std_mm),
            ("appearance_std_mm", self.appearance_std_mm),
            ("appearance_std_hu", self.appearance_std_hu),
        ];
        for (name, v) in positive {
            // A width of a micrometre (or HU) or less filters nothing, one of ten metres spans
            // any scan: both are typos, not settings.
            if !(v.is_finite() && (MIN_WIDTH..=MAX_WIDTH).contains(&v)) {
                return Err(Error::InvalidInput(format!(
                    "CRF {name} = {v}: a kernel width must be a number from {MIN_WIDTH} to \
                     {MAX_WIDTH}"
                )));
            }
        }
        let non_negative = [
            ("smooth_weight", self.smooth_weight),
            ("appearance_weight", self.appearance_weight),
            ("margin_mm", self.margin_mm),
        ];
        for (name, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::InvalidInput(format!(
                    "CRF {name} = {v}: must be zero or a positive number"
                )));
            }
        }
        if self.iterations > 100 {
            return Err(Error::InvalidInput(format!(
                "CRF iterations = {}: more than 100 only costs time (mean-field settles in ~5)",
                self.iterations
            )));
        }
        let [lo, hi] = self.window_hu;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::InvalidInput(format!(
                "CRF window [{lo}, {hi}] HU: needs finite bounds with lo < hi"
            )));
        }
        if let Some(k) = self.keep_above
            && !(k.is_finite() && k > 0.5 && k <= 1.0)
        {
            return Err(Error::InvalidInput(format!(
                "CRF keep_above = {k}: must be above 0.5 (the mask's own threshold) and at most 1"
            )));
        }
        if !(self.prob_eps > 0.0 && self.prob_eps < 0.5) {
            return Err(Error::InvalidInput(format!(
                "CRF prob_eps = {}: must be in (0, 0.5)",
                self.prob_eps
            )));
        }
        Ok(())
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Refine `prob` (P(haemorrhage) per voxel, `[z, y, x]` like `stack.hu`) with the dense CRF and
/// return the refined probability; `> 0.5` is the mask.
///
/// With `region` (e.g. the brain mask) the CRF runs on the region's bounding box plus
/// [`CrfConfig::margin_mm`], and only voxels inside the region change; all others are returned
/// as given. An all-zero region returns `prob` unchanged.
///
/// ```
/// use ichnet::{Stack, crf::{CrfConfig, refine}};
/// use ndarray::Array3;
///
/// let stack = Stack { hu: Array3::from_elem((4, 16, 16), 30.0), spacing: [5.0, 0.5, 0.5], voxel_ml: 1.25e-3 };
/// let mut prob = Array3::from_elem((4, 16, 16), 0.05f32);
/// prob[[2, 8, 8]] = 0.9; // a lone false positive
/// let brain = Array3::from_elem((4, 16, 16), 1u8);
/// // DeepMedic's strong weights; the shipped defaults are gentler (and `finish` drops tiny
/// // components on top).
/// let cfg = CrfConfig { appearance_weight: 5.0, smooth_weight: 3.0, ..CrfConfig::default() };
/// let refined = refine(prob.view(), &stack, Some(&brain), &cfg)?;
/// let mask = refined.mapv(|p| u8::from(p > 0.5));
/// assert_eq!(mask.sum(), 0);
/// # Ok::<(), ichnet::Error>(())
/// ```
pub fn refine(
    prob: ArrayView3<'_, f32>,
    stack: &Stack,
    region: Option<&Array3<u8>>,
    cfg: &CrfConfig,
) -> Result<Array3<f32>> {
    refine_with_progress(prob, stack, region, cfg, &mut |_, _| true)
}

/// [`refine`] with `progress(done, total)`: called with `(0, total)` once the lattices are built
/// and after each mean-field iteration (`total` = iterations). Returning `false` stops the work
/// with [`Error::Cancelled`].
pub fn refine_with_progress(
    prob: ArrayView3<'_, f32>,
    stack: &Stack,
    region: Option<&Array3<u8>>,
    cfg: &CrfConfig,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Array3<f32>> {
    cfg.validate()?;
    check_inputs(prob, stack, region)?;
    let mut out = prob.to_owned();
    let Some(bbox) = crop_box(stack, region, cfg.margin_mm) else {
        return Ok(out);
    };
    let [z0, z1, y0, y1, x0, x1] = bbox;
    let hu = stack.hu.slice(s![z0..z1, y0..y1, x0..x1]);
    let p = prob.slice(s![z0..z1, y0..y1, x0..x1]);
    if let Some((i, v)) = hu.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        let (_, ny, nx) = hu.dim();
        return Err(Error::InvalidInput(format!(
            "CT value {v} at voxel (z {}, y {}, x {}) is not finite: the CRF needs finite HU",
            z0 + i / (ny * nx),
            y0 + i / nx % ny,
            x0 + i % nx
        )));
    }
    let inside = match region {
        Some(r) if cfg.appearance_region_only => Some(r.slice(s![z0..z1, y0..y1, x0..x1])),
        _ => None,
    };
    let mut q1 = refine_box(p, hu, inside, stack.spacing, cfg, progress)?;
    if let Some(k) = cfg.keep_above {
        for (q, &pv) in q1.iter_mut().zip(p.iter()) {
            if pv >= k {
                *q = q.max(pv);
            }
        }
    }
    let mut target = out.slice_mut(s![z0..z1, y0..y1, x0..x1]);
    match region {
        Some(r) => {
            let r = r.slice(s![z0..z1, y0..y1, x0..x1]);
            for ((t, &q), &m) in target.iter_mut().zip(&q1).zip(r.iter()) {
                if m != 0 {
                    *t = q;
                }
            }
        }
        None => {
            for (t, &q) in target.iter_mut().zip(&q1) {
                *t = q;
            }
        }
    }
    Ok(out)
}

/// Shapes, spacing and probability values, checked before any work.
fn check_inputs(
    prob: ArrayView3<'_, f32>,
    stack: &Stack,
    region: Option<&Array3<u8>>,
) -> Result<()> {
    let dims = stack.hu.dim();
    if prob.dim() != dims {
        return Err(Error::InvalidInput(format!(
            "probability volume is {:?} (z, y, x) but the CT is {dims:?}",
            prob.dim()
        )));
    }
    if let Some(r) = region
        && r.dim() != dims
    {
        return Err(Error::InvalidInput(format!(
            "CRF region mask is {:?} (z, y, x) but the CT is {dims:?}",
            r.dim()
        )));
    }
    if dims.0 * dims.1 * dims.2 == 0 {
        return Err(Error::InvalidInput(format!(
            "dims {}×{}×{} (x×y×z): the CRF needs a volume with at least one voxel",
            dims.2, dims.1, dims.0
        )));
    }
    if let Some(sp) = stack.spacing.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        return Err(Error::InvalidInput(format!(
            "voxel size {sp} mm in spacing {:?}: the CRF needs positive voxel sizes",
            stack.spacing
        )));
    }
    if let Some((i, v)) = prob
        .iter()
        .enumerate()
        .find(|(_, v)| !(0.0..=1.0).contains(*v))
    {
        let (_, ny, nx) = dims;
        return Err(Error::InvalidInput(format!(
            "probability {v} at voxel (z {}, y {}, x {}) is not in [0, 1]",
            i / (ny * nx),
            i / nx % ny,
            i % nx
        )));
    }
    Ok(())
}

/// Bounding box `[z0, z1, y0, y1, x0, x1]` (half-open) of the region, grown by `margin_mm` on
/// each axis and clipped; the whole volume without a region; `None` for an empty region.
fn crop_box(stack: &Stack, region: Option<&Array3<u8>>, margin_mm: f32) -> Option<[usize; 6]> {
    let (nz, ny, nx) = stack.hu.dim();
    let Some(r) = region else {
        return Some([0, nz, 0, ny, 0, nx]);
    };
    let b = bounding_box(r)?.padded(margin_mm, stack.spacing, (nz, ny, nx));
    Some([
        b.start[0], b.end[0], b.start[1], b.end[1], b.start[2], b.end[2],
    ])
}

/// Mean-field on one box; returns P(haemorrhage) per box voxel in `[z, y, x]` order. With
/// `appearance_region`, the appearance kernel links only the voxels where it is non-zero.
fn refine_box(
    prob: ArrayView3<'_, f32>,
    hu: ArrayView3<'_, f32>,
    appearance_region: Option<ArrayView3<'_, u8>>,
    spacing: [f32; 3],
    cfg: &CrfConfig,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Array3<f32>> {
    let dims = prob.dim();
    let n = dims.0 * dims.1 * dims.2;
    // Per-voxel f32 arrays alive at once: unary (2), marginals (2), one filtered copy per kernel
    // (2), the density feature while a lattice is built (1; the probabilities' copy before it),
    // the result (1); one to spare.
    let per_voxel_fixed = n.saturating_mul(9 * 4);
    let budget = cfg.max_memory_bytes.checked_sub(per_voxel_fixed).ok_or_else(|| {
        Error::TooLarge(format!(
            "the CRF box of {}×{}×{} voxels (x×y×z) needs {} MB for its per-voxel arrays alone, \
             over the {} MB limit: crop to the brain or raise the limit",
            dims.2,
            dims.1,
            dims.0,
            per_voxel_fixed / 1_000_000,
            cfg.max_memory_bytes / 1_000_000
        ))
    })?;

    // Two logarithms per voxel: split across threads, from a contiguous copy of the box.
    let mut p = try_vec::<f32>(n, "the CRF unary energies")?;
    p.extend(prob.iter());
    let mut unary = try_filled(2 * n, 0f32, "the CRF unary energies")?;
    let eps = cfg.prob_eps;
    let (u0, u1) = unary.split_at_mut(n);
    for (plane, background) in [(u0, true), (u1, false)] {
        for_each_chunk(plane, 1 << 15, |start, chunk| {
            for (u, &v) in chunk.iter_mut().zip(&p[start..]) {
                let label = if background { 1.0 - v } else { v };
                *u = -label.clamp(eps, 1.0 - eps).ln();
            }
        });
    }
    drop(p);

    let (ny, nx) = (dims.1, dims.2);
    let zyx = move |i: usize| [i / (ny * nx), i / nx % ny, i % nx].map(|v| v as f32);
    let smooth = GridGaussian::new(dims, spacing.map(|s| cfg.smooth_std_mm / s))?;
    let step = spacing.map(|s| s / cfg.appearance_std_mm);
    let [lo, hi] = cfg.window_hu;
    let mut density = try_vec::<f32>(n, "the CRF density feature")?;
    density.extend(hu.iter().map(|&v| v.clamp(lo, hi) / cfg.appearance_std_hu));
    // The smoothness filter holds its normaliser and borrows one more volume while it filters.
    let lattice_budget = budget.saturating_sub(2 * smooth.bytes());
    let feature = |i: usize, f: &mut [f32]| {
        let p = zyx(i);
        f.copy_from_slice(&[p[0] * step[0], p[1] * step[1], p[2] * step[2], density[i]]);
    };
    let appearance: Box<dyn Filter> = match appearance_region {
        Some(r) => {
            let inside = r.iter().filter(|m| **m != 0).count();
            let mut index = try_vec::<u32>(inside, "the CRF region's voxel list")?;
            index.extend(
                r.iter()
                    .enumerate()
                    .filter(|(_, m)| **m != 0)
                    .map(|(i, _)| i as u32),
            );
            // The list's own 4 bytes per voxel and its normaliser spread over the box.
            let extra = index.len() * 4 + n * 4;
            let lattice = Lattice::from_fn(
                index.len(),
                4,
                lattice_budget.saturating_sub(extra),
                |j, f| feature(index[j] as usize, f),
            )?;
            Box::new(Subset::new(lattice, index, n)?)
        }
        None => Box::new(Lattice::from_fn(n, 4, lattice_budget, feature)?),
    };
    drop(density);
    if !progress(0, cfg.iterations) {
        return Err(Error::Cancelled);
    }

    let kernels = [
        Kernel {
            filter: &smooth,
            weight: cfg.smooth_weight,
        },
        Kernel {
            filter: appearance.as_ref(),
            weight: cfg.appearance_weight,
        },
    ];
    let q = mean_field(&unary, 2, &kernels, cfg.iterations, progress)?;
    let q1 = q[n..].to_vec();
    Array3::from_shape_vec(dims, q1)
        .map_err(|e| Error::InvalidInput(format!("internal error: CRF output shape: {e}")))
}

/// A filter over some of a box's voxels (a lattice built over the listed ones), presented as a
/// filter over the whole box: the other voxels send nothing and receive nothing (their filtered
/// value and normaliser are 0, so mean-field gives them no message from this kernel).
struct Subset {
    inner: Lattice,
    /// Box index of each of the lattice's points, ascending.
    index: Vec<u32>,
    /// The lattice's normaliser scattered onto the box, 0 outside the subset.
    inv_norm: Vec<f32>,
}

impl Subset {
    fn new(inner: Lattice, index: Vec<u32>, n: usize) -> Result<Self> {
        let mut inv_norm = try_filled(n, 0f32, "the CRF normaliser")?;
        for (&i, &v) in index.iter().zip(inner.inverse_norm()) {
            inv_norm[i as usize] = v;
        }
        Ok(Subset {
            inner,
            index,
            inv_norm,
        })
    }
}

impl Filter for Subset {
    fn len(&self) -> usize {
        self.inv_norm.len()
    }

    fn filter_sum(&self, values: &[f32], out: &mut [f32]) -> Result<()> {
        if values.len() != self.len() || out.len() != self.len() {
            return Err(Error::InvalidInput(format!(
                "a CRF filter over a box of {} voxels was given {} values and {} outputs",
                self.len(),
                values.len(),
                out.len()
            )));
        }
        let mut gathered = try_vec::<f32>(self.index.len(), "the CRF region's values")?;
        gathered.extend(self.index.iter().map(|&i| values[i as usize]));
        let mut filtered = try_filled(self.index.len(), 0f32, "the CRF region's values")?;
        self.inner.filter(&gathered, &mut filtered)?;
        out.fill(0.0);
        for (&i, &v) in self.index.iter().zip(&filtered) {
            out[i as usize] = v;
        }
        Ok(())
    }

    fn inverse_norm(&self) -> &[f32] {
        &self.inv_norm
    }
}
