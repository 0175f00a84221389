//! CRF on the brain box of a synthetic 512×512×32 head at 0.45×0.45×5 mm (≈ 1300 mL brain, a
//! 30 mL clot, noisy probabilities): wall time (every core natively) and peak memory.
//!
//! Then where the time goes: each kernel's filter built and applied once (normalised) on the same
//! box — the separable smoothness filter, the position lattice it replaced, the appearance
//! lattice — with rayon's whole pool (natively the CRF uses every core) and with one thread.
//!
//! Run: `cargo bench --bench crf`. Prints figures; asserts nothing about speed.

use ichnet::crf::{
    CrfConfig, Filter, GridGaussian, Lattice, refine_with_progress, synthetic::benchmark_case,
};
use std::time::Instant;

mod common;
use common::peak_mb;

/// CPU seconds (user, system) this process has used, from /proc/self/stat (USER_HZ = 100, the
/// Linux default). On a shared machine wall time includes waiting for a core; CPU time does not.
fn cpu_s() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((
        f.get(11)?.parse::<f64>().ok()? / 100.0,
        f.get(12)?.parse::<f64>().ok()? / 100.0,
    ))
}

fn dice(a: &ndarray::Array3<u8>, b: &ndarray::Array3<u8>) -> f64 {
    let both = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x != 0 && **y != 0)
        .count();
    let sum = a.iter().filter(|v| **v != 0).count() + b.iter().filter(|v| **v != 0).count();
    2.0 * both as f64 / sum.max(1) as f64
}

fn main() -> ichnet::Result<()> {
    let t = Instant::now();
    let case = benchmark_case()?;
    let brain_ml = case.stack.mask_ml(&case.brain);
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for ((z, y, x), _) in case.brain.indexed_iter().filter(|(_, m)| **m != 0) {
        for (a, v) in [z, y, x].into_iter().enumerate() {
            lo[a] = lo[a].min(v);
            hi[a] = hi[a].max(v + 1);
        }
    }
    println!(
        "brain bounding box {}×{}×{} voxels (x×y×z, before the CRF's margin)",
        hi[2] - lo[2],
        hi[1] - lo[1],
        hi[0] - lo[0]
    );
    println!(
        "synthetic head 512×512×32 at 0.45×0.45×5 mm: brain {brain_ml:.0} mL, clot {:.1} mL, built in {:.2} s",
        case.stack.mask_ml(&case.truth),
        t.elapsed().as_secs_f64()
    );
    let before = peak_mb();
    let cfg = CrfConfig::default();
    let cpu_before = cpu_s();
    let t = Instant::now();
    let mut marks = Vec::new();
    let out = refine_with_progress(
        case.prob.view(),
        &case.stack,
        Some(&case.brain),
        &cfg,
        &mut |done, _| {
            marks.push((done, t.elapsed().as_secs_f64()));
            true
        },
    )?;
    let total = t.elapsed().as_secs_f64();
    if let (Some((u0, s0)), Some((u1, s1))) = (cpu_before, cpu_s()) {
        println!(
            "crf::refine CPU time: {:.2} s user + {:.2} s system",
            u1 - u0,
            s1 - s0
        );
    }
    let lattices = marks.first().map_or(0.0, |m| m.1);
    println!(
        "crf::refine (defaults, {} iterations): {total:.2} s total; setup + lattices {lattices:.2} s, \
         mean-field {:.2} s ({:.3} s/iteration)",
        cfg.iterations,
        total - lattices,
        (total - lattices) / cfg.iterations.max(1) as f64
    );
    let before_mask = case.prob.mapv(|p| u8::from(p > 0.5));
    let after_mask = out.mapv(|p| u8::from(p > 0.5));
    println!(
        "Dice vs truth: {:.4} before, {:.4} after; positive voxels {} before, {} after",
        dice(&before_mask, &case.truth),
        dice(&after_mask, &case.truth),
        before_mask.iter().filter(|v| **v != 0).count(),
        after_mask.iter().filter(|v| **v != 0).count()
    );
    match (before, peak_mb()) {
        (Some(b), Some(a)) => println!(
            "peak memory (VmHWM): {a:.0} MB for the process; {b:.0} MB before the CRF (inputs)"
        ),
        _ => println!("peak memory: /proc/self/status not available"),
    }
    breakdown(&case, &cfg, [lo, hi])?;
    Ok(())
}

