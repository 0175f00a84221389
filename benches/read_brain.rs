//! Read + HU conversion + brain mask of a 512×512×40 int16 `.nii.gz` (issue 2's benchmark,
//! target < 1 s on the 2-core machine), and the peak memory of doing it.
//!
//! The scan is the real head CT fixture (tests/fixtures/ct) taken to 512×512 pixels of 0.48 mm
//! (bilinear) and 40 slices of 4.05 mm, with ±5 HU of deterministic noise so that it compresses
//! like a real scan. The timed part runs in a child process of this same binary, so the peak
//! memory (VmHWM) is that of reading and masking alone, not of building the input.
//!
//! Run: `cargo bench --bench read_brain`. Prints figures; asserts nothing about speed.

use std::time::Instant;

use ichnet::Stack;
use ichnet::io::{Scan, Storage, write_stack_nifti_gz};
use ichnet::preprocess::brain_mask;
use ndarray::Axis;

mod common;
use common::peak_mb;

const CHILD_ENV: &str = "ICHNET_BENCH_READ_BRAIN_FILE";
const RUNS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn build_input() -> ichnet::Result<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ct/cranium_promed0051_half.nii.gz"
    );
    let bytes = std::fs::read(path).map_err(|e| ichnet::Error::io(path, e))?;
    let head = Scan::from_bytes(&bytes)?.stack;
    let (nz, _, _) = head.dims();
    let picks: Vec<usize> = (0..40).map(|k| (2 * k + 1) * nz / 80).collect();
    let slab = head.hu.select(Axis(0), &picks);
    let mut hu = common::upsample_512(slab.view());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for v in hu.iter_mut() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *v += ((seed >> 40) % 11) as f32 - 5.0;
    }
    let fov = head.spacing[1] * head.dims().1 as f32;
    let spacing = [head.spacing[0] * nz as f32 / 40.0, fov / 512.0, fov / 512.0];
    let voxel_ml = spacing.iter().map(|&s| f64::from(s)).product::<f64>() / 1000.0;
    let stack = Stack {
        hu,
        spacing,
        voxel_ml,
    };
    write_stack_nifti_gz(
        &stack,
        Storage::I16 {
            slope: 1.0,
            inter: 0.0,
        },
    )
}

/// The timed part: read + HU + brain mask, `RUNS` times; prints one line of figures.
fn child(path: &str) -> ichnet::Result<()> {
    let bytes = std::fs::read(path).map_err(|e| ichnet::Error::io(path, e))?;
    let (mut total, mut read, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    let mut ml = 0.0;
    let mut dims = (0, 0, 0);
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let scan = Scan::from_bytes(&bytes)?;
        let t1 = Instant::now();
        let m = brain_mask(&scan.stack)?;
        let t2 = Instant::now();
        ml = scan.stack.mask_ml(&m);
        dims = scan.stack.dims();
        read.push((t1 - t0).as_secs_f64());
        mask.push((t2 - t1).as_secs_f64());
        total.push((t2 - t0).as_secs_f64());
    }
    println!(
        "read_brain: {}x{}x{} int16 .nii.gz ({:.1} MB): read+HU+brain mask median {:.3} s \
         (read+HU {:.3} s, brain mask {:.3} s; min total {:.3} s; {RUNS} runs); brain {ml:.1} mL; \
         peak memory (VmHWM) {:.1} MB",
        dims.2,
        dims.1,
        dims.0,
        bytes.len() as f64 / 1e6,
        median(total.clone()),
        median(read),
        median(mask),
        total.iter().copied().fold(f64::INFINITY, f64::min),
        peak_mb().unwrap_or(f64::NAN),
    );
    Ok(())
}

fn main() -> ichnet::Result<()> {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        return child(&path);
    }
    let bytes = build_input()?;
    let path =
        std::env::temp_dir().join(format!("ichnet-read-brain-{}.nii.gz", std::process::id()));
    std::fs::write(&path, &bytes).map_err(|e| ichnet::Error::io(&path, e))?;
    let exe = std::env::current_exe().map_err(|e| ichnet::Error::io("current_exe", e))?;
    let status = std::process::Command::new(exe)
        .env(CHILD_ENV, &path)
        .status()
        .map_err(|e| ichnet::Error::io("bench child", e));
    let _ = std::fs::remove_file(&path);
    if !status?.success() {
        return Err(ichnet::Error::InvalidInput(
            "the timed child process failed".into(),
        ));
    }
    Ok(())
}
