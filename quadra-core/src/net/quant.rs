//! Quantisation of a packed f32 model: f16, int8 (weight-only) and w8a8 matrix streams,
//! per-output-channel scales, and the checks a loaded int8 model must pass.

use super::*;
use crate::arch::Arch;
use crate::error::{Buffer, Error};
use crate::kernels::{Dtype, MatData, PackedB, QdwWeights, PANEL};
use crate::weights::Weights;

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
pub(super) enum Channels {
    /// GEMM panels: channel `j` of `n` is column `j`, `k` elements.
    Panels { k: usize, n: usize },
    /// GEMM panels in the dot-product layout (`kernels::PackedB::dot_index`).
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
