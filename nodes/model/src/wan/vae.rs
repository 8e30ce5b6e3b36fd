//! The Wan video autoencoder: Wan 2.1's (causal 3D convolutions, 8x spatial and 4x temporal
//! compression to 16 channels) and Wan 2.2's TI2V one (`is_residual`, a 2x2 patchify in front,
//! averaging shortcuts, 48 channels). Tensor names are diffusers' `AutoencoderKLWan`.
//!
//! Video runs through it as a stream, the way the published model was trained and is used:
//! the encoder takes the first frame alone and then four frames at a time, the decoder one
//! latent frame at a time, and every causal convolution keeps the last two frames it saw for
//! the next chunk. Memory is bounded by a chunk, not by the clip's length. The first frame is
//! its own latent frame (no temporal up- or downsampling), so `1 + 4k` video frames map to
//! `1 + k` latent frames.
//!
//! Inside this file a video is `[frames, channels, height, width]`: frames are the batch of
//! every 2D convolution, and a 3D convolution is one 2D convolution over its time taps
//! stacked along channels.

use std::path::Path;

use candle_core::{IndexOp, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::{Error, Result};

/// The fields of a published `vae/config.json` (`AutoencoderKLWan`); absent fields take
/// diffusers' defaults (the Wan 2.1 VAE).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct WanVaeConfig {
    pub base_dim: usize,
    pub decoder_base_dim: Option<usize>,
    pub z_dim: usize,
    pub dim_mult: Vec<usize>,
    pub num_res_blocks: usize,
    pub attn_scales: Vec<f64>,
    pub temperal_downsample: Vec<bool>,
    pub latents_mean: Vec<f32>,
    pub latents_std: Vec<f32>,
    pub is_residual: bool,
    pub in_channels: usize,
    pub out_channels: usize,
    pub patch_size: Option<usize>,
    pub scale_factor_temporal: usize,
    pub scale_factor_spatial: usize,
}

impl Default for WanVaeConfig {
    fn default() -> Self {
        Self {
            base_dim: 96,
            decoder_base_dim: None,
            z_dim: 16,
            dim_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            attn_scales: vec![],
            temperal_downsample: vec![false, true, true],
            latents_mean: vec![
                -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134,
                -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
            ],
            latents_std: vec![
                2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526,
                2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
            ],
            is_residual: false,
            in_channels: 3,
            out_channels: 3,
            patch_size: None,
            scale_factor_temporal: 4,
            scale_factor_spatial: 8,
        }
    }
}

impl WanVaeConfig {
    /// Reads and checks `config.json`; every refusal names the file and the field.
    pub fn load(path: &Path) -> Result<Self> {
        let config: Self = super::config::read_json(path)?;
        config
            .validate()
            .map_err(|message| Error::Config(format!("{}: {message}", path.display())))?;
        Ok(config)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let stages = self.dim_mult.len();
        if stages == 0 {
            return Err("dim_mult is empty".into());
        }
        if !self.attn_scales.is_empty() {
            // diffusers cannot run these either; no published Wan VAE has them.
            return Err(format!(
                "attn_scales {:?}: encoder attention blocks are not supported (no published Wan VAE uses them)",
                self.attn_scales
            ));
        }
        if self.temperal_downsample.len() + 1 < stages {
            return Err(format!(
                "temperal_downsample has {} entries; dim_mult's {stages} stages need {}",
                self.temperal_downsample.len(),
                stages - 1
            ));
        }
        for (field, values) in [
            ("latents_mean", &self.latents_mean),
            ("latents_std", &self.latents_std),
        ] {
            if values.len() != self.z_dim {
                return Err(format!(
                    "{field} has {} entries but z_dim is {}",
                    values.len(),
                    self.z_dim
                ));
            }
        }
        if let Some(i) = self.latents_std.iter().position(|s| *s <= 0.0) {
            return Err(format!("latents_std[{i}] is not positive"));
        }
        let temporal = 1usize
            << self.temperal_downsample[..stages - 1]
                .iter()
                .filter(|t| **t)
                .count();
        if temporal != self.scale_factor_temporal {
            return Err(format!(
                "temperal_downsample compresses time {temporal}x but scale_factor_temporal is {}",
                self.scale_factor_temporal
            ));
        }
        let spatial = (1usize << (stages - 1)) * self.patch_size.unwrap_or(1);
        if spatial != self.scale_factor_spatial {
            return Err(format!(
                "dim_mult and patch_size compress space {spatial}x but scale_factor_spatial is {}",
                self.scale_factor_spatial
            ));
        }
        Ok(())
    }
}

