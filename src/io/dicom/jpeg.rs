//! Huffman-coded sequential DCT JPEG (ITU-T T.81, frames SOF0 and SOF1) for one-component
//! images with 8- or 12-bit samples: the decoder of 12-bit "JPEG Extended" CT frames (DICOM
//! transfer syntax 1.2.840.10008.1.2.4.51, processes 2 & 4).
//!
//! **Why it is written here.** No maintained pure-Rust crate decodes 12-bit lossy JPEG (checked
//! 2026-11-30 by reading their sources): jpeg-decoder 0.3.2, the codec behind dicom-pixeldata
//! 0.10, parses a 12-bit SOF1 header and then refuses it (`UnsupportedFeature::SamplePrecision`
//! for any precision but 8 outside lossless, in `decoder.rs`); zune-jpeg 0.5.15 refuses any
//! precision but 8 while reading the frame header (`headers.rs`: "The library can only parse
//! 8-bit images"). The only other one found, a `jpeg12` module of openreadout-codecs 0.4, is part
//! of an instrument-file reader's bundle of codecs (zstd, JPEG 2000, JPEG XL, …), not a JPEG
//! crate of its own, and was not taken as a dependency for one decoder. C libraries (libjpeg,
//! libjpeg-turbo) do not build for the page's wasm32 target without a C toolchain.
//!
//! What it reads: the frame header (SOF0/SOF1, precision 8 or 12, one component), quantisation
//! tables (8- or 16-bit), Huffman tables, the restart interval (DRI) and the one scan of a
//! one-component sequential image, with its RSTn markers. Everything else is refused with a
//! sentence naming what was found: progressive (SOF2), lossless (SOF3: dicom-rs decodes it),
//! hierarchical, arithmetic coding, several components, other precisions, a height given later by
//! DNL.
//!
//! Safety on damaged input: every read is bounds-checked, every declared length is checked
//! against what is left of the stream, the frame size is compared with the caller's limit before
//! anything image-sized is allocated, every loop is bounded by the number of blocks (64
//! coefficients each). A stream that ends or breaks inside the coded data is an error naming the
//! block, not a grey image: the reader is for measurements.
//!
//! The inverse DCT is the exact separable one in `f64` (T.81 A.3.3), rounded to nearest and
//! clamped to `0..2^P`; IJG's libjpeg (the reference, `dcmdjpeg`) uses an accurate integer
//! approximation, so the two agree within one stored value (checked in `tests/dicom.rs`).

use crate::{Error, Result};

/// One decoded frame: `width × height` samples, row-major, each in `0..2^precision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// Sample precision in bits (8 or 12).
    pub precision: u8,
    pub samples: Vec<u16>,
}

/// The natural (row-major) index of each zig-zag position (T.81 Figure A.6), walked here rather
/// than typed in: anti-diagonals `d = row + col`, alternately upwards and downwards.
const ZIGZAG: [usize; 64] = {
    let mut z = [0usize; 64];
    let mut k = 0;
    let mut d = 0;
    while d < 15 {
        let mut i = 0;
        while i < 8 {
            // even diagonals run from bottom-left to top-right (row falls), odd ones the other way
            let row = if d % 2 == 0 {
                d as isize - i as isize
            } else {
                i as isize
            };
            let col = d as isize - row;
            if row >= 0 && row < 8 && col >= 0 && col < 8 {
                z[k] = (row * 8 + col) as usize;
                k += 1;
            }
            i += 1;
        }
        d += 1;
    }
    z
};

fn damaged(why: String) -> Error {
    Error::Truncated(format!("the JPEG-compressed pixels are damaged: {why}"))
}

fn ends(why: String) -> Error {
    Error::Truncated(format!("the JPEG-compressed pixels are cut short: {why}"))
}

fn refuse(what: String) -> Error {
    Error::Unsupported(format!(
        "the JPEG stream is {what}, which this reader cannot decode (it decodes Huffman-coded \
         sequential DCT, SOF0/SOF1, with one component of 8 or 12 bits)"
    ))
}

