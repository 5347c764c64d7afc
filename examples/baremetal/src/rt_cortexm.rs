//! Bare-metal Cortex-M startup (ARMv7E-M with an FPU, ARMv8-M Mainline): the vector table
//! (initial stack pointer, reset, every fault to one handler that reports and stops), the
//! stack painted (to measure its high-water mark), `.data` copied from its load address,
//! `.bss` zeroed, the FPU enabled (CPACR: full access to CP10 and CP11), and semihosting
//! (`bkpt 0xab`) for output, the command line and the exit status.
//!
//! On a real part: the memory map (linker script), the console (its UART) and the exit (a
//! part has no semihosting: spin, or reset through the watchdog) change; the rest holds.

use core::arch::{asm, global_asm};

global_asm!(
    r#"
    .syntax unified
    .section .vectors, "a"
    .global quadra_vector_table
quadra_vector_table:
    .word   __stack_top
    .word   quadra_reset
    .rept   14
    .word   quadra_fault
    .endr

    .section .text.quadra_reset, "ax"
    .thumb
    .global quadra_reset
    .thumb_func
quadra_reset:
    // Paint the stack (nothing is on it yet), to find how deep the program went.
    ldr     r0, =__stack_bottom
    ldr     r1, =__stack_top
    ldr     r2, =0x5a5a5a5a
1:  cmp     r0, r1
    bhs     2f
    str     r2, [r0], #4
    b       1b
2:  // .data from its load address.
    ldr     r0, =__data_start
    ldr     r1, =__data_end
    ldr     r2, =__data_load
3:  cmp     r0, r1
    bhs     4f
    ldr     r3, [r2], #4
    str     r3, [r0], #4
    b       3b
4:  // Zero .bss (the arena lives there).
    ldr     r0, =__bss_start
    ldr     r1, =__bss_end
    movs    r2, #0
5:  cmp     r0, r1
    bhs     6f
    str     r2, [r0], #4
    b       5b
6:  // FPU: CPACR.CP10 = CP11 = full access.
    ldr     r0, =0xE000ED88
    ldr     r1, [r0]
    orr     r1, r1, #(0xF << 20)
    str     r1, [r0]
    dsb
    isb
    bl      quadra_main
7:  b       7b

    .section .text.quadra_fault, "ax"
    .thumb
    .global quadra_fault
    .thumb_func
quadra_fault:
    mrs     r0, ipsr
    ldr     r1, =0xE000ED28
    ldr     r1, [r1]
    ldr     r2, =0xE000ED2C
    ldr     r2, [r2]
    mov     r3, lr
    bl      quadra_exception
8:  b       8b
"#
);

/// A fault: its exception number, the CFSR and HFSR registers; exit with status 3.
#[no_mangle]
extern "C" fn quadra_exception(ipsr: u32, cfsr: u32, hfsr: u32, lr: u32) -> ! {
    use core::fmt::Write;
    let _ = writeln!(
        Console::new(),
        "exception: number {}, CFSR {cfsr:#x}, HFSR {hfsr:#x}, EXC_RETURN {lr:#x}",
        ipsr & 0x1ff
    );
    exit(3)
}

/// The semihosting operation that ends the program with a status (SYS_EXIT_EXTENDED: 32-bit SYS_EXIT cannot carry a subcode).
pub(crate) const SYS_EXIT: usize = 0x20;

/// A semihosting call (`bkpt 0xab`): operation `op`, parameter block at `arg`.
pub(crate) fn semihost(op: usize, arg: usize) -> usize {
    let r: usize;
    // SAFETY: the semihosting breakpoint reads the parameter block at `arg` (the caller's
    // live local) and writes only r0; QEMU runs with -semihosting.
    unsafe { asm!("bkpt #0xab", inout("r0") op => r, in("r1") arg, options(nostack)) };
    r
}

pub use crate::rt_common::{command_line, exit, stack_used, Console};
