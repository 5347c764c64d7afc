//! The QDW conv in half precision ([`Precision::Fp16`], FEAT_FP16), and the writers of its
//! half-precision rows.
//!
//! With an fp16 token the channel-blocked QDW rows hold f16 values: the same layout as the
//! f32 rows (`((ch / 16)·(w + K − 1) + px)·16 + ch % 16`), counted in halves from the start
//! of the row's buffer, so a row uses the first half of its [`qdw_row_len`] floats.
//! [`block_row`], the LayerNorm that writes the rows and the QDW's own copy of the next row
//! round each value to f16 (nearest even) once, as they write it; every output row that
//! reads the input row (K of them) then loads eight channels with one 16-byte load. (Rounding
//! the f32 rows in the QDW instead cost two `fcvtn` per pixel at each of the K reads: the
//! A76 model put the K = 7 group at 61% of the `fmla .8h` peak.)
//!
//! [`scalar::qdw_row_fp16`] defines the arithmetic bit for bit; in short: taps rounded to
//! f16 with their scales folded in, sums in f16 (`fmla .8h`) starting at the biases rounded
//! to f16, the epilogue `y = a·b + c` in f32.
//!
//! [`Precision::Fp16`]: crate::isa::Precision::Fp16
//! [`qdw_row_len`]: super::qdw_row_len
//! [`scalar::qdw_row_fp16`]: super::scalar::qdw_row_fp16

use core::arch::aarch64::*;
use core::mem::MaybeUninit;

use super::aarch64_neon::Neon;
use super::neon_fp16::{fmla, narrow, narrow_run, widen, H8};
use super::simd::{self, ld_any, st_any, Elem, QdwArgs};
use super::{neon_qdw, CBLOCK, MAX_K};

/// Channels of one half-precision chunk: one `.8h` vector.
const CH: usize = 8;

/// Halves from the start of a blocked row of `pw` padded pixels to channel `ch` of padded
/// pixel `x`.
#[inline(always)]
const fn at(ch: usize, pw: usize, x: usize) -> usize {
    ((ch / CBLOCK) * pw + x) * CBLOCK + ch % CBLOCK
}

/// A channels-last row of `w` pixels into the half-precision blocked row `dst` (see the
/// module comment), padding left as it is.
///
/// # Safety
/// NEON; `src` valid for `w·c` floats, `dst` for `qdw_row_len(w, c, k)` floats.
#[inline(always)]
pub(crate) unsafe fn block_row(src: *const f32, w: usize, c: usize, k: usize, dst: *mut u16) {
    // SAFETY: the caller's contract; every half written lies in the row (`at` of a pixel
    // below `pw` and a channel below `c`).
    unsafe {
        let (p, pw) = ((k - 1) / 2, w + k - 1);
        for px in 0..w {
            // Each 16-channel block of the pixel is contiguous in the blocked row.
            let pix = src.add(px * c);
            for b0 in (0..c).step_by(CBLOCK) {
                narrow_run(
                    pix.add(b0),
                    (c - b0).min(CBLOCK),
                    dst.add(at(b0, pw, p + px)),
                );
            }
        }
    }
}

/// Pixels `x0..x0 + q` of the next row (`a.next_src`, if any), channels `c0..c0 + nv`,
/// rounded into its half-precision blocked row.
///
/// # Safety
/// As [`qdw_row`]; `x0 + q <= a.w`, `c0 + nv <= a.c`.
#[inline(always)]
unsafe fn copy_next<const K: usize>(a: &QdwArgs, x0: usize, q: usize, c0: usize, nv: usize) {
    // SAFETY: the caller's contract; the source pixels and channels are inside the row,
    // the destination halves inside the blocked row.
    unsafe {
        if a.next_src.is_null() {
            return;
        }
        let (pw, dst) = (a.w + K - 1, a.next_dst.cast::<u16>());
        for j in x0..x0 + q {
            let src = a.next_src.add(j * a.c + c0);
            // The chunk's `nv <= 8` channels lie in one block, contiguous.
            narrow_run(src, nv, dst.add(at(c0, pw, (K - 1) / 2 + j)));
        }
    }
}

/// Halves before a chunk's taps in its buffer: filters a, b and c's f16 biases, each
/// repeated for the assembly group's 7 pixels (the order of its 21 sums, which start there).
const BIASES: usize = 21 * CH;