/// One causal convolution's memory between chunks (diffusers' `feat_cache` entries).
#[derive(Clone)]
enum Slot {
    Empty,
    /// A temporal upsampler that has seen the first chunk (which it passes through).
    FirstChunkSeen,
    Frames(Tensor),
}

/// The state of one video going through the encoder or decoder: a slot per causal
/// convolution, visited in the same order for every chunk.
struct Stream {
    slots: Vec<Slot>,
    next: usize,
}

impl Stream {
    fn new() -> Self {
        Self {
            slots: Vec::new(),
            next: 0,
        }
    }

    fn start_chunk(&mut self) {
        self.next = 0;
    }

    fn slot(&mut self) -> &mut Slot {
        if self.next == self.slots.len() {
            self.slots.push(Slot::Empty);
        }
        self.next += 1;
        &mut self.slots[self.next - 1]
    }
}

fn last_frames(x: &Tensor, n: usize) -> Result<Tensor> {
    let frames = x.dim(0)?;
    let n = n.min(frames);
    Ok(x.narrow(0, frames - n, n)?)
}

/// A 3D convolution that is causal in time (the front is padded, with the previous chunk's
/// frames when there is one, else zeros) and zero-padded in space.
struct CausalConv3d {
    /// `[out, taps * in, kh, kw]`: the time taps stacked along input channels.
    weight: Tensor,
    bias: Tensor,
    taps: usize,
    time_stride: usize,
    front: usize,
    spatial_padding: usize,
}

impl CausalConv3d {
    fn new(
        vb: VarBuilder,
        channels: (usize, usize),
        kernel: [usize; 3],
        time_stride: usize,
        padding: [usize; 3],
    ) -> Result<Self> {
        let (input, output) = channels;
        let [kt, kh, kw] = kernel;
        let weight = vb.get((output, input, kt, kh, kw), "weight")?;
        let weight = weight
            .permute((0, 2, 1, 3, 4))?
            .reshape((output, kt * input, kh, kw))?
            .contiguous()?;
        let bias = vb.get(output, "bias")?.reshape((1, output, 1, 1))?;
        Ok(Self {
            weight,
            bias,
            taps: kt,
            time_stride,
            front: 2 * padding[0],
            spatial_padding: padding[1],
        })
    }

    fn cube(vb: VarBuilder, input: usize, output: usize, kernel: usize) -> Result<Self> {
        let pad = kernel / 2;
        Self::new(vb, (input, output), [kernel; 3], 1, [pad; 3])
    }

    fn forward(&self, x: &Tensor, cache: Option<&Tensor>) -> Result<Tensor> {
        let mut x = x.clone();
        let mut front = self.front;
        if let (Some(cache), true) = (cache, front > 0) {
            front -= cache.dim(0)?.min(front);
            x = Tensor::cat(&[cache, &x], 0)?;
        }
        if front > 0 {
            x = x.pad_with_zeros(0, front, 0)?;
        }
        let frames = x.dim(0)?;
        if frames < self.taps {
            return Err(Error::Shape(format!(
                "Wan VAE: a causal convolution got {frames} frames, fewer than its {} taps",
                self.taps
            )));
        }
        let outputs = (frames - self.taps) / self.time_stride + 1;
        let stacked = if self.taps == 1 && self.time_stride == 1 {
            x
        } else {
            let taps = (0..self.taps)
                .map(|k| {
                    let index: Vec<u32> = (0..outputs)
                        .map(|t| (t * self.time_stride + k) as u32)
                        .collect();
                    let index = Tensor::new(index, x.device())?;
                    x.index_select(&index, 0)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&taps, 1)?
        };
        let y = stacked.conv2d(&self.weight, self.spatial_padding, 1, 1, 1)?;
        Ok(y.broadcast_add(&self.bias)?)
    }

    /// One chunk through the convolution, remembering this chunk's last two input frames
    /// (with the one before when the chunk has a single frame) for the next.
    fn step(&self, x: &Tensor, stream: &mut Stream) -> Result<Tensor> {
        let slot = stream.slot();
        let previous = match slot {
            Slot::Frames(frames) => Some(frames.clone()),
            _ => None,
        };
        let mut tail = last_frames(x, 2)?;
        if let (1, Some(previous)) = (tail.dim(0)?, &previous) {
            tail = Tensor::cat(&[&last_frames(previous, 1)?, &tail], 0)?;
        }
        let y = self.forward(x, previous.as_ref())?;
        *slot = Slot::Frames(tail);
        Ok(y)
    }
}

struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    stride: usize,
}

