//! The browser face of the core: thin `#[wasm_bindgen]` glue called by `www/worker.js`.
//!
//! Nothing here decides anything: it converts between JS and Rust types, drives the same
//! [`pipeline::Prepared`] stages as the CLI, and turns [`crate::Error`] into a JS `Error` with the
//! same text. The core owns the sequence and the stage names ([`pipeline::stages`]): the worker
//! asks [`Job::stages`] and runs each by name (the network batch by batch), so it can post
//! progress between calls and the page can cancel by terminating the worker; nothing calls back
//! from Rust into JS. The options are the CLI's (threshold, CRF off or its parameters, assume_hu),
//! given as one JSON object that the core reads.
//!
//! A follow-up comparison takes two results under review ([`compare_js`]): registration and
//! the comparison are the core's ([`crate::review::compare`]), run in the worker between the two
//! segmentations' stages and the page's views.
//!
//! Two browser rules shape the network call: results are read with `into_data_async` (a
//! synchronous read panics on wasm and leaves the module dead), and a WebGPU device can be
//! initialised only once per module, so it is created once and cached.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::prelude::*;
use js_sys::{Float32Array, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::Error;
use crate::io::Scan;
use crate::model::input::Layout;
use crate::model::{self, IchNet, IchNetConfig};
use crate::pipeline::{self, Prepared, SegmentOptions, Segmentation, stage};
use crate::review::{Compared, Review, Reviewed, SignOff};

/// The same sentence the CLI prints, as a JS `Error`.
fn js(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

/// Install the panic hook and the console logger once: a bug shows its Rust message instead of
/// "unreachable executed", and what burn/cubecl/wgpu log (a shader that fails validation, for
/// one) reaches the console instead of nowhere.
#[wasm_bindgen]
pub fn start() {
    console_error_panic_hook::set_once();
    if log::set_logger(&CONSOLE).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// The `log` crate's records, written to the browser console at their level. Warnings and errors
/// only: wgpu's info level is a line per buffer. No record carries patient data (the core logs
/// none, and the GPU stack knows only shapes).
struct ConsoleLog;

static CONSOLE: ConsoleLog = ConsoleLog;

impl log::Log for ConsoleLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let text = JsValue::from(format!("[{}] {}: {}", r.level(), r.target(), r.args()));
        if r.level() == log::Level::Error {
            web_sys::console::error_1(&text);
        } else {
            web_sys::console::warn_1(&text);
        }
    }

    fn flush(&self) {}
}

// ---- engines ------------------------------------------------------------------------------------

thread_local! {
    /// The WebGPU device of this module instance, once initialised (a second init errors).
    static GPU: RefCell<Option<Device>> = const { RefCell::new(None) };
}

/// Set by wgpu's device-lost callback; the worker then redoes the work on the CPU.
static GPU_LOST: AtomicBool = AtomicBool::new(false);

/// Largest difference in probability between WebGPU and the CPU allowed on the known-answer
/// check. Both compute in f32 and differ only in summation order (measured 8.9e-8 on
/// SwiftShader); 1e-3 is far above that and far below anything that moves a 0.5 threshold
/// visibly, while a miscompiled shader is off by tenths.
pub const KNOWN_ANSWER_TOLERANCE: f64 = 1e-3;

/// Side of the known-answer check's square input, pixels (rounded up to the network's multiple).
const KNOWN_ANSWER_SIDE: usize = 32;

/// The network, loaded on one device.
#[wasm_bindgen]
pub struct Engine {
    model: IchNet,
    device: Device,
    gpu: bool,
    /// Largest |GPU − CPU| on the known-answer check (WebGPU engines only).
    check_diff: Option<f64>,
}

#[wasm_bindgen]
impl Engine {
    /// The network on the pure-Rust CPU backend (flex): works everywhere, one thread per module
    /// instance (the page runs several workers for more).
    pub fn cpu(weights: Vec<u8>) -> Result<Engine, JsError> {
        let device = Device::flex();
        let model = model::load(weights, &device).map_err(js)?;
        Ok(Engine {
            model,
            device,
            gpu: false,
            check_diff: None,
        })
    }

    /// The network on WebGPU, after a known-answer check: a fixed input goes through the GPU and
    /// the CPU, which must agree within [`KNOWN_ANSWER_TOLERANCE`]. Fails (for the worker to fall
    /// back to [`Engine::cpu`], saying why) when the browser gives no adapter or device, or when
    /// the GPU's answer is wrong.
    pub async fn webgpu(weights: Vec<u8>) -> Result<Engine, JsError> {
        let device = gpu_device().await.map_err(js)?;
        let cpu = Device::flex();
        let reference = model::load(weights.clone(), &cpu).map_err(js)?;
        let model = model::load(weights, &device).map_err(js)?;
        let n = KNOWN_ANSWER_SIDE.next_multiple_of(IchNetConfig::new().size_multiple());
        let shape = [1, reference.in_channels(), n, n];
        let x = known_input(shape.iter().product());
        let want = forward(&reference, &cpu, x.clone(), shape)
            .await
            .map_err(js)?;
        let got = forward(&model, &device, x, shape).await.map_err(js)?;
        let diff = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        // NaN cannot hide here: `read_probs` refuses non-finite output before.
        let diff = f64::from(diff);
        if diff > KNOWN_ANSWER_TOLERANCE {
            return Err(js(Error::Backend(format!(
                "WebGPU failed the known-answer check: its probabilities differ from the CPU's by \
                 up to {diff} on a fixed {n}×{n} input (allowed {KNOWN_ANSWER_TOLERANCE})"
            ))));
        }
        Ok(Engine {
            model,
            device,
            gpu: true,
            check_diff: Some(diff),
        })
    }

    /// Input channels of the loaded network (3: a slice alone, 5: with its neighbours), which
    /// [`Job::batch_shape`] and [`Job::batch_input`] are asked for.
    #[wasm_bindgen(js_name = inputChannels)]
    pub fn input_channels(&self) -> usize {
        self.model.in_channels()
    }

    /// Whether this engine runs on WebGPU.
    #[wasm_bindgen(js_name = isGpu)]
    pub fn is_gpu(&self) -> bool {
        self.gpu
    }

    /// Largest |GPU − CPU| probability difference on the known-answer check (WebGPU only).
    #[wasm_bindgen(js_name = knownAnswerDiff)]
    pub fn known_answer_diff(&self) -> Option<f64> {
        self.check_diff
    }

    /// The allowed known-answer difference, for the report.
    #[wasm_bindgen(js_name = knownAnswerTolerance)]
    pub fn known_answer_tolerance() -> f64 {
        KNOWN_ANSWER_TOLERANCE
    }

    /// Whether the browser has reported the WebGPU device lost since it was created.
    #[wasm_bindgen(js_name = gpuLost)]
    pub fn gpu_lost() -> bool {
        GPU_LOST.load(Ordering::Relaxed)
    }

    /// The network once on zeros of `shape` (`[n, channels, h, w]`, a real batch's): compiles
    /// WebGPU's pipelines for that shape before the scan's first batch, so first-run and warm
    /// times are reported apart.
    pub fn warmup(&self, shape: Vec<u32>) -> Result<Promise, JsError> {
        let shape = shape4(&shape)?;
        let x = crate::error::try_filled(shape.iter().product(), 0.0f32, "the warm-up input")
            .map_err(js)?;
        Ok(self.forward_promise(x, shape))
    }

    /// The network on one batch (`[n, channels, h, w]` values, `shape` as that), resolving to its
    /// probabilities `[n, h, w]`: the call a helper worker makes for a batch from
    /// [`Job::batch_input`].
    #[wasm_bindgen(js_name = forward)]
    pub fn forward_js(&self, x: Vec<f32>, shape: Vec<u32>) -> Result<Promise, JsError> {
        let shape = shape4(&shape)?;
        Ok(self.forward_promise(x, shape))
    }

    fn forward_promise(&self, x: Vec<f32>, shape: [usize; 4]) -> Promise {
        let probs = pipeline::network_probs(&self.model, x, shape, &self.device);
        future_to_promise(async move {
            let values = read_probs(probs).await.map_err(js)?;
            Ok(Float32Array::from(values.as_slice()).into())
        })
    }
}

/// A fixed, varied input in the windows' range `[0, 1]` (no randomness: the same everywhere).
fn known_input(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i.wrapping_mul(7919) % 1009) as f32) / 1008.0)
        .collect()
}

