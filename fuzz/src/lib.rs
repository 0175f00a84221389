//! The reader's own source files, compiled by path (see Cargo.toml for why).

#[path = "../../src/error.rs"]
pub mod error;
#[path = "../../src/io/mod.rs"]
pub mod io;
#[path = "../../src/volume.rs"]
pub mod volume;

pub use error::{Error, Result};
