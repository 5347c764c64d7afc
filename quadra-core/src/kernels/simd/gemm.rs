//! The pointwise GEMM with fused epilogues: register tiles over packed weight panels,
//! f16/int8 weights widened on load (or once per call), and the epilogue on the tile.

use super::{gelu, ld_any, st_any, Elem, Simd};
use crate::kernels::{Epilogue, PANEL};

#[derive(Clone, Copy)]
pub(crate) enum EpiKind {
    Bias,
    Gelu,
    ScaleAdd,
}

/// The epilogue as raw pointers (lengths checked by `kernels::gemm`).
#[derive(Clone, Copy)]
pub(crate) struct EpiPtrs {
    kind: EpiKind,
    bias: *const f32,
    gamma: *const f32,
}

impl EpiPtrs {
    /// The bias of a GELU epilogue, `None` for the other kinds: for a kernel that computes
    /// that one its own way (`neon_fp16`'s half-precision GELU).
    #[allow(dead_code)] // used by the aarch64 fp16 kernel only
    pub(crate) fn gelu_bias(&self) -> Option<*const f32> {
        match self.kind {
            EpiKind::Gelu => Some(self.bias),
            _ => None,
        }
    }

    /// The bias (null if none) and gamma of a `ScaleAdd` epilogue (PW2's residual),
    /// `None` for the other kinds: for the int8 tile that applies it from its registers.
    #[allow(dead_code)] // used by the aarch64 int8 and fp16 kernels only
    pub(crate) fn scale_add(&self) -> Option<(*const f32, *const f32)> {
        match self.kind {
            EpiKind::ScaleAdd => Some((self.bias, self.gamma)),
            _ => None,
        }
    }

    pub(crate) fn new(epi: Epilogue<'_>) -> Self {
        match epi {
            Epilogue::Bias(bias) => EpiPtrs {
                kind: EpiKind::Bias,
                bias: bias.as_ptr(),
                gamma: core::ptr::null(),
            },
            Epilogue::BiasGelu(bias) => EpiPtrs {
                kind: EpiKind::Gelu,
                bias: bias.as_ptr(),
                gamma: core::ptr::null(),
            },
            Epilogue::BiasScaleAdd { bias, gamma } => EpiPtrs {
                kind: EpiKind::ScaleAdd,
                bias: bias.as_ptr(),
                gamma: gamma.as_ptr(),
            },
            Epilogue::ScaleAdd { gamma } => EpiPtrs {
                kind: EpiKind::ScaleAdd,
                bias: core::ptr::null(),
                gamma: gamma.as_ptr(),
            },
        }
    }

    /// The epilogue of columns `j..`.
    ///
    /// # Safety
    /// `j` within the columns the pointers were checked for.
    pub(crate) unsafe fn offset(self, j: usize) -> Self {
        // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
        // lengths documented above) is what the body relies on.
        unsafe {
            EpiPtrs {
                kind: self.kind,
                bias: if self.bias.is_null() {
                    self.bias
                } else {
                    self.bias.add(j)
                },
                gamma: if self.gamma.is_null() {
                    self.gamma
                } else {
                    self.gamma.add(j)
                },
            }
        }
    }
}

/// Raw form of one GEMM call (everything but B), built by `kernels::gemm`.
pub(crate) struct GemmArgs {
    pub a: *const f32,
    pub m: usize,
    pub lda: usize,
    pub k: usize,
    pub n: usize,
    /// Distance between weight panels.
    pub pstride: usize,
    pub scales: *const f32,
    pub epi: EpiPtrs,
    pub out: *mut f32,
    pub ldo: usize,
}

/// Widest GEMM tile, in columns (the stride of the stack tile the epilogue reads).
pub(crate) const TILE_COLS: usize = 64;

