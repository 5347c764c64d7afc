//! Runtime choice of the kernel path: detected once, cached, overridable.

use std::sync::OnceLock;

use quadra_core::{Isa, Kernels, Precision};

/// Environment variable that forces a kernel path: `scalar`, `avx2`, `avx512` or `neon`.
pub const KERNEL_ENV: &str = "QUADRA_KERNEL";

/// Why a requested kernel path cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// Not an ISA name.
    #[error("unknown kernel path '{0}'; use scalar, avx2, avx512 or neon")]
    Unknown(String),
    /// This CPU cannot run it.
    #[error("this CPU cannot run the {0} kernels (available: {avail})", avail = available().iter().map(|k| k.isa().name()).collect::<Vec<_>>().join(", "))]
    Unsupported(Isa),
}

/// Kernels for `isa` if this CPU runs them, with the ISA's int8 dot-product extension
/// when the CPU has it: on x86_64 the core's CPUID rules ([`Kernels::supported`], the one
/// place they are written), on aarch64 the OS's feature detection (`neon`, `dotprod`).
fn detected(isa: Isa) -> Option<Kernels> {
    match isa {
        #[cfg(target_arch = "aarch64")]
        Isa::Neon if std::arch::is_aarch64_feature_detected!("neon") => {
            // SAFETY: NEON detected just above.
            let k = unsafe { Kernels::new_unchecked(Isa::Neon) };
            Some(if std::arch::is_aarch64_feature_detected!("dotprod") {
                // SAFETY: FEAT_DotProd detected just above.
                unsafe { k.with_int8_dot_unchecked() }
            } else {
                k.without_int8_dot()
            })
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => None,
        _ => Kernels::supported(isa),
    }
}

/// Can this CPU run `isa`? Checked at run time.
pub fn cpu_supports(isa: Isa) -> bool {
    detected(isa).is_some()
}

/// Does this CPU have the int8 dot-product extension of `isa` (AVX-VNNI, AVX-512 VNNI with
/// BW, or FEAT_DotProd)?
pub fn cpu_supports_int8_dot(isa: Isa) -> bool {
    detected(isa).is_some_and(Kernels::int8_dot)
}

/// Kernels for `isa` if this CPU can run them, with its int8 dot-product extension when
/// the CPU has it (see [`Kernels::describe`]). `QUADRA_NO_INT8_DOT=1` leaves the extension
/// out (to measure or test the 16-bit int8 path on a CPU that has it).
pub fn kernels_for(isa: Isa) -> Result<Kernels, DispatchError> {
    let k = detected(isa).ok_or(DispatchError::Unsupported(isa))?;
    let no_dot = std::env::var_os(NO_INT8_DOT_ENV).is_some_and(|v| v != "0" && !v.is_empty());
    Ok(if no_dot { k.without_int8_dot() } else { k })
}

/// Environment variable that keeps the int8 dot-product extension out of the kernels.
pub const NO_INT8_DOT_ENV: &str = "QUADRA_NO_INT8_DOT";

/// Every kernel path this CPU can run, scalar first, best last.
pub fn available() -> Vec<Kernels> {
    Isa::ALL
        .into_iter()
        .filter_map(|i| kernels_for(i).ok())
        .collect()
}

/// The best kernels this CPU can run (detected once, then cached).
pub fn best() -> Kernels {
    static BEST: OnceLock<Kernels> = OnceLock::new();
    *BEST.get_or_init(|| *available().last().expect("scalar is always available"))
}

/// The kernels to use by default: `QUADRA_KERNEL` if set, else [`best`].
pub fn default_kernels() -> Result<Kernels, DispatchError> {
    match std::env::var(KERNEL_ENV) {
        Ok(name) if !name.is_empty() => {
            let isa = Isa::from_name(&name).ok_or(DispatchError::Unknown(name))?;
            kernels_for(isa)
        }
        _ => Ok(best()),
    }
}

/// Does this CPU do FEAT_FP16 half-precision vector arithmetic (the `asimdhp` HWCAP on
/// Linux and Android)? Always false off aarch64: x86 CPUs here have F16C conversions only.
pub fn cpu_supports_fp16() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("fp16")
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

/// `kernels` at `precision`: [`Precision::Fp16`] takes effect on NEON when this CPU has
/// FEAT_FP16 (detected at run time); anywhere else the kernels run f32, and
/// [`precision_note`] says why.
pub fn with_precision(kernels: Kernels, precision: Precision) -> Kernels {
    if precision == Precision::Fp16 && kernels.isa() == Isa::Neon && cpu_supports_fp16() {
        // SAFETY: FEAT_FP16 detected just above.
        unsafe { kernels.with_fp16_unchecked() }
    } else {
        kernels.without_fp16()
    }
}

/// Why `requested` precision is not what `kernels` run, if it is not.
pub fn precision_note(kernels: Kernels, requested: Precision) -> Option<&'static str> {
    match (requested, kernels.fp16()) {
        (Precision::Fp16, false) => Some(match kernels.isa() {
            Isa::Neon => "fp16 requested, running f32: this CPU has no FEAT_FP16 (asimdhp)",
            Isa::Scalar => "fp16 requested, running f32: the scalar kernels compute in f32",
            _ => "fp16 requested, running f32: x86 has no half-precision arithmetic on these CPUs",
        }),
        _ => None,
    }
}
