//! Dense inference on the CPU straight on matrix kernels ([`super::kernel`], gemm), for the flex
//! device (natively and in the page's CPU path).
//!
//! Why not burn's ops: flex runs each op as its own pass over memory — every convolution
//! converts its input to channels-last and back, bias and ReLU are further passes, every op
//! allocates its output — and parallelises inside each op, so two cores synchronise dozens of
//! times per slice. Here one slice goes through the whole network channels-last on one thread:
//! each 3×3 convolution with 8 or more input channels runs as Winograd F(4×4, 3×3) or
//! F(2×2, 3×3) (4× or 2.25× fewer multiplications, the tile chosen per map), the first one as
//! an im2col of a band of rows and one matrix product, with bias and ReLU applied while the
//! outputs are still in cache; the head works band by band too, so the
//! full-resolution hidden layer (96 channels) never exists as a whole. Natively the slices of a
//! batch run on rayon's threads; on wasm they run in order.
//!
//! The arithmetic is the network's (batch norms folded, [`super::bilinear`] upsampling); only the
//! summation order (and Winograd's exact rearrangement of the sums) differs from burn's, so the
//! two agree to float rounding (`tests/model.rs`).

use std::ops::{Add, Mul, Sub};

use pulp::Simd;

use super::kernel::Product;

use super::bilinear;
use crate::error::{Result, try_filled};

/// Pixels per im2col band: the band's patch matrix (≤ 576 values per pixel) stays within L2.
const BAND_PIXELS: usize = 384;

/// Input channels from which a convolution runs as Winograd rather than im2col.
/// Below it the 16 products of the transformed tiles are too thin (`k` = channels) to pay for
/// the transforms; the first convolution (3 input planes) stays im2col.
const WINOGRAD_MIN_CIN: usize = 8;

/// Transformed tiles per Winograd chunk, scaled so one chunk's tiles (16 × tiles × channels, in
/// and out) stay within L2 while the 16 products stay tall enough for gemm's kernels.
const WINOGRAD_CHUNK_VALUES: usize = 16_384;

/// A 3×3 convolution (batch norm folded in) followed by ReLU.
#[derive(Debug, Clone)]
pub(crate) struct Conv3 {
    cin: usize,
    cout: usize,
    dilation: usize,
    /// `[9·cin, cout]`, row `(ky·3 + kx)·cin + ci`.
    w: Vec<f32>,
    b: Vec<f32>,
    /// Winograd weights `G g Gᵀ` of both tile sizes: `T²` matrices `[cin, cout]`, element
    /// `e = T·row + col` of the `T×T` transformed kernel; `None` below [`WINOGRAD_MIN_CIN`] input
    /// channels.
    wino: Option<Wino>,
}

/// A convolution's kernels transformed for both Winograd tile sizes; [`conv3`] picks one per
/// feature map (the larger tile wastes more at the edges of small maps).
#[derive(Debug, Clone)]
struct Wino {
    f2: Vec<f32>,
    f4: Vec<f32>,
}

impl Conv3 {
    /// `w` is `[9·cin, cout]` (row `(ky·3 + kx)·cin + ci`), `b` is `[cout]`.
    pub fn new(cin: usize, cout: usize, dilation: usize, w: Vec<f32>, b: Vec<f32>) -> Self {
        let wino = (cin >= WINOGRAD_MIN_CIN).then(|| Wino {
            f2: winograd_weights::<F2>(&w, cin, cout),
            f4: winograd_weights::<F4>(&w, cin, cout),
        });
        Self {
            cin,
            cout,
            dilation,
            w,
            b,
            wino,
        }
    }
}

/// `U = G g Gᵀ` for every (input, output) channel pair, with the tile's `G` (`T × 3`).
fn winograd_weights<W: Tile>(w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    let t = W::T;
    let mut u = vec![0f32; t * t * cin * cout];
    for ci in 0..cin {
        for co in 0..cout {
            let g = |ky: usize, kx: usize| f64::from(w[((ky * 3 + kx) * cin + ci) * cout + co]);
            for r in 0..t {
                for c in 0..t {
                    let mut v = 0f64;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            v += W::G[r][ky] * g(ky, kx) * W::G[c][kx];
                        }
                    }
                    u[((r * t + c) * cin + ci) * cout + co] = v as f32;
                }
            }
        }
    }
    u
}

/// A Winograd tile F(M×M, 3×3): `T = M + 2` inputs a side, `M` outputs.
///
/// The transforms are applied line by line to whole channel vectors (`n` values each), once
/// down the columns and once along the rows; the arithmetic of each line is written out once
/// with its shared terms ([`Transform`]) and runs on pulp's vectors along the channels.
trait Tile {
    const M: usize;
    const T: usize;
    /// The kernel transform, `T × 3` (in f64: the weights are transformed once).
    const G: &'static [[f64; 3]];
    /// `o` (`T` rows of `n`) = `Bᵀ · d` for one line `d` of `T` inputs.
    fn input_line<S: Simd>(simd: S, o: &mut [f32], d: &[&[f32]], n: usize);
    /// `o` (`M` rows of `n`) = `Aᵀ · d` for one line `d` of `T` products.
    fn output_line<S: Simd>(simd: S, o: &mut [f32], d: &[&[f32]], n: usize);
}