/// Time the CRF's parts on the box `refine` uses (the brain's bounding box grown by the margin):
/// both lattices' builds and one normalised filter each, on all threads and on one.
fn breakdown(
    case: &ichnet::crf::synthetic::SyntheticCase,
    cfg: &CrfConfig,
    [lo, hi]: [[usize; 3]; 2],
) -> ichnet::Result<()> {
    let sp = case.stack.spacing;
    let dims = case.stack.hu.dim();
    let full = [dims.0, dims.1, dims.2];
    let mut b = [[0usize; 2]; 3];
    for a in 0..3 {
        let m = (cfg.margin_mm / sp[a]).ceil() as usize;
        b[a] = [lo[a].saturating_sub(m), (hi[a] + m).min(full[a])];
    }
    let (nz, ny, nx) = (b[0][1] - b[0][0], b[1][1] - b[1][0], b[2][1] - b[2][0]);
    let n = nz * ny * nx;
    let zyx = move |i: usize| [i / (ny * nx), i / nx % ny, i % nx].map(|v| v as f32);
    let density: Vec<f32> = (0..n)
        .map(|i| {
            let [z, y, x] = zyx(i).map(|v| v as usize);
            let v = case.stack.hu[[b[0][0] + z, b[1][0] + y, b[2][0] + x]];
            v.clamp(cfg.window_hu[0], cfg.window_hu[1]) / cfg.appearance_std_hu
        })
        .collect();
    let smooth_step = sp.map(|s| s / cfg.smooth_std_mm);
    let app_step = sp.map(|s| s / cfg.appearance_std_mm);
    let build = |d: usize| {
        Lattice::from_fn(n, d, cfg.max_memory_bytes, |i, f| {
            let p = zyx(i);
            if d == 3 {
                f.copy_from_slice(&[
                    p[0] * smooth_step[0],
                    p[1] * smooth_step[1],
                    p[2] * smooth_step[2],
                ]);
            } else {
                f.copy_from_slice(&[
                    p[0] * app_step[0],
                    p[1] * app_step[1],
                    p[2] * app_step[2],
                    density[i],
                ]);
            }
        })
    };
    let q: Vec<f32> = (0..n).map(|i| (i % 97) as f32 / 97.0).collect();
    let mut out = vec![0f32; n];
    println!("where the CRF's time goes, box {nx}×{ny}×{nz} = {n} voxels:");
    let all = rayon::current_num_threads();
    for threads in [all, 1] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        pool.install(|| -> ichnet::Result<()> {
            let mut line = Vec::new();
            let mut per_iteration = 0.0;
            // The smoothness kernel as the CRF filters it (separable, on the grid), the lattice
            // it replaced (for comparison, not counted per iteration), the appearance lattice.
            for (name, kind) in [
                ("position, separable grid", 0),
                ("position lattice (replaced)", 3),
                ("position+HU lattice", 4),
            ] {
                let t = Instant::now();
                let (filter, size): (Box<dyn Filter>, String) = if kind == 0 {
                    let g = GridGaussian::new((nz, ny, nx), sp.map(|s| cfg.smooth_std_mm / s))?;
                    (Box::new(g), String::new())
                } else {
                    let lat = build(kind)?;
                    let v = format!(" ({} vertices)", lat.vertices());
                    (Box::new(lat), v)
                };
                let built = t.elapsed().as_secs_f64();
                let t = Instant::now();
                filter.filter_normalised(&q, &mut out)?;
                let filtered = t.elapsed().as_secs_f64();
                if kind != 3 {
                    per_iteration += filtered;
                }
                line.push(format!(
                    "{name}{size} build {built:.2} s, filter {filtered:.3} s"
                ));
            }
            println!(
                "  {threads} thread(s): {}; filters per mean-field iteration {per_iteration:.3} s",
                line.join("; ")
            );
            Ok(())
        })?;
    }
    Ok(())
}
