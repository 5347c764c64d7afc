//! The whole network: the packed weight layout, packing from PyTorch's state_dict, and the
//! forward pass over one caller-provided arena.

use core::fmt::Write;

use crate::arch::{
    block_scratch_split, default_strip, grouped_mlp, grouped_scratch_len, mlp_scratch_len, Arch,
    BlockSpec, Plan, MAX_SIDE, MLP_GROUPS,
};
use crate::block::{
    block_forward, block_prepare_band, block_qdw_band, block_run_band, mlp_group, BlockDims,
    BlockWeights,
};
use crate::error::{Buffer, Error};
use crate::exec::{band_rows, Executor, Serial, MAX_BANDS};
use crate::isa::Kernels;
use crate::kernels::{self, Dtype, Epilogue, MatData, MatMut, MatRef, PackedB, QdwWeights, PANEL};
use crate::weights::{mat_pad, vec_pad, Cursor, FloatBlocks, Weights};

/// How a PyTorch tensor is laid out in the packed weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// A vector, copied into the vector stream.
    Copy,
    /// A `[n, k]` Linear weight, packed as `B[k][n]` panels in the matrix stream; its `n`
    /// column scales start at the slot's vector offset.
    Linear,
    /// A block's `pwconv1`/`pwconv2` `[n, k]` Linear weight: packed as [`Packing::Linear`],
    /// except in a w8a8 model with `k % 4 == 0`, where its int8 panels take the
    /// dot-product layout ([`PackedB::dot_index`]) of the int8 GEMM.
    Pointwise,
    /// A `[n, c, kh, kw]` patch conv weight, packed as `B[(ky·kw + kx)·c + ci][n]` panels,
    /// the order in which a channels-last patch is gathered; scales as for `Linear`.
    PatchConv,
    /// Filter `f` (0 = a, 1 = b, 2 = c) of a QDW conv, `[d, 1, K, K]`, interleaved into the
    /// taps that start at the slot's matrix offset; its scales are `f·d..` of the `3d`
    /// scales at the slot's vector offset.
    QdwTaps(u8),
    /// Bias of filter `f` of a QDW conv: `f·d..` of the `3d` biases at the vector offset.
    QdwBias(u8),
}

/// One tensor of the state_dict and where it goes.
#[derive(Debug)]
pub struct TensorSlot<'n> {
    /// PyTorch state_dict key.
    pub name: &'n str,
    /// PyTorch shape.
    pub shape: &'n [usize],
    /// How it is packed.
    pub packing: Packing,
    /// Offset in the vector stream (the vector itself, or the matrix's scales).
    pub vec_offset: usize,
    /// Offset in the matrix stream (matrices only).
    pub mat_offset: usize,
}

type Name = heapless::String<64>;

fn name(args: core::fmt::Arguments<'_>) -> Result<Name, Error> {
    let mut n = Name::new();
    n.write_fmt(args)
        .map_err(|_| Error::Arch("tensor name longer than 64 bytes"))?;
    Ok(n)
}

/// Walks the layout, handing out offsets in both streams.
struct Walk<F> {
    vo: usize,
    mo: usize,
    f: F,
}

impl<E, F: FnMut(TensorSlot<'_>) -> Result<(), E>> Walk<F> {
    fn emit(&mut self, n: &str, shape: &[usize], packing: Packing) -> Result<(), E> {
        (self.f)(TensorSlot {
            name: n,
            shape,
            packing,
            vec_offset: self.vo,
            mat_offset: self.mo,
        })
    }

    fn vec(&mut self, n: Name, len: usize) -> Result<(), E> {
        self.emit(&n, &[len], Packing::Copy)?;
        self.vo += vec_pad(len);
        Ok(())
    }

    fn gemm(&mut self, n: Name, shape: &[usize], packing: Packing) -> Result<(), E> {
        let cols = shape[0];
        let k = shape[1..].iter().product::<usize>();
        self.emit(&n, shape, packing)?;
        self.mo += mat_pad(PackedB::packed_len(k, cols));
        self.vo += vec_pad(cols);
        Ok(())
    }

    fn qdw(
        &mut self,
        prefix: &dyn Fn(&str) -> Result<Name, Error>,
        d: usize,
        k: usize,
    ) -> Result<(), E>
    where
        E: From<Error>,
    {
        for f in 0..3u8 {
            let n = prefix(
                [
                    "QuadraConv.conv1.weight",
                    "QuadraConv.conv2.weight",
                    "QuadraConv.conv3.weight",
                ][f as usize],
            )?;
            self.emit(&n, &[d, 1, k, k], Packing::QdwTaps(f))?;
        }
        self.mo += mat_pad(QdwWeights::taps_len(k, d));
        self.vo += vec_pad(3 * d);
        for f in 0..3u8 {
            let n = prefix(
                [
                    "QuadraConv.conv1.bias",
                    "QuadraConv.conv2.bias",
                    "QuadraConv.conv3.bias",
                ][f as usize],
            )?;
            self.emit(&n, &[d], Packing::QdwBias(f))?;
        }
        self.vo += vec_pad(3 * d);
        Ok(())
    }
}