fn shape4(shape: &[u32]) -> Result<[usize; 4], JsError> {
    match shape {
        [n, c, h, w] => Ok([*n, *c, *h, *w].map(|v| v as usize)),
        _ => Err(JsError::new(&format!(
            "internal: a network batch shape has 4 dimensions, not {}",
            shape.len()
        ))),
    }
}

async fn forward(
    model: &IchNet,
    device: &Device,
    x: Vec<f32>,
    shape: [usize; 4],
) -> crate::Result<Vec<f32>> {
    read_probs(pipeline::network_probs(model, x, shape, device)).await
}

/// Read the network's probabilities back, refusing what a broken backend returns instead of
/// numbers: NaN or infinities, or a batch that is exactly zero everywhere (an unwritten GPU
/// buffer; a real network's sigmoid is never exactly 0 on a whole batch). Either would otherwise
/// become a silent empty mask.
async fn read_probs(probs: Tensor<3>) -> crate::Result<Vec<f32>> {
    let data = probs
        .into_data_async()
        .await
        .map_err(|e| Error::Backend(format!("reading the network's output failed: {e}")))?;
    let values = data
        .try_into_vec::<f32>()
        .map_err(|e| Error::Backend(format!("the network's output is not f32: {e:?}")))?;
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(Error::Backend(format!(
            "the network returned {bad} non-finite values (NaN or infinite) out of {}",
            values.len()
        )));
    }
    if !values.is_empty() && values.iter().all(|&v| v == 0.0) {
        return Err(Error::Backend(format!(
            "the network returned exactly zero for all {} values of a batch: the backend did not \
             compute it",
            values.len()
        )));
    }
    Ok(values)
}

