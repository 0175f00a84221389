//! `ichnet synth --pairs`: baseline/follow-up pairs with known movement and growth.
//!
//! Layout: `OUT/baseline/pair_N.nii.gz`, `OUT/followup/pair_N.nii.gz`, their exact masks in
//! `OUT/baseline_masks/` and `OUT/followup_masks/` (each on its own scan's grid), and
//! `OUT/pairs.tsv` with the truth (see `synth::pairs::PAIRS_TSV_HEADER`). Pair `i` depends only on
//! (seed, i), so the output is the same whatever the thread count.

use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ichnet::synth::pairs::{PAIRS_TSV_HEADER, generate_pair};
use ichnet::synth::{Anatomy, Case, Limits};
use ichnet::{Error, Result};

use super::synth::SynthArgs;

/// Run `ichnet synth --pairs`.
pub fn run(args: &SynthArgs, anatomies: &[Anatomy]) -> Result<()> {
    let dirs: Vec<PathBuf> = ["baseline", "followup", "baseline_masks", "followup_masks"]
        .iter()
        .map(|d| args.out.join(d))
        .collect();
    for d in &dirs {
        fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let limits = Limits {
        max_matrix: args.max_matrix,
        max_slices: args.max_slices,
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64);
    let next = AtomicU64::new(0);
    let rows: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let write = |case: &Case, image_dir: &PathBuf, mask_dir: &PathBuf, name: &str| -> Result<()> {
        let file = format!("{name}.nii.gz");
        let img = image_dir.join(&file);
        fs::write(&img, case.image_nifti_gz()?).map_err(|e| Error::io(&img, e))?;
        let m = mask_dir.join(&file);
        fs::write(&m, case.mask_nifti_gz()?).map_err(|e| Error::io(&m, e))
    };
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= args.n || failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                        break;
                    }
                    let index = args.start + i;
                    let done = generate_pair(anatomies, args.seed, index, limits).and_then(|p| {
                        write(&p.baseline, &dirs[0], &dirs[2], &p.name)?;
                        write(&p.followup, &dirs[1], &dirs[3], &p.name)?;
                        Ok(p.tsv_row())
                    });
                    match done {
                        Ok(row) => {
                            if let Ok(mut r) = rows.lock() {
                                r.push((index, row));
                            }
                        }
                        Err(e) => {
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert(e);
                            }
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut rows = rows.into_inner().unwrap_or_default();
    rows.sort();
    let mut tsv = String::from(PAIRS_TSV_HEADER);
    tsv.push('\n');
    for (_, r) in &rows {
        tsv.push_str(r);
        tsv.push('\n');
    }
    let path = args.out.join("pairs.tsv");
    fs::write(&path, tsv).map_err(|e| Error::io(&path, e))?;
    println!("wrote {} pairs to {}", rows.len(), args.out.display());
    Ok(())
}
