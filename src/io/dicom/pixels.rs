//! Pixel data of one frame → Hounsfield units.
//!
//! dicom-pixeldata undoes the transfer syntax (JPEG, deflate, byte order), except RLE and 12-bit
//! JPEG Extended, which are decoded here ([`decode_rle`], [`super::jpeg`]: jpeg-decoder, the
//! codec behind dicom-pixeldata, refuses 12-bit lossy JPEG); the stored samples are then read as
//! the header says (8/16/32 bits, signed or not) and rescaled with the frame's own slope and
//! intercept, so a series whose slices carry different rescale values (common after PACS
//! recompression) still lands on one HU scale.

use std::borrow::Cow;

use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;

use super::jpeg;
use super::parse::{self, Frame, Header};
use crate::io::NONFINITE_HU;
use crate::{Error, Result};

/// Transfer syntaxes whose pixels the pure-Rust codecs decode.
pub const SUPPORTED: [(&str, &str); 9] = [
    ("1.2.840.10008.1.2", "Implicit VR Little Endian"),
    ("1.2.840.10008.1.2.1", "Explicit VR Little Endian"),
    (
        "1.2.840.10008.1.2.1.99",
        "Deflated Explicit VR Little Endian",
    ),
    ("1.2.840.10008.1.2.2", "Explicit VR Big Endian"),
    ("1.2.840.10008.1.2.5", "RLE Lossless"),
    ("1.2.840.10008.1.2.4.50", "JPEG Baseline"),
    ("1.2.840.10008.1.2.4.51", "JPEG Extended"),
    ("1.2.840.10008.1.2.4.57", "JPEG Lossless"),
    ("1.2.840.10008.1.2.4.70", "JPEG Lossless SV1"),
];

/// Transfer syntaxes recognised but refused (no pure-Rust decoder that builds for wasm32).
const REFUSED: [(&str, &str); 8] = [
    ("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless"),
    ("1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless"),
    ("1.2.840.10008.1.2.4.90", "JPEG 2000 Lossless"),
    ("1.2.840.10008.1.2.4.91", "JPEG 2000"),
    ("1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 Lossless"),
    ("1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2"),
    (
        "1.2.840.10008.1.2.4.201",
        "High-Throughput JPEG 2000 Lossless",
    ),
    ("1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000"),
];

/// The name of a transfer syntax, for reports and refusals.
pub fn syntax_name(uid: &str) -> String {
    SUPPORTED
        .iter()
        .chain(REFUSED.iter())
        .find(|(u, _)| *u == uid)
        .map(|(_, n)| (*n).to_string())
        .unwrap_or_else(|| format!("transfer syntax {uid}"))
}

/// `Ok` when the pixels of `uid` can be decoded; otherwise the one-sentence refusal.
pub fn check_syntax(uid: &str) -> Result<()> {
    if SUPPORTED.iter().any(|(u, _)| *u == uid) {
        return Ok(());
    }
    let name = syntax_name(uid);
    Err(Error::Unsupported(format!(
        "the images are compressed as {name}, which this reader cannot decode (it decodes \
         uncompressed, deflate, RLE and JPEG baseline/extended/lossless): convert the series to \
         one of those first, e.g. with `gdcmconv --raw` or `dcmdjpls`/`dcmdjp2k`"
    )))
}

/// Decodes frames, keeping the last fully parsed file so the frames of a multi-frame image are
/// not parsed again one by one.
pub struct Decoder<'a> {
    files: &'a [(String, Vec<u8>)],
    cached: Option<(usize, DefaultDicomObject)>,
}

impl<'a> Decoder<'a> {
    pub fn new(files: &'a [(String, Vec<u8>)]) -> Self {
        Decoder {
            files,
            cached: None,
        }
    }

    /// The HU values of `frame` (`rows × cols`, row-major) into `out`.
    pub fn frame(&mut self, h: &Header, frame: &Frame, out: &mut [f32]) -> Result<()> {
        let files = self.files;
        let name = files.get(h.file).map(|(n, _)| n.as_str()).unwrap_or("?");
        self.frame_inner(h, frame, out)
            .map_err(|e| crate::io::in_file(name, e))
    }

