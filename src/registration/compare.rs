//! Baseline versus follow-up: volumes, per-haematoma change and the expansion verdict.
//!
//! Each scan is segmented on its own grid and its volumes are counted there (voxels × that
//! grid's voxel volume): resampling a mask changes its volume by partial-volume rounding, which
//! on 5 mm slices is more than the 1 mL a growth measurement needs. Registration is used only to
//! bring the follow-up's haematomas into the baseline's space, where they are matched by overlap
//! (one row per group of overlapping haematomas, so a clot that split or two that merged stay
//! one row) and shown.

use std::collections::BTreeMap;

use ndarray::Array3;
use serde::{Deserialize, Serialize};

use super::{
    Image, Registration, RegistrationConfig, Rigid, Similarity, V3, affine_apply, affine_mul,
};
use crate::error::try_filled;
use crate::metrics::{Expansion, haematoma_expansion};
use crate::{Error, Result};

/// One scan with its haemorrhage mask (from the pipeline, on the scan's own stack).
#[derive(Debug, Clone, Copy)]
pub struct Segmented<'a> {
    /// HU, brain mask and voxel-to-world affine.
    pub image: Image<'a>,
    /// Haemorrhage mask, `[z, y, x]`, non-zero inside.
    pub mask: &'a Array3<u8>,
    /// Volume of one voxel (mL), from the scan's affine.
    pub voxel_ml: f64,
}

/// What became of a haematoma between the scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present on both scans.
    Persisting,
    /// Only on the follow-up.
    New,
    /// Only on the baseline (resolved, or below the pipeline's smallest component).
    Disappeared,
}

/// One haematoma (a group of overlapping connected components) on both scans.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Haematoma {
    /// 1-based, largest baseline volume first, then new ones by follow-up volume.
    pub id: usize,
    /// Persisting, new or disappeared.
    pub status: Status,
    /// Volume on the baseline, mL (its own grid).
    pub baseline_ml: f64,
    /// Volume on the follow-up, mL (its own grid).
    pub followup_ml: f64,
    /// Follow-up minus baseline, mL.
    pub delta_ml: f64,
    /// Change relative to the baseline, %; `None` for a new haematoma.
    pub delta_percent: Option<f64>,
    /// The expansion rule applied to this haematoma.
    pub expansion: Expansion,
    /// Connected components on the baseline / follow-up that make up this haematoma.
    pub components: [usize; 2],
    /// Centroid in the baseline's world (RAS+ mm).
    pub centre_mm: V3,
}

/// The comparison of a baseline and a follow-up scan.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// How the follow-up was aligned to the baseline, and how well.
    pub registration: Registration,
    /// Total haemorrhage on the baseline, mL.
    pub baseline_ml: f64,
    /// Total haemorrhage on the follow-up, mL.
    pub followup_ml: f64,
    /// Follow-up minus baseline, mL.
    pub delta_ml: f64,
    /// Change relative to the baseline, %; `None` when the baseline has no blood.
    pub delta_percent: Option<f64>,
    /// The expansion rule on the totals, with the criteria that fired.
    pub expansion: Expansion,
    /// The verdict as one sentence.
    pub verdict: String,
    /// Every haematoma, matched across the scans.
    pub haematomas: Vec<Haematoma>,
    /// Ids of haematomas seen only on the follow-up.
    pub new: Vec<usize>,
    /// Ids of haematomas seen only on the baseline.
    pub disappeared: Vec<usize>,
    /// The follow-up's mask on the baseline's stack (trilinear ≥ ½), for display.
    #[serde(skip)]
    pub followup_in_baseline: Array3<u8>,
}

/// Register the follow-up to the baseline and compare their haemorrhage masks.
pub fn compare(
    baseline: Segmented<'_>,
    followup: Segmented<'_>,
    cfg: &RegistrationConfig,
) -> Result<Comparison> {
    for (s, what) in [(&baseline, "baseline"), (&followup, "follow-up")] {
        if s.mask.dim() != s.image.hu.dim() {
            return Err(Error::InvalidInput(format!(
                "the {what} mask is {:?} voxels but its scan is {:?} (z, y, x)",
                s.mask.dim(),
                s.image.hu.dim()
            )));
        }
    }
    let registration = super::register(baseline.image, followup.image, cfg)?;
    compare_registered(baseline, followup, registration)
}

