//! Every kernel path against the scalar reference: GEMM (and matrixmultiply), QDW rows,
//! row blocking, LayerNorm, GELU and erf, the plain depthwise row.

use std::vec;
use std::vec::Vec;

use super::*;
use crate::isa::Kernels;
use crate::kernels::{self, Epilogue, MatMut, MatRef, PackedB, QdwWeights};
use crate::math::{erf_rational, gelu_exact};

#[test]
fn rational_erf_matches_libm_everywhere() {
    let mut worst = 0.0f32;
    let mut x = -10.0f32;
    while x <= 10.0 {
        worst = worst.max((erf_rational(x) - libm::erff(x)).abs());
        x += 1.0 / 4096.0;
    }
    // 1e-7 in exact arithmetic; f32 evaluation near |x| = 3.9 (erf within 4e-8 of 1)
    // rounds to at most ~7 ulp of 1.0.
    assert!(worst < 5e-7, "max |erf_rational - erff| = {worst}");
}

#[test]
fn simd_gelu_matches_exact_gelu() {
    let xs: Vec<f32> = (-40_000..=40_000).map(|i| i as f32 / 4000.0).collect();
    let want: Vec<f32> = xs.iter().map(|&x| gelu_exact(x)).collect();
    for kern in available() {
        for len in [1usize, 3, 7, 8, 15, 16, 17, xs.len()] {
            let mut got = xs[..len].to_vec();
            kernels::gelu_slice(kern, &mut got);
            for (i, (g, w)) in got.iter().zip(&want[..len]).enumerate() {
                let tol = 4e-7 * (1.0 + xs[i].abs());
                assert!(
                    (g - w).abs() <= tol,
                    "{:?} gelu({}) = {g}, want {w}",
                    kern.isa(),
                    xs[i]
                );
            }
        }
    }
}

#[test]
fn gemm_matches_matrixmultiply_on_awkward_shapes() {
    let mut rng = Rng::new(1);
    let ms = [1usize, 2, 3, 5, 6, 7, 11, 12, 13, 25, 37];
    let ks = [1usize, 2, 3, 7, 16, 17, 48, 67];
    let ns = [1usize, 3, 8, 15, 16, 17, 31, 32, 33, 48, 64, 97];
    let kerns = available();
    for &m in &ms {
        for &k in &ks {
            for &n in &ns {
                let lda = k + rng.usize(0, 3);
                let a = rng.vec(m * lda, -1.0, 1.0);
                let stored = random_b(&mut rng, k, n);
                let bias = rng.vec(n, -0.5, 0.5);
                let gamma = rng.vec(n, 0.5, 1.5);
                let ldo = n + 1;
                let init = rng.vec(m * ldo, -1.0, 1.0);
                for dtype in DTYPES {
                    let (data, scales) = stored.data(dtype);
                    let b = PackedB::new(data, scales, k, n).unwrap();
                    // What the stored weights stand for, as a dense matrix.
                    let dense: Vec<f32> = (0..k * n)
                        .map(|i| b.get(i / n, i % n) * scales[i % n])
                        .collect();
                    let base = matrixmultiply_ref(&a, m, lda, k, &dense, n);
                    for epi in 0..3 {
                        let e = match epi {
                            0 => Epilogue::Bias(&bias),
                            1 => Epilogue::BiasGelu(&bias),
                            _ => Epilogue::BiasScaleAdd {
                                bias: &bias,
                                gamma: &gamma,
                            },
                        };
                        let mut want = init.clone();
                        for i in 0..m {
                            for j in 0..n {
                                let v = base[i * n + j] + bias[j];
                                let o = &mut want[i * ldo + j];
                                match epi {
                                    0 => *o = v,
                                    1 => *o = gelu_exact(v),
                                    _ => *o += gamma[j] * v,
                                }
                            }
                        }
                        let g = GemmCase {
                            a: &a,
                            m,
                            lda,
                            b,
                            epi: e,
                            init: &init,
                            ldo,
                        };
                        for &kern in &kerns {
                            let out = g.run(kern);
                            // Padding between output rows must stay untouched too.
                            let what = std::format!(
                                "{:?} {dtype:?} m={m} k={k} n={n} epi={epi}",
                                kern.isa()
                            );
                            assert_close(&out, &want, 2e-6 * (k as f32).sqrt().max(1.0), &what);
                        }
                    }
                }
            }
        }
    }
}

