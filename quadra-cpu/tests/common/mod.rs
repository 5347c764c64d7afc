//! Helpers shared by the runtime's integration tests.

/// `n` deterministic pseudo-random values in `lo..hi` (xorshift; the same for a seed on
/// every platform).
pub fn random(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            lo + (hi - lo)
                * ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}