/// Visits every tensor of the official state_dict of `arch`, in packed order, with its
/// name, shape, packing and stream offsets. Identity blocks have no tensors.
pub fn visit_tensors<E: From<Error>>(
    arch: &Arch<'_>,
    f: impl FnMut(TensorSlot<'_>) -> Result<(), E>,
) -> Result<(), E> {
    arch.validate()?;
    let mut w = Walk { vo: 0, mo: 0, f };
    let (cin, c0) = (arch.in_chans, arch.dim(0));
    let stem = "downsample_layers.0";
    w.gemm(
        name(format_args!("{stem}.0.weight"))?,
        &[c0, cin, 4, 4],
        Packing::PatchConv,
    )?;
    w.vec(name(format_args!("{stem}.0.bias"))?, c0)?;
    w.vec(name(format_args!("{stem}.1.weight"))?, c0)?;
    w.vec(name(format_args!("{stem}.1.bias"))?, c0)?;
    for s in 0..4 {
        let d = arch.dim(s);
        if s > 0 {
            let dp = arch.dim(s - 1);
            let ds = |what: &str| name(format_args!("downsample_layers.{s}.{what}"));
            w.vec(ds("0.weight")?, dp)?;
            w.vec(ds("0.bias")?, dp)?;
            w.gemm(ds("1.weight")?, &[d, dp, 2, 2], Packing::PatchConv)?;
            w.vec(ds("1.bias")?, d)?;
        }
        for (b, spec) in arch.stages[s].blocks.iter().enumerate() {
            if spec.is_identity() {
                continue;
            }
            let (k, e) = (spec.kernel as usize, spec.expansion as usize);
            let t = |what: &str| name(format_args!("stages.{s}.{b}.{what}"));
            w.vec(t("gamma1")?, d)?;
            w.vec(t("norm1.weight")?, d)?;
            w.vec(t("norm1.bias")?, d)?;
            w.qdw(&t, d, k)?;
            w.vec(t("gamma2")?, d)?;
            w.vec(t("norm2.weight")?, d)?;
            w.vec(t("norm2.bias")?, d)?;
            w.gemm(t("pwconv1.weight")?, &[e * d, d], Packing::Pointwise)?;
            w.vec(t("pwconv1.bias")?, e * d)?;
            w.gemm(t("pwconv2.weight")?, &[d, e * d], Packing::Pointwise)?;
            w.vec(t("pwconv2.bias")?, d)?;
        }
    }
    let (d3, nc) = (arch.dim(3), arch.num_classes);
    w.vec(name(format_args!("norm.weight"))?, d3)?;
    w.vec(name(format_args!("norm.bias"))?, d3)?;
    w.gemm(
        name(format_args!("head.weight"))?,
        &[nc, d3],
        Packing::Linear,
    )?;
    w.vec(name(format_args!("head.bias"))?, nc)?;
    Ok(())
}

fn region(dst: &mut [f32], start: usize, len: usize) -> Result<&mut [f32], Error> {
    let found = dst.len();
    dst.get_mut(start..start + len).ok_or(Error::Length {
        buffer: Buffer::Weights,
        expected: start + len,
        found,
    })
}

/// Packs one tensor (PyTorch layout, `shape` as in its slot) into the f32 streams `vecs`
/// and `mats`, setting matrix scales to 1.
pub fn pack_tensor(
    slot: &TensorSlot<'_>,
    src: &[f32],
    vecs: &mut [f32],
    mats: &mut [f32],
) -> Result<(), Error> {
    let numel: usize = slot.shape.iter().product();
    if src.len() != numel {
        return Err(Error::Length {
            buffer: Buffer::Weights,
            expected: numel,
            found: src.len(),
        });
    }
    let (vo, mo) = (slot.vec_offset, slot.mat_offset);
    match slot.packing {
        Packing::Copy => region(vecs, vo, numel)?.copy_from_slice(src),
        Packing::Linear | Packing::Pointwise | Packing::PatchConv => {
            let n = slot.shape[0];
            let k = numel / n.max(1);
            // Linear [n, k] is the PatchConv [n, c, 1, 1] case.
            let (c, kh, kw) = match slot.shape {
                [_, c, kh, kw] => (*c, *kh, *kw),
                _ => (k, 1, 1),
            };
            let dst = region(mats, mo, PackedB::packed_len(k, n))?;
            PackedB::pack(k, n, dst, |kk, j| {
                let (t, ci) = (kk / c, kk % c);
                let (ky, kx) = (t / kw, t % kw);
                src[((j * c + ci) * kh + ky) * kw + kx]
            })?;
            region(vecs, vo, n)?.fill(1.0);
        }
        Packing::QdwTaps(f) => {
            let (d, k, f) = (slot.shape[0], slot.shape[2], f as usize);
            let taps = region(mats, mo, QdwWeights::taps_len(k, d))?;
            for t in 0..k * k {
                for ch in 0..d {
                    taps[QdwWeights::tap_index(k, t, f, ch)] = src[ch * k * k + t];
                }
            }
            region(vecs, vo + f * d, d)?.fill(1.0);
        }
        Packing::QdwBias(f) => {
            let d = slot.shape[0];
            region(vecs, vo + f as usize * d, d)?.copy_from_slice(src);
        }
    }
    Ok(())
}

/// Packs a whole state_dict into f32 streams `vecs` and `mats` (lengths from
/// `arch.weights_len()`). `get(name, shape)` returns the tensor in PyTorch layout as f32,
/// or an error naming what is wrong with it.
pub fn pack_model<'s, E: From<Error>>(
    arch: &Arch<'_>,
    vecs: &mut [f32],
    mats: &mut [f32],
    mut get: impl FnMut(&str, &[usize]) -> Result<&'s [f32], E>,
) -> Result<(), E> {
    let want = arch.weights_len();
    for (expected, found) in [(want.vecs, vecs.len()), (want.mats, mats.len())] {
        if expected != found {
            return Err(Error::Length {
                buffer: Buffer::Weights,
                expected,
                found,
            }
            .into());
        }
    }
    vecs.fill(0.0);
    mats.fill(0.0);
    visit_tensors(arch, |slot| {
        let src = get(slot.name, slot.shape)?;
        pack_tensor(&slot, src, vecs, mats)?;
        Ok(())
    })
}

