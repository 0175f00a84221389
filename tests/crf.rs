//! The dense CRF: the lattice against the exact O(N²) filter, mean-field with both, and the
//! behaviour the segmentation relies on.

use ichnet::crf::exact::ExactGaussian;
use ichnet::crf::{CrfConfig, Filter, Kernel, Lattice, mean_field, refine, refine_with_progress};
use ichnet::{Error, Stack};
use ndarray::{Array3, s};

/// DeepMedic's kernel weights (appearance 5, smoothness 3): stronger than the shipped defaults,
/// which were tuned for recall on the validation split. The behaviour tests check the mechanism
/// (what the kernels do, and that the lattice matches exact filtering) at a strength where every
/// effect is unmistakable; the shipped pipeline additionally drops components under 0.05 mL.
fn strong() -> CrfConfig {
    CrfConfig {
        appearance_weight: 5.0,
        smooth_weight: 3.0,
        ..CrfConfig::default()
    }
}

/// Deterministic uniform noise in [0, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn stack(hu: Array3<f32>, spacing: [f32; 3]) -> Stack {
    let voxel_ml = spacing.iter().product::<f32>() as f64 / 1000.0;
    Stack {
        hu,
        spacing,
        voxel_ml,
    }
}

/// Largest absolute and RMS difference of the normalised lattice and exact filters.
fn lattice_vs_exact(features: &[f32], d: usize, values: &[f32]) -> (f32, f32) {
    let n = values.len();
    let lat = Lattice::new(features, d, 1 << 28).unwrap();
    let ex = ExactGaussian::new(features, d).unwrap();
    let mut a = vec![0f32; n];
    let mut b = vec![0f32; n];
    lat.filter_normalised(values, &mut a).unwrap();
    ex.filter_normalised(values, &mut b).unwrap();
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let rms = (a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f32>() / n as f32).sqrt();
    (max, rms)
}

/// Random points spread over a few kernel widths per axis, values in [0, 1].
fn random_points(n: usize, d: usize, extent: f32, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut r = Rng(seed);
    let f = (0..n * d).map(|_| r.next() * extent).collect();
    let v = (0..n).map(|_| r.next()).collect();
    (f, v)
}

/// A small grid (positions in kernel widths, spacing 0.5) plus, from d = 4 on, density-like extra
/// coordinates: two tissue classes and noise, like a CT with a clot; values follow the classes.
fn grid_points(d: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut r = Rng(seed);
    let (nz, ny, nx) = (6, 12, 12);
    let mut f = Vec::new();
    let mut v = Vec::new();
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let inside = (x as f32 - 6.0).powi(2) + (y as f32 - 5.0).powi(2) < 12.0;
                f.extend_from_slice(&[z as f32 * 0.8, y as f32 * 0.5, x as f32 * 0.5]);
                for _ in 3..d {
                    let level = if inside { 3.5 } else { 0.5 };
                    f.push(level + 0.4 * (r.next() - 0.5));
                }
                v.push(if inside { 0.9 } else { 0.1 } + 0.1 * (r.next() - 0.5));
            }
        }
    }
    (f, v)
}

// Measured on the normalised outputs (values span [0, 1], so these are also errors relative to
// the value range): random points, d = 3/4/5: max 0.013/0.022/0.040, RMS 0.003/0.004/0.007;
// grids with a sharp 0.1→0.9 step: max 0.051/0.020/0.002, RMS 0.014/0.005/0.0005. The lattice is
// approximate because splat + [1 2 1] blur + slice is a piecewise-linear kernel whose width
// matches the Gaussian's only on average: it depends on where a point falls in its simplex and
// is slightly anisotropic, so errors peak at sharp value steps. Bounds: measured + ~20 %.
const MAX_ABS_BOUND: f32 = 0.06;
const RMS_BOUND: f32 = 0.017;

#[test]
fn lattice_matches_the_exact_gaussian_filter_on_random_points_in_3_4_and_5_dimensions() {
    for d in [3, 4, 5] {
        for seed in 1..=3u64 {
            let (f, v) = random_points(800, d, 4.0, seed * 7 + d as u64);
            let (max, rms) = lattice_vs_exact(&f, d, &v);
            println!("random d={d} seed={seed}: max {max:.4} rms {rms:.4}");
            assert!(
                max < MAX_ABS_BOUND && rms < RMS_BOUND,
                "d={d}: max {max} rms {rms}"
            );
        }
    }
}