/// The first `N` rows of `n` values of `o`, apart (every row is `n` long, so the transform
/// loops index them without bounds checks; callers pass at least `N·n` values).
#[inline(always)]
fn rows_mut<const N: usize>(o: &mut [f32], n: usize) -> [&mut [f32]; N] {
    let mut it = o.chunks_exact_mut(n.max(1));
    std::array::from_fn(|_| it.next().unwrap_or_default())
}

/// What the Winograd transforms compute with: `f32` for the channels left over, a vector of
/// the CPU's widest kind for the rest. A transform is written once, generic over this.
trait Lane: Copy + Add<Output = Self> + Sub<Output = Self> + Mul<f32, Output = Self> {}
impl Lane for f32 {}
impl<S: Simd> Lane for Vx<S> {}

/// One of pulp's vectors with its instruction set, so that the transforms' arithmetic can be
/// written with operators.
#[derive(Clone, Copy)]
struct Vx<S: Simd>(S, S::f32s);

impl<S: Simd> Add for Vx<S> {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Vx(self.0, self.0.add_f32s(self.1, o.1))
    }
}

impl<S: Simd> Sub for Vx<S> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Vx(self.0, self.0.sub_f32s(self.1, o.1))
    }
}

impl<S: Simd> Mul<f32> for Vx<S> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, c: f32) -> Self {
        Vx(self.0, self.0.mul_f32s(self.1, self.0.splat_f32s(c)))
    }
}

/// One channel's (or one vector of channels') values along a transform line.
trait Line<X> {
    fn at(&self, j: usize) -> X;

    /// The first four values (an F(2×2) line).
    #[inline(always)]
    fn four(&self) -> (X, X, X, X) {
        (self.at(0), self.at(1), self.at(2), self.at(3))
    }

    /// The first six values (an F(4×4) line).
    #[inline(always)]
    fn six(&self) -> (X, X, X, X, X, X) {
        (
            self.at(0),
            self.at(1),
            self.at(2),
            self.at(3),
            self.at(4),
            self.at(5),
        )
    }
}

/// Vector `i` of each line's channels.
struct Vectors<'a, S: Simd, const N: usize> {
    simd: S,
    ins: &'a [(&'a [S::f32s], &'a [f32]); N],
    i: usize,
}

impl<S: Simd, const N: usize> Line<Vx<S>> for Vectors<'_, S, N> {
    #[inline(always)]
    fn at(&self, j: usize) -> Vx<S> {
        Vx(self.simd, self.ins[j].0[self.i])
    }
}

/// Channel `t` of each line's channels left over after the whole vectors.
struct Rest<'a, S: Simd, const N: usize> {
    ins: &'a [(&'a [S::f32s], &'a [f32]); N],
    t: usize,
}

impl<S: Simd, const N: usize> Line<f32> for Rest<'_, S, N> {
    #[inline(always)]
    fn at(&self, j: usize) -> f32 {
        self.ins[j].1[self.t]
    }
}

/// One line transform of a Winograd tile: a channel's `NO` outputs from its `NI` inputs.
trait Transform<const NI: usize, const NO: usize> {
    fn apply<X: Lane>(d: &impl Line<X>) -> [X; NO];
}

/// `o`'s `NO` rows of `n` channels from `d`'s first `NI` lines by `T`, on whole vectors of
/// channels and then on the channels left over. (No closures here: pulp's operations inline
/// only into functions that are themselves inlined into its dispatch, and a closure may not be.)
///
/// Why explicit vectors: written as one loop over the channels that reads the input rows and
/// writes the output rows, the transforms compiled to scalar code (`vmulss`/`vaddss` were the
/// hottest instructions of the network in `perf`): with up to twelve slices that might
/// overlap, LLVM did not vectorise. Copying blocks of channels into local arrays first went
/// through the stack and was slower still. On pulp's vectors the clinical grid's network ran
/// in 0.26 s against 0.30 s (AVX-512, alternating runs, 2026-12-02).
#[inline(always)]
fn map_lines<S: Simd, T: Transform<NI, NO>, const NI: usize, const NO: usize>(
    simd: S,
    o: &mut [f32],
    d: &[&[f32]],
    n: usize,
) {
    let ins: [(&[S::f32s], &[f32]); NI] = std::array::from_fn(|j| S::as_simd_f32s(&d[j][..n]));
    let mut outs = rows_mut::<NO>(o, n).map(|o| S::as_mut_simd_f32s(o));
    for i in 0..n / S::F32_LANES {
        let r = T::apply(&Vectors { simd, ins: &ins, i });
        for (o, r) in outs.iter_mut().zip(r) {
            o.0[i] = r.1;
        }
    }
    for t in 0..n % S::F32_LANES {
        let r = T::apply(&Rest::<S, NI> { ins: &ins, t });
        for (o, r) in outs.iter_mut().zip(r) {
            o.1[t] = r;
        }
    }
}

