//! Raw voxels to Hounsfield units, written straight into the canonical stack order.
//!
//! HU = raw × slope + inter, computed in f64 and stored as f32. Voxels that are NaN or infinite
//! (after scaling) become [`NONFINITE_HU`]: air is what a missing value most often is in a head
//! CT (outside the field of view), and it keeps every later stage (brain mask, network, CRF) free
//! of NaN. The count is reported as a warning so the substitution is never silent.

use super::geometry::Reorient;
use super::header::DataType;

/// The value that replaces NaN and infinite voxels: air.
pub const NONFINITE_HU: f32 = -1024.0;

/// What decoding found besides the values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecodeStats {
    pub nonfinite: usize,
    pub min: f32,
    pub max: f32,
}

/// Decode `data` (exactly one volume, file order) into `out` (stack order, same length).
pub(crate) fn decode(
    data: &[u8],
    dtype: DataType,
    big_endian: bool,
    slope: f64,
    inter: f64,
    reorient: &Reorient,
    out: &mut [f32],
) -> DecodeStats {
    macro_rules! run {
        ($t:ty, $n:literal) => {
            if big_endian {
                scatter::<$n>(
                    data,
                    |b| <$t>::from_be_bytes(b) as f64,
                    slope,
                    inter,
                    reorient,
                    out,
                )
            } else {
                scatter::<$n>(
                    data,
                    |b| <$t>::from_le_bytes(b) as f64,
                    slope,
                    inter,
                    reorient,
                    out,
                )
            }
        };
    }
    let nonfinite = match dtype {
        DataType::U8 => run!(u8, 1),
        DataType::I8 => run!(i8, 1),
        DataType::U16 => run!(u16, 2),
        DataType::I16 => run!(i16, 2),
        DataType::U32 => run!(u32, 4),
        DataType::I32 => run!(i32, 4),
        DataType::U64 => run!(u64, 8),
        DataType::I64 => run!(i64, 8),
        DataType::F32 => run!(f32, 4),
        DataType::F64 => run!(f64, 8),
    };
    let (min, max) = out
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    DecodeStats {
        nonfinite,
        min,
        max,
    }
}

/// One pass over the voxels; returns how many were not finite.
fn scatter<const N: usize>(
    data: &[u8],
    raw: impl Fn([u8; N]) -> f64,
    slope: f64,
    inter: f64,
    reorient: &Reorient,
    out: &mut [f32],
) -> usize {
    let mut chunks = data.chunks_exact(N);
    let mut nonfinite = 0;
    reorient.for_each(|_, dst| {
        let bytes = chunks
            .next()
            .and_then(|c| <[u8; N]>::try_from(c).ok())
            .unwrap_or([0; N]);
        let hu = (raw(bytes) * slope + inter) as f32;
        let v = if hu.is_finite() {
            hu
        } else {
            nonfinite += 1;
            NONFINITE_HU
        };
        if let Some(slot) = out.get_mut(dst) {
            *slot = v;
        }
    });
    nonfinite
}
