//! The scheduler and the network against unfused full-tensor references: blocks at every
//! strip height, bands, the static types, f16/int8 storage, errors and the scratch plan.

use std::vec;
use std::vec::Vec;

use super::*;
use crate::arch::{block_scratch_len, Arch, BlockSpec, Stage};
use crate::block::{block_forward, qdw_forward, qdw_scratch_len, BlockDims, BlockWeights};
use crate::isa::Kernels;
use crate::kernels::{Dtype, MatData, QdwWeights};
use crate::net::{quantize_model, visit_tensors, MatDataMut, Model};
use crate::weights::Weights;

#[test]
fn block_matches_unfused_reference_for_every_strip_height() {
    let mut rng = Rng::new(3);
    for (c, k, e, h, w) in [
        (8, 3, 4, 5, 7),
        (12, 5, 2, 9, 6),
        (17, 7, 4, 11, 9),
        (16, 7, 2, 3, 13),
    ] {
        let spec = [BlockSpec::quadra(k as u8, e as u8)];
        let arch = one_block_arch(c, &spec);
        let sd = StateDict::random(&arch, 10 + c as u64);
        let packed = sd.pack(&arch);
        let mut start = None;
        visit_tensors::<crate::Error>(&arch, |slot| {
            if slot.name.starts_with("stages.0.0.") && start.is_none() {
                start = Some((slot.vec_offset, slot.mat_offset));
            }
            Ok(())
        })
        .unwrap();
        let (vo, mo) = start.unwrap();
        let len = spec[0].weights_len(c);
        let block_w = Weights {
            vecs: &packed.vecs[vo..vo + len.vecs],
            mats: MatData::F32(&packed.mats[mo..mo + len.mats]),
        };
        let bw = BlockWeights::from_weights(c, k, e, block_w).unwrap();
        let x0 = rng.vec(h * w * c, -2.0, 2.0);
        let mut want = x0.clone();
        ref_block(&sd, "stages.0.0", &mut want, BlockDims { h, w, c, k, e });
        for kern in available() {
            let mut first: Option<Vec<f32>> = None;
            for strip in 1..=h + 1 {
                let mut x = x0.clone();
                let mut scratch = vec![f32::NAN; block_scratch_len(w, c, k, e, strip)];
                let d = BlockDims { h, w, c, k, e };
                block_forward(kern, d, strip, &bw, &mut x, &mut scratch).unwrap();
                let what = std::format!("{:?} c={c} k={k} e={e} strip={strip}", kern.isa());
                assert_close(&x, &want, 2e-5, &what);
                match &first {
                    None => first = Some(x),
                    Some(f) => assert!(f == &x, "{what}: strip height changed the result"),
                }
            }
        }
    }
}

#[test]
fn lone_qdw_matches_reference() {
    let mut rng = Rng::new(4);
    for (k, c, h, w) in [
        (3, 5, 4, 9),
        (5, 16, 7, 7),
        (7, 33, 9, 11),
        (7, 8, 1, 1),
        (7, 64, 12, 13),
        (5, 17, 10, 6),
        (3, 24, 2, 5),
    ] {
        let wts: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(c * k * k, -0.3, 0.3)).collect();
        let bias = rng.vec(3 * c, -0.5, 0.5);
        let mut taps = vec![0.0; QdwWeights::taps_len(k, c)];
        for (f, wt) in wts.iter().enumerate() {
            for t in 0..k * k {
                for ch in 0..c {
                    taps[QdwWeights::tap_index(k, t, f, ch)] = wt[ch * k * k + t];
                }
            }
        }
        let ones = vec![1.0; 3 * c];
        let q = QdwWeights::new(k, c, MatData::F32(&taps), &ones, &bias).unwrap();
        let x0 = rng.vec(h * w * c, -1.0, 1.0);
        let a = dwconv(&x0, h, w, c, k, &wts[0], &bias[..c]);
        let b = dwconv(&x0, h, w, c, k, &wts[1], &bias[c..2 * c]);
        let cc = dwconv(&x0, h, w, c, k, &wts[2], &bias[2 * c..]);
        let want: Vec<f32> = (0..x0.len()).map(|i| a[i] * b[i] + cc[i]).collect();
        for kern in available() {
            let mut x = x0.clone();
            let mut scratch = vec![f32::NAN; qdw_scratch_len(w, c, k)];
            qdw_forward(kern, h, w, &q, &mut x, &mut scratch).unwrap();
            assert_close(
                &x,
                &want,
                1e-5,
                &std::format!("{:?} k={k} c={c}", kern.isa()),
            );
        }
    }
}

