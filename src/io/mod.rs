//! NIfTI in and out: bytes → [`Scan`] (HU on the canonical [`Stack`]) → mask bytes in the
//! scan's own grid.
//!
//! The browser has bytes, not paths, so everything here works on `&[u8]`; the CLI reads files and
//! calls the same functions. Reading follows one order, and nothing voxel-sized is allocated before
//! the header has passed its checks and the data it announces is known to be present:
//!
//! 1. gzip sniffed by its magic, inflated only as far as the header needs ([`gz`]);
//! 2. header parsed (NIfTI-1, NIfTI-2, Analyze 7.5) and judged ([`header`], [`layout`]);
//! 3. geometry chosen (sform > qform > pixdim) and the closest axis permutation found ([`geometry`]);
//! 4. voxels scaled to HU and scattered into stack order ([`decode`]);
//! 5. plausibility: warnings for values that cannot be HU.
//!
//! Rules a user should know (also in `ichnet info`'s output when they apply):
//! - NaN/infinite voxels become −1024 HU (air), with a warning giving the count.
//! - `scl_slope` 0 (or NaN/infinite) means 1; a NaN/infinite `scl_inter` means 0.
//! - 4-D files: the first volume is read, with a warning. 5-D and more, RGB, complex, binary:
//!   refused.
//! - Not HU: see [`not_hu_warning`].
//! - Size limits: [`MAX_VOXELS`], [`MAX_DATA_BYTES`].

mod decode;
pub mod dicom;
mod geometry;
mod gz;
mod header;
mod input;
mod layout;
mod write;

pub use decode::NONFINITE_HU;
pub use geometry::{Affine, AffineSource, Geometry};
pub use input::{ReadOptions, list_series, read_files};
pub use layout::{MAX_DATA_BYTES, MAX_VOXELS};
pub use write::{Storage, write_nifti_gz, write_stack_nifti_gz};

use crate::volume::Stack;
use crate::{Error, Result};
use geometry::{Reorient, SourceFields};
use header::{Header, Version};
use layout::Layout;
use ndarray::Array3;
use serde::Serialize;

/// What `ichnet info` prints about a scan: the header as stored and what the reader made of it.
#[derive(Debug, Clone, Serialize)]
pub struct ScanInfo {
    /// "NIfTI-1", "NIfTI-2" or "Analyze 7.5".
    pub format: String,
    /// Whether the voxel data came gzipped.
    pub gzipped: bool,
    /// Whether the header was big-endian.
    pub big_endian: bool,
    /// Dimensions as stored (`dim[1..=dim[0]]`, including a 4th dimension).
    pub dims: Vec<i64>,
    /// Voxel sizes as stored (`pixdim[1..=dim[0]]`).
    pub pixdim: Vec<f64>,
    /// Voxel type ("int16", "uint8", ...).
    pub datatype: String,
    /// `scl_slope` as stored.
    pub scl_slope: f64,
    /// `scl_inter` as stored.
    pub scl_inter: f64,
    /// `qform_code` as stored.
    pub qform_code: i32,
    /// `sform_code` as stored.
    pub sform_code: i32,
    /// Which fields gave the affine.
    pub affine_source: AffineSource,
    /// Whether the file says which way is left: false for voxel sizes alone (no qform/sform),
    /// where left and right may be swapped and no side may be shown or reported.
    pub orientation_known: bool,
    /// Voxel-to-world matrix (RAS+, mm), row-major.
    pub affine: Affine,
    /// Closest axis directions of the file's `i`, `j`, `k` ("LAS").
    pub axis_codes: String,
    /// Canonical stack dims `(nz, ny, nx)`.
    pub stack_dims: [usize; 3],
    /// Canonical stack voxel size in mm `(z, y, x)`.
    pub stack_spacing: [f32; 3],
    /// Lowest voxel value in HU (after scaling and the NaN rule).
    pub hu_min: f32,
    /// Highest voxel value in HU.
    pub hu_max: f32,
    /// Volume of one voxel in mL (|det| of the affine's 3×3 part / 1000).
    pub voxel_ml: f64,
    /// For a DICOM series: which series it is (never who the patient is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dicom: Option<dicom::DicomInfo>,
}

