//! Measurements on masks: volume, ABC/2, overlap and surface distance, haematoma expansion.
//!
//! All masks are `Array3<u8>` in stack order (`[z, y, x]`, non-zero = inside) on the grid of the
//! [`Stack`] they belong to; distances use the stack's voxel spacing in mm.

use ndarray::{Array3, Axis};
use serde::Serialize;

use crate::preprocess::bounding_box;
use crate::{Error, Result, Stack};

fn same_shape(a: &Array3<u8>, b: (usize, usize, usize), what: &str) -> Result<()> {
    if a.dim() != b {
        let (az, ay, ax) = a.dim();
        let (bz, by, bx) = b;
        return Err(Error::InvalidInput(format!(
            "{what}: mask is {ax}×{ay}×{az} voxels but the other volume is {bx}×{by}×{bz}"
        )));
    }
    Ok(())
}

/// Volume of the mask in mL (voxel count × the stack's voxel volume, exact on sheared grids).
pub fn volume_ml(mask: &Array3<u8>, stack: &Stack) -> Result<f64> {
    same_shape(mask, stack.dims(), "volume")?;
    Ok(stack.mask_ml(mask))
}

/// The bedside ABC/2 estimate (Kothari et al., Stroke 1996) and its three measurements.
///
/// On the axial slice with the largest blood area: `a_mm` is the largest diameter of the blood
/// (the longest distance between any two points of its pixels, pixel squares included, so one
/// pixel measures its diagonal), `b_mm` the extent of the blood perpendicular to that diameter;
/// `c_mm` = number of axial slices containing blood × slice thickness. `ml = a·b·c / 2 / 1000`.
/// Every slice with blood counts fully (Kothari's half-weighting of small slices is not used).
/// For a rectangular box, `a·b/2` equals the box's area, so ABC/2 of a cuboid is its volume.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Abc2 {
    /// Largest axial diameter (mm).
    pub a_mm: f64,
    /// Largest diameter perpendicular to A on the same slice (mm).
    pub b_mm: f64,
    /// Cranio-caudal extent: slices with blood × slice thickness (mm).
    pub c_mm: f64,
    /// Number of axial slices with blood.
    pub slices: usize,
    /// The slice (stack index) where A and B were measured; `None` for an empty mask.
    pub slice: Option<usize>,
    /// `a·b·c / 2 / 1000` (mL).
    pub ml: f64,
}

/// ABC/2 of `mask` (see [`Abc2`]); an empty mask gives all zeros.
pub fn abc2(mask: &Array3<u8>, stack: &Stack) -> Result<Abc2> {
    same_shape(mask, stack.dims(), "ABC/2")?;
    let [sz, sy, sx] = stack.spacing.map(f64::from);
    let mut slices = 0;
    let mut best: Option<(usize, usize)> = None; // (z, area)
    for (z, plane) in mask.axis_iter(Axis(0)).enumerate() {
        let area = plane.iter().filter(|&&v| v != 0).count();
        if area > 0 {
            slices += 1;
            if best.is_none_or(|(_, a)| area > a) {
                best = Some((z, area));
            }
        }
    }
    let Some((z, _)) = best else {
        return Ok(Abc2 {
            a_mm: 0.0,
            b_mm: 0.0,
            c_mm: 0.0,
            slices: 0,
            slice: None,
            ml: 0.0,
        });
    };
    let hull = convex_hull(row_corners(mask, z, sy, sx));
    let (a_mm, b_mm) = diameters(&hull);
    let c_mm = slices as f64 * sz;
    Ok(Abc2 {
        a_mm,
        b_mm,
        c_mm,
        slices,
        slice: Some(z),
        ml: a_mm * b_mm * c_mm / 2.0 / 1000.0,
    })
}

/// Corners (mm, `(x, y)`) of the leftmost and rightmost blood pixel of every row of slice `z`:
/// the convex hull of all pixel squares is the hull of these.
fn row_corners(mask: &Array3<u8>, z: usize, sy: f64, sx: f64) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    for (y, row) in mask.index_axis(Axis(0), z).axis_iter(Axis(0)).enumerate() {
        let first = row.iter().position(|&v| v != 0);
        let last = row.iter().rposition(|&v| v != 0);
        if let (Some(x0), Some(x1)) = (first, last) {
            let (left, right) = (x0 as f64 * sx, (x1 + 1) as f64 * sx);
            let (top, bottom) = (y as f64 * sy, (y + 1) as f64 * sy);
            pts.extend([(left, top), (left, bottom), (right, top), (right, bottom)]);
        }
    }
    pts
}

