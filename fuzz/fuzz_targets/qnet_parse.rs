//! Fuzzes the zero-copy `.qnet` parser: any bytes must give `Ok` or `Err`, never a panic
//! or an out-of-bounds read. Inputs that parse are also run through a forward pass on a
//! tiny image, on the scalar kernels and on the SIMD kernels this CPU dispatches to (with
//! and without the int8 dot-product extension), so the views the parser hands out meet
//! the kernels that trust them.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run qnet_parse -- -max_total_time=120`
#![no_main]

use libfuzzer_sys::fuzz_target;
use quadra_core::format::{Aligned, QnetFile};
use quadra_core::Kernels;

fuzz_target!(|data: &[u8]| {
    // Copy into 64-byte aligned storage, as a real loader does.
    let mut buf: Vec<Aligned<[u8; 64]>> = (0..data.len().div_ceil(64)).map(|_| Aligned([0; 64])).collect();
    for (c, s) in buf.iter_mut().zip(data.chunks(64)) {
        c.0[..s.len()].copy_from_slice(s);
    }
    // SAFETY: the Vec holds `buf.len() * 64` initialised bytes; we view the first `data.len()`.
    let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), data.len()) };
    if let Ok(file) = QnetFile::parse(bytes) {
        let arch = file.arch;
        // Keep the forward pass small: skip architectures too big for a fuzz iteration.
        let (h, w) = (32, 32);
        if arch.arena_len(h, w) < (1 << 20) && arch.num_classes < 4096 && arch.in_chans < 16 && arch.macs(h, w) < 50_000_000 {
            if let Ok(model) = file.model() {
                // w8a8 models need their int8 rows too.
                let mut arena = vec![0.0f32; model.arena_len(h, w, 1)];
                let input = vec![0.5f32; h * w * arch.in_chans];
                let mut logits = vec![0.0f32; arch.num_classes];
                let best = quadra_cpu::dispatch::best();
                for kern in [Kernels::scalar(), best, best.without_int8_dot()] {
                    let _ = model.forward(kern, &input, h, w, &mut arena, &mut logits);
                }
            }
        }
    }
});
