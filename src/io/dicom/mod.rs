//! DICOM series → [`Scan`]: our own series assembly on top of dicom-rs.
//!
//! dicom-rs parses the files and undoes the transfer syntax; no crate turns a folder of images into
//! a correct volume, so that part is here, in this order:
//!
//! 1. every file's header is read (pixels untouched); non-DICOM files and DICOM objects without an
//!    image are set aside and counted;
//! 2. frames (one per single-frame image, one per frame of an enhanced multi-frame image) are
//!    grouped by Series Instance UID and orientation; localizers and images whose normal is not
//!    closest to the patient's head–foot axis are dropped and counted;
//! 3. one group is chosen (the only one, or the caller's `series`); several without a choice is an
//!    error that lists them on one line;
//! 4. transfer syntax, modality, dimensions and pixel spacing are checked for the whole group, and
//!    the size of the volume is judged before anything voxel-sized is allocated;
//! 5. frames are sorted along the slice normal; the slice step comes from Image Position
//!    (Patient), never from Slice Thickness. Positions that drift in-plane (gantry tilt) give a
//!    sheared affine, kept as such. Unequal steps are resampled (linear, along the slice line) to
//!    the median step with a warning naming the gaps; a gap of a whole number of steps in an
//!    otherwise regular series is a missing slice and is refused;
//! 6. each frame is decoded and rescaled with its own slope/intercept to HU, straight into the
//!    canonical stack.
//!
//! Patient identity is read only to be copied into a DICOM SEG ([`seg`]); it never reaches
//! [`ScanInfo`], warnings or errors.

pub mod jpeg;
mod lengths;
mod parse;
mod pixels;
pub mod seg;

use std::collections::BTreeMap;

use ndarray::Array3;
use serde::Serialize;

use super::geometry::{self, Affine, AffineSource, Geometry, Reorient};
use super::{MAX_VOXELS, Scan, ScanInfo, not_hu_warning};
use crate::volume::Stack;
use crate::{Error, Result};
use parse::{Frame, Header, Identity, Parsed};

pub use parse::sniff;
pub use pixels::SUPPORTED as SUPPORTED_SYNTAXES;

/// What a DICOM series adds to [`ScanInfo`]: only what a reader needs to recognise the series.
#[derive(Debug, Clone, Serialize)]
pub struct DicomInfo {
    /// Series Description as stored ("" when absent).
    pub series_description: String,
    /// Series Number, when present.
    pub series_number: Option<i64>,
    /// Series Instance UID (what `--series` takes).
    pub series_uid: String,
    /// Transfer syntax of the images, by name.
    pub transfer_syntax: String,
    /// Images (frames) the volume was built from.
    pub images: usize,
    /// Whether the slices were resampled to an equal step.
    pub resampled: bool,
}

/// One series (and orientation) found among the files.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesSummary {
    /// Series Instance UID.
    pub uid: String,
    /// Series Number, when present.
    pub number: Option<i64>,
    /// Series Description ("" when absent).
    pub description: String,
    /// Modality ("CT", "MR", ...).
    pub modality: String,
    /// Images (frames) in the group.
    pub images: usize,
    /// Rows × columns of its first image.
    pub rows: u32,
    /// Columns of its first image.
    pub cols: u32,
}

impl std::fmt::Display for SeriesSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let num = self.number.map(|n| format!("#{n} ")).unwrap_or_default();
        write!(
            f,
            "{} ({num}\"{}\", {} series, {} images {}×{})",
            self.uid, self.description, self.modality, self.images, self.cols, self.rows
        )
    }
}