impl Conv2d {
    fn new(
        vb: VarBuilder,
        input: usize,
        output: usize,
        kernel: usize,
        padding: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: vb.get((output, input, kernel, kernel), "weight")?,
            bias: vb.get(output, "bias")?.reshape((1, output, 1, 1))?,
            padding,
            stride: 1,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
        Ok(y.broadcast_add(&self.bias)?)
    }
}

/// diffusers' `WanRMS_norm`: L2-normalise over channels, times sqrt(channels) and a gain.
struct ChannelRmsNorm {
    gain: Tensor,
}

impl ChannelRmsNorm {
    fn new(vb: VarBuilder, channels: usize, spatial_dims: usize) -> Result<Self> {
        let shape: Vec<usize> = std::iter::once(channels)
            .chain(std::iter::repeat_n(1, spatial_dims))
            .collect();
        let gain = vb.get(shape, "gamma")?;
        let gain = (gain.reshape((1, channels, 1, 1))? * (channels as f64).sqrt())?;
        Ok(Self { gain })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let norm = x
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12, f64::INFINITY)?;
        Ok(x.broadcast_div(&norm)?.broadcast_mul(&self.gain)?)
    }
}

struct ResidualBlock {
    norm1: ChannelRmsNorm,
    conv1: CausalConv3d,
    norm2: ChannelRmsNorm,
    conv2: CausalConv3d,
    shortcut: Option<CausalConv3d>,
}