/// A scan read from NIfTI bytes: HU on the canonical stack, plus what is needed to write results
/// back in the file's own voxel grid.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Voxels in HU on the canonical `[z, y, x]` grid.
    pub stack: Stack,
    /// The header as stored and the reader's reading of it.
    pub info: ScanInfo,
    /// Things the reader noticed that did not stop it (4-D, NaN voxels, not HU, ...).
    pub warnings: Vec<String>,
    geometry: Geometry,
    reorient: Reorient,
    /// For a DICOM series: what a DICOM SEG of a mask must reference.
    dicom: Option<Box<dicom::Source>>,
}

impl Scan {
    /// Read a single-file NIfTI-1/NIfTI-2 scan (`.nii`, or `.nii.gz`: gzip is detected by content).
    pub fn from_bytes(bytes: &[u8]) -> Result<Scan> {
        let mut warnings = Vec::new();
        let mut parsed = None;
        let data = gz::prefix(bytes, header::PROBE_LEN, |head| {
            let h = header::parse(head)?;
            if !h.single_file {
                return Err(Error::NotNifti(
                    "this is the header of a .hdr/.img pair: its voxels are in the matching .img \
                     file, so open the two together"
                        .into(),
                ));
            }
            let l = layout::layout(&h, &mut warnings)?;
            let needed = l.needed();
            parsed = Some((h, l));
            Ok(needed)
        })?;
        let (h, l) = parsed.ok_or_else(|| Error::NotNifti("no header could be read".into()))?;
        let gzipped = gz::is_gzip(bytes);
        build(&h, &l, &data, gzipped, warnings)
    }

    /// Read a `.hdr` + `.img` pair (NIfTI-1/2 `ni1`/`ni2` or Analyze 7.5); either may be gzipped.
    pub fn from_pair(hdr: &[u8], img: &[u8]) -> Result<Scan> {
        let mut warnings = Vec::new();
        let head = gz::prefix(hdr, header::PROBE_LEN, |_| Ok(header::PROBE_LEN))?;
        let h = header::parse(&head)?;
        if h.single_file {
            return Err(Error::InvalidInput(
                "the header says its voxels follow it in the same file (a .nii): open that file \
                 on its own rather than as a .hdr/.img pair"
                    .into(),
            ));
        }
        let l = layout::layout(&h, &mut warnings)?;
        let needed = l.needed();
        let data = gz::prefix(img, 0, |_| Ok(needed))?;
        build(&h, &l, &data, gz::is_gzip(img), warnings)
    }

    /// The grid of the file the scan came from (what a mask is written on).
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Voxel-to-world affine of the canonical stack: `(x, y, z, 1)` stack indices (`hu[[z, y, x]]`)
    /// to RAS+ mm. The file's affine with its axes permuted and flipped the way the stack was,
    /// so it keeps any shear (gantry tilt) exactly; registration works in this world frame.
    // One file axis indexes the affine's columns, the reorientation and the output at once.
    #[allow(clippy::needless_range_loop)]
    pub fn stack_affine(&self) -> Affine {
        let a = self.info.affine;
        let mut out = [[0.0; 4], [0.0; 4], [0.0; 4], [0.0, 0.0, 0.0, 1.0]];
        for (row, o) in out.iter_mut().take(3).enumerate() {
            o[3] = a[row][3];
        }
        for f in 0..3 {
            // Stack axis 0 is z (affine column 2), 2 is x (column 0).
            let col = 2 - self.reorient.stack_axis[f];
            let n = self.reorient.file_dims[f].saturating_sub(1) as f64;
            for (row, o) in out.iter_mut().take(3).enumerate() {
                if self.reorient.flip[f] {
                    o[col] = -a[row][f];
                    o[3] += a[row][f] * n;
                } else {
                    o[col] = a[row][f];
                }
            }
        }
        out
    }

