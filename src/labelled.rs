//! Folders of labelled cases (`DIR/images/NAME.nii.gz` beside `DIR/masks/NAME.nii.gz`), as
//! `train`, `eval` and `synth` use them, and the case-level score `train` ranks checkpoints by.
//!
//! Why a case-level score: the cheap measure (pooled Dice of the network alone over a few
//! hundred validation slices) ranks checkpoints by how the network's raw output overlaps the
//! label, but a user gets the network *after* the CRF, and the CRF forgives a network that
//! over-calls (it removes the speckle) while it cannot restore what the network missed. In the
//! third-anatomy fine-tune the slice measure kept step 500, which scored 0.806 / 0.607 case Dice
//! with the CRF on the two validation parts against 0.824 / 0.633 for the last step.

use std::fs;
use std::path::{Path, PathBuf};

use ndarray::Array3;

use crate::crf::CrfConfig;
use crate::io::Scan;
use crate::metrics::{Confusion, LesionDetection};
use crate::model::IchNet;
use crate::model::train::{Score, Validator};
use crate::pipeline::{self, Prepared, SegmentOptions};
use crate::{Error, Result};
use burn::prelude::Device;

/// One labelled case: its name and the image and mask files.
pub type Case = (String, PathBuf, PathBuf);

/// List the cases of a data folder, sorted by name.
pub fn list_cases(dir: &Path) -> Result<Vec<Case>> {
    let images = dir.join("images");
    let masks = dir.join("masks");
    let mut out = Vec::new();
    for e in fs::read_dir(&images).map_err(|e| Error::io(&images, e))? {
        let p = e.map_err(|e| Error::io(&images, e))?.path();
        let Some(file) = p.file_name().and_then(|f| f.to_str()).map(str::to_owned) else {
            continue;
        };
        let Some(name) = file
            .strip_suffix(".nii.gz")
            .or_else(|| file.strip_suffix(".nii"))
        else {
            continue;
        };
        let m = masks.join(&file);
        if m.is_file() {
            out.push((name.to_owned(), p.clone(), m));
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{}: no image/mask pairs (expected images/NAME.nii.gz with masks/NAME.nii.gz)",
            dir.display()
        )));
    }
    Ok(out)
}

/// Read a scan file.
pub fn read_scan(path: &Path) -> Result<Scan> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    Scan::from_bytes(&bytes).map_err(|e| crate::io::in_file(&path.display().to_string(), e))
}

/// Read a mask file as 0/1 in stack order, checked against the image's grid.
pub fn read_mask(path: &Path, image: &Scan) -> Result<Array3<u8>> {
    let m = read_scan(path)?;
    if m.stack.hu.dim() != image.stack.hu.dim() {
        return Err(Error::InvalidInput(format!(
            "{}: mask dims {:?} differ from the image's {:?}",
            path.display(),
            m.stack.hu.dim(),
            image.stack.hu.dim()
        )));
    }
    Ok(m.stack.hu.mapv(|v| u8::from(v > 0.5)))
}

/// One case ready for the network: the image read and prepared (brain found, network input
/// built; `assume_hu` as `segment --assume-hu`) and its mask on the image's grid. What `eval`
/// and the checkpoint validation both start every case with.
pub fn open_case(image: &Path, mask: &Path, assume_hu: bool) -> Result<(Prepared, Array3<u8>)> {
    let bytes = fs::read(image).map_err(|e| Error::io(image, e))?;
    let prep = Prepared::new(&bytes, assume_hu)
        .map_err(|e| crate::io::in_file(&image.display().to_string(), e))?;
    let truth = read_mask(mask, prep.scan())?;
    Ok((prep, truth))
}

/// Cases with at least this much true blood are the ones whose Dice is averaged (the model
/// card's measure: on a speck of blood Dice is noise).
pub const SCORED_ML: f64 = 1.0;

/// Mean Dice over the validation cases with ≥ [`SCORED_ML`] of blood, each case segmented the
/// way `segment` does it: the brain found, the network over every slice, the CRF, the
/// threshold, components under the pipeline's smallest size dropped.
///
/// Files are read again at every checkpoint instead of being held: a thin-slice case's scan and
/// mask take tens of MB, and reading is a small part of a validation next to the network.
pub struct CaseDice {
    cases: Vec<Case>,
    /// How every case is segmented: `segment`'s sequence with this CRF and threshold, the
    /// values taken as HU (training data are HU by construction; `train` reads them as such).
    opts: SegmentOptions,
    scored: usize,
}

impl CaseDice {
    /// Validate on the cases of `dir` with the CRF `crf`. Every mask is read once here, so a
    /// damaged file or a folder with nothing to score is refused before training starts.
    pub fn new(dir: &Path, crf: CrfConfig, threshold: f32) -> Result<Self> {
        let opts = SegmentOptions {
            threshold,
            crf: Some(crf),
            assume_hu: true,
            ..SegmentOptions::default()
        };
        opts.check()?;
        let cases = list_cases(dir)?;
        let mut scored = 0;
        for (_, img, msk) in &cases {
            let scan = read_scan(img)?;
            let truth = read_mask(msk, &scan)?;
            scored += usize::from(scan.stack.mask_ml(&truth) >= SCORED_ML);
        }
        if scored == 0 {
            return Err(Error::InvalidInput(format!(
                "{}: none of its {} cases has {SCORED_ML} mL of blood or more, so case Dice \
                 cannot rank checkpoints; add cases with bleeds or validate by slices",
                dir.display(),
                cases.len()
            )));
        }
        Ok(CaseDice {
            cases,
            opts,
            scored,
        })
    }

    /// How many cases there are, and how many of them are scored.
    pub fn counts(&self) -> (usize, usize) {
        (self.cases.len(), self.scored)
    }
}

impl Validator for CaseDice {
    fn measure(&self) -> &'static str {
        "case-dice"
    }

    fn score(&mut self, model: &IchNet, device: &Device) -> Result<Score> {
        let mut dice = Vec::with_capacity(self.scored);
        let (mut lesions, mut found) = (0usize, 0usize);
        let (mut clean, mut clean_max_ml) = (0usize, 0.0f64);
        for (_, img, msk) in &self.cases {
            let (mut prep, truth) = open_case(img, msk, self.opts.assume_hu)?;
            let pred = prep.segment(model, device, &self.opts, &mut |_| true)?.mask;
            let stack = &prep.scan().stack;
            let true_ml = stack.mask_ml(&truth);
            if true_ml >= SCORED_ML {
                dice.push(Confusion::new(&pred, &truth)?.dice());
            }
            if true_ml == 0.0 {
                clean += 1;
                clean_max_ml = clean_max_ml.max(stack.mask_ml(&pred));
            }
            let l = LesionDetection::new(&pred, &truth, pipeline::min_component_voxels(stack))?;
            lesions += l.lesions;
            found += l.found;
        }
        let value = dice.iter().sum::<f64>() / dice.len().max(1) as f64;
        let mut detail = format!(
            "case Dice {value:.4} over {} cases ≥ {SCORED_ML} mL; lesions found {found}/{lesions}",
            dice.len()
        );
        if clean > 0 {
            detail.push_str(&format!(
                "; up to {clean_max_ml:.2} mL on {clean} blood-free cases"
            ));
        }
        Ok(Score {
            value: value as f32,
            detail,
        })
    }
}
