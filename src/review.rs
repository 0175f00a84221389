//! A reader's review of the model's mask: edits measured by the model's own code, then sign-off.
//!
//! Every clinical use of an automatic segmentation keeps a human in the loop: a reader looks at
//! the overlay, corrects it and signs the volume. The page's viewer edits the mask on the grid of
//! the file the user opened (a viewer of that file holds its voxels in file order, `i` fastest),
//! so a [`Review`] takes masks in that order and maps them to the stack with the reader's own
//! reorientation ([`Scan::from_file_order`]); the measurements are [`metrics::measure`], the same
//! call that measured the model's mask, and the mask file is written by the same writer as the
//! model's ([`Scan::mask_nifti_gz`]). Nothing here knows about browsers.

use ndarray::{Array3, Zip};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::{Scan, Storage, write_nifti_gz};
use crate::metrics::{self, Measures, Midline};

/// Longest reader name kept in a sign-off (characters): initials or a name, never a paragraph.
pub const MAX_READER_CHARS: usize = 100;

/// A segmentation under review: the scan, its midline and the model's mask.
#[derive(Debug)]
pub struct Review {
    scan: Scan,
    midline: Option<Midline>,
    /// The model's final mask, stack order (0/1).
    model: Array3<u8>,
    model_volume_ml: f64,
}

/// Who signed, and when: the reader's own name or initials (the sign-off's point; never the
/// patient's) and the time the browser gave, as ISO 8601 text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignOff {
    /// The reader's name or initials, trimmed.
    pub reader: String,
    /// When the reader accepted, ISO 8601 (e.g. `2026-11-30T07:12:03.120Z`).
    pub signed_at: String,
}

impl SignOff {
    /// A sign-off, refused with a sentence when the name is empty, too long or holds control
    /// characters (a name is one line), or the time is not an ISO 8601 date and time.
    pub fn new(reader: &str, signed_at: &str) -> Result<SignOff> {
        let reader = reader.trim();
        if reader.is_empty() {
            return Err(Error::InvalidInput(
                "type your name or initials before signing: a sign-off names its reader".into(),
            ));
        }
        let chars = reader.chars().count();
        if chars > MAX_READER_CHARS {
            return Err(Error::InvalidInput(format!(
                "the reader's name has {chars} characters; at most {MAX_READER_CHARS} are kept \
                 (initials are enough)"
            )));
        }
        if reader.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "the reader's name holds a line break or another control character: type it on \
                 one line"
                    .into(),
            ));
        }
        if !looks_like_iso8601(signed_at) {
            return Err(Error::InvalidInput(format!(
                "the sign-off time {signed_at:?} is not an ISO 8601 date and time \
                 (YYYY-MM-DDTHH:MM:SS…)"
            )));
        }
        Ok(SignOff {
            reader: reader.to_string(),
            signed_at: signed_at.to_string(),
        })
    }
}

/// `YYYY-MM-DDTHH:MM:SS` followed by nothing, fractions, `Z` or an offset (what
/// `Date.toISOString()` writes); no calendar check beyond the shape.
fn looks_like_iso8601(s: &str) -> bool {
    let b = s.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:dd";
    b.len() >= shape.len()
        && b.len() <= 40
        && shape.iter().zip(b).all(|(&p, &c)| {
            if p == b'd' {
                c.is_ascii_digit()
            } else {
                c == p
            }
        })
        && b[shape.len()..]
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'Z' | b'+' | b'-' | b':'))
}

/// What the review adds to the report: how the final mask differs from the model's, and who
/// signed it (if anyone yet).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReviewRecord {
    /// The model's volume, mL (the report's `volume_ml` is the final mask's).
    pub model_volume_ml: f64,
    /// The final (edited) mask's volume, mL.
    pub final_volume_ml: f64,
    /// Voxels whose label differs from the model's (added + removed).
    pub edited_voxels: usize,
    /// Voxels the reader added.
    pub added_voxels: usize,
    /// Voxels the reader removed.
    pub removed_voxels: usize,
    /// Whether a reader accepted this mask.
    pub signed: bool,
    /// The reader's name or initials, once signed.
    pub reader: Option<String>,
    /// When the reader signed (ISO 8601), once signed.
    pub signed_at: Option<String>,
}

/// A reviewed mask: its measurements (the report's fields, replacing the model's), the review
/// record, and the mask file.
#[derive(Debug, Clone, Serialize)]
pub struct Reviewed {
    /// Volume, ABC/2, haematomas, slices with blood of the final mask.
    #[serde(flatten)]
    pub measures: Measures,
    /// Model against final, and the sign-off.
    pub review: ReviewRecord,
    /// The final mask as gzipped NIfTI-1 on the input's grid (what `segment -o` writes).
    #[serde(skip)]
    pub mask_nifti_gz: Vec<u8>,
}

