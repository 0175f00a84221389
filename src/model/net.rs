//! The ICHNet network: a dilated VGG-style trunk, a hypercolumn from every block, a pixel MLP.
//!
//! Two forward paths share every weight:
//! - [`IchNet::forward_sparse`] (training): the hypercolumn of a few sampled pixels, bilinearly
//!   interpolated from each block's map, concatenated, through the MLP. The MLP never sees the
//!   other pixels, as in PixelNet.
//! - [`IchNet::forward_dense`] (inference): the first MLP layer is linear and so is bilinear
//!   upsampling, so each block's slice of that layer is applied at the block's own resolution
//!   (a 1×1 convolution), upsampled, and summed. The full-resolution concatenated hypercolumn
//!   (hundreds of channels per pixel) is never built; memory stays at `hidden` channels.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::nn::{PaddingConfig2d, Relu};
use burn::prelude::*;
use burn::tensor::{Int, TensorData};

use super::bilinear;

/// Shape of the network. The defaults are the shipped model; a weights file only loads into the
/// configuration it was trained with (the test `shipped_weights_load` guards that).
#[derive(Config, Debug)]
pub struct IchNetConfig {
    /// Input channels (CT windows, see `model::input`).
    #[config(default = 3)]
    pub in_channels: usize,
    /// Output width of each block; one hypercolumn tap per block.
    #[config(default = "vec![16, 32, 48, 64, 64]")]
    pub widths: Vec<usize>,
    /// Dilation of each block's 3×3 convolutions (context grows without more pooling).
    #[config(default = "vec![1, 1, 2, 4, 4]")]
    pub dilations: Vec<usize>,
    /// Blocks `1..=pools` start with a 2×2 max-pool: pooling early, dilation afterwards.
    #[config(default = 2)]
    pub pools: usize,
    /// 3×3 convolutions per block.
    #[config(default = 2)]
    pub convs_per_block: usize,
    /// Hidden widths of the pixel MLP (the first is the width dense inference upsamples).
    #[config(default = "vec![96, 48]")]
    pub mlp: Vec<usize>,
    /// Dropout between MLP layers during training.
    #[config(default = 0.3)]
    pub dropout: f64,
}

/// Conv + batch norm + ReLU.
#[derive(Module, Debug)]
pub struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        Relu::new().forward(self.bn.forward(self.conv.forward(x)))
    }
}

/// One trunk block; its last activation is the block's hypercolumn tap.
#[derive(Module, Debug)]
pub struct Block {
    pool: Option<MaxPool2d>,
    convs: Vec<ConvBn>,
}

impl Block {
    fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        if let Some(pool) = &self.pool {
            x = pool.forward(x);
        }
        for c in &self.convs {
            x = c.forward(x);
        }
        x
    }
}

/// ICHNet at browser size. See the module documentation for the two forward paths.
#[derive(Module, Debug)]
pub struct IchNet {
    blocks: Vec<Block>,
    /// First MLP layer over the concatenated hypercolumn (rows grouped by block, in order).
    head_in: Linear,
    head: Vec<Linear>,
    out: Linear,
    dropout: Dropout,
    /// Width of each block's tap, in hypercolumn order.
    tap_widths: Vec<usize>,
    /// Downsampling factor of each block's tap.
    tap_factors: Vec<usize>,
}

/// Pixels to classify in a batch of slices: `(slice index in batch, row, column)` at input
/// resolution.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// Index of the slice within the batch.
    pub n: Vec<usize>,
    /// Row (y) of the pixel.
    pub y: Vec<usize>,
    /// Column (x) of the pixel.
    pub x: Vec<usize>,
}

impl Samples {
    /// Number of sampled pixels.
    pub fn len(&self) -> usize {
        self.n.len()
    }

    /// Whether no pixel is sampled.
    pub fn is_empty(&self) -> bool {
        self.n.is_empty()
    }

    /// Add a pixel.
    pub fn push(&mut self, n: usize, y: usize, x: usize) {
        self.n.push(n);
        self.y.push(y);
        self.x.push(x);
    }
}

