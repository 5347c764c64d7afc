//! `Precision::Fp16`: the half-precision GEMM against its scalar definition
//! (`scalar::gemm_fp16`), bit for bit, under qemu's FEAT_FP16; the definition itself against
//! exact cases; and the token rules (fp16 only where the ISA has it).

use std::vec::Vec;

use super::*;
use crate::isa::{Precision, FP16_CHUNK};
use crate::kernels::{self, scalar, Epilogue, MatMut, MatRef};
use crate::math::f16;

/// `scalar::gemm_fp16`, the definition, on `g`.
fn reference(g: GemmCase<'_>) -> Vec<f32> {
    let mut out = g.init.to_vec();
    scalar::gemm_fp16(g.a, g.m, g.lda, g.b, g.epi, &mut out, g.ldo);
    out
}

/// The dense `k x n` matrix `w` (row-major) packed into panels.
fn pack(w: &[f32], k: usize, n: usize) -> Vec<f32> {
    let mut packed = std::vec![0.0; PackedB::packed_len(k, n)];
    PackedB::pack(k, n, &mut packed, |kk, j| w[kk * n + j]).unwrap();
    packed
}

/// Bit-for-bit equality; a NaN anywhere fails (NaN != NaN by bits only by accident).
fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            !g.is_nan() && !w.is_nan() && g.to_bits() == w.to_bits(),
            "{what}: element {i}: got {g:e} ({:#010x}), want {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// Small integers: every product and every partial sum is an integer below 2048, exact
/// in f16, so the half-precision definition must equal the plain f32 GEMM exactly; with
/// k > FP16_CHUNK the runs' f32 additions are exercised too.
#[test]
fn fp16_reference_is_exact_where_f16_is() {
    let mut rng = Rng::new(7);
    for &(m, k, n) in &[
        (3usize, 5usize, 17usize),
        (4, 32, 16),
        (2, 33, 5),
        (5, 100, 20),
    ] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.usize(0, 7) as f32 - 3.0).collect();
        let w: Vec<f32> = (0..k * n).map(|_| rng.usize(0, 5) as f32 - 2.0).collect();
        let packed = pack(&w, k, n);
        let ones = std::vec![1.0f32; n];
        let b = PackedB::new(MatData::F32(&packed), &ones, k, n).unwrap();
        let zero = std::vec![0.0f32; n];
        let init = std::vec![0.0f32; m * n];
        let got = reference(GemmCase {
            a: &a,
            m,
            lda: k,
            b,
            epi: Epilogue::Bias(&zero),
            init: &init,
            ldo: n,
        });
        let mut want = std::vec![0.0f32; m * n];
        scalar::gemm(&a, m, k, b, Epilogue::Bias(&zero), &mut want, n);
        assert_bits(&got, &want, &std::format!("m={m} k={k} n={n}"));
    }
}

/// The definition rounds where the hardware does: a sum that f16 cannot hold loses its low
/// bits inside a run, but not across runs (they are added in f32).
#[test]
fn fp16_reference_rounds_within_runs_only() {
    // 2048 + 1 is not an f16 (spacing 2 there): within one run, +1 after 2048 is lost
    // (ties to even); in the next run it is a new f16 sum, added in f32.
    let k = FP16_CHUNK + 1;
    let mut a = std::vec![0.0f32; k];
    a[0] = 2048.0;
    a[1] = 1.0;
    a[FP16_CHUNK] = 1.0;
    let w = std::vec![1.0f32; k];
    let packed = pack(&w, k, 1);
    let b = PackedB::new(MatData::F32(&packed), &[1.0], k, 1).unwrap();
    let got = reference(GemmCase {
        a: &a,
        m: 1,
        lda: k,
        b,
        epi: Epilogue::Bias(&[0.0]),
        init: &[0.0],
        ldo: 1,
    });
    assert_eq!(got[0], 2049.0, "2048 + 1 (lost in f16) + 1 (its own run)");
}

#[test]
fn fp16_tokens_only_where_the_isa_has_it() {
    let scalar_fp16 = Kernels::scalar().with_precision(Precision::Fp16);
    assert!(!scalar_fp16.fp16());
    assert_eq!(scalar_fp16.describe(), "scalar");
    for kern in available() {
        // SAFETY: the token is only inspected here, never run.
        let k = unsafe { kern.with_fp16_unchecked() };
        assert_eq!(k.fp16(), kern.isa() == Isa::Neon, "{kern:?}");
        assert_eq!(k.int8_dot(), kern.int8_dot());
        if kern.isa() != Isa::Neon {
            assert!(!k.fp16(), "{kern:?} took the fp16 bit");
            assert_eq!(k.describe(), kern.describe());
            assert_eq!(k.precision(), Precision::F32);
        }
        assert_eq!(k.without_fp16(), kern);
    }
    assert_eq!(Precision::from_name("fp16"), Some(Precision::Fp16));
    assert_eq!(Precision::from_name("f32"), Some(Precision::F32));
    assert_eq!(Precision::from_name("f16"), None);
}

#[cfg(target_arch = "aarch64")]
fn fp16_available() -> bool {
    std::arch::is_aarch64_feature_detected!("fp16")
}