#[test]
fn small_model_matches_unfused_reference() {
    const B: [BlockSpec; 2] = [BlockSpec::quadra(3, 4), BlockSpec::quadra(7, 2)];
    const M: [BlockSpec; 3] = [
        BlockSpec::quadra(5, 4),
        BlockSpec::IDENTITY,
        BlockSpec::quadra(3, 2),
    ];
    let arch = Arch {
        in_chans: 3,
        num_classes: 10,
        stages: [
            Stage { dim: 8, blocks: &B },
            Stage {
                dim: 16,
                blocks: &M,
            },
            Stage {
                dim: 32,
                blocks: &B[..1],
            },
            Stage {
                dim: 64,
                blocks: &B[1..],
            },
        ],
    };
    check_model(&arch, 32, 32, 5);
    check_model(&arch, 70, 45, 6);
}

#[test]
fn downsample_that_widens_a_lot_still_runs_in_one_region() {
    // dims that more than double force the planner to start the input behind the output.
    const B: [BlockSpec; 1] = [BlockSpec::quadra(3, 2)];
    let arch = Arch {
        in_chans: 2,
        num_classes: 3,
        stages: [
            Stage { dim: 4, blocks: &B },
            Stage {
                dim: 20,
                blocks: &B,
            },
            Stage {
                dim: 12,
                blocks: &[],
            },
            Stage {
                dim: 40,
                blocks: &B,
            },
        ],
    };
    assert!(arch.plan(64, 64).offsets[0] > 0);
    check_model(&arch, 64, 64, 7);
}

#[test]
fn arena_is_close_to_largest_activation() {
    let arch = crate::arch::presets::quadranet36(64);
    let plan = arch.plan(224, 224);
    assert_eq!(plan.act_len, arch.largest_activation(224, 224));
    assert!(
        plan.scratch_len * 4 < 512 * 1024,
        "scratch {} floats",
        plan.scratch_len
    );
}

#[test]
fn errors_name_the_problem() {
    let arch = crate::arch::presets::quadranet25(16);
    let len = arch.weights_len();
    let (v, mats) = (vec![0.0f32; 10], vec![0.0f32; len.mats]);
    let e = Model::new(
        arch,
        Weights {
            vecs: &v,
            mats: MatData::F32(&mats),
        },
    )
    .unwrap_err();
    assert_eq!(
        std::format!("{e}"),
        std::format!("weights has 10 elements, expected {}", len.vecs)
    );
    let v = vec![0.0f32; len.vecs];
    let m = Model::new(
        arch,
        Weights {
            vecs: &v,
            mats: MatData::F32(&mats),
        },
    )
    .unwrap();
    let mut logits = vec![0.0; 1000];
    let mut arena = vec![0.0; 10];
    let input = vec![0.0; 16 * 16 * 3];
    let e = m
        .forward(Kernels::scalar(), &input, 16, 16, &mut arena, &mut logits)
        .unwrap_err();
    assert!(matches!(e, crate::Error::InputSize { h: 16, w: 16 }));
    let input = vec![0.0; 32 * 32 * 3];
    let e = m
        .forward(Kernels::scalar(), &input, 32, 32, &mut arena, &mut logits)
        .unwrap_err();
    assert!(matches!(
        e,
        crate::Error::Length {
            buffer: crate::error::Buffer::Arena,
            ..
        }
    ));
    let bad = [BlockSpec::quadra(4, 4)];
    let bad_arch = one_block_arch(8, &bad);
    assert_eq!(
        bad_arch.validate(),
        Err(crate::Error::Arch("block kernel must be 3, 5 or 7"))
    );
}

