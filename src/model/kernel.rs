//! The CPU path's matrix products: `dst[m, n] (+)= a[m, k] · b[k, n]`, optionally followed by
//! `max(· + bias, 0)`.
//!
//! Why not gemm for these: every product of the network is tall and thin — thousands of pixels
//! (or Winograd tiles) against `k` = 16–96 input channels and `n` = 16–96 outputs, with `b` (the
//! weights) small enough to stay in L1. gemm packs both operands for each call and reaches
//! about a quarter of the machine's peak on `k` ≤ 64 (measured per stage in `model/cpu.rs`);
//! here there is nothing to pack: each block of rows keeps its outputs in registers across the
//! whole `k` loop, reads `a` in place (any row stride) and streams the weight rows, and the bias
//! and ReLU are applied before the outputs leave registers. pulp picks the widest vectors the CPU
//! has at run time, with fused multiply-add where there is one (AVX-512, AVX2 + FMA; simd128 in
//! the page's wasm multiplies and adds). Rows of fewer than four vectors of outputs, or widths
//! the vectors do not divide, go to gemm (Design in the README has the measurements).
//!
//! The operand lengths are checked against the shape before anything runs (an internal
//! invariant of `model/cpu.rs`, so a violation is a bug: it comes back as an error, and gemm's
//! unchecked pointers never see it).

use gemm::{Parallelism, gemm};
use pulp::{Simd, WithSimd};

use crate::error::{Error, Result};

/// A product's operands: `dst` rows `dst_rs` apart, `a` rows `a_rs` apart (columns contiguous in
/// both), `b` `[k, n]` row-major.
pub(crate) struct Product<'a> {
    pub dst: &'a mut [f32],
    pub dst_rs: usize,
    pub a: &'a [f32],
    pub a_rs: usize,
    pub b: &'a [f32],
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Add to what `dst` holds instead of overwriting it.
    pub accumulate: bool,
    /// Then `max(· + bias, 0)` per output column.
    pub bias_relu: Option<&'a [f32]>,
}

impl Product<'_> {
    /// Runs the product on this thread.
    #[inline(always)]
    pub fn run(self) -> Result<()> {
        let (m, n, k) = (self.m, self.n, self.k);
        if m == 0 || n == 0 {
            return Ok(());
        }
        if self.dst.len() < (m - 1) * self.dst_rs + n
            || self.a.len() < (m - 1) * self.a_rs + k
            || self.b.len() < k * n
            || self.bias_relu.is_some_and(|b| b.len() < n)
        {
            return Err(Error::InvalidInput(format!(
                "internal error: a {m}×{k} · {k}×{n} matrix product was given {} output, {} input \
                 and {} weight values",
                self.dst.len(),
                self.a.len(),
                self.b.len()
            )));
        }
        pulp::Arch::new().dispatch(self);
        Ok(())
    }
}

impl WithSimd for Product<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(mut self, simd: S) {
        let lanes = S::F32_LANES;
        let vectors = self.n / lanes;
        // Fewer than four vectors of outputs per row leave a broadcast of `a` per one or two
        // multiply-adds, and gemm (vectorised along the rows, `a` packed) is faster there: with
        // AVX-512, blocks of 8 × 2 and 8 × 3 vectors (and 24 × 1) for the 16- to 48-channel
        // layers ran the clinical grid's network 5–10 % slower than gemm (2026-12-02).
        if !self.n.is_multiple_of(lanes) || vectors < 4 {
            return self.with_gemm();
        }
        // Accumulators per block: rows × vectors, plus a row of weights and a broadcast, within
        // the register file: 32 vector registers with AVX-512, 16 with AVX2 and in wasm (V8
        // and SpiderMonkey keep simd128 values in the 16 XMM registers, whatever pulp assumes).
        if S::REGISTER_COUNT >= 32 && !cfg!(target_arch = "wasm32") {
            if vectors == 6 {
                // 96 outputs: four rows of six vectors, the same loads per multiply-add as six
                // rows of four, without a two-vector remainder.
                tile::<S, 4, 6>(simd, &mut self, vectors);
            } else {
                tile::<S, 6, 4>(simd, &mut self, vectors);
            }
        } else {
            tile::<S, SMALL_ROWS, SMALL_VECTORS>(simd, &mut self, vectors);
        }
    }
}

