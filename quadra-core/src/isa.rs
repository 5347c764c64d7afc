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

/// The arithmetic of the float kernels: `F32` (the default, everywhere) or `Fp16`, half
/// precision on aarch64 CPUs with FEAT_FP16 (the Cortex-A76 and its kind: `fmla .8h`, eight
/// multiply-adds per instruction, twice the f32 rate). Elsewhere `Fp16` runs f32, and
/// [`Kernels::describe`] of the resulting token says `fp16` only when it is really used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Single precision throughout.
    #[default]
    F32,
    /// Half precision where FEAT_FP16 pays: the pointwise GEMMs (operands rounded to f16,
    /// products summed in f16 over runs of [`FP16_CHUNK`] inner steps, the runs summed in
    /// f32), the QDW conv (on half-precision input rows, its epilogue in f32) and GELU's
    /// `g`; the rest f32.
    Fp16,
}

/// Inner-dimension steps a half-precision GEMM sums in f16 before adding the run into its
/// f32 accumulator. The fold (widen and add: four vector operations per eight columns, the
/// widening 2 cycles a time on the A76's conversion pipe) cost the 4 x 16 tile 32 modeled
/// cycles against 152 for a run of 32 steps; at 64 it is half as much per step (modeled
/// fp16 GEMM 11.1 -> 12.2 multiply-adds per cycle, of 16). The price is an f16 sum of 64
/// terms (off by at most 64 half-ulps of its size; on the PyTorch fixtures under qemu the
/// logits' cosine went from 0.9999985 to 0.9999967 on QuadraNet25-XXS, 0.9999958 at worst,
/// top-1 unchanged, digits still 357/360).
pub const FP16_CHUNK: usize = 64;