#[test]
fn static_types_agree_with_dynamic() {
    use crate::fixed::{QuadraBlock, QuadraDwConv};
    const C: usize = 9;
    let mut rng = Rng::new(8);
    let spec = BlockSpec::quadra(5, 2);
    let len = spec.weights_len(C);
    let (vecs, mats) = (rng.vec(len.vecs, -0.3, 0.3), rng.vec(len.mats, -0.3, 0.3));
    let packed = Weights {
        vecs: &vecs,
        mats: MatData::F32(&mats),
    };
    let blk = QuadraBlock::<C, 5, 2>::new(packed).unwrap();
    let mut x = [[[0.0f32; C]; 6]; 4];
    for v in x.iter_mut().flatten().flatten() {
        *v = rng.f32(-1.0, 1.0);
    }
    let mut flat: Vec<f32> = x.iter().flatten().flatten().copied().collect();
    let mut scratch = [0.0f32; QuadraBlock::<C, 5, 2>::scratch_len::<6, 2>()];
    blk.forward::<4, 6, 2, { QuadraBlock::<C, 5, 2>::scratch_len::<6, 2>() }>(
        Kernels::scalar(),
        &mut x,
        &mut scratch,
    )
    .unwrap();
    let bw = BlockWeights::from_weights(C, 5, 2, packed).unwrap();
    let mut s2 = vec![0.0; block_scratch_len(6, C, 5, 2, 1)];
    block_forward(
        Kernels::scalar(),
        BlockDims {
            h: 4,
            w: 6,
            c: C,
            k: 5,
            e: 2,
        },
        1,
        &bw,
        &mut flat,
        &mut s2,
    )
    .unwrap();
    assert_eq!(
        x.iter().flatten().flatten().copied().collect::<Vec<_>>(),
        flat
    );

    let taps = rng.vec(QuadraDwConv::<C, 3>::TAPS, -0.3, 0.3);
    let bias = rng.vec(3 * C, -0.3, 0.3);
    let ones = [1.0f32; 3 * C];
    let conv = QuadraDwConv::<C, 3>::new(MatData::F32(&taps), &ones, &bias).unwrap();
    let mut scratch = [0.0f32; QuadraDwConv::<C, 3>::scratch_len::<6>()];
    let mut flat: Vec<f32> = x.iter().flatten().flatten().copied().collect();
    conv.forward(Kernels::scalar(), &mut x, &mut scratch)
        .unwrap();
    let q = QdwWeights::new(3, C, MatData::F32(&taps), &ones, &bias).unwrap();
    let mut s2 = vec![0.0; qdw_scratch_len(6, C, 3)];
    qdw_forward(Kernels::scalar(), 4, 6, &q, &mut flat, &mut s2).unwrap();
    assert_eq!(
        x.iter().flatten().flatten().copied().collect::<Vec<_>>(),
        flat
    );
}

