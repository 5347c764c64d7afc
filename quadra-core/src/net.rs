//! The whole network: the packed weight layout, packing from PyTorch's state_dict, and the
//! forward pass over one caller-provided arena.

use core::fmt::Write;

use crate::arch::{default_strip, Arch, Plan};
use crate::block::{block_forward, BlockDims, BlockWeights, Cursor};
use crate::error::{Buffer, Error};
use crate::isa::Kernels;
use crate::kernels::{self, Epilogue, MatMut, MatRef, PackedB, QdwWeights};
use crate::math::layer_norm;

/// How a PyTorch tensor is laid out in the packed weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// Copied as is (vectors).
    Copy,
    /// A `[n, k]` Linear weight, packed as `B[k][n]` panels.
    Linear,
    /// A `[n, c, kh, kw]` patch conv weight, packed as `B[(ky·kw + kx)·c + ci][n]` panels, the
    /// order in which a channels-last patch is gathered.
    PatchConv,
    /// Filter `f` (0 = a, 1 = b, 2 = c) of a QDW conv, `[d, 1, K, K]`, interleaved into the
    /// taps that start at the slot's offset.
    QdwTaps(u8),
}

/// One tensor of the state_dict and where it goes.
#[derive(Debug)]
pub struct TensorSlot<'n> {
    /// PyTorch state_dict key.
    pub name: &'n str,
    /// PyTorch shape.
    pub shape: &'n [usize],
    /// Offset of its packed form in the packed weights.
    pub offset: usize,
    /// How it is packed.
    pub packing: Packing,
}

type Name = heapless::String<64>;

fn name(args: core::fmt::Arguments<'_>) -> Result<Name, Error> {
    let mut n = Name::new();
    n.write_fmt(args)
        .map_err(|_| Error::Arch("tensor name longer than 64 bytes"))?;
    Ok(n)
}

