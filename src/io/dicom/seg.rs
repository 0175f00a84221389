//! A binary DICOM Segmentation (SEG) of the mask, so a portal can store the result back in its
//! PACS beside the source series.
//!
//! One frame per slice of the volume, in the source's own plane geometry (orientation, pixel
//! spacing and each slice's Image Position), each frame referencing the source image it was
//! computed on; the object shares the source's Study and Frame of Reference. Frames of slices that
//! were resampled (unequal spacing) carry their position but no source image.
//!
//! UIDs are under the UUID-derived root `2.25` (ISO/IEC 9834-8), built from a 128-bit hash of
//! the source series, the mask and the UID's role: the same mask of the same series always gives
//! the same file, and a different mask never shares its UIDs.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::mem::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;

use super::{InstanceRef, Source};
use crate::{Error, Result};

/// What the SEG says about how it was made.
#[derive(Debug, Clone)]
pub struct SegOptions {
    /// Content Date and Time (`YYYYMMDD`, `HHMMSS`) of the result; `None` uses the study's.
    pub created: Option<(String, String)>,
    /// Series Number of the SEG series.
    pub series_number: i32,
}

impl Default for SegOptions {
    fn default() -> Self {
        SegOptions {
            created: None,
            series_number: 9901,
        }
    }
}

/// Implementation Class UID of files written by this crate (`2.25.` + a fixed 128-bit value).
const IMPLEMENTATION_UID: &str = "2.25.160193346823580386795839461829385749117";