/// F(2×2, 3×3): 16 products per 4 outputs (2.25× fewer multiplications than direct).
struct F2;

/// F(4×4, 3×3): 36 products per 16 outputs (4× fewer), with heavier transforms and a tile
/// that overhangs small maps more.
struct F4;

impl Tile for F2 {
    const M: usize = 2;
    const T: usize = 4;
    const G: &'static [[f64; 3]] = &[
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];

    #[inline(always)]
    fn input_line<S: Simd>(simd: S, o: &mut [f32], d: &[&[f32]], n: usize) {
        struct Bt;
        impl Transform<4, 4> for Bt {
            #[inline(always)]
            fn apply<X: Lane>(d: &impl Line<X>) -> [X; 4] {
                let (d0, d1, d2, d3) = d.four();
                [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
            }
        }
        map_lines::<S, Bt, 4, 4>(simd, o, d, n);
    }

    #[inline(always)]
    fn output_line<S: Simd>(simd: S, o: &mut [f32], d: &[&[f32]], n: usize) {
        struct At;
        impl Transform<4, 2> for At {
            #[inline(always)]
            fn apply<X: Lane>(d: &impl Line<X>) -> [X; 2] {
                let (d0, d1, d2, d3) = d.four();
                [d0 + d1 + d2, d1 - d2 - d3]
            }
        }
        map_lines::<S, At, 4, 2>(simd, o, d, n);
    }
}

impl Tile for F4 {
    const M: usize = 4;
    const T: usize = 6;
    const G: &'static [[f64; 3]] = &[
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];

    #[inline(always)]
    fn input_line<S: Simd>(simd: S, o: &mut [f32], d: &[&[f32]], n: usize) {
        struct Bt;
        impl Transform<6, 6> for Bt {
            #[inline(always)]
            fn apply<X: Lane>(d: &impl Line<X>) -> [X; 6] {
                let (d0, d1, d2, d3, d4, d5) = d.six();
                let a = d4 - d2 * 4.0;
                let b = d3 - d1 * 4.0;
                let c = d4 - d2;
                let e = (d3 - d1) * 2.0;
                [
                    d0 * 4.0 - d2 * 5.0 + d4,
                    a + b,
                    a - b,
                    c + e,
                    c - e,
                    d1 * 4.0 - d3 * 5.0 + d5,
                ]
            }
        }
        map_lines::<S, Bt, 6, 6>(simd, o, d, n);
    }

    #[inline(always)]
    fn output_line<S: Simd>(simd: S, o: &mut [f32], d: &[&[f32]], n: usize) {
        struct At;
        impl Transform<6, 4> for At {
            #[inline(always)]
            fn apply<X: Lane>(d: &impl Line<X>) -> [X; 4] {
                let (d0, d1, d2, d3, d4, d5) = d.six();
                let a = d1 + d2;
                let b = d1 - d2;
                let c = d3 + d4;
                let e = d3 - d4;
                [d0 + a + c, b + e * 2.0, a + c * 4.0, b + e * 8.0 + d5]
            }
        }
        map_lines::<S, At, 6, 4>(simd, o, d, n);
    }
}

/// One trunk block: optional 2×2 max-pool, then its convolutions.
#[derive(Debug, Clone)]
pub(crate) struct Stage {
    pub pool: bool,
    pub convs: Vec<Conv3>,
}

/// The blocks sharing one downsampling factor and their rows of the first MLP layer.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub factor: usize,
    /// Block indices (consecutive).
    pub blocks: std::ops::Range<usize>,
    /// `[Σ widths, hidden]`.
    pub w: Vec<f32>,
}

/// A linear layer applied per pixel: `[cin, cout]` weights and a bias.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    pub cin: usize,
    pub cout: usize,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

/// The inference network as plain arrays.
#[derive(Debug, Clone)]
pub(crate) struct CpuNet {
    pub in_channels: usize,
    pub stages: Vec<Stage>,
    pub groups: Vec<Group>,
    pub hidden: usize,
    /// Bias of the first MLP layer.
    pub b0: Vec<f32>,
    /// The MLP's further hidden layers (ReLU after each).
    pub mlp: Vec<Dense>,
    /// The output layer (one logit).
    pub out: Dense,
}

/// A channels-last feature map.
struct Map {
    h: usize,
    w: usize,
    c: usize,
    v: Vec<f32>,
}

