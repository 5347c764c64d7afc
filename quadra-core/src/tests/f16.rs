//! The half-precision reference (`math::f16`) against hand-worked cases everywhere, and
//! against FEAT_FP16's `fmla`, `fmul` and `fadd` on `.8h` vectors where the CPU has it
//! (under qemu in CI: `-cpu max` implements FEAT_FP16), bit for bit, on every combination
//! of edge values and on millions of random operands. `QUADRA_REQUIRE_FP16=1` makes a
//! machine without FEAT_FP16 fail the test instead of skipping the hardware half.

use std::vec::Vec;

#[cfg(target_arch = "aarch64")]
use super::Rng;
use crate::math::f16;

const ONE: u16 = 0x3c00;
const MAX: u16 = 0x7bff; // 65504
const INF: u16 = 0x7c00;
const NAN: u16 = 0x7e00;

/// Values where rounding, subnormals and overflow change behaviour, with both signs.
fn edges() -> Vec<u16> {
    let pos = [
        0x0000, // 0
        0x0001, // smallest subnormal, 2^-24
        0x0002, 0x01ff, 0x0200, // 2^-15
        0x03ff, // largest subnormal
        0x0400, // smallest normal, 2^-14
        0x0401, 0x1000, 0x3555, // ~1/3
        0x3bff, // largest below 1
        ONE, 0x3c01, // 1 + 2^-10
        0x3e00, // 1.5
        0x4000, // 2
        0x4248, // ~pi
        0x57ff, 0x5800, 0x7800, // 32768
        0x7bfe, MAX, INF, NAN,
    ];
    pos.iter().flat_map(|&v| [v, v | 0x8000]).collect()
}

/// The same outcome: equal bits, or both NaN (which NaN the hardware returns depends on
/// its NaN propagation rules, not on rounding, and is not what the kernels rely on).
fn same(got: u16, want: u16) -> bool {
    let nan = |h: u16| h & 0x7c00 == 0x7c00 && h & 0x3ff != 0;
    got == want || (nan(got) && nan(want))
}

#[test]
fn reference_rounds_once_to_nearest_even() {
    let h = |x: f64| f16::from_f64(x);
    let p = |k: i32| 2f64.powi(k);
    // Conversions: exact values keep their bits, for every f16.
    for b in 0..=u16::MAX {
        let x = f16::to_f64(b);
        if !x.is_nan() {
            assert_eq!(h(x), b, "{b:#06x} -> {x} -> back");
        }
    }
    // Ties to even, and a tie broken by a bit far below (which a conversion that drops the
    // low half of an f64's significand gets wrong).
    assert_eq!(h(1.0 + p(-11)), ONE);
    assert_eq!(h(1.0 + p(-11) + p(-40)), 0x3c01);
    assert_eq!(h(1.0 + 3.0 * p(-11)), 0x3c02);
    assert_eq!(h(1.0 + p(-11) - p(-40)), ONE);
    // Overflow: 65504 + 16 is a tie whose even neighbour is 65536, i.e. infinity.
    assert_eq!(h(65504.0 + 15.999), MAX);
    assert_eq!(h(65504.0 + 16.0), INF);
    assert_eq!(h(-65520.0), INF | 0x8000);
    // Subnormals: 2^-25 is a tie between 0 and 2^-24 (rounds to 0, even); above it, up.
    assert_eq!(h(p(-25)), 0x0000);
    assert_eq!(h(p(-25) + p(-60)), 0x0001);
    assert_eq!(h(-3.0 * p(-25)), 0x8002);
    assert_eq!(h(p(-14) - p(-25)), 0x0400); // rounds up into the normals
                                            // The fused multiply-add rounds once: (1 + 2^-10)^2 = 1 + 2^-9 + 2^-20 is not a tie.
    assert_eq!(f16::fma(0x3c01, 0x3c01, 0x0000), 0x3c02);
    // a·b - a·b exactly: the low bits of the product survive an FMA but not a multiply.
    let ab = f16::mul(0x3c01, 0x3c01);
    assert_eq!(f16::to_f64(f16::fma(0x3c01, 0x3c01, ab ^ 0x8000)), p(-20));
    assert_eq!(f16::add(MAX, 0x4c00), INF); // 65504 + 16
    assert_eq!(f16::fma(0x0000, INF, ONE) & 0x7e00, 0x7e00); // 0·inf is NaN
    assert_eq!(f16::fma(0x8000, ONE, 0x0000), 0x0000); // -0 + +0 = +0
    assert_eq!(f16::fma(0x8000, ONE, 0x8000), 0x8000); // -0 + -0 = -0
                                                       // Identities on every pair of edge values: commutativity, x·1 + (-0) = x·1 = x + (-0)
                                                       // = x, and NaN in, NaN out.
    let e = edges();
    for &a in &e {
        let a1 = if a & 0x7fff > 0x7c00 { NAN } else { a };
        assert!(same(f16::fma(a, ONE, 0x8000), a1), "{a:#06x}");
        assert!(
            same(f16::mul(a, ONE), a1) && same(f16::add(a, 0x8000), a1),
            "{a:#06x}"
        );
        assert!(same(f16::fma(NAN, a, ONE), NAN) && same(f16::fma(ONE, ONE, NAN), NAN));
        for &b in &e {
            assert_eq!(
                f16::mul(a, b) & 0x7fff <= 0x7c00,
                f16::mul(b, a) & 0x7fff <= 0x7c00
            );
            assert!(same(f16::mul(a, b), f16::mul(b, a)), "{a:#06x} {b:#06x}");
            assert!(same(f16::add(a, b), f16::add(b, a)), "{a:#06x} {b:#06x}");
        }
    }
}

