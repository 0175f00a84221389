//! Voxel-to-world geometry: which affine a file means, and the closest axis permutation and flips
//! that bring its voxels into the canonical stack of [`crate::volume`].
//!
//! No resampling anywhere: a sheared (gantry-tilted) or oblique grid keeps its voxels; only the
//! index order changes. The exact affine is kept for writing results back, and the voxel volume
//! comes from its determinant, which stays right for sheared grids.

use crate::{Error, Result};

/// A 4×4 voxel-to-world (RAS+, mm) matrix; row-major, last row `0 0 0 1`.
pub type Affine = [[f64; 4]; 4];

/// The grid a NIfTI-1 file is written on: everything a viewer needs to place it in the world.
///
/// Fields mirror the NIfTI-1 header (f32 precision) so that a mask written with a scan's
/// geometry carries byte-for-byte the same qform and sform as the scan (from a NIfTI-2 source the
/// values are rounded to f32, which is far below a voxel).
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    /// Voxel counts `(ni, nj, nk)`, NIfTI's `dim[1..=3]` (`i` is fastest in the file).
    pub dims: [usize; 3],
    /// NIfTI's `pixdim[0..8]`; `pixdim[0]` is the qform's `qfac` (±1), `pixdim[1..=3]` voxel sizes.
    pub pixdim: [f32; 8],
    /// `qform_code` (0: no qform).
    pub qform_code: i16,
    /// Quaternion `(b, c, d)` of the qform rotation.
    pub quatern: [f32; 3],
    /// qform translation `(x, y, z)` in mm.
    pub qoffset: [f32; 3],
    /// `sform_code` (0: no sform).
    pub sform_code: i16,
    /// The sform's three rows `srow_x`, `srow_y`, `srow_z`.
    pub srow: [[f32; 4]; 3],
    /// NIfTI `xyzt_units` (10 = mm and seconds).
    pub xyzt_units: u8,
}

/// Which header fields an affine came from (NIfTI's three methods, in order of preference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AffineSource {
    /// `sform_code > 0`: the general affine (may be sheared).
    Sform,
    /// `qform_code > 0`: rotation + voxel sizes + offset.
    Qform,
    /// Neither: voxel sizes only (Analyze-style), origin at voxel 0.
    Pixdim,
    /// A DICOM series: Image Orientation/Position (Patient) and Pixel Spacing, LPS turned RAS.
    Dicom,
}

impl AffineSource {
    /// `"sform"`, `"qform"`, `"pixdim"`.
    pub fn name(self) -> &'static str {
        match self {
            AffineSource::Sform => "sform",
            AffineSource::Qform => "qform",
            AffineSource::Pixdim => "pixdim",
            AffineSource::Dicom => "dicom",
        }
    }
}

/// NIfTI units code for millimetres and seconds.
const MM_SEC: u8 = 10;
/// Largest deviation from orthogonality a qform can absorb; beyond it (shear) only the sform
/// carries the affine.
const ORTHO_TOL: f64 = 1e-4;

