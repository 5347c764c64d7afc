//! Runtime choice of the kernel path: detected once, cached, overridable.

use std::sync::OnceLock;

use quadra_core::{Isa, Kernels};

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

/// Can this CPU run `isa`? Checked at run time.
pub fn cpu_supports(isa: Isa) -> bool {
    match isa {
        Isa::Scalar => true,
        // Every feature the leaves are compiled with: the AVX2 leaves widen f16 weights
        // with F16C (`vcvtph2ps`), so a CPU (or emulator) without it must not get them.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        }
        // The AVX-512 kernels fall back on the AVX2 int8 GEMM without VNNI: demand what the
        // AVX2 leaves need too (every AVX-512F CPU has it).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Does this CPU have the int8 dot-product extension of `isa` (AVX-VNNI, AVX-512 VNNI with
/// BW, or FEAT_DotProd)?
pub fn cpu_supports_int8_dot(isa: Isa) -> bool {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => is_x86_feature_detected!("avxvnni"),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw")
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => std::arch::is_aarch64_feature_detected!("dotprod"),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Kernels for `isa` if this CPU can run them, with its int8 dot-product extension when
/// the CPU has it (see [`Kernels::describe`]). `QUADRA_NO_INT8_DOT=1` leaves the extension
/// out (to measure or test the 16-bit int8 path on a CPU that has it).
pub fn kernels_for(isa: Isa) -> Result<Kernels, DispatchError> {
    if isa.exists_for_target() && cpu_supports(isa) {
        // SAFETY: runtime detection just confirmed the CPU supports `isa`, and it exists
        // for this target architecture.
        let k = unsafe { Kernels::new_unchecked(isa) };
        let no_dot = std::env::var_os(NO_INT8_DOT_ENV).is_some_and(|v| v != "0" && !v.is_empty());
        if cpu_supports_int8_dot(isa) && !no_dot {
            // SAFETY: the extension was detected just above.
            Ok(unsafe { k.with_int8_dot_unchecked() })
        } else {
            Ok(k.without_int8_dot())
        }
    } else {
        Err(DispatchError::Unsupported(isa))
    }
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