/// [`compare`] with a registration already done (or known, in tests).
pub fn compare_registered(
    baseline: Segmented<'_>,
    followup: Segmented<'_>,
    registration: Registration,
) -> Result<Comparison> {
    let (bl, bsizes, bsums) = label(baseline.mask)?;
    let (fl, fsizes, fsums) = label(followup.mask)?;
    let (in_base, flabels) = resample(&baseline, &followup, &fl, &registration.transform)?;
    let nb = bsizes.len();
    let nf = fsizes.len();
    // Groups of overlapping components: union-find over baseline (0..nb) and follow-up
    // (nb..nb+nf) components, joined wherever they share a voxel in the baseline's space.
    let mut parent: Vec<usize> = (0..nb + nf).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    let mut overlaps: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    for (&b, &f) in bl.iter().zip(flabels.iter()) {
        if b != 0 && f != 0 {
            *overlaps.entry((b, f)).or_default() += 1;
        }
    }
    for &(b, f) in overlaps.keys() {
        let (x, y) = (
            find(&mut parent, b as usize - 1),
            find(&mut parent, nb + f as usize - 1),
        );
        if x != y {
            parent[y] = x;
        }
    }
    let t = &registration.transform;
    let mut groups: BTreeMap<usize, (f64, f64, [usize; 2], V3, f64)> = BTreeMap::new();
    for i in 0..nb + nf {
        let root = find(&mut parent, i);
        let g = groups
            .entry(root)
            .or_insert((0.0, 0.0, [0, 0], [0.0; 3], 0.0));
        if i < nb {
            g.0 += bsizes[i] as f64 * baseline.voxel_ml;
            g.2[0] += 1;
            let c = affine_apply(
                baseline.image.affine,
                bsums[i].map(|v| v / bsizes[i] as f64),
            );
            for (acc, v) in g.3.iter_mut().zip(c) {
                *acc += v * bsizes[i] as f64;
            }
            g.4 += bsizes[i] as f64;
        } else {
            let j = i - nb;
            g.1 += fsizes[j] as f64 * followup.voxel_ml;
            g.2[1] += 1;
            if g.2[0] == 0 {
                let c = affine_apply(
                    followup.image.affine,
                    fsums[j].map(|v| v / fsizes[j] as f64),
                );
                let c = inverse_apply(t, c);
                for (acc, v) in g.3.iter_mut().zip(c) {
                    *acc += v * fsizes[j] as f64;
                }
                g.4 += fsizes[j] as f64;
            }
        }
    }
    let mut rows: Vec<(f64, f64, [usize; 2], V3)> = groups
        .into_values()
        .map(|(b, f, n, c, w)| (b, f, n, c.map(|v| v / w.max(1e-12))))
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
    let haematomas: Vec<Haematoma> = rows
        .into_iter()
        .enumerate()
        .map(|(i, (b, f, n, c))| {
            let e = haematoma_expansion(b, f);
            Haematoma {
                id: i + 1,
                status: match (n[0] > 0, n[1] > 0) {
                    (true, true) => Status::Persisting,
                    (false, _) => Status::New,
                    (true, false) => Status::Disappeared,
                },
                baseline_ml: b,
                followup_ml: f,
                delta_ml: f - b,
                delta_percent: e.relative.map(|r| 100.0 * r),
                expansion: e,
                components: n,
                centre_mm: c,
            }
        })
        .collect();
    let baseline_ml = bsizes.iter().sum::<usize>() as f64 * baseline.voxel_ml;
    let followup_ml = fsizes.iter().sum::<usize>() as f64 * followup.voxel_ml;
    let expansion = haematoma_expansion(baseline_ml, followup_ml);
    let pct = expansion
        .relative
        .map_or(String::new(), |r| format!(", {:+.0} %", 100.0 * r));
    let verdict = if expansion.expanded {
        format!(
            "haematoma expansion: {baseline_ml:.1} → {followup_ml:.1} mL ({:+.1} mL{pct}); \
             criteria met: {}",
            expansion.growth_ml,
            expansion.criteria().join(", ")
        )
    } else {
        format!(
            "no haematoma expansion: {baseline_ml:.1} → {followup_ml:.1} mL ({:+.1} mL{pct}); \
             below 6 mL and 33 %",
            expansion.growth_ml
        )
    };
    Ok(Comparison {
        baseline_ml,
        followup_ml,
        delta_ml: followup_ml - baseline_ml,
        delta_percent: expansion.relative.map(|r| 100.0 * r),
        expansion,
        verdict,
        new: haematomas
            .iter()
            .filter(|h| h.status == Status::New)
            .map(|h| h.id)
            .collect(),
        disappeared: haematomas
            .iter()
            .filter(|h| h.status == Status::Disappeared)
            .map(|h| h.id)
            .collect(),
        haematomas,
        registration,
        followup_in_baseline: in_base,
    })
}

