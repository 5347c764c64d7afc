//! # quadra-core
//!
//! QuadraNet inference with no operating system and no allocator: the quadratic depthwise
//! conv `Y = (Wa*X + ba) ⊙ (Wb*X + bb) + (Wc*X + bc)`, QuadraBlocks streamed strip by strip
//! in place, and whole networks over one caller-provided arena whose size is a `const fn`.
//!
//! ```
//! use quadra_core::{arch::presets, Kernels, Model};
//!
//! const ARCH: quadra_core::Arch<'static> = presets::quadranet25(16);
//! const ARENA: usize = ARCH.arena_len(64, 64);
//! let len = ARCH.weights_len();
//! let (vecs, mats) = (vec![0.01f32; len.vecs], vec![0.01f32; len.mats]);
//! let weights = quadra_core::Weights { vecs: &vecs, mats: quadra_core::MatData::F32(&mats) };
//! let model = Model::new(ARCH, weights).unwrap();
//! let mut arena = vec![0.0f32; ARENA];
//! let input = vec![0.5f32; 64 * 64 * 3]; // channels-last [H, W, 3]
//! let mut logits = vec![0.0f32; 1000];
//! model.forward(Kernels::compiled(), &input, 64, 64, &mut arena, &mut logits).unwrap();
//! assert!(logits.iter().all(|v| v.is_finite()));
//! ```
//!
//! ## Kernel paths
//!
//! | ISA | GEMM tile | QDW pixels/iter | chosen when |
//! |---|---|---|---|
//! | scalar | - | 1 | always available; the reference |
//! | AVX2 + FMA | 6 x 16 | 3 | `target_feature = "avx2", "fma"` |
//! | AVX-512F | 6 x 64 | 7 | `target_feature = "avx512f"` |
//! | NEON | 5 x 16 | 7 | `target_arch = "aarch64"` |
//!
//! [`Kernels::compiled`] picks from compile-time features, [`Kernels::detect`] by CPUID
//! without std; `quadra-cpu` detects at run time with std.
//!
//! ## The stable surface
//!
//! [`Model`] over an [`Arch`] and [`Weights`], sized by [`Arch::arena_len`] (or
//! [`Model::arena_len`]) and run with [`Kernels`] through an [`Executor`]; [`QnetFile`] to
//! parse a model file; the static-shaped [`QuadraDwConv`] and [`QuadraBlock`]. Items marked
//! hidden (the band and packing functions) are internals shared with the other crates of
//! this workspace; the `kernels`, `plan` and `math` modules exist publicly only with the
//! `internals` feature, which this workspace's benches and tests enable (not a stable API).
#![no_std]
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(test)]
extern crate std;

pub mod arch;
pub mod block;
pub mod compare;
pub mod error;
pub mod exec;
pub mod fixed;
pub mod format;
pub mod isa;
// Internals: the kernels, the arena plan and the scalar math are public only with the
// `internals` feature, for this workspace's benches and tests (not a stable API: it may
// change without notice). The types users need are re-exported below.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod kernels;
#[cfg(not(feature = "internals"))]
#[allow(dead_code)]
mod kernels;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod math;
#[cfg(not(feature = "internals"))]
#[allow(dead_code)]
mod math;
pub mod net;
mod pad;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod plan;
#[cfg(not(feature = "internals"))]
#[allow(dead_code)]
mod plan;
pub mod weights;

#[cfg(test)]
mod tests;

pub use arch::{Arch, BlockSpec, Stage};
pub use block::default_strip_for;
pub use error::Error;
pub use exec::{Executor, Serial};
pub use fixed::{QuadraBlock, QuadraDwConv};
pub use format::QnetFile;
pub use isa::{Isa, Kernels, Precision};
pub use kernels::{Dtype, MatData};
pub use net::Model;
pub use weights::{FloatBlocks, Weights, WeightsLen};