/// What a start-of-frame marker other than SOF0/SOF1 codes, for the refusal.
fn frame_kind(marker: u8) -> &'static str {
    match marker {
        0xC2 => "progressive DCT with Huffman coding (SOF2)",
        0xC3 => "lossless with Huffman coding (SOF3)",
        0xC5 => "hierarchical: differential sequential DCT (SOF5)",
        0xC6 => "hierarchical: differential progressive DCT (SOF6)",
        0xC7 => "hierarchical: differential lossless (SOF7)",
        0xC9 => "sequential DCT with arithmetic coding (SOF9)",
        0xCA => "progressive DCT with arithmetic coding (SOF10)",
        0xCB => "lossless with arithmetic coding (SOF11)",
        0xCD => "hierarchical with arithmetic coding (SOF13)",
        0xCE => "hierarchical with arithmetic coding (SOF14)",
        0xCF => "hierarchical with arithmetic coding (SOF15)",
        _ => "of an unknown kind (reserved marker FF C8)",
    }
}

/// The sample precision of the first frame header in `data` (`None` when none is found before
/// the first scan or the stream is not JPEG), to choose a decoder without decoding.
pub fn precision(data: &[u8]) -> Option<u8> {
    if data.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut pos = 2;
    loop {
        while data.get(pos) == Some(&0xFF) && data.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        if *data.get(pos)? != 0xFF {
            return None;
        }
        let m = *data.get(pos + 1)?;
        pos += 2;
        match m {
            0xD0..=0xD7 | 0x01 => continue,
            0xD8..=0xDA => return None,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*data.get(pos)?, *data.get(pos + 1)?]));
        if matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC) {
            return data.get(pos + 2).copied();
        }
        if len < 2 {
            return None;
        }
        pos += len;
    }
}

/// A Huffman table as T.81 F.2.2.3 decodes it: for each code length, the largest code and where
/// its values start.
#[derive(Clone)]
struct Huffman {
    /// `maxcode[l]`: the largest code of length `l` (1..=16), -1 when there is none.
    maxcode: [i32; 17],
    /// `offset[l]`: index in `values` of a code `c` of length `l` is `c + offset[l]`.
    offset: [i32; 17],
    values: Vec<u8>,
}

impl Huffman {
    /// From the 16 code counts and the values of a DHT table (T.81 C.2: canonical codes).
    fn new(counts: &[u8], values: &[u8], name: &str) -> Result<Self> {
        let mut maxcode = [-1i32; 17];
        let mut offset = [0i32; 17];
        let mut code: i32 = 0;
        let mut k: i32 = 0;
        for (i, &n) in counts.iter().enumerate().take(16) {
            let l = i + 1;
            let n = i32::from(n);
            if n > 0 {
                offset[l] = k - code;
                code += n;
                k += n;
                if code > 1 << l {
                    return Err(damaged(format!(
                        "{name} declares more codes of {l} bits or fewer than such codes can \
                         number"
                    )));
                }
                maxcode[l] = code - 1;
            }
            code <<= 1;
        }
        Ok(Huffman {
            maxcode,
            offset,
            values: values.to_vec(),
        })
    }
}