/// A matrix stream being written in a narrower type.
#[derive(Debug)]
pub enum MatDataMut<'a> {
    /// f16 bit patterns.
    F16(&'a mut [u16]),
    /// int8 values with per-output-channel scales.
    I8(&'a mut [i8]),
    /// int8 as [`MatDataMut::I8`], the block pointwise weights (`k % 4 == 0`) in the
    /// dot-product layout: a [`crate::Dtype::W8A8`] stream.
    W8A8(&'a mut [i8]),
}

/// How much one tensor lost to quantisation.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct QuantError {
    /// Largest absolute error of a weight.
    pub max_abs: f32,
    /// `‖w - q‖ / ‖w‖` over the tensor.
    pub rel_rms: f32,
}

/// Which packed elements belong to which output channel of one matrix slot.
enum Channels {
    /// GEMM panels: channel `j` of `n` is column `j`, `k` elements.
    Panels { k: usize, n: usize },
    /// GEMM panels in the dot-product layout ([`PackedB::dot_index`]).
    DotPanels { k: usize, n: usize },
    /// QDW taps of filter `f`: channel `f·d + ch`, `k²` taps each.
    Taps { d: usize, k: usize, f: usize },
}

impl Channels {
    /// `dot`: the stream is w8a8, whose pointwise weights take the dot-product layout.
    fn of(slot: &TensorSlot<'_>, dot: bool) -> Option<Channels> {
        match slot.packing {
            Packing::Linear | Packing::Pointwise | Packing::PatchConv => {
                let (n, k) = (slot.shape[0], slot.shape[1..].iter().product::<usize>());
                Some(
                    if dot && slot.packing == Packing::Pointwise && k.is_multiple_of(4) {
                        Channels::DotPanels { k, n }
                    } else {
                        Channels::Panels { k, n }
                    },
                )
            }
            Packing::QdwTaps(f) => Some(Channels::Taps {
                d: slot.shape[0],
                k: slot.shape[2],
                f: f as usize,
            }),
            Packing::Copy | Packing::QdwBias(_) => None,
        }
    }

    /// `(channel count, elements per channel)`.
    fn dims(&self) -> (usize, usize) {
        match *self {
            Channels::Panels { k, n } | Channels::DotPanels { k, n } => (n, k),
            Channels::Taps { d, k, .. } => (d, k * k),
        }
    }

    /// Offset in the matrix region of element `e` of channel `ch`, and the channel's scale
    /// offset from the slot's vector offset.
    fn index(&self, ch: usize, e: usize) -> (usize, usize) {
        match *self {
            Channels::Panels { k, .. } => ((ch / PANEL) * k * PANEL + e * PANEL + ch % PANEL, ch),
            Channels::DotPanels { k, .. } => (PackedB::dot_index(k, e, ch), ch),
            Channels::Taps { d, k, f } => (QdwWeights::tap_index(k, e, f, ch), f * d + ch),
        }
    }
}

/// Rewrites one matrix slot of the f32 matrix stream `mats` into `out` (f16, or int8 with
/// symmetric per-output-channel scales written into `vecs`). Returns the error the
/// quantisation made, or `None` for a slot that is not a matrix.
pub fn quantize_slot(
    slot: &TensorSlot<'_>,
    mats: &[f32],
    vecs: &mut [f32],
    out: &mut MatDataMut<'_>,
) -> Result<Option<QuantError>, Error> {
    // The f32 source is in the plain layout; a w8a8 destination may take the dot layout.
    let (Some(map), Some(dst)) = (
        Channels::of(slot, false),
        Channels::of(slot, matches!(out, MatDataMut::W8A8(_))),
    ) else {
        return Ok(None);
    };
    let (chans, per) = map.dims();
    let (mo, vo) = (slot.mat_offset, slot.vec_offset);
    let bad = Error::Length {
        buffer: Buffer::Weights,
        expected: mo + map.index(chans.saturating_sub(1), per.saturating_sub(1)).0 + 1,
        found: mats.len(),
    };
    let (mut max_abs, mut err2, mut norm2) = (0.0f32, 0.0f64, 0.0f64);
    for ch in 0..chans {
        let scale = match out {
            MatDataMut::F16(_) => 1.0,
            MatDataMut::I8(_) | MatDataMut::W8A8(_) => {
                let mut amax = 0.0f32;
                for e in 0..per {
                    amax = amax.max(mats.get(mo + map.index(ch, e).0).ok_or(bad)?.abs());
                }
                // An all-zero channel quantises to zeros whatever its scale: 1 keeps every
                // stored scale positive, which loading checks.
                if amax > 0.0 {
                    amax / 127.0
                } else {
                    1.0
                }
            }
        };
        if let MatDataMut::I8(_) | MatDataMut::W8A8(_) = out {
            *vecs.get_mut(vo + map.index(ch, 0).1).ok_or(bad)? = scale;
        }
        for e in 0..per {
            let (i, o_at) = (mo + map.index(ch, e).0, mo + dst.index(ch, e).0);
            let v = *mats.get(i).ok_or(bad)?;
            let back = match out {
                MatDataMut::F16(o) => {
                    let h = half::f16::from_f32(v);
                    if !h.is_finite() {
                        return Err(Error::F16Range);
                    }
                    *o.get_mut(o_at).ok_or(bad)? = h.to_bits();
                    h.to_f32()
                }
                MatDataMut::I8(o) | MatDataMut::W8A8(o) => {
                    let q = libm::roundf(v / scale).clamp(-127.0, 127.0);
                    *o.get_mut(o_at).ok_or(bad)? = q as i8;
                    q * scale
                }
            };
            let d = (v - back).abs();
            max_abs = max_abs.max(d);
            err2 += (d as f64) * (d as f64);
            norm2 += (v as f64) * (v as f64);
        }
    }
    let rel_rms = if norm2 > 0.0 {
        libm::sqrt(err2 / norm2) as f32
    } else {
        0.0
    };
    Ok(Some(QuantError { max_abs, rel_rms }))
}

/// Checks the per-output-channel scales of every matrix of int8 and w8a8 weights: finite
/// and positive (a zero, negative or non-finite scale is a damaged file, not a model), and
/// small enough that `127 · scale` stays finite; and that w8a8 weights lie in the
/// symmetric range `-127..=127` the int8 GEMMs rely on (`-128` never comes out of the
/// quantiser). f32 and f16 weights carry no scales.
pub fn check_scales(arch: &Arch<'_>, weights: Weights<'_>) -> Result<(), Error> {
    if let MatData::W8A8(q, _) = weights.mats {
        if q.contains(&i8::MIN) {
            return Err(Error::Format(
                "a w8a8 weight is -128: int8 weights must lie in -127..=127",
            ));
        }
    }
    if !matches!(weights.mats.dtype(), Dtype::I8 | Dtype::W8A8) {
        return Ok(());
    }
    visit_tensors(arch, |slot| {
        let Some(map) = Channels::of(&slot, false) else {
            return Ok(());
        };
        let (chans, _) = map.dims();
        let first = slot.vec_offset;
        let n = if let Channels::Taps { .. } = map {
            // The three filters' scales share one run of 3·d; check it at filter 0.
            if slot.packing != Packing::QdwTaps(0) {
                return Ok(());
            }
            3 * chans
        } else {
            chans
        };
        let scales = weights.vecs.get(first..first + n).ok_or(Error::Length {
            buffer: Buffer::Weights,
            expected: first + n,
            found: weights.vecs.len(),
        })?;
        if scales.iter().all(|s| *s > 0.0 && *s <= MAX_SCALE) {
            Ok(())
        } else {
            Err(Error::Format(
                "an int8 weight scale is zero, negative, not finite or above 1e30",
            ))
        }
    })
}

/// Largest int8 weight scale a model file may hold.
pub const MAX_SCALE: f32 = 1e30;

/// A layer of the network, reported by [`Model::forward_observed`] as it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// Stem: 4x4 stride-4 conv and LN.
    Stem,
    /// LN and 2x2 stride-2 conv into stage `stage` (1..=3).
    Downsample {
        /// The stage it feeds.
        stage: usize,
    },
    /// Block `index` of stage `stage` (identity blocks are reported too).
    Block {
        /// Stage (0..=3).
        stage: usize,
        /// Index within the stage.
        index: usize,
        /// Its kernel and expansion.
        spec: BlockSpec,
    },
    /// Mean pool, LN and the linear head.
    Head,
}

