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
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => is_x86_feature_detected!("avx512f"),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Kernels for `isa` if this CPU can run them.
pub fn kernels_for(isa: Isa) -> Result<Kernels, DispatchError> {
    if isa.exists_for_target() && cpu_supports(isa) {
        // SAFETY: runtime detection just confirmed the CPU supports `isa`, and it exists
        // for this target architecture.
        Ok(unsafe { Kernels::new_unchecked(isa) })
    } else {
        Err(DispatchError::Unsupported(isa))
    }
}

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
