//! One file per subcommand; each parses nothing itself (clap does) and calls the library.

pub mod brain;
pub mod compare;
pub mod eval;
pub mod info;
pub mod segment;
pub mod serve;
pub mod synth;
pub mod synth_pairs;
pub mod train;
