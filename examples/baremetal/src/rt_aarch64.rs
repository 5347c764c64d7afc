//! Bare-metal aarch64 startup for QEMU's `virt` board (entered at EL1 with the MMU off):
//! stack, FP/SIMD enabled, `.bss` zeroed, the stack painted (to measure its high-water
//! mark), exception vectors that report and stop, an identity map (devices below 1 GiB,
//! RAM as normal cacheable memory above: with the MMU off every access is to device memory,
//! where an unaligned access faults) and semihosting for output, the command line and the
//! exit status.
//!
//! On a real board: the RAM base (linker script), the exit (a board has no semihosting:
//! spin, or reset through its watchdog) and the console (its UART) change; the rest holds.

use core::arch::{asm, global_asm};

global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    ldr     x0, =__stack_top
    mov     sp, x0
    // FP/SIMD: CPACR_EL1.FPEN = 0b11, no trap at EL1 or EL0.
    mov     x0, #(3 << 20)
    msr     cpacr_el1, x0
    isb
    // Zero .bss (the arena lives there).
    ldr     x0, =__bss_start
    ldr     x1, =__bss_end
1:  cmp     x0, x1
    b.hs    2f
    str     xzr, [x0], #8
    b       1b
2:  // Paint the stack, to find how deep the program went.
    ldr     x0, =__stack_bottom
    ldr     x1, =__stack_top
    ldr     x2, =0x5a5a5a5a5a5a5a5a
3:  cmp     x0, x1
    b.hs    4f
    str     x2, [x0], #8
    b       3b
4:  ldr     x0, =quadra_vectors
    msr     vbar_el1, x0
    // Level-1 table, 1 GiB blocks: [0, 1 GiB) device nGnRnE (the UART, the GIC),
    // [1 GiB, 2 GiB) normal write-back memory, inner shareable (the RAM).
    ldr     x0, =__page_table
    mov     x1, #512
5:  str     xzr, [x0], #8
    subs    x1, x1, #1
    b.ne    5b
    ldr     x0, =__page_table
    ldr     x1, =0x401
    str     x1, [x0]
    ldr     x1, =0x40000705
    str     x1, [x0, #8]
    ldr     x1, =0xff00
    msr     mair_el1, x1
    // T0SZ 25 (39-bit addresses, walks from level 1), inner/outer write-back caches,
    // inner shareable, 4 KB granule, no TTBR1 walks, 36-bit physical addresses.
    ldr     x1, =0x100803519
    msr     tcr_el1, x1
    msr     ttbr0_el1, x0
    dsb     ish
    isb
    tlbi    vmalle1
    dsb     ish
    isb
    mrs     x1, sctlr_el1
    orr     x1, x1, #(1 << 0)
    orr     x1, x1, #(1 << 2)
    orr     x1, x1, #(1 << 12)
    bic     x1, x1, #(1 << 1)
    msr     sctlr_el1, x1
    isb
    bl      quadra_main
6:  wfe
    b       6b

    // Sixteen entries, 0x80 apart: each reports its index.
    .section .text.vectors, "ax"
    .balign 2048
    .global quadra_vectors
quadra_vectors:
    .irp    n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    .balign 0x80
    mov     x0, #\n
    mrs     x1, esr_el1
    mrs     x2, elr_el1
    mrs     x3, far_el1
    b       quadra_exception
    .endr
"#
);

/// An exception: which vector, its syndrome and addresses; exit with status 3.
#[no_mangle]
extern "C" fn quadra_exception(vector: u64, esr: u64, elr: u64, far: u64) -> ! {
    use core::fmt::Write;
    let _ = writeln!(
        Console::new(),
        "exception: vector {vector}, ESR_EL1 {esr:#x} (class {:#x}), ELR_EL1 {elr:#x}, FAR_EL1 {far:#x}",
        esr >> 26
    );
    exit(3)
}

/// The semihosting operation that ends the program with a status (SYS_EXIT, whose 64-bit form takes a parameter block with a subcode).
pub(crate) const SYS_EXIT: usize = 0x18;

/// A semihosting call (`hlt #0xf000`): operation `op`, parameter block at `arg`.
pub(crate) fn semihost(op: usize, arg: usize) -> usize {
    let r: usize;
    // SAFETY: the semihosting trap reads the parameter block at `arg` (the caller's live
    // local) and writes only x0; QEMU runs with -semihosting.
    unsafe { asm!("hlt #0xf000", inout("x0") op => r, in("x1") arg, options(nostack)) };
    r
}

pub use crate::rt_common::{command_line, exit, stack_used, Console};