/// Extents whose `(rows - 1)·stride + cols` (or `rows·cols`) wraps around `usize` to a
/// small number must be refused, not passed to a leaf as a short buffer: here rows =
/// 2^63 + 1 and stride 8 give `2^63·8 + 8`, which wraps to 8 floats.
#[test]
fn extents_that_wrap_around_are_refused() {
    use crate::error::{Buffer, Error};
    use crate::kernels::q8;
    let rows = (1usize << 63) + 1;
    let a = vec![1.0f32; 64];
    let mut out = vec![0.0f32; 64];
    let stored = random_b(&mut Rng::new(3), 8, 8);
    let (data, scales) = stored.data(Dtype::F32);
    let b = PackedB::new(data, scales, 8, 8).unwrap();
    let bias = vec![0.0f32; 8];
    assert_eq!(
        MatRef::new(&a, rows, 8, 8).unwrap_err(),
        Error::Overflow {
            buffer: Buffer::Activation
        }
    );
    assert!(MatMut::new(&mut out, rows, 8, 8).is_err());
    assert!(MatRef::new(&a, 2, 8, 4).is_err(), "overlapping rows");
    assert!(MatRef::new(&a, 8, 8, 8).is_ok() && MatRef::new(&a, 9, 8, 8).is_err());
    for kern in available() {
        // The unchecked `dense` views reach the kernel's own check.
        let r = kernels::gemm(
            kern,
            MatRef::dense(&a, rows, 8),
            b,
            Epilogue::Bias(&bias),
            MatMut::dense(&mut out, rows, 8),
        );
        assert!(matches!(r, Err(Error::Overflow { .. })), "{kern:?}: {r:?}");
        let r = kernels::gemm(
            kern,
            MatRef::dense(&a, 1, 8),
            b,
            Epilogue::Bias(&bias),
            MatMut::dense(&mut out, 1, 8),
        );
        assert!(r.is_ok(), "{kern:?}: {r:?}");
        let mut scratch = vec![0.0f32; 256];
        // rows·cols = 2^63·4 wraps to 0.
        assert!(q8::rows_in(&mut scratch, 1 << 63, 4).is_err());
        let mut q = q8::rows_in(&mut scratch, 2, 8).unwrap();
        // Two rows of 8 with lda = 2^63 + 8 would span 2^63 + 16 floats.
        let r = q8::quantize_rows(kern, &a, (1 << 63) + 8, &mut q);
        assert!(r.is_err(), "{kern:?}: {r:?}");
    }
}

#[test]
fn widened_weight_panels_give_the_per_use_results() {
    // NEON widens f16/int8 panels once per call up to `WIDE_K` and per use beyond. A GEMM of
    // `WIDE_K + 4` whose last four activation columns are zero runs the per-use path and
    // sums exactly what the `WIDE_K` GEMM on the same rows sums (plus four zero products),
    // so the two must agree to the bit (== also equates a zero's sign).
    let wide = kernels::simd::WIDE_K;
    let mut rng = Rng::new(11);
    for (m, n) in [(1usize, 17usize), (6, 16), (13, 48)] {
        let k = wide + 4;
        let mut a = rng.vec(m * k, -1.0, 1.0);
        for i in 0..m {
            a[i * k + wide..(i + 1) * k].fill(0.0);
        }
        let stored = random_b(&mut rng, k, n);
        let bias = rng.vec(n, -0.5, 0.5);
        for dtype in DTYPES {
            let (data, scales) = stored.data(dtype);
            let full = PackedB::new(data, scales, k, n).unwrap();
            let head = full.rows(0, wide).unwrap();
            for kern in available() {
                let run = |b: PackedB<'_>, cols: usize| {
                    let mut out = vec![0.0f32; m * n];
                    let am = MatRef {
                        data: &a,
                        rows: m,
                        cols,
                        stride: k,
                    };
                    let om = MatMut::dense(&mut out, m, n);
                    kernels::gemm(kern, am, b, Epilogue::Bias(&bias), om).unwrap();
                    out
                };
                let (per_use, widened) = (run(full, k), run(head, wide));
                assert!(per_use.iter().all(|v| v.is_finite()));
                assert!(
                    per_use == widened,
                    "{:?} {dtype:?} m={m} n={n}: widened panels changed the result",
                    kern.isa()
                );
            }
        }
    }
}

