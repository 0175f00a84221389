//! Measurements on masks: volume, the per-haematoma report (components, side, Kothari's ABC/2),
//! overlap, lesion detection and surface distance, haematoma expansion.
//!
//! All masks are `Array3<u8>` in stack order (`[z, y, x]`, non-zero = inside) on the grid of the
//! [`Stack`] they belong to; distances use the stack's voxel spacing in mm.

use ndarray::{Array3, Axis};
use serde::Serialize;

use crate::error::try_filled;
use crate::io::{AffineSource, Scan};
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

/// The bedside ABC/2 estimate of one haematoma (Kothari et al., Stroke 1996) and its measurements.
///
/// On the axial slice where the haematoma's area is largest: `a_mm` is its largest diameter (the
/// longest distance between any two points of its pixels, pixel squares included, as a reader
/// measures edge to edge; one pixel measures its diagonal), `b_mm` its largest extent
/// perpendicular to A on that slice. `c_mm` follows Kothari: every slice of the haematoma counts
/// 1 when its area is ≥ 75 % of the largest slice's, ½ when 25–75 %, 0 below 25 %, and the sum is
/// multiplied by the slice thickness. `ml = a·b·c / 2 / 1000`.
///
/// The weighting makes ABC/2 smaller than the volume of a smooth ellipsoid (about 0.68× in the
/// limit of thin slices: the tips of the ellipsoid count ½ or 0); it was designed for the
/// irregular shapes of real haematomas. `extent_ml` is the unweighted variant that many readers
/// use (`c` = slice count × thickness), which for an ellipsoid is `π/6 · abc ≈ abc/2`, i.e. its
/// volume within 5 %.
///
/// Slice thickness is the distance between slice planes (voxel volume ÷ pixel area), not the
/// step between slice origins: on a gantry-tilted (sheared) grid the step is longer than the
/// thickness by 1/cos(tilt), and using it would inflate C.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Abc2 {
    /// Largest axial diameter (mm).
    pub a_mm: f64,
    /// Largest diameter perpendicular to A on the same slice (mm).
    pub b_mm: f64,
    /// Kothari-weighted cranio-caudal extent: Σ slice weights × slice thickness (mm).
    pub c_mm: f64,
    /// Number of axial slices the haematoma occupies.
    pub slices: usize,
    /// Σ of Kothari's slice weights (1, ½, 0): `c_mm` / thickness.
    pub weighted_slices: f64,
    /// The slice (stack index) where A and B were measured; `None` for an empty mask.
    pub slice: Option<usize>,
    /// `a·b·c / 2 / 1000` (mL), Kothari's ABC/2.
    pub ml: f64,
    /// `a·b·(slices × thickness) / 2 / 1000` (mL): ABC/2 without Kothari's weighting.
    pub extent_ml: f64,
}

impl Abc2 {
    /// The ABC/2 of no blood.
    pub const NONE: Abc2 = Abc2 {
        a_mm: 0.0,
        b_mm: 0.0,
        c_mm: 0.0,
        slices: 0,
        weighted_slices: 0.0,
        slice: None,
        ml: 0.0,
        extent_ml: 0.0,
    };
}

/// Kothari's weight of a slice whose area is `area` against the largest slice's `max_area`.
pub fn kothari_weight(area: usize, max_area: usize) -> f64 {
    // Integer comparisons: 4·area ≥ 3·max is exactly "≥ 75 %", without rounding at the border.
    if max_area == 0 || area == 0 {
        0.0
    } else if 4 * area >= 3 * max_area {
        1.0
    } else if 4 * area >= max_area {
        0.5
    } else {
        0.0
    }
}

/// Which side of the head a haematoma lies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// ≥ 75 % of its volume is left of the mid-sagittal line.
    Left,
    /// ≥ 75 % of its volume is right of it.
    Right,
    /// Neither side holds 75 %: it straddles the midline (third ventricle, casts of both lateral
    /// ventricles, falx, brainstem).
    Midline,
    /// The scan does not say where the patient's left is (a NIfTI with voxel sizes only): any
    /// side would be a guess, and a wrong side is worse than none.
    Unknown,
}

impl Side {
    /// `"left"`, `"right"`, `"midline"`, `"unknown"` (as in the JSON report).
    pub fn name(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
            Side::Midline => "midline",
            Side::Unknown => "unknown",
        }
    }
}

/// Share of a haematoma's volume that must lie on one side for it to be called that side's.
pub const SIDE_FRACTION: f64 = 0.75;

/// The head's mid-sagittal line in the axial plane, in stack millimetres (`x·sx`, `y·sy`).
///
/// Fitted to the brain mask rather than taken as world `x = 0`: scanner coordinates put the origin
/// at the table's isocentre, not at the patient's midline, and heads lie turned by a few degrees.
/// The line runs through the brain's centroid along its long (antero-posterior) principal axis.
/// It is one line for the whole scan: a skull tilted sideways across slices is rare and would
/// move the line by millimetres only.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Midline {
    /// A point on the line: the brain's centroid, mm (`x`, `y`).
    pub point_mm: [f64; 2],
    /// Unit normal of the line pointing to the patient's right (`x`, `y`).
    pub right: [f64; 2],
}

/// Largest angle (degrees) between the brain's principal axis and the stack's antero-posterior
/// axis that is believed; beyond it, or when the brain is too round for a principal axis, the
/// stack's own axis is used (the reorientation already brought the head close to it).
const MIDLINE_MAX_TURN_DEG: f64 = 30.0;