    /// A mask in stack order, as a gzipped NIfTI-1 file on exactly the scan's voxel grid: same
    /// dims, pixdim, qform, sform and units as the input, so any viewer overlays it on the scan.
    pub fn mask_nifti_gz(&self, mask: &Array3<u8>) -> Result<Vec<u8>> {
        let file = self.to_file_order(mask)?;
        write::write_u8_file_order(&self.geometry, &file)
    }

    /// Whether the scan came from DICOM (and so can have its mask written as a DICOM SEG).
    pub fn is_dicom(&self) -> bool {
        self.dicom.is_some()
    }

    /// A mask in stack order as a binary DICOM Segmentation of the source series: one frame per
    /// slice, referencing the source images and frame of reference. `None` for a NIfTI scan.
    pub fn mask_seg_dcm(
        &self,
        mask: &Array3<u8>,
        opts: &dicom::seg::SegOptions,
    ) -> Result<Option<Vec<u8>>> {
        let Some(src) = &self.dicom else {
            return Ok(None);
        };
        let file = self.to_file_order(mask)?;
        dicom::seg::write(src, &file, opts).map(Some)
    }

    /// Values in stack order, rearranged into the file's voxel order (`i` fastest).
    pub fn to_file_order<T: Copy + Default>(&self, stack: &Array3<T>) -> Result<Vec<T>> {
        let want = self.stack.dims();
        if stack.dim() != want {
            return Err(Error::InvalidInput(format!(
                "the mask's shape {:?} does not match the scan's stack shape {want:?} (z, y, x)",
                stack.dim()
            )));
        }
        let contiguous;
        let flat = match stack.as_slice() {
            Some(s) => s,
            None => {
                contiguous = stack.iter().copied().collect::<Vec<T>>();
                &contiguous
            }
        };
        let mut out = crate::error::try_filled(flat.len(), T::default(), "the mask in file order")?;
        self.reorient.for_each(|file, st| {
            if let (Some(o), Some(v)) = (out.get_mut(file), flat.get(st)) {
                *o = *v;
            }
        });
        Ok(out)
    }

    /// Values in the file's voxel order (`i` fastest, as a viewer of the file holds them),
    /// rearranged into stack order: the inverse of [`Scan::to_file_order`], for a mask a reader
    /// edited on the file's own grid.
    pub fn from_file_order<T: Copy + Default>(&self, file: &[T]) -> Result<Array3<T>> {
        let dims = self.stack.dims();
        let n = dims.0 * dims.1 * dims.2;
        if file.len() != n {
            return Err(Error::InvalidInput(format!(
                "the mask has {} voxels but the scan's grid has {n} ({}×{}×{})",
                file.len(),
                dims.2,
                dims.1,
                dims.0
            )));
        }
        let mut out = crate::error::try_filled(n, T::default(), "the mask in stack order")?;
        self.reorient.for_each(|f, st| {
            if let (Some(o), Some(v)) = (out.get_mut(st), file.get(f)) {
                *o = *v;
            }
        });
        Array3::from_shape_vec(dims, out)
            .map_err(|e| Error::InvalidInput(format!("the mask in stack order: {e}")))
    }
}

/// Name the file an error came from, for the CLI ("CT.nii.gz: ..."). Errors about the contents
/// of the file are wrapped in [`Error::InFile`]; the others (file system errors already carry
/// their path, cancellation, backend failures) pass through unchanged.
pub fn in_file(name: &str, e: Error) -> Error {
    match e {
        Error::NotNifti(_)
        | Error::Truncated(_)
        | Error::Gzip(_)
        | Error::BadHeader(_)
        | Error::Unsupported(_)
        | Error::TooLarge(_)
        | Error::NotHu { .. }
        | Error::BlankScan { .. }
        | Error::NoBrain { .. }
        | Error::NotDicom(_) => Error::InFile {
            file: name.to_string(),
            source: Box::new(e),
        },
        other => other,
    }
}