/// The entropy-coded bits of a scan: bytes after FF 00 un-stuffed, a marker or the end of the data
/// answered by zero bits that are counted, so reading past the data is noticed, never indexed.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    /// Bits, most significant first, left-aligned.
    buf: u64,
    /// Valid bits in `buf`.
    n: u32,
    /// How many of the last `n` bits are padding (not from the data).
    pad: u32,
    /// Padding was consumed: the coded data ran out.
    overrun: bool,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits {
            data,
            pos: 0,
            buf: 0,
            n: 0,
            pad: 0,
            overrun: false,
        }
    }

    /// The next data byte, or `None` at a marker or the end (the position then stays there).
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        if b != 0xFF {
            self.pos += 1;
            return Some(b);
        }
        if self.data.get(self.pos + 1) == Some(&0x00) {
            self.pos += 2;
            return Some(0xFF);
        }
        None
    }

    fn fill(&mut self) {
        while self.n <= 56 {
            let b = match self.byte() {
                Some(b) => b,
                None => {
                    self.pad += 8;
                    0
                }
            };
            self.buf |= u64::from(b) << (56 - self.n);
            self.n += 8;
        }
    }

    /// The next `k` (≤ 16) bits without consuming them.
    fn peek(&mut self, k: u32) -> u32 {
        if self.n < k {
            self.fill();
        }
        (self.buf >> (64 - k)) as u32
    }

    fn consume(&mut self, k: u32) {
        self.buf <<= k;
        self.n -= k;
        if self.pad > self.n {
            self.overrun = true;
            self.pad = self.n;
        }
    }

    /// `k` (≤ 16) bits as an unsigned number.
    fn take(&mut self, k: u32) -> u32 {
        if k == 0 {
            return 0;
        }
        let v = self.peek(k);
        self.consume(k);
        v
    }

    /// `s` bits as the signed value of a category-`s` difference (T.81 F.2.2.1, EXTEND).
    fn signed(&mut self, s: u32) -> i32 {
        if s == 0 {
            return 0;
        }
        let v = self.take(s) as i32;
        if v < 1 << (s - 1) {
            v - (1 << s) + 1
        } else {
            v
        }
    }

    fn decode(&mut self, t: &Huffman) -> Option<u8> {
        let bits = self.peek(16);
        for l in 1..=16u32 {
            let code = (bits >> (16 - l)) as i32;
            if code <= t.maxcode[l as usize] {
                self.consume(l);
                let i = usize::try_from(code + t.offset[l as usize]).ok()?;
                return t.values.get(i).copied();
            }
        }
        None
    }

    /// After a restart interval: the rest of the byte is fill, then RSTn with this `n`.
    fn restart(&mut self, n: u8, after: usize) -> Result<()> {
        self.buf = 0;
        self.n = 0;
        self.pad = 0;
        while self.data.get(self.pos) == Some(&0xFF) && self.data.get(self.pos + 1) == Some(&0xFF) {
            self.pos += 1;
        }
        match (self.data.get(self.pos), self.data.get(self.pos + 1)) {
            (Some(0xFF), Some(&m)) if m == 0xD0 + n => {
                self.pos += 2;
                Ok(())
            }
            (Some(0xFF), Some(&m)) => Err(damaged(format!(
                "restart marker RST{n} (FF {:02X}) expected after block {after}, found FF {m:02X}",
                0xD0 + n
            ))),
            (None, _) | (Some(0xFF), None) => Err(ends(format!(
                "the data ends at block {after}, where restart marker RST{n} was expected"
            ))),
            (Some(&b), _) => Err(damaged(format!(
                "restart marker RST{n} expected after block {after}, found data byte {b:02X}"
            ))),
        }
    }
}

struct FrameHeader {
    precision: u8,
    width: usize,
    height: usize,
    component: u8,
    table: usize,
}