impl ResidualBlock {
    fn new(vb: VarBuilder, input: usize, output: usize) -> Result<Self> {
        Ok(Self {
            norm1: ChannelRmsNorm::new(vb.pp("norm1"), input, 3)?,
            conv1: CausalConv3d::cube(vb.pp("conv1"), input, output, 3)?,
            norm2: ChannelRmsNorm::new(vb.pp("norm2"), output, 3)?,
            conv2: CausalConv3d::cube(vb.pp("conv2"), output, output, 3)?,
            shortcut: if input != output {
                Some(CausalConv3d::cube(
                    vb.pp("conv_shortcut"),
                    input,
                    output,
                    1,
                )?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor, stream: &mut Stream) -> Result<Tensor> {
        let residual = match &self.shortcut {
            Some(conv) => conv.forward(x, None)?,
            None => x.clone(),
        };
        let h = self.norm1.forward(x)?.silu()?;
        let h = self.conv1.step(&h, stream)?;
        let h = self.norm2.forward(&h)?.silu()?;
        let h = self.conv2.step(&h, stream)?;
        Ok((h + residual)?)
    }
}

/// Single-head self-attention over each frame's pixels.
struct FrameAttention {
    norm: ChannelRmsNorm,
    to_qkv: Conv2d,
    proj: Conv2d,
}

impl FrameAttention {
    fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            norm: ChannelRmsNorm::new(vb.pp("norm"), channels, 2)?,
            to_qkv: Conv2d::new(vb.pp("to_qkv"), channels, 3 * channels, 1, 0)?,
            proj: Conv2d::new(vb.pp("proj"), channels, channels, 1, 0)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (frames, channels, height, width) = x.dims4()?;
        let qkv = self.to_qkv.forward(&self.norm.forward(x)?)?;
        let qkv = qkv
            .reshape((frames, 3 * channels, height * width))?
            .transpose(1, 2)?;
        let q = qkv.narrow(2, 0, channels)?.contiguous()?;
        let k = qkv.narrow(2, channels, channels)?.contiguous()?;
        let v = qkv.narrow(2, 2 * channels, channels)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? / (channels as f64).sqrt())?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((frames, channels, height, width))?;
        Ok((self.proj.forward(&out)? + x)?)
    }
}

struct MidBlock {
    first: ResidualBlock,
    attention: FrameAttention,
    second: ResidualBlock,
}

impl MidBlock {
    fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            first: ResidualBlock::new(vb.pp("resnets.0"), channels, channels)?,
            attention: FrameAttention::new(vb.pp("attentions.0"), channels)?,
            second: ResidualBlock::new(vb.pp("resnets.1"), channels, channels)?,
        })
    }

    fn forward(&self, x: &Tensor, stream: &mut Stream) -> Result<Tensor> {
        let x = self.first.forward(x, stream)?;
        let x = self.attention.forward(&x)?;
        self.second.forward(&x, stream)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum ResampleMode {
    Up2d,
    Up3d,
    Down2d,
    Down3d,
}

struct Resample {
    mode: ResampleMode,
    conv: Conv2d,
    time_conv: Option<CausalConv3d>,
}

impl Resample {
    fn new(vb: VarBuilder, channels: usize, mode: ResampleMode, up_output: usize) -> Result<Self> {
        let (conv, time_conv) = match mode {
            ResampleMode::Up2d | ResampleMode::Up3d => {
                let conv = Conv2d::new(vb.pp("resample.1"), channels, up_output, 3, 1)?;
                let time = (mode == ResampleMode::Up3d)
                    .then(|| {
                        CausalConv3d::new(
                            vb.pp("time_conv"),
                            (channels, 2 * channels),
                            [3, 1, 1],
                            1,
                            [1, 0, 0],
                        )
                    })
                    .transpose()?;
                (conv, time)
            }
            ResampleMode::Down2d | ResampleMode::Down3d => {
                let mut conv = Conv2d::new(vb.pp("resample.1"), channels, channels, 3, 0)?;
                conv.stride = 2;
                let time = (mode == ResampleMode::Down3d)
                    .then(|| {
                        CausalConv3d::new(
                            vb.pp("time_conv"),
                            (channels, channels),
                            [3, 1, 1],
                            2,
                            [0, 0, 0],
                        )
                    })
                    .transpose()?;
                (conv, time)
            }
        };
        Ok(Self {
            mode,
            conv,
            time_conv,
        })
    }

    fn forward(&self, x: &Tensor, stream: &mut Stream) -> Result<Tensor> {
        let mut x = x.clone();
        if let (ResampleMode::Up3d, Some(time_conv)) = (self.mode, &self.time_conv) {
            x = self.upsample_time(time_conv, &x, stream)?;
        }
        let x = match self.mode {
            ResampleMode::Up2d | ResampleMode::Up3d => {
                let (_, _, height, width) = x.dims4()?;
                self.conv
                    .forward(&x.upsample_nearest2d(2 * height, 2 * width)?)?
            }
            ResampleMode::Down2d | ResampleMode::Down3d => {
                let padded = x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
                self.conv.forward(&padded)?
            }
        };
        match (self.mode, &self.time_conv) {
            (ResampleMode::Down3d, Some(time_conv)) => self.downsample_time(time_conv, &x, stream),
            _ => Ok(x),
        }
    }

    /// Each frame after the first becomes two (the convolution's two halves of channels);
    /// the first chunk passes through, and the second starts from zeros rather than from it.
    fn upsample_time(
        &self,
        conv: &CausalConv3d,
        x: &Tensor,
        stream: &mut Stream,
    ) -> Result<Tensor> {
        let slot = stream.slot();
        let previous = match std::mem::replace(slot, Slot::Empty) {
            Slot::Empty => {
                *slot = Slot::FirstChunkSeen;
                return Ok(x.clone());
            }
            Slot::FirstChunkSeen => None,
            Slot::Frames(frames) => Some(frames),
        };
        let mut tail = last_frames(x, 2)?;
        if tail.dim(0)? == 1 {
            let before = match &previous {
                Some(previous) => last_frames(previous, 1)?,
                None => tail.zeros_like()?,
            };
            tail = Tensor::cat(&[&before, &tail], 0)?;
        }
        let y = conv.forward(x, previous.as_ref())?;
        *slot = Slot::Frames(tail);
        let (frames, channels, height, width) = y.dims4()?;
        Ok(y.reshape((2 * frames, channels / 2, height, width))?)
    }

    /// The first chunk passes through; later chunks are convolved with stride 2 after the
    /// previous chunk's last frame.
    fn downsample_time(
        &self,
        conv: &CausalConv3d,
        x: &Tensor,
        stream: &mut Stream,
    ) -> Result<Tensor> {
        let slot = stream.slot();
        match slot {
            Slot::Frames(previous) => {
                let joined = Tensor::cat(&[&last_frames(previous, 1)?, x], 0)?;
                let y = conv.forward(&joined, None)?;
                *slot = Slot::Frames(last_frames(x, 1)?);
                Ok(y)
            }
            _ => {
                *slot = Slot::Frames(x.clone());
                Ok(x.clone())
            }
        }
    }
}

/// Wan 2.2's shortcut around a downsampling block: space and time folded into channels,
/// then averaged in groups down to the output channels.
struct AverageDown {
    output: usize,
    time: usize,
    space: usize,
}

impl AverageDown {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (frames, channels, height, width) = x.dims4()?;
        let pad = (self.time - frames % self.time) % self.time;
        let x = if pad > 0 {
            x.pad_with_zeros(0, pad, 0)?
        } else {
            x.clone()
        };
        let (t, s) = (self.time, self.space);
        let frames = (frames + pad) / t;
        let (height, width) = (height / s, width / s);
        let folded = x
            .reshape(vec![frames, t, channels, height, s, width, s])?
            .permute(vec![0, 2, 1, 4, 6, 3, 5])?
            .reshape((
                frames,
                self.output,
                channels * t * s * s / self.output,
                height,
                width,
            ))?;
        Ok(folded.mean(2)?)
    }
}