/// Andrew's monotone chain; returns the hull counter-clockwise without repeats.
fn convex_hull(mut pts: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    pts.dedup();
    if pts.len() < 3 {
        return pts;
    }
    let cross = |o: (f64, f64), a: (f64, f64), b: (f64, f64)| {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    let mut hull: Vec<(f64, f64)> = Vec::with_capacity(pts.len() * 2);
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &(f64, f64)>> = if pass == 0 {
            Box::new(pts.iter())
        } else {
            Box::new(pts.iter().rev())
        };
        for &p in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0
            {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    hull
}

/// `(A, B)`: the longest distance between hull points, and the hull's extent perpendicular to it.
fn diameters(hull: &[(f64, f64)]) -> (f64, f64) {
    let mut best = (0.0, (0.0, 0.0), (0.0, 0.0));
    for (i, &p) in hull.iter().enumerate() {
        for &q in &hull[i + 1..] {
            let d = ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt();
            if d > best.0 {
                best = (d, p, q);
            }
        }
    }
    let (a, p, q) = best;
    if a == 0.0 {
        return (0.0, 0.0);
    }
    let normal = (-(q.1 - p.1) / a, (q.0 - p.0) / a);
    let proj = hull.iter().map(|h| h.0 * normal.0 + h.1 * normal.1);
    let (lo, hi) = proj.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    (a, hi - lo)
}

/// Voxel counts of a prediction against a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// In both.
    pub tp: u64,
    /// In the prediction only.
    pub fp: u64,
    /// In the reference only.
    pub fn_: u64,
}

impl Confusion {
    /// Counts for `pred` against `truth` (same shape).
    pub fn new(pred: &Array3<u8>, truth: &Array3<u8>) -> Result<Self> {
        same_shape(pred, truth.dim(), "overlap")?;
        let mut c = Confusion {
            tp: 0,
            fp: 0,
            fn_: 0,
        };
        for (&p, &t) in pred.iter().zip(truth.iter()) {
            match (p != 0, t != 0) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, true) => c.fn_ += 1,
                (false, false) => {}
            }
        }
        Ok(c)
    }

    /// `2·TP / (2·TP + FP + FN)`; 1 when both masks are empty (they agree perfectly).
    pub fn dice(&self) -> f64 {
        let denom = 2 * self.tp + self.fp + self.fn_;
        if denom == 0 {
            1.0
        } else {
            2.0 * self.tp as f64 / denom as f64
        }
    }

    /// `TP / (TP + FN)`; `None` when the reference is empty (nothing to find).
    pub fn sensitivity(&self) -> Option<f64> {
        let denom = self.tp + self.fn_;
        (denom > 0).then(|| self.tp as f64 / denom as f64)
    }

    /// `TP / (TP + FP)`; `None` when the prediction is empty (nothing claimed).
    pub fn precision(&self) -> Option<f64> {
        let denom = self.tp + self.fp;
        (denom > 0).then(|| self.tp as f64 / denom as f64)
    }
}

/// Dice overlap of two masks (1 when both are empty).
pub fn dice(pred: &Array3<u8>, truth: &Array3<u8>) -> Result<f64> {
    Ok(Confusion::new(pred, truth)?.dice())
}

/// Sensitivity (recall) of `pred` against `truth`; `None` when `truth` is empty.
pub fn sensitivity(pred: &Array3<u8>, truth: &Array3<u8>) -> Result<Option<f64>> {
    Ok(Confusion::new(pred, truth)?.sensitivity())
}

/// Precision of `pred` against `truth`; `None` when `pred` is empty.
pub fn precision(pred: &Array3<u8>, truth: &Array3<u8>) -> Result<Option<f64>> {
    Ok(Confusion::new(pred, truth)?.precision())
}