impl CpuNet {
    /// Logits `[n, h, w]` of `n` slices `x` (`[n, in_channels, h, w]`, channels first).
    pub fn logits(&self, x: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        let plane = self.in_channels * h * w;
        let mut out = try_filled(n * h * w, 0f32, "the network output")?;
        if n == 0 || h == 0 || w == 0 {
            return Ok(out);
        }
        let run = |i: usize, o: &mut [f32]| self.slice(&x[i * plane..(i + 1) * plane], h, w, o);
        #[cfg(not(target_arch = "wasm32"))]
        {
            use rayon::prelude::*;
            out.par_chunks_mut(h * w)
                .enumerate()
                .map(|(i, o)| run(i, o))
                .collect::<Result<()>>()?;
        }
        #[cfg(target_arch = "wasm32")]
        {
            for (i, o) in out.chunks_mut(h * w).enumerate() {
                run(i, o)?;
            }
        }
        Ok(out)
    }

    /// One slice (`[in_channels, h, w]`) to its logits (`[h, w]`).
    ///
    /// Everything below is inlined into one function per instruction set pulp dispatches to at
    /// run time, so the loops here (Winograd transforms, upsampling, pooling) vectorise with
    /// AVX2 or AVX-512 where the CPU has them: a portable build otherwise targets the x86-64
    /// baseline (SSE2). gemm dispatches its own kernels.
    fn slice(&self, x: &[f32], h: usize, w: usize, out: &mut [f32]) -> Result<()> {
        struct Op<'a> {
            net: &'a CpuNet,
            x: &'a [f32],
            h: usize,
            w: usize,
            out: &'a mut [f32],
        }
        impl pulp::WithSimd for Op<'_> {
            type Output = Result<()>;
            #[inline(always)]
            fn with_simd<S: Simd>(self, simd: S) -> Result<()> {
                self.net
                    .slice_inline(simd, self.x, self.h, self.w, self.out)
            }
        }
        pulp::Arch::new().dispatch(Op {
            net: self,
            x,
            h,
            w,
            out,
        })
    }

    #[inline(always)]
    fn slice_inline<S: Simd>(
        &self,
        simd: S,
        x: &[f32],
        h: usize,
        w: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let c0 = self.in_channels;
        let mut input = try_filled(h * w * c0, 0f32, "a slice of network input")?;
        for (p, px) in input.chunks_exact_mut(c0).enumerate() {
            for (c, v) in px.iter_mut().enumerate() {
                *v = x[c * h * w + p];
            }
        }
        let input = Map {
            h,
            w,
            c: c0,
            v: input,
        };
        let mut scratch = Vec::new();
        let mut taps: Vec<Map> = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            let src = taps.last().unwrap_or(&input);
            let pooled = if stage.pool {
                Some(max_pool(src)?)
            } else {
                None
            };
            let mut x: Option<Map> = None;
            for conv in &stage.convs {
                let from = x.as_ref().or(pooled.as_ref()).unwrap_or(src);
                x = Some(conv3(simd, from, conv, &mut scratch)?);
            }
            // A block without convolutions passes its (pooled) input on as its tap.
            let tap = match (x, pooled) {
                (Some(x), _) => x,
                (None, Some(p)) => p,
                (None, None) => copy(src)?,
            };
            taps.push(tap);
        }
        drop(scratch);
        self.head(&taps, h, w, out)
    }

    /// The MLP over the hypercolumn, band of rows by band of rows.
    #[inline(always)]
    fn head(&self, taps: &[Map], h: usize, w: usize, out: &mut [f32]) -> Result<()> {
        let hid = self.hidden;
        // Low-resolution groups: project once per slice at their own resolution.
        let mut low = Vec::with_capacity(self.groups.len());
        for g in self.groups.iter().filter(|g| g.factor > 1) {
            let first = &taps[g.blocks.start];
            let mut p = try_filled(first.h * first.w * hid, 0f32, "a hypercolumn projection")?;
            project(taps, g, 0..first.h, &mut p, hid, true)?;
            let ys: Vec<_> = (0..h)
                .map(|y| bilinear::tap(y, g.factor, first.h))
                .collect();
            let xs: Vec<_> = (0..w)
                .map(|x| bilinear::tap(x, g.factor, first.w))
                .collect();
            low.push((p, first.w, ys, xs));
        }
        let band_rows = (BAND_PIXELS * 8 / w).clamp(1, h);
        let max_w = self.mlp.iter().map(|l| l.cout).max().unwrap_or(0).max(1);
        let mut z = try_filled(band_rows * w * hid, 0f32, "the hidden layer")?;
        let mut buf_a = try_filled(band_rows * w * max_w, 0f32, "the hidden layer")?;
        let mut buf_b = try_filled(band_rows * w * max_w, 0f32, "the hidden layer")?;
        for y0 in (0..h).step_by(band_rows) {
            let rows = band_rows.min(h - y0);
            let m = rows * w;
            let z = &mut z[..m * hid];
            // Full-resolution groups: a product straight into the band (the first one
            // overwrites what the previous band left).
            let mut fresh = true;
            for g in self.groups.iter().filter(|g| g.factor == 1) {
                project(taps, g, y0..y0 + rows, z, hid, fresh)?;
                fresh = false;
            }
            if fresh {
                z.fill(0.0);
            }
            // Low-resolution groups: bilinear from their projection.
            for (p, pw, ys, xs) in &low {
                for r in 0..rows {
                    let ty = ys[y0 + r];
                    let r0 = &p[ty.i0 * pw * hid..(ty.i0 + 1) * pw * hid];
                    let r1 = &p[ty.i1 * pw * hid..(ty.i1 + 1) * pw * hid];
                    for (xi, tx) in xs.iter().enumerate() {
                        let w00 = (1.0 - ty.frac) * (1.0 - tx.frac);
                        let w01 = (1.0 - ty.frac) * tx.frac;
                        let w10 = ty.frac * (1.0 - tx.frac);
                        let w11 = ty.frac * tx.frac;
                        let dst = &mut z[(r * w + xi) * hid..(r * w + xi + 1) * hid];
                        let s00 = &r0[tx.i0 * hid..(tx.i0 + 1) * hid];
                        let s01 = &r0[tx.i1 * hid..(tx.i1 + 1) * hid];
                        let s10 = &r1[tx.i0 * hid..(tx.i0 + 1) * hid];
                        let s11 = &r1[tx.i1 * hid..(tx.i1 + 1) * hid];
                        for k in 0..hid {
                            dst[k] += w00 * s00[k] + w01 * s01[k] + w10 * s10[k] + w11 * s11[k];
                        }
                    }
                }
            }
            bias_relu(z, &self.b0);
            let mut cur_c = hid;
            let mut from_z = true;
            for l in &self.mlp {
                // (`l.cin == cur_c`: checked when the network was built)
                let input: &[f32] = if from_z { &z[..] } else { &buf_a[..m * cur_c] };
                matmul(
                    &mut buf_b[..m * l.cout],
                    input,
                    &l.w,
                    m,
                    l.cout,
                    l.cin,
                    false,
                    Some(&l.b),
                )?;
                std::mem::swap(&mut buf_a, &mut buf_b);
                from_z = false;
                cur_c = l.cout;
            }
            let cur: &[f32] = if from_z { &z[..] } else { &buf_a[..m * cur_c] };
            let o = &self.out;
            for (px, dst) in cur.chunks_exact(cur_c).zip(&mut out[y0 * w..y0 * w + m]) {
                *dst = dot(px, &o.w) + o.b[0];
            }
        }
        Ok(())
    }
}

