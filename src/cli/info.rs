//! `ichnet info`: what the reader makes of a scan, for people (text) or machines (`--json`).
//!
//! Takes `.nii`/`.nii.gz`, either half of an Analyze-style pair (`.hdr`/`.img`, each possibly
//! gzipped: the other half is looked for beside it, so a user never names two files), or a DICOM
//! series: a folder (read recursively), several files, or a `.zip` of a study.

use std::fs;
use std::path::{Path, PathBuf};

use ichnet::io::{self, Scan, ScanInfo};
use ichnet::{Error, Result};

/// Print a scan's header, geometry, HU range and warnings.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// The scan: .nii, .nii.gz, .hdr/.img (the other half is found beside it), or a DICOM
    /// series as a folder, files or a .zip.
    #[arg(required = true, num_args = 1..)]
    pub scan: Vec<PathBuf>,
    /// The DICOM series to read when the input holds several (Series Instance UID or number).
    #[arg(long, value_name = "UID")]
    pub series: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Read the scan and print what it holds.
pub fn run(args: &InfoArgs) -> Result<()> {
    let scan = read_inputs(&args.scan, args.series.as_deref())?;
    if args.json {
        let out = serde_json::json!({
            "file": shown(&args.scan),
            "info": scan.info,
            "warnings": scan.warnings,
        });
        let text = serde_json::to_string_pretty(&out)
            .map_err(|e| Error::InvalidInput(format!("the report could not be written: {e}")))?;
        println!("{text}");
    } else {
        print!(
            "{}",
            text_report(&shown(&args.scan), &scan.info, &scan.warnings)
        );
    }
    Ok(())
}

/// The inputs as one line for reports.
pub fn shown(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Read a scan from what the user named: one NIfTI file (or half of a pair), or DICOM folders,
/// files and zips, all through [`io::read_files`] so the page and the CLI accept the same inputs.
pub fn read_inputs(paths: &[PathBuf], series: Option<&str>) -> Result<Scan> {
    if let [one] = paths
        && one.is_file()
        && pair_role(one).is_some()
    {
        return read_scan(one);
    }
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{}: no files were found there",
            shown(paths)
        )));
    }
    io::read_files(
        files,
        &io::ReadOptions {
            series: series.map(str::to_string),
        },
    )
}

/// Every file under `path` (recursively, in name order) as `(name, bytes)`.
fn collect(path: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            collect(&e, out)?;
        }
        Ok(())
    } else {
        out.push((path.display().to_string(), read(path)?));
        Ok(())
    }
}

/// Read a scan from a path, pairing `.hdr` with `.img` (or the reverse) by name.
pub fn read_scan(path: &Path) -> Result<Scan> {
    let name = path.display().to_string();
    let result = match pair_role(path) {
        Some(PairRole::Header) => {
            let img_path = partner(path, "img")?;
            Scan::from_pair(&read(path)?, &read(&img_path)?)
        }
        Some(PairRole::Image) => {
            let hdr_path = partner(path, "hdr")?;
            Scan::from_pair(&read(&hdr_path)?, &read(path)?)
        }
        None => Scan::from_bytes(&read(path)?),
    };
    result.map_err(|e| io::in_file(&name, e))
}

enum PairRole {
    Header,
    Image,
}

fn pair_role(path: &Path) -> Option<PairRole> {
    let lower = path.file_name()?.to_string_lossy().to_lowercase();
    let base = lower.strip_suffix(".gz").unwrap_or(&lower);
    if base.ends_with(".hdr") {
        Some(PairRole::Header)
    } else if base.ends_with(".img") {
        Some(PairRole::Image)
    } else {
        None
    }
}

/// The other half of a pair: same stem, extension `ext`, plain or `.gz` (either case).
fn partner(path: &Path, ext: &str) -> Result<PathBuf> {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = file
        .strip_suffix(".gz")
        .or_else(|| file.strip_suffix(".GZ"))
        .unwrap_or(&file);
    let stem = &base[..base.len().saturating_sub(4)];
    let candidates: Vec<PathBuf> = [ext.to_string(), ext.to_uppercase()]
        .iter()
        .flat_map(|e| [format!("{stem}.{e}"), format!("{stem}.{e}.gz")])
        .map(|f| path.with_file_name(f))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "{}: a .hdr/.img pair needs both halves, but no {stem}.{ext} or {stem}.{ext}.gz \
                 was found beside it",
                path.display()
            ))
        })
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io(path, e))
}

/// The people-readable report.
fn text_report(path: &str, i: &ScanInfo, warnings: &[String]) -> String {
    let join = |v: &[String]| v.join(" × ");
    let dims: Vec<String> = i.dims.iter().map(|d| d.to_string()).collect();
    let pixdim: Vec<String> = i.pixdim.iter().map(|d| format!("{d:.4}")).collect();
    let stack_sp: Vec<String> = i.stack_spacing.iter().map(|d| format!("{d:.4}")).collect();
    let [nz, ny, nx] = i.stack_dims;
    let voxels = (nz * ny * nx) as f64;
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<14}{v}\n"));
    line("file", path.to_string());
    if let Some(d) = &i.dicom {
        line(
            "series",
            format!(
                "{}\"{}\", {} images, {}{}",
                d.series_number
                    .map(|n| format!("#{n} "))
                    .unwrap_or_default(),
                d.series_description,
                d.images,
                d.transfer_syntax,
                if d.resampled {
                    ", resampled to equal steps"
                } else {
                    ""
                }
            ),
        );
        line("series UID", d.series_uid.clone());
    }
    line(
        "format",
        format!(
            "{}{}, {}-endian",
            i.format,
            if i.gzipped { " (gzipped)" } else { "" },
            if i.big_endian { "big" } else { "little" }
        ),
    );
    line(
        "datatype",
        format!(
            "{}, scl_slope {}, scl_inter {}",
            i.datatype, i.scl_slope, i.scl_inter
        ),
    );
    line("dims", join(&dims));
    line("pixdim", format!("{} mm", join(&pixdim)));
    line(
        "affine from",
        format!(
            "{} (qform_code {}, sform_code {})",
            i.affine_source.name(),
            i.qform_code,
            i.sform_code
        ),
    );
    for (r, row) in i.affine.iter().take(3).enumerate() {
        let label = if r == 0 { "affine" } else { "" };
        line(
            label,
            format!(
                "{:>10.4} {:>10.4} {:>10.4} {:>10.4}",
                row[0], row[1], row[2], row[3]
            ),
        );
    }
    line("orientation", i.axis_codes.clone());
    line(
        "stack (z,y,x)",
        format!("{nz} × {ny} × {nx} voxels of {} mm", join(&stack_sp)),
    );
    line(
        "voxel volume",
        format!("{:.6} mL (scan {:.1} mL)", i.voxel_ml, i.voxel_ml * voxels),
    );
    line("HU range", format!("{} .. {}", i.hu_min, i.hu_max));
    for w in warnings {
        line("warning", w.clone());
    }
    s
}