/// The chunk's biases and taps rounded to f16 into `hp`: filter `f`'s bias at
/// `(f·7 + q)·8` halves for `q` in 0..7 (`round_f16(bias)`, lanes past `nv` zero), then, from
/// [`BIASES`], the taps with their scales folded in (`round_f16(tap·scale)`): filter `f` of
/// tap `t` at `(t·3 + f)·8` halves on. Lanes past `nv` (in the block's padding) get scale 1.
///
/// # Safety
/// NEON and FEAT_FP16; as [`qdw_row`], `c0 + nv <= a.c`, `nv <= 8`; `hp` valid for
/// `BIASES + K²·3·8` halves.
#[inline(always)]
unsafe fn chunk_taps<W: Elem, const K: usize>(
    a: &QdwArgs,
    taps: *const W,
    c0: usize,
    nv: usize,
    hp: *mut u16,
) {
    // SAFETY: the caller's contract; the packed taps hold whole 16-channel blocks, so the
    // eight lanes from `c0` (a multiple of 8) are inside them.
    unsafe {
        let wblk = simd::chunk_taps::<W, K>(taps, c0);
        let mut sc = [[1.0f32; CH]; 3];
        let mut bias = [[0.0f32; CH]; 3];
        for f in 0..3 {
            for i in 0..nv {
                sc[f][i] = *a.scales.add(f * a.c + c0 + i);
                bias[f][i] = *a.bias.add(f * a.c + c0 + i);
            }
        }
        for (f, b) in bias.iter().enumerate() {
            let h = narrow(vld1q_f32(b.as_ptr()), vld1q_f32(b.as_ptr().add(4)));
            for q in 0..7 {
                vst1q_u16(hp.add((f * 7 + q) * CH), h);
            }
        }
        let tp = hp.add(BIASES);
        for t in 0..K * K {
            for (f, s) in sc.iter().enumerate() {
                let src = wblk.add((t * 3 + f) * CBLOCK);
                let lo = vmulq_f32(W::load::<Neon>(src), vld1q_f32(s.as_ptr()));
                let hi = vmulq_f32(W::load::<Neon>(src.add(4)), vld1q_f32(s.as_ptr().add(4)));
                vst1q_u16(tp.add((t * 3 + f) * CH), narrow(lo, hi));
            }
        }
    }
}

/// One QDW output row in half precision, reading half-precision rows (see the module
/// comment): eight channels at a time, full groups of 7 pixels in the generated assembly
/// (`neon_qdw::taps_k*_fp16`), the rest (pixels past the last group, channels past the
/// last multiple of 8) in groups of 4, 2 and 1 here, with the same arithmetic.
///
/// # Safety
/// NEON and FEAT_FP16 enabled in the calling leaf; `a` and `taps` as `kernels::qdw_row`
/// checked them, the rows holding halves.
#[inline(always)]
pub(crate) unsafe fn qdw_row<W: Elem, const K: usize>(a: &QdwArgs, taps: *const W) {
    // SAFETY: the caller's contract; `c0 + nv <= a.c` and every group's pixels lie in
    // `0..a.w`.
    unsafe {
        let pw = a.w + K - 1;
        let mut c0 = 0;
        while c0 < a.c {
            let nv = (a.c - c0).min(CH);
            // Not zeroed: the groups read exactly the `21 + K²·3` vectors written here.
            let mut half = MaybeUninit::<[u16; BIASES + MAX_K * MAX_K * 3 * CH]>::uninit();
            let hp = half.as_mut_ptr().cast::<u16>();
            chunk_taps::<W, K>(a, taps, c0, nv, hp);
            let rows: [*const u16; K] =
                core::array::from_fn(|ky| a.rows[ky].cast::<u16>().add(at(c0, pw, 0)));
            let mut x0 = 0;
            if nv == CH {
                x0 = if a.gamma.is_null() {
                    groups::<K, false>(a, &rows, hp, c0)
                } else {
                    groups::<K, true>(a, &rows, hp, c0)
                };
            }
            while x0 + 4 <= a.w {
                pixels::<K, 4>(a, &rows, hp, x0, c0, nv);
                x0 += 4;
            }
            if x0 + 2 <= a.w {
                pixels::<K, 2>(a, &rows, hp, x0, c0, nv);
                x0 += 2;
            }
            if x0 < a.w {
                pixels::<K, 1>(a, &rows, hp, x0, c0, nv);
            }
            c0 += CH;
        }
    }
}