/// Wan 2.2's shortcut around an upsampling block: channels repeated, then unfolded into
/// space and time (the first chunk keeps only its last frame).
struct DuplicateUp {
    output: usize,
    time: usize,
    space: usize,
}

impl DuplicateUp {
    fn forward(&self, x: &Tensor, first_chunk: bool) -> Result<Tensor> {
        let (frames, channels, height, width) = x.dims4()?;
        let (t, s) = (self.time, self.space);
        let repeats = self.output * t * s * s / channels;
        let repeated = x
            .unsqueeze(2)?
            .broadcast_as((frames, channels, repeats, height, width))?
            .reshape(vec![frames, self.output, t, s, s, height, width])?;
        let unfolded = repeated.permute(vec![0, 2, 1, 5, 3, 6, 4])?.reshape((
            frames * t,
            self.output,
            height * s,
            width * s,
        ))?;
        Ok(if first_chunk && t > 1 {
            unfolded.narrow(0, t - 1, frames * t - (t - 1))?
        } else {
            unfolded
        })
    }
}

enum EncoderLayer {
    Residual(ResidualBlock),
    Resample(Resample),
    /// Wan 2.2: residual blocks, a downsampler and an averaging shortcut around them.
    DownBlock {
        resnets: Vec<ResidualBlock>,
        downsampler: Option<Resample>,
        shortcut: AverageDown,
    },
}

struct Encoder {
    conv_in: CausalConv3d,
    layers: Vec<EncoderLayer>,
    mid: MidBlock,
    norm_out: ChannelRmsNorm,
    conv_out: CausalConv3d,
}