/// Decodes one JPEG stream (SOI … EOI) whose frame has at most `max_pixels` samples.
pub fn decode(data: &[u8], max_pixels: usize) -> Result<Image> {
    if data.get(..2) != Some(&[0xFF, 0xD8][..]) {
        return Err(damaged(format!(
            "the stream does not start with the SOI marker FF D8 (it starts with {:02X?})",
            data.get(..data.len().min(2)).unwrap_or_default()
        )));
    }
    let mut qt: [Option<[u16; 64]>; 4] = [None; 4];
    let mut dc: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac: [Option<Huffman>; 4] = [None, None, None, None];
    let mut frame: Option<FrameHeader> = None;
    let mut interval = 0usize;
    let mut pos = 2usize;
    loop {
        let Some(&b) = data.get(pos) else {
            return Err(ends(format!(
                "the stream ends after {} bytes, before its image data (SOS)",
                data.len()
            )));
        };
        if b != 0xFF {
            return Err(damaged(format!(
                "byte {pos} is {b:02X} where a marker (FF xx) should start"
            )));
        }
        while data.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let Some(&m) = data.get(pos + 1) else {
            return Err(ends(format!(
                "the stream ends inside the marker at byte {pos}"
            )));
        };
        pos += 2;
        match m {
            0x01 | 0xD0..=0xD7 => continue,
            0xD8 => return Err(damaged(format!("a second SOI marker at byte {}", pos - 2))),
            0xD9 => {
                return Err(damaged(
                    "the stream ends (EOI) before its image data (SOS)".into(),
                ));
            }
            _ => {}
        }
        let len = match (data.get(pos), data.get(pos + 1)) {
            (Some(&a), Some(&b)) => usize::from(u16::from_be_bytes([a, b])),
            _ => {
                return Err(ends(format!(
                    "the stream ends inside the length of marker FF {m:02X} at byte {}",
                    pos - 2
                )));
            }
        };
        if len < 2 {
            return Err(damaged(format!(
                "marker FF {m:02X} declares a length of {len} bytes"
            )));
        }
        let Some(seg) = data.get(pos + 2..pos + len) else {
            return Err(ends(format!(
                "marker FF {m:02X} at byte {} declares {len} bytes but {} are left",
                pos - 2,
                data.len() - pos
            )));
        };
        pos += len;
        match m {
            0xC0 | 0xC1 => {
                if frame.is_some() {
                    return Err(damaged("a second frame header (SOF)".into()));
                }
                frame = Some(frame_header(m, seg, max_pixels)?);
            }
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC8..=0xCB | 0xCD..=0xCF => {
                return Err(refuse(frame_kind(m).into()));
            }
            0xDE | 0xDF => {
                return Err(refuse(format!(
                    "hierarchical ({} marker)",
                    if m == 0xDE { "DHP" } else { "EXP" }
                )));
            }
            0xC4 => huffman_tables(seg, &mut dc, &mut ac)?,
            0xDB => quant_tables(seg, &mut qt)?,
            0xDD => {
                let [a, b] = seg else {
                    return Err(damaged(format!(
                        "the restart interval (DRI) has {} bytes instead of 2",
                        seg.len()
                    )));
                };
                interval = usize::from(u16::from_be_bytes([*a, *b]));
            }
            0xDA => {
                let Some(f) = frame else {
                    return Err(damaged(
                        "image data (SOS) comes before any frame header (SOF)".into(),
                    ));
                };
                let (td, ta) = scan_header(seg, &f)?;
                let q = qt.get(f.table).copied().flatten().ok_or_else(|| {
                    damaged(format!(
                        "quantisation table {} is used but never defined",
                        f.table
                    ))
                })?;
                let dc = dc.get(td).and_then(Option::as_ref).ok_or_else(|| {
                    damaged(format!("DC Huffman table {td} is used but never defined"))
                })?;
                let ac = ac.get(ta).and_then(Option::as_ref).ok_or_else(|| {
                    damaged(format!("AC Huffman table {ta} is used but never defined"))
                })?;
                let rest = data.get(pos..).unwrap_or_default();
                return scan(rest, &f, &q, dc, ac, interval);
            }
            // APPn, COM, DAC, DNL before a scan, JPGn: skipped
            _ => {}
        }
    }
}

fn frame_header(marker: u8, seg: &[u8], max_pixels: usize) -> Result<FrameHeader> {
    let sof = if marker == 0xC0 { "SOF0" } else { "SOF1" };
    let [p, y0, y1, x0, x1, nf, comps @ ..] = seg else {
        return Err(damaged(format!(
            "the frame header ({sof}) has only {} bytes",
            seg.len()
        )));
    };
    if *nf != 1 {
        return Err(refuse(format!(
            "a sequential DCT frame with {nf} components (colour or several planes; a CT image \
             has one)"
        )));
    }
    if !matches!(p, 8 | 12) {
        return Err(refuse(format!(
            "a sequential DCT frame ({sof}) of {p}-bit samples (the standard allows 8 or 12)"
        )));
    }
    let height = usize::from(u16::from_be_bytes([*y0, *y1]));
    let width = usize::from(u16::from_be_bytes([*x0, *x1]));
    if height == 0 {
        return Err(refuse(
            "a frame whose height is given only after the image data (DNL marker)".into(),
        ));
    }
    if width == 0 {
        return Err(damaged(format!(
            "the frame header ({sof}) declares a width of 0"
        )));
    }
    let [c, hv, tq, ..] = comps else {
        return Err(damaged(format!(
            "the frame header ({sof}) ends before its component ({} bytes)",
            seg.len()
        )));
    };
    let pixels = width * height; // at most 65535², fits in usize on 32-bit targets
    if pixels > max_pixels {
        return Err(Error::TooLarge(format!(
            "the JPEG frame declares {width} × {height} = {pixels} pixels, more than the {max_pixels} \
             the image header allows"
        )));
    }
    let (h, v) = (hv >> 4, hv & 15);
    if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
        return Err(damaged(format!(
            "sampling factors {h} × {v} (each must be 1 to 4)"
        )));
    }
    if *tq > 3 {
        return Err(damaged(format!(
            "quantisation table {tq} (there are 0 to 3)"
        )));
    }
    Ok(FrameHeader {
        precision: *p,
        width,
        height,
        component: *c,
        table: usize::from(*tq),
    })
}