/// The full 7-pixel groups of the eight channels from `c0`; returns the first pixel not
/// done.
///
/// # Safety
/// As [`qdw_row`]; `c0 + 8 <= a.c`; `rows` at the chunk's pixel 0, `hp` its f16 biases and
/// taps ([`chunk_taps`]).
#[inline(always)]
unsafe fn groups<const K: usize, const GAMMA: bool>(
    a: &QdwArgs,
    rows: &[*const u16; K],
    hp: *const u16,
    c0: usize,
) -> usize {
    // SAFETY: the caller's contract; `K` ∈ {3, 5, 7}, so each cast names the array the
    // rows are.
    unsafe {
        let f = neon_qdw::Finish {
            stride: 4 * a.c,
            scales: a.scales,
            bias: a.bias.add(c0),
            gamma: if GAMMA { a.gamma.add(c0) } else { a.gamma },
        };
        let mut out = a.out.add(c0);
        let r = rows.as_ptr();
        let mut x0 = 0;
        while x0 + 7 <= a.w {
            copy_next::<K>(a, x0, 7, c0, CH);
            let off = x0 * CBLOCK * 2;
            let t = match K {
                3 => neon_qdw::taps_k3_fp16(&*r.cast(), off, hp),
                5 => neon_qdw::taps_k5_fp16(&*r.cast(), off, hp),
                _ => neon_qdw::taps_k7_fp16(&*r.cast(), off, hp),
            };
            out = if GAMMA {
                neon_qdw::finish_fp16_gamma(t, out, &f)
            } else {
                neon_qdw::finish_fp16_store(t, out, &f)
            };
            x0 += 7;
        }
        x0
    }
}

/// `Q` pixels from `x0`, channels `c0..c0 + nv`: the assembly's arithmetic in intrinsics.
///
/// # Safety
/// As [`groups`], with `c0 + nv <= a.c` and `x0 + Q <= a.w`.
#[inline(always)]
unsafe fn pixels<const K: usize, const Q: usize>(
    a: &QdwArgs,
    rows: &[*const u16; K],
    hp: *const u16,
    x0: usize,
    c0: usize,
    nv: usize,
) {
    // SAFETY: the caller's contract; the loads of eight lanes stay in the chunk's
    // 16-channel block of the rows and taps; `out` is accessed for `nv` lanes only.
    unsafe {
        copy_next::<K>(a, x0, Q, c0, nv);
        // The sums start at the filters' f16 biases.
        let mut acc: [[H8; Q]; 3] = core::array::from_fn(|f| [vld1q_u16(hp.add(f * 7 * CH)); Q]);
        let tp = hp.add(BIASES);
        for (ky, row) in rows.iter().enumerate() {
            for kx in 0..K {
                let t = ky * K + kx;
                let tv: [H8; 3] = core::array::from_fn(|f| vld1q_u16(tp.add((t * 3 + f) * CH)));
                for q in 0..Q {
                    let xv = vld1q_u16(row.add((x0 + q + kx) * CBLOCK));
                    for (sum, &tap) in acc.iter_mut().zip(&tv) {
                        sum[q] = fmla(sum[q], tap, xv);
                    }
                }
            }
        }
        // The chunk's gamma, zero past `nv`.
        let mut gm = [0.0f32; CH];
        if !a.gamma.is_null() {
            for (i, g) in gm.iter_mut().enumerate().take(nv) {
                *g = *a.gamma.add(c0 + i);
            }
        }
        for q in 0..Q {
            let o = a.out.add((x0 + q) * a.c + c0);
            let sums = [widen(acc[0][q]), widen(acc[1][q]), widen(acc[2][q])];
            for (h, n) in [(0, nv.min(4)), (1, nv.saturating_sub(4))] {
                if n == 0 {
                    continue;
                }
                let v: [float32x4_t; 3] =
                    core::array::from_fn(|f| if h == 0 { sums[f].0 } else { sums[f].1 });
                let y = vfmaq_f32(v[2], v[0], v[1]);
                let p = o.add(4 * h);
                let y = if a.gamma.is_null() {
                    y
                } else {
                    vfmaq_f32(ld_any::<Neon>(p, n), vld1q_f32(gm.as_ptr().add(4 * h)), y)
                };
                st_any::<Neon>(p, y, n);
            }
        }
    }
}