#[test]
fn block_row_simd_writes_the_scalar_bits() {
    let mut rng = Rng::new(9);
    for k in [3usize, 5, 7] {
        for c in [1usize, 3, 4, 7, 8, 9, 15, 16, 17, 31, 33, 64] {
            for w in [1usize, 2, 5, 7, 14, 19] {
                let src = rng.vec(w * c, -1.0, 1.0);
                let len = kernels::qdw_row_len(w, c, k);
                let mut want = std::vec![0.0f32; len];
                kernels::block_row(Kernels::scalar(), &src, w, c, k, &mut want).unwrap();
                for kern in available() {
                    // Padding must be left alone: start from a marker.
                    let mut got = std::vec![7.0f32; len];
                    kernels::block_row(kern, &src, w, c, k, &mut got).unwrap();
                    for (i, (g, wv)) in got.iter().zip(&want).enumerate() {
                        let pad = *wv == 0.0 && *g == 7.0;
                        assert!(
                            g.to_bits() == wv.to_bits() || pad,
                            "{:?} k{k} c{c} w{w} at {i}",
                            kern.isa()
                        );
                    }
                }
            }
        }
    }
    let short = kernels::block_row(Kernels::scalar(), &[0.0; 3], 2, 2, 3, &mut [0.0; 64]);
    assert!(short.is_err());
}

#[test]
fn layer_norm_blocked_is_layer_norm_then_block_row() {
    let mut rng = Rng::new(10);
    for k in [3usize, 5, 7] {
        for c in [1usize, 3, 8, 15, 16, 17, 33, 64] {
            let (lw, lb) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5));
            for w in [1usize, 2, 7, 14] {
                let src = rng.vec(w * c, -2.0, 2.0);
                let len = kernels::qdw_row_len(w, c, k);
                for kern in available() {
                    let mut normed = std::vec![0.0f32; w * c];
                    kernels::layer_norm_rows(kern, &src, c, &lw, &lb, &mut normed).unwrap();
                    let mut want = std::vec![0.0f32; len];
                    kernels::block_row(kern, &normed, w, c, k, &mut want).unwrap();
                    let mut got = std::vec![0.0f32; len];
                    kernels::layer_norm_blocked_row(kern, &src, w, c, &lw, &lb, k, &mut got)
                        .unwrap();
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(g, v)| g.to_bits() == v.to_bits());
                    assert!(same, "{:?} k{k} c{c} w{w}", kern.isa());
                }
            }
        }
    }
}

