//! `ichnet synth`: write semi-synthetic image/mask pairs for training and evaluation.
//!
//! Layout (what `ichnet train/eval` read): `OUT/images/NAME.nii.gz`, `OUT/masks/NAME.nii.gz`
//! (same grid, u8 0/1) and `OUT/cases.tsv` (one line per case, see `synth::TSV_HEADER`). Cases are
//! generated on several threads; each depends only on (seed, index), so the output is byte-identical
//! whatever the thread count.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ichnet::io::Scan;
use ichnet::synth::{self, Anatomy, Case, Limits, Preset, montage};
use ichnet::{Error, Result};

/// Write semi-synthetic head CTs with simulated haemorrhages and their exact masks.
#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// Output folder (gets images/, masks/ and cases.tsv).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of cases.
    #[arg(long, default_value_t = 100)]
    pub n: u64,
    /// Seed: the same seed gives byte-identical files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Index of the first case (cases are named synth_INDEX; a run of --start 500 --n 100 makes
    /// the same files as cases 500–599 of a longer run).
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Folder of base anatomies (*.nii.gz head CTs in HU without haemorrhage).
    #[arg(long)]
    pub anatomy: Option<PathBuf>,
    /// Use only this anatomy (file name without .nii.gz; repeatable).
    #[arg(long = "only-anatomy", value_name = "NAME")]
    pub only_anatomy: Vec<String>,
    /// Leave out this anatomy (repeatable): for leave-one-anatomy-out splits.
    #[arg(long = "exclude-anatomy", value_name = "NAME")]
    pub exclude_anatomy: Vec<String>,
    /// Kind of cases: random (training mix), demo (the page's sample), fixture (tiny test case).
    #[arg(long, value_enum, default_value_t = PresetArg::Random)]
    pub preset: PresetArg,
    /// Random cases that each hold exactly one lesion of this kind (iph, iph-low, iph-cortical,
    /// ivh, sdh, edh, sah): per-kind test splits. Only with the random preset.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Also write a PNG montage of the first (up to 6) cases.
    #[arg(long)]
    pub montage: Option<PathBuf>,
    /// Largest in-plane matrix (default 512; random cases use 384 or, one in four, 512).
    #[arg(long, default_value_t = 512)]
    pub max_matrix: usize,
    /// Most slices per case (default 64; thin-slice scans become a slab around the bleed).
    #[arg(long, default_value_t = 64)]
    pub max_slices: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Make baseline/follow-up pairs with a known head movement and clot growth instead
    /// (OUT/baseline/, OUT/followup/, their masks and OUT/pairs.tsv; --preset is ignored).
    #[arg(long)]
    pub pairs: bool,
}

/// `--preset` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum PresetArg {
    /// The training distribution.
    Random,
    /// Real head CT with one 20–30 mL bleed (the web page's sample).
    Demo,
    /// Tiny regression case with one 10–30 mL bleed.
    Fixture,
}

/// Default anatomy folder: the vendored one, found from the working directory or the source tree.
fn default_anatomy_dir() -> PathBuf {
    let local = PathBuf::from("assets/anatomy");
    if local.is_dir() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/anatomy")
    }
}

/// Load and label every `*.nii.gz` of `dir` that the filters allow, sorted by name.
pub fn load_anatomies(dir: &Path, only: &[String], exclude: &[String]) -> Result<Vec<Anatomy>> {
    let mut names: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p
                .file_name()?
                .to_str()?
                .strip_suffix(".nii.gz")?
                .to_string();
            Some((name, p))
        })
        .filter(|(n, _)| (only.is_empty() || only.contains(n)) && !exclude.contains(n))
        .collect();
    names.sort();
    for want in only.iter().chain(exclude) {
        if !names.iter().any(|(n, _)| n == want)
            && !fs::read_dir(dir).is_ok_and(|mut d| {
                d.any(|e| {
                    e.is_ok_and(|e| e.file_name().to_string_lossy() == format!("{want}.nii.gz"))
                })
            })
        {
            return Err(Error::InvalidInput(format!(
                "anatomy {want:?} is not in {} (expected {want}.nii.gz there)",
                dir.display()
            )));
        }
    }
    if names.is_empty() {
        return Err(Error::InvalidInput(format!(
            "no base anatomy left in {} after --only-anatomy/--exclude-anatomy (need *.nii.gz)",
            dir.display()
        )));
    }
    names
        .iter()
        .map(|(name, path)| {
            let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
            let scan = Scan::from_bytes(&bytes)
                .map_err(|e| ichnet::io::in_file(&path.display().to_string(), e))?;
            Anatomy::new(name, &scan.stack)
        })
        .collect()
}