impl IchNetConfig {
    /// Build the network with freshly initialised weights on `device`.
    pub fn init(&self, device: &Device) -> IchNet {
        let mut blocks = Vec::with_capacity(self.widths.len());
        let mut c_in = self.in_channels;
        let mut factor = 1usize;
        let mut tap_factors = Vec::with_capacity(self.widths.len());
        for (i, &w) in self.widths.iter().enumerate() {
            let d = self.dilations.get(i).copied().unwrap_or(1).max(1);
            let pool = if i >= 1 && i <= self.pools {
                factor *= 2;
                Some(MaxPool2dConfig::new([2, 2]).init())
            } else {
                None
            };
            let mut convs = Vec::with_capacity(self.convs_per_block);
            for k in 0..self.convs_per_block.max(1) {
                let cin = if k == 0 { c_in } else { w };
                let conv = Conv2dConfig::new([cin, w], [3, 3])
                    .with_dilation([d, d])
                    .with_padding(PaddingConfig2d::Explicit(d, d, d, d))
                    .init(device);
                convs.push(ConvBn {
                    conv,
                    bn: BatchNormConfig::new(w).init(device),
                });
            }
            blocks.push(Block { pool, convs });
            tap_factors.push(factor);
            c_in = w;
        }
        let hyper: usize = self.widths.iter().sum();
        let first = self.mlp.first().copied().unwrap_or(64);
        let head_in = LinearConfig::new(hyper, first).init(device);
        let mut head = Vec::new();
        let mut prev = first;
        for &h in self.mlp.iter().skip(1) {
            head.push(LinearConfig::new(prev, h).init(device));
            prev = h;
        }
        IchNet {
            blocks,
            head_in,
            head,
            out: LinearConfig::new(prev, 1).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            tap_widths: self.widths.clone(),
            tap_factors,
        }
    }

    /// Input height and width must be multiples of this, so every pooled map tiles exactly.
    pub fn size_multiple(&self) -> usize {
        1 << self.pools.min(self.widths.len().saturating_sub(1))
    }
}

impl IchNet {
    /// The trunk's taps, one per block, each `[n, c_k, h / f_k, w / f_k]`.
    fn taps(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let mut taps = Vec::with_capacity(self.blocks.len());
        let mut x = x;
        for b in &self.blocks {
            x = b.forward(x);
            taps.push(x.clone());
        }
        taps
    }

    /// The MLP after its first layer's pre-activation `z` (`[p, hidden]`): logits `[p]`.
    fn head_rest(&self, z: Tensor<2>) -> Tensor<1> {
        let mut h = self.dropout.forward(Relu::new().forward(z));
        for l in &self.head {
            h = self.dropout.forward(Relu::new().forward(l.forward(h)));
        }
        let logits = self.out.forward(h);
        let p = logits.dims()[0];
        logits.reshape([p])
    }

    /// Logits of the sampled pixels (`[p]`) of a batch `x` of `[n, c, h, w]` slices; `h` and `w`
    /// must be multiples of [`IchNetConfig::size_multiple`].
    pub fn forward_sparse(&self, x: Tensor<4>, s: &Samples) -> Tensor<1> {
        let device = x.device();
        let taps = self.taps(x);
        let mut parts = Vec::with_capacity(taps.len());
        for (tap, &f) in taps.into_iter().zip(&self.tap_factors) {
            parts.push(sample_tap(tap, f, s, &device));
        }
        let hyper = Tensor::cat(parts, 1);
        self.head_rest(self.head_in.forward(hyper))
    }

    /// Logits of every pixel, `[n, h, w]`, without building the full hypercolumn.
    pub fn forward_dense(&self, x: Tensor<4>) -> Tensor<3> {
        let [n, _, h, w] = x.dims();
        let device = x.device();
        let taps = self.taps(x);
        let weight = self.head_in.weight.val();
        let hidden = weight.dims()[1];
        let mut sum: Option<Tensor<4>> = None;
        let mut row = 0usize;
        for ((tap, &c), &f) in taps
            .into_iter()
            .zip(&self.tap_widths)
            .zip(&self.tap_factors)
        {
            let wk = weight.clone().slice([row..row + c, 0..hidden]);
            row += c;
            let [_, _, hk, wk_] = tap.dims();
            // 1×1 convolution as a matrix product over channels.
            let flat = tap.permute([0, 2, 3, 1]).reshape([n * hk * wk_, c]);
            let proj = flat
                .matmul(wk)
                .reshape([n, hk, wk_, hidden])
                .permute([0, 3, 1, 2]);
            let up = upsample(proj, f, h, w, &device);
            sum = Some(match sum {
                Some(s) => s + up,
                None => up,
            });
        }
        let Some(sum) = sum else {
            return Tensor::zeros([n, h, w], &device);
        };
        let mut z = sum.permute([0, 2, 3, 1]).reshape([n * h * w, hidden]);
        if let Some(b) = &self.head_in.bias {
            z = z + b.val().reshape([1, hidden]);
        }
        self.head_rest(z).reshape([n, h, w])
    }
}

