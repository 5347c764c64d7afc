//! What the firmware does: classify the embedded held-out digits with the compiled-in model
//! and report accuracy, a checksum of every logit and the stack it took; or, in the error
//! modes, show that a broken model, a short arena or a short input is an error the core
//! reports (and the firmware exits non-zero), never a fault.

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use quadra_core::format::{Aligned, QnetFile};
use quadra_core::Kernels;

/// The compiled-in model (`quadra convert --emit-rust`; build.rs copies the one
/// `QUADRA_FIRMWARE_MODEL` names, by default the bundled w8a8 digits model).
#[allow(dead_code)]
mod model {
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}

use model::{ARENA_LEN, INPUT_H, INPUT_LEN, INPUT_W, MODEL_BYTES, NUM_CLASSES};

/// The first held-out images (1x32x32 f32, little-endian) and their labels.
static IMAGES: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/images.bin")));
static LABELS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/labels.bin"));

/// The activation arena: zeroed `.bss`, 64-byte aligned.
#[repr(C, align(64))]
struct Arena([f32; ARENA_LEN]);
static mut ARENA: Arena = Arena([0.0; ARENA_LEN]);
/// Room for a copy of the model bytes, which the bad-model mode edits (only with the
/// `error-modes` feature: it doubles the RAM the example takes).
#[cfg(feature = "error-modes")]
#[repr(C, align(64))]
struct ModelCopy([u8; MODEL_LEN]);
#[cfg(feature = "error-modes")]
const MODEL_LEN: usize = include_bytes!(concat!(env!("OUT_DIR"), "/model.qnet")).len();
#[cfg(feature = "error-modes")]
static mut MODEL_COPY: ModelCopy = ModelCopy([0; MODEL_LEN]);
static TAKEN: AtomicBool = AtomicBool::new(false);

/// FNV-1a over the bytes of every logit, image after image: equal checksums mean equal
/// bits (the script computes the same over `quadra infer`'s logits).
struct Fnv(u64);

impl Fnv {
    fn add(&mut self, logits: &[f32]) {
        for b in logits.iter().flat_map(|v| v.to_le_bytes()) {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Runs `mode` (`run`, `bad-model`, `small-arena`, `bad-input`, and with the error-modes
/// feature `fault`); returns the exit status.
pub fn run(mode: &str, out: &mut impl Write) -> i32 {
    if TAKEN.swap(true, Ordering::AcqRel) {
        return 5;
    }
    // SAFETY: the swap above succeeds once per program: this is the only reference to
    // the arena.
    let arena = unsafe { &mut (*core::ptr::addr_of_mut!(ARENA)).0 };
    let kern = Kernels::detect();
    let n = LABELS.len();
    let _ = writeln!(
        out,
        "quadra bare metal: digits model ({} bytes, matrices {}), {} kernels, arena {} bytes, {n} images",
        MODEL_BYTES.0.len(),
        QnetFile::parse(&MODEL_BYTES.0).map(|f| f.dtype().name()).unwrap_or("?"),
        kern.describe(),
        ARENA_LEN * 4,
    );
    let result = match mode {
        "run" => classify_all(out, kern, arena),
        #[cfg(feature = "error-modes")]
        "bad-model" => {
            // SAFETY: reached once per program (the swap above): the only reference.
            let copy = unsafe { &mut (*core::ptr::addr_of_mut!(MODEL_COPY)).0 };
            // A weight byte flipped after the model was sealed: the checksum catches it.
            copy.copy_from_slice(&MODEL_BYTES.0);
            copy[MODEL_LEN / 2] ^= 0x40;
            QnetFile::parse(copy).map(|_| ())
        }
        #[cfg(feature = "error-modes")]
        "fault" => {
            // An undefined instruction: the exception handler must report it and stop.
            // SAFETY: `udf` only raises the exception the startup code handles.
            unsafe { core::arch::asm!("udf #0") };
            Ok(())
        }
        "small-arena" => model::model().and_then(|m| {
            let input = [0.0f32; INPUT_LEN];
            let mut logits = [0.0f32; NUM_CLASSES];
            let short = &mut arena[..ARENA_LEN - 1];
            m.forward(kern, &input, INPUT_H, INPUT_W, short, &mut logits)
        }),
        "bad-input" => model::model().and_then(|m| {
            let input = [0.0f32; INPUT_LEN - 1];
            let mut logits = [0.0f32; NUM_CLASSES];
            m.forward(kern, &input, INPUT_H, INPUT_W, arena, &mut logits)
        }),
        other => {
            let _ = writeln!(
                out,
                "unknown mode '{other}': run, bad-model, small-arena or bad-input"
            );
            return 2;
        }
    };
    match result {
        Ok(()) if mode == "run" => 0,
        Ok(()) => {
            let _ = writeln!(out, "{mode}: no error (the core accepted it)");
            3
        }
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            1
        }
    }
}

/// Classifies every embedded image; prints each prediction, the accuracy, the logits'
/// checksum and the stack high-water mark.
fn classify_all(
    out: &mut impl Write,
    kern: Kernels,
    arena: &mut [f32; ARENA_LEN],
) -> Result<(), quadra_core::Error> {
    let model = model::model()?;
    let mut fnv = Fnv(0xcbf2_9ce4_8422_2325);
    let mut correct = 0;
    for (i, (img, &label)) in IMAGES.0.chunks_exact(INPUT_LEN * 4).zip(LABELS).enumerate() {
        let mut input = [0.0f32; INPUT_LEN];
        for (v, b) in input.iter_mut().zip(img.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        let mut logits = [0.0f32; NUM_CLASSES];
        model.forward(kern, &input, INPUT_H, INPUT_W, arena, &mut logits)?;
        fnv.add(&logits);
        let best = (0..NUM_CLASSES).fold(0, |b, c| if logits[c] > logits[b] { c } else { b });
        correct += (best == label as usize) as usize;
        let _ = writeln!(out, "image {i:2}: {best} (label {label})");
    }
    let _ = writeln!(out, "accuracy {correct}/{}", LABELS.len());
    let _ = writeln!(out, "logits checksum {:016x}", fnv.0);
    let (used, size) = crate::rt::stack_used();
    let _ = writeln!(out, "stack high-water {used} bytes of {size}");
    Ok(())
}