async fn gpu_device() -> crate::Result<Device> {
    if let Some(d) = GPU.with(|g| g.borrow().clone()) {
        return Ok(d);
    }
    let (device, setup) = Device::wgpu_options()
        .init_with_setup_async()
        .await
        .map_err(|e| Error::Backend(format!("WebGPU could not be initialised: {e}")))?;
    setup.device.set_device_lost_callback(|_reason, _message| {
        GPU_LOST.store(true, Ordering::Relaxed);
    });
    GPU.with(|g| *g.borrow_mut() = Some(device.clone()));
    Ok(device)
}

// ---- options ------------------------------------------------------------------------------------

/// The options the page, the ES module and the iframe protocol take: the CLI's, as the core
/// reads them ([`SegmentOptions::from_json`]: `threshold`, `crf` null or an object of CRF
/// parameters, `assume_hu`; unknown names refused). An empty string means the defaults.
fn segment_options(json: &str) -> crate::Result<SegmentOptions> {
    SegmentOptions::from_json(if json.trim().is_empty() { "{}" } else { json })
}

// ---- one scan -----------------------------------------------------------------------------------

/// Where a job is.
enum State {
    /// Named files as dropped (a DICOM folder, a `.zip`, one NIfTI) and the series chosen.
    Files(Vec<(String, Vec<u8>)>, Option<String>),
    Read(Box<Scan>),
    Prepared(Box<Prepared>),
    /// The result, and what a reader's review of it needs (the scan, its midline).
    Finished(Box<Segmentation>, Box<Review>),
    /// Transient, while a stage owns the value.
    Empty,
}