/// Weight panels walked a cache line at a time and hinted into L2: while a column tile
/// computes, its row tiles pull in the next column tile's panels, so the next tile's first
/// row tile does not wait on memory for all of them (a 7x7x512 block streams 8 MB of
/// weights from DRAM, each line used by only 49 pixels).
#[derive(Clone, Copy)]
struct Prefetch {
    p: *const u8,
    /// Bytes left in the current panel.
    left: usize,
    /// Bytes of a panel.
    bytes: usize,
    /// Bytes from the end of a panel to the start of the next.
    skip: usize,
    /// Panels left, the current one included.
    panels: usize,
}

impl Prefetch {
    const NONE: Self = Prefetch {
        p: core::ptr::null(),
        left: 0,
        bytes: 0,
        skip: 0,
        panels: 0,
    };

    /// `panels` panels of `k` rows from `b`, `pstride` elements apart.
    fn panels<W>(b: *const W, k: usize, pstride: usize, panels: usize) -> Self {
        let (size, bytes) = (
            core::mem::size_of::<W>(),
            k * PANEL * core::mem::size_of::<W>(),
        );
        Prefetch {
            p: b.cast(),
            left: bytes,
            bytes,
            skip: (pstride * size).saturating_sub(bytes),
            panels: if bytes == 0 { 0 } else { panels },
        }
    }

    /// Hints the next line, if any is left.
    #[inline(always)]
    unsafe fn step<S: Simd>(&mut self) {
        // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
        // lengths documented above) is what the body relies on.
        unsafe {
            if self.panels > 0 {
                S::prefetch_l2(self.p);
                let n = self.left.min(64);
                self.left -= n;
                self.p = self.p.wrapping_add(n);
                if self.left == 0 {
                    self.panels -= 1;
                    self.p = self.p.wrapping_add(self.skip);
                    self.left = self.bytes;
                }
            }
        }
    }
}

/// Pointers and strides of one column tile, shared by its row tiles.
#[derive(Clone, Copy)]
struct Tile<W> {
    lda: usize,
    k: usize,
    b: *const W,
    pstride: usize,
    cols: usize,
    scales: *const f32,
    epi: EpiPtrs,
    ldo: usize,
}

/// `out = epi(scales ⊙ A·B)`. Column tiles of `NV` vectors (whole [`PANEL`]-column
/// panels) outer, row tiles of `MR` pixels inner, so the tile's weight panels stay in L1
/// while A streams through. The last column tile narrows to the panels that are left.
///
/// # Safety
/// Pointers as checked by `kernels::gemm`; `NV·LANES` a multiple of [`PANEL`] and at most 64.
#[inline(always)]
pub(crate) unsafe fn gemm<S: Simd, W: Elem, const MR: usize, const NV: usize>(
    g: &GemmArgs,
    b: *const W,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let tile_cols = NV * S::LANES;
        let per_panel = PANEL / S::LANES;
        let pstride = g.pstride;
        let mut j0 = 0;
        while j0 < g.n {
            let cols = (g.n - j0).min(tile_cols);
            let t = Tile {
                lda: g.lda,
                k: g.k,
                b: b.add((j0 / PANEL) * pstride),
                pstride,
                cols,
                scales: g.scales.add(j0),
                epi: g.epi.offset(j0),
                ldo: g.ldo,
            };
            let out = g.out.add(j0);
            let next = j0 + cols;
            let pf = if next < g.n {
                let panels = (g.n - next).div_ceil(PANEL).min(tile_cols / PANEL);
                Prefetch::panels(b.add((next / PANEL) * pstride), g.k, pstride, panels)
            } else {
                Prefetch::NONE
            };
            // Vectors of the panels this tile has (the packed matrix is padded to whole panels).
            match cols.div_ceil(PANEL) * per_panel {
                1 if NV > 1 => gemm_cols::<S, W, MR, 1>(g.a, g.m, t, out, pf),
                2 if NV > 2 => gemm_cols::<S, W, MR, 2>(g.a, g.m, t, out, pf),
                3 if NV > 3 => gemm_cols::<S, W, MR, 3>(g.a, g.m, t, out, pf),
                _ => gemm_cols::<S, W, MR, NV>(g.a, g.m, t, out, pf),
            }
            j0 += cols;
        }
    }
}