fn quant_tables(mut seg: &[u8], qt: &mut [Option<[u16; 64]>; 4]) -> Result<()> {
    while let Some((&pt, rest)) = seg.split_first() {
        let (pq, tq) = (pt >> 4, usize::from(pt & 15));
        let size = match pq {
            0 => 64,
            1 => 128,
            _ => {
                return Err(damaged(format!(
                    "quantisation table precision code {pq} (0 or 1)"
                )));
            }
        };
        let Some(values) = rest.get(..size) else {
            return Err(ends(format!(
                "quantisation table {tq} needs {size} bytes, the segment has {} left",
                rest.len()
            )));
        };
        let mut t = [0u16; 64];
        if pq == 0 {
            t.iter_mut()
                .zip(values)
                .for_each(|(t, &v)| *t = u16::from(v));
        } else {
            t.iter_mut()
                .zip(values.chunks_exact(2))
                .for_each(|(t, v)| *t = u16::from_be_bytes([v[0], v[1]]));
        }
        let slot = qt
            .get_mut(tq)
            .ok_or_else(|| damaged(format!("quantisation table {tq} (there are 0 to 3)")))?;
        *slot = Some(t);
        seg = rest.get(size..).unwrap_or_default();
    }
    Ok(())
}

fn huffman_tables(
    mut seg: &[u8],
    dc: &mut [Option<Huffman>; 4],
    ac: &mut [Option<Huffman>; 4],
) -> Result<()> {
    while let Some((&tt, rest)) = seg.split_first() {
        let (tc, th) = (tt >> 4, usize::from(tt & 15));
        let Some(counts) = rest.get(..16) else {
            return Err(ends(
                "a Huffman table (DHT) ends inside its code counts".into(),
            ));
        };
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total > 256 {
            return Err(damaged(format!(
                "a Huffman table declares {total} codes (at most 256)"
            )));
        }
        let Some(values) = rest.get(16..16 + total) else {
            return Err(ends(format!(
                "a Huffman table declares {total} values, the segment has {} left",
                rest.len() - 16
            )));
        };
        let name = match tc {
            0 => format!("DC Huffman table {th}"),
            1 => format!("AC Huffman table {th}"),
            _ => {
                return Err(damaged(format!(
                    "Huffman table class {tc} (0 for DC, 1 for AC)"
                )));
            }
        };
        let table = Huffman::new(counts, values, &name)?;
        let slot = if tc == 0 {
            dc.get_mut(th)
        } else {
            ac.get_mut(th)
        };
        *slot.ok_or_else(|| damaged(format!("{name} (there are 0 to 3)")))? = Some(table);
        seg = rest.get(16 + total..).unwrap_or_default();
    }
    Ok(())
}

/// The scan header: one component, the frame's; returns its DC and AC table numbers.
fn scan_header(seg: &[u8], f: &FrameHeader) -> Result<(usize, usize)> {
    let [ns, rest @ ..] = seg else {
        return Err(damaged("the scan header (SOS) is empty".into()));
    };
    if *ns != 1 {
        return Err(damaged(format!(
            "the scan header (SOS) names {ns} components; the frame has one"
        )));
    }
    let [cs, t, _ss, _se, _a, ..] = rest else {
        return Err(damaged(format!(
            "the scan header (SOS) has only {} bytes",
            seg.len()
        )));
    };
    if *cs != f.component {
        return Err(damaged(format!(
            "the scan is of component {cs}, the frame's component is {}",
            f.component
        )));
    }
    // Ss, Se, Ah, Al are fixed for a sequential scan; like IJG's libjpeg, other values are ignored.
    Ok((usize::from(t >> 4), usize::from(t & 15)))
}

