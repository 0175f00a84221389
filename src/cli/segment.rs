//! `ichnet segment`: the haemorrhage mask of one scan, its volume and ABC/2.

use std::fs;
use std::path::{Path, PathBuf};

use burn::prelude::*;

use ichnet::crf::CrfConfig;
use ichnet::model::{self, IchNet};
use ichnet::pipeline::{self, SegmentOptions};
use ichnet::{Error, Result};

/// Segment intracerebral haemorrhage in a head CT.
#[derive(clap::Args, Debug)]
pub struct SegmentArgs {
    /// The scan: .nii, .nii.gz, .hdr/.img, or a DICOM series as a folder, files or a .zip.
    #[arg(required = true, num_args = 1..)]
    pub scan: Vec<PathBuf>,
    /// The DICOM series to read when the input holds several (Series Instance UID or number).
    #[arg(long, value_name = "UID")]
    pub series: Option<String>,
    /// Where to write the mask (.nii.gz, on the scan's own voxel grid).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Also write the mask as a binary DICOM Segmentation of the source series (DICOM input only).
    #[arg(long, value_name = "FILE.dcm")]
    pub seg_out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub how: SegmentFlags,
}

/// How a scan is segmented: the flags `segment` and `compare` share (one definition, so the
/// two commands cannot drift apart, as `compare` once lacked `--assume-hu`).
#[derive(clap::Args, Debug)]
pub struct SegmentFlags {
    /// Skip the 3D CRF refinement.
    #[arg(long)]
    pub no_crf: bool,
    /// Weights file (.bpk) instead of the bundled weights.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Probability threshold of the mask.
    #[arg(long, default_value_t = pipeline::DEFAULT_THRESHOLD)]
    pub threshold: f32,
    /// Run the network on the GPU (wgpu) instead of the CPU (flex).
    #[arg(long)]
    pub gpu: bool,
    /// CRF parameters as a JSON object (fields of `CrfConfig`; missing ones keep the defaults).
    #[arg(long, value_name = "FILE.json")]
    pub crf_config: Option<PathBuf>,
    /// Take the voxel values as Hounsfield units even when they do not look like HU (a render,
    /// a rescaled export). Without it such scans are refused: their mL would be unreliable.
    #[arg(long)]
    pub assume_hu: bool,
}

impl SegmentFlags {
    /// The pipeline's options these flags ask for (the CRF file read and checked).
    pub fn options(&self) -> Result<SegmentOptions> {
        Ok(SegmentOptions {
            threshold: self.threshold,
            crf: if self.no_crf {
                None
            } else {
                Some(crf_config(self.crf_config.as_deref())?)
            },
            assume_hu: self.assume_hu,
            ..SegmentOptions::default()
        })
    }

    /// The device and the network on it.
    pub fn model(&self) -> Result<(Device, IchNet)> {
        let device = device(self.gpu);
        let net = load_model(self.weights.as_deref(), &device)?;
        Ok((device, net))
    }
}

/// The device the CLI runs the network on.
pub fn device(gpu: bool) -> Device {
    if gpu {
        Device::wgpu(Default::default())
    } else {
        Device::flex()
    }
}

/// The CRF parameters of `path`, or the defaults.
pub fn crf_config(path: Option<&Path>) -> Result<CrfConfig> {
    match path {
        None => Ok(CrfConfig::default()),
        Some(p) => {
            let text = fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            CrfConfig::from_json(&text)
                .map_err(|e| ichnet::io::in_file(&p.display().to_string(), e))
        }
    }
}

/// Load `weights` or the bundled ones.
pub fn load_model(weights: Option<&Path>, device: &Device) -> Result<IchNet> {
    let bytes = match weights {
        Some(p) => fs::read(p).map_err(|e| Error::io(p, e))?,
        None => model::BUNDLED_WEIGHTS.to_vec(),
    };
    model::load(bytes, device)
}

