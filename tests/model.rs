//! ICHNet's network: the shipped weights load, and dense inference equals the sparse path.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::TensorData;
use ichnet::model::{self, IchNetConfig, Samples, train};

/// Deterministic pseudo-random values in [0, 1).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

#[test]
fn shipped_weights_load_into_the_default_config() {
    let device = Device::flex();
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/ichnet.bpk")).unwrap();
    assert!(
        bytes.len() <= 8 << 20,
        "weights are {} bytes, over 8 MB",
        bytes.len()
    );
    model::load(bytes, &device).expect("weights/ichnet.bpk must fit IchNetConfig::new()");
}

#[test]
fn weights_from_another_config_are_refused() {
    let device = Device::flex();
    let other = IchNetConfig::new()
        .with_widths(vec![8, 8, 8, 8, 8])
        .init(&device);
    let bytes = model::to_bytes(other).unwrap();
    let err = model::load(bytes, &device).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
}

/// Folding the batch norms into the convolutions (what `model::load` does for inference) keeps
/// the shipped network's output within float noise, through the CPU path and through burn's ops,
/// and such a network cannot be saved (its record would normalise twice on reload).
#[test]
fn folded_batch_norm_keeps_the_output_and_refuses_to_be_saved() {
    let device = Device::flex();
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/ichnet.bpk")).unwrap();
    let plain = model::load_unfolded(bytes.clone(), &device).unwrap();
    let folded = model::load(bytes, &device).unwrap();
    assert!(folded.is_folded() && !plain.is_folded());
    let (n, c, h, w) = (2, plain.in_channels(), 40, 48);
    let x = Tensor::<4>::from_data(
        TensorData::new(noise(n * c * h * w, 11), [n, c, h, w]),
        &device,
    );
    let a = plain
        .forward_dense(x.clone())
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    // On flex the folded network runs the CPU path; `forward_dense_ops` is burn's ops, as on
    // the GPU.
    let cpu = folded
        .forward_dense(x.clone())
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let ops = folded
        .forward_dense_ops(x)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let spread =
        a.iter().cloned().fold(f32::MIN, f32::max) - a.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 1e-3, "the logits do not vary ({spread})");
    for (name, b) in [("CPU path", &cpu), ("burn ops", &ops)] {
        assert_eq!(b.len(), a.len());
        for (i, (&u, &v)) in a.iter().zip(b).enumerate() {
            assert!(
                (u - v).abs() <= 1e-4 * (1.0 + u.abs()),
                "pixel {i}: unfolded {u} vs folded ({name}) {v}"
            );
        }
    }
    let err = model::to_bytes(folded).unwrap_err();
    assert!(err.to_string().contains("cannot be saved"), "{err}");
    assert!(model::to_bytes(plain).is_ok());
}

/// A single-slice network widened to context planes computes exactly what it did (the new
/// channels start at zero weight), whatever the context planes hold; it then has 5 inputs, and
/// saved and loaded again it keeps them. Narrowing is refused.
#[test]
fn widening_to_context_planes_keeps_the_output() {
    let device = Device::flex();
    device.seed(5);
    let slice = IchNetConfig::new().with_in_channels(3).init(&device);
    let bytes = model::to_bytes(slice.clone()).unwrap();
    let (n, h, w) = (2, 32, 40);
    let x5 = noise(n * 5 * h * w, 21);
    // The same slices without their context planes: the first 3 of each slice's 5 planes.
    let x3: Vec<f32> = x5
        .chunks(5 * h * w)
        .flat_map(|s| s[..3 * h * w].to_vec())
        .collect();
    let run = |net: &ichnet::model::IchNet, x: Vec<f32>, c: usize| {
        net.forward_dense(Tensor::<4>::from_data(
            TensorData::new(x, [n, c, h, w]),
            &device,
        ))
        .into_data()
        .try_into_vec::<f32>()
        .unwrap()
    };
    let before = run(&slice.clone().valid(), x3, 3);
    let wide = slice.widen_input(5).unwrap();
    assert_eq!(wide.in_channels(), 5);
    let after = run(&wide.clone().valid(), x5, 5);
    for (a, b) in before.iter().zip(&after) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
    }
    let reloaded = model::load(model::to_bytes(wide.clone()).unwrap(), &device).unwrap();
    assert_eq!(
        reloaded.layout().unwrap(),
        ichnet::model::input::Layout::Context
    );
    assert_eq!(model::load(bytes, &device).unwrap().in_channels(), 3);
    assert!(wide.widen_input(3).is_err());
}