/// One scan on its way through the pipeline, owned by the worker between stage calls. Shared
/// with the network's pending readback (`Rc`), which never holds a borrow across an `await`.
#[wasm_bindgen]
pub struct Job {
    state: Rc<RefCell<State>>,
    opts: SegmentOptions,
}

fn order_error(what: &str) -> JsError {
    JsError::new(&format!("internal: {what} was called out of order"))
}

#[wasm_bindgen]
impl Job {
    /// The job for whatever the user gave: the files of a DICOM folder, a `.zip` of a study, one
    /// NIfTI or a `.hdr` with its `.img` (routed by content, as `ichnet segment DIR_OR_FILES…`
    /// does); bad options (JSON, the CLI's names) are refused here, before any work. `series` picks a Series
    /// Instance UID when the files hold several (see [`list_series`]).
    pub fn files(
        names: Vec<String>,
        buffers: js_sys::Array,
        series: Option<String>,
        options: &str,
    ) -> Result<Job, JsError> {
        let files = named_buffers(names, &buffers);
        let mut opts = segment_options(options).map_err(js)?;
        // The page offers the DICOM SEG beside the NIfTI mask (for a DICOM input; a no-op else).
        opts.dicom_seg = true;
        Ok(Job {
            state: Rc::new(RefCell::new(State::Files(files, series))),
            opts,
        })
    }

    /// The stages to run, in order (the core's names, [`pipeline::stages`]).
    pub fn stages(&self) -> Vec<String> {
        pipeline::stages(&self.opts)
            .into_iter()
            .map(String::from)
            .collect()
    }

    /// Whether `stage` runs batch by batch ([`Job::run_batch`], or [`Job::batch_input`] and
    /// [`Job::accept_batch`] through another worker's engine) rather than by [`Job::run`].
    #[wasm_bindgen(js_name = isBatched)]
    pub fn is_batched(name: &str) -> bool {
        name == stage::NETWORK
    }

    /// Run one whole stage that is not batched.
    pub fn run(&self, name: &str) -> Result<(), JsError> {
        let mut state = self.state.borrow_mut();
        let taken = std::mem::replace(&mut *state, State::Empty);
        let (next, result) = match (name, taken) {
            (stage::READ, State::Files(files, series)) => {
                let opts = crate::io::ReadOptions { series };
                match crate::io::read_files(files, &opts) {
                    Ok(scan) => (State::Read(Box::new(scan)), Ok(())),
                    // The files went into the failed call; the job cannot go on, and says why.
                    Err(e) => (State::Empty, Err(js(e))),
                }
            }
            (stage::BRAIN, State::Read(scan)) => {
                match Prepared::from_scan(*scan, self.opts.assume_hu) {
                    Ok(p) => (State::Prepared(Box::new(p)), Ok(())),
                    // The scan went into the failed call; the job cannot go on, and says why.
                    Err(e) => (State::Empty, Err(js(e))),
                }
            }
            (stage::CRF, State::Prepared(mut p)) => {
                let r = match &self.opts.crf {
                    Some(cfg) => p.apply_crf(cfg, &mut |_, _| true).map_err(js),
                    None => Ok(()),
                };
                (State::Prepared(p), r)
            }
            (stage::FINISH, State::Prepared(p)) => match p.finish_stage(&self.opts) {
                Ok(seg) => {
                    let (scan, brain) = p.into_scan_and_brain();
                    match Review::new(scan, &brain, seg.mask.clone()) {
                        Ok(r) => (State::Finished(Box::new(seg), Box::new(r)), Ok(())),
                        Err(e) => (State::Empty, Err(js(e))),
                    }
                }
                Err(e) => (State::Prepared(p), Err(js(e))),
            },
            (_, other) => (other, Err(order_error(&format!("stage \"{name}\"")))),
        };
        *state = next;
        result
    }