impl Review {
    /// A review of `model` (the model's final mask, stack order) on `scan`; `brain` gives the
    /// midline the haematomas' sides are measured from, as in the model's report.
    pub fn new(scan: Scan, brain: &Array3<u8>, model: Array3<u8>) -> Result<Review> {
        if model.dim() != scan.stack.dims() || brain.dim() != scan.stack.dims() {
            return Err(Error::InvalidInput(format!(
                "the model's mask {:?} or brain mask {:?} does not match the scan's stack {:?}",
                model.dim(),
                brain.dim(),
                scan.stack.dims()
            )));
        }
        let midline = Midline::for_scan(&scan, brain)?;
        let model_volume_ml = scan.stack.mask_ml(&model);
        Ok(Review {
            scan,
            midline,
            model,
            model_volume_ml,
        })
    }

    /// The model's mask in the file's voxel order (0/1), where a viewer of the file starts.
    pub fn model_file_order(&self) -> Result<Vec<u8>> {
        self.scan.to_file_order(&self.model)
    }

    /// The scan as a NIfTI-1 file on its own grid (HU as f32), for a viewer that cannot read the
    /// input itself: the mask's grid by construction.
    pub fn scan_nifti_gz(&self) -> Result<Vec<u8>> {
        let values = self.scan.to_file_order(&self.scan.stack.hu)?;
        let [ni, nj, nk] = self.scan.geometry().dims;
        let values = Array3::from_shape_vec((nk, nj, ni), values)
            .map_err(|e| Error::InvalidInput(format!("the scan in file order: {e}")))?;
        write_nifti_gz(&values, self.scan.geometry(), Storage::F32)
    }