impl Midline {
    /// The mid-sagittal line of a scan whose stack axes are known to point Right and Anterior
    /// (see [`Midline::for_scan`] for the check); `None` for an empty brain mask.
    pub fn from_brain(brain: &Array3<u8>, stack: &Stack) -> Result<Option<Midline>> {
        same_shape(brain, stack.dims(), "midline")?;
        let [_, sy, sx] = stack.spacing.map(f64::from);
        // One pass of exact integer moments, row by row (two passes of `indexed_iter` over a
        // 512×512×32 brain took a tenth of a second, most of `segment`'s finish).
        let (mut n, mut s_x, mut s_y, mut s_xx, mut s_yy, mut s_xy) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        for plane in brain.outer_iter() {
            for (y, row) in plane.outer_iter().enumerate() {
                let (mut c, mut rx, mut rxx) = (0u64, 0u64, 0u64);
                for (x, &v) in row.iter().enumerate() {
                    let on = u64::from(v != 0);
                    let x = x as u64;
                    c += on;
                    rx += on * x;
                    rxx += on * x * x;
                }
                let y = y as u64;
                n += c;
                s_x += rx;
                s_xx += rxx;
                s_y += c * y;
                s_yy += c * y * y;
                s_xy += rx * y;
            }
        }
        if n == 0 {
            return Ok(None);
        }
        // Centred second moments from the raw ones, exactly (n·Σab − Σa·Σb, in 128 bits).
        let centred = |ab: u64, a: u64, b: u64| {
            (i128::from(n) * i128::from(ab) - i128::from(a) * i128::from(b)) as f64 / n as f64
        };
        let nf = n as f64;
        let (cx, cy) = (s_x as f64 / nf * sx, s_y as f64 / nf * sy);
        let vxx = centred(s_xx, s_x, s_x) * sx * sx;
        let vyy = centred(s_yy, s_y, s_y) * sy * sy;
        let vxy = centred(s_xy, s_x, s_y) * sx * sy;
        // Principal axis of the 2×2 covariance: angle of the major axis from +x.
        let theta = 0.5 * (2.0 * vxy).atan2(vxx - vyy);
        let (l1, l2) = {
            let m = (vxx + vyy) / 2.0;
            let d = (((vxx - vyy) / 2.0).powi(2) + vxy * vxy).sqrt();
            (m + d, m - d)
        };
        let mut along = [theta.cos(), theta.sin()];
        if along[1] < 0.0 {
            along = [-along[0], -along[1]];
        }
        let turn = along[0].abs().asin().to_degrees();
        // A brain is ~15–25 % longer than wide; a ratio of variances under 1.1 has no reliable
        // long axis.
        let elongated = l1 > 1.1 * l2.max(0.0);
        if !elongated || turn > MIDLINE_MAX_TURN_DEG {
            along = [0.0, 1.0];
        }
        // Normal towards +x (the patient's right in the stack).
        let mut right = [along[1], -along[0]];
        if right[0] < 0.0 {
            right = [-right[0], -right[1]];
        }
        Ok(Some(Midline {
            point_mm: [cx, cy],
            right,
        }))
    }

    /// The midline of a read scan, or `None` when the scan's orientation is not real (a NIfTI
    /// with neither qform nor sform: the reader assumed RAS, so left and right are a guess) or it
    /// has no brain.
    pub fn for_scan(scan: &Scan, brain: &Array3<u8>) -> Result<Option<Midline>> {
        if scan.info.affine_source == AffineSource::Pixdim {
            return Ok(None);
        }
        Midline::from_brain(brain, &scan.stack)
    }

    /// Signed distance (mm) of stack point `(y, x)` from the line, positive to the right.
    fn right_of(&self, y: f64, x: f64, sy: f64, sx: f64) -> f64 {
        (x * sx - self.point_mm[0]) * self.right[0] + (y * sy - self.point_mm[1]) * self.right[1]
    }
}

/// One haematoma: a connected component of the final mask, measured on its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Haematoma {
    /// Rank by volume, 1 = the largest (the headline ABC/2 is its).
    pub id: usize,
    /// Volume, mL (voxel count × voxel volume).
    pub volume_ml: f64,
    /// Voxels in the component.
    pub voxels: usize,
    /// First and last axial slice (stack indices, inclusive).
    pub slice_range: [usize; 2],
    /// Centroid in stack voxel coordinates `[z, y, x]` (what the viewer jumps to).
    pub centroid: [f64; 3],
    /// Side of the head.
    pub side: Side,
    /// Its own ABC/2.
    pub abc2: Abc2,
}

