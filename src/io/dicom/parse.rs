//! One DICOM file's header: what series assembly needs, read without touching the pixel data.
//!
//! Every file of a folder is parsed up to (not including) Pixel Data first, so a folder of
//! hundreds of images costs header bytes only until one series is chosen; the pixels of that
//! series alone are decoded later ([`super::pixels`]). A multi-frame (enhanced) image yields one
//! [`Frame`] per frame from its functional groups, so single-frame and multi-frame series go
//! through the same assembly.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemDicomObject;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

use crate::{Error, Result};

/// Largest image side (rows or columns) accepted; CT images are 512 or 1024 pixels wide.
pub const MAX_SIDE: u32 = 4096;
/// Most frames one multi-frame file may announce.
pub const MAX_FRAMES: u32 = 8192;

/// Whether `bytes` start like a DICOM Part 10 file ("DICM" after the 128-byte preamble, or at 0).
pub fn sniff(bytes: &[u8]) -> bool {
    bytes.get(128..132) == Some(b"DICM") || bytes.get(0..4) == Some(b"DICM")
}

/// The identifying attributes of the source, copied into a SEG so a PACS files it with its study.
/// They are never printed: `Debug` shows nothing of them.
#[derive(Clone, Default)]
pub struct Identity {
    pub(crate) values: Vec<(Tag, String)>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity(<{} attributes withheld>)", self.values.len())
    }
}

/// Patient and study attributes the SEG inherits (DICOM's Patient and General Study modules).
pub(crate) const IDENTITY_TAGS: [Tag; 9] = [
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::ACCESSION_NUMBER,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
];

/// One image plane: a frame of a file, where it lies and how its values become HU.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Frame number inside that file (0 for single-frame images).
    pub frame: u32,
    /// Image Position (Patient) of the first pixel, LPS mm.
    pub pos: Option<[f64; 3]>,
    /// Image Orientation (Patient): row direction then column direction.
    pub iop: Option<[f64; 6]>,
    /// Pixel Spacing: between rows, then between columns (mm).
    pub spacing: Option<[f64; 2]>,
    /// Rescale Slope (1 when absent).
    pub slope: f64,
    /// Rescale Intercept (0 when absent).
    pub inter: f64,
}

/// What series assembly needs to know about one file.
#[derive(Debug, Clone)]
pub struct Header {
    pub file: usize,
    pub transfer_syntax: String,
    pub sop_class: String,
    pub sop_instance: String,
    pub study_uid: String,
    pub series_uid: String,
    pub frame_of_reference: Option<String>,
    pub modality: String,
    pub series_description: String,
    pub series_number: Option<i64>,
    pub image_type: Vec<String>,
    pub rows: u32,
    pub cols: u32,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
    /// Pixel Representation 1: two's complement samples.
    pub signed: bool,
    pub frames: Vec<Frame>,
    pub identity: Identity,
}

/// What a file turned out to be.
pub enum Parsed {
    /// An image with pixel geometry.
    Image(Box<Header>),
    /// Not a DICOM file at all (a README, a DICOMDIR-less viewer's files, a thumbnail).
    NotDicom,
    /// A DICOM object without an image (DICOMDIR, a report, a presentation state).
    NoImage,
}

