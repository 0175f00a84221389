//! Inputs shared by the benchmarks.

use ichnet::Stack;
use ichnet::io::{Scan, Storage, write_stack_nifti_gz};
use ndarray::Array3;

/// The bundled real head CT (assets/anatomy) resampled to 0.45 mm pixels and 32 slices of 4.5 mm,
/// the usual clinical geometry, written as int16 NIfTI: the 512×512×32 scan of the benchmarks.
#[allow(dead_code)] // not every bench that includes this module uses it
pub fn clinical_scan() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/anatomy/cranium_promed0051_head.nii.gz"
    );
    let src = Scan::from_bytes(&std::fs::read(path).expect("bundled anatomy")).expect("readable");
    let s = &src.stack;
    let (nz, ny, nx) = s.dims();
    let (oz, oy, ox) = (32usize, 512usize, 512usize);
    let [dz, dy, dx] = [4.5f32, 0.45, 0.45];
    // Centre the new grid on the old one (nearest neighbour: this is a timing input).
    let cz = (nz as f32 - 1.0) * s.spacing[0] / 2.0;
    let cy = (ny as f32 - 1.0) * s.spacing[1] / 2.0;
    let cx = (nx as f32 - 1.0) * s.spacing[2] / 2.0;
    let hu = Array3::from_shape_fn((oz, oy, ox), |(z, y, x)| {
        let sz = ((z as f32 - (oz as f32 - 1.0) / 2.0) * dz + cz) / s.spacing[0];
        let sy = ((y as f32 - (oy as f32 - 1.0) / 2.0) * dy + cy) / s.spacing[1];
        let sx = ((x as f32 - (ox as f32 - 1.0) / 2.0) * dx + cx) / s.spacing[2];
        let (iz, iy, ix) = (sz.round(), sy.round(), sx.round());
        if iz < 0.0
            || iy < 0.0
            || ix < 0.0
            || iz as usize >= nz
            || iy as usize >= ny
            || ix as usize >= nx
        {
            -1024.0
        } else {
            s.hu[[iz as usize, iy as usize, ix as usize]]
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