/// Rows `rows` of a group's projection: `Σ_blocks tap · W_block` into `dst` (`[rows·w, hid]`),
/// added to what `dst` holds unless `overwrite`.
#[inline(always)]
fn project(
    taps: &[Map],
    g: &Group,
    rows: std::ops::Range<usize>,
    dst: &mut [f32],
    hid: usize,
    overwrite: bool,
) -> Result<()> {
    let mut row0 = 0;
    for (i, t) in taps[g.blocks.clone()].iter().enumerate() {
        let m = rows.len() * t.w;
        let a = &t.v[rows.start * t.w * t.c..rows.end * t.w * t.c];
        matmul(
            dst,
            a,
            &g.w[row0 * hid..(row0 + t.c) * hid],
            m,
            hid,
            t.c,
            !(overwrite && i == 0),
            None,
        )?;
        row0 += t.c;
    }
    Ok(())
}

/// A 3×3 dilated convolution with zero padding (same size), bias and ReLU.
#[inline(always)]
fn conv3<S: Simd>(simd: S, x: &Map, conv: &Conv3, scratch: &mut Vec<f32>) -> Result<Map> {
    if let Some(u) = &conv.wino {
        return if use_f4(x.h, x.w, conv.dilation) {
            conv3_winograd::<S, F4>(simd, x, conv, &u.f4, scratch)
        } else {
            conv3_winograd::<S, F2>(simd, x, conv, &u.f2, scratch)
        };
    }
    let (h, w, cin, cout, d) = (x.h, x.w, conv.cin, conv.cout, conv.dilation as isize);
    let k = 9 * cin;
    let band = (BAND_PIXELS / w).clamp(1, h.max(1));
    if scratch.len() < band * w * k {
        *scratch = try_filled(band * w * k, 0f32, "a convolution's patch matrix")?;
    }
    let mut out = try_filled(h * w * cout, 0f32, "a feature map")?;
    for y0 in (0..h).step_by(band) {
        let rows = band.min(h - y0);
        let m = rows * w;
        let col = &mut scratch[..m * k];
        for r in 0..rows {
            let y = (y0 + r) as isize;
            for ky in 0..3isize {
                let iy = y + (ky - 1) * d;
                let inside_y = iy >= 0 && iy < h as isize;
                for kx in 0..3isize {
                    let off = ((ky * 3 + kx) as usize) * cin;
                    let dx = (kx - 1) * d;
                    for xo in 0..w {
                        let seg = &mut col[(r * w + xo) * k + off..][..cin];
                        let ix = xo as isize + dx;
                        if inside_y && ix >= 0 && ix < w as isize {
                            let s = (iy as usize * w + ix as usize) * cin;
                            seg.copy_from_slice(&x.v[s..s + cin]);
                        } else {
                            seg.fill(0.0);
                        }
                    }
                }
            }
        }
        let dst = &mut out[y0 * w * cout..(y0 + rows) * w * cout];
        matmul(dst, col, &conv.w, m, cout, k, false, Some(&conv.b))?;
    }
    Ok(Map {
        h,
        w,
        c: cout,
        v: out,
    })
}

