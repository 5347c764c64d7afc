//! `QUADRA_KERNEL` overrides the detected path (its own test binary: it sets the variable).

use quadra_core::Isa;
use quadra_cpu::dispatch;

#[test]
fn kernel_env_overrides_and_rejects() {
    std::env::set_var(dispatch::KERNEL_ENV, "scalar");
    assert_eq!(dispatch::default_kernels().unwrap().isa(), Isa::Scalar);
    std::env::set_var(dispatch::KERNEL_ENV, "sparc");
    let e = dispatch::default_kernels().unwrap_err().to_string();
    assert!(e.contains("unknown kernel path 'sparc'"), "{e}");
    let foreign = if cfg!(target_arch = "x86_64") {
        "neon"
    } else {
        "avx2"
    };
    std::env::set_var(dispatch::KERNEL_ENV, foreign);
    let e = dispatch::default_kernels().unwrap_err().to_string();
    assert!(e.contains("this CPU cannot run"), "{e}");
    std::env::remove_var(dispatch::KERNEL_ENV);
    assert_eq!(dispatch::default_kernels().unwrap(), dispatch::best());
}