/// Where a SEG's frames come from: everything [`seg::write`] needs besides the mask.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub study_uid: String,
    pub series_uid: String,
    pub frame_of_reference: Option<String>,
    pub identity: Identity,
    pub rows: u32,
    pub cols: u32,
    /// Row direction, column direction (LPS unit vectors).
    pub iop: [f64; 6],
    /// Between rows, between columns (mm).
    pub pixel_spacing: [f64; 2],
    /// Distance between slice planes along the normal (mm).
    pub slice_step: f64,
    /// Image Position (Patient) of each slice of the volume (file order `k`).
    pub positions: Vec<[f64; 3]>,
    /// The source image of each slice (`None` where slices were resampled).
    pub slice_refs: Vec<Option<InstanceRef>>,
    /// Every source instance of the series (for the SEG's Referenced Series Sequence).
    pub instances: Vec<InstanceRef>,
}

/// One source image (or frame of a multi-frame image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstanceRef {
    pub sop_class: String,
    pub sop_instance: String,
    /// 1-based frame number within a multi-frame image.
    pub frame: Option<u32>,
}

/// Grouping key: series and orientation (rounded so that float noise does not split a series).
type GroupKey = (String, [i64; 6]);

/// Files read so far, sorted into usable frames and what was set aside.
struct Survey {
    headers: Vec<Header>,
    groups: BTreeMap<GroupKey, Vec<(usize, usize)>>,
    not_dicom: usize,
    no_image: usize,
    unreadable: Vec<String>,
    localizers: usize,
    not_axial: usize,
    no_position: usize,
}

fn survey(files: &[(String, Vec<u8>)]) -> Result<Survey> {
    let mut s = Survey {
        headers: Vec::new(),
        groups: BTreeMap::new(),
        not_dicom: 0,
        no_image: 0,
        unreadable: Vec::new(),
        localizers: 0,
        not_axial: 0,
        no_position: 0,
    };
    let mut first_error = None;
    for (i, (name, bytes)) in files.iter().enumerate() {
        match parse::header(i, bytes) {
            Ok(Parsed::Image(h)) => s.headers.push(*h),
            Ok(Parsed::NotDicom) => s.not_dicom += 1,
            Ok(Parsed::NoImage) => s.no_image += 1,
            Err(e) => {
                s.unreadable.push(name.clone());
                first_error.get_or_insert(super::in_file(name, e));
            }
        }
    }
    if s.headers.is_empty() {
        if let Some(e) = first_error {
            return Err(e);
        }
        return Err(Error::NotDicom(format!(
            "no DICOM image was found among {} file(s) ({} not DICOM, {} DICOM objects without \
             an image)",
            files.len(),
            s.not_dicom,
            s.no_image
        )));
    }
    for (hi, h) in s.headers.iter().enumerate() {
        if h.image_type.iter().any(|t| t == "LOCALIZER") {
            s.localizers += h.frames.len();
            continue;
        }
        for (fi, f) in h.frames.iter().enumerate() {
            let (Some(iop), Some(_), Some(_)) = (f.iop, f.pos, f.spacing) else {
                s.no_position += 1;
                continue;
            };
            let Some(n) = normal(&iop) else {
                s.no_position += 1;
                continue;
            };
            if n[2].abs() < n[0].abs().max(n[1].abs()) {
                s.not_axial += 1;
                continue;
            }
            let key = iop.map(|v| (v * 1000.0).round() as i64);
            s.groups
                .entry((h.series_uid.clone(), key))
                .or_default()
                .push((hi, fi));
        }
    }
    Ok(s)
}

impl Survey {
    fn summaries(&self) -> Vec<(GroupKey, SeriesSummary)> {
        let mut v: Vec<(GroupKey, SeriesSummary)> = self
            .groups
            .iter()
            .filter_map(|(k, frames)| {
                let h = self.headers.get(frames.first()?.0)?;
                Some((
                    k.clone(),
                    SeriesSummary {
                        uid: h.series_uid.clone(),
                        number: h.series_number,
                        description: h.series_description.clone(),
                        modality: h.modality.clone(),
                        images: frames.len(),
                        rows: h.rows,
                        cols: h.cols,
                    },
                ))
            })
            .collect();
        v.sort_by(|a, b| (a.1.number, &a.1.uid).cmp(&(b.1.number, &b.1.uid)));
        v
    }