#[test]
fn dense_inference_equals_sparse_sampling() {
    let device = Device::flex();
    // Inference mode: batch norm on running statistics, no dropout.
    let net = IchNetConfig::new().init(&device).valid();
    let (n, c, h, w) = (2, IchNetConfig::new().in_channels, 36, 44);
    let x = Tensor::<4>::from_data(
        TensorData::new(noise(n * c * h * w, 7), [n, c, h, w]),
        &device,
    );
    let dense = net.forward_dense(x.clone());
    assert_eq!(dense.dims(), [n, h, w]);
    let dense = dense.into_data().try_into_vec::<f32>().unwrap();
    let mut s = Samples::default();
    // Corners, edges and interior pixels of both slices, including odd coordinates between the
    // pooled maps' pixel centres.
    for (b, y, xx) in [
        (0, 0, 0),
        (0, 35, 43),
        (1, 17, 21),
        (1, 1, 42),
        (0, 34, 1),
        (1, 9, 30),
        (0, 22, 13),
    ] {
        s.push(b, y, xx);
    }
    let sparse = net
        .forward_sparse(x, &s)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let spread = dense.iter().cloned().fold(f32::MIN, f32::max)
        - dense.iter().cloned().fold(f32::MAX, f32::min);
    assert!(
        spread > 1e-4,
        "the logits do not vary ({spread}), the comparison would be empty"
    );
    for (i, &v) in sparse.iter().enumerate() {
        let d = dense[(s.n[i] * h + s.y[i]) * w + s.x[i]];
        assert!(
            (d - v).abs() <= 1e-4 * (1.0 + d.abs()),
            "pixel {i}: dense {d} vs sparse {v}"
        );
    }
}

#[test]
fn training_mode_runs_sparse_with_gradients() {
    let device = Device::flex().autodiff();
    device.seed(17);
    let net = IchNetConfig::new().with_dropout(0.0).init(&device);
    let x = Tensor::<4>::from_data(
        TensorData::new(noise(2 * 3 * 16 * 16, 3), [2, 3, 16, 16]),
        &device,
    );
    let mut s = Samples::default();
    s.push(0, 3, 4);
    s.push(1, 15, 0);
    let t = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 0.0], [2]), &device);
    let loss_of = |net: &ichnet::model::IchNet| {
        let logits = net.forward_sparse(x.clone(), &s);
        // The loss `train` uses, with its weights for one background sample per blood sample.
        let weight = train::class_weights(&[1.0, 0.0], 1);
        train::weighted_bce_with_logits(logits, t.clone(), &weight)
    };
    let value = |loss: Tensor<1>| loss.into_data().try_into_vec::<f32>().unwrap()[0];
    let v = value(loss_of(&net));
    assert!(v.is_finite() && v > 0.0, "loss {v}");
    // The gradients must reach the parameters and point downhill: a plain gradient step on the
    // same batch (no dropout, so the loss is a function of the weights alone) lowers the loss
    // once the step is small enough. A too-long step may overshoot on an unlucky initialisation
    // (seen once in CI at 1e-2), so the step shrinks until the loss falls; dropped or
    // wrong-signed gradients leave it or raise it at every length.
    use burn::optim::{GradientsParams, SgdConfig};
    let mut tried = Vec::new();
    for lr in [1e-2, 1e-3, 1e-4, 1e-5] {
        let grads = GradientsParams::from_grads(loss_of(&net).backward(), &net);
        assert!(!grads.is_empty(), "no parameter received a gradient");
        let stepped = SgdConfig::new().init().step(lr, net.clone(), grads);
        let after = value(loss_of(&stepped));
        assert!(after.is_finite(), "loss {after} after a step of {lr}");
        tried.push((lr, after));
        if after < v {
            return;
        }
    }
    panic!("loss {v} before the step, after steps of each length: {tried:?}");
}

/// The scanner-variation augmentation changes texture and calibration but keeps blood brighter
/// than brain by roughly the contrast it had: otherwise the labels it leaves untouched would lie.
#[test]
fn augmentation_varies_texture_but_keeps_blood_contrast() {
    use ichnet::model::train::{Rng, Scratch, augment_crop};
    let c = 80;
    let blood = |i: usize, j: usize| {
        let (dy, dx) = (i as f32 - 40.0, j as f32 - 40.0);
        dy * dy + dx * dx < 15.0 * 15.0
    };
    let base: Vec<f32> = (0..c * c)
        .map(|k| if blood(k / c, k % c) { 70.0 } else { 30.0 })
        .collect();
    let mut rng = Rng::new(5);
    let mut scratch = Scratch::default();
    let mut changed = 0;
    for _ in 0..200 {
        let mut hu = base.clone();
        augment_crop(&mut hu, c, &mut rng, &mut scratch);
        assert!(hu.iter().all(|v| v.is_finite()));
        // Means away from the disc's edge (kernels only move pixels next to it).
        let (mut sb, mut nb, mut st, mut nt) = (0.0f64, 0, 0.0f64, 0);
        for (k, &v) in hu.iter().enumerate() {
            let (dy, dx) = ((k / c) as f32 - 40.0, (k % c) as f32 - 40.0);
            let r = (dy * dy + dx * dx).sqrt();
            if r < 12.0 {
                sb += f64::from(v);
                nb += 1;
            } else if r > 18.0 {
                st += f64::from(v);
                nt += 1;
            }
        }
        let contrast = sb / f64::from(nb) - st / f64::from(nt);
        assert!(
            (30.0..50.0).contains(&contrast),
            "blood − brain contrast {contrast:.1} HU after augmentation (40 before)"
        );
        let moved = hu
            .iter()
            .zip(&base)
            .filter(|(a, b)| (*a - *b).abs() > 0.5)
            .count();
        if moved > c * c / 2 {
            changed += 1;
        }
    }
    // Almost every crop is altered (a crop escapes only with gain ≈ 1, offset ≈ 0, no kernel,
    // no noise and no texture).
    assert!(changed > 180, "only {changed} of 200 crops were altered");
}
