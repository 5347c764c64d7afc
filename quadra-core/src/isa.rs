//! Which instruction set the kernels run on.
//!
//! Three tiers, as in `half`: compile-time target features first ([`Kernels::compiled`]),
//! runtime detection in `quadra-cpu` (which needs `std`), and the scalar reference last.
//! A [`Kernels`] value is a token proving that its ISA may be executed on this CPU.

use core::fmt;

/// An instruction set a kernel is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable scalar reference: the source of truth for every other path.
    Scalar,
    /// x86_64 AVX2 + FMA + F16C (256-bit).
    Avx2,
    /// x86_64 AVX-512F (512-bit).
    Avx512,
    /// aarch64 Advanced SIMD (128-bit).
    Neon,
}

impl Isa {
    /// Every ISA, in order of preference (best last).
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512];

    /// Lower-case name, as accepted by [`Isa::from_name`] (`scalar`, `avx2`, `avx512`, `neon`).
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Parses a name produced by [`Isa::name`].
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.name() == name)
    }

    /// Is this ISA enabled at compile time (so usable without runtime detection)?
    pub const fn compiled_in(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => cfg!(all(
                target_arch = "x86_64",
                target_feature = "avx2",
                target_feature = "fma",
                target_feature = "f16c"
            )),
            Isa::Avx512 => cfg!(all(target_arch = "x86_64", target_feature = "avx512f")),
            Isa::Neon => cfg!(all(target_arch = "aarch64", target_feature = "neon")),
        }
    }

    /// Could this ISA ever run in this build (right architecture)?
    pub const fn exists_for_target(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 | Isa::Avx512 => cfg!(target_arch = "x86_64"),
            Isa::Neon => cfg!(target_arch = "aarch64"),
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A token for running kernels of one ISA. Holding one proves the CPU supports its ISA
/// (and, when [`Kernels::int8_dot`] is set, its int8 dot-product extension).
///
/// ```
/// use quadra_core::{Isa, Kernels};
/// let best = Kernels::detect(); // CPUID on x86 (no std needed), NEON on aarch64
/// println!("running the {} kernels", best.describe()); // e.g. "avx512+vnni"
/// assert_eq!(Kernels::scalar().isa(), Isa::Scalar); // the reference, always there
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernels {
    isa: Isa,
    dot: bool,
}

/// Is the int8 dot-product extension of `isa` enabled at compile time: AVX-VNNI for
/// [`Isa::Avx2`], AVX-512 VNNI (with AVX-512BW) for [`Isa::Avx512`], FEAT_DotProd for
/// [`Isa::Neon`]?
const fn dot_compiled_in(isa: Isa) -> bool {
    match isa {
        Isa::Avx512 => cfg!(all(
            target_arch = "x86_64",
            target_feature = "avx512vnni",
            target_feature = "avx512bw"
        )),
        Isa::Avx2 => cfg!(all(target_arch = "x86_64", target_feature = "avxvnni")),
        Isa::Neon => cfg!(all(target_arch = "aarch64", target_feature = "dotprod")),
        Isa::Scalar => false,
    }
}

impl Kernels {
    /// The scalar reference kernels.
    pub const fn scalar() -> Kernels {
        Kernels {
            isa: Isa::Scalar,
            dot: false,
        }
    }

    /// The best ISA enabled at compile time (`-C target-feature` / `-C target-cpu`).
    pub const fn compiled() -> Kernels {
        let isa = if Isa::Avx512.compiled_in() {
            Isa::Avx512
        } else if Isa::Avx2.compiled_in() {
            Isa::Avx2
        } else if Isa::Neon.compiled_in() {
            Isa::Neon
        } else {
            Isa::Scalar
        };
        Kernels {
            isa,
            dot: dot_compiled_in(isa),
        }
    }

    /// The best kernels this CPU runs, detected at run time without `std`: on x86_64 by
    /// CPUID and XGETBV (AVX2 needs AVX2, FMA and F16C with the OS saving YMM state;
    /// AVX-512 needs AVX-512F on top, with ZMM state saved; the int8 dot extension
    /// AVX-512 VNNI and BW), so firmware built for a generic x86_64 still gets its SIMD
    /// paths; elsewhere what is enabled at compile time ([`Kernels::compiled`]: NEON is
    /// baseline on aarch64). `quadra-cpu` detects the same with `std`.
    pub fn detect() -> Kernels {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(k) = x86::detect() {
                return k;
            }
        }
        Kernels::compiled()
    }

    /// `isa` if it is enabled at compile time, else `None`.
    pub const fn for_compiled(isa: Isa) -> Option<Kernels> {
        if isa.compiled_in() {
            Some(Kernels {
                isa,
                dot: dot_compiled_in(isa),
            })
        } else {
            None
        }
    }

    /// A token for `isa` without checking.
    ///
    /// # Safety
    /// The CPU running the program must support `isa` (e.g. checked with
    /// `is_x86_feature_detected!("avx512f")`), and `isa.exists_for_target()` must hold.
    pub const unsafe fn new_unchecked(isa: Isa) -> Kernels {
        Kernels {
            isa,
            dot: dot_compiled_in(isa),
        }
    }

    /// These kernels with the int8 dot-product extension of their ISA (AVX-VNNI for
    /// [`Isa::Avx2`], AVX-512 VNNI with AVX-512BW for [`Isa::Avx512`], FEAT_DotProd `sdot`
    /// for [`Isa::Neon`]) used by the w8a8 GEMM; scalar has none and is returned unchanged.
    ///
    /// # Safety
    /// The CPU running the program must support that extension (e.g. checked with
    /// `is_x86_feature_detected!("avxvnni")`, `is_x86_feature_detected!("avx512vnni")` or
    /// `is_aarch64_feature_detected!("dotprod")`).
    pub const unsafe fn with_int8_dot_unchecked(self) -> Kernels {
        Kernels {
            isa: self.isa,
            dot: matches!(self.isa, Isa::Avx2 | Isa::Avx512 | Isa::Neon),
        }
    }

    /// These kernels without the int8 dot-product extension (the w8a8 GEMM then runs its
    /// exact 16-bit multiply-add path: `vpmaddwd` on x86, `smull`/`sadalp` on NEON).
    pub const fn without_int8_dot(self) -> Kernels {
        Kernels {
            isa: self.isa,
            dot: false,
        }
    }

    /// The ISA these kernels run on.
    pub const fn isa(self) -> Isa {
        self.isa
    }

    /// Do the w8a8 GEMMs use the ISA's int8 dot-product instructions (`vpdpbusd`, `sdot`)?
    pub const fn int8_dot(self) -> bool {
        self.dot
    }

    /// Test support for `QUADRA_REQUIRE_ISA`: the first kernel path named in `required`
    /// (comma-separated ISA names, `isa+ext` for one with its int8 dot extension, e.g.
    /// `avx2,avx512+vnni`) that none of `have` runs; `Err(name)` for a name that is no ISA.
    #[doc(hidden)]
    pub fn first_missing<'a>(
        have: &[Kernels],
        required: &'a str,
    ) -> Result<Option<&'a str>, &'a str> {
        for name in required.split(',').filter(|s| !s.is_empty()) {
            let (isa, ext) = name.split_once('+').unwrap_or((name, ""));
            let isa = Isa::from_name(isa).ok_or(name)?;
            if !have
                .iter()
                .any(|k| k.isa() == isa && (ext.is_empty() || k.int8_dot()))
            {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }

    /// The kernel path in words, e.g. `avx512+vnni`, `avx2+vnni` (AVX-VNNI),
    /// `neon+dotprod`, `avx2`, `scalar`.
    pub const fn describe(self) -> &'static str {
        match (self.isa, self.dot) {
            (Isa::Scalar, _) => "scalar",
            (Isa::Avx2, false) => "avx2",
            (Isa::Avx2, true) => "avx2+vnni",
            (Isa::Avx512, false) => "avx512",
            (Isa::Avx512, true) => "avx512+vnni",
            (Isa::Neon, false) => "neon",
            (Isa::Neon, true) => "neon+dotprod",
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Isa, Kernels};
    use core::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};

    fn bit(reg: u32, n: u32) -> bool {
        reg >> n & 1 == 1
    }

    /// The best x86 kernels by CPUID and XGETBV, or `None` for scalar.
    pub(super) fn detect() -> Option<Kernels> {
        let l1 = __cpuid(1);
        // OSXSAVE: XGETBV is there and the OS manages the extended state; AVX itself.
        if !(bit(l1.ecx, 27) && bit(l1.ecx, 28)) {
            return None;
        }
        // SAFETY: CPUID.1:ECX.OSXSAVE (bit 27), checked just above, says XGETBV exists.
        let xcr0 = unsafe { _xgetbv(0) };
        let ymm = xcr0 & 0b110 == 0b110;
        let zmm = xcr0 & 0b1110_0110 == 0b1110_0110;
        if __cpuid(0).eax < 7 || !ymm {
            return None;
        }
        let l7 = __cpuid_count(7, 0);
        let (fma, f16c) = (bit(l1.ecx, 12), bit(l1.ecx, 29));
        let (avx2, avx512f, avx512bw) = (bit(l7.ebx, 5), bit(l7.ebx, 16), bit(l7.ebx, 30));
        let vnni = bit(l7.ecx, 11);
        if !(avx2 && fma && f16c) {
            return None;
        }
        if avx512f && zmm {
            // SAFETY: AVX-512F with the OS saving ZMM state, and AVX2, FMA and F16C for the
            // leaves AVX-512 falls back on, were all just detected.
            let k = unsafe { Kernels::new_unchecked(Isa::Avx512) };
            return Some(if vnni && avx512bw {
                // SAFETY: AVX-512 VNNI and BW detected just above.
                unsafe { k.with_int8_dot_unchecked() }
            } else {
                k.without_int8_dot()
            });
        }
        // SAFETY: AVX2, FMA and F16C with the OS saving YMM state, detected above.
        let k = unsafe { Kernels::new_unchecked(Isa::Avx2) };
        // AVX-VNNI: CPUID.(EAX=7,ECX=1):EAX bit 4 (leaf 7's EAX is its highest sub-leaf).
        Some(if l7.eax >= 1 && bit(__cpuid_count(7, 1).eax, 4) {
            // SAFETY: AVX-VNNI detected just above (its VEX instructions need only YMM state).
            unsafe { k.with_int8_dot_unchecked() }
        } else {
            k.without_int8_dot()
        })
    }
}
