//! From PyTorch's state_dict to the packed weight streams: the official key names, in the
//! order the streams hold them ([`visit_tensors`]), and how each tensor is packed.

use core::fmt::Write;

use crate::arch::Arch;
use crate::error::{Buffer, Error};
use crate::kernels::{PackedB, QdwWeights};
use crate::weights::{mat_pad, vec_pad, FloatBlocks};

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
    /// dot-product layout (`kernels::PackedB::dot_index`) of the int8 GEMM.
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

pub(super) type Name = heapless::String<64>;

pub(super) fn name(args: core::fmt::Arguments<'_>) -> Result<Name, Error> {
    let mut n = Name::new();
    n.write_fmt(args)
        .map_err(|_| Error::Arch("tensor name longer than 64 bytes"))?;
    Ok(n)
}

/// Walks the layout, handing out offsets in both streams.
pub(super) struct Walk<F> {
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

pub(super) fn region(dst: &mut [f32], start: usize, len: usize) -> Result<&mut [f32], Error> {
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