/// Largest inner dimension whose f16 or int8 weight panels [`gemm_widened`] widens into a
/// stack copy (`WIDE_K·16` floats, 32 KB): every pointwise layer of the presets up to
/// QuadraNet36-T. Wider GEMMs widen each weight as it is used.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))] // NEON's choice
pub(crate) const WIDE_K: usize = 512;

/// [`gemm`] for f16 or int8 weights, each 16-column panel widened to f32 once per call
/// into a stack copy, which the f32 tiles then read: the widening is paid once per panel
/// instead of once per row tile. Where the widening costs more than a load (NEON: three
/// vector ops per f16 vector, two per int8 one, on the same pipes as `fmla`), this runs the
/// f32 GEMM's main loop. The arithmetic is the per-use path's, so the results are identical.
/// Only for tiles of one panel (`NV·LANES == PANEL`).
///
/// # Safety
/// As [`gemm`]; `g.k <= WIDE_K`.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))] // NEON's choice
#[inline(always)]
pub(crate) unsafe fn gemm_widened<S: Simd, W: Elem, const MR: usize, const NV: usize>(
    g: &GemmArgs,
    b: *const W,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        debug_assert!(NV * S::LANES == PANEL && g.k <= WIDE_K);
        // Every float a tile reads (`k·PANEL` of them) is written first.
        let mut wide = core::mem::MaybeUninit::<[f32; WIDE_K * PANEL]>::uninit();
        let wp = wide.as_mut_ptr().cast::<f32>();
        let mut j0 = 0;
        while j0 < g.n {
            let cols = (g.n - j0).min(PANEL);
            // A whole panel (the packed matrix is padded to whole panels).
            let src = b.add((j0 / PANEL) * g.pstride);
            let mut e = 0;
            while e < g.k * PANEL {
                S::store(wp.add(e), W::load::<S>(src.add(e)));
                e += S::LANES;
            }
            let t = Tile {
                lda: g.lda,
                k: g.k,
                b: wp as *const f32,
                pstride: g.k * PANEL,
                cols,
                scales: g.scales.add(j0),
                epi: g.epi.offset(j0),
                ldo: g.ldo,
            };
            let next = j0 + cols;
            let pf = if next < g.n {
                Prefetch::panels(b.add((next / PANEL) * g.pstride), g.k, g.pstride, 1)
            } else {
                Prefetch::NONE
            };
            gemm_cols::<S, f32, MR, NV>(g.a, g.m, t, g.out.add(j0), pf);
            j0 += cols;
        }
    }
}

#[inline(always)]
unsafe fn gemm_cols<S: Simd, W: Elem, const MR: usize, const NV: usize>(
    a: *const f32,
    m: usize,
    t: Tile<W>,
    out: *mut f32,
    mut pf: Prefetch,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let (lda, ldo) = (t.lda, t.ldo);
        let mut i0 = 0;
        while i0 + MR <= m {
            tile::<S, W, MR, NV>(a.add(i0 * lda), &t, out.add(i0 * ldo), &mut pf);
            i0 += MR;
        }
        if MR > 4 && i0 + 4 <= m {
            tile::<S, W, 4, NV>(a.add(i0 * lda), &t, out.add(i0 * ldo), &mut pf);
            i0 += 4;
        }
        if MR > 2 && i0 + 2 <= m {
            tile::<S, W, 2, NV>(a.add(i0 * lda), &t, out.add(i0 * ldo), &mut pf);
            i0 += 2;
        }
        while i0 < m {
            tile::<S, W, 1, NV>(a.add(i0 * lda), &t, out.add(i0 * ldo), &mut pf);
            i0 += 1;
        }
    }
}