#[test]
fn lattice_matches_the_exact_gaussian_filter_on_small_volumes_in_3_4_and_5_dimensions() {
    let errors: Vec<_> = [3, 4, 5]
        .map(|d| {
            let (f, v) = grid_points(d, 11 + d as u64);
            let (max, rms) = lattice_vs_exact(&f, d, &v);
            println!("grid d={d}: max {max:.4} rms {rms:.4}");
            (d, max, rms)
        })
        .into();
    for (d, max, rms) in errors {
        assert!(
            max < MAX_ABS_BOUND && rms < RMS_BOUND,
            "d={d}: max {max} rms {rms}"
        );
    }
}

#[test]
fn lattice_kernel_width_is_that_of_the_gaussian() {
    // A wrong lattice scale (too narrow or too wide a kernel) shows up as a systematic error of
    // the smoothed step; the exact filter sees the same step.
    let n = 200;
    let f: Vec<f32> = (0..n).map(|i| i as f32 * 0.1).collect();
    let v: Vec<f32> = (0..n).map(|i| if i < n / 2 { 1.0 } else { 0.0 }).collect();
    let (max, rms) = lattice_vs_exact(&f, 1, &v);
    println!("1-D step: max {max:.4} rms {rms:.4}");
    // Measured: max 0.0139, RMS 0.0031; a kernel 20 % too wide or narrow is off by > 0.06.
    assert!(max < 0.02 && rms < 0.005, "max {max} rms {rms}");
}

/// Unary planes (background, haemorrhage) from P(haemorrhage).
fn unary(p: &[f32]) -> Vec<f32> {
    let c = |v: f32| v.clamp(1e-5, 1.0 - 1e-5);
    let mut u: Vec<f32> = p.iter().map(|&v| -(1.0 - c(v)).ln()).collect();
    u.extend(p.iter().map(|&v| -c(v).ln()));
    u
}

/// A 5 × 14 × 14 volume of 3 mm slices with a denser ball and noisy probabilities (0.7 inside,
/// 0.3 outside, ± 0.25): its position features, appearance features (in `cfg`'s kernel widths)
/// and probabilities, voxel by voxel.
fn ball_case(cfg: &CrfConfig) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut r = Rng(99);
    let (nz, ny, nx) = (5usize, 14usize, 14usize);
    let spacing = [3.0f32, 1.0, 1.0];
    let mut pos = Vec::new();
    let mut app = Vec::new();
    let mut prob = Vec::new();
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let mm = [z as f32 * spacing[0], y as f32, x as f32];
                let inside =
                    (mm[1] - 7.0).powi(2) + (mm[2] - 6.0).powi(2) + (mm[0] - 6.0).powi(2) < 20.0;
                let hu = if inside { 65.0 } else { 30.0 } + 5.0 * (r.next() - 0.5);
                pos.extend(mm.map(|v| v / cfg.smooth_std_mm));
                app.extend(mm.map(|v| v / cfg.appearance_std_mm));
                app.push(hu / cfg.appearance_std_hu);
                let base = if inside { 0.7 } else { 0.3 };
                prob.push((base + 0.5 * (r.next() - 0.5)).clamp(0.0, 1.0));
            }
        }
    }
    (pos, app, prob)
}

/// The CRF's two kernels with `cfg`'s weights.
fn two_kernels<'a>(
    smooth: &'a dyn Filter,
    appearance: &'a dyn Filter,
    cfg: &CrfConfig,
) -> [Kernel<'a>; 2] {
    [
        Kernel {
            filter: smooth,
            weight: cfg.smooth_weight,
        },
        Kernel {
            filter: appearance,
            weight: cfg.appearance_weight,
        },
    ]
}