/// Visits every tensor of the official state_dict of `arch`, in packed order, with its
/// name, shape, packed offset and packing. Identity blocks have no tensors.
pub fn visit_tensors<E: From<Error>>(
    arch: &Arch<'_>,
    mut f: impl FnMut(TensorSlot<'_>) -> Result<(), E>,
) -> Result<(), E> {
    arch.validate()?;
    let mut off = 0usize;
    let mut emit = |n: Name, shape: &[usize], len: usize, packing: Packing| {
        let r = f(TensorSlot {
            name: &n,
            shape,
            offset: off,
            packing,
        });
        off += len;
        r
    };
    let (cin, c0) = (arch.in_chans, arch.dim(0));
    let stem = "downsample_layers.0";
    emit(
        name(format_args!("{stem}.0.weight"))?,
        &[c0, cin, 4, 4],
        PackedB::packed_len(16 * cin, c0),
        Packing::PatchConv,
    )?;
    emit(
        name(format_args!("{stem}.0.bias"))?,
        &[c0],
        c0,
        Packing::Copy,
    )?;
    emit(
        name(format_args!("{stem}.1.weight"))?,
        &[c0],
        c0,
        Packing::Copy,
    )?;
    emit(
        name(format_args!("{stem}.1.bias"))?,
        &[c0],
        c0,
        Packing::Copy,
    )?;
    for s in 0..4 {
        let d = arch.dim(s);
        if s > 0 {
            let dp = arch.dim(s - 1);
            let ds = |what: &str| name(format_args!("downsample_layers.{s}.{what}"));
            emit(ds("0.weight")?, &[dp], dp, Packing::Copy)?;
            emit(ds("0.bias")?, &[dp], dp, Packing::Copy)?;
            let len = PackedB::packed_len(4 * dp, d);
            emit(ds("1.weight")?, &[d, dp, 2, 2], len, Packing::PatchConv)?;
            emit(ds("1.bias")?, &[d], d, Packing::Copy)?;
        }
        for (b, spec) in arch.stages[s].blocks.iter().enumerate() {
            if spec.is_identity() {
                continue;
            }
            let (k, e) = (spec.kernel as usize, spec.expansion as usize);
            let t = |what: &str| name(format_args!("stages.{s}.{b}.{what}"));
            emit(t("gamma1")?, &[d], d, Packing::Copy)?;
            emit(t("norm1.weight")?, &[d], d, Packing::Copy)?;
            emit(t("norm1.bias")?, &[d], d, Packing::Copy)?;
            let taps = QdwWeights::taps_len(k, d);
            for f in 0..3u8 {
                let n = t([
                    "QuadraConv.conv1.weight",
                    "QuadraConv.conv2.weight",
                    "QuadraConv.conv3.weight",
                ][f as usize])?;
                // The three filters share one interleaved region: only the last advances.
                let len = if f == 2 { taps } else { 0 };
                emit(n, &[d, 1, k, k], len, Packing::QdwTaps(f))?;
            }
            for f in [
                "QuadraConv.conv1.bias",
                "QuadraConv.conv2.bias",
                "QuadraConv.conv3.bias",
            ] {
                emit(t(f)?, &[d], d, Packing::Copy)?;
            }
            emit(t("gamma2")?, &[d], d, Packing::Copy)?;
            emit(t("norm2.weight")?, &[d], d, Packing::Copy)?;
            emit(t("norm2.bias")?, &[d], d, Packing::Copy)?;
            let (ec, pw1) = (e * d, PackedB::packed_len(d, e * d));
            emit(t("pwconv1.weight")?, &[ec, d], pw1, Packing::Linear)?;
            emit(t("pwconv1.bias")?, &[ec], ec, Packing::Copy)?;
            let pw2 = PackedB::packed_len(ec, d);
            emit(t("pwconv2.weight")?, &[d, ec], pw2, Packing::Linear)?;
            emit(t("pwconv2.bias")?, &[d], d, Packing::Copy)?;
        }
    }
    let (d3, nc) = (arch.dim(3), arch.num_classes);
    emit(name(format_args!("norm.weight"))?, &[d3], d3, Packing::Copy)?;
    emit(name(format_args!("norm.bias"))?, &[d3], d3, Packing::Copy)?;
    let head = PackedB::packed_len(d3, nc);
    emit(
        name(format_args!("head.weight"))?,
        &[nc, d3],
        head,
        Packing::Linear,
    )?;
    emit(name(format_args!("head.bias"))?, &[nc], nc, Packing::Copy)?;
    Ok(())
}

/// Packs one tensor (PyTorch layout, `shape` as in its slot) into `dst`, which starts at the
/// slot's offset.
pub fn pack_tensor(slot: &TensorSlot<'_>, src: &[f32], dst: &mut [f32]) -> Result<(), Error> {
    let numel: usize = slot.shape.iter().product();
    if src.len() != numel {
        return Err(Error::Length {
            buffer: Buffer::Weights,
            expected: numel,
            found: src.len(),
        });
    }
    let len = match slot.packing {
        Packing::Copy => numel,
        Packing::Linear => PackedB::packed_len(slot.shape[1], slot.shape[0]),
        Packing::PatchConv => PackedB::packed_len(numel / slot.shape[0], slot.shape[0]),
        Packing::QdwTaps(_) => QdwWeights::taps_len(slot.shape[2], slot.shape[0]),
    };
    let Some(dst) = dst.get_mut(..len) else {
        return Err(Error::Length {
            buffer: Buffer::Weights,
            expected: len,
            found: dst.len(),
        });
    };
    match slot.packing {
        Packing::Copy => dst.copy_from_slice(src),
        Packing::Linear => {
            let (n, k) = (slot.shape[0], slot.shape[1]);
            PackedB::pack(k, n, dst, |kk, j| src[j * k + kk])?;
        }
        Packing::PatchConv => {
            let (n, c, kh, kw) = (slot.shape[0], slot.shape[1], slot.shape[2], slot.shape[3]);
            PackedB::pack(c * kh * kw, n, dst, |kk, j| {
                let (t, ci) = (kk / c, kk % c);
                let (ky, kx) = (t / kw, t % kw);
                src[((j * c + ci) * kh + ky) * kw + kx]
            })?;
        }
        Packing::QdwTaps(f) => {
            let (d, k, f) = (slot.shape[0], slot.shape[2], f as usize);
            for t in 0..k * k {
                for ch in 0..d {
                    dst[t * 3 * d + f * d + ch] = src[ch * k * k + t];
                }
            }
        }
    }
    Ok(())
}

/// Packs a whole state_dict into `out` (`arch.weights_len()` floats). `get(name, shape)`
/// returns the tensor in PyTorch layout as f32, or an error naming what is wrong with it.
pub fn pack_model<'s, E: From<Error>>(
    arch: &Arch<'_>,
    out: &mut [f32],
    mut get: impl FnMut(&str, &[usize]) -> Result<&'s [f32], E>,
) -> Result<(), E> {
    let need = arch.weights_len();
    if out.len() != need {
        return Err(Error::Length {
            buffer: Buffer::Weights,
            expected: need,
            found: out.len(),
        }
        .into());
    }
    visit_tensors(arch, |slot| {
        let src = get(slot.name, slot.shape)?;
        pack_tensor(&slot, src, &mut out[slot.offset..])?;
        Ok(())
    })
}