/// The block shape with 16 vector registers: two rows of four vectors. In the page (wasm, four
/// lanes) it ran the sample's network in 1.08–1.13 s against 1.14–1.18 s for 3 × 3, 1.23–1.31 s
/// for 4 × 3 and 1.26–1.41 s for 6 × 4 (`tests/browser/bench.mjs`, alternating builds).
const SMALL_ROWS: usize = 2;
const SMALL_VECTORS: usize = 4;

/// All rows in blocks of `R` (the last ones one by one), each across all `vectors` in blocks of
/// up to `MAXV`.
#[inline(always)]
fn tile<S: Simd, const R: usize, const MAXV: usize>(simd: S, p: &mut Product, vectors: usize) {
    let mut i = 0;
    while i + R <= p.m {
        across::<S, R, MAXV>(simd, p, i, vectors);
        i += R;
    }
    while i < p.m {
        across::<S, 1, MAXV>(simd, p, i, vectors);
        i += 1;
    }
}

#[inline(always)]
fn across<S: Simd, const R: usize, const MAXV: usize>(
    simd: S,
    p: &mut Product,
    i: usize,
    vectors: usize,
) {
    let mut j = 0;
    while j < vectors {
        let v = MAXV.min(vectors - j);
        match v {
            6 if MAXV >= 6 => block::<S, R, 6>(simd, p, i, j),
            5 if MAXV >= 5 => block::<S, R, 5>(simd, p, i, j),
            4 if MAXV >= 4 => block::<S, R, 4>(simd, p, i, j),
            3 if MAXV >= 3 => block::<S, R, 3>(simd, p, i, j),
            2 => block::<S, R, 2>(simd, p, i, j),
            _ => block::<S, R, 1>(simd, p, i, j),
        }
        j += v;
    }
}