impl Encoder {
    fn new(cfg: &WanVaeConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.base_dim;
        // Wan 2.2's config counts the patchified channels (12 for RGB with 2x2 patches).
        let input = cfg.in_channels;
        let dims: Vec<usize> = std::iter::once(1)
            .chain(cfg.dim_mult.iter().copied())
            .map(|m| dim * m)
            .collect();
        let stages = cfg.dim_mult.len();
        let mut layers = Vec::new();
        let blocks = vb.pp("down_blocks");
        for i in 0..stages {
            let (mut input, output) = (dims[i], dims[i + 1]);
            let last = i == stages - 1;
            let temporal = !last && cfg.temperal_downsample[i];
            let mode = if temporal {
                ResampleMode::Down3d
            } else {
                ResampleMode::Down2d
            };
            if cfg.is_residual {
                let block = blocks.pp(layers.len());
                let mut resnets = Vec::new();
                for j in 0..cfg.num_res_blocks {
                    resnets.push(ResidualBlock::new(
                        block.pp("resnets").pp(j),
                        input,
                        output,
                    )?);
                    input = output;
                }
                let downsampler = (!last)
                    .then(|| Resample::new(block.pp("downsampler"), output, mode, 0))
                    .transpose()?;
                let shortcut = AverageDown {
                    output,
                    time: if temporal { 2 } else { 1 },
                    space: if last { 1 } else { 2 },
                };
                layers.push(EncoderLayer::DownBlock {
                    resnets,
                    downsampler,
                    shortcut,
                });
                continue;
            }
            for _ in 0..cfg.num_res_blocks {
                let block = ResidualBlock::new(blocks.pp(layers.len()), input, output)?;
                layers.push(EncoderLayer::Residual(block));
                input = output;
            }
            if !last {
                let resample = Resample::new(blocks.pp(layers.len()), output, mode, 0)?;
                layers.push(EncoderLayer::Resample(resample));
            }
        }
        let top = dims[stages];
        Ok(Self {
            conv_in: CausalConv3d::cube(vb.pp("conv_in"), input, dims[0], 3)?,
            layers,
            mid: MidBlock::new(vb.pp("mid_block"), top)?,
            norm_out: ChannelRmsNorm::new(vb.pp("norm_out"), top, 3)?,
            conv_out: CausalConv3d::cube(vb.pp("conv_out"), top, 2 * cfg.z_dim, 3)?,
        })
    }

    fn forward(&self, x: &Tensor, stream: &mut Stream) -> Result<Tensor> {
        let mut x = self.conv_in.step(x, stream)?;
        for layer in &self.layers {
            x = match layer {
                EncoderLayer::Residual(block) => block.forward(&x, stream)?,
                EncoderLayer::Resample(resample) => resample.forward(&x, stream)?,
                EncoderLayer::DownBlock {
                    resnets,
                    downsampler,
                    shortcut,
                } => {
                    let mut h = x.clone();
                    for block in resnets {
                        h = block.forward(&h, stream)?;
                    }
                    if let Some(downsampler) = downsampler {
                        h = downsampler.forward(&h, stream)?;
                    }
                    (h + shortcut.forward(&x)?)?
                }
            };
        }
        let x = self.mid.forward(&x, stream)?;
        let x = self.norm_out.forward(&x)?.silu()?;
        self.conv_out.step(&x, stream)
    }
}

struct UpBlock {
    resnets: Vec<ResidualBlock>,
    upsampler: Option<Resample>,
    /// Wan 2.2's duplicating shortcut around the block.
    shortcut: Option<DuplicateUp>,
}

struct Decoder {
    conv_in: CausalConv3d,
    mid: MidBlock,
    blocks: Vec<UpBlock>,
    norm_out: ChannelRmsNorm,
    conv_out: CausalConv3d,
}