/// A network ready to run: an architecture and its packed weights.
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    arch: Arch<'a>,
    weights: Weights<'a>,
}

impl<'a> Model<'a> {
    /// Checks the architecture and that both weight streams have exactly the lengths
    /// `arch.weights_len()` gives.
    pub fn new(arch: Arch<'a>, weights: Weights<'a>) -> Result<Self, Error> {
        arch.validate()?;
        if let MatData::W8A8(_, f) = weights.mats {
            f.check(&arch)?;
        }
        let (want, got) = (arch.weights_len(), weights.len());
        for (expected, found) in [(want.vecs, got.vecs), (want.mats, got.mats)] {
            if expected != found {
                return Err(Error::Length {
                    buffer: Buffer::Weights,
                    expected,
                    found,
                });
            }
        }
        Ok(Model { arch, weights })
    }

    /// The weights.
    pub const fn weights(&self) -> Weights<'a> {
        self.weights
    }

    /// The architecture.
    pub const fn arch(&self) -> &Arch<'a> {
        &self.arch
    }

    /// Arena floats for `h x w` images run `bands` wide: `arch.arena_len_with(h, w,
    /// bands)`, more for w8a8 weights ([`Arch::arena_len_for`]).
    pub const fn arena_len(&self, h: usize, w: usize, bands: usize) -> usize {
        self.arch
            .arena_len_for(h, w, bands, self.weights.mats.dtype())
    }

    /// Classifies one image: `input` is channels-last `[h, w, in_chans]`, `logits` gets
    /// `num_classes` floats, `arena` needs [`Model::arena_len`]`(h, w, 1)` floats.
    pub fn forward(
        &self,
        kern: Kernels,
        input: &[f32],
        h: usize,
        w: usize,
        arena: &mut [f32],
        logits: &mut [f32],
    ) -> Result<(), Error> {
        self.forward_with(&Serial, kern, input, h, w, arena, logits)
    }

    /// [`Model::forward`] with each layer split into `exec.width()` bands run by `exec`;
    /// `arena` needs [`Model::arena_len`]`(h, w, exec.width())` floats. The logits are
    /// bit-identical to [`Model::forward`]'s.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with<E: Executor>(
        &self,
        exec: &E,
        kern: Kernels,
        input: &[f32],
        h: usize,
        w: usize,
        arena: &mut [f32],
        logits: &mut [f32],
    ) -> Result<(), Error> {
        self.forward_observed(exec, kern, input, h, w, arena, logits, &mut |_| {})
    }

    /// [`Model::forward_with`], calling `on_layer` as each layer completes (stem, each
    /// downsample, each block including identities, head): with a clock, a per-layer
    /// latency table.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_observed<E: Executor>(
        &self,
        exec: &E,
        kern: Kernels,
        input: &[f32],
        h: usize,
        w: usize,
        arena: &mut [f32],
        logits: &mut [f32],
        on_layer: &mut dyn FnMut(Layer),
    ) -> Result<(), Error> {
        let nc = self.arch.num_classes;
        if logits.len() != nc {
            return Err(Error::Length {
                buffer: Buffer::Output,
                expected: nc,
                found: logits.len(),
            });
        }
        let (mut cur, plan) = self.run_body(exec, kern, input, h, w, arena, on_layer)?;
        let d3 = self.arch.dim(3);
        let (_, scratch) = arena.split_at_mut(plan.act_len);
        let (normed, _) = scratch[d3..2 * d3].split_at_mut(d3);
        let head = cur.layer(d3, nc)?;
        let bias = cur.vec(nc)?;
        kernels::gemm(
            kern,
            MatRef::dense(normed, 1, d3),
            head,
            Epilogue::Bias(bias),
            MatMut::dense(logits, 1, nc),
        )?;
        on_layer(Layer::Head);
        Ok(())
    }

    /// The pooled, normalised embedding before the head (`dims[3]` floats): what a new
    /// head would be trained on. Runs like [`Model::forward_with`].
    #[allow(clippy::too_many_arguments)]
    pub fn forward_features<E: Executor>(
        &self,
        exec: &E,
        kern: Kernels,
        input: &[f32],
        h: usize,
        w: usize,
        arena: &mut [f32],
        features: &mut [f32],
    ) -> Result<(), Error> {
        let d3 = self.arch.dim(3);
        if features.len() != d3 {
            return Err(Error::Length {
                buffer: Buffer::Features,
                expected: d3,
                found: features.len(),
            });
        }
        let (_, plan) = self.run_body(exec, kern, input, h, w, arena, &mut |_| {})?;
        features.copy_from_slice(&arena[plan.act_len + d3..plan.act_len + 2 * d3]);
        Ok(())
    }

    /// Stem, stages, pooling and the final norm. Leaves the normalised pooled features at
    /// `scratch[d3..2·d3]` and returns the weight cursor at the head.
    #[allow(clippy::too_many_arguments)]
    fn run_body<E: Executor>(
        &self,
        exec: &E,
        kern: Kernels,
        input: &[f32],
        h: usize,
        w: usize,
        arena: &mut [f32],
        obs: &mut dyn FnMut(Layer),
    ) -> Result<(Cursor<'a>, Plan), Error> {
        let arch = &self.arch;
        if h < 32 || w < 32 || h > MAX_SIDE || w > MAX_SIDE {
            return Err(Error::InputSize { h, w });
        }
        let cin = arch.in_chans;
        if input.len() != h * w * cin {
            return Err(Error::Length {
                buffer: Buffer::Input,
                expected: h * w * cin,
                found: input.len(),
            });
        }
        let bands = exec.width().clamp(1, MAX_BANDS);
        let plan = arch.plan_for(h, w, bands, self.weights.mats.dtype());
        if arena.len() < plan.arena_len() {
            return Err(Error::Length {
                buffer: Buffer::Arena,
                expected: plan.arena_len(),
                found: arena.len(),
            });
        }
        let (act, scratch) = arena.split_at_mut(plan.act_len);
        let mut cur = Cursor::new(self.weights);

        // Stem: 4x4 stride-4 patches, then LN, in bands of output rows.
        let c0 = arch.dim(0);
        let (h0, w0) = plan.hw[0];
        let stem = Stem {
            conv: cur.layer(16 * cin, c0)?,
            bias: cur.vec(c0)?,
            ln_w: cur.vec(c0)?,
            ln_b: cur.vec(c0)?,
            cin,
            w,
            w0,
        };
        {
            let x0 = &mut act[plan.offsets[0]..plan.offsets[0] + h0 * w0 * c0];
            let mut tasks = bands_of(x0, w0 * c0, h0, bands, scratch, plan.band_scratch)?;
            exec.run(&mut tasks, &|t| {
                t.res = stem.rows(kern, input, t.y0, t.x, t.scratch)
            });
            finish(&tasks)?;
        }
        obs(Layer::Stem);

        for s in 0..4 {
            let (sh, sw) = plan.hw[s];
            let d = arch.dim(s);
            if s > 0 {
                self.downsample(exec, kern, &mut cur, &plan, s, act, scratch)?;
                obs(Layer::Downsample { stage: s });
            }
            let x = &mut act[plan.offsets[s]..plan.offsets[s] + sh * sw * d];
            for (index, spec) in arch.stages[s].blocks.iter().enumerate() {
                let done = Layer::Block {
                    stage: s,
                    index,
                    spec: *spec,
                };
                if spec.is_identity() {
                    obs(done);
                    continue;
                }
                let (k, e) = (spec.kernel as usize, spec.expansion as usize);
                let bw = BlockWeights::read(&mut cur, d, k, e)?;
                let dims = BlockDims {
                    h: sh,
                    w: sw,
                    c: d,
                    k,
                    e,
                };
                run_block(exec, kern, dims, &bw, x, scratch, plan.band_scratch)?;
                obs(done);
            }
        }

        // Head body: global mean pool, LN.
        let d3 = arch.dim(3);
        let (h3, w3) = plan.hw[3];
        let x = &act[plan.offsets[3]..plan.offsets[3] + h3 * w3 * d3];
        let (pooled, rest) = scratch.split_at_mut(d3);
        pooled.fill(0.0);
        for px in x.chunks_exact(d3) {
            for (p, v) in pooled.iter_mut().zip(px) {
                *p += v;
            }
        }
        let inv = 1.0 / (h3 * w3) as f32;
        pooled.iter_mut().for_each(|p| *p *= inv);
        let (nw, nb) = (cur.vec(d3)?, cur.vec(d3)?);
        kernels::layer_norm_rows(kern, pooled, d3, nw, nb, &mut rest[..d3])?;
        Ok((cur, plan))
    }

    /// LN + 2x2 stride-2 conv from stage `s-1` to stage `s`, one output row at a time.
    /// When the plan gives both stages one region, output row `y` is written only after
    /// input rows `2y, 2y+1` are gathered, behind every input row still to be read; when
    /// they have separate regions, bands of output rows run through `exec`.
    #[allow(clippy::too_many_arguments)]
    fn downsample<E: Executor>(
        &self,
        exec: &E,
        kern: Kernels,
        cur: &mut Cursor<'a>,
        plan: &Plan,
        s: usize,
        act: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), Error> {
        let (dp, d) = (self.arch.dim(s - 1), self.arch.dim(s));
        let (ho, wo) = plan.hw[s];
        let (hi, wi) = plan.hw[s - 1];
        let ds = Downsample {
            ln_w: cur.vec(dp)?,
            ln_b: cur.vec(dp)?,
            conv: cur.layer(4 * dp, d)?,
            bias: cur.vec(d)?,
            wi,
            wo,
        };
        let (oi, oo) = (plan.offsets[s - 1], plan.offsets[s]);
        let (in_len, out_len) = (hi * wi * dp, ho * wo * d);
        if oi + in_len <= oo || oo + out_len <= oi {
            // Separate regions: input read-only, output rows in bands.
            let (input, output) = if oi < oo {
                let (a, b) = act.split_at_mut(oo);
                (&a[oi..oi + in_len], &mut b[..out_len])
            } else {
                let (a, b) = act.split_at_mut(oi);
                (&b[..in_len], &mut a[oo..oo + out_len])
            };
            let mut tasks = bands_of(output, wo * d, ho, exec.width(), scratch, plan.band_scratch)?;
            exec.run(&mut tasks, &|t| {
                t.res = (|| {
                    for (i, row) in t.x.chunks_exact_mut(wo * d).enumerate() {
                        ds.gather(kern, input, t.y0 + i, t.scratch)?;
                        ds.conv(kern, t.scratch, row)?;
                    }
                    Ok(())
                })()
            });
            return finish(&tasks);
        }
        for y in 0..ho {
            ds.gather(kern, &act[oi..oi + in_len], y, scratch)?;
            ds.conv(
                kern,
                scratch,
                &mut act[oo + y * wo * d..oo + (y + 1) * wo * d],
            )?;
        }
        Ok(())
    }
}