#[cfg(not(target_arch = "aarch64"))]
fn fp16_available() -> bool {
    false
}

/// The fp16 kernel paths of this machine (NEON with FEAT_FP16); `QUADRA_REQUIRE_FP16=1`
/// makes their absence a failure, so a skipped path cannot hide.
fn fp16_kernels() -> Vec<Kernels> {
    let v: Vec<Kernels> = available()
        .into_iter()
        .filter(|k| k.isa() == Isa::Neon && fp16_available())
        // SAFETY: FEAT_FP16 detected by the filter.
        .map(|k| unsafe { k.with_fp16_unchecked() })
        .collect();
    if v.is_empty() {
        assert!(
            std::env::var("QUADRA_REQUIRE_FP16").is_err(),
            "QUADRA_REQUIRE_FP16 is set but this CPU has no FEAT_FP16"
        );
    }
    v
}

/// Every shape class: rows 1..13 and past the 8-row tile (the 4-, 2- and 1-row tails),
/// inner dimensions around the 8-step iteration and the 64-step run, columns around the 16-column
/// panel; f32, f16 and int8 weights; strided A and output. Bias and half-precision GELU
/// epilogues (alternating by shape), bit for bit (for int8 weights, whose scale is not 1,
/// with a zero bias: the kernel fuses `sum·scale + bias` into one rounding, the reference
/// rounds twice).
#[test]
fn fp16_gemm_is_its_definition_bit_for_bit() {
    let kerns = fp16_kernels();
    if kerns.is_empty() {
        std::eprintln!("no FEAT_FP16 here: the fp16 GEMM is not run");
        return;
    }
    let mut rng = Rng::new(11);
    let ms = [1usize, 2, 3, 4, 5, 7, 8, 9, 12, 13, 15, 25, 33, 49, 70];
    let ks = [1usize, 3, 7, 8, 9, 31, 33, 48, 63, 64, 65, 128, 129, 200];
    let ns = [1usize, 3, 8, 15, 16, 17, 33, 48];
    let checked = check_fp16_gemm(&mut rng, &kerns, &ms, &ks, &ns);
    std::eprintln!("fp16 GEMM: {checked} outputs equal to the definition bit for bit");
}

/// ... and past `WIDE_K` up to `FP16_MAX_K` (1024), where the activation rows are copied 16
/// (at k = 1024) rather than 32 at a time: row counts around both blocks.
#[test]
fn fp16_gemm_is_its_definition_bit_for_bit_up_to_k_1024() {
    let kerns = fp16_kernels();
    if kerns.is_empty() {
        std::eprintln!("no FEAT_FP16 here: the fp16 GEMM is not run");
        return;
    }
    let mut rng = Rng::new(12);
    let checked = check_fp16_gemm(
        &mut rng,
        &kerns,
        &[1, 5, 15, 16, 17, 33, 49],
        &[511, 513, 777, 1024],
        &[16, 33],
    );
    std::eprintln!(
        "fp16 GEMM, k 511 to 1024: {checked} outputs equal to the definition bit for bit"
    );
}

/// Every `m x k x n` of the lists on every fp16 kernel against the definition, bit for bit:
/// random activations (strided), f32, f16 and int8 weights, bias and half-precision GELU
/// epilogues alternating by shape; the outputs compared.
fn check_fp16_gemm(
    rng: &mut Rng,
    kerns: &[Kernels],
    ms: &[usize],
    ks: &[usize],
    ns: &[usize],
) -> usize {
    let mut checked = 0usize;
    for &m in ms {
        for &k in ks {
            for &n in ns {
                let lda = k + rng.usize(0, 3);
                let a = rng.vec(m * lda, -2.0, 2.0);
                let stored = random_b(rng, k, n);
                let ldo = n + rng.usize(0, 2);
                let init = rng.vec(m * ldo, -1.0, 1.0);
                for dtype in DTYPES {
                    let (data, scales) = stored.data(dtype);
                    let b = PackedB::new(data, scales, k, n).unwrap();
                    let bias = if dtype == Dtype::I8 {
                        std::vec![0.0; n]
                    } else {
                        rng.vec(n, -0.5, 0.5)
                    };
                    let gelu = (m + k + n) % 2 == 1;
                    let g = GemmCase {
                        a: &a,
                        m,
                        lda,
                        b,
                        epi: if gelu {
                            Epilogue::BiasGelu(&bias)
                        } else {
                            Epilogue::Bias(&bias)
                        },
                        init: &init,
                        ldo,
                    };
                    let want = reference(g);
                    for &kern in kerns {
                        let got = g.run(kern);
                        let what = std::format!("fp16 {dtype:?} m={m} k={k} n={n} gelu {gelu}");
                        assert_bits(&got, &want, &what);
                        checked += got.len();
                    }
                }
            }
        }
    }
    checked
}

