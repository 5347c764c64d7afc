//! Stream padding: every tensor starts 64-byte aligned within its weight stream, and every
//! scratch region within the arena. A leaf module: the kernels, the plan, the architecture
//! and the weight layout all pad with it.

/// Vector padding, in floats (64 bytes).
pub const VEC_ALIGN: usize = 16;
/// Matrix padding, in elements (at least 64 bytes for every dtype).
pub const MAT_ALIGN: usize = 64;

/// `n` rounded up to [`VEC_ALIGN`].
pub const fn vec_pad(n: usize) -> usize {
    n.div_ceil(VEC_ALIGN) * VEC_ALIGN
}

/// `n` rounded up to [`MAT_ALIGN`].
pub const fn mat_pad(n: usize) -> usize {
    n.div_ceil(MAT_ALIGN) * MAT_ALIGN
}
