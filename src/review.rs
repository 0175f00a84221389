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
use crate::io::{Affine, Scan, Storage, write_nifti_gz};
use crate::metrics::{self, Measures, Midline};
use crate::registration::compare::{Comparison, Segmented};
use crate::registration::{Image, RegistrationConfig, invert};

/// Longest reader name kept in a sign-off (characters): initials or a name, never a paragraph.
pub const MAX_READER_CHARS: usize = 100;

/// A segmentation under review: the scan, its midline and the model's mask.
#[derive(Debug)]
pub struct Review {
    scan: Scan,
    /// The brain mask, stack order: what registration compares a follow-up on.
    brain: Array3<u8>,
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
            brain: brain.clone(),
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

/// Whose mask of a result a comparison measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskSource {
    /// The model's mask, as segmented (no mask given, or one equal to the model's).
    Model,
    /// The reader's edited mask (it differs from the model's).
    Reader,
}

/// Which masks a [`Compared`] measured, per scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ComparedMasks {
    /// The baseline's.
    pub baseline: MaskSource,
    /// The follow-up's.
    pub followup: MaskSource,
}

/// Two results under review compared ([`compare`]): the core's comparison, whose masks it
/// measured, and what a viewer of the baseline file needs to show the follow-up's blood on it.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    /// What `ichnet compare --json` reports as `comparison`.
    pub comparison: Comparison,
    /// Model's or reader's mask, per scan.
    pub masks: ComparedMasks,
    /// The follow-up's mask on the baseline's grid (trilinear ≥ ½, display only), in the
    /// baseline FILE's voxel order (`i` fastest), 0/1.
    #[serde(skip)]
    pub followup_in_baseline: Vec<u8>,
    /// The same as a gzipped NIfTI-1 on the baseline's grid (`followup_mask_in_baseline.nii.gz`).
    #[serde(skip)]
    pub followup_in_baseline_nifti_gz: Vec<u8>,
    /// Baseline world (RAS+ mm) → follow-up world: where a point of the baseline lies on the
    /// follow-up, for linked views.
    #[serde(skip)]
    pub baseline_to_followup: Affine,
    /// Its inverse: follow-up world → baseline world.
    #[serde(skip)]
    pub followup_to_baseline: Affine,
}

impl Review {
    /// The mask a comparison measures: the model's (`None`), or `file_mask` (file order,
    /// non-zero = blood), which counts as the reader's only where it differs from the model's.
    fn comparison_mask(
        &self,
        file_mask: Option<&[u8]>,
        what: &str,
    ) -> Result<(Option<Array3<u8>>, MaskSource)> {
        let Some(file) = file_mask else {
            return Ok((None, MaskSource::Model));
        };
        let mut mask = self
            .scan
            .from_file_order(file)
            .map_err(|e| Error::InvalidInput(format!("the {what}'s mask: {e}")))?;
        mask.mapv_inplace(|v| u8::from(v != 0));
        if mask == self.model {
            Ok((None, MaskSource::Model))
        } else {
            Ok((Some(mask), MaskSource::Reader))
        }
    }

    fn segmented<'a>(&'a self, mask: &'a Array3<u8>, affine: &'a Affine) -> Segmented<'a> {
        Segmented {
            image: Image {
                hu: &self.scan.stack.hu,
                brain: &self.brain,
                affine,
            },
            mask,
            voxel_ml: self.scan.stack.voxel_ml,
        }
    }
}

