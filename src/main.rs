//! `ichnet`: the command-line face of the core (segment, train, evaluate, benchmark, serve).

// A panic in the page kills the worker's module and loses the scan; every failure is an `Error`
// with a sentence instead. Tests may unwrap (clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used)]

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod cli;

/// Intracerebral haemorrhage segmentation of head CT (research tool, not for clinical use).
#[derive(Parser)]
#[command(name = "ichnet", version, about, long_about = None)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a scan's header, geometry, orientation, HU range and warnings.
    Info(cli::info::InfoArgs),
    /// Extract the brain: mask in the scan's grid and brain volume in mL.
    Brain(cli::brain::BrainArgs),
    /// Serve the web app on 127.0.0.1 (build it first with scripts/build-web.sh).
    Serve(cli::serve::ServeArgs),
    /// Write semi-synthetic head CTs with simulated haemorrhages and exact masks.
    Synth(cli::synth::SynthArgs),
    /// Segment haemorrhage in a scan: mask in the scan's grid, volume in mL and ABC/2.
    Segment(cli::segment::SegmentArgs),
    /// Train ICHNet on a folder of image/mask pairs.
    Train(cli::train::TrainArgs),
    /// Evaluate ICHNet (with and without CRF) and the naive baseline on image/mask pairs.
    Eval(cli::eval::EvalArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result: ichnet::Result<()> = match args.command {
        Command::Info(a) => cli::info::run(&a),
        Command::Brain(a) => cli::brain::run(&a),
        Command::Serve(a) => cli::serve::run(&a),
        Command::Synth(a) => cli::synth::run(&a),
        Command::Segment(a) => cli::segment::run(&a),
        Command::Train(a) => cli::train::run(&a),
        Command::Eval(a) => cli::eval::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ichnet: {e}");
            ExitCode::FAILURE
        }
    }
}