impl Geometry {
    /// A grid from an affine: the sform is the affine exactly (code 1, scanner anatomical); the
    /// qform is set to the same rotation when the affine has none of shear (code 1), otherwise it
    /// is left empty (code 0) because a qform cannot represent shear and a second, different
    /// affine in the same file would make viewers disagree.
    pub fn from_affine(dims: [usize; 3], affine: &Affine) -> Result<Geometry> {
        let m = rzs(affine);
        let det = det3(&m);
        if !det.is_finite() || det.abs() < 1e-12 || affine.iter().flatten().any(|v| !v.is_finite())
        {
            return Err(Error::InvalidInput(format!(
                "the affine {affine:?} is degenerate (determinant {det}): it maps the grid onto a \
                 plane"
            )));
        }
        let len = col_lengths(&m);
        let mut g = Geometry {
            dims,
            pixdim: [
                1.0,
                len[0] as f32,
                len[1] as f32,
                len[2] as f32,
                0.0,
                0.0,
                0.0,
                0.0,
            ],
            qform_code: 0,
            quatern: [0.0; 3],
            qoffset: [
                affine[0][3] as f32,
                affine[1][3] as f32,
                affine[2][3] as f32,
            ],
            sform_code: 1,
            srow: [[0.0; 4]; 3],
            xyzt_units: MM_SEC,
        };
        for (r, row) in g.srow.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = affine[r][c] as f32;
            }
        }
        if let Some((q, qfac)) = rotation_quaternion(&m, &len) {
            g.qform_code = 1;
            g.quatern = [q[0] as f32, q[1] as f32, q[2] as f32];
            g.pixdim[0] = qfac as f32;
        }
        Ok(g)
    }

    /// An RAS+ grid for a canonical stack: `i` → Right, `j` → Anterior, `k` → Superior, with
    /// voxel sizes `spacing_xyz` and the volume centred on the world origin.
    pub fn ras(dims: [usize; 3], spacing_xyz: [f32; 3]) -> Result<Geometry> {
        let mut a: Affine = [[0.0; 4], [0.0; 4], [0.0; 4], [0.0, 0.0, 0.0, 1.0]];
        for ax in 0..3 {
            let s = f64::from(spacing_xyz[ax]);
            a[ax][ax] = s;
            a[ax][3] = -(dims[ax].saturating_sub(1) as f64) * s / 2.0;
        }
        Geometry::from_affine(dims, &a)
    }

    /// The affine NIfTI readers use for this grid, in mm (the header's spatial unit applied; an
    /// invalid unit code, which the reader refuses, counts as mm here), and where it came from.
    pub fn affine(&self) -> (Affine, AffineSource) {
        let f = |v: f32| f64::from(v);
        let src = SourceFields {
            pixdim: self.pixdim.map(f),
            qform_code: i32::from(self.qform_code),
            quatern: self.quatern.map(f),
            qoffset: self.qoffset.map(f),
            sform_code: i32::from(self.sform_code),
            srow: self.srow.map(|r| r.map(f)),
        };
        let mut ignored = Vec::new();
        let (a, source) = select_affine(&src, &mut ignored);
        let unit = mm_per_unit(self.xyzt_units).unwrap_or(1.0);
        (scale_lengths(&a, unit), source)
    }
}

/// The geometry fields of a header in full precision.
#[derive(Debug, Clone)]
pub(crate) struct SourceFields {
    pub pixdim: [f64; 8],
    pub qform_code: i32,
    pub quatern: [f64; 3],
    pub qoffset: [f64; 3],
    pub sform_code: i32,
    pub srow: [[f64; 4]; 3],
}

/// NIfTI's rule: sform if its code is positive, else qform, else voxel sizes. A chosen affine that
/// is degenerate (zero determinant, NaN) is skipped with a warning rather than trusted.
pub(crate) fn select_affine(
    s: &SourceFields,
    warnings: &mut Vec<String>,
) -> (Affine, AffineSource) {
    if s.sform_code > 0 {
        let mut a = identity();
        a[..3].copy_from_slice(&s.srow);
        if usable(&a) {
            return (a, AffineSource::Sform);
        }
        warnings.push(format!(
            "the sform (code {}) is degenerate or not finite; it was ignored",
            s.sform_code
        ));
    }
    if s.qform_code > 0 {
        let a = qform_affine(s);
        if usable(&a) {
            return (a, AffineSource::Qform);
        }
        warnings.push(format!(
            "the qform (code {}) is degenerate or not finite; it was ignored",
            s.qform_code
        ));
    }
    let mut a = identity();
    for (ax, row) in a.iter_mut().take(3).enumerate() {
        let p = s.pixdim[ax + 1].abs();
        row[ax] = if p.is_finite() && p > 0.0 {
            p
        } else {
            warnings.push(format!(
                "voxel size pixdim[{}] is {}; 1 mm was assumed",
                ax + 1,
                s.pixdim[ax + 1]
            ));
            1.0
        };
    }
    (a, AffineSource::Pixdim)
}

/// Millimetres per unit of NIfTI's spatial unit code (`xyzt_units & 7`).
///
/// Every length in this crate is in mm, so a file whose affine is in metres or microns must be
/// scaled before anything is measured: read as mm, a head in metres is a millionth of a mL. Code 0
/// ("unknown") is read as mm, as NIfTI readers and scanners' converters do; codes 4–7 are not
/// spatial units at all and are refused rather than guessed.
pub(crate) fn mm_per_unit(xyzt_units: u8) -> Result<f64> {
    match xyzt_units & 0x07 {
        0 | 2 => Ok(1.0),
        1 => Ok(1000.0),
        3 => Ok(0.001),
        code => Err(Error::BadHeader(format!(
            "xyzt_units {xyzt_units} gives spatial unit code {code}, which is not a length \
             (1 metre, 2 mm, 3 micron, 0 unknown): the voxel sizes cannot be converted to mm"
        ))),
    }
}