/// The hardware's results for lanes of (a, b, c): `fmla` (c + a·b), `fmul`, `fadd`.
#[cfg(target_arch = "aarch64")]
mod hw {
    use core::arch::aarch64::*;
    use core::arch::asm;

    /// # Safety
    /// FEAT_FP16 must be present.
    #[target_feature(enable = "neon,fp16")]
    pub(super) unsafe fn ops(a: &[u16; 8], b: &[u16; 8], c: &[u16; 8]) -> [[u16; 8]; 3] {
        let mut out = [[0u16; 8]; 3];
        // SAFETY: the arrays are 8 lanes; FEAT_FP16 is the caller's promise.
        unsafe {
            let (va, vb, vc) = (
                vld1q_u16(a.as_ptr()),
                vld1q_u16(b.as_ptr()),
                vld1q_u16(c.as_ptr()),
            );
            let mut acc = vc;
            asm!("fmla {d:v}.8h, {a:v}.8h, {b:v}.8h", d = inout(vreg) acc, a = in(vreg) va,
                 b = in(vreg) vb, options(pure, nomem, nostack));
            let mul: uint16x8_t;
            asm!("fmul {d:v}.8h, {a:v}.8h, {b:v}.8h", d = lateout(vreg) mul, a = in(vreg) va,
                 b = in(vreg) vb, options(pure, nomem, nostack));
            let add: uint16x8_t;
            asm!("fadd {d:v}.8h, {a:v}.8h, {b:v}.8h", d = lateout(vreg) add, a = in(vreg) va,
                 b = in(vreg) vc, options(pure, nomem, nostack));
            vst1q_u16(out[0].as_mut_ptr(), acc);
            vst1q_u16(out[1].as_mut_ptr(), mul);
            vst1q_u16(out[2].as_mut_ptr(), add);
        }
        out
    }
}