#[test]
fn f16_and_int8_models_track_f32() {
    const B: [BlockSpec; 2] = [BlockSpec::quadra(3, 4), BlockSpec::quadra(7, 2)];
    let arch = Arch {
        in_chans: 3,
        num_classes: 50,
        stages: [
            Stage {
                dim: 16,
                blocks: &B,
            },
            Stage {
                dim: 32,
                blocks: &B[..1],
            },
            Stage {
                dim: 64,
                blocks: &B[1..],
            },
            Stage {
                dim: 128,
                blocks: &B[..1],
            },
        ],
    };
    let sd = StateDict::random(&arch, 21);
    let mut packed = sd.pack(&arch);
    let (h, w) = (64, 64);
    let input = Rng::new(22).vec(h * w * 3, -1.0, 1.0);
    let run = |wts: Weights<'_>, kern: Kernels| {
        let model = Model::new(arch, wts).unwrap();
        let mut arena = vec![0.0; arch.arena_len(h, w)];
        let mut logits = vec![0.0; arch.num_classes];
        model
            .forward(kern, &input, h, w, &mut arena, &mut logits)
            .unwrap();
        logits
    };
    let want = run(packed.weights(), Kernels::scalar());
    let mut f16 = vec![0u16; packed.mats.len()];
    let mut seen = 0;
    let mut vecs = packed.vecs.clone();
    quantize_model(
        &arch,
        &mut vecs,
        &packed.mats,
        MatDataMut::F16(&mut f16),
        |_, e| {
            assert!(e.rel_rms < 1e-3);
            seen += 1;
        },
    )
    .unwrap();
    // stem, 3 downsamples, head, and per block 3 QDW filters + 2 linears.
    assert_eq!(seen, 1 + 3 + 1 + 5 * 5);
    let mut i8s = vec![0i8; packed.mats.len()];
    quantize_model(
        &arch,
        &mut packed.vecs,
        &packed.mats,
        MatDataMut::I8(&mut i8s),
        |n, e| {
            assert!(e.rel_rms < 0.02, "{n}: {e:?}");
        },
    )
    .unwrap();
    for kern in available() {
        let got = run(
            Weights {
                vecs: &vecs,
                mats: MatData::F16(&f16),
            },
            kern,
        );
        let c = cosine(&got, &want);
        assert!(c >= 0.9999, "{:?} f16 cosine {c}", kern.isa());
        let got = run(
            Weights {
                vecs: &packed.vecs,
                mats: MatData::I8(&i8s),
            },
            kern,
        );
        let c = cosine(&got, &want);
        assert!(c >= 0.999, "{:?} int8 cosine {c}", kern.isa());
    }
}

#[test]
fn bands_give_bit_identical_results() {
    const B: [BlockSpec; 3] = [
        BlockSpec::quadra(7, 4),
        BlockSpec::quadra(3, 2),
        BlockSpec::quadra(5, 4),
    ];
    let arch = Arch {
        in_chans: 3,
        num_classes: 10,
        stages: [
            Stage { dim: 8, blocks: &B },
            Stage {
                dim: 16,
                blocks: &B[1..],
            },
            Stage {
                dim: 24,
                blocks: &B[..1],
            },
            Stage {
                dim: 64,
                blocks: &B[..1],
            },
        ],
    };
    // Stage 3 (64 channels, E = 4, 2x2 at 64x64) runs the grouped MLP.
    assert!(crate::arch::grouped_mlp(2, 2, 64, 4));
    let sd = StateDict::random(&arch, 41);
    let packed = sd.pack(&arch);
    let model = Model::new(arch, packed.weights()).unwrap();
    for (h, w) in [(64, 64), (96, 40), (70, 45)] {
        let input = Rng::new(42).vec(h * w * 3, -1.0, 1.0);
        for kern in available() {
            let mut arena = vec![0.0; arch.arena_len(h, w)];
            let mut want = vec![0.0; 10];
            model
                .forward(kern, &input, h, w, &mut arena, &mut want)
                .unwrap();
            for bands in [2, 3, 5, 16] {
                let mut arena = vec![f32::NAN; arch.arena_len_with(h, w, bands)];
                let mut got = vec![0.0; 10];
                let exec = SplitReverse(bands);
                model
                    .forward_with(&exec, kern, &input, h, w, &mut arena, &mut got)
                    .unwrap();
                assert_eq!(got, want, "{:?} {h}x{w} in {bands} bands", kern.isa());
            }
            // Uneven bands, as for unequal cores: 3:1, a core that gets no band, bands of
            // one row (1 of 1001 parts), a slow middle core, and 16 mixed weights.
            const WEIGHTS: [&[u32]; 5] = [
                &[3, 1],
                &[1, 0, 5],
                &[1, 1000],
                &[4, 1, 4, 0],
                &[9, 1, 0, 3, 7, 7, 1, 2, 5, 0, 8, 4, 1, 1, 6, 2],
            ];
            for weights in WEIGHTS {
                let bands = weights.len();
                let mut arena = vec![f32::NAN; arch.arena_len_with(h, w, bands)];
                let mut got = vec![0.0; 10];
                let exec = SplitWeighted(weights);
                model
                    .forward_with(&exec, kern, &input, h, w, &mut arena, &mut got)
                    .unwrap();
                assert_eq!(got, want, "{:?} {h}x{w} in bands {weights:?}", kern.isa());
            }
        }
    }
}

