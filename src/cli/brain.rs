//! `ichnet brain`: the brain mask of a scan, written in the scan's own grid, and its volume.

use std::path::PathBuf;
use std::time::Instant;

use ichnet::preprocess::{
    Window, bounding_box, brain_mask, brain_volume_warning, preview::montage_png,
};
use ichnet::{Error, Result};

use super::info::{read_inputs, shown};

/// Extract the brain from a head CT: mask file, volume in mL.
#[derive(clap::Args, Debug)]
pub struct BrainArgs {
    /// The scan: .nii, .nii.gz, .hdr/.img (the other half is found beside it), or a DICOM
    /// series as a folder, files or a .zip.
    #[arg(required = true, num_args = 1..)]
    pub scan: Vec<PathBuf>,
    /// The DICOM series to read when the input holds several (Series Instance UID or number).
    #[arg(long, value_name = "UID")]
    pub series: Option<String>,
    /// Where to write the mask (.nii.gz, same grid and affine as the scan).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Also write a PNG montage of axial slices with the mask outlined, for checking by eye.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Read, extract, write, report.
pub fn run(args: &BrainArgs) -> Result<()> {
    let t0 = Instant::now();
    let scan = read_inputs(&args.scan, args.series.as_deref())?;
    let t_read = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mask = brain_mask(&scan.stack)?;
    let t_mask = t1.elapsed().as_secs_f64();
    let voxels = mask.iter().filter(|&&v| v != 0).count();
    let ml = scan.stack.mask_ml(&mask);
    let bytes = scan.mask_nifti_gz(&mask)?;
    std::fs::write(&args.output, bytes).map_err(|e| Error::io(&args.output, e))?;
    if let Some(png) = &args.png {
        let (nz, _, nx) = scan.stack.dims();
        let slices: Vec<usize> = (1..=8).map(|k| k * nz / 9).collect();
        let scale = (256 / nx.max(1)).max(1);
        let img = montage_png(&scan.stack, Some(&mask), &slices, Window::BRAIN, 4, scale)?;
        std::fs::write(png, img).map_err(|e| Error::io(png, e))?;
    }
    let bbox = bounding_box(&mask);
    let mut warnings = scan.warnings.clone();
    if voxels == 0 {
        warnings.push(
            "no brain was found: the scan has no soft-tissue body between 0 and 100 HU large \
             enough to be a brain"
                .into(),
        );
    } else if let Some(w) = brain_volume_warning(ml) {
        warnings.push(w);
    }
    if args.json {
        let out = serde_json::json!({
            "scan": shown(&args.scan),
            "mask": args.output.display().to_string(),
            "brain_ml": ml,
            "voxels": voxels,
            "bounding_box_zyx": bbox,
            "seconds": { "read": t_read, "brain_mask": t_mask },
            "warnings": warnings,
        });
        let text = serde_json::to_string_pretty(&out)
            .map_err(|e| Error::InvalidInput(format!("the report could not be written: {e}")))?;
        println!("{text}");
    } else {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        println!("brain volume: {ml:.1} mL ({voxels} voxels)");
        println!("mask written to {}", args.output.display());
        println!("time: read {t_read:.3} s, brain mask {t_mask:.3} s");
    }
    Ok(())
}
