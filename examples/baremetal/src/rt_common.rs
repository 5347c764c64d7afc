//! What both startups share: a console, the exit and the command line over each target's
//! semihosting trap (`rt::semihost`, `rt::SYS_EXIT`), and the stack high-water mark.

use core::fmt;

/// Formatted output through semihosting, a line at a time (SYS_WRITE0 takes a
/// NUL-terminated string).
pub struct Console {
    buf: [u8; 160],
    len: usize,
}

impl Console {
    /// An empty line buffer.
    pub fn new() -> Self {
        Console {
            buf: [0; 160],
            len: 0,
        }
    }

    fn flush(&mut self) {
        if self.len > 0 {
            self.buf[self.len] = 0;
            write0(&self.buf[..=self.len]);
            self.len = 0;
        }
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            // A NUL would end the string early; show it as '?'.
            self.buf[self.len] = if b == 0 { b'?' } else { b };
            self.len += 1;
            if b == b'\n' || self.len == self.buf.len() - 1 {
                self.flush();
            }
        }
        Ok(())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.flush();
    }
}

extern "C" {
    static __stack_bottom: u32;
    static __stack_top: u32;
}

/// How deep the stack has gone (bytes, from the paint the startup laid) and its size.
pub fn stack_used() -> (usize, usize) {
    let bottom = core::ptr::addr_of!(__stack_bottom) as usize;
    let top = core::ptr::addr_of!(__stack_top) as usize;
    let mut p = bottom;
    // SAFETY: [bottom, top) is the stack region of the linker script, readable words; the
    // paint is 0x5a in every byte, and the first word that differs is the deepest use.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == 0x5a5a_5a5a {
        p += 4;
    }
    (top - p, top - bottom)
}

/// Ends the program with `status` (ADP_Stopped_ApplicationExit and a subcode).
pub fn exit(status: i32) -> ! {
    let block = [0x20026usize, status as usize];
    super::rt::semihost(super::rt::SYS_EXIT, block.as_ptr() as usize);
    loop {
        core::hint::spin_loop();
    }
}

/// The semihosting command line (`-semihosting-config arg=...`), in `buf`.
pub fn command_line(buf: &mut [u8]) -> &str {
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    if super::rt::semihost(0x15, block.as_mut_ptr() as usize) != 0 {
        return "";
    }
    core::str::from_utf8(&buf[..block[1].min(buf.len())]).unwrap_or("")
}

/// Writes a NUL-terminated string (SYS_WRITE0).
fn write0(s: &[u8]) {
    super::rt::semihost(0x04, s.as_ptr() as usize);
}
