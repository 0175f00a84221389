//! Preprocessing of the canonical stack: brain extraction and CT display windows.
//!
//! Everything here takes a [`Stack`](crate::Stack) (HU, canonical axial order, spacing in mm)
//! and works in millimetres, so it behaves the same for 5 mm and 0.6 mm slices.

mod brain;
mod edt;
mod grid;
mod label;
#[cfg(not(target_arch = "wasm32"))]
pub mod preview;
pub mod window;

pub use brain::{
    BoundingBox, BrainConfig, EXTRA_AXIAL_HU, EXTRA_AXIAL_REACH_MM, PLAUSIBLE_BRAIN_ML,
    analysis_region, bounding_box, brain_mask, brain_mask_with, brain_volume_warning,
};
pub(crate) use edt::squared_distance_to;
pub use label::filter_components;
pub use window::Window;
