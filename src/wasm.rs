//! The browser face of the core: thin `#[wasm_bindgen]` glue called by `www/worker.js`.
//!
//! Nothing here decides anything: it converts between JS and Rust types, drives the same
//! [`pipeline::Prepared`] stages as the CLI, and turns [`crate::Error`] into a JS `Error` with the
//! same text. The work is split into one call per stage (read, brain mask, each network batch,
//! CRF, finish) so the worker can post progress between calls and the page can cancel by
//! terminating the worker; nothing calls back from Rust into JS.
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
use crate::crf::CrfConfig;
use crate::io::Scan;
use crate::model::{self, IchNet};
use crate::pipeline::{self, Prepared, SegmentOptions, Segmentation};

/// The same sentence the CLI prints, as a JS `Error`.
fn js(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

/// Install the panic hook once, so a bug shows its Rust message in the console instead of
/// "unreachable executed".
#[wasm_bindgen]
pub fn start() {
    console_error_panic_hook::set_once();
}

// ---- engines ------------------------------------------------------------------------------------

thread_local! {
    /// The WebGPU device of this module instance, once initialised (a second init errors).
    static GPU: RefCell<Option<Device>> = const { RefCell::new(None) };
}

/// Set by wgpu's device-lost callback; the worker then redoes the work on the CPU.
static GPU_LOST: AtomicBool = AtomicBool::new(false);

/// The network, loaded on one device.
#[wasm_bindgen]
pub struct Engine {
    model: IchNet,
    device: Device,
    gpu: bool,
}

#[wasm_bindgen]
impl Engine {
    /// The network on the pure-Rust CPU backend (flex): works everywhere, single-threaded.
    pub fn cpu(weights: Vec<u8>) -> Result<Engine, JsError> {
        let device = Device::flex();
        let model = model::load(weights, &device).map_err(js)?;
        Ok(Engine {
            model,
            device,
            gpu: false,
        })
    }

    /// The network on WebGPU. Fails (for the worker to fall back to [`Engine::cpu`]) when the
    /// browser gives no adapter or device.
    pub async fn webgpu(weights: Vec<u8>) -> Result<Engine, JsError> {
        let device = gpu_device().await.map_err(js)?;
        let model = model::load(weights, &device).map_err(js)?;
        Ok(Engine {
            model,
            device,
            gpu: true,
        })
    }

    /// Whether this engine runs on WebGPU.
    #[wasm_bindgen(js_name = isGpu)]
    pub fn is_gpu(&self) -> bool {
        self.gpu
    }

    /// Whether the browser has reported the WebGPU device lost since it was created.
    #[wasm_bindgen(js_name = gpuLost)]
    pub fn gpu_lost() -> bool {
        GPU_LOST.load(Ordering::Relaxed)
    }
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

// ---- one scan -----------------------------------------------------------------------------------

/// Where a job is: read, then prepared (brain mask + network grid), then finished.
enum Stage {
    Read(Box<Scan>),
    Prepared(Box<Prepared>),
    /// Transient, while a stage owns the value.
    Empty,
}

/// One scan on its way through the pipeline, owned by the worker between stage calls. Shared
/// with the network's pending readback (`Rc`), which never holds a borrow across an `await`.
#[wasm_bindgen]
pub struct Job {
    stage: Rc<RefCell<Stage>>,
    batch: usize,
}

fn order_error(what: &str) -> JsError {
    JsError::new(&format!("internal: {what} was called out of order"))
}

#[wasm_bindgen]
impl Job {
    /// Read a `.nii`/`.nii.gz` (gzip detected by content).
    pub fn read(bytes: &[u8]) -> Result<Job, JsError> {
        Ok(Job::new(Scan::from_bytes(bytes).map_err(js)?))
    }

    /// Read a `.hdr` + `.img` pair.
    #[wasm_bindgen(js_name = readPair)]
    pub fn read_pair(hdr: &[u8], img: &[u8]) -> Result<Job, JsError> {
        Ok(Job::new(Scan::from_pair(hdr, img).map_err(js)?))
    }

    /// Read what the user dropped: files of a DICOM folder, a `.zip` of a study, or one NIfTI
    /// (routed by content, as `ichnet info DIR_OR_FILES…` does). `series` picks a Series Instance
    /// UID when the files hold several (see [`list_series`]).
    #[wasm_bindgen(js_name = readFiles)]
    pub fn read_files(
        names: Vec<String>,
        buffers: js_sys::Array,
        series: Option<String>,
    ) -> Result<Job, JsError> {
        let files = named_buffers(names, &buffers);
        let opts = crate::io::ReadOptions { series };
        Ok(Job::new(crate::io::read_files(files, &opts).map_err(js)?))
    }

    fn new(scan: Scan) -> Job {
        Job {
            stage: Rc::new(RefCell::new(Stage::Read(Box::new(scan)))),
            batch: SegmentOptions::default().batch_slices.max(1),
        }
    }

    fn with_scan<T>(&self, f: impl FnOnce(&Scan) -> T) -> Result<T, JsError> {
        match &*self.stage.borrow() {
            Stage::Read(s) => Ok(f(s)),
            Stage::Prepared(p) => Ok(f(p.scan())),
            Stage::Empty => Err(order_error("a read of the scan")),
        }
    }

    fn with_prepared<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Prepared) -> crate::Result<T>,
    ) -> Result<T, JsError> {
        match &mut *self.stage.borrow_mut() {
            Stage::Prepared(p) => f(p).map_err(js),
            _ => Err(order_error(what)),
        }
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

    /// Stage: CT brain extraction and placement of the network grid.
    #[wasm_bindgen(js_name = brainMask)]
    pub fn brain_mask(&self) -> Result<(), JsError> {
        let mut stage = self.stage.borrow_mut();
        let Stage::Read(scan) = std::mem::replace(&mut *stage, Stage::Empty) else {
            return Err(order_error("brainMask"));
        };
        *stage = Stage::Prepared(Box::new(Prepared::from_scan(*scan).map_err(js)?));
        Ok(())
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

    /// Number of network calls (batches of slices) for [`Job::run_batch`].
    #[wasm_bindgen(js_name = batchCount)]
    pub fn batch_count(&self) -> Result<usize, JsError> {
        self.with_prepared("batchCount", |p| Ok(p.slices().div_ceil(self.batch)))
    }

    /// Stage: the network on batch `i`; resolves once its probabilities are stored.
    #[wasm_bindgen(js_name = runBatch)]
    pub fn run_batch(&self, engine: &Engine, i: usize) -> Result<Promise, JsError> {
        let batch = self.batch;
        let (range, x, shape) = self.with_prepared("runBatch", |p| {
            let start = i.saturating_mul(batch);
            let range = start..start.saturating_add(batch).min(p.slices());
            let (x, shape) = p.slice_batch(range.clone())?;
            Ok((range, x, shape))
        })?;
        let probs = pipeline::network_probs(&engine.model, x, shape, &engine.device);
        let stage = Rc::clone(&self.stage);
        Ok(future_to_promise(async move {
            let data = probs.into_data_async().await.map_err(|e| {
                JsError::new(
                    &Error::Backend(format!("reading the network's output failed: {e}"))
                        .to_string(),
                )
            })?;
            let values = data.try_into_vec::<f32>().map_err(|e| {
                JsError::new(&format!(
                    "the network's output is not f32 probabilities: {e:?}"
                ))
            })?;
            match &mut *stage.borrow_mut() {
                Stage::Prepared(p) => p.accept_probs(range, &values).map_err(js)?,
                _ => return Err(order_error("runBatch").into()),
            }
            Ok(JsValue::UNDEFINED)
        }))
    }

    /// Stage: the 3D dense CRF with the CLI's default configuration.
    pub fn crf(&self) -> Result<(), JsError> {
        self.with_prepared("crf", |p| {
            p.apply_crf(&CrfConfig::default(), &mut |_, _| true)
        })
    }

    /// Stage: threshold, clean up, measure, and write the mask in the input's grid.
    pub fn finish(&self) -> Result<Output, JsError> {
        self.with_prepared("finish", |p| p.finish(pipeline::DEFAULT_THRESHOLD))
            .map(|seg| Output { seg })
    }
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

    /// The mask in stack order (0/1), for the viewer's overlay.
    pub fn mask(&self) -> Uint8Array {
        match self.seg.mask.as_slice() {
            Some(v) => Uint8Array::from(v),
            None => Uint8Array::from(self.seg.mask.iter().copied().collect::<Vec<_>>().as_slice()),
        }
    }

    /// The report, as `ichnet segment --json` prints it.
    #[wasm_bindgen(js_name = reportJson)]
    pub fn report_json(&self) -> Result<String, JsError> {
        serde_json::to_string(&self.seg)
            .map_err(|e| JsError::new(&format!("the report could not be encoded: {e}")))
    }
}