/// The `n` (≤ 6) channel vectors of one transform line, `f(j)` for `j < n`.
#[inline(always)]
fn lines<'a>(f: impl Fn(usize) -> &'a [f32], n: usize) -> [&'a [f32]; 6] {
    std::array::from_fn(|j| if j < n { f(j) } else { &[] })
}

/// Whether a map of `h × w` convolved at dilation `d` runs as F(4×4) rather than F(2×2).
///
/// A tile covers `M` outputs `d` apart along each axis of each of the `d` interleaved
/// sub-grids, so a sub-grid of `s = ⌈n/d⌉` outputs takes `⌈s/M⌉` tiles: the larger tile pays
/// when its overhang stays small. The cost of a tile is taken as its `T²` products, with a
/// quarter more for F(4×4)'s heavier transforms (an estimate, not fitted: on the clinical grid,
/// 192×152, this picks F(4×4) for every Winograd layer, which ran the network in 0.57–0.58 s
/// against 0.72 s with F(2×2) everywhere, AVX2).
#[inline(always)]
fn use_f4(h: usize, w: usize, d: usize) -> bool {
    let tiles = |n: usize, m: usize| {
        let s = n.div_ceil(d);
        d * s.div_ceil(m)
    };
    let f2 = (tiles(h, 2) * tiles(w, 2) * 16) as f64;
    let f4 = (tiles(h, 4) * tiles(w, 4) * 36) as f64 * 1.25;
    f4 < f2
}

