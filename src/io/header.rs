//! NIfTI-1, NIfTI-2 and Analyze 7.5 headers, parsed by hand from bytes.
//!
//! One parser for all three versions (rather than the `nifti` crate for version 1 and our own code
//! for version 2) so that every field goes through the same checks and the same error messages,
//! and so that nothing is allocated before the header has been judged sane.

use crate::{Error, Result};

/// Header size of NIfTI-1 and Analyze 7.5 files.
pub(crate) const NIFTI1_HEADER: usize = 348;
/// Header size of NIfTI-2 files.
pub(crate) const NIFTI2_HEADER: usize = 540;

/// Which flavour of the format the header is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    Nifti1,
    Nifti2,
    /// 348-byte header without a NIfTI magic: no qform/sform, geometry from pixdim only.
    Analyze,
}

impl Version {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Version::Nifti1 => "NIfTI-1",
            Version::Nifti2 => "NIfTI-2",
            Version::Analyze => "Analyze 7.5",
        }
    }
}

/// The header fields the reader uses, widened to the NIfTI-2 types.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub version: Version,
    pub big_endian: bool,
    /// `n+1` / `n+2`: voxels follow the header in the same file. Otherwise a .hdr/.img pair.
    pub single_file: bool,
    pub dim: [i64; 8],
    pub datatype: i16,
    pub bitpix: i16,
    pub pixdim: [f64; 8],
    pub vox_offset: f64,
    pub scl_slope: f64,
    pub scl_inter: f64,
    pub xyzt_units: u8,
    pub qform_code: i32,
    pub sform_code: i32,
    pub quatern: [f64; 3],
    pub qoffset: [f64; 3],
    pub srow: [[f64; 4]; 3],
}

/// Reads fixed-offset fields with the file's byte order.
struct Fields<'a> {
    b: &'a [u8],
    be: bool,
}

impl Fields<'_> {
    /// Bytes `off..off+N`; the caller has checked the header length, so the zero fallback is
    /// unreachable in practice and exists only so that no input can panic here.
    fn arr<const N: usize>(&self, off: usize) -> [u8; N] {
        self.b
            .get(off..off + N)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .unwrap_or([0; N])
    }
    fn i16(&self, off: usize) -> i16 {
        let a = self.arr(off);
        if self.be {
            i16::from_be_bytes(a)
        } else {
            i16::from_le_bytes(a)
        }
    }
    fn i32(&self, off: usize) -> i32 {
        let a = self.arr(off);
        if self.be {
            i32::from_be_bytes(a)
        } else {
            i32::from_le_bytes(a)
        }
    }
    fn i64(&self, off: usize) -> i64 {
        let a = self.arr(off);
        if self.be {
            i64::from_be_bytes(a)
        } else {
            i64::from_le_bytes(a)
        }
    }
    fn f32(&self, off: usize) -> f64 {
        let a = self.arr(off);
        f64::from(if self.be {
            f32::from_be_bytes(a)
        } else {
            f32::from_le_bytes(a)
        })
    }
    fn f64(&self, off: usize) -> f64 {
        let a = self.arr(off);
        if self.be {
            f64::from_be_bytes(a)
        } else {
            f64::from_le_bytes(a)
        }
    }
}

/// How many header bytes the reader needs to see to decide: the larger header plus its magic.
pub(crate) const PROBE_LEN: usize = NIFTI2_HEADER;

/// Parse a header from the start of `b` (which may hold more than the header).
pub(crate) fn parse(b: &[u8]) -> Result<Header> {
    if b.len() < 4 {
        return Err(Error::Truncated(format!(
            "the file is {} bytes long: too short to hold a NIfTI header (348 or 540 bytes)",
            b.len()
        )));
    }
    let first: [u8; 4] = [b[0], b[1], b[2], b[3]];
    let le = i32::from_le_bytes(first);
    let be = i32::from_be_bytes(first);
    let (size, big_endian) = match (le, be) {
        (348, _) | (540, _) => (le as usize, false),
        (_, 348) | (_, 540) => (be as usize, true),
        _ => return Err(not_nifti(b, le)),
    };
    if b.len() < size {
        return Err(Error::Truncated(format!(
            "the header is cut short: the file has {} bytes but its header needs {size}",
            b.len()
        )));
    }
    let f = Fields { b, be: big_endian };
    if size == NIFTI1_HEADER {
        Ok(parse_nifti1(&f, big_endian))
    } else {
        parse_nifti2(&f, big_endian)
    }
}

/// A message that says what the bytes look like when they are not NIfTI at all.
fn not_nifti(b: &[u8], le: i32) -> Error {
    if b.get(128..132) == Some(b"DICM") {
        return Error::NotNifti(
            "this is a DICOM file, not NIfTI: convert the series first (for example with dcm2niix)"
                .into(),
        );
    }
    Error::NotNifti(format!(
        "not a NIfTI file: its first 4 bytes give a header size of {le}, but NIfTI-1 needs 348 \
         and NIfTI-2 540 (in either byte order)"
    ))
}

