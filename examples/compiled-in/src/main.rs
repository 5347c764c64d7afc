// A model compiled in with `quadra convert --emit-rust DIR`, its arena a `static`: no heap.
#[path = "../../../models/digits/rust/model.rs"] // DIR/model.rs
mod model;
use core::sync::atomic::{AtomicBool, Ordering};
use quadra_core::Kernels;

#[repr(C, align(64))] // aligned: the kernels' loads stay in one cache line
struct Arena([f32; model::ARENA_LEN]);
static mut ARENA: Arena = Arena([0.0; model::ARENA_LEN]);
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The arena, once per program (edition 2024 refuses `&mut ARENA`: take it through a raw pointer).
fn arena() -> Option<&'static mut [f32; model::ARENA_LEN]> {
    // SAFETY: the swap succeeds once per program, so this is the only reference to ARENA.
    (!TAKEN.swap(true, Ordering::AcqRel))
        .then(|| unsafe { &mut (*core::ptr::addr_of_mut!(ARENA)).0 })
}

fn main() -> Result<(), quadra_core::Error> {
    let net = model::model()?; // parse + check once at start-up
    let kern = Kernels::detect(); // AVX2/AVX-512 by CPUID on x86, NEON on aarch64; no std needed
    let arena = arena().ok_or(quadra_core::Error::Format("arena already taken"))?;
    let input = [0.5f32; model::INPUT_LEN]; // channels-last [INPUT_H, INPUT_W, IN_CHANS]
    let mut logits = [0.0f32; model::NUM_CLASSES];
    net.forward(
        kern,
        &input,
        model::INPUT_H,
        model::INPUT_W,
        arena,
        &mut logits,
    )?;
    println!("{} kernels, logits {logits:?}", kern.describe());
    Ok(())
}
