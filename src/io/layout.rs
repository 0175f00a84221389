//! Sanity checks on a header's dimensions and offsets, done before a single voxel is allocated.
//!
//! A hostile or damaged header can claim any size; everything here is integer arithmetic with
//! overflow checks, and the outcome is either a [`Layout`] that fits the limits below or an error
//! that names the numbers.

use super::header::{DataType, Header};
use crate::{Error, Result};

/// Most voxels a volume may have (first 3-D volume only).
///
/// The canonical stack is `f32`, so this bounds that buffer: 2^29 voxels = 2 GiB natively;
/// 2^28 voxels = 1 GiB in wasm, whose 32-bit address space (4 GiB at most, often less in
/// practice) must also hold the file, the network and the CRF. A 512×512×1000 CT is 2^28.
#[cfg(not(target_arch = "wasm32"))]
pub const MAX_VOXELS: u64 = 1 << 29;
/// Most voxels a volume may have (first 3-D volume only); see the native value's note.
#[cfg(target_arch = "wasm32")]
pub const MAX_VOXELS: u64 = 1 << 28;

/// Most bytes of raw voxel data (first volume) the reader accepts: 2 GiB natively, 1 GiB in wasm.
/// Also the cap on how far a gzip stream is inflated, so a gzip bomb cannot exhaust memory.
#[cfg(not(target_arch = "wasm32"))]
pub const MAX_DATA_BYTES: u64 = 1 << 31;
/// Most bytes of raw voxel data (first volume) the reader accepts; see the native value's note.
#[cfg(target_arch = "wasm32")]
pub const MAX_DATA_BYTES: u64 = 1 << 30;

/// Where the first 3-D volume lies and how it is laid out.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub dtype: DataType,
    /// `(ni, nj, nk)`: the file's voxel grid, `i` fastest.
    pub dims: [usize; 3],
    /// Byte offset of the voxel data in the data stream (the .nii, or the .img of a pair).
    pub offset: usize,
    /// Bytes of the first volume.
    pub volume_bytes: usize,
    /// Bytes of all volumes together, as the header announces them (may overflow: `None`).
    pub total_bytes: Option<u64>,
    /// Number of 3-D volumes (4th dimension) when more than one.
    pub volumes: u64,
}

impl Layout {
    pub(crate) fn voxels(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }
    /// Bytes the data stream must hold: offset plus the first volume.
    pub(crate) fn needed(&self) -> usize {
        self.offset + self.volume_bytes
    }
}

/// Judge the header's size fields; `warnings` gets the oddities that do not stop reading.
pub(crate) fn layout(h: &Header, warnings: &mut Vec<String>) -> Result<Layout> {
    let dtype = DataType::from_code(h.datatype)?;
    let n = dims(h)?;
    let extra: Vec<i64> = n[5..].to_vec();
    if extra.iter().any(|&d| d > 1) {
        return Err(Error::Unsupported(format!(
            "the file holds a {}-D image (dims {}), not a CT volume: only 3-D scans and the first \
             volume of a 4-D series can be read",
            h.dim[0],
            join(&n[1..=usize::try_from(h.dim[0]).unwrap_or(7).min(7)])
        )));
    }
    let as_u64 = |d: i64| u64::try_from(d).unwrap_or(0);
    let voxels = as_u64(n[1])
        .checked_mul(as_u64(n[2]))
        .and_then(|v| v.checked_mul(as_u64(n[3])))
        .ok_or_else(|| {
            Error::BadHeader(format!(
                "dims {}: the number of voxels overflows a 64-bit count",
                join(&n[1..4])
            ))
        })?;
    if voxels > MAX_VOXELS {
        return Err(Error::TooLarge(format!(
            "dims {} make {voxels} voxels; this build reads at most {MAX_VOXELS} voxels \
             ({} GiB as 32-bit floats)",
            join(&n[1..4]),
            (MAX_VOXELS * 4) >> 30
        )));
    }
    let volume_bytes = voxels * dtype.size() as u64;
    if volume_bytes > MAX_DATA_BYTES {
        return Err(Error::TooLarge(format!(
            "dims {} of {} make {volume_bytes} bytes of voxel data; this build reads at most \
             {MAX_DATA_BYTES} bytes",
            join(&n[1..4]),
            dtype.name()
        )));
    }
    if i32::from(h.bitpix) != 8 * dtype.size() as i32 {
        warnings.push(format!(
            "the header's bitpix is {} but its datatype {} has {} bits; the datatype was trusted",
            h.bitpix,
            dtype.name(),
            8 * dtype.size()
        ));
    }
    let volumes = as_u64(n[4]);
    if volumes > 1 {
        warnings.push(format!(
            "the file holds {volumes} volumes (4-D); only the first was read"
        ));
    }
    let offset = offset(h, warnings)?;
    let small = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    Ok(Layout {
        dtype,
        dims: [
            small(as_u64(n[1])),
            small(as_u64(n[2])),
            small(as_u64(n[3])),
        ],
        offset,
        volume_bytes: small(volume_bytes),
        total_bytes: volume_bytes.checked_mul(volumes),
        volumes,
    })
}

/// `dim[0..8]` with the unused trailing entries set to 1, each used one checked to be ≥ 1.
fn dims(h: &Header) -> Result<[i64; 8]> {
    let nd = h.dim[0];
    if !(1..=7).contains(&nd) {
        return Err(Error::BadHeader(format!(
            "the header's dim[0] is {nd}: the number of dimensions must be 1 to 7"
        )));
    }
    let nd = nd as usize;
    let mut n = [1i64; 8];
    n[0] = nd as i64;
    n[1..=nd].copy_from_slice(&h.dim[1..=nd]);
    if let Some(axis) = (1..=nd).find(|&a| n[a] < 1) {
        return Err(Error::BadHeader(format!(
            "dims {}: every dimension needs at least one voxel, but dimension {axis} is {}",
            join(&n[1..=nd]),
            n[axis]
        )));
    }
    Ok(n)
}

/// Byte offset of the voxel data, checked to be a finite, non-negative number.
fn offset(h: &Header, warnings: &mut Vec<String>) -> Result<usize> {
    let v = h.vox_offset;
    if !v.is_finite() || v < 0.0 || v > MAX_DATA_BYTES as f64 {
        return Err(Error::BadHeader(format!(
            "the header's vox_offset is {v}: the voxel data cannot start there"
        )));
    }
    let header = match h.version {
        super::header::Version::Nifti2 => super::header::NIFTI2_HEADER,
        _ => super::header::NIFTI1_HEADER,
    };
    let off = v.floor() as usize;
    if h.single_file && off < header {
        // Some old writers leave vox_offset at 0 in single files; the data then follows the
        // header and its 4-byte extension flag, where every other reader looks for it.
        warnings.push(format!(
            "the header's vox_offset is {v}, inside the {header}-byte header; the voxel data was \
             read from byte {}",
            header + 4
        ));
        return Ok(header + 4);
    }
    Ok(off)
}

/// `512×512×40`.
pub(crate) fn join(n: &[i64]) -> String {
    n.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}
