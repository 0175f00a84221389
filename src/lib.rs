//! ICHNet: intracerebral haemorrhage segmentation of head CT.
//!
//! One pipeline, one direction, one module per stage:
//!
//! ```text
//! bytes ─io─▶ Scan (HU, geometry) ─▶ Stack (canonical axial) ─preprocess─▶ brain mask, CT windows
//!       ─model─▶ haemorrhage probability ─crf─▶ refined mask ─io─▶ mask NIfTI in the input grid
//!                                                          └─metrics─▶ mL, ABC/2
//! ```
//!
//! Everything here is plain Rust with no browser types, so it is tested natively; the command-line
//! tool (`src/main.rs`) and the wasm layer (`wasm`) are thin faces of it.

// A panic in the page kills the worker's module and loses the scan; every failure is an `Error`
// with a sentence instead. Tests may unwrap (clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod crf;
pub mod error;
pub mod io;
/// Labelled case folders and the case-level checkpoint score (native: files and the native
/// network loop).
#[cfg(not(target_arch = "wasm32"))]
pub mod labelled;
pub mod metrics;
pub mod model;
mod parallel;
pub mod pipeline;
pub mod preprocess;
pub mod registration;
pub mod review;
/// Training data is made natively; keeping it out of the wasm keeps the page's engine small.
#[cfg(not(target_arch = "wasm32"))]
pub mod synth;
pub mod volume;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use error::{Error, Result};
pub use volume::Stack;