/// The connected components of `mask`, each as the list of its voxels `[z, y, x]`, largest
/// first (ties: the one met first in memory order).
///
/// 26-connectivity (faces, edges and corners): on 5 mm slices a clot's cross-section shifts from
/// one slice to the next, and the two parts often touch only along a pixel edge or corner; a
/// reader sees one haematoma there, and splitting it would give each half its own, too small,
/// ABC/2 (and count one lesion twice in the per-lesion sensitivity). Two clots that touch at a
/// corner are a reader's single region too.
pub fn components(mask: &Array3<u8>) -> Result<Vec<Vec<[usize; 3]>>> {
    let Some(bb) = bounding_box(mask) else {
        return Ok(Vec::new());
    };
    let [dz, dy, dx] = bb.shape();
    // A local copy of the bounding box is the visited map (1 = blood not yet visited).
    let mut local = try_filled(dz * dy * dx, 0u8, "the component labelling buffer")?;
    for z in 0..dz {
        for y in 0..dy {
            for x in 0..dx {
                let v = mask[[bb.start[0] + z, bb.start[1] + y, bb.start[2] + x]];
                local[(z * dy + y) * dx + x] = u8::from(v != 0);
            }
        }
    }
    let mut out: Vec<Vec<[usize; 3]>> = Vec::new();
    let mut pending: Vec<[usize; 3]> = Vec::new();
    for seed in 0..local.len() {
        if local[seed] != 1 {
            continue;
        }
        local[seed] = 2;
        let mut voxels = Vec::new();
        pending.clear();
        pending.push([seed / (dy * dx), (seed / dx) % dy, seed % dx]);
        while let Some(p) = pending.pop() {
            voxels.push([p[0] + bb.start[0], p[1] + bb.start[1], p[2] + bb.start[2]]);
            for oz in -1isize..=1 {
                for oy in -1isize..=1 {
                    for ox in -1isize..=1 {
                        if oz == 0 && oy == 0 && ox == 0 {
                            continue;
                        }
                        let q = [
                            p[0].checked_add_signed(oz),
                            p[1].checked_add_signed(oy),
                            p[2].checked_add_signed(ox),
                        ];
                        let [Some(z), Some(y), Some(x)] = q else {
                            continue;
                        };
                        if z >= dz || y >= dy || x >= dx {
                            continue;
                        }
                        let i = (z * dy + y) * dx + x;
                        if local[i] == 1 {
                            local[i] = 2;
                            pending.push([z, y, x]);
                        }
                    }
                }
            }
        }
        out.push(voxels);
    }
    // Stable: equal sizes keep memory order.
    out.sort_by_key(|c| std::cmp::Reverse(c.len()));
    Ok(out)
}

/// Axial slices containing any blood.
pub fn slices_with_blood(mask: &Array3<u8>) -> usize {
    mask.axis_iter(Axis(0))
        .filter(|p| p.iter().any(|&v| v != 0))
        .count()
}

/// Distance between slice planes (mm): voxel volume ÷ in-plane pixel area. Equals the z spacing
/// on an orthogonal grid; shorter than it on a gantry-tilted one (see [`Abc2`]).
pub fn slice_thickness_mm(stack: &Stack) -> f64 {
    let [sz, sy, sx] = stack.spacing.map(f64::from);
    let pixel = sy * sx;
    if pixel > 0.0 && stack.voxel_ml > 0.0 {
        stack.voxel_ml * 1000.0 / pixel
    } else {
        sz
    }
}

/// Kothari's ABC/2 of one component (its voxels `[z, y, x]`).
fn component_abc2(voxels: &[[usize; 3]], stack: &Stack) -> Abc2 {
    let Some((z0, z1)) = voxels
        .iter()
        .map(|v| v[0])
        .fold(None, |r: Option<(usize, usize)>, z| {
            Some(r.map_or((z, z), |(a, b)| (a.min(z), b.max(z))))
        })
    else {
        return Abc2::NONE;
    };
    let mut area = vec![0usize; z1 - z0 + 1];
    for v in voxels {
        area[v[0] - z0] += 1;
    }
    // Largest area; ties go to the lower slice.
    let (best, &max_area) = area
        .iter()
        .enumerate()
        .fold((0, &0), |b, (i, a)| if *a > *b.1 { (i, a) } else { b });
    let z = z0 + best;
    let [_, sy, sx] = stack.spacing.map(f64::from);
    // Leftmost and rightmost pixel of every row of the best slice: the hull of their corners is
    // the hull of all its pixel squares.
    let mut rows: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
    for v in voxels.iter().filter(|v| v[0] == z) {
        let e = rows.entry(v[1]).or_insert((v[2], v[2]));
        e.0 = e.0.min(v[2]);
        e.1 = e.1.max(v[2]);
    }
    let mut pts = Vec::with_capacity(rows.len() * 4);
    for (&y, &(x0, x1)) in &rows {
        let (left, right) = (x0 as f64 * sx, (x1 + 1) as f64 * sx);
        let (top, bottom) = (y as f64 * sy, (y + 1) as f64 * sy);
        pts.extend([(left, top), (left, bottom), (right, top), (right, bottom)]);
    }
    let (a_mm, b_mm) = diameters(&convex_hull(pts));
    let t = slice_thickness_mm(stack);
    let weighted_slices: f64 = area.iter().map(|&a| kothari_weight(a, max_area)).sum();
    let slices = area.iter().filter(|&&a| a > 0).count();
    let c_mm = weighted_slices * t;
    Abc2 {
        a_mm,
        b_mm,
        c_mm,
        slices,
        weighted_slices,
        slice: Some(z),
        ml: a_mm * b_mm * c_mm / 2.0 / 1000.0,
        extent_ml: a_mm * b_mm * slices as f64 * t / 2.0 / 1000.0,
    }
}

