//! NIfTI-1 `.nii.gz` writers: masks in a scan's own grid, and volumes for synthetic data.
//!
//! The `nifti` crate writes only to files; the browser needs bytes, so the 348-byte header is
//! written here, always little-endian, followed by the 4-byte "no extensions" flag and the voxels.

use super::geometry::Geometry;
use super::header::NIFTI1_HEADER;
use crate::volume::Stack;
use crate::{Error, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use ndarray::Array3;
use std::io::Write;

/// How voxel values are stored in a written file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Storage {
    /// Unsigned bytes: raw = round((value − inter) / slope), clamped to 0..=255.
    U8 {
        /// `scl_slope` (must be finite and non-zero).
        slope: f32,
        /// `scl_inter`.
        inter: f32,
    },
    /// 16-bit integers: raw = round((value − inter) / slope), clamped to −32768..=32767.
    I16 {
        /// `scl_slope` (must be finite and non-zero).
        slope: f32,
        /// `scl_inter`.
        inter: f32,
    },
    /// 32-bit floats, written as they are (slope 1, inter 0).
    F32,
}

/// NIfTI datatype code, bits per voxel.
#[derive(Clone, Copy)]
struct Code(i16, i16);

const CODE_U8: Code = Code(2, 8);
const CODE_I16: Code = Code(4, 16);
const CODE_F32: Code = Code(16, 32);

/// Write `values` as a gzipped NIfTI-1 file on grid `geom`.
///
/// Index order: `values[[k, j, i]]` — the slowest file axis first, exactly like
/// [`Stack::hu`](crate::volume::Stack) — so its shape must be `(nk, nj, ni)` for
/// `geom.dims = [ni, nj, nk]`, and a C-contiguous array is already in the file's byte order.
/// Non-finite values are refused (they have no integer encoding and would confuse viewers).
pub fn write_nifti_gz(values: &Array3<f32>, geom: &Geometry, storage: Storage) -> Result<Vec<u8>> {
    let [ni, nj, nk] = geom.dims;
    if values.dim() != (nk, nj, ni) {
        return Err(Error::InvalidInput(format!(
            "the array's shape {:?} does not fit the grid: dims {ni}×{nj}×{nk} need shape \
             ({nk}, {nj}, {ni}) in [k, j, i] order",
            values.dim()
        )));
    }
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(Error::InvalidInput(format!(
            "{bad} values are NaN or infinite and cannot be written"
        )));
    }
    let n = values.len();
    let (code, slope, inter, body) = match storage {
        Storage::U8 { slope, inter } => {
            check_scale(slope, inter)?;
            let mut b = crate::error::try_vec::<u8>(n, "the written volume")?;
            b.extend(
                values
                    .iter()
                    .map(|&v| quantise(v, slope, inter, 0.0, 255.0) as u8),
            );
            (CODE_U8, slope, inter, b)
        }
        Storage::I16 { slope, inter } => {
            check_scale(slope, inter)?;
            let mut b = crate::error::try_vec::<u8>(n * 2, "the written volume")?;
            for &v in values.iter() {
                let raw = quantise(v, slope, inter, -32768.0, 32767.0) as i16;
                b.extend_from_slice(&raw.to_le_bytes());
            }
            (CODE_I16, slope, inter, b)
        }
        Storage::F32 => {
            let mut b = crate::error::try_vec::<u8>(n * 4, "the written volume")?;
            for &v in values.iter() {
                b.extend_from_slice(&v.to_le_bytes());
            }
            (CODE_F32, 1.0, 0.0, b)
        }
    };
    encode(geom, code, slope, inter, &body)
}

/// Write a canonical stack with an RAS+ affine (`i` = x → Right, `j` = y → Anterior,
/// `k` = z → Superior), voxel sizes from `stack.spacing`, centred on the world origin.
pub fn write_stack_nifti_gz(stack: &Stack, storage: Storage) -> Result<Vec<u8>> {
    let (nz, ny, nx) = stack.dims();
    let [sz, sy, sx] = stack.spacing;
    let geom = Geometry::ras([nx, ny, nz], [sx, sy, sz])?;
    write_nifti_gz(&stack.hu, &geom, storage)
}

/// Write u8 voxels already in file order (`i` fastest) on grid `geom`, slope 1.
pub(crate) fn write_u8_file_order(geom: &Geometry, voxels: &[u8]) -> Result<Vec<u8>> {
    encode(geom, CODE_U8, 1.0, 0.0, voxels)
}

fn check_scale(slope: f32, inter: f32) -> Result<()> {
    if !slope.is_finite() || slope == 0.0 || !inter.is_finite() {
        return Err(Error::InvalidInput(format!(
            "storage scaling slope {slope}, inter {inter}: the slope must be finite and non-zero \
             and the intercept finite"
        )));
    }
    Ok(())
}

fn quantise(v: f32, slope: f32, inter: f32, lo: f32, hi: f32) -> f32 {
    ((v - inter) / slope).round().clamp(lo, hi)
}

/// Header + extension flag + voxels, gzipped.
fn encode(geom: &Geometry, code: Code, slope: f32, inter: f32, body: &[u8]) -> Result<Vec<u8>> {
    let header = header_bytes(geom, code, slope, inter)?;
    let mut gz = GzEncoder::new(Vec::new(), Compression::new(6));
    let written = gz
        .write_all(&header)
        .and_then(|()| gz.write_all(&[0, 0, 0, 0]))
        .and_then(|()| gz.write_all(body));
    written
        .and_then(|()| gz.finish())
        .map_err(|e| Error::Gzip(format!("compressing the output failed: {e}")))
}

/// The 348-byte little-endian NIfTI-1 header for `geom`.
fn header_bytes(geom: &Geometry, code: Code, slope: f32, inter: f32) -> Result<Vec<u8>> {
    let mut h = vec![0u8; NIFTI1_HEADER];
    let mut put = |off: usize, bytes: &[u8]| h[off..off + bytes.len()].copy_from_slice(bytes);
    put(0, &(NIFTI1_HEADER as i32).to_le_bytes());
    put(38, b"r");
    let mut dim = [1i16; 8];
    dim[0] = 3;
    for (a, &n) in geom.dims.iter().enumerate() {
        dim[a + 1] = i16::try_from(n).ok().filter(|&d| d > 0).ok_or_else(|| {
            Error::InvalidInput(format!(
                "dims {:?}: NIfTI-1 stores each dimension as 1..=32767",
                geom.dims
            ))
        })?;
    }
    for (i, d) in dim.iter().enumerate() {
        put(40 + 2 * i, &d.to_le_bytes());
    }
    put(70, &code.0.to_le_bytes());
    put(72, &code.1.to_le_bytes());
    for (i, p) in geom.pixdim.iter().enumerate() {
        put(76 + 4 * i, &p.to_le_bytes());
    }
    put(108, &((NIFTI1_HEADER + 4) as f32).to_le_bytes());
    put(112, &slope.to_le_bytes());
    put(116, &inter.to_le_bytes());
    put(123, &[geom.xyzt_units]);
    put(148, b"ichnet");
    put(252, &geom.qform_code.to_le_bytes());
    put(254, &geom.sform_code.to_le_bytes());
    for i in 0..3 {
        put(256 + 4 * i, &geom.quatern[i].to_le_bytes());
        put(268 + 4 * i, &geom.qoffset[i].to_le_bytes());
    }
    for (r, row) in geom.srow.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put(280 + 16 * r + 4 * c, &v.to_le_bytes());
        }
    }
    put(344, b"n+1\0");
    Ok(h)
}