/// The affine with its lengths (voxel axes and origin) multiplied by `mm_per_unit`.
pub(crate) fn scale_lengths(a: &Affine, mm_per_unit: f64) -> Affine {
    let mut out = *a;
    for row in out.iter_mut().take(3) {
        for v in row.iter_mut() {
            *v *= mm_per_unit;
        }
    }
    out
}

fn identity() -> Affine {
    let mut a = [[0.0; 4]; 4];
    for (i, row) in a.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    a
}

fn usable(a: &Affine) -> bool {
    let d = det3(&rzs(a));
    a.iter().flatten().all(|v| v.is_finite()) && d.is_finite() && d.abs() > 1e-12
}

/// The qform affine (NIfTI method 2): rotation from the quaternion, `qfac` flipping the third axis.
fn qform_affine(s: &SourceFields) -> Affine {
    let [mut b, mut c, mut d] = s.quatern;
    let a2 = 1.0 - (b * b + c * c + d * d);
    // b, c, d are stored as f32, so for 180° turns (a ≈ 0) their squares can sum to just under 1
    // and a spurious a ≈ 3e-4 would tilt the grid; below 1e-7 (f32 noise) take a = 0 and
    // renormalise, as the NIfTI reference library does.
    let a = if a2 < 1e-7 {
        let n = (b * b + c * c + d * d).sqrt();
        if n > 0.0 {
            (b, c, d) = (b / n, c / n, d / n);
        }
        0.0
    } else {
        a2.sqrt()
    };
    let r = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ];
    let qfac = if s.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let scale = [s.pixdim[1], s.pixdim[2], s.pixdim[3] * qfac];
    let mut out = identity();
    for row in 0..3 {
        for col in 0..3 {
            out[row][col] = r[row][col] * scale[col];
        }
        out[row][3] = s.qoffset[row];
    }
    out
}

/// Quaternion `(b, c, d)` and `qfac` for an affine's 3×3 part when it is a rotation times
/// positive scales (no shear); `None` when it is sheared.
fn rotation_quaternion(m: &[[f64; 3]; 3], len: &[f64; 3]) -> Option<([f64; 3], f64)> {
    let mut r = [[0.0; 3]; 3];
    for row in 0..3 {
        for col in 0..3 {
            r[row][col] = m[row][col] / len[col];
        }
    }
    for (p, q) in [(0, 1), (0, 2), (1, 2)] {
        let dot: f64 = (0..3).map(|k| r[k][p] * r[k][q]).sum();
        if dot.abs() > ORTHO_TOL {
            return None;
        }
    }
    let qfac = if det3(&r) < 0.0 { -1.0 } else { 1.0 };
    for row in r.iter_mut() {
        row[2] *= qfac;
    }
    // Largest-component extraction: stable for every rotation, including 180° turns.
    let trace = r[0][0] + r[1][1] + r[2][2];
    let (a, b, c, d);
    if trace > 0.0 {
        let s = (trace + 1.0).sqrt() * 2.0;
        a = s / 4.0;
        b = (r[2][1] - r[1][2]) / s;
        c = (r[0][2] - r[2][0]) / s;
        d = (r[1][0] - r[0][1]) / s;
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let s = (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt() * 2.0;
        a = (r[2][1] - r[1][2]) / s;
        b = s / 4.0;
        c = (r[0][1] + r[1][0]) / s;
        d = (r[0][2] + r[2][0]) / s;
    } else if r[1][1] > r[2][2] {
        let s = (1.0 + r[1][1] - r[0][0] - r[2][2]).sqrt() * 2.0;
        a = (r[0][2] - r[2][0]) / s;
        b = (r[0][1] + r[1][0]) / s;
        c = s / 4.0;
        d = (r[1][2] + r[2][1]) / s;
    } else {
        let s = (1.0 + r[2][2] - r[0][0] - r[1][1]).sqrt() * 2.0;
        a = (r[1][0] - r[0][1]) / s;
        b = (r[0][2] + r[2][0]) / s;
        c = (r[1][2] + r[2][1]) / s;
        d = s / 4.0;
    }
    // NIfTI stores only b, c, d and derives a ≥ 0, so flip the sign of all four when a < 0.
    let sign = if a < 0.0 { -1.0 } else { 1.0 };
    Some(([b * sign, c * sign, d * sign], qfac))
}

/// The 3×3 rotation-zoom-shear part.
pub(crate) fn rzs(a: &Affine) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            m[r][c] = a[r][c];
        }
    }
    m
}