/// The per-haematoma report of a mask: every connected component with its volume, slices,
/// centroid, side and own ABC/2, largest first.
///
/// The one place haematomas are measured: the pipeline calls it on the model's final mask and
/// the same call measures a reader's edited mask, so the two reports always agree in method.
/// `midline` is `None` when the scan's orientation is unknown: every side is then
/// [`Side::Unknown`].
pub fn haematomas(
    mask: &Array3<u8>,
    stack: &Stack,
    midline: Option<&Midline>,
) -> Result<Vec<Haematoma>> {
    same_shape(mask, stack.dims(), "haematoma report")?;
    let [_, sy, sx] = stack.spacing.map(f64::from);
    let comps = components(mask)?;
    let mut out = Vec::with_capacity(comps.len());
    for (i, voxels) in comps.iter().enumerate() {
        let n = voxels.len() as f64;
        let mut sum = [0.0f64; 3];
        let (mut lo, mut hi) = (usize::MAX, 0);
        let mut right = 0usize;
        for v in voxels {
            for (s, &c) in sum.iter_mut().zip(v) {
                *s += c as f64;
            }
            lo = lo.min(v[0]);
            hi = hi.max(v[0]);
            if let Some(m) = midline {
                // Voxel positions as in the midline fit; one exactly on the line counts half to
                // each side.
                let d = m.right_of(v[1] as f64, v[2] as f64, sy, sx);
                right += if d > 0.0 {
                    2
                } else if d == 0.0 {
                    1
                } else {
                    0
                };
            }
        }
        let side = match midline {
            None => Side::Unknown,
            Some(_) => {
                let r = right as f64 / 2.0 / n;
                if r >= SIDE_FRACTION {
                    Side::Right
                } else if 1.0 - r >= SIDE_FRACTION {
                    Side::Left
                } else {
                    Side::Midline
                }
            }
        };
        out.push(Haematoma {
            id: i + 1,
            volume_ml: n * stack.voxel_ml,
            voxels: voxels.len(),
            slice_range: [lo, hi],
            centroid: sum.map(|s| s / n),
            side,
            abc2: component_abc2(voxels, stack),
        });
    }
    Ok(out)
}

/// Everything the report says about one mask on one scan: the total volume, the headline ABC/2
/// (the largest haematoma's), every haematoma, and the slices with blood.
///
/// Computed by [`measure`] and nothing else, for the model's mask ([`crate::pipeline::Prepared`])
/// and for a reader's edit of it ([`crate::review::Review`]): the two figures a reader compares
/// can only differ by the voxels that changed, never by method.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measures {
    /// Haemorrhage volume, mL (voxel count × voxel volume).
    pub volume_ml: f64,
    /// Kothari's ABC/2 of the largest haematoma ([`Abc2::NONE`] without blood).
    pub abc2: Abc2,
    /// Every haematoma, largest first.
    pub haematomas: Vec<Haematoma>,
    /// Axial slices containing blood.
    pub slices_with_blood: usize,
}

/// The [`Measures`] of `mask` (stack order) on `stack`; `midline` as for [`haematomas`].
pub fn measure(mask: &Array3<u8>, stack: &Stack, midline: Option<&Midline>) -> Result<Measures> {
    let haematomas = haematomas(mask, stack, midline)?;
    Ok(Measures {
        volume_ml: stack.mask_ml(mask),
        abc2: haematomas.first().map_or(Abc2::NONE, |h| h.abc2),
        slices_with_blood: slices_with_blood(mask),
        haematomas,
    })
}

/// The headline ABC/2 of a mask: Kothari's ABC/2 of its largest haematoma ([`Abc2::NONE`] for an
/// empty mask). The total volume stays the headline volume; ABC/2 over all blood at once
/// (a 0.5 mL strip far from the clot stretching A, every slice with any blood counting in C) is
/// what no reader measures.
pub fn abc2(mask: &Array3<u8>, stack: &Stack) -> Result<Abc2> {
    same_shape(mask, stack.dims(), "ABC/2")?;
    Ok(components(mask)?
        .first()
        .map_or(Abc2::NONE, |c| component_abc2(c, stack)))
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

/// Lesion-level detection of a prediction against a reference.
///
/// A true lesion is a connected component of the reference (26-connected, as in the report) of at
/// least a given size; it is found when the prediction covers ≥ [`LESION_FOUND_PERCENT`] % of its
/// voxels. Smaller true components are counted apart as specks: on thick slices an
/// intraventricular cast or a thin subarachnoid film breaks into dozens of fragments of a few
/// voxels, which no pipeline that drops components below its smallest reported size (0.05 mL in
/// ours) can find, and which would otherwise outnumber the bleeds a reader must not miss. A false
/// positive is a predicted component that touches no true blood at all. Dice rewards getting the
/// big clot's outline right; this counts the small bleeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LesionDetection {
    /// True lesions (components of at least the minimum size).
    pub lesions: usize,
    /// Of those, found.
    pub found: usize,
    /// True components below the minimum size (not counted as lesions).
    pub specks: usize,
    /// Predicted components with no true voxel.
    pub false_positives: usize,
}

/// Share (%) of a true lesion that must be covered for it to count as found.
pub const LESION_FOUND_PERCENT: usize = 30;

impl LesionDetection {
    /// Count lesions of `truth` (components of at least `min_voxels` voxels) found by `pred`
    /// (same shape).
    pub fn new(pred: &Array3<u8>, truth: &Array3<u8>, min_voxels: usize) -> Result<Self> {
        same_shape(pred, truth.dim(), "lesion detection")?;
        let all = components(truth)?;
        let specks = all.iter().filter(|c| c.len() < min_voxels).count();
        let truths: Vec<_> = all.iter().filter(|c| c.len() >= min_voxels).collect();
        let found = truths
            .iter()
            .filter(|c| {
                let hit = c.iter().filter(|v| pred[**v] != 0).count();
                // Integers: 30 % of 10 voxels is 3 voxels, not 3.0000000000000004.
                100 * hit >= LESION_FOUND_PERCENT * c.len()
            })
            .count();
        let false_positives = components(pred)?
            .iter()
            .filter(|c| c.iter().all(|v| truth[*v] == 0))
            .count();
        Ok(LesionDetection {
            lesions: truths.len(),
            found,
            specks,
            false_positives,
        })
    }