    /// Measure `file_mask` (file order, non-zero = blood) as the model's mask was measured,
    /// count how it differs from the model's, and write it as the mask file; with `sign`, the
    /// record says who accepted it and when.
    pub fn review(&self, file_mask: &[u8], sign: Option<&SignOff>) -> Result<Reviewed> {
        let mut mask = self.scan.from_file_order(file_mask)?;
        mask.mapv_inplace(|v| u8::from(v != 0));
        let (mut added, mut removed) = (0usize, 0usize);
        Zip::from(&mask)
            .and(&self.model)
            .for_each(|&f, &m| match (f != 0, m != 0) {
                (true, false) => added += 1,
                (false, true) => removed += 1,
                _ => {}
            });
        let measures = metrics::measure(&mask, &self.scan.stack, self.midline.as_ref())?;
        let mask_nifti_gz = self.scan.mask_nifti_gz(&mask)?;
        Ok(Reviewed {
            review: ReviewRecord {
                model_volume_ml: self.model_volume_ml,
                final_volume_ml: measures.volume_ml,
                edited_voxels: added + removed,
                added_voxels: added,
                removed_voxels: removed,
                signed: sign.is_some(),
                reader: sign.map(|s| s.reader.clone()),
                signed_at: sign.map(|s| s.signed_at.clone()),
            },
            measures,
            mask_nifti_gz,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Prepared;

    const FIXTURE: &str = "tests/fixtures/synth/images/synth_00000.nii.gz";

    /// The fixture prepared, with a box of "blood" as the model's mask (no network needed: the
    /// review measures whatever mask it is given).
    fn review_with_box() -> (Review, Prepared, Array3<u8>) {
        let bytes = std::fs::read(FIXTURE).unwrap();
        let p = Prepared::new(&bytes, false).unwrap();
        let (nz, ny, nx) = p.scan().stack.dims();
        let mut model = Array3::<u8>::zeros((nz, ny, nx));
        for z in nz / 2 - 2..nz / 2 + 2 {
            for y in ny / 2 - 6..ny / 2 + 6 {
                for x in nx / 2 + 4..nx / 2 + 14 {
                    model[[z, y, x]] = 1;
                }
            }
        }
        let (scan, brain) = (p.scan().clone(), p.brain().clone());
        (Review::new(scan, &brain, model.clone()).unwrap(), p, model)
    }

    #[test]
    fn the_unedited_mask_measures_as_the_model_did() {
        let (r, p, model) = review_with_box();
        let file = r.model_file_order().unwrap();
        let out = r.review(&file, None).unwrap();
        assert_eq!(out.measures, p.measure(&model).unwrap());
        assert_eq!(out.review.edited_voxels, 0);
        assert_eq!(out.review.model_volume_ml, out.review.final_volume_ml);
        assert!(!out.review.signed && out.review.reader.is_none());
        // The mask file is the model's, byte for byte.
        assert_eq!(out.mask_nifti_gz, p.scan().mask_nifti_gz(&model).unwrap());
    }

    #[test]
    fn file_order_round_trips_through_the_stack() {
        let (r, p, model) = review_with_box();
        let file = r.model_file_order().unwrap();
        assert_eq!(p.scan().from_file_order(&file).unwrap(), model);
        assert!(p.scan().from_file_order(&file[1..]).is_err());
    }

    #[test]
    fn an_edit_changes_the_volume_by_the_edited_voxels_and_nothing_else() {
        let (r, p, model) = review_with_box();
        let mut file = r.model_file_order().unwrap();
        // Add 50 voxels far from the box (file order's first slab) and remove 7 of the box's.
        let mut added = 0;
        for v in file.iter_mut().skip(10) {
            if added == 50 {
                break;
            }
            if *v == 0 {
                *v = 1;
                added += 1;
            }
        }
        let mut removed = 0;
        for v in file.iter_mut().rev() {
            if removed == 7 {
                break;
            }
            if *v == 1 {
                *v = 0;
                removed += 1;
            }
        }
        let out = r.review(&file, None).unwrap();
        assert_eq!(out.review.added_voxels, 50);
        assert_eq!(out.review.removed_voxels, 7);
        assert_eq!(out.review.edited_voxels, 57);
        let voxel_ml = p.scan().stack.voxel_ml;
        let want = r.model_volume_ml + 43.0 * voxel_ml;
        assert!(
            (out.measures.volume_ml - want).abs() < 1e-9,
            "{}",
            out.measures.volume_ml
        );
        // The same numbers as measuring the edited mask directly with the model's code.
        let stack_mask = p.scan().from_file_order(&file).unwrap();
        assert_eq!(out.measures, p.measure(&stack_mask).unwrap());
        assert_ne!(stack_mask, model);
        // A second haematoma appeared: the list says so, largest first.
        assert_eq!(out.measures.haematomas.len(), 2);
        assert!(out.measures.haematomas[0].voxels > out.measures.haematomas[1].voxels);
    }

    #[test]
    fn non_zero_labels_count_as_blood_and_the_file_is_written_as_0_or_1() {
        let (r, p, model) = review_with_box();
        let file: Vec<u8> = r
            .model_file_order()
            .unwrap()
            .iter()
            .map(|&v| v * 3)
            .collect();
        let out = r.review(&file, None).unwrap();
        assert_eq!(out.review.edited_voxels, 0);
        assert_eq!(out.mask_nifti_gz, p.scan().mask_nifti_gz(&model).unwrap());
    }

    #[test]
    fn sign_off_is_recorded_and_checked() {
        let (r, _, _) = review_with_box();
        let file = r.model_file_order().unwrap();
        let s = SignOff::new("  A. Reader ", "2026-11-30T07:12:03.120Z").unwrap();
        let out = r.review(&file, Some(&s)).unwrap();
        assert!(out.review.signed);
        assert_eq!(out.review.reader.as_deref(), Some("A. Reader"));
        assert_eq!(
            out.review.signed_at.as_deref(),
            Some("2026-11-30T07:12:03.120Z")
        );
        let json = serde_json::to_value(&out).unwrap();
        assert_eq!(json["review"]["reader"], "A. Reader");
        assert!(json["volume_ml"].is_number() && json["haematomas"].is_array());
        for bad in ["", "   ", "a\nb"] {
            assert!(
                SignOff::new(bad, "2026-11-30T07:12:03Z").is_err(),
                "{bad:?}"
            );
        }
        assert!(SignOff::new(&"x".repeat(MAX_READER_CHARS + 1), "2026-11-30T07:12:03Z").is_err());
        for bad in [
            "",
            "yesterday",
            "2026-11-30",
            "2026-11-30T07:12:03Z<script>",
        ] {
            assert!(SignOff::new("AR", bad).is_err(), "{bad:?}");
        }
        assert!(SignOff::new("AR", "2026-11-30T07:12:03+01:00").is_ok());
    }

    #[test]
    fn the_scan_file_is_on_the_mask_grid() {
        let (r, p, _) = review_with_box();
        let bytes = r.scan_nifti_gz().unwrap();
        let again = crate::io::Scan::from_bytes(&bytes).unwrap();
        assert_eq!(again.stack.dims(), p.scan().stack.dims());
        assert_eq!(again.info.affine, p.scan().info.affine);
        assert_eq!(again.stack.hu, p.scan().stack.hu);
    }
}
