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

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::nn::{PaddingConfig2d, Relu};
use burn::prelude::*;
use burn::tensor::module::{conv2d, interpolate};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{Int, TensorData};

use std::sync::Arc;

use super::bilinear;
use super::cpu::{Conv3, CpuNet, Dense, Group, Stage};

/// Shape of the network. The defaults are the shipped model; a weights file only loads into the
/// configuration it was trained with (the test `shipped_weights_load` guards that).
#[derive(Config, Debug)]
pub struct IchNetConfig {
    /// Input channels: 3 for a slice alone (the shipped model), 5 for a slice with its
    /// neighbours (see `model::input::Layout`).
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
    /// The batch norm is folded into `conv` ([`IchNet::fold_batch_norm`]): inference skips it.
    /// Not part of the weights file: a loaded network starts unfolded.
    #[module(skip)]
    folded: bool,
}

impl ConvBn {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.conv.forward(x);
        let y = if self.folded { y } else { self.bn.forward(y) };
        Relu::new().forward(y)
    }

    /// Inference with running statistics is an affine map per channel after a linear one, so it
    /// folds into the convolution: `w' = w·s`, `b' = (b − μ)·s + β` with `s = γ / √(σ² + ε)`.
    fn fold(mut self) -> Self {
        if self.folded {
            return self;
        }
        let bn = &self.bn;
        let scale = bn.gamma.val() / bn.running_var.value().add_scalar(bn.epsilon).sqrt();
        let shift = bn.beta.val() - bn.running_mean.value() * scale.clone();
        let [c_out] = scale.dims();
        let weight = self.conv.weight.val() * scale.clone().reshape([c_out, 1, 1, 1]);
        let bias = match &self.conv.bias {
            Some(b) => b.val() * scale + shift,
            None => shift,
        };
        self.conv.weight = Param::from_tensor(weight);
        self.conv.bias = Some(Param::from_tensor(bias));
        self.folded = true;
        self
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
    /// The folded network as plain arrays for [`cpu`](super::cpu) inference, when it lives on
    /// the flex (CPU) device; built by [`IchNet::fold_batch_norm`].
    #[module(skip)]
    cpu: Option<Arc<CpuNet>>,
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
                    folded: false,
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
            cpu: None,
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

    /// Logits of every pixel, `[n, h, w]`, without building the full hypercolumn: on the flex
    /// device through [`cpu`](super::cpu) once [`IchNet::fold_batch_norm`] prepared it, else
    /// through burn's ops ([`IchNet::forward_dense_ops`]).
    pub fn forward_dense(&self, x: Tensor<4>) -> Tensor<3> {
        let device = x.device();
        if let Some(cpu) = &self.cpu
            && device == Device::flex()
        {
            let [n, c, h, w] = x.dims();
            if c == cpu.in_channels
                && let Ok(v) = x.clone().into_data().try_into_vec::<f32>()
                && let Ok(logits) = cpu.logits(&v, n, h, w)
            {
                return Tensor::from_data(TensorData::new(logits, [n, h, w]), &device);
            }
        }
        self.forward_dense_ops(x)
    }

    /// [`IchNet::forward_dense`] through burn's ops on any backend.
    ///
    /// Everything stays channels-first (no permutes): the first MLP layer becomes one 1×1
    /// convolution per resolution (the taps of equal factor are concatenated, so the three
    /// quarter-resolution blocks cost one projection and one upsampling), bilinear upsampling
    /// is burn's `interpolate` with half-pixel centres (the [`bilinear`] convention), and the
    /// rest of the MLP runs as 1×1 convolutions at full resolution.
    pub fn forward_dense_ops(&self, x: Tensor<4>) -> Tensor<3> {
        let [n, _, h, w] = x.dims();
        let device = x.device();
        let taps = self.taps(x);
        let weight = self.head_in.weight.val();
        let hidden = weight.dims()[1];
        let mut sum: Option<Tensor<4>> = None;
        let mut row = 0usize;
        let mut group: Vec<Tensor<4>> = Vec::new();
        let mut group_c = 0usize;
        let k = taps.len();
        for (i, tap) in taps.into_iter().enumerate() {
            let f = self.tap_factors[i];
            group_c += self.tap_widths[i];
            group.push(tap);
            if i + 1 < k && self.tap_factors[i + 1] == f {
                continue;
            }
            let cat = if group.len() == 1 {
                group.remove(0)
            } else {
                Tensor::cat(std::mem::take(&mut group), 1)
            };
            group.clear();
            // Rows `row..row + group_c` of the first layer, as a 1×1 kernel [hidden, c, 1, 1].
            let wk = weight
                .clone()
                .slice([row..row + group_c, 0..hidden])
                .transpose()
                .reshape([hidden, group_c, 1, 1]);
            row += group_c;
            group_c = 0;
            let proj = conv2d(cat, wk, None, ConvOptions::new([1, 1], [0, 0], [1, 1], 1));
            let up = if f == 1 {
                proj
            } else {
                interpolate(
                    proj,
                    InterpolateOptions::new(InterpolateMode::Bilinear)
                        .with_align_corners(false)
                        .with_output_size([h, w]),
                )
            };
            sum = Some(match sum {
                Some(s) => s + up,
                None => up,
            });
        }
        let Some(mut z) = sum else {
            return Tensor::zeros([n, h, w], &device);
        };
        if let Some(b) = &self.head_in.bias {
            z = z + b.val().reshape([1, hidden, 1, 1]);
        }
        let mut hcur = Relu::new().forward(z);
        for l in &self.head {
            hcur = Relu::new().forward(pointwise(l, hcur));
        }
        pointwise(&self.out, hcur).reshape([n, h, w])
    }

    /// Fold every batch norm into its convolution, for inference only: the network then skips
    /// the normalisation pass after each convolution. Training never folds (the statistics and
    /// γ, β are what it learns), and a folded network refuses to be saved ([`Self::is_folded`]).
    ///
    /// On the flex device it also prepares the [`cpu`](super::cpu) path (weights read back once).
    pub fn fold_batch_norm(mut self) -> Self {
        for b in &mut self.blocks {
            b.convs = std::mem::take(&mut b.convs)
                .into_iter()
                .map(ConvBn::fold)
                .collect();
        }
        if self.head_in.weight.device() == Device::flex() {
            self.cpu = self.cpu_net().map(Arc::new);
        }
        self
    }

    /// The folded network as plain arrays, or `None` where its shape is not the one
    /// [`cpu`](super::cpu) runs (then burn's ops serve).
    fn cpu_net(&self) -> Option<CpuNet> {
        let read = |t: Tensor<1>| t.into_data().try_into_vec::<f32>().ok();
        let mut stages = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            if let Some(p) = &b.pool
                && (p.kernel_size != [2, 2] || p.stride != [2, 2])
            {
                return None;
            }
            let mut convs = Vec::with_capacity(b.convs.len());
            for c in &b.convs {
                let conv = &c.conv;
                let [cout, cin, kh, kw] = conv.weight.dims();
                let d = conv.dilation[0];
                if !c.folded
                    || [kh, kw] != [3, 3]
                    || conv.stride != [1, 1]
                    || conv.groups != 1
                    || conv.dilation != [d, d]
                    || !matches!(conv.padding, PaddingConfig2d::Explicit(a, b, e, f) if [a, b, e, f] == [d; 4])
                {
                    return None;
                }
                let wv = read(conv.weight.val().reshape([cout * cin * 9]))?;
                let mut w = vec![0f32; 9 * cin * cout];
                for co in 0..cout {
                    for ci in 0..cin {
                        for k in 0..9 {
                            w[(k * cin + ci) * cout + co] = wv[(co * cin + ci) * 9 + k];
                        }
                    }
                }
                let b = match &conv.bias {
                    Some(b) => read(b.val())?,
                    None => vec![0.0; cout],
                };
                convs.push(Conv3::new(cin, cout, d, w, b));
            }
            stages.push(Stage {
                pool: b.pool.is_some(),
                convs,
            });
        }
        let [hyper, hidden] = self.head_in.weight.dims();
        let head_w = read(self.head_in.weight.val().reshape([hyper * hidden]))?;
        let mut groups: Vec<Group> = Vec::new();
        let mut row = 0;
        for (i, (&c, &f)) in self.tap_widths.iter().zip(&self.tap_factors).enumerate() {
            match groups.last_mut() {
                Some(g) if g.factor == f => {
                    g.blocks.end = i + 1;
                    g.w.extend_from_slice(&head_w[row * hidden..(row + c) * hidden]);
                }
                _ => groups.push(Group {
                    factor: f,
                    blocks: i..i + 1,
                    w: head_w[row * hidden..(row + c) * hidden].to_vec(),
                }),
            }
            row += c;
        }
        let dense = |l: &Linear| -> Option<Dense> {
            let [cin, cout] = l.weight.dims();
            Some(Dense {
                cin,
                cout,
                w: read(l.weight.val().reshape([cin * cout]))?,
                b: match &l.bias {
                    Some(b) => read(b.val())?,
                    None => vec![0.0; cout],
                },
            })
        };
        let mut mlp = Vec::with_capacity(self.head.len());
        for l in &self.head {
            mlp.push(dense(l)?);
        }
        let out = dense(&self.out)?;
        let mut width = hidden;
        for l in mlp.iter().chain([&out]) {
            if l.cin != width {
                return None;
            }
            width = l.cout;
        }
        if out.cout != 1 || row != hyper {
            return None;
        }
        Some(CpuNet {
            in_channels: self.blocks.first()?.convs.first()?.conv.weight.dims()[1],
            stages,
            groups,
            hidden,
            b0: match &self.head_in.bias {
                Some(b) => read(b.val())?,
                None => vec![0.0; hidden],
            },
            mlp,
            out,
        })
    }

    /// Whether the batch norms are folded into the convolutions (an inference-only network).
    pub fn is_folded(&self) -> bool {
        self.blocks.iter().flat_map(|b| &b.convs).any(|c| c.folded)
    }

    /// Input channels the network takes (its first convolution's).
    pub fn in_channels(&self) -> usize {
        self.blocks
            .first()
            .and_then(|b| b.convs.first())
            .map_or(0, |c| c.conv.weight.dims()[1])
    }

    /// What its input channels hold.
    pub fn layout(&self) -> crate::Result<super::input::Layout> {
        super::input::Layout::from_channels(self.in_channels())
    }

    /// The same network taking `channels` (more) input channels, the new ones with zero
    /// weights: it computes exactly what it did, and training can then learn what the new
    /// channels add. How a single-slice model is fine-tuned into a 2.5-D one without starting
    /// over.
    pub fn widen_input(mut self, channels: usize) -> crate::Result<Self> {
        let Some(first) = self.blocks.first_mut().and_then(|b| b.convs.first_mut()) else {
            return Err(crate::Error::Weights(
                "the network has no convolution".into(),
            ));
        };
        let w = first.conv.weight.val();
        let [cout, cin, kh, kw] = w.dims();
        if channels < cin || first.folded {
            return Err(crate::Error::Weights(format!(
                "cannot widen a network of {cin} input channels to {channels}{}",
                if first.folded {
                    " (batch norms folded)"
                } else {
                    ""
                }
            )));
        }
        if channels > cin {
            let zeros = Tensor::<4>::zeros([cout, channels - cin, kh, kw], &w.device());
            // Detached: on an autodiff device the concatenation is not a leaf, and a parameter
            // must be one.
            first.conv.weight = Param::from_tensor(Tensor::cat(vec![w, zeros], 1).detach());
        }
        self.cpu = None;
        Ok(self)
    }
}

/// A linear layer applied to every pixel of `[n, c, h, w]` as a 1×1 convolution.
fn pointwise(l: &Linear, x: Tensor<4>) -> Tensor<4> {
    let [c_in, c_out] = l.weight.dims();
    let wk = l.weight.val().transpose().reshape([c_out, c_in, 1, 1]);
    conv2d(
        x,
        wk,
        l.bias.as_ref().map(|b| b.val()),
        ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
    )
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

fn ints(v: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let len = v.len();
    Tensor::<1, Int>::from_data(TensorData::new(v, [len]), device)
}