#[test]
fn default_strips_follow_the_target_budget() {
    // QuadraNet36-T's four block shapes (56x56x64 .. 7x7x512, E = 4): rows per strip under
    // this target's STRIP_BUDGET (x86: 320 KB; aarch64, sized for the Cortex-A76's caches:
    // 160 KB). The whole 7x7 map stays one strip on both (its MLP runs grouped).
    use crate::plan::{default_strip, grouped_mlp, STRIP_BUDGET};
    let shapes = [(56, 64), (28, 128), (14, 256), (7, 512)];
    let got: Vec<usize> = shapes
        .iter()
        .map(|&(h, c)| default_strip(h, h, c, 4))
        .collect();
    let want = if cfg!(target_arch = "aarch64") {
        assert_eq!(STRIP_BUDGET, 40 * 1024);
        [3, 5, 7, 7]
    } else {
        assert_eq!(STRIP_BUDGET, 80 * 1024);
        [7, 11, 14, 7]
    };
    assert_eq!(got, want);
    assert!(grouped_mlp(7, 7, 512, 4));
    // Every strip fits the budget unless it is a single row.
    for (&(h, c), &s) in shapes.iter().zip(&got) {
        assert!(
            s == 1 || s * h * (c + 128) <= STRIP_BUDGET,
            "{h}x{h}x{c}: {s} rows"
        );
    }
}