/// Parse the header of one file (everything before Pixel Data).
pub fn header(file: usize, bytes: &[u8]) -> Result<Parsed> {
    if !sniff(bytes) {
        return Ok(Parsed::NotDicom);
    }
    let obj = open(bytes, true)?;
    let meta = obj.meta();
    let ts = trim(meta.transfer_syntax());
    let sop_class =
        text(&obj, tags::SOP_CLASS_UID).unwrap_or_else(|| trim(meta.media_storage_sop_class_uid()));
    let rows = int(&obj, tags::ROWS);
    let cols = int(&obj, tags::COLUMNS);
    let (Some(rows), Some(cols)) = (rows, cols) else {
        return Ok(Parsed::NoImage);
    };
    if rows <= 0 || cols <= 0 || rows > i64::from(MAX_SIDE) || cols > i64::from(MAX_SIDE) {
        return Err(Error::BadHeader(format!(
            "the image is {rows} rows × {cols} columns; this reader accepts 1 to {MAX_SIDE} on \
             each side"
        )));
    }
    let nframes = int(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1);
    if nframes < 1 || nframes > i64::from(MAX_FRAMES) {
        return Err(Error::BadHeader(format!(
            "the file announces {nframes} frames; this reader accepts 1 to {MAX_FRAMES}"
        )));
    }
    let samples = int(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let bits = int(&obj, tags::BITS_ALLOCATED).unwrap_or(16);
    let mut identity = Identity::default();
    for t in IDENTITY_TAGS {
        if let Some(v) = text(&obj, t) {
            identity.values.push((t, v));
        }
    }
    let frames = frames(&obj, nframes as u32);
    Ok(Parsed::Image(Box::new(Header {
        file,
        transfer_syntax: ts,
        sop_class,
        sop_instance: text(&obj, tags::SOP_INSTANCE_UID)
            .unwrap_or_else(|| trim(meta.media_storage_sop_instance_uid())),
        study_uid: text(&obj, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
        series_uid: text(&obj, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
        frame_of_reference: text(&obj, tags::FRAME_OF_REFERENCE_UID),
        modality: text(&obj, tags::MODALITY).unwrap_or_default(),
        series_description: text(&obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
        series_number: int(&obj, tags::SERIES_NUMBER),
        image_type: strings(&obj, tags::IMAGE_TYPE),
        rows: rows as u32,
        cols: cols as u32,
        samples_per_pixel: u16::try_from(samples).unwrap_or(0),
        bits_allocated: u16::try_from(bits).unwrap_or(0),
        signed: int(&obj, tags::PIXEL_REPRESENTATION) == Some(1),
        frames,
        identity,
    })))
}

/// Open a file from memory; `header_only` stops before Pixel Data.
pub fn open(bytes: &[u8], header_only: bool) -> Result<DefaultDicomObject> {
    super::lengths::check(bytes)?;
    let mut opts = OpenFileOptions::new();
    if header_only {
        opts = opts.read_until(tags::PIXEL_DATA);
    }
    opts.from_reader(bytes)
        .map_err(|e| Error::NotDicom(format!("the DICOM file cannot be parsed ({e})")))
}

/// One [`Frame`] per frame: top-level attributes for classic images, functional groups
/// (per-frame first, then shared) for enhanced multi-frame images.
fn frames(obj: &InMemDicomObject, n: u32) -> Vec<Frame> {
    let shared = first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items());
    let top = Frame {
        frame: 0,
        pos: fixed::<3>(obj, tags::IMAGE_POSITION_PATIENT),
        iop: fixed::<6>(obj, tags::IMAGE_ORIENTATION_PATIENT),
        spacing: fixed::<2>(obj, tags::PIXEL_SPACING),
        slope: float(obj, tags::RESCALE_SLOPE).unwrap_or(1.0),
        inter: float(obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0),
    };
    if shared.is_none() && per_frame.is_none() {
        return (0..n)
            .map(|f| Frame {
                frame: f,
                ..top.clone()
            })
            .collect();
    }
    (0..n)
        .map(|f| {
            let own = per_frame.and_then(|items| items.get(f as usize));
            let groups = [own, shared];
            let find = |seq: Tag, tag: Tag| -> Option<Vec<f64>> {
                groups
                    .iter()
                    .flatten()
                    .filter_map(|g| first_item(g, seq))
                    .find_map(|item| floats(item, tag))
            };
            let arr = |seq: Tag, tag: Tag, fallback: Option<Vec<f64>>| find(seq, tag).or(fallback);
            let take = |v: Option<Vec<f64>>| v.and_then(|v| v.first().copied());
            Frame {
                frame: f,
                pos: arr(
                    tags::PLANE_POSITION_SEQUENCE,
                    tags::IMAGE_POSITION_PATIENT,
                    top.pos.map(|p| p.to_vec()),
                )
                .and_then(|v| to_fixed(&v)),
                iop: arr(
                    tags::PLANE_ORIENTATION_SEQUENCE,
                    tags::IMAGE_ORIENTATION_PATIENT,
                    top.iop.map(|p| p.to_vec()),
                )
                .and_then(|v| to_fixed(&v)),
                spacing: arr(
                    tags::PIXEL_MEASURES_SEQUENCE,
                    tags::PIXEL_SPACING,
                    top.spacing.map(|p| p.to_vec()),
                )
                .and_then(|v| to_fixed(&v)),
                slope: take(find(
                    tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
                    tags::RESCALE_SLOPE,
                ))
                .unwrap_or(top.slope),
                inter: take(find(
                    tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
                    tags::RESCALE_INTERCEPT,
                ))
                .unwrap_or(top.inter),
            }
        })
        .collect()
}

fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.get(tag).and_then(|e| e.items()).and_then(|i| i.first())
}

fn trim(s: &str) -> String {
    s.trim_end_matches(['\0', ' ']).trim().to_string()
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let v = obj.get(tag)?.to_str().ok()?;
    let t = trim(&v);
    (!t.is_empty()).then_some(t)
}

fn strings(obj: &InMemDicomObject, tag: Tag) -> Vec<String> {
    obj.get(tag)
        .and_then(|e| e.to_multi_str().ok())
        .map(|v| v.iter().map(|s| trim(s).to_uppercase()).collect())
        .unwrap_or_default()
}

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    obj.get(tag)?.to_int::<i64>().ok()
}

fn float(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    let v = obj.get(tag)?.to_float64().ok()?;
    v.is_finite().then_some(v)
}

fn floats(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    v.iter().all(|x| x.is_finite()).then_some(v)
}

fn fixed<const N: usize>(obj: &InMemDicomObject, tag: Tag) -> Option<[f64; N]> {
    floats(obj, tag).and_then(|v| to_fixed(&v))
}

fn to_fixed<const N: usize>(v: &[f64]) -> Option<[f64; N]> {
    v.get(..N)?.try_into().ok()
}