/// The baseline point that `t` sends to follow-up point `y`.
fn inverse_apply(t: &Rigid, y: V3) -> V3 {
    let r = t.rotation();
    let d = [0, 1, 2].map(|k| y[k] - t.centre_mm[k] - t.translation_mm[k]);
    let m = [0, 1, 2].map(|c| r[0][c] * d[0] + r[1][c] * d[1] + r[2][c] * d[2]);
    [0, 1, 2].map(|k| m[k] + t.centre_mm[k])
}

/// 6-connected components (the pipeline's connectivity): a label per voxel (0 = background,
/// 1.. = component), each component's size and its sum of `(x, y, z)` indices.
fn label(mask: &Array3<u8>) -> Result<(Vec<u32>, Vec<usize>, Vec<V3>)> {
    let (nz, ny, nx) = mask.dim();
    let n = nx * ny * nz;
    let mut lab = try_filled(n, 0u32, "the haematoma labels")?;
    let flat: Vec<u8> = mask.iter().copied().collect();
    let mut sizes = Vec::new();
    let mut sums = Vec::new();
    let mut stack = Vec::new();
    for seed in 0..n {
        if flat[seed] == 0 || lab[seed] != 0 {
            continue;
        }
        let id = sizes.len() as u32 + 1;
        let (mut size, mut sum) = (0usize, [0.0f64; 3]);
        lab[seed] = id;
        stack.push(seed);
        while let Some(i) = stack.pop() {
            let (x, y, z) = (i % nx, (i / nx) % ny, i / (nx * ny));
            size += 1;
            sum[0] += x as f64;
            sum[1] += y as f64;
            sum[2] += z as f64;
            let mut visit = |j: usize| {
                if flat[j] != 0 && lab[j] == 0 {
                    lab[j] = id;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < nx {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - nx);
            }
            if y + 1 < ny {
                visit(i + nx);
            }
            if z > 0 {
                visit(i - nx * ny);
            }
            if z + 1 < nz {
                visit(i + nx * ny);
            }
        }
        sizes.push(size);
        sums.push(sum);
    }
    Ok((lab, sizes, sums))
}

/// The follow-up's mask (trilinear ≥ ½) and component labels (nearest neighbour) on the
/// baseline's stack, through the registration.
fn resample(
    baseline: &Segmented<'_>,
    followup: &Segmented<'_>,
    flabels: &[u32],
    t: &Rigid,
) -> Result<(Array3<u8>, Vec<u32>)> {
    let (bz, by, bx) = baseline.mask.dim();
    let (fz, fy, fx) = followup.mask.dim();
    let to_f = super::invert(followup.image.affine)?;
    let m = affine_mul(&to_f, &affine_mul(&t.affine(), baseline.image.affine));
    let mut mask = try_filled(bx * by * bz, 0u8, "the follow-up mask in the baseline grid")?;
    let mut labels = try_filled(
        bx * by * bz,
        0u32,
        "the follow-up labels in the baseline grid",
    )?;
    let Some(bb) = crate::preprocess::bounding_box(followup.mask) else {
        let mask = Array3::from_shape_vec((bz, by, bx), mask)
            .map_err(|e| Error::InvalidInput(format!("resampled mask: {e}")))?;
        return Ok((mask, labels));
    };
    let (lo, hi) = (
        [bb.start[2], bb.start[1], bb.start[0]].map(|v| v as f64 - 1.0),
        [bb.end[2], bb.end[1], bb.end[0]].map(|v| v as f64),
    );
    let fm = followup.mask;
    let at = |x: usize, y: usize, z: usize| f32::from(u8::from(fm[[z, y, x]] != 0));
    let dims = [fx, fy, fz];
    // Only baseline voxels that can land in the follow-up mask's box need a look: the box of the
    // eight corners of that box mapped back (an affine map keeps the box's preimage inside it).
    let back = super::invert(&m)?;
    let (mut blo, mut bhi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
    for c in 0..8 {
        let corner = [0, 1, 2].map(|k| if c >> k & 1 == 0 { lo[k] } else { hi[k] });
        let q = affine_apply(&back, corner);
        for k in 0..3 {
            blo[k] = blo[k].min(q[k]);
            bhi[k] = bhi[k].max(q[k]);
        }
    }
    let span = |k: usize, n: usize| {
        let a = blo[k].floor().max(0.0).min(n as f64) as usize;
        let b = (bhi[k].ceil() + 1.0).max(0.0).min(n as f64) as usize;
        a..b.max(a)
    };
    let (xs, ys, zs) = (span(0, bx), span(1, by), span(2, bz));
    for z in zs {
        for y in ys.clone() {
            for x in xs.clone() {
                let p = affine_apply(&m, [x as f64, y as f64, z as f64]);
                if (0..3).any(|k| p[k] < lo[k] || p[k] > hi[k]) {
                    continue;
                }
                let i = x + bx * (y + by * z);
                let r = p.map(|v| v.round().max(0.0) as usize);
                if r[0] < fx && r[1] < fy && r[2] < fz {
                    labels[i] = flabels[r[0] + fx * (r[1] + fy * r[2])];
                }
                let mut i0 = [0usize; 3];
                let mut i1 = [0usize; 3];
                let mut f = [0f32; 3];
                let mut outside = false;
                for k in 0..3 {
                    let n = dims[k];
                    if !(p[k] >= -0.5 && p[k] <= n as f64 - 0.5) {
                        outside = true;
                        break;
                    }
                    let c = p[k].clamp(0.0, (n - 1) as f64);
                    i0[k] = c.floor() as usize;
                    i1[k] = (i0[k] + 1).min(n - 1);
                    f[k] = (c - i0[k] as f64) as f32;
                }
                if outside {
                    continue;
                }
                let l = |a: f32, b: f32, t: f32| a + (b - a) * t;
                let c00 = l(at(i0[0], i0[1], i0[2]), at(i1[0], i0[1], i0[2]), f[0]);
                let c10 = l(at(i0[0], i1[1], i0[2]), at(i1[0], i1[1], i0[2]), f[0]);
                let c01 = l(at(i0[0], i0[1], i1[2]), at(i1[0], i0[1], i1[2]), f[0]);
                let c11 = l(at(i0[0], i1[1], i1[2]), at(i1[0], i1[1], i1[2]), f[0]);
                let v = l(l(c00, c10, f[1]), l(c01, c11, f[1]), f[2]);
                mask[i] = u8::from(v >= 0.5);
            }
        }
    }
    let mask = Array3::from_shape_vec((bz, by, bx), mask)
        .map_err(|e| Error::InvalidInput(format!("resampled mask: {e}")))?;
    Ok((mask, labels))
}

/// The comparison's own option as the page and the ES module give it, JSON by the CLI's name:
/// `{"similarity": "mi" | "ncc"}` (`ichnet compare --similarity`; mutual information when
/// omitted). An empty string means the defaults; other names and values are refused.
pub fn config_from_json(json: &str) -> Result<RegistrationConfig> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {
        similarity: Option<String>,
    }
    let json = if json.trim().is_empty() { "{}" } else { json };
    let o: Options = serde_json::from_str(json)
        .map_err(|e| Error::InvalidInput(format!("the comparison options: {e}")))?;
    let similarity = match o.similarity.as_deref() {
        None => Similarity::MutualInformation,
        Some(name) => Similarity::from_name(name)
            .map_err(|e| Error::InvalidInput(format!("the comparison options: {e}")))?,
    };
    Ok(RegistrationConfig {
        similarity,
        ..RegistrationConfig::default()
    })
}

#[cfg(test)]
mod options_tests {
    use super::*;

    #[test]
    fn similarity_by_the_cli_names_and_nothing_else() {
        for (json, want) in [
            ("", Similarity::MutualInformation),
            ("{}", Similarity::MutualInformation),
            (r#"{"similarity":"mi"}"#, Similarity::MutualInformation),
            (r#"{"similarity":"ncc"}"#, Similarity::Ncc),
        ] {
            assert_eq!(config_from_json(json).unwrap().similarity, want, "{json}");
        }
        let typo = config_from_json(r#"{"simlarity":"ncc"}"#).unwrap_err();
        assert!(typo.to_string().contains("simlarity"), "{typo}");
        let bad = config_from_json(r#"{"similarity":"ssd"}"#).unwrap_err();
        assert!(bad.to_string().contains("\"ssd\""), "{bad}");
    }
}

/// The whole comparison natively: segment both scans with the pipeline (each on its own grid),
/// register, compare. Returns the comparison and the two segmentations.
#[cfg(not(target_arch = "wasm32"))]
pub fn segment_and_compare(
    baseline: &[u8],
    followup: &[u8],
    model: &crate::model::IchNet,
    device: &burn::prelude::Device,
    opts: &crate::pipeline::SegmentOptions,
    cfg: &RegistrationConfig,
) -> Result<Pair> {
    use crate::pipeline::Prepared;
    // Each scan as `segment` does it (the same sequence, `Prepared::segment`); the prepared
    // scans stay for the registration.
    let run = |bytes: &[u8]| -> Result<(Prepared, crate::pipeline::Segmentation, f64)> {
        let t = std::time::Instant::now();
        let mut prep = Prepared::new(bytes, opts.assume_hu)?;
        let seg = prep.segment(model, device, opts, &mut |_| true)?;
        Ok((prep, seg, t.elapsed().as_secs_f64()))
    };
    // A refusal of a scan's contents names the scan it is about, as the page's does.
    let (bp, bs, bt) = run(baseline).map_err(|e| crate::io::in_file("the baseline scan", e))?;
    let (fp, fs, ft) = run(followup).map_err(|e| crate::io::in_file("the follow-up scan", e))?;
    let t = std::time::Instant::now();
    let (ba, fa) = (bp.scan().stack_affine(), fp.scan().stack_affine());
    fn side<'a>(
        p: &'a Prepared,
        s: &'a crate::pipeline::Segmentation,
        a: &'a crate::io::Affine,
    ) -> Segmented<'a> {
        Segmented {
            image: Image {
                hu: &p.scan().stack.hu,
                brain: p.brain(),
                affine: a,
            },
            mask: &s.mask,
            voxel_ml: p.scan().stack.voxel_ml,
        }
    }
    let comparison = compare(side(&bp, &bs, &ba), side(&fp, &fs, &fa), cfg)?;
    let compare_s = t.elapsed().as_secs_f64();
    let followup_in_baseline_nifti_gz =
        bp.scan().mask_nifti_gz(&comparison.followup_in_baseline)?;
    Ok(Pair {
        comparison,
        baseline: bs,
        followup: fs,
        followup_in_baseline_nifti_gz,
        seconds: [bt, ft, compare_s],
    })
}

/// What [`segment_and_compare`] returns.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone)]
pub struct Pair {
    /// The comparison.
    pub comparison: Comparison,
    /// The baseline's segmentation (mask NIfTI in its own grid).
    pub baseline: crate::pipeline::Segmentation,
    /// The follow-up's segmentation (mask NIfTI in its own grid).
    pub followup: crate::pipeline::Segmentation,
    /// The follow-up mask resampled into the baseline's grid, gzipped NIfTI (for display only).
    pub followup_in_baseline_nifti_gz: Vec<u8>,
    /// Seconds: baseline segmentation, follow-up segmentation, registration + comparison.
    pub seconds: [f64; 3],
}