    fn with_scan<T>(&self, f: impl FnOnce(&Scan) -> T) -> Result<T, JsError> {
        match &*self.state.borrow() {
            State::Read(s) => Ok(f(s)),
            State::Prepared(p) => Ok(f(p.scan())),
            _ => Err(order_error("a read of the scan")),
        }
    }

    fn with_prepared<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Prepared) -> crate::Result<T>,
    ) -> Result<T, JsError> {
        match &mut *self.state.borrow_mut() {
            State::Prepared(p) => f(p).map_err(js),
            _ => Err(order_error(what)),
        }
    }

    /// Whether the scan has been read (and can be shown) and not yet handed over as the result.
    #[wasm_bindgen(js_name = hasScan)]
    pub fn has_scan(&self) -> bool {
        matches!(&*self.state.borrow(), State::Read(_) | State::Prepared(_))
    }

    /// What `ichnet info --json` says about the scan.
    #[wasm_bindgen(js_name = infoJson)]
    pub fn info_json(&self) -> Result<String, JsError> {
        self.with_scan(|s| serde_json::to_string(&s.info))?
            .map_err(|e| JsError::new(&format!("the scan description could not be encoded: {e}")))
    }

    /// Things the reader noticed that did not stop it (4-D, not HU, NaN voxels ...).
    pub fn warnings(&self) -> Result<Vec<String>, JsError> {
        self.with_scan(|s| s.warnings.clone())
    }

    /// Canonical stack dims `[nz, ny, nx]`.
    pub fn dims(&self) -> Result<Vec<u32>, JsError> {
        self.with_scan(|s| {
            let (z, y, x) = s.stack.dims();
            [z, y, x]
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                .to_vec()
        })
    }

    /// Voxel size in mm `[z, y, x]`.
    pub fn spacing(&self) -> Result<Vec<f32>, JsError> {
        self.with_scan(|s| s.stack.spacing.to_vec())
    }

    /// The stack's HU, `[z][y][x]` flat, copied into a JS-owned array that the worker transfers
    /// to the page (so the viewer's copy costs wasm memory nothing).
    pub fn hu(&self) -> Result<Float32Array, JsError> {
        self.with_scan(|s| match s.stack.hu.as_slice() {
            Some(v) => Float32Array::from(v),
            None => Float32Array::from(s.stack.hu.iter().copied().collect::<Vec<_>>().as_slice()),
        })
    }

    /// The brain mask (0/1, stack order).
    pub fn brain(&self) -> Result<Uint8Array, JsError> {
        self.with_prepared("brain", |p| {
            Ok(match p.brain().as_slice() {
                Some(v) => Uint8Array::from(v),
                None => Uint8Array::from(p.brain().iter().copied().collect::<Vec<_>>().as_slice()),
            })
        })
    }

    /// Number of network calls (batches of slices).
    #[wasm_bindgen(js_name = batchCount)]
    pub fn batch_count(&self) -> Result<usize, JsError> {
        let batch = self.opts.batch_slices.max(1);
        self.with_prepared("batchCount", |p| Ok(p.slices().div_ceil(batch)))
    }

    /// The shape `[n, channels, h, w]` of batch `i`'s network input for a network of
    /// `channels` input channels ([`Engine::input_channels`]).
    #[wasm_bindgen(js_name = batchShape)]
    pub fn batch_shape(&self, i: usize, channels: usize) -> Result<Vec<u32>, JsError> {
        let batch = self.opts.batch_slices.max(1);
        let layout = Layout::from_channels(channels).map_err(js)?;
        self.with_prepared("batchShape", |p| {
            let r = batch_range(i, batch, p.slices());
            let (h, w) = p.grid_hw();
            Ok([r.len(), layout.channels(), h, w]
                .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
                .to_vec())
        })
    }

    /// Batch `i`'s network input, `[n, channels, h, w]` flat, for an engine in another worker
    /// whose network takes `channels` input channels.
    #[wasm_bindgen(js_name = batchInput)]
    pub fn batch_input(&self, i: usize, channels: usize) -> Result<Float32Array, JsError> {
        let batch = self.opts.batch_slices.max(1);
        let layout = Layout::from_channels(channels).map_err(js)?;
        self.with_prepared("batchInput", |p| {
            let (x, _) = p.slice_batch(batch_range(i, batch, p.slices()), layout)?;
            Ok(Float32Array::from(x.as_slice()))
        })
    }

    /// Store batch `i`'s probabilities `[n, h, w]` computed by another worker's engine.
    #[wasm_bindgen(js_name = acceptBatch)]
    pub fn accept_batch(&self, i: usize, probs: &[f32]) -> Result<(), JsError> {
        let batch = self.opts.batch_slices.max(1);
        self.with_prepared("acceptBatch", |p| {
            let r = batch_range(i, batch, p.slices());
            p.accept_probs(r, probs)
        })
    }

    /// The network on batch `i` with this worker's engine; resolves once its probabilities are
    /// stored.
    #[wasm_bindgen(js_name = runBatch)]
    pub fn run_batch(&self, engine: &Engine, i: usize) -> Result<Promise, JsError> {
        let batch = self.opts.batch_slices.max(1);
        let layout = engine.model.layout().map_err(js)?;
        let (range, x, shape) = self.with_prepared("runBatch", |p| {
            let range = batch_range(i, batch, p.slices());
            let (x, shape) = p.slice_batch(range.clone(), layout)?;
            Ok((range, x, shape))
        })?;
        let probs = pipeline::network_probs(&engine.model, x, shape, &engine.device);
        let state = Rc::clone(&self.state);
        Ok(future_to_promise(async move {
            let values = read_probs(probs).await.map_err(js)?;
            match &mut *state.borrow_mut() {
                State::Prepared(p) => p.accept_probs(range, &values).map_err(js)?,
                _ => return Err(order_error("runBatch").into()),
            }
            Ok(JsValue::UNDEFINED)
        }))
    }

    /// The result, once the finish stage ran; the job is then spent.
    #[wasm_bindgen(js_name = takeOutput)]
    pub fn take_output(&self) -> Result<Output, JsError> {
        let mut state = self.state.borrow_mut();
        match std::mem::replace(&mut *state, State::Empty) {
            State::Finished(seg, review) => Ok(Output {
                seg: *seg,
                review: Some(*review),
            }),
            other => {
                *state = other;
                Err(order_error("takeOutput"))
            }
        }
    }
}

