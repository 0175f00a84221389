//! Inputs shared by the benchmarks.

use ichnet::Stack;
use ichnet::io::{Scan, Storage, write_stack_nifti_gz};
use ndarray::Array3;

/// Peak resident memory of this process so far (VmHWM), in MB, where /proc exists.
#[allow(dead_code)] // not every bench that includes this module uses it
pub fn peak_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The bundled real head CT (assets/anatomy) resampled to 0.45 mm pixels and 32 slices of 4.5 mm,
/// the usual clinical geometry, written as int16 NIfTI: the 512×512×32 scan of the benchmarks.
#[allow(dead_code)] // not every bench that includes this module uses it
pub fn clinical_scan() -> Vec<u8> {
    posed_clinical_scan(&Pose::default())
}

/// How [`posed_clinical_scan`] moves the head inside the scanner's grid, and the clot it adds.
#[derive(Debug, Clone, Copy, Default)]
#[allow(dead_code)] // not every bench that includes this module uses it
pub struct Pose {
    /// Rotation about the grid centre, degrees about x, y, z (applied in that order).
    pub angles_deg: [f32; 3],
    /// Shift in mm (x, y, z).
    pub shift_mm: [f32; 3],
    /// Radius (mm) of a 65 HU ball placed 30 mm right of and 10 mm above the head's centre, in
    /// head coordinates (so it moves with the head); 0 for none.
    pub clot_radius_mm: f32,
}

/// [`clinical_scan`] with the head moved by `pose` (a follow-up scan of the same patient lying
/// differently) and an optional clot: sampled nearest-neighbour from the source, since this is a
/// timing input, not an accuracy one.
#[allow(dead_code)] // not every bench that includes this module uses it
pub fn posed_clinical_scan(pose: &Pose) -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/anatomy/cranium_promed0051_head.nii.gz"
    );
    let src = Scan::from_bytes(&std::fs::read(path).expect("bundled anatomy")).expect("readable");
    let s = &src.stack;
    let (nz, ny, nx) = s.dims();
    let (oz, oy, ox) = (32usize, 512usize, 512usize);
    let [dz, dy, dx] = [4.5f32, 0.45, 0.45];
    let [ax, ay, az] = pose.angles_deg.map(f32::to_radians);
    let (rx, ry, rz) = (rot(0, ax), rot(1, ay), rot(2, az));
    // Output voxel (mm about the grid centre) → head coordinates: undo the shift, then the
    // rotations in reverse order (a rotation's inverse is its transpose).
    let to_head = |p: [f32; 3]| -> [f32; 3] {
        let q = [0, 1, 2].map(|k| p[k] - pose.shift_mm[k]);
        let q = mul_t(&rz, q);
        let q = mul_t(&ry, q);
        mul_t(&rx, q)
    };
    // Centre the new grid on the old one.
    let cz = (nz as f32 - 1.0) * s.spacing[0] / 2.0;
    let cy = (ny as f32 - 1.0) * s.spacing[1] / 2.0;
    let cx = (nx as f32 - 1.0) * s.spacing[2] / 2.0;
    let clot = [30.0f32, 0.0, 10.0];
    let hu = Array3::from_shape_fn((oz, oy, ox), |(z, y, x)| {
        let p = [
            (x as f32 - (ox as f32 - 1.0) / 2.0) * dx,
            (y as f32 - (oy as f32 - 1.0) / 2.0) * dy,
            (z as f32 - (oz as f32 - 1.0) / 2.0) * dz,
        ];
        let h = to_head(p);
        let sz = (h[2] + cz) / s.spacing[0];
        let sy = (h[1] + cy) / s.spacing[1];
        let sx = (h[0] + cx) / s.spacing[2];
        let (iz, iy, ix) = (sz.round(), sy.round(), sx.round());
        if iz < 0.0
            || iy < 0.0
            || ix < 0.0
            || iz as usize >= nz
            || iy as usize >= ny
            || ix as usize >= nx
        {
            return -1024.0;
        }
        let v = s.hu[[iz as usize, iy as usize, ix as usize]];
        let r2: f32 = (0..3).map(|k| (h[k] - clot[k]).powi(2)).sum();
        if r2 < pose.clot_radius_mm.powi(2) && (15.0..50.0).contains(&v) {
            65.0
        } else {
            v
        }
    });
    let stack = Stack {
        hu,
        spacing: [dz, dy, dx],
        voxel_ml: (dz * dy * dx) as f64 / 1000.0,
    };
    write_stack_nifti_gz(
        &stack,
        Storage::I16 {
            slope: 1.0,
            inter: 0.0,
        },
    )
    .expect("writable")
}

/// Rotation by `a` radians about axis `k` (0 = x, 1 = y, 2 = z), row-major.
fn rot(k: usize, a: f32) -> [[f32; 3]; 3] {
    let (c, s) = (a.cos(), a.sin());
    match k {
        0 => [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]],
        1 => [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]],
        _ => [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
    }
}

/// `mᵀ v`.
fn mul_t(m: &[[f32; 3]; 3], v: [f32; 3]) -> [f32; 3] {
    [0, 1, 2].map(|j| (0..3).map(|i| m[i][j] * v[i]).sum())
}

/// Every slice of `slab` upsampled to 512×512 over the same field of view, with the network
/// grid's own bilinear sampler (pixel centres at `(j + 0.5)·n/512 − 0.5` in source indices): the
/// in-plane matrix of a clinical scan, for the reading benchmarks.
#[allow(dead_code)] // not every bench that includes this module uses it
pub fn upsample_512(slab: ndarray::ArrayView3<'_, f32>) -> Array3<f32> {
    use ichnet::model::input::SliceGrid;
    let (nz, ny, nx) = slab.dim();
    let (sy, sx) = (ny as f32 / 512.0, nx as f32 / 512.0);
    let grid = SliceGrid {
        y0: 0.5 * sy - 0.5,
        x0: 0.5 * sx - 0.5,
        sy,
        sx,
        h: 512,
        w: 512,
    };
    let mut out = vec![0f32; nz * 512 * 512];
    for (src, dst) in slab.outer_iter().zip(out.chunks_mut(512 * 512)) {
        grid.resample(src, dst);
    }
    Array3::from_shape_vec((nz, 512, 512), out).expect("nz × 512 × 512 values")
}