#[test]
fn mean_field_with_the_lattice_agrees_with_mean_field_with_exact_filtering() {
    let cfg = strong();
    let (pos, app, prob) = ball_case(&cfg);
    let u = unary(&prob);
    let n = prob.len();
    let run = |smooth: &dyn Filter, appearance: &dyn Filter| {
        let kernels = two_kernels(smooth, appearance, &cfg);
        mean_field(&u, 2, &kernels, cfg.iterations, &mut |_, _| true).unwrap()
    };
    let lat = run(
        &Lattice::new(&pos, 3, 1 << 28).unwrap(),
        &Lattice::new(&app, 4, 1 << 28).unwrap(),
    );
    let ex = run(
        &ExactGaussian::new(&pos, 3).unwrap(),
        &ExactGaussian::new(&app, 4).unwrap(),
    );
    let agree = (0..n)
        .filter(|&i| (lat[n + i] > 0.5) == (ex[n + i] > 0.5))
        .count() as f32
        / n as f32;
    let max = (0..n)
        .map(|i| (lat[n + i] - ex[n + i]).abs())
        .fold(0f32, f32::max);
    let mean = (0..n).map(|i| (lat[n + i] - ex[n + i]).abs()).sum::<f32>() / n as f32;
    let flipped = (0..n)
        .filter(|&i| (prob[i] > 0.5) != (ex[n + i] > 0.5))
        .count();
    println!(
        "mean-field: labels agree {agree:.4}, marginals max {max:.4} mean {mean:.4}; {flipped} labels changed by the CRF"
    );
    // The CRF must actually do something here, or agreement would be trivial.
    assert!(flipped > n / 20, "{flipped}");
    // Measured: labels agree on 100 %, marginals differ by at most 0.0064 (mean 0.0001).
    assert!(agree >= 0.99, "{agree}");
    assert!(mean < 0.001 && max < 0.015, "max {max} mean {mean}");
}

#[test]
fn mean_field_with_three_labels_agrees_with_exact_filtering() {
    let mut r = Rng(5);
    let n = 400;
    let pos: Vec<f32> = (0..n)
        .flat_map(|i| [(i % 20) as f32 * 0.4, (i / 20) as f32 * 0.4])
        .collect();
    let mut u = Vec::new();
    for l in 0..3 {
        for i in 0..n {
            let favoured = (i % 20) * 3 / 20 == l;
            let p: f32 = if favoured { 0.5 } else { 0.25 } + 0.3 * (r.next() - 0.5);
            u.push(-p.ln());
        }
    }
    let lat = Lattice::new(&pos, 2, 1 << 26).unwrap();
    let ex = ExactGaussian::new(&pos, 2).unwrap();
    let q = |f: &dyn Filter| {
        mean_field(
            &u,
            3,
            &[Kernel {
                filter: f,
                weight: 3.0,
            }],
            5,
            &mut |_, _| true,
        )
        .unwrap()
    };
    let (a, b) = (q(&lat), q(&ex));
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    for i in 0..n {
        let s: f32 = (0..3).map(|l| a[l * n + i]).sum();
        assert!((s - 1.0).abs() < 1e-4);
    }
    println!("three labels: marginals differ by at most {max:.4}");
    assert!(max < 0.03, "{max}"); // measured 0.0195
}

/// Two labels take their own fused update; the general update run on the same two labels plus a
/// third that no voxel can take (its energy 1e30 makes its marginal exactly 0, so its messages
/// are 0 and the other two labels' Potts sums are the two-label ones) must give the same marginals.
#[test]
fn the_two_label_update_equals_the_general_one() {
    let cfg = strong();
    let (pos, app, prob) = ball_case(&cfg);
    let n = prob.len();
    let smooth = Lattice::new(&pos, 3, 1 << 26).unwrap();
    let appearance = Lattice::new(&app, 4, 1 << 26).unwrap();
    let kernels = two_kernels(&smooth, &appearance, &cfg);
    let u2 = unary(&prob);
    let two = mean_field(&u2, 2, &kernels, cfg.iterations, &mut |_, _| true).unwrap();
    let mut u3 = u2.clone();
    u3.extend(std::iter::repeat_n(1e30f32, n));
    let three = mean_field(&u3, 3, &kernels, cfg.iterations, &mut |_, _| true).unwrap();
    let max = (0..2 * n)
        .map(|i| (two[i] - three[i]).abs())
        .fold(0f32, f32::max);
    let moved = (0..n)
        .map(|i| (two[n + i] - prob[i]).abs())
        .fold(0f32, f32::max);
    println!(
        "two labels vs the general update: max difference {max:e}; largest change by the CRF {moved:.3}"
    );
    // The CRF must move the marginals, or agreement would say nothing.
    assert!(moved > 0.1, "{moved}");
    assert!(three[2 * n..].iter().all(|&q| q == 0.0));
    assert!(max < 1e-5, "{max}");
}

