//! `cargo bench --bench net -- [--case sample|clinical|N,H,W]... [--batch B] [--reps R]
//! [--device flex|wgpu]`: the network alone (the bundled weights; flex CPU backend unless
//! `--device wgpu`) on the slice grids the pipeline builds, as `run_network` calls it (batches
//! of `B` slices, synchronous readback). The first run is reported apart (on wgpu it compiles
//! the pipelines), the median is of the runs after it. `--ops` times the folded network through
//! burn's ops (the GPU's path) instead of the CPU path.
//!
//! Cases: `sample` is the bundled sample (www/samples), `clinical` the 512×512×32 scan of the
//! `segment` benchmark, `N,H,W` any N slices of H×W (random input in [0, 1]). Besides text, it
//! prints one JSON line with the network's configuration and one per case, which
//! `scripts/peer-bench.py` reads to build and time the same network in ONNX Runtime on the same
//! shapes in the same run. `--segment SCAN MASK` instead runs the whole pipeline (default
//! options) once and writes the mask, to compare masks between builds. Asserts nothing about
//! speed.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::TensorData;
use ichnet::model::input::Layout;
use ichnet::model::{self, IchNetConfig};
use ichnet::pipeline::{self, Prepared, SegmentOptions};

mod common;

/// One network workload: the slices' input values and their grid.
struct Case {
    name: String,
    slices: usize,
    h: usize,
    w: usize,
    /// `[slices, channels, h, w]` values.
    x: Vec<f32>,
}

fn from_scan(name: &str, bytes: &[u8], layout: Layout) -> Case {
    let prep = Prepared::new(bytes, false).expect("a readable scan with brain");
    let (h, w) = prep.grid_hw();
    let slices = prep.slices();
    let (x, _) = prep.slice_batch(0..slices, layout).expect("slices");
    Case {
        name: name.into(),
        slices,
        h,
        w,
        x,
    }
}

fn synthetic(spec: &str, layout: Layout) -> Case {
    let v: Vec<usize> = spec
        .split(',')
        .map(|s| s.trim().parse().expect("N,H,W as integers"))
        .collect();
    let &[slices, h, w] = v.as_slice() else {
        panic!("a case is sample, clinical or N,H,W (got {spec})");
    };
    let m = IchNetConfig::new().size_multiple();
    assert!(h % m == 0 && w % m == 0, "H and W must be multiples of {m}");
    let c = layout.channels();
    // A fixed linear congruential sequence: reproducible without a random-number crate.
    let mut s = 0x2545_f491_u32;
    let x = (0..slices * c * h * w)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32
        })
        .collect();
    Case {
        name: spec.into(),
        slices,
        h,
        w,
        x,
    }
}

fn main() {
    let mut cases = Vec::new();
    let mut batch = SegmentOptions::default().batch_slices;
    let mut reps = 3usize;
    let mut segment: Option<(String, String)> = None;
    let mut gpu = false;
    let mut ops = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--case" => cases.push(args.next().expect("--case NAME")),
            "--batch" => batch = args.next().and_then(|v| v.parse().ok()).expect("--batch N"),
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).expect("--reps N"),
            "--segment" => {
                let scan = args.next().expect("--segment SCAN MASK_OUT");
                segment = Some((scan, args.next().expect("--segment SCAN MASK_OUT")));
            }
            "--device" => gpu = args.next().as_deref() == Some("wgpu"),
            "--ops" => ops = true,
            _ => {} // cargo passes --bench; other harness flags do not apply
        }
    }
    if cases.is_empty() {
        cases = vec!["sample".into(), "clinical".into()];
    }
    // wgpu: the native GPU backend (Vulkan/Metal/DX12); its first run compiles the pipelines.
    let device = if gpu {
        Device::wgpu(Default::default())
    } else {
        Device::flex()
    };
    let net = model::load(model::BUNDLED_WEIGHTS.to_vec(), &device).expect("bundled weights");
    let layout = net.layout().expect("a supported input layout");
    let cfg = IchNetConfig::new().with_in_channels(net.in_channels());
    println!(
        "{{\"config\": {}}}",
        serde_json::to_string(&cfg).expect("config")
    );
    if let Some((scan, out)) = segment {
        // The whole pipeline with the default options (CRF on), for comparing masks across builds.
        let bytes = std::fs::read(&scan).expect("the scan");
        let t = std::time::Instant::now();
        let seg = pipeline::segment(
            &bytes,
            &net,
            &device,
            &SegmentOptions::default(),
            &mut |_| true,
        )
        .expect("segment");
        println!(
            "segment {scan}: {:.3} s, {:.3} mL, timings {:?}",
            t.elapsed().as_secs_f64(),
            seg.volume_ml,
            seg.timings
        );
        std::fs::write(&out, &seg.mask_nifti_gz).expect("the mask file");
        return;
    }
    let threads = rayon::current_num_threads();
    for spec in cases {
        let case = match spec.as_str() {
            "sample" => {
                let path = concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/www/samples/sample_head_ct_simulated_bleed.nii.gz"
                );
                from_scan(
                    "sample",
                    &std::fs::read(path).expect("bundled sample"),
                    layout,
                )
            }
            "clinical" => from_scan("clinical", &common::clinical_scan(), layout),
            other => synthetic(other, layout),
        };
        let plane = layout.channels() * case.h * case.w;
        let step = batch.max(1);
        let mut runs = Vec::with_capacity(reps + 1);
        // The first run warms allocators and caches; it is reported but not in the median.
        for _ in 0..=reps {
            let t = Instant::now();
            let mut start = 0;
            while start < case.slices {
                let end = (start + step).min(case.slices);
                let x = case.x[start * plane..end * plane].to_vec();
                let shape = [end - start, layout.channels(), case.h, case.w];
                let p = if ops {
                    let t = Tensor::<4>::from_data(TensorData::new(x, shape), &device);
                    burn::tensor::activation::sigmoid(net.forward_dense_ops(t))
                } else {
                    pipeline::network_probs(&net, x, shape, &device)
                };
                let p = p.into_data().try_into_vec::<f32>().expect("probabilities");
                std::hint::black_box(p);
                start = end;
            }
            runs.push(t.elapsed().as_secs_f64());
        }
        let mut sorted = runs[1..].to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        println!(
            "{}: {} slices of {}×{}, batch {step}, {threads} threads: median {median:.3} s (runs {:?})",
            case.name, case.slices, case.h, case.w, runs
        );
        println!(
            "{}",
            serde_json::json!({
                "case": case.name,
                "slices": case.slices,
                "height": case.h,
                "width": case.w,
                "batch": step,
                "threads": threads,
                "device": if gpu { "wgpu" } else { "flex" },
                "path": if ops || gpu { "burn ops" } else { "cpu" },
                "first_s": runs[0],
                "runs_s": &runs[1..],
                "median_s": median,
            })
        );
    }
}