pub(crate) fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// Length of each column: the distance in mm between neighbouring voxels along each file axis.
pub(crate) fn col_lengths(m: &[[f64; 3]; 3]) -> [f64; 3] {
    let mut l = [0.0; 3];
    for (c, v) in l.iter_mut().enumerate() {
        *v = (0..3).map(|r| m[r][c] * m[r][c]).sum::<f64>().sqrt();
    }
    l
}

/// How the file's voxel axes map onto the canonical stack `[z, y, x]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reorient {
    /// For file axis `a` (`i`, `j`, `k`): the stack axis it becomes (0 = z, 1 = y, 2 = x).
    pub stack_axis: [usize; 3],
    /// For file axis `a`: whether its index runs against the stack axis (world −).
    pub flip: [bool; 3],
    /// The file's voxel counts `(ni, nj, nk)`.
    pub file_dims: [usize; 3],
}

impl Reorient {
    /// The closest axis permutation and flips for `affine` (like nibabel's `io_orientation`,
    /// without its SVD step): repeatedly take the largest remaining entry of the column-normalised
    /// 3×3 part, which pairs a file axis with a world axis; its sign gives the direction.
    pub(crate) fn from_affine(affine: &Affine, file_dims: [usize; 3]) -> Reorient {
        let m = rzs(affine);
        let len = col_lengths(&m);
        let mut used_world = [false; 3];
        let mut used_file = [false; 3];
        let mut stack_axis = [0; 3];
        let mut flip = [false; 3];
        for _ in 0..3 {
            let mut best: Option<(usize, usize, f64)> = None;
            for w in (0..3).filter(|&w| !used_world[w]) {
                for a in (0..3).filter(|&a| !used_file[a]) {
                    let v = if len[a] > 0.0 { m[w][a] / len[a] } else { 0.0 };
                    let v = if v.is_finite() { v } else { 0.0 };
                    if best.is_none_or(|(_, _, b)| v.abs() > b.abs()) {
                        best = Some((w, a, v));
                    }
                }
            }
            if let Some((w, a, v)) = best {
                used_world[w] = true;
                used_file[a] = true;
                stack_axis[a] = 2 - w;
                flip[a] = v < 0.0;
            }
        }
        Reorient {
            stack_axis,
            flip,
            file_dims,
        }
    }

    /// Axis codes of the file ("LAS": `i` runs to Left, `j` to Anterior, `k` to Superior).
    pub(crate) fn axis_codes(&self) -> String {
        (0..3)
            .map(|a| match (self.stack_axis[a], self.flip[a]) {
                (2, false) => 'R',
                (2, true) => 'L',
                (1, false) => 'A',
                (1, true) => 'P',
                (_, false) => 'S',
                (_, true) => 'I',
            })
            .collect()
    }

    /// Stack dims `(nz, ny, nx)`.
    pub(crate) fn stack_dims(&self) -> [usize; 3] {
        let mut d = [0; 3];
        for a in 0..3 {
            d[self.stack_axis[a]] = self.file_dims[a];
        }
        d
    }

    /// Stack spacing `(z, y, x)`: the affine's column lengths, permuted.
    pub(crate) fn stack_spacing(&self, affine: &Affine) -> [f32; 3] {
        let len = col_lengths(&rzs(affine));
        let mut s = [0.0; 3];
        for a in 0..3 {
            s[self.stack_axis[a]] = len[a] as f32;
        }
        s
    }

    /// `(base, step_i, step_j, step_k)`: the stack's linear index of file voxel `(i, j, k)` is
    /// `base + i*step_i + j*step_j + k*step_k`.
    pub(crate) fn steps(&self) -> (isize, [isize; 3]) {
        let d = self.stack_dims();
        let stride = [(d[1] * d[2]) as isize, d[2] as isize, 1isize];
        let mut base = 0isize;
        let mut steps = [0isize; 3];
        for a in 0..3 {
            let s = stride[self.stack_axis[a]];
            if self.flip[a] {
                steps[a] = -s;
                base += (self.file_dims[a] as isize - 1) * s;
            } else {
                steps[a] = s;
            }
        }
        (base, steps)
    }

    /// Visit every voxel in file order (`i` fastest), with its stack linear index.
    pub(crate) fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        let (base, [si, sj, sk]) = self.steps();
        let [ni, nj, nk] = self.file_dims;
        let mut file = 0usize;
        for k in 0..nk as isize {
            for j in 0..nj as isize {
                let row = base + j * sj + k * sk;
                for i in 0..ni as isize {
                    f(file, (row + i * si) as usize);
                    file += 1;
                }
            }
        }
    }
}