/// [`conv3`] as Winograd F(M×M, 3×3) ([`Tile`]): fewer multiplications than the direct product
/// (2.25× for F(2×2), 4× for F(4×4)), and no im2col copy.
///
/// Written here because gemm has no convolution and burn-flex's (im2col) is what this module
/// replaces. A dilated convolution is an ordinary one on each of the `d × d` interleaved
/// sub-grids, so a tile's `M×M` outputs are `d` apart and its `T×T` inputs too: tile origins
/// run over `d` consecutive rows (and columns) in every block of `M·d`, which covers each
/// output exactly once. Channels-last, the transforms work on whole channel vectors; a chunk of
/// tiles is laid out `[tile][element][channel]`, so the `T²` products read and write it with a
/// row stride of `T²` channel vectors.
#[inline(always)]
fn conv3_winograd<S: Simd, W: Tile>(
    simd: S,
    x: &Map,
    conv: &Conv3,
    u: &[f32],
    scratch: &mut Vec<f32>,
) -> Result<Map> {
    let (h, w, cin, cout, d) = (x.h, x.w, conv.cin, conv.cout, conv.dilation);
    let (mt, tt) = (W::M, W::T);
    let els = tt * tt;
    let origins = |n: usize| -> Vec<usize> {
        (0..n)
            .step_by(mt * d)
            .flat_map(|b| (b..b + d).filter(|&o| o < n))
            .collect()
    };
    let (ys, xs) = (origins(h), origins(w));
    let per_chunk = (WINOGRAD_CHUNK_VALUES * 16 / els / cin.max(cout)).max(16);
    let wide = cin.max(cout);
    let need = per_chunk * els * (cin + cout) + els * wide + mt * mt * cout + cin;
    if scratch.len() < need {
        *scratch = try_filled(need, 0f32, "a convolution's transformed tiles")?;
    }
    let mut out = try_filled(h * w * cout, 0f32, "a feature map")?;
    let (v, rest) = scratch.split_at_mut(per_chunk * els * cin);
    let (m, rest) = rest.split_at_mut(per_chunk * els * cout);
    let (tmp, rest) = rest.split_at_mut(els * wide);
    let (res, zero) = rest.split_at_mut(mt * mt * cout);
    let zero = &mut zero[..cin];
    zero.fill(0.0);
    let zero = &*zero;
    let tiles: Vec<(usize, usize)> = ys
        .iter()
        .flat_map(|&y| xs.iter().map(move |&x| (y, x)))
        .collect();
    let (di, wi, hi) = (d as isize, w as isize, h as isize);
    let bias = &conv.b[..cout];
    for chunk in tiles.chunks(per_chunk) {
        let t = chunk.len();
        for (i, &(y, xo)) in chunk.iter().enumerate() {
            let mut src: [&[f32]; 36] = [zero; 36];
            for (e, s) in src[..els].iter_mut().enumerate() {
                let iy = y as isize + ((e / tt) as isize - 1) * di;
                let ix = xo as isize + ((e % tt) as isize - 1) * di;
                if iy >= 0 && iy < hi && ix >= 0 && ix < wi {
                    let at = (iy as usize * w + ix as usize) * cin;
                    *s = &x.v[at..at + cin];
                }
            }
            // Bᵀ down each column c into tmp's block c (row r at c·T + r); then along each
            // row r of that, · B, into the tile's block r (element r·T + c).
            for c in 0..tt {
                let line = lines(|j| src[j * tt + c], tt);
                W::input_line(
                    simd,
                    &mut tmp[c * tt * cin..(c + 1) * tt * cin],
                    &line[..tt],
                    cin,
                );
            }
            let blk = &mut v[i * els * cin..(i + 1) * els * cin];
            for (r, o) in blk.chunks_exact_mut(tt * cin).enumerate() {
                let tmp = &*tmp;
                let line = lines(|j| &tmp[(j * tt + r) * cin..][..cin], tt);
                W::input_line(simd, o, &line[..tt], cin);
            }
        }
        for e in 0..els {
            matmul_strided(
                &mut m[e * cout..],
                els * cout,
                &v[e * cin..],
                els * cin,
                &u[e * cin * cout..(e + 1) * cin * cout],
                t,
                cout,
                cin,
            )?;
        }
        for (i, &(y, xo)) in chunk.iter().enumerate() {
            let blk = &m[i * els * cout..(i + 1) * els * cout];
            // Aᵀ down each column c into tmp's block c (row q at c·M + q); then along each
            // row q, · A, into res (output q·M + p).
            for c in 0..tt {
                let line = lines(|j| &blk[(j * tt + c) * cout..][..cout], tt);
                W::output_line(
                    simd,
                    &mut tmp[c * mt * cout..(c + 1) * mt * cout],
                    &line[..tt],
                    cout,
                );
            }
            for (q, o) in res.chunks_exact_mut(mt * cout).enumerate() {
                let tmp = &*tmp;
                let line = lines(|j| &tmp[(j * mt + q) * cout..][..cout], tt);
                W::output_line(simd, o, &line[..tt], cout);
            }
            for (q, row) in res.chunks_exact(mt * cout).enumerate() {
                let oy = y + q * d;
                if oy >= h {
                    break;
                }
                for (p, r) in row.chunks_exact(cout).enumerate() {
                    let ox = xo + p * d;
                    if ox >= w {
                        break;
                    }
                    let at = (oy * w + ox) * cout;
                    let dst = &mut out[at..at + cout];
                    for k in 0..cout {
                        dst[k] = (r[k] + bias[k]).max(0.0);
                    }
                }
            }
        }
    }
    Ok(Map {
        h,
        w,
        c: cout,
        v: out,
    })
}

/// Partial sums of [`dot`]: a fixed width LLVM turns into vector instructions on every target
/// (AVX natively, simd128 in wasm).
const LANES: usize = 8;

/// 2×2 max-pool (sizes are multiples of 2: the grid's size multiple guarantees it).
#[inline(always)]
fn max_pool(x: &Map) -> Result<Map> {
    let (h, w, c) = (x.h / 2, x.w / 2, x.c);
    let mut v = try_filled(h * w * c, 0f32, "a pooled feature map")?;
    for y in 0..h {
        for xo in 0..w {
            let dst = &mut v[(y * w + xo) * c..(y * w + xo + 1) * c];
            let at = |yy: usize, xx: usize| &x.v[(yy * x.w + xx) * c..(yy * x.w + xx + 1) * c];
            let (a, b, e, f) = (
                at(2 * y, 2 * xo),
                at(2 * y, 2 * xo + 1),
                at(2 * y + 1, 2 * xo),
                at(2 * y + 1, 2 * xo + 1),
            );
            for k in 0..c {
                dst[k] = a[k].max(b[k]).max(e[k].max(f[k]));
            }
        }
    }
    Ok(Map { h, w, c, v })
}

#[inline(always)]
fn copy(x: &Map) -> Result<Map> {
    let mut v = try_filled(x.v.len(), 0f32, "a feature map")?;
    v.copy_from_slice(&x.v);
    Ok(Map {
        h: x.h,
        w: x.w,
        c: x.c,
        v,
    })
}

/// `a · b` summed in [`LANES`] partial sums (a sequential sum would not vectorise).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `v = max(v + b, 0)` per pixel row of `b.len()` channels.
#[inline(always)]
fn bias_relu(v: &mut [f32], b: &[f32]) {
    for px in v.chunks_exact_mut(b.len()) {
        for (o, &bb) in px.iter_mut().zip(b) {
            *o = (*o + bb).max(0.0);
        }
    }
}