    fn frame_inner(&mut self, h: &Header, frame: &Frame, out: &mut [f32]) -> Result<()> {
        if self.cached.as_ref().is_none_or(|(f, _)| *f != h.file) {
            let bytes = self
                .files
                .get(h.file)
                .map(|(_, b)| b.as_slice())
                .ok_or_else(|| Error::InvalidInput("internal: file index out of range".into()))?;
            self.cached = Some((h.file, parse::open(bytes, false)?));
        }
        let Some((_, obj)) = &self.cached else {
            return Err(Error::InvalidInput("internal: no file parsed".into()));
        };
        let plane = h.rows as usize * h.cols as usize;
        if out.len() != plane {
            return Err(Error::InvalidInput(format!(
                "internal: a {} × {} frame needs {plane} values, the buffer holds {}",
                h.rows,
                h.cols,
                out.len()
            )));
        }
        if h.samples_per_pixel != 1 {
            return Err(Error::Unsupported(format!(
                "the image has {} samples per pixel (colour); a CT has one",
                h.samples_per_pixel
            )));
        }
        let bytes_per = match h.bits_allocated {
            8 => 1,
            16 => 2,
            32 => 4,
            b => {
                return Err(Error::Unsupported(format!(
                    "the image has {b} bits allocated per pixel; CT images have 8, 16 or 32"
                )));
            }
        };
        let frames = h.frames.len();
        let elem = obj.get(tags::PIXEL_DATA).ok_or_else(|| {
            Error::NotDicom("the image has no pixel data (Pixel Data element missing)".into())
        })?;
        if let Value::Primitive(p) = elem.value() {
            let have = p.calculate_byte_len();
            let need = plane * bytes_per * frames;
            if have < need {
                return Err(Error::Truncated(format!(
                    "the pixel data is cut short: {} × {} × {frames} frame(s) of {} bits need \
                     {need} bytes but only {have} are there",
                    h.rows, h.cols, h.bits_allocated
                )));
            }
        }
        if h.transfer_syntax == RLE_LOSSLESS {
            let fragment = rle_fragment(elem.value(), frame.frame as usize, frames)?;
            let data = decode_rle(fragment, plane, bytes_per)?;
            to_hu(&data, bytes_per, h.signed, frame.slope, frame.inter, out);
            return Ok(());
        }
        if h.transfer_syntax == JPEG_EXTENDED {
            let stream = jpeg_stream(elem.value(), frame.frame as usize, frames)?;
            // 12-bit samples: our decoder (jpeg-decoder refuses them); 8-bit: dicom-pixeldata's
            if jpeg::precision(&stream) == Some(12) {
                let data = decode_jpeg12(&stream, h, plane, bytes_per)?;
                to_hu(&data, 2, h.signed, frame.slope, frame.inter, out);
                return Ok(());
            }
        }
        let px = obj
            .decode_pixel_data_frame(frame.frame)
            .map_err(|e| Error::Unsupported(format!("the pixel data cannot be decoded ({e})")))?;
        if px.rows() != h.rows || px.columns() != h.cols {
            return Err(Error::BadHeader(format!(
                "the decoded image is {} × {} but the header says {} × {}",
                px.rows(),
                px.columns(),
                h.rows,
                h.cols
            )));
        }
        let data = px
            .frame_data(0)
            .map_err(|e| Error::Truncated(format!("frame {} is missing ({e})", frame.frame)))?;
        if data.len() < plane * bytes_per {
            return Err(Error::Truncated(format!(
                "frame {} decodes to {} bytes; {} × {} pixels of {} bits need {}",
                frame.frame,
                data.len(),
                h.rows,
                h.cols,
                h.bits_allocated,
                plane * bytes_per
            )));
        }
        to_hu(data, bytes_per, h.signed, frame.slope, frame.inter, out);
        Ok(())
    }
}