/// Compare a follow-up result with its baseline, as `ichnet compare` does after segmenting:
/// register the follow-up's scan to the baseline's, then measure each mask on its own grid
/// ([`crate::registration::compare::compare`]). Each mask is the model's (`None`) or the
/// reader's current one (file order), and [`Compared::masks`] says which was measured. Two
/// results of the same scan (identical voxels and geometry) are refused: that is a file chosen
/// twice, not a follow-up.
pub fn compare(
    baseline: (&Review, Option<&[u8]>),
    followup: (&Review, Option<&[u8]>),
    cfg: &RegistrationConfig,
) -> Result<Compared> {
    let (b, f) = (baseline.0, followup.0);
    if b.scan.info.affine == f.scan.info.affine && b.scan.stack.hu == f.scan.stack.hu {
        return Err(Error::InvalidInput(
            "the baseline and the follow-up are the same scan (identical voxels and geometry): \
             choose the later CT as the follow-up"
                .into(),
        ));
    }
    let (bm, bsrc) = b.comparison_mask(baseline.1, "baseline")?;
    let (fm, fsrc) = f.comparison_mask(followup.1, "follow-up")?;
    let (ba, fa) = (b.scan.stack_affine(), f.scan.stack_affine());
    let comparison = crate::registration::compare::compare(
        b.segmented(bm.as_ref().unwrap_or(&b.model), &ba),
        f.segmented(fm.as_ref().unwrap_or(&f.model), &fa),
        cfg,
    )?;
    let baseline_to_followup = comparison.registration.transform.affine();
    Ok(Compared {
        masks: ComparedMasks {
            baseline: bsrc,
            followup: fsrc,
        },
        followup_in_baseline: b.scan.to_file_order(&comparison.followup_in_baseline)?,
        followup_in_baseline_nifti_gz: b.scan.mask_nifti_gz(&comparison.followup_in_baseline)?,
        followup_to_baseline: invert(&baseline_to_followup)?,
        baseline_to_followup,
        comparison,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Prepared;

    const FIXTURE: &str = "tests/fixtures/synth/images/synth_00000.nii.gz";

    /// A box of "blood" in the middle of a `(nz, ny, nx)` grid, `grow` voxels wider each way.
    fn blood_box((nz, ny, nx): (usize, usize, usize), grow: usize) -> Array3<u8> {
        let mut m = Array3::<u8>::zeros((nz, ny, nx));
        for z in nz / 2 - 2 - grow..nz / 2 + 2 + grow {
            for y in ny / 2 - 6 - grow..ny / 2 + 6 + grow {
                for x in nx / 2 + 4 - grow..nx / 2 + 14 + grow {
                    m[[z, y, x]] = 1;
                }
            }
        }
        m
    }

    /// The fixture prepared, with a box of "blood" as the model's mask (no network needed: the
    /// review measures whatever mask it is given).
    fn review_with_box() -> (Review, Prepared, Array3<u8>) {
        let bytes = std::fs::read(FIXTURE).unwrap();
        let p = Prepared::new(&bytes, false).unwrap();
        let model = blood_box(p.scan().stack.dims(), 0);
        let (scan, brain) = (p.scan().clone(), p.brain().clone());
        (Review::new(scan, &brain, model.clone()).unwrap(), p, model)
    }

    #[test]
    fn a_comparison_measures_the_model_or_the_reader_mask_and_maps_the_follow_up() {
        let (base, p, model) = review_with_box();
        let voxel_ml = p.scan().stack.voxel_ml;
        // The follow-up: the same head (one voxel changed, so not the same file) with the box
        // grown by 2 voxels each way.
        let grown = blood_box(p.scan().stack.dims(), 2);
        let mut scan = p.scan().clone();
        scan.stack.hu[[0, 0, 0]] += 1.0;
        let follow = Review::new(scan, p.brain(), grown.clone()).unwrap();
        let cfg = RegistrationConfig::default();
        let c = compare((&base, None), (&follow, None), &cfg).unwrap();
        let count = |m: &Array3<u8>| m.iter().filter(|&&v| v != 0).count() as f64;
        let want = (count(&grown) - count(&model)) * voxel_ml;
        assert!((c.comparison.delta_ml - want).abs() < 1e-9, "{c:?}");
        assert_eq!(
            c.masks,
            ComparedMasks {
                baseline: MaskSource::Model,
                followup: MaskSource::Model
            }
        );
        // Registration finds (about) the identity: the follow-up's mask lands on itself, in
        // the baseline file's order, and the two world maps are each other's inverse.
        let own = p.scan().to_file_order(&grown).unwrap();
        let both = own
            .iter()
            .zip(&c.followup_in_baseline)
            .filter(|(a, b)| **a != 0 && **b != 0)
            .count() as f64;
        let dice = 2.0 * both
            / (count(&grown)
                + c.followup_in_baseline
                    .iter()
                    .map(|&v| f64::from(v))
                    .sum::<f64>());
        assert!(dice > 0.95, "Dice {dice}");
        let round =
            crate::registration::affine_mul(&c.baseline_to_followup, &c.followup_to_baseline);
        for (r, row) in round.iter().enumerate() {
            for (k, v) in row.iter().enumerate() {
                assert!((v - f64::from(u8::from(r == k))).abs() < 1e-9, "{round:?}");
            }
        }
        let nifti = crate::io::Scan::from_bytes(&c.followup_in_baseline_nifti_gz).unwrap();
        assert_eq!(nifti.stack.dims(), p.scan().stack.dims());

        // The reader removed 10 voxels of the baseline's blood; the follow-up's mask given is
        // the model's own, so it still counts as the model's.
        let mut edited = base.model_file_order().unwrap();
        for v in edited.iter_mut().filter(|v| **v != 0).take(10) {
            *v = 0;
        }
        let follow_own = follow.model_file_order().unwrap();
        let r = compare((&base, Some(&edited)), (&follow, Some(&follow_own)), &cfg).unwrap();
        assert_eq!(r.masks.baseline, MaskSource::Reader);
        assert_eq!(r.masks.followup, MaskSource::Model);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["masks"]["baseline"], "reader");
        let removed = c.comparison.baseline_ml - r.comparison.baseline_ml;
        assert!((removed - 10.0 * voxel_ml).abs() < 1e-9, "{removed}");

        // Refusals name the scan they are about.
        let same = Review::new(p.scan().clone(), p.brain(), grown).unwrap();
        let e = compare((&base, None), (&same, None), &cfg).unwrap_err();
        assert!(e.to_string().contains("same scan"), "{e}");
        let e = compare((&base, None), (&follow, Some(&[0u8; 3][..])), &cfg).unwrap_err();
        assert!(e.to_string().contains("follow-up's mask"), "{e}");
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