/// The CRF's numbers do not depend on how many threads run it (the page runs it on one): a
/// volume large enough that the lattice's splat is split into parts, refined in a one-thread
/// pool and in a four-thread pool, must give the same bits.
#[test]
fn the_crf_gives_the_same_bits_on_one_thread_and_on_four() {
    let mut r = Rng(31);
    let dims = (8usize, 100usize, 100usize);
    let hu = Array3::from_shape_fn(dims, |(z, y, x)| {
        let inside =
            (y as f32 - 50.0).powi(2) + (x as f32 - 45.0).powi(2) < 200.0 + 20.0 * z as f32;
        if inside { 62.0 } else { 32.0 }
    }) + Array3::from_shape_fn(dims, |_| 8.0 * r.next());
    let prob = Array3::from_shape_fn(dims, |_| r.next());
    let s = stack(hu, [2.0, 0.8, 0.8]);
    let run = || refine(prob.view(), &s, None, &CrfConfig::default()).unwrap();
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let one = pool(1).install(run);
    let four = pool(4).install(run);
    let differ = one
        .iter()
        .zip(four.iter())
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differ, 0, "{differ} of {} voxels differ", one.len());
}

/// A cube of `dims` at 1 mm with HU 30 and probability `p` everywhere.
fn uniform_case(
    dims: (usize, usize, usize),
    hu: f32,
    p: f32,
    spacing: [f32; 3],
) -> (Stack, Array3<f32>) {
    (
        stack(Array3::from_elem(dims, hu), spacing),
        Array3::from_elem(dims, p),
    )
}

#[test]
fn an_isolated_single_voxel_false_positive_is_removed() {
    let (st, mut p) = uniform_case((10, 30, 30), 30.0, 0.05, [1.0, 1.0, 1.0]);
    p[[5, 15, 15]] = 0.95;
    p[[2, 5, 25]] = 0.99;
    let out = refine(p.view(), &st, None, &strong()).unwrap();
    assert!(out[[5, 15, 15]] < 0.5, "{}", out[[5, 15, 15]]);
    assert!(out[[2, 5, 25]] < 0.5, "{}", out[[2, 5, 25]]);
    assert!(out.iter().all(|&v| v < 0.5));
}

