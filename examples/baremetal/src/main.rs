//! The compiled-in digits model booted with no operating system: a bare-metal aarch64
//! image for QEMU's `virt` board (Cortex-A76, NEON) and a Cortex-M image for QEMU's MPS2/MPS3
//! boards (Cortex-M4F, Cortex-M55: the scalar kernels). Startup code in `rt_*.rs` (stack,
//! zeroed `.bss`, FP/SIMD on, exception handlers that report and stop), output and exit
//! through semihosting, the classification in `app.rs`. `scripts/run-firmware.sh` builds
//! and boots it, and checks its accuracy and logits against a Linux run.
//!
//! Built for the host (as `cargo test --workspace` does) this is a stub that says how to
//! run the real thing.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(missing_docs)]

#[cfg(target_os = "none")]
mod app;
#[cfg(all(target_os = "none", target_arch = "aarch64"))]
#[path = "rt_aarch64.rs"]
mod rt;
#[cfg(all(target_os = "none", target_arch = "arm"))]
#[path = "rt_cortexm.rs"]
mod rt;
#[cfg(target_os = "none")]
mod rt_common;

#[cfg(not(target_os = "none"))]
fn main() {
    println!(
        "quadra-baremetal boots under a system emulator, not here: \
         bash scripts/run-firmware.sh aarch64 (or cortex-m)"
    );
}

/// Called by the startup code with the stack, `.bss`, FP/SIMD and (on aarch64) the MMU set
/// up: runs the mode the semihosting command line names and exits with its status.
#[cfg(target_os = "none")]
#[no_mangle]
extern "C" fn quadra_main() -> ! {
    let mut cmdline = [0u8; 128];
    let mode = rt::command_line(&mut cmdline)
        .split_ascii_whitespace()
        .nth(1)
        .unwrap_or("run");
    let status = app::run(mode, &mut rt::Console::new());
    rt::exit(status)
}

/// A panic in firmware: say where, exit with status 4.
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::fmt::Write;
    let mut out = rt::Console::new();
    let _ = writeln!(out, "panic: {info}");
    rt::exit(4)
}