/// Stored samples (native byte order, `bytes_per` each) → HU with the frame's rescale.
fn to_hu(data: &[u8], bytes_per: usize, signed: bool, slope: f64, inter: f64, out: &mut [f32]) {
    let put = |o: &mut f32, raw: f64| {
        let v = (raw * slope + inter) as f32;
        *o = if v.is_finite() { v } else { NONFINITE_HU };
    };
    match (bytes_per, signed) {
        (1, false) => out
            .iter_mut()
            .zip(data)
            .for_each(|(o, &b)| put(o, f64::from(b))),
        (1, true) => out
            .iter_mut()
            .zip(data)
            .for_each(|(o, &b)| put(o, f64::from(b as i8))),
        (2, s) => out.iter_mut().zip(data.chunks_exact(2)).for_each(|(o, c)| {
            let b = [c[0], c[1]];
            let raw = if s {
                f64::from(i16::from_ne_bytes(b))
            } else {
                f64::from(u16::from_ne_bytes(b))
            };
            put(o, raw)
        }),
        (_, s) => out.iter_mut().zip(data.chunks_exact(4)).for_each(|(o, c)| {
            let b = [c[0], c[1], c[2], c[3]];
            let raw = if s {
                f64::from(i32::from_ne_bytes(b))
            } else {
                f64::from(u32::from_ne_bytes(b))
            };
            put(o, raw)
        }),
    }
}

const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";

/// The JPEG stream of `frame`: all fragments of a single-frame image; one fragment per frame; or
/// the fragments the Basic Offset Table assigns to the frame (PS3.5 A.4).
fn jpeg_stream<I, P: AsRef<[u8]>>(
    value: &Value<I, P>,
    frame: usize,
    frames: usize,
) -> Result<Cow<'_, [u8]>> {
    let fragments = value.fragments().ok_or_else(|| {
        Error::BadHeader("JPEG pixel data is not encapsulated in fragments".into())
    })?;
    fn join<P: AsRef<[u8]>>(f: &[P]) -> Result<Cow<'_, [u8]>> {
        match f {
            [one] => Ok(Cow::Borrowed(one.as_ref())),
            _ => {
                let n = f.iter().map(|p| p.as_ref().len()).sum();
                let mut v = crate::error::try_vec(n, "one JPEG frame's fragments")?;
                f.iter().for_each(|p| v.extend_from_slice(p.as_ref()));
                Ok(Cow::Owned(v))
            }
        }
    }
    if frames == 1 {
        return join(fragments);
    }
    if fragments.len() == frames {
        return join(fragments.get(frame..=frame).unwrap_or_default());
    }
    // Several fragments per frame: the offset table gives, for each frame, the byte offset of its
    // first fragment's item from the first fragment's item (each item has an 8-byte header).
    let table = value.offset_table().unwrap_or_default();
    if table.len() != frames {
        return Err(Error::Unsupported(format!(
            "the JPEG pixel data holds {frames} frames in {} fragments without an offset table \
             saying which fragments make which frame",
            fragments.len()
        )));
    }
    let (mut starts, mut at) = (Vec::with_capacity(fragments.len()), 0u64);
    for p in fragments {
        starts.push(at);
        at += 8 + p.as_ref().len() as u64;
    }
    let from = u64::from(table.get(frame).copied().unwrap_or(0));
    let to = table.get(frame + 1).map_or(u64::MAX, |&t| u64::from(t));
    let first = starts.iter().position(|&s| s == from).ok_or_else(|| {
        Error::BadHeader(format!(
            "the offset table puts frame {frame} at byte {from}, where no fragment starts"
        ))
    })?;
    let count = starts[first..].iter().take_while(|&&s| s < to).count();
    join(fragments.get(first..first + count).unwrap_or_default())
}

/// A 12-bit JPEG Extended frame → `plane` samples of 2 bytes, native order. JPEG codes unsigned
/// samples; with Pixel Representation 1 they are the bits of 12-bit two's complement values
/// (as pydicom and GDCM read them), sign-extended here.
fn decode_jpeg12(stream: &[u8], h: &Header, plane: usize, bytes_per: usize) -> Result<Vec<u8>> {
    if bytes_per != 2 {
        return Err(Error::BadHeader(format!(
            "the image stores 12-bit JPEG samples in {} bits allocated per pixel (needs 16)",
            h.bits_allocated
        )));
    }
    let img = jpeg::decode(stream, plane)?;
    if img.width != h.cols as usize || img.height != h.rows as usize {
        return Err(Error::BadHeader(format!(
            "the JPEG frame is {} × {} but the header says {} × {}",
            img.height, img.width, h.rows, h.cols
        )));
    }
    let mut data = crate::error::try_vec(plane * 2, "one decoded JPEG frame")?;
    for &v in &img.samples {
        let b = if h.signed {
            (((v << 4) as i16) >> 4).to_ne_bytes()
        } else {
            v.to_ne_bytes()
        };
        data.extend_from_slice(&b);
    }
    Ok(data)
}

