//! Which kernel path runs: the no_std CPUID detection against std's, the compile-time choice.

use super::*;
use crate::isa::{Isa, Kernels};

#[test]
fn no_std_detection_agrees_with_std_detection() {
    // The core's CPUID rules against std's feature detection, the independent oracle.
    #[cfg(target_arch = "x86_64")]
    {
        use std::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma") && has!("f16c");
        let avx512 = avx2 && has!("avx512f");
        for (isa, std_ok, std_dot) in [
            (Isa::Avx2, avx2, has!("avxvnni")),
            (Isa::Avx512, avx512, has!("avx512vnni") && has!("avx512bw")),
        ] {
            let k = Kernels::supported(isa);
            assert_eq!(k.is_some(), std_ok, "{isa:?}");
            assert_eq!(
                k.is_some_and(Kernels::int8_dot),
                std_ok && std_dot,
                "{isa:?} dot"
            );
        }
        let twin = avx512 && has!("avx512vl") && has!("avx512bw") && has!("avx512vnni");
        assert_eq!(Kernels::evex_vnni_twin_supported(), twin);
    }
    // `Kernels::detect` picks the best path of `available()`, int8 extension included.
    let best = *available().last().unwrap();
    let got = Kernels::detect();
    assert_eq!(got.isa(), best.isa(), "detect() chose {}", got.describe());
    if cfg!(target_arch = "x86_64") {
        // CPUID finds the VNNI extension as std does.
        assert_eq!(
            got.int8_dot(),
            best.int8_dot(),
            "detect() chose {}",
            got.describe()
        );
    } else {
        // Elsewhere detect() is the compile-time choice: DotProd only if built with it.
        assert_eq!(got, Kernels::compiled());
    }
}

#[test]
fn compiled_kernels_follow_target_features() {
    // Built with `-C target-feature=+avx2,+fma,+f16c` (CI does), the no_std selection must not
    // silently fall back to scalar.
    let want = if cfg!(all(target_arch = "x86_64", target_feature = "avx512f")) {
        Isa::Avx512
    } else if cfg!(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )) {
        Isa::Avx2
    } else if cfg!(all(target_arch = "aarch64", target_feature = "neon")) {
        Isa::Neon
    } else {
        Isa::Scalar
    };
    assert_eq!(Kernels::compiled().isa(), want);
    if let Ok(expect) = std::env::var("QUADRA_EXPECT_COMPILED") {
        assert_eq!(Kernels::compiled().isa().name(), expect);
    }
}

#[test]
fn first_missing_names_the_path_a_cpu_lacks() {
    let scalar = [Kernels::scalar()];
    assert_eq!(Kernels::first_missing(&scalar, ""), Ok(None));
    assert_eq!(Kernels::first_missing(&scalar, "scalar"), Ok(None));
    assert_eq!(
        Kernels::first_missing(&scalar, "scalar,avx2"),
        Ok(Some("avx2"))
    );
    assert_eq!(
        Kernels::first_missing(&scalar, "scalar+vnni"),
        Ok(Some("scalar+vnni"))
    );
    assert_eq!(Kernels::first_missing(&scalar, "avx3"), Err("avx3"));
    let here = available();
    let names: std::vec::Vec<&str> = here.iter().map(|k| k.describe()).collect();
    assert_eq!(Kernels::first_missing(&here, &names.join(",")), Ok(None));
}