/// The scratch plan's lengths and carvings agree for every preset, input size, band count
/// and dtype: each layout's regions sum to its length and tile the slice in order, a slice
/// one float short is refused, and the arena plan gives every block at least what its
/// layout needs.
#[test]
fn scratch_plan_lengths_and_carvings_agree_for_every_preset_and_band_count() {
    use crate::arch::presets;
    use crate::plan::{
        block_scratch_split, default_strip, grouped_mlp, BlockScratch, GroupedScratch, MlpScratch,
    };
    fn tiles(parts: &[&mut [f32]], whole: *const f32, len: usize) -> bool {
        let mut at = whole;
        let mut sum = 0;
        for p in parts {
            if !p.is_empty() && p.as_ptr() != at {
                return false;
            }
            at = at.wrapping_add(p.len());
            sum += p.len();
        }
        sum <= len
    }
    let mut checked = 0usize;
    for (name, _) in presets::SIZES {
        for family in ["quadranet25", "quadranet36"] {
            let arch = presets::by_name(&std::format!("{family}-{name}")).unwrap();
            for (h, w) in [(224, 224), (64, 96), (160, 32)] {
                for bands in 1..=4 {
                    for dtype in [Dtype::F32, Dtype::W8A8] {
                        let q8 = dtype == Dtype::W8A8;
                        let plan = arch.plan_for(h, w, bands, dtype);
                        for s in 0..4 {
                            let (sh, sw) = Arch::stage_hw(h, w)[s];
                            let c = arch.dim(s);
                            for spec in arch.stages[s].blocks.iter().filter(|b| !b.is_identity()) {
                                let (k, e) = (spec.kernel as usize, spec.expansion as usize);
                                let grouped = grouped_mlp(sh, sw, c, e);
                                let strip = if grouped {
                                    1
                                } else {
                                    default_strip(sh, sw, c, e)
                                };
                                let lay = BlockScratch::of(sw, c, k, e, strip, q8, bands > 1);
                                let (per, shared) = block_scratch_split(sh, sw, c, k, e, bands, q8);
                                // A grouped block sizes its own band chunks inside
                                // `bands·per + shared` (asserted next), not `band_scratch`.
                                assert!(
                                    per >= lay.floats() && (grouped || plan.band_scratch >= per)
                                );
                                assert!(plan.scratch_len >= bands * per + shared);
                                let n = lay.floats();
                                let mut buf = std::vec![0.0f32; n];
                                let base = buf.as_ptr();
                                let r = lay.split(&mut buf).unwrap();
                                assert_eq!(
                                    r.ring.len() + r.ln2.len() + r.mlp.len() + r.below.len(),
                                    n
                                );
                                let mlp_len = r.mlp.len();
                                assert!(tiles(&[r.ring, r.ln2, r.mlp, r.below], base, n));
                                assert!(lay.split(&mut buf[..n - 1]).is_err());
                                let m = MlpScratch::of(strip * sw, c, e, q8);
                                assert_eq!(m.floats(), mlp_len);
                                let mut mb = std::vec![0.0f32; m.floats()];
                                let mp = mb.as_ptr();
                                let [a, b, cc] = m.split(&mut mb).unwrap();
                                assert_eq!(
                                    (a.len(), b.len(), cc.len()),
                                    (m.hidden, m.ln2_q, m.hidden_q)
                                );
                                assert!(tiles(&[a, b, cc], mp, m.floats()));
                                assert_eq!(m.ln2_q == 0, !q8);
                                if grouped {
                                    let g = GroupedScratch::of(sh, sw, c, e, q8);
                                    assert_eq!(g.floats(), shared);
                                    let mut gb = std::vec![0.0f32; g.floats()];
                                    let gp = gb.as_ptr();
                                    let r = g.split(&mut gb, c).unwrap();
                                    assert_eq!(r.ones.len(), c);
                                    assert_eq!(
                                        r.hiddens.len(),
                                        crate::plan::MLP_GROUPS * g.per_group
                                    );
                                    assert!(tiles(
                                        &[r.ln2, r.accs, r.hiddens, r.ones],
                                        gp,
                                        g.floats()
                                    ));
                                    assert!(g.split(&mut gb[..g.floats() - 1], c).is_err());
                                }
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 1000, "{checked} blocks checked");
}

#[test]
fn weighted_bands_tile_the_rows() {
    use crate::exec::weighted_band_rows;
    for rows in [0usize, 1, 2, 7, 14, 56, 1000] {
        for w in [
            &[1u32, 1][..],
            &[3, 1],
            &[0, 1],
            &[1, 0],
            &[0, 0, 0],
            &[5, 0, 2, 9],
        ] {
            let mut next = 0;
            for i in 0..w.len() {
                let (y0, y1) = weighted_band_rows(rows, w, i);
                assert!(
                    y0 == next && y0 <= y1,
                    "{rows} rows, {w:?}: band {i} {y0}..{y1}"
                );
                if w[i] == 0 && w.iter().any(|&x| x > 0) {
                    assert_eq!(y0, y1, "{rows} rows, {w:?}: a zero weight gets no rows");
                }
                next = y1;
            }
            assert_eq!(next, rows, "{rows} rows, {w:?}");
        }
    }
    // Proportional: 3:1 of 56 rows is 42 + 14.
    assert_eq!(weighted_band_rows(56, &[3, 1], 0), (0, 42));
}