/// Rows `i..i + R` and vectors `j..j + V` of the output: `R × V` accumulators in registers
/// over the whole `k` loop.
///
/// Raw pointers rather than slices: with slice indexing the `k` loop kept a bounds check per row
/// and per weight row, and the hottest instructions in `perf annotate` included stores of the
/// accumulators to the stack (`vmovups` to `rsp`); without them the accumulators stay in
/// registers and the clinical grid's network ran 3–6 % faster (AVX-512, alternating runs,
/// 2026-12-02). `run` checks every operand length once instead.
#[inline(always)]
fn block<S: Simd, const R: usize, const V: usize>(simd: S, p: &mut Product, i: usize, j: usize) {
    let lanes = S::F32_LANES;
    let (k, n) = (p.k, p.n);
    let col = j * lanes;
    let zero = simd.splat_f32s(0.0);
    let dst = p.dst.as_mut_ptr();
    let (dst_rs, a_rs) = (p.dst_rs, p.a_rs);
    // SAFETY: `tile` and `across` call this with i + R ≤ m and col + V·lanes ≤ n (j + V ≤ n /
    // lanes), and `run` checked that, for every row below m, a holds k values from (row)·a_rs
    // and dst holds n values from (row)·dst_rs, that b holds k·n values and the bias n. So every
    // pointer below stays inside its slice: a_rows[r] + kk for kk < k, b + kk·n + col + q·lanes
    // + lanes ≤ k·n, and dst + (i + r)·dst_rs + col + V·lanes. Loads and stores are unaligned.
    unsafe {
        let load = |at: *const f32| core::ptr::read_unaligned(at as *const S::f32s);
        let a_rows: [*const f32; R] = core::array::from_fn(|r| p.a.as_ptr().add((i + r) * a_rs));
        let out = |r: usize, q: usize| dst.add((i + r) * dst_rs + col + q * lanes);
        let mut acc = [[zero; V]; R];
        if p.accumulate {
            for (r, acc) in acc.iter_mut().enumerate() {
                for (q, acc) in acc.iter_mut().enumerate() {
                    *acc = load(out(r, q));
                }
            }
        }
        for kk in 0..k {
            let w_row = p.b.as_ptr().add(kk * n + col);
            let w: [S::f32s; V] = core::array::from_fn(|q| load(w_row.add(q * lanes)));
            for r in 0..R {
                let x = simd.splat_f32s(*a_rows[r].add(kk));
                for q in 0..V {
                    acc[r][q] = simd.mul_add_e_f32s(x, w[q], acc[r][q]);
                }
            }
        }
        if let Some(bias) = p.bias_relu {
            let bias: [S::f32s; V] =
                core::array::from_fn(|q| load(bias.as_ptr().add(col + q * lanes)));
            for acc in acc.iter_mut() {
                for q in 0..V {
                    acc[q] = simd.max_f32s(simd.add_f32s(acc[q], bias[q]), zero);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (q, &v) in acc.iter().enumerate() {
                core::ptr::write_unaligned(out(r, q) as *mut S::f32s, v);
            }
        }
    }
}

impl Product<'_> {
    /// gemm for shapes the blocks do not tile.
    fn with_gemm(self) {
        let (m, n, k) = (self.m, self.n, self.k);
        // SAFETY: `run` checked that row i of dst spans [i·dst_rs, i·dst_rs + n) and row i of a
        // spans [i·a_rs, i·a_rs + k) within their slices (i < m), and b holds k·n values;
        // dst does not alias a or b (&mut).
        unsafe {
            gemm(
                m,
                n,
                k,
                self.dst.as_mut_ptr(),
                1,
                self.dst_rs as isize,
                self.accumulate,
                self.a.as_ptr(),
                1,
                self.a_rs as isize,
                self.b.as_ptr(),
                1,
                n as isize,
                if self.accumulate { 1.0 } else { 0.0 },
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
        if let Some(bias) = self.bias_relu {
            for i in 0..m {
                let row = &mut self.dst[i * self.dst_rs..][..n];
                for (o, &b) in row.iter_mut().zip(bias) {
                    *o = (*o + b).max(0.0);
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Reproducible values in [−0.5, 0.5) (a linear congruential sequence): the CPU path's test
    /// inputs and weights.
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Natively the kernels run on the widest instruction set the CPU has: AVX-512 where it
    /// has it, else AVX2 with FMA, and pulp's scalar fallback only where neither exists. pulp
    /// dispatches to the levels its features name, and with `x86-v4` alone an AVX2 CPU fell
    /// back to scalar code (the network 6× slower than the ONNX peer on an AMD Zen 3); this
    /// fails on such a CPU if `x86-v3` goes missing from Cargo.toml again.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn pulp_dispatches_to_the_widest_instruction_set() {
        use pulp::x86::{V3, V4};
        let arch = pulp::Arch::new();
        if V4::try_new().is_some() {
            assert!(
                matches!(arch, pulp::Arch::V4(_)),
                "AVX-512 CPU, pulp chose {arch:?}"
            );
        } else if V3::try_new().is_some() {
            assert!(
                matches!(arch, pulp::Arch::V3(_)),
                "AVX2 + FMA CPU, pulp chose {arch:?}"
            );
        } else {
            assert!(matches!(arch, pulp::Arch::Scalar), "pulp chose {arch:?}");
        }
    }

    /// The same product, summed in the obvious order.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        dst: &[f32],
        dst_rs: usize,
        a: &[f32],
        a_rs: usize,
        b: &[f32],
        (m, n, k): (usize, usize, usize),
        accumulate: bool,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let mut out = dst.to_vec();
        for i in 0..m {
            for j in 0..n {
                let mut v = if accumulate { dst[i * dst_rs + j] } else { 0.0 };
                for kk in 0..k {
                    v += a[i * a_rs + kk] * b[kk * n + j];
                }
                if let Some(bias) = bias {
                    v = (v + bias[j]).max(0.0);
                }
                out[i * dst_rs + j] = v;
            }
        }
        out
    }

    /// Every instruction set this machine has (the portable one always), every block shape and
    /// remainder (rows not a multiple of the block, outputs of one to six vectors, widths the
    /// blocks cannot tile), strided rows, accumulation and the fused bias + ReLU agree with the
    /// obvious sum; rows between the strided ones are left alone.
    #[test]
    fn products_match_the_obvious_sum_on_every_instruction_set() {
        let shapes = [
            (13, 64, 16),
            (7, 96, 32),
            (5, 48, 96),
            (3, 16, 27),
            (9, 128, 5),
            (1, 20, 3),
            (25, 32, 64),
            (11, 256, 7),
            (53, 16, 32),
            (31, 32, 16),
            (29, 48, 24),
            (47, 8, 16),
            (19, 24, 8),
        ];
        let mut checked = 0;
        for (s, &(m, n, k)) in shapes.iter().enumerate() {
            for (variant, (accumulate, with_bias, pad)) in [
                (false, false, 0),
                (true, false, 3),
                (false, true, 5),
                (true, true, 0),
            ]
            .into_iter()
            .enumerate()
            {
                let seed = (s * 4 + variant) as u32;
                let (dst_rs, a_rs) = (n + pad, k + 2 * pad);
                let dst0 = values(m * dst_rs, seed);
                let a = values(m * a_rs, seed + 100);
                let b = values(k * n, seed + 200);
                let bias = values(n, seed + 300);
                let bias = with_bias.then_some(&bias[..]);
                let want = reference(&dst0, dst_rs, &a, a_rs, &b, (m, n, k), accumulate, bias);
                let run = |simd: &dyn Fn(Product)| {
                    let mut dst = dst0.clone();
                    simd(Product {
                        dst: &mut dst,
                        dst_rs,
                        a: &a,
                        a_rs,
                        b: &b,
                        m,
                        n,
                        k,
                        accumulate,
                        bias_relu: bias,
                    });
                    dst
                };
                let mut got = vec![("dispatched", run(&|p| p.run().unwrap()))];
                got.push(("scalar", run(&|p| pulp::Scalar::new().vectorize(p))));
                #[cfg(target_arch = "x86_64")]
                {
                    if let Some(v3) = pulp::x86::V3::try_new() {
                        got.push(("AVX2", run(&|p| v3.vectorize(|| p.with_simd(v3)))));
                    }
                    if let Some(v4) = pulp::x86::V4::try_new() {
                        got.push(("AVX-512", run(&|p| v4.vectorize(|| p.with_simd(v4)))));
                    }
                }
                for (name, got) in got {
                    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{name} {m}×{n}×{k} (accumulate {accumulate}, bias {with_bias}, \
                             pad {pad}) value {i}: {g} vs {w}"
                        );
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked >= 2 * shapes.len() * 4);
    }

    /// Operands shorter than the shape are an error naming the shape, never a read or write out
    /// of bounds (gemm's pointers) or a panic.
    #[test]
    fn operands_shorter_than_the_shape_are_an_error() {
        let (a, b) = (vec![0f32; 4 * 8], vec![0f32; 8 * 16]);
        let mut dst = vec![0f32; 4 * 16 - 1];
        let err = Product {
            dst: &mut dst,
            dst_rs: 16,
            a: &a,
            a_rs: 8,
            b: &b,
            m: 4,
            n: 16,
            k: 8,
            accumulate: false,
            bias_relu: None,
        }
        .run()
        .unwrap_err();
        assert!(err.to_string().contains("4×8 · 8×16"), "{err}");
    }
}