impl Precision {
    /// `f32` or `fp16`, as accepted by [`Precision::from_name`].
    pub const fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Fp16 => "fp16",
        }
    }

    /// Parses `f32` or `fp16`.
    pub fn from_name(name: &str) -> Option<Precision> {
        [Precision::F32, Precision::Fp16]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A token for running kernels of one ISA. Holding one proves the CPU supports its ISA
/// (and, when [`Kernels::int8_dot`] is set, its int8 dot-product extension; when
/// [`Kernels::fp16`] is set, FEAT_FP16 half-precision arithmetic).
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
    fp16: bool,
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
            fp16: false,
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
            fp16: false,
        }
    }

    /// The best kernels this CPU runs, detected at run time without `std`: on x86_64 by
    /// CPUID and XGETBV (AVX2 needs AVX2, FMA and F16C with the OS saving YMM state;
    /// AVX-512 needs AVX-512F on top, with ZMM state saved; the int8 dot extension
    /// AVX-512 VNNI and BW), so firmware built for a generic x86_64 still gets its SIMD
    /// paths; elsewhere what is enabled at compile time ([`Kernels::compiled`]: NEON is
    /// baseline on aarch64). `quadra-cpu` detects the same with `std`.
    pub fn detect() -> Kernels {
        [Isa::Avx512, Isa::Avx2, Isa::Neon]
            .into_iter()
            .find_map(Kernels::supported)
            .unwrap_or(Kernels::scalar())
    }

    /// Kernels for `isa` if this CPU runs them, with the ISA's int8 dot-product extension
    /// when the CPU has it: on x86_64 by CPUID and XGETBV (the one place the rules are
    /// written: AVX2 needs AVX2, FMA and F16C with YMM state saved; AVX-512 needs AVX-512F
    /// with ZMM state on top of AVX2's, since its int8 GEMM without VNNI runs the AVX2 leaf;
    /// the dot extensions are AVX-VNNI for AVX2 and AVX-512 VNNI with BW for AVX-512);
    /// elsewhere what is enabled at compile time ([`Kernels::for_compiled`]). `quadra-cpu`
    /// uses this on x86_64 and the OS's feature detection on aarch64, where reading the
    /// CPU's ID registers needs the OS.
    pub fn supported(isa: Isa) -> Option<Kernels> {
        match isa {
            Isa::Scalar => Some(Kernels::scalar()),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => x86::supported(isa),
            _ => Kernels::for_compiled(isa),
        }
    }

    /// Whether this CPU runs the EVEX twin of the AVX-VNNI int8 tiles (AVX-512 VL, BW and
    /// VNNI on top of AVX2's features): how the `avx2+vnni` tiles are tested and measured
    /// on a CPU without AVX-VNNI.
    #[doc(hidden)]
    pub fn evex_vnni_twin_supported() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            x86::evex_vnni_twin()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// `isa` if it is enabled at compile time, else `None`.
    pub const fn for_compiled(isa: Isa) -> Option<Kernels> {
        if isa.compiled_in() {
            Some(Kernels {
                isa,
                dot: dot_compiled_in(isa),
                fp16: false,
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
            fp16: false,
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
            fp16: self.fp16,
        }
    }

    /// These kernels without the int8 dot-product extension (the w8a8 GEMM then runs its
    /// exact 16-bit multiply-add path: `vpmaddwd` on x86, `smull`/`sadalp` on NEON).
    pub const fn without_int8_dot(self) -> Kernels {
        Kernels {
            isa: self.isa,
            dot: false,
            fp16: self.fp16,
        }
    }

    /// These kernels in half precision ([`Precision::Fp16`]) if their ISA has it (NEON with
    /// FEAT_FP16); any other ISA is returned unchanged, running f32.
    ///
    /// # Safety
    /// The CPU running the program must support FEAT_FP16 (e.g. checked with
    /// `is_aarch64_feature_detected!("fp16")`, the `asimdhp` HWCAP).
    pub const unsafe fn with_fp16_unchecked(self) -> Kernels {
        Kernels {
            isa: self.isa,
            dot: self.dot,
            fp16: matches!(self.isa, Isa::Neon),
        }
    }

    /// These kernels in single precision.
    pub const fn without_fp16(self) -> Kernels {
        Kernels {
            isa: self.isa,
            dot: self.dot,
            fp16: false,
        }
    }

    /// These kernels at `precision` as far as the build allows without run-time detection
    /// (for `no_std`): `Fp16` takes effect on NEON when FEAT_FP16 is enabled at compile time
    /// (`-C target-feature=+fp16`, or a `target-cpu` that has it, such as `cortex-a76`); otherwise
    /// the kernels run f32. `quadra-cpu` detects FEAT_FP16 at run time instead.
    pub const fn with_precision(self, precision: Precision) -> Kernels {
        let fp16 = matches!(precision, Precision::Fp16)
            && matches!(self.isa, Isa::Neon)
            && cfg!(all(target_arch = "aarch64", target_feature = "fp16"));
        Kernels {
            isa: self.isa,
            dot: self.dot,
            fp16,
        }
    }

    /// Do the float GEMMs run in half precision ([`Precision::Fp16`])?
    pub const fn fp16(self) -> bool {
        self.fp16
    }

    /// The precision the float kernels compute in.
    pub const fn precision(self) -> Precision {
        if self.fp16 {
            Precision::Fp16
        } else {
            Precision::F32
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
    /// `neon+dotprod`, `neon+dotprod+fp16` (half-precision GEMMs), `avx2`, `scalar`.
    pub const fn describe(self) -> &'static str {
        match (self.isa, self.dot, self.fp16) {
            (Isa::Scalar, _, _) => "scalar",
            (Isa::Avx2, false, _) => "avx2",
            (Isa::Avx2, true, _) => "avx2+vnni",
            (Isa::Avx512, false, _) => "avx512",
            (Isa::Avx512, true, _) => "avx512+vnni",
            (Isa::Neon, false, false) => "neon",
            (Isa::Neon, true, false) => "neon+dotprod",
            (Isa::Neon, false, true) => "neon+fp16",
            (Isa::Neon, true, true) => "neon+dotprod+fp16",
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

    /// What CPUID and XGETBV say of the features the x86 leaves use.
    struct Features {
        /// AVX2, FMA and F16C with the OS saving YMM state.
        avx2: bool,
        /// AVX-512F with ZMM state saved.
        avx512f: bool,
        avx512bw: bool,
        avx512vl: bool,
        avx512vnni: bool,
        avxvnni: bool,
    }

    fn features() -> Option<Features> {
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
        // AVX-VNNI: CPUID.(EAX=7,ECX=1):EAX bit 4 (leaf 7's EAX is its highest sub-leaf).
        let avxvnni = l7.eax >= 1 && bit(__cpuid_count(7, 1).eax, 4);
        Some(Features {
            avx2: bit(l7.ebx, 5) && fma && f16c,
            avx512f: bit(l7.ebx, 16) && zmm,
            avx512bw: bit(l7.ebx, 30),
            avx512vl: bit(l7.ebx, 31),
            avx512vnni: bit(l7.ecx, 11),
            avxvnni,
        })
    }

    /// Kernels for `isa` (AVX2 or AVX-512) by CPUID, or `None`.
    pub(super) fn supported(isa: Isa) -> Option<Kernels> {
        let f = features()?;
        let (ok, dot) = match isa {
            Isa::Avx2 => (f.avx2, f.avxvnni),
            // The AVX-512 int8 GEMM without VNNI runs the AVX2 leaf: AVX2's features too.
            Isa::Avx512 => (f.avx2 && f.avx512f, f.avx512vnni && f.avx512bw),
            _ => (false, false),
        };
        if !ok {
            return None;
        }
        // SAFETY: every feature the ISA's leaves are compiled with was detected above.
        let k = unsafe { Kernels::new_unchecked(isa) };
        Some(if dot {
            // SAFETY: the ISA's int8 dot extension was detected above (AVX-VNNI's VEX
            // instructions need only YMM state).
            unsafe { k.with_int8_dot_unchecked() }
        } else {
            k.without_int8_dot()
        })
    }

    /// AVX2's features and AVX-512 VL, BW and VNNI (the EVEX twin of the AVX-VNNI tiles).
    pub(super) fn evex_vnni_twin() -> bool {
        features().is_some_and(|f| f.avx2 && f.avx512f && f.avx512vl && f.avx512bw && f.avx512vnni)
    }
}
