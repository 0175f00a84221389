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
use crate::parallel::for_each_chunk;

/// Voxels per parallel work item of the two-label update.
const CHUNK: usize = 1 << 15;

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
    if labels == 2 {
        return mean_field_two(unary, n, kernels, iterations, progress);
    }
    let mut q = try_filled(unary.len(), 0f32, "the CRF marginals")?;
    softmax(unary, labels, n, &mut q);
    let mut filtered = try_filled(n, 0f32, "the CRF messages")?;
    let mut message = try_filled(unary.len(), 0f32, "the CRF messages")?;
    for it in 0..iterations {
        message.iter_mut().for_each(|m| *m = 0.0);
        for k in kernels {
            for l in 0..labels {
                k.filter
                    .filter_normalised(&q[l * n..(l + 1) * n], &mut filtered)?;
                for (m, &f) in message[l * n..(l + 1) * n].iter_mut().zip(&filtered) {
                    *m += k.weight * f;
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

/// [`mean_field`] for two labels, the CRF's case: one fused pass per iteration.
///
/// With two labels everything follows from `Q(1)`: its one filtered copy per kernel gives both
/// labels' messages (`K̃[Q(0)] = 1 - K̃[Q(1)]`), and the new marginal is the logistic of the energy
/// difference `e₁ - e₀ = (U₁ - U₀) - Σ_m w_m (2 K̃_m[Q(1)] - 1)`. The general loop instead makes a
/// dozen sequential passes over every voxel per iteration (messages cleared, accumulated per
/// label, subtracted from the unary, a softmax); here the filters' normalisation, the messages
/// and the logistic are one pass, split across threads. On the 0.85 M voxels of a 512×512×32
/// scan's CRF (5 iterations, 2 cores) mean-field took 63–67 ms the general way and 45–53 ms
/// this way.
fn mean_field_two(
    unary: &[f32],
    n: usize,
    kernels: &[Kernel<'_>],
    iterations: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Vec<f32>> {
    let (u0, u1) = unary.split_at(n);
    let mut q = try_filled(2 * n, 0f32, "the CRF marginals")?;
    let (q0, q1) = q.split_at_mut(n);
    for_each_chunk(q1, CHUNK, |start, chunk| {
        for (j, p) in chunk.iter_mut().enumerate() {
            let i = start + j;
            *p = 1.0 / (1.0 + (u1[i] - u0[i]).exp());
        }
    });
    let mut filtered = Vec::with_capacity(kernels.len());
    for _ in kernels {
        filtered.push(try_filled(n, 0f32, "the CRF messages")?);
    }
    for it in 0..iterations {
        for (k, out) in kernels.iter().zip(filtered.iter_mut()) {
            k.filter.filter_sum(q1, out)?;
        }
        let terms: Vec<(f32, &[f32], &[f32])> = kernels
            .iter()
            .zip(&filtered)
            .map(|(k, f)| (k.weight, f.as_slice(), k.filter.inverse_norm()))
            .collect();
        for_each_chunk(q1, CHUNK, |start, chunk| {
            for (j, p) in chunk.iter_mut().enumerate() {
                let i = start + j;
                let mut e = u1[i] - u0[i];
                for &(w, f, norm) in &terms {
                    e -= w * (2.0 * f[i] * norm[i] - 1.0);
                }
                *p = 1.0 / (1.0 + e.exp());
            }
        });
        if !progress(it + 1, iterations) {
            return Err(Error::Cancelled);
        }
    }
    for_each_chunk(q0, CHUNK, |start, chunk| {
        for (p0, &p1) in chunk.iter_mut().zip(&q1[start..]) {
            *p0 = 1.0 - p1;
        }
    });
    Ok(q)
}

/// `q_i(l) = exp(-e_i(l)) / Σ_l' exp(-e_i(l'))`, shifted by the minimum energy for stability
/// (three or more labels; two take [`mean_field_two`]'s logistic).
fn softmax(energy: &[f32], labels: usize, n: usize, q: &mut [f32]) {
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