/// Slices of batch `i` (empty past the end: [`Prepared::slice_batch`] then refuses it).
fn batch_range(i: usize, batch: usize, slices: usize) -> std::ops::Range<usize> {
    let start = i.saturating_mul(batch);
    start..start.saturating_add(batch).min(slices)
}

/// The DICOM series among dropped files, as JSON (`[{uid, number, description, modality, images,
/// rows, cols}]`), so the page can offer a choice before reading one.
#[wasm_bindgen(js_name = listSeries)]
pub fn list_series(names: Vec<String>, buffers: js_sys::Array) -> Result<String, JsError> {
    let files = named_buffers(names, &buffers);
    let list = crate::io::list_series(files).map_err(js)?;
    serde_json::to_string(&list)
        .map_err(|e| JsError::new(&format!("the series list could not be encoded: {e}")))
}

/// `(name, bytes)` pairs from parallel arrays of names and `ArrayBuffer`s / `Uint8Array`s.
fn named_buffers(names: Vec<String>, buffers: &js_sys::Array) -> Vec<(String, Vec<u8>)> {
    names
        .into_iter()
        .zip(buffers.iter().map(|b| Uint8Array::new(&b).to_vec()))
        .collect()
}

/// What a finished job hands to the page.
#[wasm_bindgen]
pub struct Output {
    seg: Segmentation,
    /// Until the page takes it for the reader's review ([`Output::take_review`]).
    review: Option<Review>,
}