/// 95th percentile of the symmetric surface distance (mm) between two masks.
///
/// Surface voxels are mask voxels with a face neighbour outside the mask (or outside the image).
/// The distances from every surface voxel of `a` to the nearest surface voxel of `b`, and from
/// `b` to `a`, are pooled and their 95th percentile taken (linear interpolation between ranks,
/// as numpy and MedPy do). Both empty: `Some(0.0)`. Exactly one empty: `None`, since no distance
/// exists; report it as such rather than as a made-up large number.
pub fn hd95(a: &Array3<u8>, b: &Array3<u8>, spacing: [f32; 3]) -> Result<Option<f64>> {
    same_shape(a, b.dim(), "HD95")?;
    let (ba, bb) = (bounding_box(a), bounding_box(b));
    let (ba, bb) = match (ba, bb) {
        (None, None) => return Ok(Some(0.0)),
        (Some(x), Some(y)) => (x, y),
        _ => return Ok(None),
    };
    // Surface points all lie in the union of the two boxes; the exact transform restricted to it
    // is the same as on the whole grid.
    let start = [0, 1, 2].map(|k| ba.start[k].min(bb.start[k]));
    let end = [0, 1, 2].map(|k| ba.end[k].max(bb.end[k]));
    let dims = (end[0] - start[0], end[1] - start[1], end[2] - start[2]);
    let sa = surface(a, start, dims);
    let sb = surface(b, start, dims);
    let sp = spacing.map(f64::from);
    let to_b = crate::preprocess::squared_distance_to(dims, sp, |i| sb[i])?;
    let to_a = crate::preprocess::squared_distance_to(dims, sp, |i| sa[i])?;
    let mut d: Vec<f64> = Vec::new();
    d.extend(
        sa.iter()
            .zip(&to_b)
            .filter(|(s, _)| **s)
            .map(|(_, v)| v.sqrt()),
    );
    d.extend(
        sb.iter()
            .zip(&to_a)
            .filter(|(s, _)| **s)
            .map(|(_, v)| v.sqrt()),
    );
    d.sort_by(f64::total_cmp);
    Ok(Some(percentile_sorted(&d, 95.0)))
}

/// Surface voxels of `m` inside the box `start + dims`, as a flat C-ordered bool buffer.
fn surface(m: &Array3<u8>, start: [usize; 3], dims: (usize, usize, usize)) -> Vec<bool> {
    let (nz, ny, nx) = m.dim();
    let at = |z: usize, y: usize, x: usize| m[[z, y, x]] != 0;
    let mut out = Vec::with_capacity(dims.0 * dims.1 * dims.2);
    for z in start[0]..start[0] + dims.0 {
        for y in start[1]..start[1] + dims.1 {
            for x in start[2]..start[2] + dims.2 {
                let s = at(z, y, x)
                    && (z == 0
                        || y == 0
                        || x == 0
                        || z + 1 == nz
                        || y + 1 == ny
                        || x + 1 == nx
                        || !at(z - 1, y, x)
                        || !at(z + 1, y, x)
                        || !at(z, y - 1, x)
                        || !at(z, y + 1, x)
                        || !at(z, y, x - 1)
                        || !at(z, y, x + 1));
                out.push(s);
            }
        }
    }
    out
}

/// Percentile `p` (0–100) of sorted values, linear between closest ranks; 0 for no values.
fn percentile_sorted(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = p / 100.0 * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

/// Haematoma growth between two scans and whether it meets the expansion rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Expansion {
    /// Follow-up minus baseline volume (mL).
    pub growth_ml: f64,
    /// Growth relative to baseline (0.33 = 33 %); `None` when the baseline is 0 mL.
    pub relative: Option<f64>,
    /// Growth ≥ 6 mL or ≥ 33 % of the baseline.
    pub expanded: bool,
    /// The absolute criterion fired: growth ≥ 6 mL.
    pub by_6_ml: bool,
    /// The relative criterion fired: growth ≥ 33 % of a non-zero baseline.
    pub by_33_percent: bool,
    /// Growth ≥ 12.5 mL: the stricter definition some trials use; reported beside the verdict,
    /// not part of `expanded`.
    pub by_12_5_ml: bool,
}