/// `keep_above`: the network's confident voxels survive a CRF that would remove them, the
/// others do not, and a threshold at or below the mask's own is refused.
#[test]
fn keep_above_keeps_only_the_network_s_confident_voxels() {
    let (st, mut p) = uniform_case((10, 30, 30), 30.0, 0.05, [1.0, 1.0, 1.0]);
    p[[5, 15, 15]] = 0.95;
    p[[2, 5, 25]] = 0.99;
    let cfg = CrfConfig {
        keep_above: Some(0.97),
        ..strong()
    };
    let out = refine(p.view(), &st, None, &cfg).unwrap();
    assert_eq!(out[[2, 5, 25]], 0.99);
    assert!(out[[5, 15, 15]] < 0.5, "{}", out[[5, 15, 15]]);
    assert_eq!(out.iter().filter(|&&v| v >= 0.5).count(), 1);
    for bad in ["0.5", "1.5", "0.2"] {
        let e = CrfConfig::from_json(&format!("{{\"keep_above\": {bad}}}")).unwrap_err();
        assert!(e.to_string().contains("keep_above"), "{e}");
    }
    let ok = CrfConfig::from_json(r#"{"keep_above": 0.9}"#).unwrap();
    assert_eq!(ok.keep_above, Some(0.9));
}

/// `appearance_region_only`: dense voxels outside the region (here 90 HU, as bone's partial
/// volume at the inner table reads through the window) no longer pull a thin strip of rim blood
/// inside it towards background; over a region that is the whole box it changes nothing.
#[test]
fn appearance_kernel_confined_to_the_region_ignores_dense_voxels_outside_it() {
    let dims = (8, 30, 30);
    let mut hu = Array3::from_elem(dims, 30.0f32);
    let mut p = Array3::from_elem(dims, 0.05f32);
    let mut region = Array3::from_elem(dims, 1u8);
    for ((z, y, x), v) in hu.indexed_iter_mut() {
        if x >= 20 {
            *v = 90.0;
            p[[z, y, x]] = 0.0;
            region[[z, y, x]] = 0;
        } else if x >= 18 && (5..25).contains(&y) {
            *v = 75.0;
            p[[z, y, x]] = 0.7;
        }
    }
    let st = stack(hu, [1.0, 1.0, 1.0]);
    let strip_mean = |q: &Array3<f32>| {
        let v: Vec<f32> = q
            .indexed_iter()
            .filter(|((_, y, x), _)| *x >= 18 && *x < 20 && (5..25).contains(y))
            .map(|(_, &v)| v)
            .collect();
        v.iter().sum::<f32>() / v.len() as f32
    };
    let confined = CrfConfig {
        appearance_region_only: true,
        ..CrfConfig::default()
    };
    let whole_box = refine(p.view(), &st, Some(&region), &CrfConfig::default()).unwrap();
    let inside = refine(p.view(), &st, Some(&region), &confined).unwrap();
    assert!(strip_mean(&whole_box) < 0.5, "{}", strip_mean(&whole_box));
    assert!(strip_mean(&inside) > 0.5, "{}", strip_mean(&inside));
    // Brain away from the strip stays background either way.
    assert!(inside[[4, 15, 5]] < 0.5 && whole_box[[4, 15, 5]] < 0.5);
    // A region covering the box: the same lattice over the same points, the same bits.
    let all = Array3::from_elem(dims, 1u8);
    let a = refine(p.view(), &st, Some(&all), &CrfConfig::default()).unwrap();
    let b = refine(p.view(), &st, Some(&all), &confined).unwrap();
    assert_eq!(a, b);
    let parsed = CrfConfig::from_json(r#"{"appearance_region_only": true}"#).unwrap();
    assert!(parsed.appearance_region_only);
}

/// The same false positives at the shipped defaults, through what the pipeline does after the
/// CRF (threshold 0.5, components under 0.05 mL dropped): none may survive into the report.
#[test]
fn isolated_false_positives_do_not_survive_the_shipped_defaults() {
    let (st, mut p) = uniform_case((10, 30, 30), 30.0, 0.05, [1.0, 1.0, 1.0]);
    p[[5, 15, 15]] = 0.95;
    p[[2, 5, 25]] = 0.99;
    // A 2×2×2 mm speck (0.008 mL) of confident blood-density voxels.
    let mut st = st;
    st.hu.slice_mut(s![7..9, 20..22, 5..7]).fill(70.0);
    p.slice_mut(s![7..9, 20..22, 5..7]).fill(0.97);
    let out = refine(p.view(), &st, None, &CrfConfig::default()).unwrap();
    let mut mask = out.mapv(|v| u8::from(v > ichnet::pipeline::DEFAULT_THRESHOLD));
    let min_voxels = (ichnet::pipeline::MIN_COMPONENT_ML / st.voxel_ml).ceil() as usize;
    ichnet::pipeline::remove_small_components(&mut mask, min_voxels).unwrap();
    assert_eq!(mask.iter().filter(|&&v| v != 0).count(), 0);
    // ... while a 0.5 mL clot of the same density and confidence survives the same path.
    let (mut st, mut p) = uniform_case((10, 30, 30), 30.0, 0.05, [1.0, 1.0, 1.0]);
    st.hu.slice_mut(s![2..7, 10..20, 10..20]).fill(70.0);
    p.slice_mut(s![2..7, 10..20, 10..20]).fill(0.97);
    let out = refine(p.view(), &st, None, &CrfConfig::default()).unwrap();
    let mut mask = out.mapv(|v| u8::from(v > ichnet::pipeline::DEFAULT_THRESHOLD));
    ichnet::pipeline::remove_small_components(&mut mask, min_voxels).unwrap();
    assert_eq!(mask.iter().filter(|&&v| v != 0).count(), 500);
}

#[test]
fn a_large_confident_region_is_kept_and_its_surroundings_stay_negative() {
    let (mut st, mut p) = uniform_case((16, 40, 40), 30.0, 0.05, [1.0, 1.0, 1.0]);
    let region = s![4..12, 12..28, 12..28];
    st.hu.slice_mut(region).fill(65.0);
    p.slice_mut(region).fill(0.9);
    let out = refine(p.view(), &st, None, &CrfConfig::default()).unwrap();
    let kept = out.slice(region).iter().filter(|&&v| v > 0.5).count();
    let total = out.slice(region).len();
    assert!(kept == total, "{kept} of {total} kept");
    let positive = out.iter().filter(|&&v| v > 0.5).count();
    assert_eq!(
        positive, total,
        "no voxel outside the region becomes positive"
    );
}

/// Left half dense and confidently positive, right half uncertain (0.4); returns how many
/// right-half voxels end up positive when the right half has density `right_hu`.
fn bleed_across(right_hu: f32) -> usize {
    let (mut st, mut p) = uniform_case((8, 30, 40), 65.0, 0.9, [1.0, 1.0, 1.0]);
    st.hu.slice_mut(s![.., .., 20..]).fill(right_hu);
    p.slice_mut(s![.., .., 20..]).fill(0.4);
    let out = refine(p.view(), &st, None, &CrfConfig::default()).unwrap();
    out.slice(s![.., .., 20..])
        .iter()
        .filter(|&&v| v > 0.5)
        .count()
}

#[test]
fn an_edge_in_density_stops_the_label_from_bleeding_across_it() {
    let without_edge = bleed_across(65.0);
    let with_edge = bleed_across(30.0);
    println!("bleeding: {without_edge} voxels without an edge, {with_edge} with one");
    // Without the edge the uncertain side next to the clot is pulled positive (so the test can
    // fail); with the edge it is not.
    assert!(without_edge > 8 * 30, "{without_edge}");
    assert_eq!(with_edge, 0);
}

#[test]
fn uniform_probabilities_stay_put() {
    for p in [0.2f32, 0.5, 0.8] {
        let (st, prob) = uniform_case((6, 20, 24), 40.0, p, [5.0, 0.5, 0.5]);
        let out = refine(prob.view(), &st, None, &CrfConfig::default()).unwrap();
        let (lo, hi) = out
            .iter()
            .fold((1f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
        // Spatially uniform output, even at the box faces (normalisation), same label.
        assert!(hi - lo < 1e-3, "p={p}: output spans {lo}..{hi}");
        if p == 0.5 {
            assert!((lo - 0.5).abs() < 1e-3, "{lo}");
        } else {
            assert_eq!(lo > 0.5, p > 0.5, "p={p} became {lo}");
        }
    }
}

/// A one-slice-thick 20×20 mm sheet of p = 0.8 in a volume at p = 0.05 at slice thickness `dz`
/// mm, smoothness kernel only (the one whose reach in z depends on the slice thickness); returns
/// the fraction of the sheet's central voxels kept.
fn sheet_kept(dz: f32) -> f32 {
    let (st, mut p) = uniform_case((9, 60, 60), 30.0, 0.05, [dz, 0.5, 0.5]);
    let sheet = s![4, 10..50, 10..50];
    p.slice_mut(sheet).fill(0.8);
    let cfg = CrfConfig {
        appearance_weight: 0.0,
        ..strong()
    };
    let out = refine(p.view(), &st, None, &cfg).unwrap();
    // Its centre, away from the in-plane border that the kernel erodes either way.
    let centre = out.slice(s![4, 20..40, 20..40]);
    centre.iter().filter(|&&v| v > 0.5).count() as f32 / centre.len() as f32
}

#[test]
fn kernels_are_in_millimetres_so_thick_slices_count_as_thick() {
    // The same voxels: at 5 mm slices the sheet is a 5 mm thick lesion and stays; at 0.5 mm
    // slices it is a 0.5 mm film, which the 3 mm smoothness kernel removes.
    let thick = sheet_kept(5.0);
    let thin = sheet_kept(0.5);
    println!("sheet kept: {thick} at 5 mm, {thin} at 0.5 mm");
    assert!(thick > 0.9, "{thick}");
    assert_eq!(thin, 0.0);
}

#[test]
fn anisotropic_scan_removes_speckle_and_keeps_a_two_slice_lesion() {
    let (mut st, mut p) = uniform_case((8, 48, 48), 30.0, 0.05, [5.0, 0.45, 0.45]);
    let lesion = s![3..5, 14..34, 14..34];
    st.hu.slice_mut(lesion).fill(65.0);
    p.slice_mut(lesion).fill(0.85);
    p[[6, 40, 8]] = 0.9;
    p[[1, 5, 40]] = 0.9;
    let out = refine(p.view(), &st, None, &strong()).unwrap();
    assert!(out.slice(lesion).iter().all(|&v| v > 0.5));
    assert!(out[[6, 40, 8]] < 0.5 && out[[1, 5, 40]] < 0.5);
}

#[test]
fn voxels_outside_the_region_are_returned_unchanged_and_the_box_is_cropped() {
    let (st, mut p) = uniform_case((10, 30, 30), 30.0, 0.05, [1.0, 1.0, 1.0]);
    p[[5, 15, 15]] = 0.95;
    p[[0, 0, 0]] = 0.97; // far outside the region's box: must survive untouched
    let mut region = Array3::<u8>::zeros((10, 30, 30));
    region.slice_mut(s![3..8, 10..20, 10..20]).fill(1);
    let out = refine(p.view(), &st, Some(&region), &strong()).unwrap();
    assert!(out[[5, 15, 15]] < 0.5);
    for ((i, &v), &r) in out.indexed_iter().zip(region.iter()) {
        if r == 0 {
            assert_eq!(v, p[i], "voxel {i:?} outside the region changed");
        }
    }
    let empty = Array3::<u8>::zeros((10, 30, 30));
    let same = refine(p.view(), &st, Some(&empty), &strong()).unwrap();
    assert_eq!(same, p);
}

#[test]
fn progress_is_reported_and_cancel_stops_the_work() {
    let (st, p) = uniform_case((4, 10, 10), 30.0, 0.3, [1.0, 1.0, 1.0]);
    let mut calls = Vec::new();
    let cfg = CrfConfig::default();
    refine_with_progress(p.view(), &st, None, &cfg, &mut |done, total| {
        calls.push((done, total));
        true
    })
    .unwrap();
    let expected: Vec<_> = (0..=cfg.iterations).map(|i| (i, cfg.iterations)).collect();
    assert_eq!(calls, expected);
    let err = refine_with_progress(p.view(), &st, None, &cfg, &mut |done, _| done < 2).unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
}

#[test]
fn invalid_inputs_are_errors_with_the_numbers_not_panics() {
    let cfg = CrfConfig::default();
    let (st, p) = uniform_case((4, 10, 12), 30.0, 0.3, [1.0, 1.0, 1.0]);
    let msg = |r: ichnet::Result<Array3<f32>>| r.unwrap_err().to_string();

    let wrong = Array3::<f32>::zeros((4, 10, 11));
    let m = msg(refine(wrong.view(), &st, None, &cfg));
    assert!(
        m.contains("(4, 10, 11)") && m.contains("(4, 10, 12)"),
        "{m}"
    );

    let region = Array3::<u8>::zeros((3, 10, 12));
    assert!(msg(refine(p.view(), &st, Some(&region), &cfg)).contains("(3, 10, 12)"));

    let mut nan = p.clone();
    nan[[1, 2, 3]] = f32::NAN;
    let m = msg(refine(nan.view(), &st, None, &cfg));
    assert!(m.contains("NaN") && m.contains("z 1, y 2, x 3"), "{m}");

    let mut big = p.clone();
    big[[0, 0, 5]] = 1.5;
    assert!(msg(refine(big.view(), &st, None, &cfg)).contains("1.5"));

    let (empty_st, empty_p) = uniform_case((0, 10, 12), 30.0, 0.3, [1.0, 1.0, 1.0]);
    let m = msg(refine(empty_p.view(), &empty_st, None, &cfg));
    assert!(m.contains("12×10×0"), "{m}");

    let mut bad_hu = st.clone();
    bad_hu.hu[[3, 9, 11]] = f32::INFINITY;
    assert!(msg(refine(p.view(), &bad_hu, None, &cfg)).contains("z 3, y 9, x 11"));

    let mut flat = st.clone();
    flat.spacing = [0.0, 1.0, 1.0];
    assert!(msg(refine(p.view(), &flat, None, &cfg)).contains("voxel size 0"));

    for bad in [
        CrfConfig {
            smooth_std_mm: 0.0,
            ..cfg.clone()
        },
        CrfConfig {
            appearance_std_hu: f32::NAN,
            ..cfg.clone()
        },
        CrfConfig {
            appearance_weight: -1.0,
            ..cfg.clone()
        },
        CrfConfig {
            window_hu: [100.0, 0.0],
            ..cfg.clone()
        },
        CrfConfig {
            iterations: 1_000_000,
            ..cfg.clone()
        },
    ] {
        assert!(matches!(
            refine(p.view(), &st, None, &bad),
            Err(Error::InvalidInput(_))
        ));
    }

    let tiny_budget = CrfConfig {
        max_memory_bytes: 10_000,
        ..cfg.clone()
    };
    let m = msg(refine(p.view(), &st, None, &tiny_budget));
    assert!(m.contains("12×10×4") && m.contains("MB"), "{m}");
}

#[test]
fn a_one_voxel_volume_and_zero_iterations_work() {
    let (st, p) = uniform_case((1, 1, 1), 30.0, 0.7, [1.0, 1.0, 1.0]);
    let out = refine(p.view(), &st, None, &CrfConfig::default()).unwrap();
    assert!(out[[0, 0, 0]] > 0.5);
    let (st, p) = uniform_case((3, 4, 5), 30.0, 0.3, [1.0, 1.0, 1.0]);
    let cfg = CrfConfig {
        iterations: 0,
        ..CrfConfig::default()
    };
    let out = refine(p.view(), &st, None, &cfg).unwrap();
    assert!(out.iter().all(|&v| (v - 0.3).abs() < 1e-6));
}

#[test]
fn absurd_voxel_sizes_or_kernel_widths_are_errors_not_overflows() {
    let (mut st, p) = uniform_case((3, 4, 5), 30.0, 0.3, [1.0, 1.0, 1.0]);
    st.spacing = [1.0e9, 1.0, 1.0];
    assert!(matches!(
        refine(p.view(), &st, None, &CrfConfig::default()),
        Err(Error::InvalidInput(_))
    ));
    st.spacing = [1.0, 1.0, 1.0];
    let cfg = CrfConfig {
        smooth_std_mm: 1.0e-20,
        ..CrfConfig::default()
    };
    assert!(matches!(
        refine(p.view(), &st, None, &cfg),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn random_volumes_spacings_and_settings_give_probabilities_never_panics() {
    let mut r = Rng(2024);
    for case in 0..40 {
        let dims = (
            1 + (r.next() * 6.0) as usize,
            1 + (r.next() * 20.0) as usize,
            1 + (r.next() * 20.0) as usize,
        );
        let spacing = [
            0.1 + r.next() * 8.0,
            0.2 + r.next() * 2.0,
            0.2 + r.next() * 2.0,
        ];
        let hu = Array3::from_shape_fn(dims, |_| -1000.0 + r.next() * 3000.0);
        let p = Array3::from_shape_fn(dims, |_| if r.next() < 0.1 { 1.0 } else { r.next() });
        let region = Array3::from_shape_fn(dims, |_| u8::from(r.next() < 0.7));
        let cfg = CrfConfig {
            iterations: (r.next() * 8.0) as usize,
            smooth_std_mm: 0.2 + r.next() * 10.0,
            smooth_weight: r.next() * 10.0,
            appearance_std_mm: 0.2 + r.next() * 30.0,
            appearance_std_hu: 0.5 + r.next() * 50.0,
            appearance_weight: r.next() * 10.0,
            ..CrfConfig::default()
        };
        let out = refine(p.view(), &stack(hu, spacing), Some(&region), &cfg).unwrap();
        assert!(
            out.iter().all(|v| (0.0..=1.0).contains(v)),
            "case {case}: {dims:?} {spacing:?} {cfg:?}"
        );
    }
}

#[test]
fn crf_parameters_from_json_keep_defaults_and_refuse_typos_and_bad_values() {
    let cfg = CrfConfig::from_json(r#"{"smooth_weight": 1.5, "iterations": 3}"#).unwrap();
    assert_eq!(cfg.smooth_weight, 1.5);
    assert_eq!(cfg.iterations, 3);
    assert_eq!(
        cfg.appearance_std_hu,
        CrfConfig::default().appearance_std_hu
    );
    let typo = CrfConfig::from_json(r#"{"smooth_wieght": 1.5}"#).unwrap_err();
    assert!(typo.to_string().contains("smooth_wieght"), "{typo}");
    let bad = CrfConfig::from_json(r#"{"appearance_std_hu": -2}"#).unwrap_err();
    assert!(bad.to_string().contains("appearance_std_hu = -2"), "{bad}");
    let list = CrfConfig::from_json("[1, 2]").unwrap_err();
    assert!(list.to_string().contains("found an array"), "{list}");
}