/// A downsample's weights and widths.
struct Downsample<'w> {
    ln_w: &'w [f32],
    ln_b: &'w [f32],
    conv: PackedB<'w>,
    bias: &'w [f32],
    wi: usize,
    wo: usize,
}

impl Downsample<'_> {
    /// LN'd 2x2 patches of input rows `2y, 2y+1` into `patch` (`wo` rows of `4·C_in`).
    fn gather(
        &self,
        kern: Kernels,
        input: &[f32],
        y: usize,
        patch: &mut [f32],
    ) -> Result<(), Error> {
        let dp = self.ln_w.len();
        let found = patch.len();
        let patch = patch.get_mut(..self.wo * 4 * dp).ok_or(Error::Length {
            buffer: Buffer::Scratch,
            expected: self.wo * 4 * dp,
            found,
        })?;
        for (xo, p) in patch.chunks_exact_mut(4 * dp).enumerate() {
            for t in 0..4 {
                let (ky, kx) = (t / 2, t % 2);
                let src = ((2 * y + ky) * self.wi + 2 * xo + kx) * dp;
                let dst = &mut p[t * dp..(t + 1) * dp];
                kernels::layer_norm_rows(
                    kern,
                    &input[src..src + dp],
                    dp,
                    self.ln_w,
                    self.ln_b,
                    dst,
                )?;
            }
        }
        Ok(())
    }

    /// The 2x2 conv of gathered patches into one output row.
    fn conv(&self, kern: Kernels, patch: &[f32], out: &mut [f32]) -> Result<(), Error> {
        let (k, d) = (self.conv.k(), self.conv.n());
        kernels::gemm(
            kern,
            MatRef::dense(&patch[..self.wo * k], self.wo, k),
            self.conv,
            Epilogue::Bias(self.bias),
            MatMut::dense(out, self.wo, d),
        )
    }
}