/// Write `mask` (file order: `i` fastest, then `j`, then slice `k`; non-zero = haemorrhage) as a
/// binary DICOM SEG of `src`.
pub(crate) fn write(src: &Source, mask: &[u8], opts: &SegOptions) -> Result<Vec<u8>> {
    let (rows, cols) = (src.rows as usize, src.cols as usize);
    let nk = src.positions.len();
    let plane = rows * cols;
    if mask.len() != plane * nk {
        return Err(Error::InvalidInput(format!(
            "the mask has {} voxels; the series' {cols}×{rows}×{nk} grid needs {}",
            mask.len(),
            plane * nk
        )));
    }
    // Pixel data: one bit per pixel, frames back to back, padded to an even length.
    let bits = plane * nk;
    let mut packed = crate::error::try_filled(bits.div_ceil(8), 0u8, "the SEG pixel data")?;
    for (p, &m) in mask.iter().enumerate() {
        if m != 0
            && let Some(b) = packed.get_mut(p / 8)
        {
            *b |= 1 << (p % 8);
        }
    }
    if packed.len() % 2 == 1 {
        packed.push(0);
    }
    let mut h = Hasher::new();
    h.bytes(src.series_uid.as_bytes());
    h.bytes(&[0]);
    h.bytes(&packed);
    let uid = |role: &str| {
        let mut g = h.clone();
        g.bytes(role.as_bytes());
        format!("2.25.{}", g.finish())
    };
    let sop_instance = uid("sop-instance");
    let series_uid = uid("series");
    let dimension_org = uid("dimension-organization");
    let frame_of_ref = src
        .frame_of_reference
        .clone()
        .unwrap_or_else(|| uid("frame-of-reference"));

    let mut o = InMemDicomObject::new_empty();
    let s = |o: &mut InMemDicomObject, tag: Tag, vr: VR, v: &str| {
        o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    };
    s(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    s(
        &mut o,
        tags::SOP_CLASS_UID,
        VR::UI,
        uids::SEGMENTATION_STORAGE,
    );
    s(&mut o, tags::SOP_INSTANCE_UID, VR::UI, &sop_instance);
    // Patient and study: copied from the source so the SEG files with its study.
    for (tag, v) in &src.identity.values {
        let vr = vr_of(*tag);
        s(&mut o, *tag, vr, v);
    }
    for t in super::parse::IDENTITY_TAGS {
        if o.get(t).is_none() {
            o.put(DataElement::new(t, vr_of(t), PrimitiveValue::Empty));
        }
    }
    let identity_value = |t: Tag| {
        src.identity
            .values
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| v.clone())
    };
    let (date, time) = opts.created.clone().unwrap_or_else(|| {
        (
            identity_value(tags::STUDY_DATE).unwrap_or_default(),
            identity_value(tags::STUDY_TIME).unwrap_or_default(),
        )
    });
    s(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, &src.study_uid);
    s(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &series_uid);
    s(&mut o, tags::MODALITY, VR::CS, "SEG");
    s(
        &mut o,
        tags::SERIES_NUMBER,
        VR::IS,
        &opts.series_number.to_string(),
    );
    s(
        &mut o,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        "ICHNet haemorrhage (research use)",
    );
    s(&mut o, tags::FRAME_OF_REFERENCE_UID, VR::UI, &frame_of_ref);
    o.put(DataElement::new(
        tags::POSITION_REFERENCE_INDICATOR,
        VR::LO,
        PrimitiveValue::Empty,
    ));
    // Enhanced General Equipment.
    s(&mut o, tags::MANUFACTURER, VR::LO, "ICHNet project");
    s(&mut o, tags::MANUFACTURER_MODEL_NAME, VR::LO, "ichnet");
    s(&mut o, tags::DEVICE_SERIAL_NUMBER, VR::LO, "1");
    s(
        &mut o,
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );
    // General and Segmentation Image.
    s(&mut o, tags::INSTANCE_NUMBER, VR::IS, "1");
    s(&mut o, tags::CONTENT_DATE, VR::DA, &date);
    s(&mut o, tags::CONTENT_TIME, VR::TM, &time);
    s(&mut o, tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY");
    s(&mut o, tags::CONTENT_LABEL, VR::CS, "ICH");
    s(
        &mut o,
        tags::CONTENT_DESCRIPTION,
        VR::LO,
        "Intracerebral haemorrhage mask by ICHNet",
    );
    o.put(DataElement::new(
        tags::CONTENT_CREATOR_NAME,
        VR::PN,
        PrimitiveValue::Empty,
    ));
    s(&mut o, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
    o.put(us(tags::SAMPLES_PER_PIXEL, 1));
    s(
        &mut o,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    o.put(us(tags::ROWS, src.rows as u16));
    o.put(us(tags::COLUMNS, src.cols as u16));
    o.put(us(tags::BITS_ALLOCATED, 1));
    o.put(us(tags::BITS_STORED, 1));
    o.put(us(tags::HIGH_BIT, 0));
    o.put(us(tags::PIXEL_REPRESENTATION, 0));
    s(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    s(&mut o, tags::NUMBER_OF_FRAMES, VR::IS, &nk.to_string());

    // The one segment.
    let mut seg = InMemDicomObject::new_empty();
    seg.put(us(tags::SEGMENT_NUMBER, 1));
    s(&mut seg, tags::SEGMENT_LABEL, VR::LO, "Haemorrhage");
    s(&mut seg, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC");
    s(&mut seg, tags::SEGMENT_ALGORITHM_NAME, VR::LO, "ICHNet");
    sq(
        &mut seg,
        tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
        vec![code("49755003", "SCT", "Morphologically Altered Structure")],
    );
    sq(
        &mut seg,
        tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
        vec![code("50960005", "SCT", "Hemorrhage")],
    );
    sq(&mut o, tags::SEGMENT_SEQUENCE, vec![seg]);

    // Multi-frame Dimension: segment number, then position.
    let mut org = InMemDicomObject::new_empty();
    s(
        &mut org,
        tags::DIMENSION_ORGANIZATION_UID,
        VR::UI,
        &dimension_org,
    );
    sq(&mut o, tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![org]);
    s(&mut o, tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D");
    let dim = |pointer: Tag, group: Tag, label: &str| {
        let mut d = InMemDicomObject::new_empty();
        d.put(DataElement::new(
            tags::DIMENSION_INDEX_POINTER,
            VR::AT,
            PrimitiveValue::from(pointer),
        ));
        d.put(DataElement::new(
            tags::FUNCTIONAL_GROUP_POINTER,
            VR::AT,
            PrimitiveValue::from(group),
        ));
        s(
            &mut d,
            tags::DIMENSION_ORGANIZATION_UID,
            VR::UI,
            &dimension_org,
        );
        s(&mut d, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
        d
    };
    sq(
        &mut o,
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            dim(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                "ReferencedSegmentNumber",
            ),
            dim(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "ImagePositionPatient",
            ),
        ],
    );

    // Shared geometry.
    let mut shared = InMemDicomObject::new_empty();
    let mut measures = InMemDicomObject::new_empty();
    s(
        &mut measures,
        tags::PIXEL_SPACING,
        VR::DS,
        &ds_list(&src.pixel_spacing),
    );
    s(
        &mut measures,
        tags::SLICE_THICKNESS,
        VR::DS,
        &ds(src.slice_step),
    );
    s(
        &mut measures,
        tags::SPACING_BETWEEN_SLICES,
        VR::DS,
        &ds(src.slice_step),
    );
    sq(&mut shared, tags::PIXEL_MEASURES_SEQUENCE, vec![measures]);
    let mut orient = InMemDicomObject::new_empty();
    s(
        &mut orient,
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        &ds_list(&src.iop),
    );
    sq(&mut shared, tags::PLANE_ORIENTATION_SEQUENCE, vec![orient]);
    sq(
        &mut o,
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![shared],
    );

    // Per frame: dimension index, position, segment, source image.
    let mut per_frame = Vec::with_capacity(nk);
    for (k, pos) in src.positions.iter().enumerate() {
        let mut f = InMemDicomObject::new_empty();
        let mut content = InMemDicomObject::new_empty();
        content.put(DataElement::new(
            tags::DIMENSION_INDEX_VALUES,
            VR::UL,
            PrimitiveValue::from([1u32, (k + 1) as u32]),
        ));
        sq(&mut f, tags::FRAME_CONTENT_SEQUENCE, vec![content]);
        let mut plane_pos = InMemDicomObject::new_empty();
        s(
            &mut plane_pos,
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            &ds_list(pos),
        );
        sq(&mut f, tags::PLANE_POSITION_SEQUENCE, vec![plane_pos]);
        let mut ident = InMemDicomObject::new_empty();
        ident.put(us(tags::REFERENCED_SEGMENT_NUMBER, 1));
        sq(&mut f, tags::SEGMENT_IDENTIFICATION_SEQUENCE, vec![ident]);
        if let Some(Some(r)) = src.slice_refs.get(k) {
            let mut source = reference(r);
            // The SEG frame is on the source slice's own grid: highdicom and viewers index by it.
            source.put(DataElement::new(
                tags::SPATIAL_LOCATIONS_PRESERVED,
                VR::CS,
                PrimitiveValue::from("YES"),
            ));
            sq(
                &mut source,
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                vec![code(
                    "121322",
                    "DCM",
                    "Source image for image processing operation",
                )],
            );
            let mut derivation = InMemDicomObject::new_empty();
            sq(&mut derivation, tags::SOURCE_IMAGE_SEQUENCE, vec![source]);
            sq(
                &mut derivation,
                tags::DERIVATION_CODE_SEQUENCE,
                vec![code("113076", "DCM", "Segmentation")],
            );
            sq(&mut f, tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]);
        }
        per_frame.push(f);
    }
    sq(
        &mut o,
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        per_frame,
    );

    // Common Instance Reference: every source instance of the series.
    let mut seen: Vec<&InstanceRef> = Vec::new();
    for r in &src.instances {
        if !seen.iter().any(|x| x.sop_instance == r.sop_instance) {
            seen.push(r);
        }
    }
    let refs: Vec<InMemDicomObject> = seen
        .iter()
        .map(|r| {
            reference(&InstanceRef {
                frame: None,
                ..(*r).clone()
            })
        })
        .collect();
    let mut series = InMemDicomObject::new_empty();
    s(
        &mut series,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &src.series_uid,
    );
    sq(&mut series, tags::REFERENCED_INSTANCE_SEQUENCE, refs);
    sq(&mut o, tags::REFERENCED_SERIES_SEQUENCE, vec![series]);

    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(packed),
    ));

    let file = o
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .implementation_class_uid(IMPLEMENTATION_UID)
                .implementation_version_name("ICHNET"),
        )
        .map_err(|e| Error::InvalidInput(format!("the SEG file meta could not be built: {e}")))?;
    let mut out = Vec::new();
    file.write_all(&mut out)
        .map_err(|e| Error::InvalidInput(format!("the SEG could not be encoded: {e}")))?;
    Ok(out)
}

fn vr_of(t: Tag) -> VR {
    match t {
        tags::PATIENT_NAME | tags::REFERRING_PHYSICIAN_NAME => VR::PN,
        tags::PATIENT_BIRTH_DATE | tags::STUDY_DATE => VR::DA,
        tags::STUDY_TIME => VR::TM,
        tags::PATIENT_SEX => VR::CS,
        tags::ACCESSION_NUMBER | tags::STUDY_ID => VR::SH,
        _ => VR::LO,
    }
}

fn us(tag: Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}

fn sq(o: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    o.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    let mut c = InMemDicomObject::new_empty();
    c.put(DataElement::new(
        tags::CODE_VALUE,
        VR::SH,
        PrimitiveValue::from(value),
    ));
    c.put(DataElement::new(
        tags::CODING_SCHEME_DESIGNATOR,
        VR::SH,
        PrimitiveValue::from(scheme),
    ));
    c.put(DataElement::new(
        tags::CODE_MEANING,
        VR::LO,
        PrimitiveValue::from(meaning),
    ));
    c
}

fn reference(r: &InstanceRef) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    o.put(DataElement::new(
        tags::REFERENCED_SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(r.sop_class.as_str()),
    ));
    o.put(DataElement::new(
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(r.sop_instance.as_str()),
    ));
    if let Some(f) = r.frame {
        o.put(DataElement::new(
            tags::REFERENCED_FRAME_NUMBER,
            VR::IS,
            PrimitiveValue::from(f.to_string()),
        ));
    }
    o
}

/// A decimal string of at most 16 characters (DICOM's DS limit), as precise as fits.
fn ds(v: f64) -> String {
    for prec in (0..=15).rev() {
        let t = format!("{v:.prec$}");
        let t = if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t
        };
        let t = if t == "-0" { "0".to_string() } else { t };
        if t.len() <= 16 {
            return t;
        }
    }
    format!("{v:.0}")
}

fn ds_list(v: &[f64]) -> String {
    v.iter().map(|&x| ds(x)).collect::<Vec<_>>().join("\\")
}

/// 128-bit FNV-1a: a stable, dependency-free hash for deterministic UIDs (not for security).
#[derive(Clone)]
struct Hasher(u128);

impl Hasher {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    fn new() -> Self {
        Hasher(Self::OFFSET)
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u128::from(x);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }
    fn finish(&self) -> u128 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        assert_eq!(ds(0.5), "0.5");
        assert_eq!(ds(-0.0), "0");
        assert_eq!(ds(-123.456789012), "-123.456789012");
        assert!(ds(-123456.123456789).len() <= 16);
        assert!(ds(1e20).len() <= 21);
    }
}