/// Run `ichnet synth`.
pub fn run(args: &SynthArgs) -> Result<()> {
    let dir = args.anatomy.clone().unwrap_or_else(default_anatomy_dir);
    let anatomies = load_anatomies(&dir, &args.only_anatomy, &args.exclude_anatomy)?;
    if args.pairs {
        return super::synth_pairs::run(args, &anatomies);
    }
    let preset = match (args.preset, &args.kind) {
        (PresetArg::Random, None) => Preset::Random,
        (PresetArg::Random, Some(k)) => Preset::Only(synth::CaseKind::parse(k)?),
        (_, Some(_)) => {
            return Err(Error::InvalidInput(
                "--kind picks the lesion of random cases: use it without --preset demo/fixture"
                    .into(),
            ));
        }
        (PresetArg::Demo, None) => Preset::Demo,
        (PresetArg::Fixture, None) => Preset::Fixture,
    };
    let images = args.out.join("images");
    let masks = args.out.join("masks");
    for d in [&images, &masks] {
        fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64);
    let bar = indicatif::ProgressBar::new(args.n);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} cases  {per_sec}  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let limits = Limits {
        max_matrix: args.max_matrix,
        max_slices: args.max_slices,
    };
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let rows: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let thumbs: Mutex<Vec<(u64, Vec<u8>)>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    const MONTAGE_CASES: u64 = 6;
    const COLS: usize = 5;
    const THUMB: usize = 128;
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= args.n || failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                        break;
                    }
                    let index = args.start + i;
                    let done =
                        synth::generate_with(&anatomies, args.seed, index, preset, limits, |_| ())
                            .and_then(|case| write_case(&case, &images, &masks).map(|()| case));
                    match done {
                        Ok(case) => {
                            if args.montage.is_some() && i < MONTAGE_CASES {
                                let row = montage::case_row(&case, COLS, THUMB);
                                if let Ok(mut t) = thumbs.lock() {
                                    t.push((i, row));
                                }
                            }
                            if let Ok(mut r) = rows.lock() {
                                r.push((index, case.tsv_row()));
                            }
                            bar.set_message(format!("{} {:.1} mL", case.lesions, case.blood_ml));
                            bar.inc(1);
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
    bar.finish_and_clear();
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut rows = rows.into_inner().unwrap_or_default();
    rows.sort();
    let tsv_path = args.out.join("cases.tsv");
    let existing = match fs::read_to_string(&tsv_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&tsv_path, e)),
    };
    let (tsv, listed) = merged_tsv(existing.as_deref(), &rows, &tsv_path)?;
    fs::write(&tsv_path, tsv).map_err(|e| Error::io(&tsv_path, e))?;
    if let Some(path) = &args.montage {
        let mut t = thumbs.into_inner().unwrap_or_default();
        t.sort_by_key(|(i, _)| *i);
        write_montage(
            path,
            &t.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
            COLS * THUMB,
        )?;
    }
    let secs = started.elapsed().as_secs_f64();
    let with_blood = rows
        .iter()
        .filter(|(_, r)| r.split('\t').nth(2).is_none_or(|k| k != "none"))
        .count();
    println!(
        "wrote {} cases ({} with blood) to {} ({listed} listed in its cases.tsv) in {:.1} s ({:.1} cases/min, {} threads, anatomies: {})",
        rows.len(),
        with_blood,
        args.out.display(),
        secs,
        rows.len() as f64 / secs.max(1e-9) * 60.0,
        threads,
        anatomies
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn write_case(case: &Case, images: &Path, masks: &Path) -> Result<()> {
    let file = format!("{}.nii.gz", case.name);
    let img = images.join(&file);
    fs::write(&img, case.image_nifti_gz()?).map_err(|e| Error::io(&img, e))?;
    let m = masks.join(&file);
    fs::write(&m, case.mask_nifti_gz()?).map_err(|e| Error::io(&m, e))
}

/// `cases.tsv` for a folder that may already hold cases: this run's rows, plus the rows of the
/// existing file (`existing`) for cases this run did not write, in case order; and how many
/// cases it lists. A test split is built by several runs into one folder (one per lesion kind),
/// and a file rewritten with only the last run's rows would lose the other cases' kinds, which
/// the per-kind evaluation reads from it. An existing file with other columns (an older
/// version's) is refused rather than mixed.
fn merged_tsv(
    existing: Option<&str>,
    rows: &[(u64, String)],
    path: &Path,
) -> Result<(String, usize)> {
    let name = |row: &str| row.split('\t').next().unwrap_or("").to_string();
    let order = |n: &str| {
        let index = n.rsplit('_').next().and_then(|i| i.parse::<u64>().ok());
        (index.unwrap_or(u64::MAX), n.to_string())
    };
    let mut all: Vec<(String, String)> = rows.iter().map(|(_, r)| (name(r), r.clone())).collect();
    if let Some(text) = existing {
        let mut lines = text.lines();
        let header = lines.next().unwrap_or("");
        if header != synth::TSV_HEADER {
            return Err(Error::InvalidInput(format!(
                "{} has other columns than this version writes ({:?}): write the cases to a new \
                 folder, or move that file away",
                path.display(),
                header.split('\t').collect::<Vec<_>>()
            )));
        }
        let new: std::collections::HashSet<String> = all.iter().map(|(n, _)| n.clone()).collect();
        all.extend(
            lines
                .filter(|l| !l.trim().is_empty())
                .map(|l| (name(l), l.to_string()))
                .filter(|(n, _)| !new.contains(n)),
        );
    }
    all.sort_by_key(|(n, _)| order(n));
    let mut tsv = String::from(synth::TSV_HEADER);
    tsv.push('\n');
    for (_, r) in &all {
        tsv.push_str(r);
        tsv.push('\n');
    }
    Ok((tsv, all.len()))
}

/// Stack the rows (palette indices, `width` wide) into one indexed PNG.
fn write_montage(path: &Path, rows: &[Vec<u8>], width: usize) -> Result<()> {
    let data: Vec<u8> = rows.concat();
    let height = data.len() / width.max(1);
    let file = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let png_err = |e: png::EncodingError| {
        Error::InvalidInput(format!("{}: PNG encoding failed: {e}", path.display()))
    };
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(montage::palette());
    enc.set_compression(png::Compression::High);
    let mut w = enc.write_header().map_err(png_err)?;
    w.write_image_data(&data).map_err(png_err)?;
    w.finish().map_err(png_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, kind: &str) -> String {
        format!("{name}\tanat\t{kind}\t1.000\t5.000\t0.500\t10x10x10\ti16\t0.0\tRAS\t5.0\t")
    }

    #[test]
    fn a_second_run_into_the_same_folder_keeps_the_first_run_s_cases() {
        let path = Path::new("out/cases.tsv");
        let first = [
            (200_000, row("synth_200000", "iph")),
            (200_001, row("synth_200001", "iph")),
        ];
        let (tsv, n) = merged_tsv(None, &first, path).unwrap();
        assert_eq!(n, 2);
        // The second run rewrites case 200001 (another kind now) and adds 99 and 200100.
        let second = [
            (99, row("synth_99", "sah")),
            (200_001, row("synth_200001", "ivh")),
            (200_100, row("synth_200100", "sdh")),
        ];
        let (tsv, n) = merged_tsv(Some(&tsv), &second, path).unwrap();
        assert_eq!(n, 4);
        let lines: Vec<&str> = tsv.lines().collect();
        assert_eq!(lines[0], synth::TSV_HEADER);
        let kinds: Vec<(&str, &str)> = lines[1..]
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f[0], f[2])
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("synth_99", "sah"),
                ("synth_200000", "iph"),
                ("synth_200001", "ivh"),
                ("synth_200100", "sdh")
            ]
        );
    }

    #[test]
    fn a_cases_file_with_other_columns_is_refused() {
        let old = "name\tanatomy\tblood_ml\nsynth_0\ta\t1.0\n";
        let err = merged_tsv(
            Some(old),
            &[(1, row("synth_1", "iph"))],
            Path::new("x/cases.tsv"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("x/cases.tsv") && err.contains("new folder"),
            "{err}"
        );
    }
}