    /// `found / lesions`; `None` without true lesions.
    pub fn sensitivity(&self) -> Option<f64> {
        (self.lesions > 0).then(|| self.found as f64 / self.lesions as f64)
    }
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

    /// Rotation about x by `ax`, then about z by `az` (radians): out-of-plane tilt, then an
    /// in-plane turn.
    fn rotation(ax: f64, az: f64) -> [[f64; 3]; 3] {
        let (sa, ca) = ax.sin_cos();
        let (sz, cz) = az.sin_cos();
        let rx = [[1.0, 0.0, 0.0], [0.0, ca, -sa], [0.0, sa, ca]];
        let rz = [[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]];
        std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| rz[i][k] * rx[k][j]).sum()))
    }

    /// An ellipsoid with semi-axes `semi` (mm, along its own x, y, z), rotated by `rot`, centred
    /// at world `centre` (mm), sampled at voxel centres of a grid whose voxel `(z, y, x)` sits at
    /// world `(x·sx, y·sy + z·shear, z·t)`: `t` is the distance between slice planes and `shear`
    /// the in-plane shift per slice (gantry tilt).
    struct Ellipsoid {
        semi: [f64; 3],
        rot: [[f64; 3]; 3],
        centre: [f64; 3],
    }

    impl Ellipsoid {
        fn contains(&self, p: [f64; 3]) -> bool {
            let d = [0, 1, 2].map(|k| p[k] - self.centre[k]);
            // Body coordinates: Rᵀ d.
            let b = [0, 1, 2].map(|j| (0..3).map(|i| self.rot[i][j] * d[i]).sum::<f64>());
            (0..3).map(|k| (b[k] / self.semi[k]).powi(2)).sum::<f64>() <= 1.0
        }

        fn volume_ml(&self) -> f64 {
            4.0 / 3.0 * std::f64::consts::PI * self.semi.iter().product::<f64>() / 1000.0
        }

        /// `(p, q, h)`: semi-axes of the horizontal section through the centre (p ≥ q) and the
        /// half-height. Horizontal sections of an ellipsoid are similar ellipses scaled by
        /// `√(1 − (z/h)²)`, so these three fix every slice's area.
        fn sections(&self) -> (f64, f64, f64) {
            let r = self.rot;
            let s2 = self.semi.map(|s| s * s);
            // M = R D⁻² Rᵀ (the quadratic form) and its inverse R D² Rᵀ.
            let form = |inv: bool, i: usize, j: usize| -> f64 {
                (0..3)
                    .map(|k| r[i][k] * r[j][k] * if inv { s2[k] } else { 1.0 / s2[k] })
                    .sum()
            };
            let h = form(true, 2, 2).sqrt();
            // Section z = 0: xᵀ M_xy x ≤ 1; semi-axes 1/√eigenvalue.
            let (mxx, myy, mxy) = (form(false, 0, 0), form(false, 1, 1), form(false, 0, 1));
            let m = (mxx + myy) / 2.0;
            let d = (((mxx - myy) / 2.0).powi(2) + mxy * mxy).sqrt();
            ((m - d).sqrt().recip(), (m + d).sqrt().recip(), h)
        }

        /// Kothari's ABC/2 by hand: A = 2p, B = 2q, C = t × Σ weights of the slices whose
        /// centres lie at `z = k·t`, each slice's area fraction being `1 − (dz/h)²`. Asserts that
        /// no fraction is within 0.012 of Kothari's 25 % and 75 % borders, where the pixelated
        /// area (about 1 % off on these grids) could fall on the other side.
        fn kothari_ml(&self, nz: usize, t: f64) -> (f64, f64) {
            let (p, q, h) = self.sections();
            let mut w = 0.0;
            for k in 0..nz {
                let dz = k as f64 * t - self.centre[2];
                let f = 1.0 - (dz / h).powi(2);
                if f <= 0.0 {
                    continue;
                }
                assert!(
                    (f - 0.25).abs() > 0.012 && (f - 0.75).abs() > 0.012,
                    "slice {k}: area fraction {f:.3} is too close to a Kothari border for a test"
                );
                w += if f >= 0.75 {
                    1.0
                } else if f >= 0.25 {
                    0.5
                } else {
                    0.0
                };
            }
            (2.0 * p * 2.0 * q * w * t / 2.0 / 1000.0, w * t)
        }
    }

    /// Stack and mask of `shapes` on a `dims` grid (see [`Ellipsoid`] for the geometry).
    fn sample(
        dims: (usize, usize, usize),
        t: f64,
        pixel: f64,
        shear: f64,
        shapes: &[&Ellipsoid],
    ) -> (Stack, Array3<u8>) {
        let m = Array3::from_shape_fn(dims, |(z, y, x)| {
            let p = [
                x as f64 * pixel,
                y as f64 * pixel + z as f64 * shear,
                z as f64 * t,
            ];
            u8::from(shapes.iter().any(|e| e.contains(p)))
        });
        let step = (t * t + shear * shear).sqrt();
        let s = Stack {
            hu: Array3::zeros(dims),
            spacing: [step as f32, pixel as f32, pixel as f32],
            voxel_ml: t * pixel * pixel / 1000.0,
        };
        (s, m)
    }

    fn close(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs()
    }

    #[test]
    fn ellipsoid_abc2_is_its_volume_and_kothari_by_hand() {
        // Semi-axes 25 × 15 × 20 mm on 0.5 mm pixels and 1 mm slices.
        let e = Ellipsoid {
            semi: [25.0, 15.0, 20.0],
            rot: rotation(0.0, 0.0),
            centre: [35.2, 30.1, 25.5],
        };
        let (s, m) = sample((52, 124, 144), 1.0, 0.5, 0.0, &[&e]);
        let list = haematomas(&m, &s, None).unwrap();
        assert_eq!(list.len(), 1);
        let r = list[0].abc2;
        assert!(
            close(r.a_mm, 50.0, 0.03) && close(r.b_mm, 30.0, 0.03),
            "{r:?}"
        );
        // Unweighted ABC/2 = π/6·abc of the diameters = the ellipsoid's volume (within π ≈ 3).
        assert!(
            close(r.extent_ml, e.volume_ml(), 0.05),
            "{r:?} vs {}",
            e.volume_ml()
        );
        let (want, c) = e.kothari_ml(52, 1.0);
        assert!((r.c_mm - c).abs() <= 1.0, "C {} vs {c}", r.c_mm);
        assert!(
            close(r.ml, want, 0.05),
            "Kothari ABC/2 {} vs {want} by hand",
            r.ml
        );
        // Kothari's weighting on a smooth ellipsoid: about two thirds of its volume.
        assert!((0.6..0.75).contains(&(r.ml / e.volume_ml())), "{r:?}");
        assert_eq!(abc2(&m, &s).unwrap(), r, "headline = the only haematoma's");
        assert!(close(list[0].volume_ml, e.volume_ml(), 0.02));
    }

    #[test]
    fn two_separate_blobs_headline_is_the_larger() {
        let big = Ellipsoid {
            semi: [20.0, 14.0, 16.0],
            rot: rotation(0.0, 0.4),
            centre: [30.3, 40.2, 21.1],
        };
        let small = Ellipsoid {
            semi: [6.0, 6.0, 6.0],
            rot: rotation(0.0, 0.0),
            centre: [100.4, 90.7, 33.3],
        };
        let (s, m) = sample((24, 220, 230), 2.0, 0.5, 0.0, &[&big, &small]);
        let list = haematomas(&m, &s, None).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].id, list[1].id), (1, 2));
        assert!(close(list[0].volume_ml, big.volume_ml(), 0.03), "{list:?}");
        assert!(
            close(list[1].volume_ml, small.volume_ml(), 0.05),
            "{list:?}"
        );
        let total = volume_ml(&m, &s).unwrap();
        assert!((list[0].volume_ml + list[1].volume_ml - total).abs() < 1e-9);
        let (want, _) = big.kothari_ml(24, 2.0);
        let head = abc2(&m, &s).unwrap();
        assert!(close(head.ml, want, 0.05), "headline {} vs {want}", head.ml);
        assert!(close(head.extent_ml, big.volume_ml(), 0.05), "{head:?}");
        // The small blob's ABC/2 is its own, not stretched by the big one.
        assert!(list[1].abc2.a_mm < 14.0, "{:?}", list[1].abc2);
        // Its centroid is where it was drawn (voxel coordinates).
        let c = list[1].centroid;
        assert!((c[2] * 0.5 - 100.4).abs() < 0.5 && (c[1] * 0.5 - 90.7).abs() < 0.5);
        assert!((c[0] * 2.0 - 33.3).abs() < 1.0, "{c:?}");
    }

    #[test]
    fn tilted_ellipsoid_in_and_out_of_plane() {
        // Tilted 35° out of the axial plane and turned 50° in it.
        let e = Ellipsoid {
            semi: [24.0, 12.0, 18.0],
            rot: rotation(35f64.to_radians(), 50f64.to_radians()),
            centre: [45.1, 44.6, 25.4],
        };
        let (s, m) = sample((52, 180, 180), 1.0, 0.5, 0.0, &[&e]);
        let r = abc2(&m, &s).unwrap();
        let (p, q, h) = e.sections();
        assert!(close(r.a_mm, 2.0 * p, 0.03), "A {} vs {}", r.a_mm, 2.0 * p);
        assert!(close(r.b_mm, 2.0 * q, 0.04), "B {} vs {}", r.b_mm, 2.0 * q);
        assert!((r.slices as f64 - 2.0 * h).abs() <= 1.0, "{r:?} vs h {h}");
        let (want, _) = e.kothari_ml(52, 1.0);
        assert!(close(r.ml, want, 0.05), "{} vs {want}", r.ml);
        assert!(close(r.extent_ml, e.volume_ml(), 0.05), "{r:?}");
    }

    #[test]
    fn thick_slices_on_a_gantry_tilted_grid() {
        // 5 mm slices, 0.5 mm pixels, a 20° gantry tilt (each slice shifted 1.82 mm in y): the
        // step between slice origins is 5.32 mm, the slices are 5 mm apart.
        let shear = 5.0 * 20f64.to_radians().tan();
        let e = Ellipsoid {
            semi: [22.0, 16.0, 21.0],
            rot: rotation(0.0, 0.0),
            centre: [40.2, 45.3, 32.5],
        };
        let (s, m) = sample((14, 200, 170), 5.0, 0.5, shear, &[&e]);
        assert!((f64::from(s.spacing[0]) - 5.321).abs() < 1e-3);
        assert!((slice_thickness_mm(&s) - 5.0).abs() < 1e-6);
        let r = abc2(&m, &s).unwrap();
        let (want, c) = e.kothari_ml(14, 5.0);
        // Slice centres 2.5, 7.5, 12.5, 17.5 mm either side of the centre: area fractions 0.99,
        // 0.87, 0.65, 0.31 → weights 1, 1, ½, ½ on each side: C = 6 × 5 mm, exactly.
        assert!((r.c_mm - c).abs() < 1e-9, "C {} vs {c}", r.c_mm);
        assert_eq!(r.weighted_slices, c / 5.0);
        assert!(close(r.ml, want, 0.05), "{} vs {want}", r.ml);
        assert!(
            close(r.a_mm, 44.0, 0.03) && close(r.b_mm, 32.0, 0.03),
            "{r:?}"
        );
        assert!(close(volume_ml(&m, &s).unwrap(), e.volume_ml(), 0.03));
    }

    #[test]
    fn kothari_weights_a_stepped_cone() {
        // Centred squares of 20, 18, 14, 10 and 8 pixels (1 mm) on 2 mm slices: areas 100 %,
        // 81 % (1), 49 % (½), 25 % (½: the border belongs to the middle band), 16 % (0).
        let sides = [20usize, 18, 14, 10, 8];
        let dims = (7, 30, 30);
        let m = Array3::from_shape_fn(dims, |(z, y, x)| {
            let Some(&n) = z.checked_sub(1).and_then(|k| sides.get(k)) else {
                return 0;
            };
            let lo = 15 - n / 2;
            u8::from((lo..lo + n).contains(&y) && (lo..lo + n).contains(&x))
        });
        let s = stack(dims, [2.0, 1.0, 1.0]);
        let r = abc2(&m, &s).unwrap();
        assert_eq!(r.slices, 5);
        assert_eq!(r.slice, Some(1));
        assert_eq!(r.weighted_slices, 3.0);
        assert!((r.c_mm - 6.0).abs() < 1e-12);
        // A = B = the 20 mm square's diagonal; A·B/2 = its area, 400 mm².
        assert!((r.a_mm - 20.0 * 2f64.sqrt()).abs() < 1e-9, "{r:?}");
        assert!((r.a_mm * r.b_mm / 2.0 - 400.0).abs() < 1e-9, "{r:?}");
        assert!((r.ml - 400.0 * 6.0 / 1000.0).abs() < 1e-9);
        assert!((r.extent_ml - 400.0 * 10.0 / 1000.0).abs() < 1e-9);
        assert_eq!(kothari_weight(3, 4), 1.0);
        assert_eq!(kothari_weight(74, 100), 0.5);
        assert_eq!(kothari_weight(24, 100), 0.0);
        assert_eq!(kothari_weight(0, 0), 0.0);
    }

    #[test]
    fn diagonal_contact_across_slices_is_one_haematoma() {
        // Two 3×3 squares on neighbouring slices that touch only at a corner: 26-connected.
        let dims = (2, 8, 8);
        let m = Array3::from_shape_fn(dims, |(z, y, x)| {
            let o = if z == 0 { 1 } else { 4 };
            u8::from((o..o + 3).contains(&y) && (o..o + 3).contains(&x))
        });
        let s = stack(dims, [5.0, 1.0, 1.0]);
        let list = haematomas(&m, &s, None).unwrap();
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].slice_range, [0, 1]);
        assert_eq!(list[0].side, Side::Unknown);
    }

    /// A brain ellipse (50 mm anterior-posterior, 40 mm left-right, turned 12°) off the image
    /// centre, and three haematomas: right of its midline, left of it, and across it.
    fn head_with_three_bleeds() -> (Stack, Array3<u8>, Array3<u8>) {
        let dims = (6, 130, 140);
        let (cx, cy) = (63.0, 70.0);
        let (st, ct) = 12f64.to_radians().sin_cos();
        // Body axes: `u` along the head (anterior), `v` across it (to the patient's right).
        let body = |y: usize, x: usize| {
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            (dx * -st + dy * ct, dx * ct + dy * st)
        };
        let brain = Array3::from_shape_fn(dims, |(_, y, x)| {
            let (u, v) = body(y, x);
            u8::from((u / 50.0).powi(2) + (v / 40.0).powi(2) <= 1.0)
        });
        let mask = Array3::from_shape_fn(dims, |(z, y, x)| {
            let (u, v) = body(y, x);
            let right = (u - 5.0).powi(2) + (v - 20.0).powi(2) <= 36.0 && (1..3).contains(&z);
            let left = (u + 10.0).powi(2) + (v + 22.0).powi(2) <= 25.0 && (2..5).contains(&z);
            let across = (u - 30.0).powi(2) + v.powi(2) <= 16.0 && z == 3;
            u8::from(right || left || across)
        });
        (stack(dims, [5.0, 1.0, 1.0]), brain, mask)
    }

    #[test]
    fn side_from_the_brain_midline() {
        let (s, brain, mask) = head_with_three_bleeds();
        let mid = Midline::from_brain(&brain, &s).unwrap().unwrap();
        assert!(mid.right[0] > 0.9, "right points along +x: {mid:?}");
        // The brain's centroid and principal axis, summed the obvious way in two passes: the
        // midline goes through the one and along the other.
        let on: Vec<(f64, f64)> = brain
            .indexed_iter()
            .filter(|(_, v)| **v != 0)
            .map(|((_, y, x), _)| (x as f64, y as f64))
            .collect();
        let n = on.len() as f64;
        let (cx, cy) = on
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
        let (vxx, vyy, vxy) = on.iter().fold((0.0, 0.0, 0.0), |(a, b, c), (x, y)| {
            let (dx, dy) = (x - cx, y - cy);
            (a + dx * dx, b + dy * dy, c + dx * dy)
        });
        let theta = 0.5 * (2.0 * vxy).atan2(vxx - vyy);
        assert!((mid.point_mm[0] - cx).abs() < 1e-9 && (mid.point_mm[1] - cy).abs() < 1e-9);
        let along_dot_right = theta.cos() * mid.right[0] + theta.sin() * mid.right[1];
        assert!(along_dot_right.abs() < 1e-9, "{mid:?} against axis {theta}");
        let list = haematomas(&mask, &s, Some(&mid)).unwrap();
        assert_eq!(list.len(), 3, "{list:?}");
        let side_of = |cx: f64| {
            list.iter()
                .min_by(|a, b| {
                    (a.centroid[2] - cx)
                        .abs()
                        .total_cmp(&(b.centroid[2] - cx).abs())
                })
                .map(|h| h.side)
        };
        // Body (u, v) → image: x = cx + v·cos − u·sin.
        let (st, ct) = 12f64.to_radians().sin_cos();
        assert_eq!(side_of(63.0 + 20.0 * ct - 5.0 * st), Some(Side::Right));
        assert_eq!(side_of(63.0 - 22.0 * ct + 10.0 * st), Some(Side::Left));
        assert_eq!(side_of(63.0 - 30.0 * st), Some(Side::Midline));
        let unknown = haematomas(&mask, &s, None).unwrap();
        assert!(unknown.iter().all(|h| h.side == Side::Unknown));
        assert_eq!(
            Midline::from_brain(&Array3::zeros(s.dims()), &s).unwrap(),
            None
        );
    }

    /// The scan through the reader: a head whose file runs i → patient Left (LAS), with a bleed
    /// at low i (the patient's right); and the same voxels with no qform/sform.
    #[test]
    fn side_follows_the_file_orientation_and_is_unknown_without_one() {
        use crate::io::{Geometry, Storage, write_nifti_gz};
        let (ni, nj, nk) = (80usize, 90usize, 4usize);
        let values = Array3::from_shape_fn((nk, nj, ni), |(_, j, i)| {
            let (di, dj) = (i as f64 - 40.0, j as f64 - 45.0);
            let bleed = (di + 20.0).powi(2) + dj.powi(2) <= 25.0;
            if bleed {
                70.0
            } else if (di / 30.0).powi(2) + (dj / 38.0).powi(2) <= 1.0 {
                30.0
            } else {
                -1000.0
            }
        });
        let mut a: crate::io::Affine = [[0.0; 4]; 4];
        a[0][0] = -1.0;
        a[1][1] = 1.0;
        a[2][2] = 5.0;
        a[3][3] = 1.0;
        let storage = Storage::I16 {
            slope: 1.0,
            inter: 0.0,
        };
        let geom = Geometry::from_affine([ni, nj, nk], &a).unwrap();
        let read = |g: &Geometry| {
            let bytes = write_nifti_gz(&values, g, storage).unwrap();
            let scan = Scan::from_bytes(&bytes).unwrap();
            let brain = scan.stack.hu.mapv(|h| u8::from(h > 0.0));
            let mask = scan.stack.hu.mapv(|h| u8::from(h > 50.0));
            let mid = Midline::for_scan(&scan, &brain).unwrap();
            haematomas(&mask, &scan.stack, mid.as_ref()).unwrap()
        };
        let list = read(&geom);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].side, Side::Right, "{list:?}");
        let mut bare = geom.clone();
        bare.qform_code = 0;
        bare.sform_code = 0;
        let list = read(&bare);
        assert_eq!(list[0].side, Side::Unknown, "{list:?}");
    }

    #[test]
    fn lesion_detection_counts_found_and_false_positive_components() {
        let dims = (1, 10, 30);
        // Truth: a 10-voxel bar (x 0..10) and a 4-voxel one (x 20..24), row 2.
        let truth = Array3::from_shape_fn(dims, |(_, y, x)| {
            u8::from(y == 2 && ((0..10).contains(&x) || (20..24).contains(&x)))
        });
        // Prediction covers 3 of the first (30 %: found), 1 of the second (25 %: missed), and
        // a separate speck at row 8.
        let pred = Array3::from_shape_fn(dims, |(_, y, x)| {
            u8::from((y == 2 && ((0..3).contains(&x) || x == 20)) || (y == 8 && x == 15))
        });
        let d = LesionDetection::new(&pred, &truth, 1).unwrap();
        assert_eq!(
            (d.lesions, d.found, d.specks, d.false_positives),
            (2, 1, 0, 1)
        );
        assert_eq!(d.sensitivity(), Some(0.5));
        // With lesions of at least 5 voxels, the 4-voxel bar is a speck: one lesion, found.
        let d = LesionDetection::new(&pred, &truth, 5).unwrap();
        assert_eq!(
            (d.lesions, d.found, d.specks, d.false_positives),
            (1, 1, 1, 1)
        );
        assert_eq!(d.sensitivity(), Some(1.0));
        let none = LesionDetection::new(&pred, &Array3::zeros(dims), 1).unwrap();
        assert_eq!((none.lesions, none.sensitivity()), (0, None));
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