/// Everything after the bytes are in hand: scaling, geometry, reorientation, checks.
fn build(
    h: &Header,
    l: &Layout,
    data: &[u8],
    gzipped: bool,
    mut warnings: Vec<String>,
) -> Result<Scan> {
    let volume = data.get(l.offset..l.needed()).ok_or_else(|| {
        let have = data.len().saturating_sub(l.offset);
        if data.len() < l.offset {
            Error::BadHeader(format!(
                "the voxel data should start at byte {} (vox_offset) but the data is only {} \
                 bytes long",
                l.offset,
                data.len()
            ))
        } else {
            Error::Truncated(format!(
                "the voxel data is cut short: dims {}×{}×{} of {} need {} bytes after byte {} but \
                 only {have} are there",
                l.dims[0],
                l.dims[1],
                l.dims[2],
                l.dtype.name(),
                l.volume_bytes,
                l.offset
            ))
        }
    })?;
    if !gzipped
        && l.volumes > 1
        && let Some(total) = l.total_bytes
        && (data.len() as u64) < l.offset as u64 + total
    {
        warnings.push(format!(
            "the file is shorter than its {} volumes need; the first one is complete",
            l.volumes
        ));
    }
    let (slope, inter) = scaling(h, &mut warnings);
    let fields = SourceFields {
        pixdim: h.pixdim,
        qform_code: h.qform_code,
        quatern: h.quatern,
        qoffset: h.qoffset,
        sform_code: h.sform_code,
        srow: h.srow,
    };
    let (affine, source) = geometry::select_affine(&fields, &mut warnings);
    let unit = geometry::mm_per_unit(h.xyzt_units)?;
    let affine = if unit == 1.0 {
        affine
    } else {
        warnings.push(format!(
            "the header gives lengths in {} (xyzt_units {}); they were converted to mm",
            if unit > 1.0 { "metres" } else { "microns" },
            h.xyzt_units
        ));
        geometry::scale_lengths(&affine, unit)
    };
    if source == AffineSource::Pixdim {
        warnings.push(
            "the file has no qform or sform, so its orientation is unknown: voxel sizes come \
             from pixdim, axes are taken as i→Right, j→Anterior, k→Superior, and left and right \
             may be swapped"
                .into(),
        );
    }
    let reorient = Reorient::from_affine(&affine, l.dims);
    let [nz, ny, nx] = reorient.stack_dims();
    let mut hu = crate::error::try_filled(l.voxels(), 0f32, "the CT volume in HU")?;
    let stats = decode::decode(
        volume,
        l.dtype,
        h.big_endian,
        slope,
        inter,
        &reorient,
        &mut hu,
    );
    if stats.nonfinite > 0 {
        warnings.push(format!(
            "{} voxels were NaN or infinite; they were set to {NONFINITE_HU} HU (air)",
            stats.nonfinite
        ));
    }
    if let Some(w) = not_hu_warning(stats.min, stats.max) {
        warnings.push(w);
    }
    let hu = Array3::from_shape_vec((nz, ny, nx), hu)
        .map_err(|e| Error::InvalidInput(format!("stack shape ({nz}, {ny}, {nx}): {e}")))?;
    let voxel_ml = geometry::det3(&geometry::rzs(&affine)).abs() / 1000.0;
    let spacing = reorient.stack_spacing(&affine);
    let ndim = usize::try_from(h.dim[0]).unwrap_or(3).clamp(1, 7);
    let info = ScanInfo {
        format: h.version.name().into(),
        gzipped,
        big_endian: h.big_endian,
        dims: h.dim[1..=ndim].to_vec(),
        pixdim: h.pixdim[1..=ndim].to_vec(),
        datatype: l.dtype.name().into(),
        scl_slope: h.scl_slope,
        scl_inter: h.scl_inter,
        qform_code: h.qform_code,
        sform_code: h.sform_code,
        affine_source: source,
        orientation_known: source != AffineSource::Pixdim,
        affine,
        axis_codes: reorient.axis_codes(),
        stack_dims: [nz, ny, nx],
        stack_spacing: spacing,
        hu_min: stats.min,
        hu_max: stats.max,
        voxel_ml,
        dicom: None,
    };
    Ok(Scan {
        stack: Stack {
            hu,
            spacing,
            voxel_ml,
        },
        info,
        warnings,
        geometry: source_geometry(h, l),
        reorient,
        dicom: None,
    })
}

