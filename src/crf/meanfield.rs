//! Mean-field inference for a fully connected CRF with Gaussian kernels and Potts compatibility
//! (Krähenbühl & Koltun, NIPS 2011).
//!
//! The exact posterior of a dense CRF is intractable; mean-field keeps one independent
//! distribution `Q_i` per voxel and updates all of them in parallel:
//!
//! `Q_i(l) ∝ exp(-U_i(l) - Σ_m w_m Σ_{l'≠l} K̃_m[Q(l')]_i)`
//!
//! where `K̃_m` is kernel m's normalised filter (a weighted average over all voxels). Because
//! `Σ_{l'} Q(l') = 1` and `K̃_m[1] = 1`, the Potts sum is `1 - K̃_m[Q(l)]`: one filter per label
//! and kernel, and for two labels a single one (`K̃[Q(0)] = 1 - K̃[Q(1)]`).

use super::Filter;
use crate::error::{Error, Result, try_filled};

/// One pairwise term: a normalised Gaussian filter and its Potts weight.
pub struct Kernel<'a> {
    /// The filter over the kernel's feature space.
    pub filter: &'a dyn Filter,
    /// Weight `w_m` (energy units, comparable to the unary's `-ln p`).
    pub weight: f32,
}

/// Run `iterations` mean-field updates.
///
/// `unary` holds `labels` planes of `n` energies (`-ln p`, plane-major); the result has the same
/// layout and holds the marginals `Q`. `progress(done, total)` is called after every iteration
/// and cancels the run (with [`Error::Cancelled`]) by returning `false`.
pub fn mean_field(
    unary: &[f32],
    labels: usize,
    kernels: &[Kernel<'_>],
    iterations: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Vec<f32>> {
    if labels < 2 || !unary.len().is_multiple_of(labels) {
        return Err(Error::InvalidInput(format!(
            "{} unary energies for {labels} labels: need at least 2 labels and one plane each",
            unary.len()
        )));
    }
    let n = unary.len() / labels;
    for k in kernels {
        if k.filter.len() != n {
            return Err(Error::InvalidInput(format!(
                "a CRF kernel built for {} voxels was given {n}",
                k.filter.len()
            )));
        }
    }
    if let Some(i) = unary.iter().position(|u| !u.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "unary energy of label {} at voxel {} is not finite",
            i / n,
            i % n
        )));
    }
    let mut q = try_filled(unary.len(), 0f32, "the CRF marginals")?;
    softmax(unary, labels, n, &mut q);
    let mut filtered = try_filled(n, 0f32, "the CRF messages")?;
    let mut message = try_filled(unary.len(), 0f32, "the CRF messages")?;
    for it in 0..iterations {
        message.iter_mut().for_each(|m| *m = 0.0);
        // With two labels the second plane's message is the first's complement.
        let filtered_labels = if labels == 2 { 1 } else { labels };
        for k in kernels {
            for l in 0..filtered_labels {
                let plane = labels - 1 - l;
                k.filter
                    .filter_normalised(&q[plane * n..(plane + 1) * n], &mut filtered)?;
                for (m, &f) in message[plane * n..(plane + 1) * n]
                    .iter_mut()
                    .zip(&filtered)
                {
                    *m += k.weight * f;
                }
                if labels == 2 {
                    for (m, &f) in message[..n].iter_mut().zip(&filtered) {
                        *m += k.weight * (1.0 - f);
                    }
                }
            }
        }
        // Energy = unary + Σ w (1 - K̃[Q(l)]); the constant Σ w drops out of the softmax.
        for (m, &u) in message.iter_mut().zip(unary) {
            *m = u - *m;
        }
        softmax(&message, labels, n, &mut q);
        if !progress(it + 1, iterations) {
            return Err(Error::Cancelled);
        }
    }
    Ok(q)
}

/// `q_i(l) = exp(-e_i(l)) / Σ_l' exp(-e_i(l'))`, shifted by the minimum energy for stability.
fn softmax(energy: &[f32], labels: usize, n: usize, q: &mut [f32]) {
    if labels == 2 {
        // Logistic form: one exp per voxel.
        let (e0, e1) = energy.split_at(n);
        let (q0, q1) = q.split_at_mut(n);
        for i in 0..n {
            let p1 = 1.0 / (1.0 + (e1[i] - e0[i]).exp());
            q1[i] = p1;
            q0[i] = 1.0 - p1;
        }
        return;
    }
    for i in 0..n {
        let min = (0..labels)
            .map(|l| energy[l * n + i])
            .fold(f32::INFINITY, f32::min);
        let mut sum = 0f32;
        for l in 0..labels {
            let e = (min - energy[l * n + i]).exp();
            q[l * n + i] = e;
            sum += e;
        }
        for l in 0..labels {
            q[l * n + i] /= sum;
        }
    }
}
