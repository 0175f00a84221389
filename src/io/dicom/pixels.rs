//! Pixel data of one frame → Hounsfield units.
//!
//! dicom-pixeldata undoes the transfer syntax (RLE, JPEG, deflate, byte order); the stored
//! samples are then read here as the header says (8/16/32 bits, signed or not) and rescaled with
//! the frame's own slope and intercept, so a series whose slices carry different rescale values
//! (common after PACS recompression) still lands on one HU scale.

use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;

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
        // dicom-rs 0.10's RLE decoder indexes past a damaged segment's end (found by
        // `mutated_series_never_panic`); natively that panic becomes this file's error. wasm32 has
        // no unwinding, so there the page's worker dies instead and reports it.
        #[cfg(not(target_arch = "wasm32"))]
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            obj.decode_pixel_data_frame(frame.frame)
        }))
        .map_err(|_| {
            Error::Unsupported(
                "the compressed pixel data is damaged: the decoder could not read it".into(),
            )
        })?;
        #[cfg(target_arch = "wasm32")]
        let decoded = obj.decode_pixel_data_frame(frame.frame);
        let px = decoded
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
        let (slope, inter) = (frame.slope, frame.inter);
        let put = |o: &mut f32, raw: f64| {
            let v = (raw * slope + inter) as f32;
            *o = if v.is_finite() { v } else { NONFINITE_HU };
        };
        match (bytes_per, h.signed) {
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
        Ok(())
    }
}
