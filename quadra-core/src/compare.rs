//! Comparing outputs: how the converter, the tests and the tools measure how close two
//! logit vectors are.

/// Cosine similarity of two vectors, summed in f64: 1 for equal directions, NaN if either
/// holds a NaN or an infinity (so a comparison against a threshold fails). Two zero
/// vectors are equal (1); a zero vector against a non-zero one has no direction in common
/// (0). Vectors of different lengths compare their common prefix.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| libm::sqrt(v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>());
    let (na, nb) = (norm(a), norm(b));
    if na.is_nan() || nb.is_nan() || dot.is_nan() {
        return f64::NAN;
    }
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    dot / (na * nb)
}

#[cfg(test)]
mod tests {
    use super::cosine;

    #[test]
    fn cosine_of_the_edge_cases() {
        // Rounding of the f64 sums leaves it within a few ulp of 1.
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-15);
        assert!((cosine(&[1.0, 0.0], &[0.0, 1.0])).abs() < 1e-15);
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 0.0]), 1.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert!(cosine(&[f32::NAN, 1.0], &[1.0, 1.0]).is_nan());
        assert!(cosine(&[f32::INFINITY, 1.0], &[1.0, 1.0]).is_nan());
        assert!(cosine(&[0.0, 0.0], &[f32::NAN, 0.0]).is_nan());
    }
}