impl Expansion {
    /// The criteria that fired, as a reader writes them ("≥ 6 mL", "≥ 33 %", "≥ 12.5 mL").
    pub fn criteria(&self) -> Vec<&'static str> {
        [
            (self.by_6_ml, "≥ 6 mL"),
            (self.by_33_percent, "≥ 33 %"),
            (self.by_12_5_ml, "≥ 12.5 mL"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// The usual haematoma-expansion rule: absolute growth ≥ 6 mL or relative growth ≥ 33 %.
///
/// With no blood at baseline the relative criterion is undefined and only the 6 mL one applies.
pub fn haematoma_expansion(baseline_ml: f64, follow_up_ml: f64) -> Expansion {
    let growth_ml = follow_up_ml - baseline_ml;
    let relative = (baseline_ml > 0.0).then(|| growth_ml / baseline_ml);
    let by_6_ml = growth_ml >= 6.0;
    let by_33_percent = relative.is_some_and(|r| r >= 0.33);
    Expansion {
        growth_ml,
        relative,
        expanded: by_6_ml || by_33_percent,
        by_6_ml,
        by_33_percent,
        by_12_5_ml: growth_ml >= 12.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(dims: (usize, usize, usize), spacing: [f32; 3]) -> Stack {
        Stack {
            hu: Array3::zeros(dims),
            spacing,
            voxel_ml: spacing.iter().map(|&s| f64::from(s)).product::<f64>() / 1000.0,
        }
    }

    fn boxed(dims: (usize, usize, usize), lo: [usize; 3], hi: [usize; 3]) -> Array3<u8> {
        Array3::from_shape_fn(dims, |(z, y, x)| {
            u8::from(
                (lo[0]..hi[0]).contains(&z)
                    && (lo[1]..hi[1]).contains(&y)
                    && (lo[2]..hi[2]).contains(&x),
            )
        })
    }

    #[test]
    fn box_volume_and_abc2() {
        // 4 slices of 5 mm, a 10×20 pixel box at 0.5 mm: 5 mm × 10 mm × 20 mm = 1 mL.
        let s = stack((8, 40, 40), [5.0, 0.5, 0.5]);
        let m = boxed((8, 40, 40), [2, 5, 5], [6, 15, 25]);
        assert!((volume_ml(&m, &s).unwrap() - 1.0).abs() < 1e-12);
        let r = abc2(&m, &s).unwrap();
        assert_eq!(r.slices, 4);
        assert!((r.c_mm - 20.0).abs() < 1e-12);
        assert!(
            (r.a_mm - (125.0f64).sqrt()).abs() < 1e-9,
            "diagonal of 5×10 mm"
        );
        assert!(
            (r.a_mm * r.b_mm / 2.0 - 50.0).abs() < 1e-9,
            "A·B/2 = box area"
        );
        assert!((r.ml - 1.0).abs() < 1e-9);
    }

    #[test]
    fn sphere_volume_and_abc2() {
        // Radius 10 mm ball on a 0.5 mm grid: voxel volume ≈ 4/3 π r³; ABC/2 ≈ (2r)³/2 = 4 r³.
        let n = 48;
        let s = stack((n, n, n), [0.5; 3]);
        let c = (n as f64 - 1.0) / 2.0;
        let m = Array3::from_shape_fn((n, n, n), |(z, y, x)| {
            let d2 = (z as f64 - c).powi(2) + (y as f64 - c).powi(2) + (x as f64 - c).powi(2);
            u8::from(d2 * 0.25 <= 100.0)
        });
        let exact = 4.0 / 3.0 * std::f64::consts::PI * 1000.0 / 1000.0;
        let v = volume_ml(&m, &s).unwrap();
        assert!((v - exact).abs() / exact < 0.02, "{v} vs {exact}");
        let r = abc2(&m, &s).unwrap();
        assert!(
            (r.a_mm - 20.0).abs() < 1.0 && (r.b_mm - 20.0).abs() < 1.0,
            "{r:?}"
        );
        assert!((r.c_mm - 20.0).abs() <= 0.5, "{r:?}");
        assert!((r.ml - 4.0).abs() < 0.4, "{r:?}");
    }

    #[test]
    fn empty_masks() {
        let s = stack((3, 4, 5), [1.0; 3]);
        let e = Array3::zeros((3, 4, 5));
        let one = boxed((3, 4, 5), [1, 1, 1], [2, 2, 2]);
        assert_eq!(volume_ml(&e, &s).unwrap(), 0.0);
        let r = abc2(&e, &s).unwrap();
        assert_eq!((r.ml, r.slices, r.slice), (0.0, 0, None));
        assert_eq!(dice(&e, &e).unwrap(), 1.0);
        assert_eq!(dice(&one, &e).unwrap(), 0.0);
        assert_eq!(sensitivity(&one, &e).unwrap(), None);
        assert_eq!(precision(&e, &one).unwrap(), None);
        assert_eq!(sensitivity(&e, &one).unwrap(), Some(0.0));
        assert_eq!(hd95(&e, &e, [1.0; 3]).unwrap(), Some(0.0));
        assert_eq!(hd95(&one, &e, [1.0; 3]).unwrap(), None);
    }

    #[test]
    fn overlap_counts() {
        let a = boxed((1, 1, 10), [0, 0, 0], [1, 1, 6]); // x 0..6
        let b = boxed((1, 1, 10), [0, 0, 2], [1, 1, 10]); // x 2..10
        let c = Confusion::new(&a, &b).unwrap();
        assert_eq!((c.tp, c.fp, c.fn_), (4, 2, 4));
        assert!((c.dice() - 8.0 / 14.0).abs() < 1e-12);
        assert_eq!(c.sensitivity(), Some(0.5));
        assert!((c.precision().unwrap() - 4.0 / 6.0).abs() < 1e-12);
        assert!(dice(&a, &Array3::zeros((1, 2, 10))).is_err());
    }

    #[test]
    fn hd95_of_single_voxels_and_boxes() {
        // Two voxels 3 apart along x at 2 mm: every distance is 6 mm.
        let a = boxed((5, 5, 9), [2, 2, 2], [3, 3, 3]);
        let b = boxed((5, 5, 9), [2, 2, 5], [3, 3, 6]);
        assert!((hd95(&a, &b, [2.0; 3]).unwrap().unwrap() - 6.0).abs() < 1e-12);
        assert_eq!(hd95(&a, &a, [2.0; 3]).unwrap(), Some(0.0));
        // A 3×3×3 cube and the same cube grown by one voxel on every side (1 mm voxels): every
        // surface voxel of either is exactly 1 voxel from the other's surface along a face, or
        // farther only at edges/corners of the big cube (√2, √3); p95 from the pooled list.
        let small = boxed((9, 9, 9), [3, 3, 3], [6, 6, 6]);
        let big = boxed((9, 9, 9), [2, 2, 2], [7, 7, 7]);
        let mut d = Vec::new();
        let surf = |m: &Array3<u8>| -> Vec<[f64; 3]> {
            let s = surface(m, [0, 0, 0], (9, 9, 9));
            s.iter()
                .enumerate()
                .filter(|(_, v)| **v)
                .map(|(i, _)| [(i / 81) as f64, ((i / 9) % 9) as f64, (i % 9) as f64])
                .collect()
        };
        let (ss, sb) = (surf(&small), surf(&big));
        for (from, to) in [(&ss, &sb), (&sb, &ss)] {
            for p in from.iter() {
                let m = to
                    .iter()
                    .map(|q| {
                        ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2))
                            .sqrt()
                    })
                    .fold(f64::INFINITY, f64::min);
                d.push(m);
            }
        }
        d.sort_by(f64::total_cmp);
        let want = percentile_sorted(&d, 95.0);
        assert_eq!(ss.len(), 26, "3×3×3 cube: all but the centre");
        assert_eq!(sb.len(), 98, "5×5×5 cube: 125 − 27");
        let got = hd95(&small, &big, [1.0; 3]).unwrap().unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert!(
            (want - 3f64.sqrt()).abs() < 1e-12,
            "big-cube corners are √3 from the small one"
        );
    }

    #[test]
    fn expansion_rule() {
        assert!(haematoma_expansion(30.0, 36.0).expanded, "6 mL");
        assert!(!haematoma_expansion(30.0, 35.9).expanded);
        assert!(haematoma_expansion(3.0, 4.0).expanded, "33 %");
        assert!(!haematoma_expansion(3.0, 3.9).expanded);
        let none = haematoma_expansion(0.0, 2.0);
        assert_eq!((none.relative, none.expanded), (None, false));
        assert!(!haematoma_expansion(20.0, 10.0).expanded, "shrinking");
        assert_eq!(haematoma_expansion(30.0, 36.0).criteria(), ["≥ 6 mL"]);
        assert_eq!(haematoma_expansion(3.0, 4.0).criteria(), ["≥ 33 %"]);
        assert_eq!(
            haematoma_expansion(20.0, 33.0).criteria(),
            ["≥ 6 mL", "≥ 33 %", "≥ 12.5 mL"]
        );
        assert!(haematoma_expansion(50.0, 40.0).criteria().is_empty());
    }
}
