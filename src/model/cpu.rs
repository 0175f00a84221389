//! Dense inference on the CPU straight on `gemm`, for the flex device (natively and in the
//! page's CPU path).
//!
//! Why not burn's ops: flex runs each op as its own pass over memory — every convolution
//! converts its input to channels-last and back, bias and ReLU are further passes, every op
//! allocates its output — and parallelises inside each op, so two cores synchronise dozens of
//! times per slice. Here one slice goes through the whole network channels-last on one thread:
//! each 3×3 convolution is an im2col of a band of rows and one matrix product, with bias and ReLU
//! applied while the band is still in cache; the head works band by band too, so the
//! full-resolution hidden layer (96 channels) never exists as a whole. Natively the slices of a
//! batch run on rayon's threads; on wasm they run in order.
//!
//! The arithmetic is the network's (batch norms folded, [`super::bilinear`] upsampling); only the
//! summation order differs from burn's, so the two agree to float rounding (`tests/model.rs`).

use gemm::{Parallelism, gemm};

use super::bilinear;
use crate::error::{Result, try_filled};

/// Pixels per im2col band: the band's patch matrix (≤ 576 values per pixel) stays within L2.
const BAND_PIXELS: usize = 384;

/// A 3×3 convolution (batch norm folded in) followed by ReLU.
#[derive(Debug, Clone)]
pub(crate) struct Conv3 {
    pub cin: usize,
    pub cout: usize,
    pub dilation: usize,
    /// `[9·cin, cout]`, row `(ky·3 + kx)·cin + ci`.
    pub w: Vec<f32>,
    pub b: Vec<f32>,
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
    fn slice(&self, x: &[f32], h: usize, w: usize, out: &mut [f32]) -> Result<()> {
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
                x = Some(conv3(from, conv, &mut scratch)?);
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
    fn head(&self, taps: &[Map], h: usize, w: usize, out: &mut [f32]) -> Result<()> {
        let hid = self.hidden;
        // Low-resolution groups: project once per slice at their own resolution.
        let mut low = Vec::with_capacity(self.groups.len());
        for g in self.groups.iter().filter(|g| g.factor > 1) {
            let first = &taps[g.blocks.start];
            let mut p = try_filled(first.h * first.w * hid, 0f32, "a hypercolumn projection")?;
            project(taps, g, 0..first.h, &mut p, hid);
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
            z.fill(0.0);
            // Full-resolution groups: a product straight into the band.
            for g in self.groups.iter().filter(|g| g.factor == 1) {
                project(taps, g, y0..y0 + rows, z, hid);
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
                );
                bias_relu(&mut buf_b[..m * l.cout], &l.b);
                std::mem::swap(&mut buf_a, &mut buf_b);
                from_z = false;
                cur_c = l.cout;
            }
            let cur: &[f32] = if from_z { &z[..] } else { &buf_a[..m * cur_c] };
            let o = &self.out;
            for (px, dst) in cur.chunks_exact(cur_c).zip(&mut out[y0 * w..y0 * w + m]) {
                *dst = px.iter().zip(&o.w).map(|(v, wt)| v * wt).sum::<f32>() + o.b[0];
            }
        }
        Ok(())
    }
}

/// Rows `rows` of a group's projection: `Σ_blocks tap · W_block` into `dst` (`[rows·w, hid]`,
/// accumulated).
fn project(taps: &[Map], g: &Group, rows: std::ops::Range<usize>, dst: &mut [f32], hid: usize) {
    let mut row0 = 0;
    for t in &taps[g.blocks.clone()] {
        let m = rows.len() * t.w;
        let a = &t.v[rows.start * t.w * t.c..rows.end * t.w * t.c];
        matmul(
            dst,
            a,
            &g.w[row0 * hid..(row0 + t.c) * hid],
            m,
            hid,
            t.c,
            true,
        );
        row0 += t.c;
    }
}

/// A 3×3 dilated convolution with zero padding (same size), bias and ReLU.
fn conv3(x: &Map, conv: &Conv3, scratch: &mut Vec<f32>) -> Result<Map> {
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
        matmul(dst, col, &conv.w, m, cout, k, false);
        bias_relu(dst, &conv.b);
    }
    Ok(Map {
        h,
        w,
        c: cout,
        v: out,
    })
}

/// 2×2 max-pool (sizes are multiples of 2: the grid's size multiple guarantees it).
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

/// `v = max(v + b, 0)` per pixel row of `b.len()` channels.
fn bias_relu(v: &mut [f32], b: &[f32]) {
    for px in v.chunks_exact_mut(b.len()) {
        for (o, &bb) in px.iter_mut().zip(b) {
            *o = (*o + bb).max(0.0);
        }
    }
}

/// `dst[m, n] (+)= a[m, k] · b[k, n]`, all row-major, on this thread.
fn matmul(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, accumulate: bool) {
    let (dst, a, b) = (&mut dst[..m * n], &a[..m * k], &b[..k * n]);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the three slices above hold exactly m·n, m·k and k·n elements, and the strides
    // below address them row-major within those bounds; dst does not alias a or b (&mut).
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}