/// `k` half-precision rows of `w` pixels and `c` channels (every half, padding included,
/// a random value rounded to f16).
fn half_rows(rng: &mut Rng, k: usize, w: usize, c: usize) -> Vec<Vec<f32>> {
    let len = kernels::qdw_row_len(w, c, k);
    (0..k)
        .map(|_| {
            let mut row = std::vec![0.0f32; len];
            for (i, v) in rng.vec(len, -2.0, 2.0).into_iter().enumerate() {
                scalar::set_half(&mut row, i, f16::from_f64(f64::from(v)));
            }
            row
        })
        .collect()
}

/// The half-precision QDW row against `scalar::qdw_row_fp16`, bit for bit, on every
/// output: K = 3, 5, 7; channel counts around the 8-channel chunk and the 16-channel block;
/// widths around the 7-pixel group (the groups of 4, 2 and 1 after it); f32, f16 and int8
/// taps (int8 with scales that are not 1: they are folded into the f16 taps); stored and
/// `gamma`; and the fused copy of the next row (`qdw_row_and_block`, against
/// `scalar::block_row_fp16`).
#[test]
fn fp16_qdw_is_its_definition_bit_for_bit() {
    let kerns = fp16_kernels();
    if kerns.is_empty() {
        std::eprintln!("no FEAT_FP16 here: the fp16 QDW is not run");
        return;
    }
    let mut rng = Rng::new(23);
    let mut total = 0usize;
    for k in [3usize, 5, 7] {
        for c in [1usize, 4, 7, 8, 9, 12, 16, 20, 24, 33] {
            let (stored, bias) = random_qdw(&mut rng, k, c);
            let gamma = rng.vec(c, 0.5, 1.5);
            for w in [1usize, 2, 3, 5, 6, 7, 8, 13, 14, 15, 21, 28] {
                let rows = half_rows(&mut rng, k, w, c);
                let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
                let init = rng.vec(w * c, -1.0, 1.0);
                for dtype in DTYPES {
                    let (taps, scales) = stored.data(dtype);
                    let wts = QdwWeights::new(k, c, taps, scales, &bias).unwrap();
                    for g in [None, Some(gamma.as_slice())] {
                        let mut want = init.clone();
                        scalar::qdw_row_fp16(&wts, &refs, w, g, &mut want);
                        for &kern in &kerns {
                            let mut got = init.clone();
                            kernels::qdw_row(kern, &wts, &refs, w, g, &mut got).unwrap();
                            let what = std::format!("fp16 QDW {dtype:?} k={k} c={c} w={w}");
                            assert_bits(&got, &want, &what);
                            total += got.len();
                            if g.is_none() {
                                super::kernel_paths::check_qdw_row_and_block(
                                    kern, &wts, &refs, w, &init, &got, &what,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    std::eprintln!("fp16 QDW: {total} outputs equal to the definition bit for bit");
}

/// With an fp16 token, `block_row` and the LayerNorm into a blocked row write half-precision
/// rows: `scalar::block_row_fp16`'s bits (of the f32 LayerNorm's output, for the latter),
/// padding and the channels past `c` left alone.
#[test]
fn fp16_rows_are_written_in_half_precision() {
    let kerns = fp16_kernels();
    if kerns.is_empty() {
        std::eprintln!("no FEAT_FP16 here: the half-precision rows are not written");
        return;
    }
    let mut rng = Rng::new(31);
    for k in [3usize, 5, 7] {
        for c in [1usize, 3, 4, 7, 8, 9, 15, 16, 17, 24, 33, 64] {
            let (lw, lb) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5));
            for w in [1usize, 2, 5, 7, 14, 19] {
                let src = rng.vec(w * c, -3.0, 3.0);
                let len = kernels::qdw_row_len(w, c, k);
                for &kern in &kerns {
                    let what = std::format!("k{k} c{c} w{w}");
                    // A marker where nothing may be written.
                    let mut want = std::vec![7.0f32; len];
                    scalar::block_row_fp16(&src, w, c, k, &mut want);
                    let mut got = std::vec![7.0f32; len];
                    kernels::block_row(kern, &src, w, c, k, &mut got).unwrap();
                    assert_bits(&got, &want, &std::format!("block_row {what}"));
                    let mut normed = std::vec![0.0f32; w * c];
                    kernels::layer_norm_rows(kern, &src, c, &lw, &lb, &mut normed).unwrap();
                    let mut want = std::vec![7.0f32; len];
                    scalar::block_row_fp16(&normed, w, c, k, &mut want);
                    let mut got = std::vec![7.0f32; len];
                    kernels::layer_norm_blocked_row(kern, &src, w, c, &lw, &lb, k, &mut got)
                        .unwrap();
                    assert_bits(&got, &want, &std::format!("LayerNorm {what}"));
                }
            }
        }
    }
}

/// PW1 on LN2's half-precision rows: `layer_norm_rows_half` writes the f32 LayerNorm's values
/// rounded to f16 (and nothing past them), and `gemm_half_rows` on those rows gives the
/// fp16 `gemm`'s bits on the f32 rows, which it rounds the same way; bias and GELU
/// epilogues, f32, f16 and int8 weights. Without an fp16 token both refuse (an error, no
/// panic).
#[test]
fn fp16_half_rows_are_the_rounded_f32_rows() {
    let mut rng = Rng::new(37);
    let (m, c, n) = (3usize, 16usize, 8usize);
    let b_data = rng.vec(PackedB::packed_len(c, n), -0.5, 0.5);
    let ones = std::vec![1.0f32; n];
    let b = PackedB::new(MatData::F32(&b_data), &ones, c, n).unwrap();
    let (lw, lb) = (std::vec![1.0f32; c], std::vec![0.0f32; c]);
    let x = std::vec![0.5f32; m * c];
    let mut h = std::vec![0.0f32; kernels::half_tiles_floats(m, c).unwrap()];
    let mut out = std::vec![0.0f32; m * n];
    for kern in available() {
        let kern = kern.without_fp16();
        assert!(kernels::layer_norm_rows_half(kern, &x, c, &lw, &lb, &mut h).is_err());
        let epi = Epilogue::Bias(&ones);
        let r = kernels::gemm_half_rows(kern, &h, m, b, epi, MatMut::dense(&mut out, m, n));
        assert!(r.is_err());
    }
    let kerns = fp16_kernels();
    if kerns.is_empty() {
        std::eprintln!("no FEAT_FP16 here: the half-precision GEMM rows are not run");
        return;
    }
    for (m, c) in [
        (1usize, 8usize),
        (3, 16),
        (5, 17),
        (13, 64),
        (33, 40),
        (40, 128),
    ] {
        let x = rng.vec(m * c, -3.0, 3.0);
        let (lw, lb) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5));
        for &kern in &kerns {
            let mut f = std::vec![0.0f32; m * c];
            kernels::layer_norm_rows(kern, &x, c, &lw, &lb, &mut f).unwrap();
            let len = kernels::half_tiles_floats(m, c).unwrap();
            let mut h = std::vec![7.0f32; len + 1];
            let short = kernels::layer_norm_rows_half(kern, &x, c, &lw, &lb, &mut h[..len - 1]);
            assert!(short.is_err(), "m={m} c={c}: a buffer one float short");
            kernels::layer_norm_rows_half(kern, &x, c, &lw, &lb, &mut h).unwrap();
            let want: Vec<u16> = f.iter().map(|&v| f16::from_f64(f64::from(v))).collect();
            assert_tiles(
                &h,
                &want,
                (m, c),
                &std::format!("m={m} c={c}: LN2 half rows"),
            );
            // NaN in the layout's padding: a GEMM that read it would carry it to `got`.
            let mut h = std::vec![f32::from_bits(0x7e00_7e00); len];
            kernels::layer_norm_rows_half(kern, &x, c, &lw, &lb, &mut h).unwrap();
            for n in [1usize, 16, 33] {
                let stored = random_b(&mut rng, c, n);
                let bias = rng.vec(n, -0.5, 0.5);
                let init = rng.vec(m * n, -1.0, 1.0);
                for dtype in DTYPES {
                    let (data, scales) = stored.data(dtype);
                    let b = PackedB::new(data, scales, c, n).unwrap();
                    for gelu in [false, true] {
                        let epi = || {
                            if gelu {
                                Epilogue::BiasGelu(&bias)
                            } else {
                                Epilogue::Bias(&bias)
                            }
                        };
                        let mut want = init.clone();
                        let a = MatRef::dense(&f, m, c);
                        kernels::gemm(kern, a, b, epi(), MatMut::dense(&mut want, m, n)).unwrap();
                        let mut got = init.clone();
                        let out = MatMut::dense(&mut got, m, n);
                        let short = &h[..len - 1];
                        assert!(kernels::gemm_half_rows(kern, short, m, b, epi(), out).is_err());
                        let out = MatMut::dense(&mut got, m, n);
                        kernels::gemm_half_rows(kern, &h, m, b, epi(), out).unwrap();
                        let what =
                            std::format!("half rows {dtype:?} m={m} k={c} n={n} gelu {gelu}");
                        assert_bits(&got, &want, &what);
                    }
                }
            }
        }
    }
}

/// The definition is half precision, not f32 under another name: on inputs with more
/// significant bits than f16 holds it differs from the f32 reference, by no more than the
/// f16 roundings of a 3·K²-term sum allow.
#[test]
fn fp16_qdw_reference_rounds_to_half() {
    let mut rng = Rng::new(29);
    let (k, c, w) = (7usize, 16usize, 14usize);
    let (stored, bias) = random_qdw(&mut rng, k, c);
    let src = rng.vec(w * c, -2.0, 2.0);
    let len = kernels::qdw_row_len(w, c, k);
    let (mut rows, mut hrows) = (std::vec![0.0f32; len], std::vec![0.0f32; len]);
    scalar::block_row(&src, w, c, k, &mut rows);
    scalar::block_row_fp16(&src, w, c, k, &mut hrows);
    // The same row K times (one image row, repeated), in f32 and half precision.
    let (refs, hrefs) = (
        std::vec![rows.as_slice(); k],
        std::vec![hrows.as_slice(); k],
    );
    let (taps, scales) = stored.data(Dtype::F32);
    let wts = QdwWeights::new(k, c, taps, scales, &bias).unwrap();
    let mut half = std::vec![0.0f32; w * c];
    scalar::qdw_row_fp16(&wts, &hrefs, w, None, &mut half);
    let mut full = std::vec![0.0f32; w * c];
    scalar::qdw_row(&wts, &refs, w, None, &mut full);
    let differ = half
        .iter()
        .zip(&full)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert!(
        differ > half.len() / 2,
        "only {differ} of {} outputs differ from f32",
        half.len()
    );
    let scale = 1.0 + full.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = half
        .iter()
        .zip(&full)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    std::eprintln!("fp16 QDW definition: worst {worst:e} against f32, output scale {scale}");
    // Measured: 1.4e-2 worst against an output scale of 9.0 (0.15% of it, about 3 f16
    // half-ulps there): the f16 roundings of inputs, taps and 49-term sums, magnified by the
    // product a·b. Held to 0.3% of the scale.
    assert_close(&half, &full, 0.003, "fp16 QDW definition against f32");
}

/// The epilogues where the kernel's fused `sum·scale + bias` and the definition's two
/// roundings differ (int8 weights with a bias): the residual one within one f32 rounding
/// (1e-6); GELU as `assert_fp16_gelu` states, `v` being the bias epilogue's output.
#[test]
fn fp16_gemm_epilogues_within_one_rounding() {
    let kerns = fp16_kernels();
    let mut rng = Rng::new(12);
    for &(m, k, n) in &[(9usize, 40usize, 33usize), (13, 128, 16), (1, 7, 5)] {
        let a = rng.vec(m * k, -1.0, 1.0);
        let stored = random_b(&mut rng, k, n);
        let (bias, gamma) = (rng.vec(n, -0.5, 0.5), rng.vec(n, 0.5, 1.5));
        let init = rng.vec(m * n, -1.0, 1.0);
        for dtype in DTYPES {
            let (data, scales) = stored.data(dtype);
            let b = PackedB::new(data, scales, k, n).unwrap();
            for e in [
                Epilogue::BiasGelu(&bias),
                Epilogue::BiasScaleAdd {
                    bias: &bias,
                    gamma: &gamma,
                },
            ] {
                let g = GemmCase {
                    a: &a,
                    m,
                    lda: k,
                    b,
                    epi: e,
                    init: &init,
                    ldo: n,
                };
                let want = reference(g);
                let v = reference(GemmCase {
                    epi: Epilogue::Bias(&bias),
                    ..g
                });
                let what = std::format!("fp16 {dtype:?} {m}x{k}x{n}");
                for &kern in &kerns {
                    let got = g.run(kern);
                    if matches!(e, Epilogue::BiasGelu(_)) {
                        // The definition's GELU is `math::f16::gelu(v)`.
                        assert_fp16_gelu(&got, &v, 1e-6, &what);
                    } else {
                        assert_close(&got, &want, 1e-6, &what);
                    }
                }
            }
        }
    }
}

/// GEMMs deeper than the stack copies (`FP16_MAX_K`) run the f32 GEMM (bit for bit the
/// f32 token's result).
#[test]
fn fp16_gemm_past_the_stack_copy() {
    let kerns = fp16_kernels();
    let mut rng = Rng::new(13);
    let (m, k, n) = (6usize, crate::kernels::FP16_MAX_K + 9, 20usize);
    let a = rng.vec(m * k, -1.0, 1.0);
    let stored = random_b(&mut rng, k, n);
    let bias = std::vec![0.0; n];
    let init = std::vec![0.0; m * n];
    for dtype in DTYPES {
        let (data, scales) = stored.data(dtype);
        let b = PackedB::new(data, scales, k, n).unwrap();
        for &kern in &kerns {
            let g = GemmCase {
                a: &a,
                m,
                lda: k,
                b,
                epi: Epilogue::Bias(&bias),
                init: &init,
                ldo: n,
            };
            let (got, want) = (g.run(kern), g.run(kern.without_fp16()));
            assert_bits(&got, &want, &std::format!("{dtype:?} k={k}"));
        }
    }
}

/// `v` for every f16 value, each as f32 (NaN, infinities, subnormals and both zeros
/// among them), then f32 values between and beyond them: random ones in [-12, 12], large,
/// tiny, and f32 values one ulp from f16 rounding ties.
fn gelu_inputs() -> Vec<f32> {
    use crate::math::f16;
    let mut v: Vec<f32> = (0..=u16::MAX).map(|h| f16::to_f64(h) as f32).collect();
    let mut rng = Rng::new(21);
    v.extend((0..20_000).map(|_| rng.f32(-12.0, 12.0)));
    v.extend([
        1e5f32, -1e5, 65504.0, -65520.0, 3e38, -3e38, 1e-9, -1e-9, 0.0, -0.0,
    ]);
    for h in (0x3c00u16..0x4400).step_by(37) {
        // Halfway between two f16 values, and one f32 ulp either side.
        let mid = ((f16::to_f64(h) + f16::to_f64(h + 1)) / 2.0) as f32;
        v.extend([
            mid,
            f32::from_bits(mid.to_bits() - 1),
            f32::from_bits(mid.to_bits() + 1),
        ]);
        v.extend([-mid, -f32::from_bits(mid.to_bits() + 1)]);
    }
    v
}

/// The half-precision GELU kernel equals its definition (`math::f16::gelu`) bit for bit on
/// every f16 value and many f32 ones; NaN in (or -inf) gives NaN out, and only there (the
/// NaNs' payloads are not compared). Slices of 1
/// to 17 floats take the 8-lane tail.
#[test]
fn fp16_gelu_is_its_definition_bit_for_bit() {
    let kerns = fp16_kernels();
    let xs = gelu_inputs();
    let want: Vec<f32> = xs.iter().map(|&x| crate::math::f16::gelu(x)).collect();
    for (&x, &w) in xs.iter().zip(&want) {
        // -inf too: `0.5·x + |x|·0.5` is -inf + inf, as PyTorch's `x·0.5·(1 + erf)` is -inf·0.
        let nan = x.is_nan() || x == f32::NEG_INFINITY;
        assert_eq!(nan, w.is_nan(), "definition: gelu({x}) = {w}");
    }
    for &kern in &kerns {
        let mut got = xs.clone();
        crate::kernels::gelu_slice(kern, &mut got);
        for (i, ((&x, &g), &w)) in xs.iter().zip(&got).zip(&want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{kern:?} gelu({x:e}) #{i}: got {g:e} ({:#010x}), want {w:e} ({:#010x})",
                g.to_bits(),
                w.to_bits()
            );
        }
        for len in 1..=17 {
            let mut got = xs[1000..1000 + len].to_vec();
            crate::kernels::gelu_slice(kern, &mut got);
            assert_bits(
                &got,
                &want[1000..1000 + len],
                &std::format!("slice of {len}"),
            );
        }
    }
}

/// How far the half-precision GELU is from the exact one (erf in f64): within
/// `2^-11·|x| + 2^-20` everywhere (measured: 0.75 of it), i.e. about one f16 step of the
/// result; exact (`x` or 0) beyond f16's range; NaN in, NaN out.
#[test]
fn fp16_gelu_accuracy() {
    let exact = |x: f32| {
        let x = f64::from(x);
        0.5 * x * (1.0 + libm::erf(x / core::f64::consts::SQRT_2))
    };
    let mut worst = 0.0f64;
    for x in gelu_inputs().into_iter().filter(|x| x.is_finite()) {
        let (got, want) = (f64::from(crate::math::f16::gelu(x)), exact(x));
        let err = (got - want).abs();
        let tol = f64::from(x.abs()) * 2f64.powi(-11) + 2f64.powi(-20);
        assert!(err <= tol, "gelu_fp16({x:e}) = {got:e}, exact {want:e}");
        worst = worst.max(err / tol);
    }
    std::eprintln!("fp16 GELU: worst error {worst:.3} of the bound 2^-11·|x| + 2^-20");
    for x in [1e5f32, 3e38, 65520.0] {
        assert_eq!(crate::math::f16::gelu(x), x);
        assert_eq!(crate::math::f16::gelu(-x), 0.0);
    }
    assert!(crate::math::f16::gelu(f32::NAN).is_nan());
    assert_eq!(crate::math::f16::gelu(f32::INFINITY), f32::INFINITY);
}

/// `a` (f32 rows) rounded to f16, two halves to a float: what `layer_norm_rows_half` writes.
/// `m` rows of `k` floats rounded to f16 in the fp16 GEMM's layout
/// (`kernels::half_tiles_at`); the padding holds NaN halves, which no kernel may read.
fn to_half_tiles(a: &[f32], m: usize, k: usize) -> Vec<f32> {
    let mut h = std::vec![f32::from_bits(0x7e00_7e00); kernels::half_tiles_floats(m, k).unwrap()];
    for r in 0..m {
        for j in 0..k {
            let v = f16::from_f64(f64::from(a[r * k + j]));
            scalar::set_half(&mut h, kernels::half_tiles_at(r, j, k), v);
        }
    }
    h
}

/// `got`, `m x k` halves in the fp16 GEMM's layout written over a fill of 7.0 floats,
/// against `want` (`m·k` dense halves): every entry equal and finite, every other half
/// (the layout's padding and past it) untouched.
fn assert_tiles(got: &[f32], want: &[u16], (m, k): (usize, usize), what: &str) {
    let fill = 7.0f32.to_bits();
    let mut entry = std::vec![false; 2 * got.len()];
    for r in 0..m {
        for j in 0..k {
            let at = kernels::half_tiles_at(r, j, k);
            entry[at] = true;
            let (g, w) = (scalar::half(got, at), want[r * k + j]);
            assert!(
                g == w && g & 0x7c00 != 0x7c00,
                "{what}: row {r} column {j}: got {g:#06x}, want {w:#06x}"
            );
        }
    }
    for (i, _) in entry.iter().enumerate().filter(|(_, &e)| !e) {
        let untouched = (fill >> (16 * (i % 2))) as u16;
        assert_eq!(scalar::half(got, i), untouched, "{what}: half {i} written");
    }
}

/// PW1 into half-precision rows (`kernels::gemm_gelu_half`) equals its definition
/// (`scalar::gemm_fp16_gelu_half`) bit for bit: f32 and f16 activation rows, f32, f16 and
/// int8 weights (their scales not 1: the definition fuses `sum·scale + bias` as the kernel
/// does), inner dimensions around the 8-step iteration and the 64-step run, columns around
/// the 8-column epilogue group and the 16-column panel; no half past the `m·n` written.
/// Without an fp16 token, or with short buffers, an error.
#[test]
fn fp16_gelu_half_rows_are_their_definition_bit_for_bit() {
    let mut rng = Rng::new(41);
    let stored = random_b(&mut rng, 8, 8);
    let (data, scales) = stored.data(Dtype::F32);
    let b = PackedB::new(data, scales, 8, 8).unwrap();
    let (a, bias) = (std::vec![0.5f32; 3 * 8], std::vec![0.0f32; 8]);
    // 3 x 8 halves take 4 rows of 8 in the tiles' layout: 16 floats.
    let mut out = std::vec![0.0f32; 16];
    for kern in available() {
        let kern = kern.without_fp16();
        assert!(kernels::gemm_gelu_half(kern, (&a, false), 3, b, &bias, &mut out).is_err());
    }
    let kerns = fp16_kernels();
    if kerns.is_empty() {
        std::eprintln!("no FEAT_FP16 here: the half-precision GELU rows are not run");
        return;
    }
    for &kern in &kerns {
        let short = kernels::gemm_gelu_half(kern, (&a, false), 3, b, &bias, &mut out[..15]);
        assert!(short.is_err(), "3 x 8 halves need 16 floats");
        let ah = to_half_tiles(&a, 3, 8);
        let short = kernels::gemm_gelu_half(kern, (&ah[..15], true), 3, b, &bias, &mut out);
        assert!(short.is_err(), "3 x 8 half rows need 16 floats");
        assert!(kernels::gemm_gelu_half(kern, (&a[..20], false), 3, b, &bias, &mut out).is_err());
        assert!(kernels::gemm_gelu_half(kern, (&a, false), 3, b, &bias[..7], &mut out).is_err());
    }
    let mut checked = 0usize;
    for &m in &[1usize, 2, 3, 4, 5, 7, 9, 13, 33, 40] {
        for &k in &[1usize, 7, 8, 9, 63, 64, 65, 128, 129] {
            for &n in &[1usize, 3, 7, 8, 9, 15, 16, 17, 33, 128] {
                let a = rng.vec(m * k, -2.0, 2.0);
                let ah = to_half_tiles(&a, m, k);
                let stored = random_b(&mut rng, k, n);
                let bias = rng.vec(n, -0.5, 0.5);
                for dtype in DTYPES {
                    let (data, scales) = stored.data(dtype);
                    let b = PackedB::new(data, scales, k, n).unwrap();
                    let mut want = std::vec![0.0f32; (m * n).div_ceil(2)];
                    scalar::gemm_fp16_gelu_half(&a, m, k, b, &bias, &mut want);
                    let want: Vec<u16> = (0..m * n).map(|i| scalar::half(&want, i)).collect();
                    let len = kernels::half_tiles_floats(m, n).unwrap() + 2;
                    for &kern in &kerns {
                        for (rows, a_half) in [(&a, false), (&ah, true)] {
                            let mut got = std::vec![7.0f32; len];
                            kernels::gemm_gelu_half(kern, (rows, a_half), m, b, &bias, &mut got)
                                .unwrap();
                            let what =
                                std::format!("{dtype:?} m={m} k={k} n={n} half rows {a_half}");
                            assert_tiles(&got, &want, (m, n), &what);
                            checked += m * n;
                        }
                    }
                }
            }
        }
    }
    std::eprintln!("fp16 GELU to half rows: {checked} outputs equal to the definition bit for bit");
}

/// The kernel's half-precision GELU on every f16 value and the f32 edge cases of
/// `gelu_inputs` (fed as the bias of a GEMM whose products are 0, so `x` is the bias
/// exactly, but for -0): `math::f16::gelu_half` bit for bit, NaN exactly where the
/// definition's is.
#[test]
fn fp16_gelu_half_kernel_on_every_half() {
    let kerns = fp16_kernels();
    if kerns.is_empty() {
        std::eprintln!("no FEAT_FP16 here: the half-precision GELU rows are not run");
        return;
    }
    let xs = gelu_inputs();
    let n = xs.len();
    let zeros = std::vec![0.0f32; PackedB::packed_len(1, n)];
    let ones = std::vec![1.0f32; n];
    let b = PackedB::new(MatData::F32(&zeros), &ones, 1, n).unwrap();
    for &kern in &kerns {
        let mut got = std::vec![0.0f32; kernels::half_tiles_floats(1, n).unwrap()];
        kernels::gemm_gelu_half(kern, (&[0.0], false), 1, b, &xs, &mut got).unwrap();
        for (i, &x) in xs.iter().enumerate() {
            // The kernel's `x` is `0·1 + bias`: the bias, but +0 for -0.
            let (g, w) = (
                scalar::half(&got, kernels::half_tiles_at(0, i, n)),
                f16::gelu_half(libm::fmaf(0.0, 1.0, x)),
            );
            let nan = |h: u16| h & 0x7c00 == 0x7c00 && h & 0x3ff != 0;
            assert!(
                g == w || (nan(g) && nan(w)),
                "gelu_half({x:e}): got {g:#06x}, want {w:#06x}"
            );
        }
    }
}

/// How far the half-precision GELU with f16 output is from the exact one (erf in f64):
/// within `3·2^-11·|x| + 2^-20` where `|x| < 65504`: the f32-output GELU's `2^-11·|x|`
/// (`fp16_gelu_accuracy`), plus rounding `x` to f16 (`2^-11·|x|`, times GELU's slope, at most
/// 1.13) and the result (`2^-11·|y| <= 2^-11·|x|`). Measured: 0.69 of it (2.08·2^-11·|x|).
/// `+inf` above that range, NaN below it and for NaN.
#[test]
fn fp16_gelu_half_accuracy() {
    let exact = |x: f32| {
        let x = f64::from(x);
        0.5 * x * (1.0 + libm::erf(x / core::f64::consts::SQRT_2))
    };
    let mut worst = 0.0f64;
    for x in gelu_inputs().into_iter().filter(|x| x.abs() < 65504.0) {
        let (got, want) = (f16::to_f64(f16::gelu_half(x)), exact(x));
        let err = (got - want).abs();
        let tol = 3.0 * f64::from(x.abs()) * 2f64.powi(-11) + 2f64.powi(-20);
        assert!(err <= tol, "gelu_half({x:e}) = {got:e}, exact {want:e}");
        worst = worst.max(err / tol);
    }
    std::eprintln!("fp16 GELU to f16: worst error {worst:.3} of the bound 3·2^-11·|x| + 2^-20");
    for x in [65520.0f32, 1e5, f32::INFINITY] {
        assert_eq!(
            f16::to_f64(f16::gelu_half(x)),
            f64::INFINITY,
            "gelu_half({x})"
        );
        assert!(f16::to_f64(f16::gelu_half(-x)).is_nan(), "gelu_half(-{x})");
    }
    assert!(f16::to_f64(f16::gelu_half(f32::NAN)).is_nan());
}

/// PW2's residual epilogues on the fp16 GEMM (`ScaleAdd`, `BiasScaleAdd`), bit for bit in
/// the kernel's order, `out = fma(gamma, fma(sum, scale, bias), out)`, `sum` the
/// definition's (`scalar::gemm_fp16` with unit scales and a zero bias gives it): whole
/// 16-column panels run from the tile's registers, the rest through the parked tile. f32,
/// f16 and int8 weights (int8's scales not 1); rows around the 4-, 2- and 1-row tiles,
/// columns around the panel, inner dimensions around the 64-step run.
#[test]
fn fp16_residual_epilogues_are_the_kernels_order_bit_for_bit() {
    let kerns = fp16_kernels();
    if kerns.is_empty() {
        std::eprintln!("no FEAT_FP16 here: the fp16 residual epilogues are not run");
        return;
    }
    let mut rng = Rng::new(43);
    let mut checked = 0usize;
    for (m, k, n) in [
        (1usize, 8usize, 16usize),
        (4, 64, 16),
        (5, 65, 32),
        (7, 128, 33),
        (9, 7, 48),
        (13, 200, 17),
    ] {
        let a = rng.vec(m * k, -2.0, 2.0);
        let stored = random_b(&mut rng, k, n);
        let (bias, gamma) = (rng.vec(n, -0.5, 0.5), rng.vec(n, 0.5, 1.5));
        let init = rng.vec(m * n, -1.0, 1.0);
        let (ones, zeros) = (std::vec![1.0f32; n], std::vec![0.0f32; n]);
        for dtype in DTYPES {
            let (data, scales) = stored.data(dtype);
            let b = PackedB::new(data, scales, k, n).unwrap();
            let mut sums = std::vec![0.0f32; m * n];
            let unit = PackedB::new(data, &ones, k, n).unwrap();
            scalar::gemm_fp16(&a, m, k, unit, Epilogue::Bias(&zeros), &mut sums, n);
            for with_bias in [false, true] {
                let epi = residual_epi(with_bias, &bias, &gamma);
                let want: Vec<f32> = (0..m * n)
                    .map(|e| {
                        let j = e % n;
                        let b = if with_bias { bias[j] } else { 0.0 };
                        libm::fmaf(gamma[j], libm::fmaf(sums[e], scales[j], b), init[e])
                    })
                    .collect();
                for &kern in &kerns {
                    let mut got = init.clone();
                    let (am, om) = (MatRef::dense(&a, m, k), MatMut::dense(&mut got, m, n));
                    kernels::gemm(kern, am, b, epi, om).unwrap();
                    let what = std::format!("fp16 {dtype:?} {m}x{k}x{n} bias {with_bias}");
                    assert_bits(&got, &want, &what);
                    checked += got.len();
                }
            }
        }
    }
    std::eprintln!("fp16 residual epilogues: {checked} outputs in the kernel's order, bit for bit");
}