#[test]
fn qdw_row_simd_matches_scalar() {
    let mut rng = Rng::new(2);
    let kerns = available();
    for k in [3usize, 5, 7] {
        for c in [1usize, 3, 4, 5, 8, 9, 15, 16, 17, 24, 31, 33, 64] {
            let (stored, bias) = random_qdw(&mut rng, k, c);
            let gamma = rng.vec(c, 0.5, 1.5);
            for w in 1..=40 {
                let rows: Vec<Vec<f32>> = (0..k)
                    .map(|_| rng.vec(kernels::qdw_row_len(w, c, k), -1.0, 1.0))
                    .collect();
                let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
                let init = rng.vec(w * c, -1.0, 1.0);
                for dtype in DTYPES {
                    let (taps, scales) = stored.data(dtype);
                    let wts = QdwWeights::new(k, c, taps, scales, &bias).unwrap();
                    for g in [None, Some(gamma.as_slice())] {
                        let mut want = init.clone();
                        kernels::qdw_row(Kernels::scalar(), &wts, &refs, w, g, &mut want).unwrap();
                        for &kern in &kerns[1..] {
                            let mut got = init.clone();
                            kernels::qdw_row(kern, &wts, &refs, w, g, &mut got).unwrap();
                            let what = std::format!("{:?} {dtype:?} k={k} c={c} w={w}", kern.isa());
                            assert_close(&got, &want, 1e-5, &what);
                            if g.is_none() {
                                check_qdw_row_and_block(kern, &wts, &refs, w, &init, &got, &what);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `qdw_row_and_block` gives `qdw_row`'s bits (`plain`) and writes `block_row`'s bits,
/// leaving the padding alone; a next row of the wrong length is an error.
pub(super) fn check_qdw_row_and_block(
    kern: Kernels,
    wts: &QdwWeights<'_>,
    rows: &[&[f32]],
    w: usize,
    init: &[f32],
    plain: &[f32],
    what: &str,
) {
    let (k, c) = (wts.k(), wts.c());
    let src: Vec<f32> = (0..w * c).map(|i| i as f32 * 0.5 - 3.0).collect();
    let len = kernels::qdw_row_len(w, c, k);
    let mut want = std::vec![7.0f32; len];
    if kern.fp16() {
        // Half-precision rows (see `kernels::block_row`).
        crate::kernels::scalar::block_row_fp16(&src, w, c, k, &mut want);
    } else {
        kernels::block_row(Kernels::scalar(), &src, w, c, k, &mut want).unwrap();
    }
    let mut got = init.to_vec();
    let mut dst = std::vec![7.0f32; len];
    kernels::qdw_row_and_block(kern, wts, rows, w, &mut got, &src, &mut dst).unwrap();
    let bits = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(bits(&got, plain), "{what}: output differs from qdw_row");
    assert!(bits(&dst, &want), "{what}: next row differs from block_row");
    let short = kernels::qdw_row_and_block(kern, wts, rows, w, &mut got, &src[1..], &mut dst);
    assert!(short.is_err(), "{what}: short next row accepted");
}

// ---- An unfused, full-tensor reference of the model (channels-last), for the tests. ----

#[test]
fn simd_layer_norm_matches_scalar() {
    let mut rng = Rng::new(51);
    for c in [1usize, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 257] {
        let rows = 5;
        // An offset mean and a spread: the two-pass variance must hold up.
        let x: Vec<f32> = rng
            .vec(rows * c, -3.0, 3.0)
            .iter()
            .map(|v| v + 40.0)
            .collect();
        let (w, b) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5));
        let mut want = vec![0.0; rows * c];
        crate::math::layer_norm_rows(&x, c, &w, &b, &mut want);
        for kern in available() {
            let mut got = vec![f32::NAN; rows * c];
            kernels::layer_norm_rows(kern, &x, c, &w, &b, &mut got).unwrap();
            assert_close(&got, &want, 2e-5, &std::format!("{:?} c={c}", kern.isa()));
            let mut inplace = x.clone();
            kernels::layer_norm_rows_inplace(kern, &mut inplace, c, &w, &b).unwrap();
            assert_eq!(inplace, got, "{:?} c={c} in place", kern.isa());
        }
    }
}

#[test]
fn plain_depthwise_row_simd_matches_scalar() {
    let mut rng = Rng::new(61);
    let kerns = available();
    for k in [3usize, 5, 7] {
        for c in [1usize, 5, 8, 16, 17, 33, 64] {
            let taps = rng.vec(k * k * c, -0.3, 0.3);
            let bias = rng.vec(c, -0.5, 0.5);
            for w in [1usize, 2, 7, 8, 9, 15, 16, 17, 40] {
                let rows: Vec<Vec<f32>> = (0..k)
                    .map(|_| rng.vec((w + k - 1) * c, -1.0, 1.0))
                    .collect();
                let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
                let mut want = vec![0.0; w * c];
                let conv = kernels::DwConv {
                    k,
                    c,
                    taps: &taps,
                    bias: &bias,
                };
                kernels::dw_row(Kernels::scalar(), &conv, &refs, w, &mut want).unwrap();
                for &kern in &kerns[1..] {
                    let mut got = vec![f32::NAN; w * c];
                    kernels::dw_row(kern, &conv, &refs, w, &mut got).unwrap();
                    assert_close(
                        &got,
                        &want,
                        1e-5,
                        &std::format!("{:?} k={k} c={c} w={w}", kern.isa()),
                    );
                }
            }
        }
    }
}

/// The NEON QDW assembly (`kernels/neon_qdw.rs`: taps in place or widened once per chunk,
/// four epilogues, the next-row copy beside it) gives the bits of the generic Rust loop it
/// stands in for (`qdw_taps` + `qdw_finish`, group by group).
#[cfg(target_arch = "aarch64")]
#[test]
fn neon_qdw_assembly_is_the_generic_loop_bit_for_bit() {
    use crate::kernels::aarch64_neon::Neon;
    use crate::kernels::simd::{self, Elem, QdwArgs};
    use crate::kernels::{CBLOCK, MAX_K};

    /// The generic groups of every 4-channel chunk (`c` a multiple of 4, `w` of 7).
    unsafe fn generic<W: Elem, const K: usize>(a: &QdwArgs, taps: *const W) {
        unsafe {
            for c0 in (0..a.c).step_by(4) {
                let wblk = taps.add((c0 / CBLOCK) * K * K * 3 * CBLOCK + c0 % CBLOCK);
                for x0 in (0..a.w).step_by(7) {
                    let blk = simd::qdw_copy_next::<Neon, K, 7, true>(a, x0, c0, 4);
                    let rows: [*const f32; K] = core::array::from_fn(|ky| a.rows[ky].add(blk));
                    let (sa, sb, sc) =
                        simd::qdw_taps::<Neon, W, K, 7, true>(&rows, wblk, CBLOCK, 4);
                    simd::qdw_finish::<Neon, 7, true>(a, &sa, &sb, &sc, x0, c0, 4);
                }
            }
        }
    }

    fn case<W: Elem, const K: usize>(rng: &mut Rng, taps: &[W], c: usize, w: usize, unit: bool) {
        let rows: Vec<Vec<f32>> = (0..K)
            .map(|_| rng.vec(kernels::qdw_row_len(w, c, K), -1.0, 1.0))
            .collect();
        let scales = if unit {
            vec![1.0; 3 * c]
        } else {
            rng.vec(3 * c, 0.01, 0.05)
        };
        let bias = rng.vec(3 * c, -0.5, 0.5);
        let gamma = rng.vec(c, 0.5, 1.5);
        let src = rng.vec(w * c, -1.0, 1.0);
        let init = rng.vec(w * c, -1.0, 1.0);
        for with_gamma in [false, true] {
            for copy in [false, true] {
                let run = |asm: bool| {
                    let mut out = init.clone();
                    let mut next = vec![0.0f32; kernels::qdw_row_len(w, c, K)];
                    let mut r = [core::ptr::null(); MAX_K];
                    for (p, row) in r.iter_mut().zip(&rows) {
                        *p = row.as_ptr();
                    }
                    let a = QdwArgs {
                        rows: r,
                        w,
                        c,
                        scales: scales.as_ptr(),
                        bias: bias.as_ptr(),
                        gamma: if with_gamma {
                            gamma.as_ptr()
                        } else {
                            core::ptr::null()
                        },
                        out: out.as_mut_ptr(),
                        next_src: if copy {
                            src.as_ptr()
                        } else {
                            core::ptr::null()
                        },
                        next_dst: next.as_mut_ptr(),
                    };
                    // SAFETY: NEON is baseline on aarch64; every buffer has the lengths
                    // `kernels::qdw_row` checks for these w, c and K.
                    unsafe {
                        if asm {
                            simd::qdw_row::<Neon, W, K, 7>(&a, taps.as_ptr());
                        } else {
                            generic::<W, K>(&a, taps.as_ptr());
                        }
                    }
                    (out, next)
                };
                let (want, want_next) = run(false);
                let (got, got_next) = run(true);
                let what =
                    std::format!("K={K} c={c} w={w} unit={unit} gamma={with_gamma} copy={copy}");
                assert!(
                    want.iter().all(|v| v.is_finite()),
                    "{what}: reference not finite"
                );
                let bits =
                    |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(bits(&got, &want), "{what}: output differs");
                assert!(bits(&got_next, &want_next), "{what}: next row differs");
            }
        }
    }

    fn all_k<W: Elem>(rng: &mut Rng, pick: impl Fn(&Stored) -> Vec<W>, unit: bool) {
        for c in [4usize, 12, 16, 20, 36] {
            for w in [7usize, 14, 28] {
                let (s, _) = random_qdw(rng, 3, c);
                case::<W, 3>(rng, &pick(&s), c, w, unit);
                let (s, _) = random_qdw(rng, 5, c);
                case::<W, 5>(rng, &pick(&s), c, w, unit);
                let (s, _) = random_qdw(rng, 7, c);
                case::<W, 7>(rng, &pick(&s), c, w, unit);
            }
        }
    }

    let mut rng = Rng::new(11);
    all_k::<f32>(&mut rng, |s| s.f32.clone(), true);
    all_k::<f32>(&mut rng, |s| s.f32.clone(), false);
    all_k::<u16>(&mut rng, |s| s.f16.clone(), true);
    all_k::<i8>(&mut rng, |s| s.i8.clone(), false);
}