/// A network ready to run: an architecture and its packed f32 weights.
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    arch: Arch<'a>,
    weights: &'a [f32],
}

impl<'a> Model<'a> {
    /// Checks the architecture and that `weights` has exactly `arch.weights_len()` floats.
    pub fn new(arch: Arch<'a>, weights: &'a [f32]) -> Result<Self, Error> {
        arch.validate()?;
        if weights.len() != arch.weights_len() {
            return Err(Error::Length {
                buffer: Buffer::Weights,
                expected: arch.weights_len(),
                found: weights.len(),
            });
        }
        Ok(Model { arch, weights })
    }

    /// The architecture.
    pub const fn arch(&self) -> &Arch<'a> {
        &self.arch
    }

    /// Classifies one image: `input` is channels-last `[h, w, in_chans]`, `logits` gets
    /// `num_classes` floats, `arena` needs `arch.arena_len(h, w)` floats.
    pub fn forward(
        &self,
        kern: Kernels,
        input: &[f32],
        h: usize,
        w: usize,
        arena: &mut [f32],
        logits: &mut [f32],
    ) -> Result<(), Error> {
        let nc = self.arch.num_classes;
        if logits.len() != nc {
            return Err(Error::Length {
                buffer: Buffer::Output,
                expected: nc,
                found: logits.len(),
            });
        }
        let (mut cur, plan) = self.run_body(kern, input, h, w, arena)?;
        let d3 = self.arch.dim(3);
        let (_, scratch) = arena.split_at_mut(plan.act_len);
        let (normed, _) = scratch[d3..2 * d3].split_at_mut(d3);
        let head = cur.take_b(d3, nc)?;
        let bias = cur.take(nc)?;
        kernels::gemm(
            kern,
            MatRef {
                data: normed,
                rows: 1,
                cols: d3,
                stride: d3,
            },
            head,
            Epilogue::Bias(bias),
            MatMut {
                data: logits,
                rows: 1,
                cols: nc,
                stride: nc,
            },
        )
    }

    /// The pooled, normalised embedding before the head (`dims[3]` floats): what a new
    /// head would be trained on.
    pub fn forward_features(
        &self,
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
        let (_, plan) = self.run_body(kern, input, h, w, arena)?;
        features.copy_from_slice(&arena[plan.act_len + d3..plan.act_len + 2 * d3]);
        Ok(())
    }

    /// Stem, stages, pooling and the final norm. Leaves the normalised pooled features at
    /// `scratch[d3..2·d3]` and returns the weight cursor at the head.
    fn run_body(
        &self,
        kern: Kernels,
        input: &[f32],
        h: usize,
        w: usize,
        arena: &mut [f32],
    ) -> Result<(Cursor<'a>, Plan), Error> {
        let arch = &self.arch;
        if h < 32 || w < 32 {
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
        let plan = arch.plan(h, w);
        if arena.len() < plan.arena_len() {
            return Err(Error::Length {
                buffer: Buffer::Arena,
                expected: plan.arena_len(),
                found: arena.len(),
            });
        }
        let (act, scratch) = arena.split_at_mut(plan.act_len);
        let mut cur = Cursor::new(self.weights);

        // Stem: 4x4 stride-4 patches, one output row at a time, then LN in place.
        let c0 = arch.dim(0);
        let (h0, w0) = plan.hw[0];
        let stem = cur.take_b(16 * cin, c0)?;
        let stem_b = cur.take(c0)?;
        let (ln_w, ln_b) = (cur.take(c0)?, cur.take(c0)?);
        let x0 = &mut act[plan.offsets[0]..plan.offsets[0] + h0 * w0 * c0];
        for y in 0..h0 {
            let patch = &mut scratch[..w0 * 16 * cin];
            for (xo, p) in patch.chunks_exact_mut(16 * cin).enumerate() {
                for ky in 0..4 {
                    let src = ((4 * y + ky) * w + 4 * xo) * cin;
                    p[ky * 4 * cin..(ky + 1) * 4 * cin].copy_from_slice(&input[src..src + 4 * cin]);
                }
            }
            let out = &mut x0[y * w0 * c0..(y + 1) * w0 * c0];
            kernels::gemm(
                kern,
                MatRef {
                    data: patch,
                    rows: w0,
                    cols: 16 * cin,
                    stride: 16 * cin,
                },
                stem,
                Epilogue::Bias(stem_b),
                MatMut {
                    data: out,
                    rows: w0,
                    cols: c0,
                    stride: c0,
                },
            )?;
            let tmp = &mut scratch[..c0];
            for px in out.chunks_exact_mut(c0) {
                layer_norm(px, ln_w, ln_b, tmp);
                px.copy_from_slice(tmp);
            }
        }

        for s in 0..4 {
            let (sh, sw) = plan.hw[s];
            let d = arch.dim(s);
            if s > 0 {
                self.downsample(kern, &mut cur, &plan, s, act, scratch)?;
            }
            let x = &mut act[plan.offsets[s]..plan.offsets[s] + sh * sw * d];
            for spec in arch.stages[s].blocks {
                if spec.is_identity() {
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
                block_forward(kern, dims, default_strip(sh, sw, d, e), &bw, x, scratch)?;
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
        let (nw, nb) = (cur.take(d3)?, cur.take(d3)?);
        layer_norm(pooled, nw, nb, &mut rest[..d3]);
        Ok((cur, plan))
    }

    /// LN + 2x2 stride-2 conv from stage `s-1` to stage `s`, one output row at a time. The
    /// output row `y` is written only after input rows `2y, 2y+1` are gathered, and the plan
    /// places it behind every input row still to be read.
    fn downsample(
        &self,
        kern: Kernels,
        cur: &mut Cursor<'a>,
        plan: &Plan,
        s: usize,
        act: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), Error> {
        let (dp, d) = (self.arch.dim(s - 1), self.arch.dim(s));
        let (ho, wo) = plan.hw[s];
        let wi = plan.hw[s - 1].1;
        let (ln_w, ln_b) = (cur.take(dp)?, cur.take(dp)?);
        let conv = cur.take_b(4 * dp, d)?;
        let bias = cur.take(d)?;
        let (oi, oo) = (plan.offsets[s - 1], plan.offsets[s]);
        for y in 0..ho {
            let patch = &mut scratch[..wo * 4 * dp];
            for (xo, p) in patch.chunks_exact_mut(4 * dp).enumerate() {
                for t in 0..4 {
                    let (ky, kx) = (t / 2, t % 2);
                    let src = oi + ((2 * y + ky) * wi + 2 * xo + kx) * dp;
                    layer_norm(
                        &act[src..src + dp],
                        ln_w,
                        ln_b,
                        &mut p[t * dp..(t + 1) * dp],
                    );
                }
            }
            let out = &mut act[oo + y * wo * d..oo + (y + 1) * wo * d];
            kernels::gemm(
                kern,
                MatRef {
                    data: patch,
                    rows: wo,
                    cols: 4 * dp,
                    stride: 4 * dp,
                },
                conv,
                Epilogue::Bias(bias),
                MatMut {
                    data: out,
                    rows: wo,
                    cols: d,
                    stride: d,
                },
            )?;
        }
        Ok(())
    }
}