    fn set_aside(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.not_dicom > 0 {
            w.push(format!(
                "{} file(s) that are not DICOM were ignored",
                self.not_dicom
            ));
        }
        if self.no_image > 0 {
            w.push(format!(
                "{} DICOM object(s) without an image (DICOMDIR, reports) were ignored",
                self.no_image
            ));
        }
        if !self.unreadable.is_empty() {
            w.push(format!(
                "{} DICOM file(s) could not be parsed and were ignored: {}",
                self.unreadable.len(),
                self.unreadable.join(", ")
            ));
        }
        if self.localizers > 0 {
            w.push(format!(
                "{} localizer image(s) were left out",
                self.localizers
            ));
        }
        if self.not_axial > 0 {
            w.push(format!(
                "{} image(s) that are not axial (sagittal or coronal planes) were left out",
                self.not_axial
            ));
        }
        if self.no_position > 0 {
            w.push(format!(
                "{} image(s) without a position, orientation or pixel spacing were left out",
                self.no_position
            ));
        }
        w
    }
}

/// The series (one per series and orientation) the files hold, for a page to offer a choice.
pub fn list_series(files: &[(String, Vec<u8>)]) -> Result<Vec<SeriesSummary>> {
    Ok(survey(files)?
        .summaries()
        .into_iter()
        .map(|(_, s)| s)
        .collect())
}

/// Read one CT series from a set of files (a folder's content). `series` picks a Series Instance
/// UID (or a Series Number) when the files hold more than one.
pub fn read_series(files: &[(String, Vec<u8>)], series: Option<&str>) -> Result<Scan> {
    let s = survey(files)?;
    let mut warnings = s.set_aside();
    let summaries = s.summaries();
    let key = choose(&summaries, series, &s, &mut warnings)?;
    let members = s.groups.get(&key).cloned().unwrap_or_default();
    let frames: Vec<(&Header, &Frame)> = members
        .iter()
        .filter_map(|&(hi, fi)| {
            let h = s.headers.get(hi)?;
            Some((h, h.frames.get(fi)?))
        })
        .collect();
    build(files, &frames, warnings)
}

fn choose(
    summaries: &[(GroupKey, SeriesSummary)],
    series: Option<&str>,
    s: &Survey,
    warnings: &mut Vec<String>,
) -> Result<GroupKey> {
    if summaries.is_empty() {
        let aside = s.set_aside().join("; ");
        return Err(Error::NotDicom(format!(
            "no axial image series was found ({aside})"
        )));
    }
    let line = |v: &[&(GroupKey, SeriesSummary)]| {
        v.iter()
            .map(|(_, s)| s.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut picked: Vec<&(GroupKey, SeriesSummary)> = match series {
        Some(want) => {
            let want = want.trim();
            let hits: Vec<_> = summaries
                .iter()
                .filter(|(_, s)| s.uid == want || s.number.is_some_and(|n| n.to_string() == want))
                .collect();
            if hits.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "no series {want} among the files; found: {}",
                    line(&summaries.iter().collect::<Vec<_>>())
                )));
            }
            hits
        }
        None => summaries.iter().collect(),
    };
    // A series seen in two orientations (rare): its largest stack is the volume.
    let distinct: std::collections::BTreeSet<&str> =
        picked.iter().map(|(_, s)| s.uid.as_str()).collect();
    if distinct.len() > 1 {
        return Err(Error::SeveralSeries(format!(
            "the files hold {} series; choose one by its Series Instance UID (`--series UID` on \
             the command line): {}",
            distinct.len(),
            line(&picked)
        )));
    }
    picked.sort_by_key(|(_, s)| std::cmp::Reverse(s.images));
    if picked.len() > 1 {
        warnings.push(format!(
            "the series holds images in {} orientations; the largest stack ({} images) was read",
            picked.len(),
            picked.first().map(|(_, s)| s.images).unwrap_or(0)
        ));
    }
    picked
        .first()
        .map(|(k, _)| k.clone())
        .ok_or_else(|| Error::NotDicom("no series was chosen".into()))
}