/// `dst[m, n] = a[m, k] · b[k, n]` with rows `dst_rs` and `a_rs` apart (columns contiguous),
/// `b` row-major, on this thread.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn matmul_strided(
    dst: &mut [f32],
    dst_rs: usize,
    a: &[f32],
    a_rs: usize,
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    Product {
        dst,
        dst_rs,
        a,
        a_rs,
        b,
        m,
        n,
        k,
        accumulate: false,
        bias_relu: None,
    }
    .run()
}

/// `dst[m, n] (+)= a[m, k] · b[k, n]`, all row-major, on this thread; then `max(· + bias, 0)`
/// where a bias is given.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn matmul(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    bias_relu: Option<&[f32]>,
) -> Result<()> {
    Product {
        dst,
        dst_rs: n,
        a,
        a_rs: k,
        b,
        m,
        n,
        k,
        accumulate,
        bias_relu,
    }
    .run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernel::tests::values;

    /// Winograd tiles of both sizes cover every output exactly once whatever the map's size
    /// against the tile pattern (`M·d` rows and columns a block): maps smaller than one tile,
    /// sizes that are not a multiple of `M·d`, dilations 1–5; the result is the direct
    /// convolution's (im2col, the same weights) to float rounding, bias and ReLU included, on
    /// every instruction set this machine has (channel counts that fill no vector, or leave
    /// channels over, included).
    #[test]
    fn winograd_equals_the_direct_convolution_on_every_size_and_dilation() {
        check(pulp::Scalar::new(), "scalar");
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(v3) = pulp::x86::V3::try_new() {
                v3.vectorize(|| check(v3, "AVX2"));
            }
            if let Some(v4) = pulp::x86::V4::try_new() {
                v4.vectorize(|| check(v4, "AVX-512"));
            }
        }
    }

    /// [`winograd_equals_the_direct_convolution_on_every_size_and_dilation`] on one instruction
    /// set (the transforms run on its vectors, the channels left over one by one).
    #[inline(always)]
    fn check<S: Simd>(simd: S, set: &str) {
        let mut scratch = Vec::new();
        let mut compared = 0;
        for (cin, cout) in [
            (16, 8),
            (16, 16),
            (32, 64),
            (8, 24),
            (12, 20),
            (9, 13),
            (40, 19),
        ] {
            for d in 1..=5 {
                for (h, w) in [
                    (1, 1),
                    (2, 3),
                    (5, 7),
                    (10, 12),
                    (9, 17),
                    (16, 16),
                    (21, 8),
                    (27, 30),
                ] {
                    let seed = (cin * 131 + cout * 17 + d * 7 + h * 3 + w) as u32;
                    let wts = values(9 * cin * cout, seed);
                    let bias = values(cout, seed + 1);
                    let wino = Conv3::new(cin, cout, d, wts.clone(), bias.clone());
                    assert!(wino.wino.is_some(), "{cin} → {cout} runs as Winograd");
                    let direct = Conv3 {
                        wino: None,
                        ..wino.clone()
                    };
                    let x = Map {
                        h,
                        w,
                        c: cin,
                        v: values(h * w * cin, seed + 2),
                    };
                    let b = conv3(simd, &x, &direct, &mut scratch).unwrap();
                    assert!(b.v.iter().any(|&v| v > 0.0), "ReLU left something");
                    let u = wino.wino.as_ref().unwrap();
                    let tiles = [
                        (
                            "F(2×2)",
                            conv3_winograd::<S, F2>(simd, &x, &wino, &u.f2, &mut scratch),
                        ),
                        (
                            "F(4×4)",
                            conv3_winograd::<S, F4>(simd, &x, &wino, &u.f4, &mut scratch),
                        ),
                        ("chosen", conv3(simd, &x, &wino, &mut scratch)),
                    ];
                    for (name, a) in tiles {
                        let a = a.unwrap();
                        assert_eq!((a.h, a.w, a.c), (h, w, cout));
                        for (i, (&u, &v)) in a.v.iter().zip(&b.v).enumerate() {
                            assert!(
                                (u - v).abs() <= 1e-4 * (1.0 + v.abs()),
                                "{set} {name} {cin}→{cout} d {d} {h}×{w} value {i}: Winograd \
                                 {u} vs direct {v}"
                            );
                        }
                    }
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 7 * 5 * 8);
    }

    /// Below eight input channels (the first convolution's three planes) convolutions stay
    /// direct; from eight on they run as Winograd whatever their widths.
    #[test]
    fn thin_convolutions_stay_direct_and_odd_widths_do_not() {
        let conv = |cin: usize, cout: usize| {
            Conv3::new(cin, cout, 1, vec![0.0; 9 * cin * cout], vec![0.0; cout])
        };
        assert!(conv(3, 16).wino.is_none());
        assert!(conv(7, 16).wino.is_none());
        assert!(conv(12, 16).wino.is_some());
        assert!(conv(16, 12).wino.is_some());
        assert!(conv(16, 16).wino.is_some());
    }
}