impl Decoder {
    fn new(cfg: &WanVaeConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.decoder_base_dim.unwrap_or(cfg.base_dim);
        let stages = cfg.dim_mult.len();
        let dims: Vec<usize> = std::iter::once(cfg.dim_mult[stages - 1])
            .chain(cfg.dim_mult.iter().rev().copied())
            .map(|m| dim * m)
            .collect();
        // The decoder upsamples in time where the encoder downsampled, mirrored.
        let upsample_time: Vec<bool> = cfg.temperal_downsample[..stages - 1]
            .iter()
            .rev()
            .copied()
            .collect();
        let mut blocks = Vec::new();
        for i in 0..stages {
            let mut input = dims[i];
            let output = dims[i + 1];
            if i > 0 && !cfg.is_residual {
                // Wan 2.1's upsamplers halve the channels.
                input /= 2;
            }
            let up = i != stages - 1;
            let temporal = up && upsample_time[i];
            let mode = if temporal {
                ResampleMode::Up3d
            } else {
                ResampleMode::Up2d
            };
            let vb = vb.pp("up_blocks").pp(i);
            let mut resnets = Vec::new();
            let mut current = input;
            for j in 0..=cfg.num_res_blocks {
                resnets.push(ResidualBlock::new(vb.pp("resnets").pp(j), current, output)?);
                current = output;
            }
            let (upsampler, shortcut) = if !up {
                (None, None)
            } else if cfg.is_residual {
                let upsampler = Resample::new(vb.pp("upsampler"), output, mode, output)?;
                let shortcut = DuplicateUp {
                    output,
                    time: if temporal { 2 } else { 1 },
                    space: 2,
                };
                (Some(upsampler), Some(shortcut))
            } else {
                let upsampler = Resample::new(vb.pp("upsamplers.0"), output, mode, output / 2)?;
                (Some(upsampler), None)
            };
            blocks.push(UpBlock {
                resnets,
                upsampler,
                shortcut,
            });
        }
        let last = dims[stages];
        let output = cfg.out_channels;
        Ok(Self {
            conv_in: CausalConv3d::cube(vb.pp("conv_in"), cfg.z_dim, dims[0], 3)?,
            mid: MidBlock::new(vb.pp("mid_block"), dims[0])?,
            blocks,
            norm_out: ChannelRmsNorm::new(vb.pp("norm_out"), last, 3)?,
            conv_out: CausalConv3d::cube(vb.pp("conv_out"), last, output, 3)?,
        })
    }

    fn forward(&self, x: &Tensor, stream: &mut Stream, first_chunk: bool) -> Result<Tensor> {
        let x = self.conv_in.step(x, stream)?;
        let mut x = self.mid.forward(&x, stream)?;
        for block in &self.blocks {
            let input = x.clone();
            for resnet in &block.resnets {
                x = resnet.forward(&x, stream)?;
            }
            if let Some(upsampler) = &block.upsampler {
                x = upsampler.forward(&x, stream)?;
            }
            if let Some(shortcut) = &block.shortcut {
                x = (x + shortcut.forward(&input, first_chunk)?)?;
            }
        }
        let x = self.norm_out.forward(&x)?.silu()?;
        self.conv_out.step(&x, stream)
    }
}

/// The Wan VAE. Videos are `[batch, channels, frames, height, width]` in [-1, 1]; latents
/// are `[batch, z_dim, 1 + (frames - 1) / 4, height / 8, width / 8]` (Wan 2.2: `/ 16`).
pub struct WanVae {
    cfg: WanVaeConfig,
    encoder: Encoder,
    quant_conv: CausalConv3d,
    post_quant_conv: CausalConv3d,
    decoder: Decoder,
    mean: Tensor,
    std: Tensor,
}