#[cfg(target_arch = "aarch64")]
fn check_lanes(
    a: &[u16; 8],
    b: &[u16; 8],
    c: &[u16; 8],
    bad: &mut Vec<std::string::String>,
    wrong: &mut u64,
) {
    // SAFETY: the caller checked FEAT_FP16.
    let [fma, mul, add] = unsafe { hw::ops(a, b, c) };
    for i in 0..8 {
        let want = [
            f16::fma(a[i], b[i], c[i]),
            f16::mul(a[i], b[i]),
            f16::add(a[i], c[i]),
        ];
        for (op, (&got, want)) in ["fmla", "fmul", "fadd"]
            .iter()
            .zip([fma[i], mul[i], add[i]].iter().zip(want))
        {
            if same(got, want) {
                continue;
            }
            *wrong += 1;
            if bad.len() < 20 {
                bad.push(std::format!(
                    "{op} a={:#06x} b={:#06x} c={:#06x}: hardware {got:#06x}, reference {want:#06x}",
                    a[i], b[i], c[i]
                ));
            }
        }
    }
}

#[test]
fn reference_is_the_fp16_instructions_bit_for_bit() {
    if fp16_here() {
        check_hardware();
    } else {
        assert!(
            std::env::var("QUADRA_REQUIRE_FP16").is_err(),
            "QUADRA_REQUIRE_FP16 is set but this CPU has no FEAT_FP16"
        );
        std::eprintln!("no FEAT_FP16 here: the reference is checked by hand-worked cases only");
    }
}

#[cfg(target_arch = "aarch64")]
fn fp16_here() -> bool {
    std::arch::is_aarch64_feature_detected!("fp16")
}

#[cfg(not(target_arch = "aarch64"))]
fn fp16_here() -> bool {
    false
}

#[cfg(not(target_arch = "aarch64"))]
fn check_hardware() {
    unreachable!("FEAT_FP16 is an aarch64 feature")
}

/// Every (a, b, c) of edge values, then random operands, through `fmla`, `fmul` and `fadd`.
#[cfg(target_arch = "aarch64")]
fn check_hardware() {
    {
        let mut bad = Vec::new();
        let (mut n, mut wrong) = (0u64, 0u64);
        // Every (a, b, c) of edge values.
        let e = edges();
        let mut lanes: Vec<(u16, u16, u16)> = Vec::new();
        for &a in &e {
            for &b in &e {
                for &c in &e {
                    lanes.push((a, b, c));
                }
            }
        }
        let mut rng = Rng::new(0xF16);
        // Random bit patterns (every class: normals, subnormals, infinities, NaNs) ...
        for _ in 0..2_000_000 {
            let r = rng.next();
            lanes.push((r as u16, (r >> 16) as u16, (r >> 32) as u16));
        }
        // ... operands of ordinary size, where rounding is decided ...
        let ordinary = |r: u64| 0x2000 | (r as u16 & 0x1fff) | ((r >> 13) as u16 & 0x8000);
        for _ in 0..2_000_000 {
            let r = rng.next();
            lanes.push((ordinary(r), ordinary(r >> 17), ordinary(r >> 34)));
        }
        // ... and near cancellation: c close to -(a·b), the result a few bits of the product.
        for _ in 0..1_000_000 {
            let r = rng.next();
            let (a, b) = (ordinary(r), ordinary(r >> 17));
            let c = (f16::mul(a, b) ^ 0x8000)
                .wrapping_add((r >> 40) as u16 % 5)
                .wrapping_sub(2);
            lanes.push((a, b, c));
        }
        for chunk in lanes.chunks(8) {
            let mut a = [0u16; 8];
            let mut b = [0u16; 8];
            let mut c = [0u16; 8];
            for (i, &(x, y, z)) in chunk.iter().enumerate() {
                (a[i], b[i], c[i]) = (x, y, z);
            }
            check_lanes(&a, &b, &c, &mut bad, &mut wrong);
            n += chunk.len() as u64;
        }
        assert!(
            wrong == 0,
            "{wrong} results on {n} operand triples differ, e.g.:\n{}",
            bad.join("\n")
        );
        std::eprintln!("fmla/fmul/fadd .8h agree with the reference on {n} operand triples");
    }
}