/// Rewrites the f32 matrix stream `mats` of a packed model into `out` (f16, or int8 with
/// per-output-channel scales written into `vecs`), calling `report(name, error)` for
/// every weight tensor quantised.
pub fn quantize_model(
    arch: &Arch<'_>,
    vecs: &mut [f32],
    mats: &[f32],
    mut out: MatDataMut<'_>,
    mut report: impl FnMut(&str, QuantError),
) -> Result<(), Error> {
    visit_tensors(arch, |slot| {
        if let Some(e) = quantize_slot(&slot, mats, vecs, &mut out)? {
            report(slot.name, e);
        }
        Ok(())
    })
}

/// Writes the f32 stream of [`FloatBlocks`] for the blocks `flags` marks (mixed-precision
/// w8a8): each flagged block's QDW taps, PW1 and PW2 panels copied from the packed f32
/// matrix stream `mats`, each followed by unit scales. `out` must be
/// [`FloatBlocks::stream_len`]`(arch, flags)` floats.
pub fn pack_float_blocks(
    arch: &Arch<'_>,
    mats: &[f32],
    flags: &[u8],
    out: &mut [f32],
) -> Result<(), Error> {
    let want = FloatBlocks::stream_len(arch, flags);
    if out.len() != want {
        return Err(Error::Length {
            buffer: Buffer::Weights,
            expected: want,
            found: out.len(),
        });
    }
    let float = FloatBlocks { flags, mats: &[] };
    // The QDW taps (packed once for the three filters) open each block.
    let (mut blocks, mut at) = (0usize, 0usize);
    visit_tensors(arch, |slot| {
        let gemm = || {
            let (n, k) = (slot.shape[0], slot.shape[1..].iter().product::<usize>());
            (PackedB::packed_len(k, n), n)
        };
        let (len, n) = match slot.packing {
            Packing::QdwTaps(0) => {
                blocks += 1;
                if !float.is_float(blocks - 1) {
                    return Ok(());
                }
                let (d, k) = (slot.shape[0], slot.shape[2]);
                (QdwWeights::taps_len(k, d), 3 * d)
            }
            Packing::Pointwise if blocks > 0 && float.is_float(blocks - 1) => gemm(),
            Packing::Linear | Packing::PatchConv if float.layers_float() => gemm(),
            _ => return Ok(()),
        };
        let src = mats
            .get(slot.mat_offset..slot.mat_offset + len)
            .ok_or(Error::Length {
                buffer: Buffer::Weights,
                expected: slot.mat_offset + len,
                found: mats.len(),
            })?;
        let end = at + mat_pad(len) + vec_pad(n);
        let dst = out.get_mut(at..end).ok_or(Error::Length {
            buffer: Buffer::Weights,
            expected: end,
            found: want,
        })?;
        dst.fill(0.0);
        dst[..len].copy_from_slice(src);
        dst[mat_pad(len)..mat_pad(len) + n].fill(1.0);
        at = end;
        Ok(())
    })
}