/// One `M x (NV·LANES)` tile: `M·NV` accumulators live in registers across the whole
/// inner dimension, then the epilogue runs on them before the single store.
#[inline(always)]
unsafe fn tile<S: Simd, W: Elem, const M: usize, const NV: usize>(
    a: *const f32,
    t: &Tile<W>,
    out: *mut f32,
    pf: &mut Prefetch,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let mut acc = [[S::zero(); NV]; M];
        macro_rules! step {
            ($kk:expr) => {{
                let kk = $kk;
                let mut bv = [S::zero(); NV];
                for (j, v) in bv.iter_mut().enumerate() {
                    let col = j * S::LANES;
                    *v =
                        W::load::<S>(t.b.add((col / PANEL) * t.pstride + kk * PANEL + col % PANEL));
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = S::splat(*a.add(i * t.lda + kk));
                    for (acc, &bvj) in row.iter_mut().zip(bv.iter()) {
                        *acc = S::fmadd(av, bvj, *acc);
                    }
                }
            }};
        }
        // With by-element FMAs (NEON: 4 lanes), one load of four k per activation row feeds
        // the four steps: a broadcast load per row and step (`ld1r`, two micro-ops) held the
        // modeled A76 at 69% of its fmla peak on the 5 x 16 tile.
        macro_rules! lane_step {
            ($a4:expr, $kk:expr, $lane:literal) => {{
                let kk = $kk + $lane;
                let mut bv = [S::zero(); NV];
                for (j, v) in bv.iter_mut().enumerate() {
                    let col = j * S::LANES;
                    *v =
                        W::load::<S>(t.b.add((col / PANEL) * t.pstride + kk * PANEL + col % PANEL));
                }
                for (row, &a4) in acc.iter_mut().zip($a4.iter()) {
                    for (acc, &bvj) in row.iter_mut().zip(bv.iter()) {
                        *acc = S::fmadd_lane::<$lane>(a4, bvj, *acc);
                    }
                }
            }};
        }
        let mut kk = 0;
        while kk + 4 <= t.k {
            // Two lines per four k steps: the next column tile's panels are covered by the
            // time eight row tiles have run (a 7x7 map has nine).
            pf.step::<S>();
            pf.step::<S>();
            if S::LANE_FMA && S::LANES == 4 {
                let a4: [S::V; M] = core::array::from_fn(|i| S::load(a.add(i * t.lda + kk)));
                lane_step!(a4, kk, 0);
                lane_step!(a4, kk, 1);
                lane_step!(a4, kk, 2);
                lane_step!(a4, kk, 3);
            } else {
                step!(kk);
                step!(kk + 1);
                step!(kk + 2);
                step!(kk + 3);
            }
            kk += 4;
        }
        while kk < t.k {
            step!(kk);
            kk += 1;
        }
        // Park the accumulators in a stack tile with constant indices only: that keeps the
        // compiler from holding `acc` in memory through the k loop (it did, storing after every
        // FMA, when the epilogue below indexed it directly).
        debug_assert!(M <= 12 && NV * S::LANES <= TILE_COLS);
        let mut tile = core::mem::MaybeUninit::<[[f32; TILE_COLS]; 12]>::uninit();
        let tp = tile.as_mut_ptr().cast::<f32>();
        for (i, row) in acc.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                S::store(tp.add(i * TILE_COLS + j * S::LANES), *v);
            }
        }
        epilogue::<S, M>(tp, t.cols, t.scales, t.epi, out, t.ldo);
    }
}