fn parse_nifti1(f: &Fields, big_endian: bool) -> Header {
    let magic = f.arr::<4>(344);
    let (version, single_file) = match &magic {
        b"n+1\0" => (Version::Nifti1, true),
        b"ni1\0" => (Version::Nifti1, false),
        _ => (Version::Analyze, false),
    };
    let mut dim = [0i64; 8];
    let mut pixdim = [0f64; 8];
    for i in 0..8 {
        dim[i] = i64::from(f.i16(40 + 2 * i));
        pixdim[i] = f.f32(76 + 4 * i);
    }
    let nifti = version == Version::Nifti1;
    let mut srow = [[0f64; 4]; 3];
    for (r, row) in srow.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = f.f32(280 + 16 * r + 4 * c);
        }
    }
    Header {
        version,
        big_endian,
        single_file,
        dim,
        datatype: f.i16(70),
        bitpix: f.i16(72),
        pixdim,
        vox_offset: f.f32(108),
        // Analyze keeps SPM's scale factor in the same slot (funused1); its intercept slot is
        // unused there, so only NIfTI files get an intercept.
        scl_slope: f.f32(112),
        scl_inter: if nifti { f.f32(116) } else { 0.0 },
        xyzt_units: if nifti { f.arr::<1>(123)[0] } else { 0 },
        // Analyze's bytes at these offsets are its "originator" and other fields, not codes.
        qform_code: if nifti { i32::from(f.i16(252)) } else { 0 },
        sform_code: if nifti { i32::from(f.i16(254)) } else { 0 },
        quatern: [f.f32(256), f.f32(260), f.f32(264)],
        qoffset: [f.f32(268), f.f32(272), f.f32(276)],
        srow,
    }
}

fn parse_nifti2(f: &Fields, big_endian: bool) -> Result<Header> {
    let magic = f.arr::<8>(4);
    let single_file = match &magic {
        b"n+2\0\r\n\x1a\n" => true,
        b"ni2\0\r\n\x1a\n" => false,
        _ => {
            return Err(Error::NotNifti(format!(
                "not a NIfTI file: the header size says NIfTI-2 (540) but the magic bytes are \
                 {magic:02x?} instead of \"n+2\" or \"ni2\""
            )));
        }
    };
    let mut dim = [0i64; 8];
    let mut pixdim = [0f64; 8];
    for i in 0..8 {
        dim[i] = f.i64(16 + 8 * i);
        pixdim[i] = f.f64(104 + 8 * i);
    }
    let mut srow = [[0f64; 4]; 3];
    for (r, row) in srow.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = f.f64(400 + 32 * r + 8 * c);
        }
    }
    let vox = f.i64(168);
    Ok(Header {
        version: Version::Nifti2,
        big_endian,
        single_file,
        dim,
        datatype: f.i16(12),
        bitpix: f.i16(14),
        pixdim,
        vox_offset: vox as f64,
        scl_slope: f.f64(176),
        scl_inter: f.f64(184),
        xyzt_units: u8::try_from(f.i32(500)).unwrap_or(0),
        qform_code: f.i32(344),
        sform_code: f.i32(348),
        quatern: [f.f64(352), f.f64(360), f.f64(368)],
        qoffset: [f.f64(376), f.f64(384), f.f64(392)],
        srow,
    })
}

/// Voxel types a CT volume can be stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl DataType {
    /// The scalar type for a NIfTI datatype code, or an error that names what the file holds.
    pub(crate) fn from_code(code: i16) -> Result<DataType> {
        Ok(match code {
            2 => DataType::U8,
            256 => DataType::I8,
            512 => DataType::U16,
            4 => DataType::I16,
            768 => DataType::U32,
            8 => DataType::I32,
            1280 => DataType::U64,
            1024 => DataType::I64,
            16 => DataType::F32,
            64 => DataType::F64,
            128 => return Err(not_ct("RGB colour data (datatype 128, RGB24)")),
            2304 => return Err(not_ct("RGBA colour data (datatype 2304, RGBA32)")),
            32 | 1792 | 2048 => {
                return Err(not_ct(&format!(
                    "complex numbers (datatype {code}), such as MRI phase data"
                )));
            }
            1 => return Err(not_ct("1-bit binary data (datatype 1)")),
            1536 => {
                return Err(Error::Unsupported(format!(
                    "the file holds 128-bit floats (datatype {code}), which this reader does not \
                     decode; save the scan as int16 or float32"
                )));
            }
            0 => {
                return Err(Error::BadHeader(
                    "the header's datatype is 0 (unknown), so its voxels cannot be decoded".into(),
                ));
            }
            other => {
                return Err(Error::BadHeader(format!(
                    "the header's datatype code {other} is not a NIfTI datatype"
                )));
            }
        })
    }

    pub(crate) fn size(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::U64 | DataType::I64 | DataType::F64 => 8,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            DataType::U8 => "uint8",
            DataType::I8 => "int8",
            DataType::U16 => "uint16",
            DataType::I16 => "int16",
            DataType::U32 => "uint32",
            DataType::I32 => "int32",
            DataType::U64 => "uint64",
            DataType::I64 => "int64",
            DataType::F32 => "float32",
            DataType::F64 => "float64",
        }
    }
}

fn not_ct(what: &str) -> Error {
    Error::Unsupported(format!("the file holds {what}, not a CT volume"))
}
