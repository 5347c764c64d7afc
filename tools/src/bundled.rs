//! The bundled default model: QuadraNet trained on scikit-learn's digits (see
//! `tools/train/`), converted to w8a8 (int8 weights and int8 pointwise GEMMs) with `quadra convert --emit-rust`, compiled in.

#[path = "../../models/digits/rust/model.rs"]
mod model;

pub use model::*;

/// Held-out test images, float32 `[N, 1, 32, 32]` (normalised model inputs).
pub static TEST_IMAGES: &[u8] = include_bytes!("../../models/digits/test_images.npy");
/// Held-out labels, int64 `[N]`.
pub static TEST_LABELS: &[u8] = include_bytes!("../../models/digits/test_labels.npy");