/// PW2's residual epilogue (`ScaleAdd`: `out += gamma ⊙ (v·scale + bias)`) on an
/// `M x (NV·LANES)` tile whose values are still in registers (`v(i, j)`: row `i`, column
/// vector `j`), all columns whole: per column vector its scales, bias and gamma once, then
/// each row. The same operations in the same order as [`epilogue`]'s `ScaleAdd` on the
/// parked tile, so the same bits, without the tile's stores and reloads (PW2 pays this
/// epilogue once per hidden slice). Used by NEON's int8 and fp16 tiles.
///
/// # Safety
/// The ISA available; `scales`, `bias` (or null: none) and `gamma` valid for `NV·LANES`
/// floats, `out` for `M` rows of them, `ldo` apart.
#[allow(dead_code)] // used by the aarch64 int8 and fp16 kernels only
#[inline(always)]
pub(crate) unsafe fn residual<S: Simd, const M: usize, const NV: usize>(
    v: impl Fn(usize, usize) -> S::V,
    scales: *const f32,
    (bias, gamma): (*const f32, *const f32),
    out: *mut f32,
    ldo: usize,
) {
    // SAFETY: within the extents of the contract.
    unsafe {
        // One loop per case (the bias tested once, not per column vector): each one
        // straight block. Up to 16 values in registers, column vectors by pairs, each row's
        // pair updated at once (`fmadd_into2`); an odd last one, or every one of a larger
        // tile, alone (on NEON the pairs' loads and stores need two consecutive registers
        // each, and with the 5 x 16 int8 tile's 20 sums LLVM then spilled).
        let pairs = if M * NV <= 16 { NV - NV % 2 } else { 0 };
        macro_rules! run {
            (|$c:ident| $bias:expr) => {
                let ld = |c: usize| {
                    let $c = c;
                    (S::load(scales.add(c)), $bias, S::load(gamma.add(c)))
                };
                for j in (0..pairs).step_by(2) {
                    let (c0, c1) = (j * S::LANES, (j + 1) * S::LANES);
                    let ((s0, b0, g0), (s1, b1, g1)) = (ld(c0), ld(c1));
                    for i in 0..M {
                        let x = [S::fmadd(v(i, j), s0, b0), S::fmadd(v(i, j + 1), s1, b1)];
                        S::fmadd_into2(out.add(i * ldo + c0), [g0, g1], x);
                    }
                }
                for j in pairs..NV {
                    let c = j * S::LANES;
                    let (scale, bias, gamma) = ld(c);
                    for i in 0..M {
                        let x = S::fmadd(v(i, j), scale, bias);
                        let p = out.add(i * ldo + c);
                        S::store(p, S::fmadd(gamma, x, S::load(p)));
                    }
                }
            };
        }
        if bias.is_null() {
            run!(|_c| S::zero());
        } else {
            run!(|c| S::load(bias.add(c)));
        }
    }
}

/// The epilogue of an `M`-row GEMM tile parked at `tp` (rows [`TILE_COLS`] apart), `cols`
/// columns: `out = epi(tile · scales + bias)` (see [`super::Epilogue`]), a vector at a time.
///
/// # Safety
/// `tp` valid for `M` rows of `cols` (rounded up to `LANES`) floats; `scales` and the
/// epilogue's pointers for `cols`; `out` for `M` rows of `cols`, `ldo` apart.
#[inline(always)]
pub(crate) unsafe fn epilogue<S: Simd, const M: usize>(
    tp: *const f32,
    cols: usize,
    scales: *const f32,
    epi: EpiPtrs,
    out: *mut f32,
    ldo: usize,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        // One loop per kind: the kind is not tested per row, and each loop's whole-vector
        // path is one straight block (which the A76 model times).
        macro_rules! columns {
            (|$v:ident, $p:ident, $nv:ident, $c0:ident| $f:expr) => {{
                let mut $c0 = 0;
                while $c0 < cols {
                    let $nv = (cols - $c0).min(S::LANES);
                    let scale = ld_any::<S>(scales.add($c0), $nv);
                    let bias = if epi.bias.is_null() {
                        S::zero()
                    } else {
                        ld_any::<S>(epi.bias.add($c0), $nv)
                    };
                    for i in 0..M {
                        let $v = S::fmadd(S::load(tp.add(i * TILE_COLS + $c0)), scale, bias);
                        let $p = out.add(i * ldo + $c0);
                        st_any::<S>($p, $f, $nv);
                    }
                    $c0 += S::LANES;
                }
            }};
        }
        match epi.kind {
            EpiKind::Bias => columns!(|v, _p, _nv, _c0| v),
            EpiKind::Gelu => columns!(|v, _p, _nv, _c0| gelu::<S>(v)),
            EpiKind::ScaleAdd => columns!(|v, p, nv, c0| S::fmadd(
                ld_any::<S>(epi.gamma.add(c0), nv),
                v,
                ld_any::<S>(p, nv)
            )),
        }
    }
}
