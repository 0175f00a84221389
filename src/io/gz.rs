//! Bytes in, bytes out: gzip sniffed by its magic (`1f 8b`), never by a file name, and inflated
//! only as far as the header says the data reaches.
//!
//! The buffer grows with the bytes that actually come out of the decoder (not with what the header
//! claims), so a tiny file whose header announces gigabytes costs nothing, and a gzip bomb stops at
//! the size its header needs.

use crate::{Error, Result};
use flate2::read::MultiGzDecoder;
use std::borrow::Cow;
use std::io::Read;

/// Does `b` start with the gzip magic?
pub(crate) fn is_gzip(b: &[u8]) -> bool {
    b.starts_with(&[0x1f, 0x8b])
}

/// Inflation step: large enough to be fast, small enough that a short stream wastes little.
const CHUNK: usize = 1 << 20;

/// The first bytes of `data` (inflated if gzipped) up to what `needed` asks for.
///
/// `needed` sees the first `probe` bytes (fewer if the stream is shorter) and returns how many
/// bytes the caller wants in total; it is the place to parse and judge the header. The result may
/// be shorter than asked when the stream ends early: the caller reports that with its own numbers.
pub(crate) fn prefix<'a>(
    data: &'a [u8],
    probe: usize,
    needed: impl FnOnce(&[u8]) -> Result<usize>,
) -> Result<Cow<'a, [u8]>> {
    if !is_gzip(data) {
        needed(data)?;
        return Ok(Cow::Borrowed(data));
    }
    let mut dec = MultiGzDecoder::new(data);
    let mut out = Vec::new();
    fill(&mut dec, &mut out, probe)?;
    let want = needed(&out)?;
    fill(&mut dec, &mut out, want)?;
    out.truncate(want);
    Ok(Cow::Owned(out))
}

/// Inflate into `out` until it holds `upto` bytes or the stream ends.
fn fill(dec: &mut impl Read, out: &mut Vec<u8>, upto: usize) -> Result<()> {
    while out.len() < upto {
        let step = (upto - out.len()).min(CHUNK);
        out.try_reserve(step).map_err(|_| Error::OutOfMemory {
            what: "the inflated NIfTI file",
            bytes: out.len().saturating_add(step),
        })?;
        let start = out.len();
        out.resize(start + step, 0);
        match dec.read(&mut out[start..]) {
            Ok(0) => {
                out.truncate(start);
                return Ok(());
            }
            Ok(k) => out.truncate(start + k),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.truncate(start),
            Err(e) => {
                return Err(Error::Gzip(format!(
                    "{e} after {start} inflated bytes (the file may be cut short)"
                )));
            }
        }
    }
    Ok(())
}