#[wasm_bindgen]
impl Output {
    /// The mask as `.nii.gz` bytes in the input's voxel grid: what `ichnet segment -o` writes.
    #[wasm_bindgen(js_name = maskNifti)]
    pub fn mask_nifti(&self) -> Uint8Array {
        Uint8Array::from(self.seg.mask_nifti_gz.as_slice())
    }

    /// The mask as a binary DICOM SEG of the source series (`segment --seg-out`); empty for a
    /// NIfTI input.
    #[wasm_bindgen(js_name = maskSeg)]
    pub fn mask_seg(&self) -> Uint8Array {
        Uint8Array::from(self.seg.mask_seg_dcm.as_deref().unwrap_or(&[]))
    }

    /// The review of this result (edits measured by the core, sign-off); once.
    #[wasm_bindgen(js_name = takeReview)]
    pub fn take_review(&mut self) -> Result<ReviewJs, JsError> {
        self.review
            .take()
            .map(|inner| ReviewJs { inner })
            .ok_or_else(|| order_error("takeReview"))
    }

    /// The report, as `ichnet segment --json` prints it.
    #[wasm_bindgen(js_name = reportJson)]
    pub fn report_json(&self) -> Result<String, JsError> {
        serde_json::to_string(&self.seg)
            .map_err(|e| JsError::new(&format!("the report could not be encoded: {e}")))
    }
}

// ---- the reader's review ------------------------------------------------------------------------

/// A result under review ([`Review`]): masks cross as `Uint8Array`s in the input file's voxel
/// order (`i` fastest), the order the page's viewer holds its drawing in once mapped back from
/// its display grid; every number comes from the core's [`crate::metrics::measure`].
#[wasm_bindgen(js_name = Review)]
pub struct ReviewJs {
    inner: Review,
}

#[wasm_bindgen(js_class = Review)]
impl ReviewJs {
    /// The model's mask in file order (0/1): the viewer's starting drawing.
    #[wasm_bindgen(js_name = modelMask)]
    pub fn model_mask(&self) -> Result<Uint8Array, JsError> {
        Ok(Uint8Array::from(
            self.inner.model_file_order().map_err(js)?.as_slice(),
        ))
    }

    /// The scan as `.nii.gz` on its own grid, for inputs the viewer cannot read itself.
    #[wasm_bindgen(js_name = scanNifti)]
    pub fn scan_nifti(&self) -> Result<Uint8Array, JsError> {
        Ok(Uint8Array::from(
            self.inner.scan_nifti_gz().map_err(js)?.as_slice(),
        ))
    }

    /// Measure an edited mask (file order); with `reader` and `signed_at` (ISO 8601), sign it.
    pub fn review(
        &self,
        mask: &[u8],
        reader: Option<String>,
        signed_at: Option<String>,
    ) -> Result<ReviewResult, JsError> {
        let sign = match (reader, signed_at) {
            (Some(r), Some(t)) => Some(SignOff::new(&r, &t).map_err(js)?),
            (None, None) => None,
            _ => {
                return Err(JsError::new(
                    "internal: a sign-off needs a reader and a time",
                ));
            }
        };
        let inner = self.inner.review(mask, sign.as_ref()).map_err(js)?;
        Ok(ReviewResult { inner })
    }
}

/// A measured (and perhaps signed) mask.
#[wasm_bindgen]
pub struct ReviewResult {
    inner: Reviewed,
}