/// Run `ichnet segment`.
pub fn run(a: &SegmentArgs) -> Result<()> {
    let (device, net) = a.how.model()?;
    let t_read = std::time::Instant::now();
    let scan = super::info::read_inputs(&a.scan, a.series.as_deref())?;
    let read_ms = t_read.elapsed().as_secs_f64() * 1000.0;
    if a.seg_out.is_some() && !scan.is_dicom() {
        return Err(Error::InvalidInput(
            "--seg-out writes a DICOM Segmentation, which needs a DICOM input; this scan is NIfTI"
                .into(),
        ));
    }
    let opts = SegmentOptions {
        dicom_seg: a.seg_out.is_some(),
        ..a.how.options()?
    };
    let quiet = a.json;
    let seg = pipeline::segment_scan(scan, read_ms, &net, &device, &opts, &mut |p| {
        if !quiet && p.stage == ichnet::pipeline::stage::NETWORK && p.done == p.total {
            eprintln!("network: {} slices done", p.total);
        }
        true
    })
    .map_err(|e| ichnet::io::in_file(&super::info::shown(&a.scan), e))?;

    fs::write(&a.out, &seg.mask_nifti_gz).map_err(|e| Error::io(&a.out, e))?;
    if let (Some(path), Some(bytes)) = (&a.seg_out, &seg.mask_seg_dcm) {
        fs::write(path, bytes).map_err(|e| Error::io(path, e))?;
    }
    if a.json {
        let text = serde_json::to_string_pretty(&seg)
            .map_err(|e| Error::InvalidInput(format!("JSON report: {e}")))?;
        println!("{text}");
    } else {
        for w in &seg.warnings {
            eprintln!("warning: {w}");
        }
        if !seg.orientation_known {
            eprintln!("warning: the scan does not say which side is left, so no side is reported");
        }
        println!("haemorrhage volume: {:.2} mL", seg.volume_ml);
        println!(
            "ABC/2 of the largest haematoma: {:.2} mL (A {:.1} mm, B {:.1} mm, C {:.1} mm: {} \
             of its {} slices by Kothari's weighting)",
            seg.abc2.ml,
            seg.abc2.a_mm,
            seg.abc2.b_mm,
            seg.abc2.c_mm,
            seg.abc2.weighted_slices,
            seg.abc2.slices
        );
        print_haematomas(&seg.haematomas);
        println!("brain volume: {:.0} mL", seg.brain_ml);
        println!(
            "CRF: {}; mask written to {}",
            if seg.crf { "on" } else { "off" },
            a.out.display()
        );
        if let Some(path) = &a.seg_out {
            println!("DICOM SEG written to {}", path.display());
        }
    }
    Ok(())
}

/// Most haematomas listed in the table (the JSON report has them all).
const TABLE_ROWS: usize = 10;

/// The per-haematoma table: one line each, largest first.
fn print_haematomas(list: &[ichnet::metrics::Haematoma]) {
    if list.is_empty() {
        return;
    }
    println!(
        "{:>3}  {:>8}  {:<8}  {:>9}  {:>8}  {:>24}",
        "#", "mL", "side", "slices", "ABC/2 mL", "A × B × C mm"
    );
    for h in list.iter().take(TABLE_ROWS) {
        println!(
            "{:>3}  {:>8.2}  {:<8}  {:>9}  {:>8.2}  {:>24}",
            h.id,
            h.volume_ml,
            h.side.name(),
            format!("{}–{}", h.slice_range[0] + 1, h.slice_range[1] + 1),
            h.abc2.ml,
            format!(
                "{:.1} × {:.1} × {:.1}",
                h.abc2.a_mm, h.abc2.b_mm, h.abc2.c_mm
            ),
        );
    }
    if list.len() > TABLE_ROWS {
        let rest: f64 = list[TABLE_ROWS..].iter().map(|h| h.volume_ml).sum();
        println!(
            "     … {} smaller ones, {rest:.2} mL together (all in --json)",
            list.len() - TABLE_ROWS
        );
    }
}