/// One QuadraBlock in place on `x`, its rows split into `exec.width()` bands (each with
/// `band_scratch` floats of `scratch`: [`crate::arch::Plan::band_scratch`], or
/// [`run_block_scratch`]`.0`; `scratch` needs [`run_block_scratch`]`.1` floats). Blocks
/// that [`grouped_mlp`] picks run their channel MLP in hidden-slice groups instead. The
/// result does not depend on `exec.width()`.
pub fn run_block<E: Executor>(
    exec: &E,
    kern: Kernels,
    dims: BlockDims,
    bw: &BlockWeights<'_>,
    x: &mut [f32],
    scratch: &mut [f32],
    band_scratch: usize,
) -> Result<(), Error> {
    let BlockDims { h, w, c, e, .. } = dims;
    if grouped_mlp(h, w, c, e) {
        return run_block_grouped(exec, kern, dims, bw, x, scratch);
    }
    let strip = default_strip(h, w, c, e);
    let nb = exec.width().clamp(1, MAX_BANDS).min(h);
    if nb <= 1 {
        return block_forward(kern, dims, strip, bw, x, scratch);
    }
    // Every band first captures the rows it needs from its neighbours (all bands only
    // read), then all bands run and write their own rows.
    prepare_bands(
        exec,
        kern,
        (dims, strip),
        bw,
        x,
        scratch,
        (nb, band_scratch),
    )?;
    let mut tasks = bands_of(x, w * c, h, nb, scratch, band_scratch)?;
    exec.run(&mut tasks, &|t| {
        t.res = block_run_band(kern, dims, strip, bw, t.x, t.y0, t.scratch)
    });
    finish(&tasks)
}

/// Floats of scratch [`run_block`] needs for `dims` split `bands` wide: `(per band, total)`.
pub const fn run_block_scratch(dims: BlockDims, bands: usize) -> (usize, usize) {
    run_block_scratch_for(dims, bands, false)
}

/// [`run_block_scratch`] for a block whose pointwise GEMMs may compute in int8
/// ([`BlockWeights::q8`]).
pub const fn run_block_scratch_for(dims: BlockDims, bands: usize, q8: bool) -> (usize, usize) {
    let BlockDims { h, w, c, k, e } = dims;
    let (per, shared) = block_scratch_split(h, w, c, k, e, bands, q8);
    (per, bands * per + shared)
}

/// [`run_block`] for a block whose channel MLP runs in hidden-slice groups: bands of rows
/// do the QDW and LN2, then the groups run (one per thread), then the extra groups'
/// accumulators are added into the residual in group order.
fn run_block_grouped<E: Executor>(
    exec: &E,
    kern: Kernels,
    dims: BlockDims,
    bw: &BlockWeights<'_>,
    x: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), Error> {
    let BlockDims { h, w, c, e, .. } = dims;
    let m = h * w;
    let nb = exec.width().clamp(1, MAX_BANDS).min(h).max(1);
    // Band chunks sized for this block (plan: `bands · per + shared`).
    let q8 = bw.q8();
    let band_scratch = run_block_scratch_for(dims, exec.width().clamp(1, MAX_BANDS), q8).0;
    let need = nb * band_scratch + grouped_scratch_len(h, w, c, e, q8);
    let short = |found| Error::Length {
        buffer: Buffer::Scratch,
        expected: need,
        found,
    };
    let found = scratch.len();
    if found < need {
        return Err(short(found));
    }
    let per_group = mlp_scratch_len(m, c, e, q8);
    let (bands_buf, shared) = scratch.split_at_mut(nb * band_scratch);
    let (ln2, rest) = shared.split_at_mut(vec_pad(m * c));
    let (accs, rest) = rest.split_at_mut((MLP_GROUPS - 1) * vec_pad(m * c));
    let (hiddens, rest) = rest.split_at_mut(MLP_GROUPS * per_group);
    let ones = &mut rest[..c];
    ones.fill(1.0);
    // Bands: capture neighbours' rows, then QDW + LN2 of their own rows.
    prepare_bands(exec, kern, (dims, 1), bw, x, bands_buf, (nb, band_scratch))?;
    {
        let tasks = bands_of(x, w * c, h, nb, bands_buf, band_scratch)?;
        let mut rest_ln2 = &mut ln2[..m * c];
        let mut paired: heapless::Vec<(Band<'_>, &mut [f32]), MAX_BANDS> = heapless::Vec::new();
        for t in tasks {
            let (head, tail) = core::mem::take(&mut rest_ln2).split_at_mut(t.x.len());
            rest_ln2 = tail;
            if paired.push((t, head)).is_err() {
                return Err(Error::Arch("too many bands"));
            }
        }
        exec.run(&mut paired, &|(t, l)| {
            t.res = block_qdw_band(kern, dims, bw, t.x, t.y0, t.scratch, l)
        });
        paired.iter().try_for_each(|(t, _)| t.res)?;
    }
    // Groups of hidden slices: group 0 into the residual, the others into accumulators.
    let ln2: &[f32] = ln2;
    let ones: &[f32] = ones;
    {
        let mut groups: heapless::Vec<Group<'_>, MLP_GROUPS> = heapless::Vec::new();
        let mut hid = hiddens.chunks_mut(per_group);
        let mut acc = accs.chunks_mut(vec_pad(m * c));
        let first = Group {
            g: 0,
            out: &mut x[..],
            hidden: hid.next().ok_or(short(0))?,
            res: Ok(()),
        };
        if groups.push(first).is_err() {
            return Err(Error::Arch("too many groups"));
        }
        for g in 1..MLP_GROUPS {
            let out = acc.next().ok_or(short(0))?;
            out.fill(0.0);
            let hidden = hid.next().ok_or(short(0))?;
            let group = Group {
                g,
                out,
                hidden,
                res: Ok(()),
            };
            if groups.push(group).is_err() {
                return Err(Error::Arch("too many groups"));
            }
        }
        exec.run(&mut groups, &|t| {
            let groups = (t.g, MLP_GROUPS);
            t.res = mlp_group(kern, (c, e), bw, ln2, m, groups, t.hidden, ones, t.out)
        });
        groups.iter().try_for_each(|t| t.res)?;
    }
    // Extra groups into the residual, in group order.
    // Pixel by pixel (no `i % c`), so the compiler vectorises it: this runs on one thread.
    for a in accs.chunks(vec_pad(m * c)) {
        for (xp, ap) in x.chunks_exact_mut(c).zip(a[..m * c].chunks_exact(c)) {
            for ((v, s), g) in xp.iter_mut().zip(ap).zip(bw.gamma2) {
                *v += g * s;
            }
        }
    }
    Ok(())
}

/// Runs [`block_prepare_band`] for `nb` bands (scratch chunks of `per`) through `exec`.
fn prepare_bands<E: Executor>(
    exec: &E,
    kern: Kernels,
    (dims, strip): (BlockDims, usize),
    bw: &BlockWeights<'_>,
    x: &[f32],
    scratch: &mut [f32],
    (nb, per): (usize, usize),
) -> Result<(), Error> {
    let mut prep: heapless::Vec<Band<'_>, MAX_BANDS> = heapless::Vec::new();
    for (i, sc) in scratch.chunks_mut(per).take(nb).enumerate() {
        let (y0, y1) = band_rows(dims.h, nb, i);
        let band = Band {
            x: &mut [],
            y0,
            y1,
            scratch: sc,
            res: Ok(()),
        };
        if prep.push(band).is_err() {
            return Err(Error::Arch("too many bands"));
        }
    }
    exec.run(&mut prep, &|t| {
        t.res = block_prepare_band(kern, dims, strip, bw, x, (t.y0, t.y1), t.scratch)
    });
    finish(&prep)
}

/// One group of the grouped MLP: where it adds, its hidden slice buffer, its outcome.
struct Group<'x> {
    g: usize,
    out: &'x mut [f32],
    hidden: &'x mut [f32],
    res: Result<(), Error>,
}