/// Unit normal `row × column` of an orientation, `None` when degenerate.
fn normal(iop: &[f64; 6]) -> Option<[f64; 3]> {
    let r = unit([iop[0], iop[1], iop[2]])?;
    let c = unit([iop[3], iop[4], iop[5]])?;
    unit(cross(r, c))
}

fn unit(v: [f64; 3]) -> Option<[f64; 3]> {
    let n = dot(v, v).sqrt();
    (n.is_finite() && n > 1e-6).then(|| v.map(|x| x / n))
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn add_scaled(a: [f64; 3], b: [f64; 3], s: f64) -> [f64; 3] {
    [a[0] + b[0] * s, a[1] + b[1] * s, a[2] + b[2] * s]
}

/// Where each slice of the volume comes from: one source frame, or a blend of two.
#[derive(Debug, Clone, Copy)]
enum SliceFrom {
    One(usize),
    Blend(usize, usize, f32),
}

/// Slices closer than this along the normal are the same plane.
const SAME_PLANE_MM: f64 = 1e-3;

fn build(
    files: &[(String, Vec<u8>)],
    frames: &[(&Header, &Frame)],
    mut warnings: Vec<String>,
) -> Result<Scan> {
    let (h0, f0) = *frames
        .first()
        .ok_or_else(|| Error::NotDicom("the series has no images".into()))?;
    // 4. checks over the whole group, before any pixel is touched.
    let mut syntaxes: Vec<&str> = frames
        .iter()
        .map(|(h, _)| h.transfer_syntax.as_str())
        .collect();
    syntaxes.sort_unstable();
    syntaxes.dedup();
    for ts in &syntaxes {
        pixels::check_syntax(ts)?;
    }
    let modality = h0.modality.as_str();
    if modality != "CT" {
        return Err(Error::Unsupported(format!(
            "the series is modality {} (\"{}\"), not CT: this tool segments head CT only",
            if modality.is_empty() {
                "unknown"
            } else {
                modality
            },
            h0.series_description
        )));
    }
    let (rows, cols) = (h0.rows, h0.cols);
    if let Some((h, _)) = frames
        .iter()
        .find(|(h, _)| h.rows != rows || h.cols != cols)
    {
        return Err(Error::BadHeader(format!(
            "the images of the series have inconsistent dimensions: {cols}×{rows} and {}×{} \
             (columns × rows)",
            h.cols, h.rows
        )));
    }
    let missing = || Error::BadHeader("an image has no position or orientation".into());
    let iop = f0.iop.ok_or_else(missing)?;
    let spacing = f0.spacing.ok_or_else(missing)?;
    if !(spacing
        .iter()
        .all(|&v| v.is_finite() && v > 0.0 && v < 100.0))
    {
        return Err(Error::BadHeader(format!(
            "pixel spacing {:?} mm is not a plausible CT pixel size",
            spacing
        )));
    }
    if let Some(sp) = frames
        .iter()
        .filter_map(|(_, f)| f.spacing)
        .find(|sp| (sp[0] - spacing[0]).abs() > 1e-3 || (sp[1] - spacing[1]).abs() > 1e-3)
    {
        return Err(Error::BadHeader(format!(
            "the images of the series have different pixel spacings: {:?} and {:?} mm",
            spacing, sp
        )));
    }
    let row = unit([iop[0], iop[1], iop[2]]).ok_or_else(missing)?;
    let col = unit([iop[3], iop[4], iop[5]]).ok_or_else(missing)?;
    let n = normal(&iop).ok_or_else(missing)?;

    // 5. order along the normal, duplicates out, steps.
    let mut order: Vec<(f64, [f64; 3], &Header, &Frame)> = frames
        .iter()
        .filter_map(|&(h, f)| f.pos.map(|p| (dot(p, n), p, h, f)))
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let before = order.len();
    order.dedup_by(|b, a| {
        (b.0 - a.0).abs() < SAME_PLANE_MM
            && a.2.sop_instance == b.2.sop_instance
            && a.3.frame == b.3.frame
    });
    if order.len() < before {
        warnings.push(format!(
            "{} duplicate image(s) (same instance given twice) were ignored",
            before - order.len()
        ));
    }
    if let Some(w) = order
        .windows(2)
        .find(|w| (w[1].0 - w[0].0).abs() < SAME_PLANE_MM)
    {
        return Err(Error::BadHeader(format!(
            "two different images lie at the same position {:.2} mm along the slice normal: the \
             files mix two acquisitions of one series (files {} and {})",
            w[0].0,
            name(files, w[0].2.file),
            name(files, w[1].2.file)
        )));
    }
    if order.len() < 2 {
        return Err(Error::Unsupported(
            "the series has a single axial image: a volume needs at least two slices".into(),
        ));
    }
    let s: Vec<f64> = order.iter().map(|o| o.0 - order[0].0).collect();
    let p0 = order[0].1;
    let last = order.len() - 1;
    let total = s[last];
    let along = sub(order[last].1, p0).map(|v| v / total);
    let mut steps: Vec<f64> = s.windows(2).map(|w| w[1] - w[0]).collect();
    let gaps = steps.clone();
    steps.sort_by(|a, b| a.total_cmp(b));
    let median = steps[steps.len() / 2];
    let tol = 0.02 + 0.01 * median;
    for (k, o) in order.iter().enumerate() {
        let off = sub(sub(o.1, p0), along.map(|v| v * s[k]));
        if dot(off, off).sqrt() > 0.1 + 0.02 * median {
            return Err(Error::BadHeader(format!(
                "the slice positions do not lie on one line (slice {} is {:.2} mm off it): the \
                 series cannot be stacked into one volume",
                k + 1,
                dot(off, off).sqrt()
            )));
        }
    }
    let irregular: Vec<usize> = (0..gaps.len())
        .filter(|&k| (gaps[k] - median).abs() > tol)
        .collect();
    let at = |k: usize| -> String {
        format!(
            "{:.2}–{:.2} mm ({:.2} mm)",
            s[k] + order[0].0,
            s[k + 1] + order[0].0,
            gaps[k]
        )
    };
    let missing_slice = irregular.iter().all(|&k| {
        let m = (gaps[k] / median).round();
        m >= 2.0 && (gaps[k] - m * median).abs() <= tol
    });
    if !irregular.is_empty() && missing_slice {
        let list: Vec<String> = irregular.iter().map(|&k| at(k)).collect();
        return Err(Error::BadHeader(format!(
            "slices are missing from the series: the step is {median:.2} mm but the gap at {} \
             spans whole steps; add the missing file(s) or export the series again",
            list.join(", ")
        )));
    }
    let resampled = !irregular.is_empty();
    let (nk, step_vec, plan): (usize, [f64; 3], Vec<SliceFrom>) = if resampled {
        // The step nearest the median that divides the whole extent, so that the first and the
        // last stored slices are planes of the new grid: stepping by the median itself from the
        // first slice can end short of the last one and drop the top of the head (a real GE
        // series with steps 4.0/1.1/7.0/7.0 mm lost its last 5 mm that way).
        let n_steps = (total / median).round().max(1.0);
        let step = total / n_steps;
        let nk = n_steps as usize + 1;
        check_size(rows, cols, nk)?;
        let mut plan = Vec::with_capacity(nk);
        let mut a = 0usize;
        for t in 0..nk {
            let st = t as f64 * step;
            while a + 1 < last && s[a + 1] <= st {
                a += 1;
            }
            let w = ((st - s[a]) / (s[a + 1] - s[a])).clamp(0.0, 1.0);
            plan.push(if w < 1e-6 {
                SliceFrom::One(a)
            } else if w > 1.0 - 1e-6 {
                SliceFrom::One(a + 1)
            } else {
                SliceFrom::Blend(a, a + 1, w as f32)
            });
        }
        let shown: Vec<String> = irregular.iter().take(6).map(|&k| at(k)).collect();
        warnings.push(format!(
            "the slices are unequally spaced (steps {:.2} to {:.2} mm; irregular gaps at {}{}): \
             they were resampled to {nk} slices {step:.2} mm apart (median step {median:.2} mm), \
             keeping the first and last slices",
            steps[0],
            steps[steps.len() - 1],
            shown.join(", "),
            if irregular.len() > 6 { ", ..." } else { "" }
        ));
        (nk, along.map(|v| v * step), plan)
    } else {
        let nk = order.len();
        check_size(rows, cols, nk)?;
        (
            nk,
            along.map(|v| v * total / last as f64),
            (0..nk).map(SliceFrom::One).collect(),
        )
    };
    let tilt = dot(unit(step_vec).unwrap_or(n), n)
        .clamp(-1.0, 1.0)
        .acos()
        .to_degrees();
    if tilt > 0.01 {
        warnings.push(format!(
            "the slices are tilted {tilt:.1}° against their normal (gantry tilt): the volume \
             keeps the scanner's sheared grid"
        ));
    }

    // Affine: DICOM's LPS to NIfTI's RAS (x and y negated).
    let mut affine: Affine = [[0.0; 4], [0.0; 4], [0.0; 4], [0.0, 0.0, 0.0, 1.0]];
    for r in 0..3 {
        let sign = if r < 2 { -1.0 } else { 1.0 };
        affine[r][0] = sign * row[r] * spacing[1];
        affine[r][1] = sign * col[r] * spacing[0];
        affine[r][2] = sign * step_vec[r];
        affine[r][3] = sign * p0[r];
    }
    let dims = [cols as usize, rows as usize, nk];
    let reorient = Reorient::from_affine(&affine, dims);
    let geometry = Geometry::from_affine(dims, &affine)?;

    // 6. pixels, frame by frame, into the stack.
    let plane = dims[0] * dims[1];
    let total_vox = plane * nk;
    let mut hu = crate::error::try_filled(total_vox, 0f32, "the CT volume in HU")?;
    let mut dec = pixels::Decoder::new(files);
    let mut cache: Vec<(usize, Vec<f32>)> = Vec::new();
    let mut get = |src: usize, dec: &mut pixels::Decoder| -> Result<Vec<f32>> {
        if let Some((_, v)) = cache.iter().find(|(i, _)| *i == src) {
            return Ok(v.clone());
        }
        let (_, _, h, f) = order[src];
        let mut buf = crate::error::try_filled(plane, 0f32, "one CT slice")?;
        dec.frame(h, f, &mut buf)?;
        if cache.len() >= 2 {
            cache.remove(0);
        }
        cache.push((src, buf.clone()));
        Ok(buf)
    };
    let (base, [si, sj, sk]) = reorient.steps();
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for (k, from) in plan.iter().enumerate() {
        let slice = match *from {
            SliceFrom::One(a) => get(a, &mut dec)?,
            SliceFrom::Blend(a, b, w) => {
                let va = get(a, &mut dec)?;
                let vb = get(b, &mut dec)?;
                va.iter()
                    .zip(&vb)
                    .map(|(x, y)| x * (1.0 - w) + y * w)
                    .collect()
            }
        };
        for j in 0..dims[1] {
            let rowbase = base + j as isize * sj + k as isize * sk;
            for i in 0..dims[0] {
                let v = slice[j * dims[0] + i];
                lo = lo.min(v);
                hi = hi.max(v);
                if let Some(o) = hu.get_mut((rowbase + i as isize * si) as usize) {
                    *o = v;
                }
            }
        }
    }
    if let Some(w) = not_hu_warning(lo, hi) {
        warnings.push(w);
    }
    let [nz, ny, nx] = reorient.stack_dims();
    let hu = Array3::from_shape_vec((nz, ny, nx), hu)
        .map_err(|e| Error::InvalidInput(format!("stack shape ({nz}, {ny}, {nx}): {e}")))?;
    let voxel_ml = geometry::det3(&geometry::rzs(&affine)).abs() / 1000.0;
    let stack_spacing = reorient.stack_spacing(&affine);
    let step_len = dot(step_vec, step_vec).sqrt();

    let instance = |h: &Header, f: &Frame| InstanceRef {
        sop_class: h.sop_class.clone(),
        sop_instance: h.sop_instance.clone(),
        frame: (h.frames.len() > 1).then_some(f.frame + 1),
    };
    let positions: Vec<[f64; 3]> = (0..nk)
        .map(|k| add_scaled(p0, step_vec, k as f64))
        .collect();
    let slice_refs = plan
        .iter()
        .map(|p| match *p {
            SliceFrom::One(a) => Some(instance(order[a].2, order[a].3)),
            SliceFrom::Blend(..) => None,
        })
        .collect();
    let source = Source {
        study_uid: h0.study_uid.clone(),
        series_uid: h0.series_uid.clone(),
        frame_of_reference: h0.frame_of_reference.clone(),
        identity: h0.identity.clone(),
        rows,
        cols,
        iop: [row[0], row[1], row[2], col[0], col[1], col[2]],
        pixel_spacing: spacing,
        slice_step: dot(step_vec, n).abs(),
        positions,
        slice_refs,
        instances: order.iter().map(|o| instance(o.2, o.3)).collect(),
    };
    let ts_names: Vec<String> = syntaxes.iter().map(|t| pixels::syntax_name(t)).collect();
    let datatype = match (h0.bits_allocated, h0.signed) {
        (8, false) => "uint8",
        (8, true) => "int8",
        (16, false) => "uint16",
        (16, true) => "int16",
        (32, false) => "uint32",
        _ => "int32",
    };
    let info = ScanInfo {
        format: "DICOM".into(),
        gzipped: false,
        big_endian: syntaxes.contains(&"1.2.840.10008.1.2.2"),
        dims: dims.iter().map(|&d| d as i64).collect(),
        pixdim: vec![spacing[1], spacing[0], step_len],
        datatype: datatype.into(),
        scl_slope: f0.slope,
        scl_inter: f0.inter,
        qform_code: 0,
        sform_code: 0,
        affine_source: AffineSource::Dicom,
        orientation_known: true,
        affine,
        axis_codes: reorient.axis_codes(),
        stack_dims: [nz, ny, nx],
        stack_spacing,
        hu_min: lo,
        hu_max: hi,
        voxel_ml,
        dicom: Some(DicomInfo {
            series_description: h0.series_description.clone(),
            series_number: h0.series_number,
            series_uid: h0.series_uid.clone(),
            transfer_syntax: ts_names.join(", "),
            images: order.len(),
            resampled,
        }),
    };
    Ok(Scan {
        stack: Stack {
            hu,
            spacing: stack_spacing,
            voxel_ml,
        },
        info,
        warnings,
        geometry,
        reorient,
        dicom: Some(Box::new(source)),
    })
}

fn name(files: &[(String, Vec<u8>)], i: usize) -> &str {
    files.get(i).map(|(n, _)| n.as_str()).unwrap_or("?")
}

/// The volume's size, judged before allocation.
fn check_size(rows: u32, cols: u32, nk: usize) -> Result<()> {
    let voxels = u64::from(rows) * u64::from(cols) * nk as u64;
    if voxels > MAX_VOXELS {
        return Err(Error::TooLarge(format!(
            "the series makes a volume of {cols}×{rows}×{nk} = {voxels} voxels; this build reads \
             at most {MAX_VOXELS}"
        )));
    }
    Ok(())
}