/// Bilinear features of the sampled pixels from one tap: `[p, c]`.
fn sample_tap(tap: Tensor<4>, f: usize, s: &Samples, device: &Device) -> Tensor<2> {
    let [n, c, hk, wk] = tap.dims();
    let flat = tap.permute([0, 2, 3, 1]).reshape([n * hk * wk, c]);
    if f == 1 {
        let idx: Vec<i64> = (0..s.len())
            .map(|i| ((s.n[i] * hk + s.y[i]) * wk + s.x[i]) as i64)
            .collect();
        return flat.select(0, ints(idx, device));
    }
    let p = s.len();
    let mut idx = [
        Vec::with_capacity(p),
        Vec::with_capacity(p),
        Vec::with_capacity(p),
        Vec::with_capacity(p),
    ];
    let mut wts = [
        Vec::with_capacity(p),
        Vec::with_capacity(p),
        Vec::with_capacity(p),
        Vec::with_capacity(p),
    ];
    for i in 0..p {
        let ty = bilinear::tap(s.y[i], f, hk);
        let tx = bilinear::tap(s.x[i], f, wk);
        let base = s.n[i] * hk;
        let corners = [
            (ty.i0, tx.i0, (1.0 - ty.frac) * (1.0 - tx.frac)),
            (ty.i0, tx.i1, (1.0 - ty.frac) * tx.frac),
            (ty.i1, tx.i0, ty.frac * (1.0 - tx.frac)),
            (ty.i1, tx.i1, ty.frac * tx.frac),
        ];
        for (k, &(yy, xx, wt)) in corners.iter().enumerate() {
            idx[k].push(((base + yy) * wk + xx) as i64);
            wts[k].push(wt);
        }
    }
    let mut acc: Option<Tensor<2>> = None;
    for (ix, wt) in idx.into_iter().zip(wts) {
        let g = flat.clone().select(0, ints(ix, device));
        let w = Tensor::<2>::from_data(TensorData::new(wt, [p, 1]), device);
        let term = g * w;
        acc = Some(match acc {
            Some(a) => a + term,
            None => term,
        });
    }
    acc.unwrap_or_else(|| Tensor::zeros([p, c], device))
}

/// Upsample `[n, c, hk, wk]` by `f` to `[n, c, h, w]` with the [`bilinear`] convention, as two
/// matrix products (one per axis), so it is exact, deterministic and runs on any backend.
fn upsample(x: Tensor<4>, f: usize, h: usize, w: usize, device: &Device) -> Tensor<4> {
    let [n, c, hk, wk] = x.dims();
    if f == 1 && hk == h && wk == w {
        return x;
    }
    let mx = Tensor::<2>::from_data(TensorData::new(bilinear::matrix(w, f, wk), [w, wk]), device);
    let my = Tensor::<2>::from_data(TensorData::new(bilinear::matrix(h, f, hk), [h, hk]), device);
    // Along x: [n*c*hk, wk] · mxᵀ → [n*c*hk, w].
    let t = x.reshape([n * c * hk, wk]).matmul(mx.transpose());
    // Along y: bring hk last.
    let t = t
        .reshape([n * c, hk, w])
        .swap_dims(1, 2)
        .reshape([n * c * w, hk])
        .matmul(my.transpose());
    t.reshape([n * c, w, h])
        .swap_dims(1, 2)
        .reshape([n, c, h, w])
}

fn ints(v: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let len = v.len();
    Tensor::<1, Int>::from_data(TensorData::new(v, [len]), device)
}