/// One band of a layer: its rows of the activation, its scratch, and its outcome.
struct Band<'x> {
    x: &'x mut [f32],
    y0: usize,
    y1: usize,
    scratch: &'x mut [f32],
    res: Result<(), Error>,
}

/// Splits `rows` rows of `row` floats into `bands` bands, each with `per` floats of scratch.
fn bands_of<'x>(
    mut x: &'x mut [f32],
    row: usize,
    rows: usize,
    bands: usize,
    scratch: &'x mut [f32],
    per: usize,
) -> Result<heapless::Vec<Band<'x>, MAX_BANDS>, Error> {
    let nb = bands.clamp(1, MAX_BANDS).min(rows.max(1));
    let mut out = heapless::Vec::new();
    let mut sc = scratch.chunks_mut(per.max(1));
    for i in 0..nb {
        let (y0, y1) = band_rows(rows, nb, i);
        let (head, tail) = core::mem::take(&mut x).split_at_mut((y1 - y0) * row);
        x = tail;
        let scratch = sc.next().ok_or(Error::Length {
            buffer: Buffer::Scratch,
            expected: nb * per,
            found: 0,
        })?;
        let band = Band {
            x: head,
            y0,
            y1,
            scratch,
            res: Ok(()),
        };
        if out.push(band).is_err() {
            return Err(Error::Arch("too many bands"));
        }
    }
    Ok(out)
}

/// The first error of any band.
fn finish(bands: &[Band<'_>]) -> Result<(), Error> {
    bands.iter().try_for_each(|b| b.res)
}

/// The stem's weights and shapes: 4x4 stride-4 patch conv, then LN.
struct Stem<'w> {
    conv: PackedB<'w>,
    bias: &'w [f32],
    ln_w: &'w [f32],
    ln_b: &'w [f32],
    cin: usize,
    w: usize,
    w0: usize,
}

impl Stem<'_> {
    /// Output rows `y0..` (as many as `out` holds) from the `[h, w, cin]` input.
    fn rows(
        &self,
        kern: Kernels,
        input: &[f32],
        y0: usize,
        out: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), Error> {
        let (cin, w, w0) = (self.cin, self.w, self.w0);
        let c0 = self.bias.len();
        let k = 16 * cin;
        let patch_len = w0 * k;
        if scratch.len() < patch_len {
            return Err(Error::Length {
                buffer: Buffer::Scratch,
                expected: patch_len,
                found: scratch.len(),
            });
        }
        let patch = &mut scratch[..patch_len];
        for (i, out) in out.chunks_exact_mut(w0 * c0).enumerate() {
            let y = y0 + i;
            for (xo, p) in patch.chunks_exact_mut(k).enumerate() {
                for ky in 0..4 {
                    let src = ((4 * y + ky) * w + 4 * xo) * cin;
                    p[ky * 4 * cin..(ky + 1) * 4 * cin].copy_from_slice(&input[src..src + 4 * cin]);
                }
            }
            kernels::gemm(
                kern,
                MatRef::dense(patch, w0, k),
                self.conv,
                Epilogue::Bias(self.bias),
                MatMut::dense(out, w0, c0),
            )?;
            kernels::layer_norm_rows_inplace(kern, out, c0, self.ln_w, self.ln_b)?;
        }
        Ok(())
    }
}