/// The basis of the 8-point inverse DCT: `basis[x][u] = C(u)/2 · cos((2x+1)uπ/16)`.
fn idct_basis() -> [[f64; 8]; 8] {
    let mut b = [[0f64; 8]; 8];
    for (x, row) in b.iter_mut().enumerate() {
        for (u, v) in row.iter_mut().enumerate() {
            let c = if u == 0 {
                std::f64::consts::FRAC_1_SQRT_2
            } else {
                1.0
            };
            *v = c / 2.0 * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos();
        }
    }
    b
}

/// The one scan of a one-component frame: blocks in raster order, `interval` blocks between
/// restart markers (0: none).
fn scan(
    data: &[u8],
    f: &FrameHeader,
    q: &[u16; 64],
    dc: &Huffman,
    ac: &Huffman,
    interval: usize,
) -> Result<Image> {
    let (w, h) = (f.width, f.height);
    let bw = w.div_ceil(8);
    let blocks = bw * h.div_ceil(8);
    let mut samples = crate::error::try_filled(w * h, 0u16, "one decoded JPEG frame")?;
    let basis = idct_basis();
    let shift = f64::from(1u32 << (f.precision - 1));
    let top = f64::from((1u32 << f.precision) - 1);
    // T.81 F.1.2.1: DC differences of categories up to P + 3 (11 at 8 bits, 15 at 12 bits)
    let max_dc = u32::from(f.precision) + 3;
    let mut bits = Bits::new(data);
    let mut pred: i32 = 0;
    let mut rst = 0u8;
    for i in 0..blocks {
        if interval > 0 && i > 0 && i % interval == 0 {
            bits.restart(rst, i)?;
            rst = (rst + 1) % 8;
            pred = 0;
        }
        let bad = |what: &str| damaged(format!("{what} in block {} of {blocks}", i + 1));
        let mut coef = [0f64; 64];
        let t = u32::from(
            bits.decode(dc)
                .ok_or_else(|| bad("a DC code matches no symbol"))?,
        );
        if t > max_dc {
            return Err(bad(&format!(
                "a DC difference of category {t} (at most {max_dc} at {} bits)",
                f.precision
            )));
        }
        pred = pred.wrapping_add(bits.signed(t));
        coef[0] = f64::from(pred) * f64::from(q[0]);
        let mut k = 1usize;
        while k < 64 {
            let rs = bits
                .decode(ac)
                .ok_or_else(|| bad("an AC code matches no symbol"))?;
            let (r, s) = (usize::from(rs >> 4), u32::from(rs & 15));
            if s == 0 {
                if r != 15 {
                    break; // end of block
                }
                k += 16;
                continue;
            }
            k += r;
            let (Some(&zz), Some(&qk)) = (ZIGZAG.get(k), q.get(k)) else {
                return Err(bad(&format!("coefficient {k} (there are 64)")));
            };
            coef[zz] = f64::from(bits.signed(s)) * f64::from(qk);
            k += 1;
        }
        if k > 64 {
            return Err(bad(&format!("a run of zeros past coefficient 63 (to {k})")));
        }
        if bits.overrun {
            let at = i + 1;
            return Err(
                match (bits.data.get(bits.pos), bits.data.get(bits.pos + 1)) {
                    (Some(_), Some(0xD9)) => ends(format!(
                        "the coded data ends (EOI marker) inside block {at} of {blocks}"
                    )),
                    (Some(_), Some(&m)) => damaged(format!(
                        "marker FF {m:02X} breaks into the coded data inside block {at} of {blocks}"
                    )),
                    _ => ends(format!("the coded data ends inside block {at} of {blocks}")),
                },
            );
        }
        // rows (vertical frequency v fixed) then columns; rows of zeros (most of them, after
        // quantisation) stay zero and are skipped
        let mut tmp = [0f64; 64];
        let mut live = [false; 8];
        for v in 0..8 {
            if coef[v * 8..v * 8 + 8].iter().all(|&c| c == 0.0) {
                continue;
            }
            live[v] = true;
            for x in 0..8 {
                tmp[v * 8 + x] = (0..8).map(|u| basis[x][u] * coef[v * 8 + u]).sum();
            }
        }
        let (x0, y0) = ((i % bw) * 8, (i / bw) * 8);
        for (y, by) in basis.iter().enumerate() {
            if y0 + y >= h {
                break;
            }
            for x in 0..8 {
                if x0 + x >= w {
                    break;
                }
                let s: f64 = (0..8)
                    .filter(|&v| live[v])
                    .map(|v| by[v] * tmp[v * 8 + x])
                    .sum();
                let s = (s + shift + 0.5).floor().clamp(0.0, top);
                if let Some(o) = samples.get_mut((y0 + y) * w + x0 + x) {
                    *o = s as u16;
                }
            }
        }
    }
    Ok(Image {
        width: w,
        height: h,
        precision: f.precision,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // 48 × 41 crops of the 12-bit fixture slice and IJG libjpeg's decode of them (dcmdjpeg), made
    // by tests/fixtures/dicom/make_jpeg12.py
    const SMALL: &[u8] = include_bytes!("../../../tests/fixtures/dicom/jpeg12/small12.jpg");
    const SMALL_REF: &[u8] = include_bytes!("../../../tests/fixtures/dicom/jpeg12/small12.u16");
    const RST: &[u8] = include_bytes!("../../../tests/fixtures/dicom/jpeg12/small12-rst.jpg");
    const RST_REF: &[u8] = include_bytes!("../../../tests/fixtures/dicom/jpeg12/small12-rst.u16");
    const PROGRESSIVE: &[u8] =
        include_bytes!("../../../tests/fixtures/dicom/jpeg12/progressive.jpg");
    const LOSSLESS16: &[u8] = include_bytes!("../../../tests/fixtures/dicom/jpeg12/lossless16.jpg");
    const RGB: &[u8] = include_bytes!("../../../tests/fixtures/dicom/jpeg12/rgb.jpg");

    fn reference(raw: &[u8]) -> Vec<u16> {
        raw.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    /// Byte offset of the first marker `m` (FF m) in a stream's headers.
    fn marker(data: &[u8], m: u8) -> usize {
        data.windows(2).position(|w| w == [0xFF, m]).unwrap()
    }

    #[test]
    fn zigzag_is_the_standard_order() {
        // T.81 Figure A.6: the first positions and the last, and every index once
        assert_eq!(ZIGZAG[..10], [0, 1, 8, 16, 9, 2, 3, 10, 17, 24]);
        assert_eq!(ZIGZAG[60..], [47, 55, 62, 63]);
        let mut seen = [false; 64];
        ZIGZAG.iter().for_each(|&i| seen[i] = true);
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn decodes_12_bit_streams_like_libjpeg_within_one() {
        for (name, data, raw) in [("small12", SMALL, SMALL_REF), ("small12-rst", RST, RST_REF)] {
            let img = decode(data, 48 * 41).unwrap();
            assert_eq!(
                (img.width, img.height, img.precision),
                (48, 41, 12),
                "{name}"
            );
            let want = reference(raw);
            assert_eq!(img.samples.len(), want.len());
            let worst = img
                .samples
                .iter()
                .zip(&want)
                .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
                .max()
                .unwrap();
            let off = img
                .samples
                .iter()
                .zip(&want)
                .filter(|(a, b)| a != b)
                .count();
            eprintln!(
                "{name}: largest difference from libjpeg {worst}, {off} of {} differ",
                want.len()
            );
            assert!(worst <= 1, "{name}: {worst}");
        }
        assert_eq!(precision(SMALL), Some(12));
        assert_eq!(precision(RST), Some(12));
        assert!(
            RST.windows(2).any(|w| w == [0xFF, 0xD3]),
            "the stream has restart markers"
        );
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        for data in [SMALL, RST] {
            // (a DICOM fragment has an even length: a stream may end FF D9 00)
            let eoi = data.windows(2).rposition(|w| w == [0xFF, 0xD9]).unwrap();
            for cut in 0..data.len() {
                let r = decode(&data[..cut], 48 * 41);
                if cut < eoi {
                    let Err(e) = r else {
                        panic!("cut at {cut} of {}: an image", data.len())
                    };
                    assert!(matches!(e, Error::Truncated(_)), "cut at {cut}: {e}");
                } else {
                    assert!(r.is_ok(), "only the EOI marker is missing");
                }
            }
        }
        let e = decode(&SMALL[..SMALL.len() - 40], 48 * 41)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ends inside block"), "{e}");
    }

    #[test]
    fn bit_flips_give_an_error_or_an_image_never_a_panic() {
        let (mut errors, mut images) = (0, 0);
        for data in [SMALL, RST] {
            for i in 0..data.len() {
                for bit in 0..8 {
                    let mut d = data.to_vec();
                    d[i] ^= 1 << bit;
                    match decode(&d, 48 * 41) {
                        Ok(img) => {
                            images += 1;
                            assert!(img.samples.len() == img.width * img.height);
                            assert!(img.samples.iter().all(|&s| s < 1 << img.precision));
                        }
                        Err(_) => errors += 1,
                    }
                }
            }
        }
        eprintln!("bit flips: {images} images, {errors} errors");
        // runs of 0xFF and zero-length segments, anywhere
        for i in 0..SMALL.len() {
            for fill in [[0xFF, 0xFF], [0x00, 0x00], [0xFF, 0xD9]] {
                let mut d = SMALL.to_vec();
                d.splice(i..i, fill);
                let _ = decode(&d, 48 * 41);
            }
        }
    }

    #[test]
    fn restart_markers_are_checked() {
        // RST1 → RST5: the fourth marker is wrong
        let mut d = RST.to_vec();
        let sos = marker(&d, 0xDA);
        let at = sos + d[sos..].windows(2).position(|w| w == [0xFF, 0xD1]).unwrap();
        d[at + 1] = 0xD5;
        let e = decode(&d, 48 * 41).unwrap_err().to_string();
        assert!(
            e.contains("RST1 (FF D1) expected after block 10, found FF D5"),
            "{e}"
        );
    }

    #[test]
    fn other_kinds_of_jpeg_are_refused_with_what_they_are() {
        let cases = [
            (PROGRESSIVE, "progressive DCT with Huffman coding (SOF2)"),
            (LOSSLESS16, "lossless with Huffman coding (SOF3)"),
            (RGB, "3 components"),
        ];
        for (data, what) in cases {
            let e = decode(data, 1 << 20).unwrap_err();
            assert!(matches!(e, Error::Unsupported(_)), "{e}");
            let e = e.to_string();
            assert!(e.contains(what) && e.contains("cannot decode"), "{e}");
        }
        // the 12-bit stream's frame header edited to 16-bit samples, arithmetic coding, DNL
        let sof = marker(SMALL, 0xC1);
        let mut d = SMALL.to_vec();
        d[sof + 4] = 16;
        let e = decode(&d, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("(SOF1) of 16-bit samples"), "{e}");
        d = SMALL.to_vec();
        d[sof + 1] = 0xC9;
        let e = decode(&d, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("arithmetic coding (SOF9)"), "{e}");
        d = SMALL.to_vec();
        d[sof + 5..sof + 7].copy_from_slice(&[0, 0]);
        let e = decode(&d, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("DNL"), "{e}");
    }

    #[test]
    fn a_frame_larger_than_allowed_is_refused_before_allocation() {
        let e = decode(SMALL, 48 * 41 - 1).unwrap_err();
        assert!(matches!(e, Error::TooLarge(_)), "{e}");
        assert!(e.to_string().contains("48 × 41 = 1968 pixels"), "{e}");
        let sof = marker(SMALL, 0xC1);
        let mut d = SMALL.to_vec();
        d[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        let e = decode(&d, 1 << 28).unwrap_err();
        assert!(e.to_string().contains("65535 × 65535"), "{e}");
    }

    #[test]
    fn an_8_bit_sof1_stream_decodes() {
        // the 12-bit stream relabelled as 8-bit: the coded data is the same, the samples are
        // clamped to 0..255, and nothing panics
        let sof = marker(SMALL, 0xC1);
        let mut d = SMALL.to_vec();
        d[sof + 4] = 8;
        assert_eq!(precision(&d), Some(8));
        match decode(&d, 48 * 41) {
            Ok(img) => assert!(img.samples.iter().all(|&s| s <= 255)),
            Err(e) => assert!(e.to_string().contains("category"), "{e}"),
        }
    }
}