#[wasm_bindgen]
impl ReviewResult {
    /// The report fields that change with the mask, plus `review` (model vs final, sign-off).
    #[wasm_bindgen(js_name = reportJson)]
    pub fn report_json(&self) -> Result<String, JsError> {
        serde_json::to_string(&self.inner)
            .map_err(|e| JsError::new(&format!("the review could not be encoded: {e}")))
    }

    /// The mask as `.nii.gz` in the input's voxel grid.
    #[wasm_bindgen(js_name = maskNifti)]
    pub fn mask_nifti(&self) -> Uint8Array {
        Uint8Array::from(self.inner.mask_nifti_gz.as_slice())
    }
}

// ---- follow-up comparison -----------------------------------------------------------------------

/// Compare a follow-up with its baseline, both results under review: register the follow-up's
/// scan to the baseline's and measure each mask on its own grid ([`crate::review::compare`]).
/// A mask (file order, 0/1) is the reader's current one; none means the model's. `options` is
/// JSON, `{"similarity": "mi" | "ncc"}` as `ichnet compare --similarity` (empty: defaults).
#[wasm_bindgen(js_name = compare)]
pub fn compare_js(
    baseline: &ReviewJs,
    baseline_mask: Option<Vec<u8>>,
    followup: &ReviewJs,
    followup_mask: Option<Vec<u8>>,
    options: &str,
) -> Result<ComparisonJs, JsError> {
    let cfg = crate::registration::compare::config_from_json(options).map_err(js)?;
    let inner = crate::review::compare(
        (&baseline.inner, baseline_mask.as_deref()),
        (&followup.inner, followup_mask.as_deref()),
        &cfg,
    )
    .map_err(js)?;
    Ok(ComparisonJs { inner })
}

/// Refuse bad comparison options (see [`compare_js`]) before any work, with the core's sentence.
#[wasm_bindgen(js_name = checkCompareOptions)]
pub fn check_compare_options(options: &str) -> Result<(), JsError> {
    crate::registration::compare::config_from_json(options)
        .map(|_| ())
        .map_err(js)
}

/// A comparison ([`Compared`]): its report, and what the page's views need.
#[wasm_bindgen(js_name = Comparison)]
pub struct ComparisonJs {
    inner: Compared,
}

#[wasm_bindgen(js_class = Comparison)]
impl ComparisonJs {
    /// `{ comparison, masks }`: `comparison` exactly as `ichnet compare --json` prints it,
    /// `masks` whose mask each scan's figures are (`"model"` or `"reader"`).
    #[wasm_bindgen(js_name = reportJson)]
    pub fn report_json(&self) -> Result<String, JsError> {
        serde_json::to_string(&self.inner)
            .map_err(|e| JsError::new(&format!("the comparison could not be encoded: {e}")))
    }

    /// The follow-up's mask on the baseline's grid (display only), baseline file order, 0/1.
    #[wasm_bindgen(js_name = followupInBaseline)]
    pub fn followup_in_baseline(&self) -> Uint8Array {
        Uint8Array::from(self.inner.followup_in_baseline.as_slice())
    }

    /// The same as `.nii.gz` on the baseline's grid (`followup_mask_in_baseline.nii.gz`).
    #[wasm_bindgen(js_name = followupInBaselineNifti)]
    pub fn followup_in_baseline_nifti(&self) -> Uint8Array {
        Uint8Array::from(self.inner.followup_in_baseline_nifti_gz.as_slice())
    }

    /// Baseline world → follow-up world (RAS+ mm), a 4×4 affine row by row (16 numbers).
    #[wasm_bindgen(js_name = baselineToFollowup)]
    pub fn baseline_to_followup(&self) -> Vec<f64> {
        self.inner.baseline_to_followup.concat()
    }

    /// Follow-up world → baseline world, as [`ComparisonJs::baseline_to_followup`].
    #[wasm_bindgen(js_name = followupToBaseline)]
    pub fn followup_to_baseline(&self) -> Vec<f64> {
        self.inner.followup_to_baseline.concat()
    }
}
