//! The canonical axial stack every processing stage works on.
//!
//! Files arrive in any of the 48 axis orders and flips (and sheared, for gantry tilt). `io`
//! reorients them once, by the closest axis permutation and flips (no resampling), into this one
//! layout, so brain extraction, the network and the CRF never think about orientation; `io` maps
//! results back to the file's own voxel order when writing.
//!
//! Layout: `hu[[z, y, x]]`, C-contiguous, so each axial slice `hu.index_axis(Axis(0), z)` is one
//! contiguous block. Index directions follow NIfTI's RAS+ world: `x` grows towards the patient's
//! Right, `y` towards Anterior, `z` towards Superior.

use ndarray::{Array3, ArrayView2, Axis};

/// A CT volume in Hounsfield units on the canonical grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// Voxel values in HU, indexed `[z, y, x]`.
    pub hu: Array3<f32>,
    /// Voxel size in mm along `(z, y, x)` (lengths of the affine's columns).
    pub spacing: [f32; 3],
    /// Volume of one voxel in mL, from the affine's determinant (correct for sheared grids,
    /// where the product of `spacing` overestimates it).
    pub voxel_ml: f64,
}

impl Stack {
    /// `(nz, ny, nx)`.
    pub fn dims(&self) -> (usize, usize, usize) {
        self.hu.dim()
    }

    /// Axial slice `z` as a `[y, x]` view.
    pub fn slice(&self, z: usize) -> ArrayView2<'_, f32> {
        self.hu.index_axis(Axis(0), z)
    }

    /// Volume in mL of the voxels where `mask` is non-zero; `mask` is in stack order.
    pub fn mask_ml(&self, mask: &Array3<u8>) -> f64 {
        mask.iter().filter(|&&m| m != 0).count() as f64 * self.voxel_ml
    }
}