/// `scl_slope`/`scl_inter` as applied: slope 0 means "no scaling" (NIfTI), non-finite values too.
fn scaling(h: &Header, warnings: &mut Vec<String>) -> (f64, f64) {
    let (s, i) = (h.scl_slope, h.scl_inter);
    if s == 0.0 {
        return (1.0, 0.0);
    }
    if !s.is_finite() {
        warnings.push(format!("scl_slope is {s}; the voxels were read unscaled"));
        return (1.0, 0.0);
    }
    if !i.is_finite() {
        warnings.push(format!("scl_inter is {i}; 0 was used"));
        return (s, 0.0);
    }
    (s, i)
}

/// The NIfTI-1 fields a mask must copy to sit on the scan's grid.
fn source_geometry(h: &Header, l: &Layout) -> Geometry {
    let code = |c: i32| i16::try_from(c).unwrap_or(0);
    let nifti = h.version != Version::Analyze;
    Geometry {
        dims: l.dims,
        pixdim: h.pixdim.map(|v| v as f32),
        qform_code: if nifti { code(h.qform_code) } else { 0 },
        quatern: h.quatern.map(|v| v as f32),
        qoffset: h.qoffset.map(|v| v as f32),
        sform_code: if nifti { code(h.sform_code) } else { 0 },
        srow: h.srow.map(|r| r.map(|v| v as f32)),
        xyzt_units: h.xyzt_units,
    }
}

/// HU below which a head CT always has voxels: air around the head reads about −1000, fat −100.
const AIR_SEEN_BELOW_HU: f32 = -200.0;
/// Beyond this magnitude no CT value (even extended-range metal) is a Hounsfield unit.
const HU_LIMIT: f32 = 40_000.0;

/// The not-HU rule: why the range of values cannot be a head CT in Hounsfield units (`None` when
/// it can).
///
/// - Nothing below −200 HU: a head CT shows air (≈ −1000 HU) around the head, so a minimum at or
///   above −200 means the values are a display render (0..255), a rescaled export (0..1, 0..4095),
///   or an already skull-stripped image.
/// - Any value beyond ±40000: outside every CT scale, even extended-range metal.
///
/// A constant volume is [`Error::BlankScan`], not a scaling question.
pub fn not_hu_reason(min: f32, max: f32) -> Option<String> {
    if min < -HU_LIMIT || max > HU_LIMIT {
        return Some(format!(
            "values range from {min} to {max}, beyond any Hounsfield scale (±{HU_LIMIT}): these \
             are probably not HU"
        ));
    }
    if min >= AIR_SEEN_BELOW_HU && min != max {
        return Some(format!(
            "values range from {min} to {max} with nothing below {AIR_SEEN_BELOW_HU}: a head CT \
             in Hounsfield units shows air at about −1000, so these are probably not HU (a \
             display render or rescaled export, or an already skull-stripped image)"
        ));
    }
    None
}

/// The reader's warning for a scan whose values are probably not HU, or blank (see
/// [`not_hu_reason`]); `ichnet info` shows it, and segmentation refuses such scans.
pub fn not_hu_warning(min: f32, max: f32) -> Option<String> {
    if min == max {
        return Some(format!(
            "every voxel is {min}: the scan is blank, there is nothing to segment"
        ));
    }
    not_hu_reason(min, max).map(|r| format!("{r}; a volume measured on them would be unreliable"))
}