impl WanVae {
    pub fn new(cfg: &WanVaeConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|m| Error::Config(format!("Wan VAE: {m}")))?;
        let z = cfg.z_dim;
        let stats = |values: &[f32]| -> Result<Tensor> {
            Ok(Tensor::new(values, vb.device())?
                .to_dtype(vb.dtype())?
                .reshape((1, z, 1, 1, 1))?)
        };
        Ok(Self {
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            quant_conv: CausalConv3d::cube(vb.pp("quant_conv"), 2 * z, 2 * z, 1)?,
            post_quant_conv: CausalConv3d::cube(vb.pp("post_quant_conv"), z, z, 1)?,
            decoder: Decoder::new(cfg, vb.pp("decoder"))?,
            mean: stats(&cfg.latents_mean)?,
            std: stats(&cfg.latents_std)?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &WanVaeConfig {
        &self.cfg
    }

    /// Latent frames for a clip of `frames` video frames, which must be `1 + 4k`.
    pub fn latent_frames(&self, frames: usize) -> Result<usize> {
        let step = self.cfg.scale_factor_temporal;
        if frames == 0 || !(frames - 1).is_multiple_of(step) {
            let below = frames.saturating_sub(1) / step * step + 1;
            return Err(Error::Shape(format!(
                "Wan VAE: a clip has 1 + {step}k frames; {frames} is not (use {below} or {})",
                below + step
            )));
        }
        Ok(1 + (frames - 1) / step)
    }

    /// The posterior mean of each clip's latents (not normalised; see [`Self::normalize`]).
    pub fn encode(&self, video: &Tensor) -> Result<Tensor> {
        let (_, channels, frames, height, width) = video.dims5()?;
        let cell = self.cfg.scale_factor_spatial;
        let rgb = self.cfg.in_channels / self.cfg.patch_size.unwrap_or(1).pow(2);
        if channels != rgb || height % cell != 0 || width % cell != 0 {
            return Err(Error::Shape(format!(
                "Wan VAE: video [.., {channels}, {frames}, {height}, {width}] needs {rgb} channels and a frame size that is a multiple of {cell}"
            )));
        }
        self.latent_frames(frames)?;
        let step = self.cfg.scale_factor_temporal;
        let clips = (0..video.dim(0)?)
            .map(|b| {
                let clip = video.i(b)?.transpose(0, 1)?.contiguous()?;
                let clip = patchify(&clip, self.cfg.patch_size.unwrap_or(1))?;
                let mut stream = Stream::new();
                let mut outputs = Vec::new();
                let mut start = 0;
                while start < frames {
                    let length = if start == 0 { 1 } else { step };
                    stream.start_chunk();
                    outputs.push(
                        self.encoder
                            .forward(&clip.narrow(0, start, length)?, &mut stream)?,
                    );
                    start += length;
                }
                let moments = self.quant_conv.forward(&Tensor::cat(&outputs, 0)?, None)?;
                let mean = moments.narrow(1, 0, self.cfg.z_dim)?;
                Ok(mean.transpose(0, 1)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&clips, 0)?)
    }

    /// Decodes latents (not normalised) to video in [-1, 1], one latent frame at a time.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let (_, channels, frames, _, _) = latents.dims5()?;
        if channels != self.cfg.z_dim || frames == 0 {
            return Err(Error::Shape(format!(
                "Wan VAE: latents have {channels} channels and {frames} frames; the decoder takes {} channels and at least one frame",
                self.cfg.z_dim
            )));
        }
        let clips = (0..latents.dim(0)?)
            .map(|b| {
                let z = latents.i(b)?.transpose(0, 1)?.contiguous()?;
                let z = self.post_quant_conv.forward(&z, None)?;
                let mut stream = Stream::new();
                let mut outputs = Vec::with_capacity(frames);
                for i in 0..frames {
                    stream.start_chunk();
                    outputs.push(
                        self.decoder
                            .forward(&z.narrow(0, i, 1)?, &mut stream, i == 0)?,
                    );
                }
                let video =
                    unpatchify(&Tensor::cat(&outputs, 0)?, self.cfg.patch_size.unwrap_or(1))?;
                Ok(video.clamp(-1.0, 1.0)?.transpose(0, 1)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&clips, 0)?)
    }

    /// The latents the transformer works on: `(z - mean) / std` per channel.
    pub fn normalize(&self, latents: &Tensor) -> Result<Tensor> {
        Ok(latents
            .broadcast_sub(&self.mean)?
            .broadcast_div(&self.std)?)
    }

    /// The inverse of [`Self::normalize`].
    pub fn denormalize(&self, latents: &Tensor) -> Result<Tensor> {
        Ok(latents
            .broadcast_mul(&self.std)?
            .broadcast_add(&self.mean)?)
    }
}

/// Wan 2.2: each `p x p` pixel block folded into channels (channel `c * p² + column * p + row`).
fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    let (frames, channels, height, width) = x.dims4()?;
    Ok(x.reshape((frames, channels, height / p, p, width / p, p))?
        .permute((0, 1, 5, 3, 2, 4))?
        .reshape((frames, channels * p * p, height / p, width / p))?)
}

fn unpatchify(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    let (frames, channels, height, width) = x.dims4()?;
    Ok(
        x.reshape((frames, channels / (p * p), p, p, height, width))?
            .permute((0, 1, 4, 3, 5, 2))?
            .reshape((frames, channels / (p * p), height * p, width * p))?,
    )
}