/// The encapsulated fragment of `frame`: in RLE each frame is exactly one fragment (PS3.5 A.4.2).
fn rle_fragment<I, P: AsRef<[u8]>>(
    value: &Value<I, P>,
    frame: usize,
    frames: usize,
) -> Result<&[u8]> {
    let fragments = value.fragments().ok_or_else(|| {
        Error::BadHeader("RLE Lossless pixel data is not encapsulated in fragments".into())
    })?;
    if fragments.len() != frames {
        return Err(Error::Truncated(format!(
            "RLE Lossless needs one fragment per frame: {frames} frame(s) but {} fragment(s)",
            fragments.len()
        )));
    }
    fragments
        .get(frame)
        .map(AsRef::as_ref)
        .ok_or_else(|| Error::Truncated(format!("frame {frame} has no RLE fragment")))
}

/// One RLE Lossless frame (PS3.5 Annex G) → `plane` samples of `bytes_per` bytes, native order.
///
/// Written here rather than left to dicom-pixeldata: its 0.10 RLE decoder indexes past the end
/// of a damaged segment and panics (found by `mutated_series_never_panic`), and on wasm32 a
/// panic cannot be caught, so one damaged file killed the page's worker. Every read here is
/// bounds-checked: a damaged fragment is an error sentence on every target.
fn decode_rle(fragment: &[u8], plane: usize, bytes_per: usize) -> Result<Vec<u8>> {
    let damaged =
        |why: String| Error::Truncated(format!("the RLE-compressed pixels are damaged: {why}"));
    let word = |i: usize| -> Option<usize> {
        let b = fragment.get(4 * i..4 * i + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = word(0).ok_or_else(|| damaged("no RLE header".into()))?;
    if n != bytes_per {
        return Err(damaged(format!(
            "{n} segment(s) for a one-sample image of {bytes_per} byte(s) per pixel (needs {bytes_per})"
        )));
    }
    let mut starts = Vec::with_capacity(n + 1);
    for i in 1..=n {
        starts.push(word(i).ok_or_else(|| damaged("the header is cut short".into()))?);
    }
    starts.push(fragment.len());
    if starts[0] < 64 || starts.windows(2).any(|w| w[0] > w[1]) {
        return Err(damaged(format!(
            "segment offsets {:?} are out of order or inside the header",
            &starts[..n]
        )));
    }
    let mut out = crate::error::try_filled(plane * bytes_per, 0u8, "one decoded RLE frame")?;
    for (seg, w) in starts.windows(2).enumerate() {
        let mut src = fragment[w[0]..w[1]].iter().copied();
        // Segment 0 holds the most significant byte of every sample.
        let byte = if cfg!(target_endian = "little") {
            bytes_per - 1 - seg
        } else {
            seg
        };
        let mut at = 0usize;
        while at < plane {
            let Some(h) = src.next() else { break };
            let h = h as i8;
            if h >= 0 {
                for _ in 0..=h as usize {
                    let v = src.next().ok_or_else(|| {
                        damaged(format!("segment {} ends inside a literal run", seg + 1))
                    })?;
                    if at < plane {
                        out[at * bytes_per + byte] = v;
                        at += 1;
                    }
                }
            } else if h != -128 {
                let v = src.next().ok_or_else(|| {
                    damaged(format!("segment {} ends inside a replicate run", seg + 1))
                })?;
                for _ in 0..(1 - h as isize) as usize {
                    if at < plane {
                        out[at * bytes_per + byte] = v;
                        at += 1;
                    }
                }
            }
        }
        if at < plane {
            return Err(damaged(format!(
                "segment {} decodes to {at} of the frame's {plane} pixels",
                seg + 1
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(offsets: &[u32]) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(&(offsets.len() as u32).to_le_bytes());
        for (i, o) in offsets.iter().enumerate() {
            h[4 + 4 * i..8 + 4 * i].copy_from_slice(&o.to_le_bytes());
        }
        h
    }

    #[test]
    fn jpeg_frames_are_found_among_fragments() {
        use dicom_core::value::PixelFragmentSequence;
        type V = Value<dicom_object::InMemDicomObject, Vec<u8>>;
        let seq = |bot: Vec<u32>, f: Vec<Vec<u8>>| -> V {
            Value::PixelSequence(PixelFragmentSequence::new(bot, f))
        };
        // one frame in two fragments: joined
        let v = seq(vec![], vec![vec![1, 2], vec![3]]);
        assert_eq!(&*jpeg_stream(&v, 0, 1).unwrap(), [1, 2, 3]);
        // one fragment per frame
        let v = seq(vec![], vec![vec![1, 2], vec![3, 4]]);
        assert_eq!(&*jpeg_stream(&v, 1, 2).unwrap(), [3, 4]);
        // two frames in three fragments, told apart by the offset table (item headers: 8 bytes)
        let v = seq(vec![0, 20], vec![vec![1, 2], vec![3, 4], vec![5, 6]]);
        assert_eq!(&*jpeg_stream(&v, 0, 2).unwrap(), [1, 2, 3, 4]);
        assert_eq!(&*jpeg_stream(&v, 1, 2).unwrap(), [5, 6]);
        // without one, or with one that points between fragments: a sentence
        let v = seq(vec![], vec![vec![1, 2], vec![3, 4], vec![5, 6]]);
        let e = jpeg_stream(&v, 0, 2).unwrap_err().to_string();
        assert!(e.contains("2 frames in 3 fragments"), "{e}");
        let v = seq(vec![0, 7], vec![vec![1, 2], vec![3, 4], vec![5, 6]]);
        let e = jpeg_stream(&v, 1, 2).unwrap_err().to_string();
        assert!(e.contains("byte 7"), "{e}");
    }

    #[test]
    fn rle_decodes_literal_and_replicate_runs_into_16_bit_samples() {
        // 4 pixels: 0x0102, 0x0102, 0x0103, 0xff04. High bytes: replicate 01 ×3, literal ff;
        // low bytes: two literal runs of two.
        let hi = [0xfeu8, 0x01, 0x00, 0xff];
        let lo = [0x01u8, 0x02, 0x02, 0x01, 0x03, 0x04];
        let mut f = header(&[64, 64 + hi.len() as u32]);
        f.extend_from_slice(&hi);
        f.extend_from_slice(&lo);
        let got = decode_rle(&f, 4, 2).unwrap();
        let vals: Vec<u16> = got
            .chunks_exact(2)
            .map(|c| u16::from_ne_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(vals, [0x0102, 0x0102, 0x0103, 0xff04]);
    }

    #[test]
    fn damaged_rle_is_an_error_not_a_panic() {
        let hi = [0xfeu8, 0x01, 0x00, 0xff];
        let lo = [0x01u8, 0x02, 0x02, 0x01, 0x03, 0x04];
        let mut good = header(&[64, 68]);
        good.extend_from_slice(&hi);
        good.extend_from_slice(&lo);
        // every truncation, and every offset pointing anywhere, answers without panicking
        for cut in 0..good.len() {
            let _ = decode_rle(&good[..cut], 4, 2);
        }
        for off in [0u32, 3, 63, 200, u32::MAX] {
            let mut f = good.clone();
            f[8..12].copy_from_slice(&off.to_le_bytes());
            assert!(decode_rle(&f, 4, 2).is_err() || off == 68);
        }
        let short = decode_rle(&good[..good.len() - 2], 4, 2)
            .unwrap_err()
            .to_string();
        assert!(short.contains("damaged"), "{short}");
        let wrong = decode_rle(&good, 4, 1).unwrap_err().to_string();
        assert!(wrong.contains("2 segment(s)"), "{wrong}");
    }
}
