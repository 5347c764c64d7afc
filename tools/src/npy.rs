//! Reading and writing `.npy` with messages that name the file and what was expected.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ndarray::{Array2, Array4, ArrayD};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};

/// Reads a float32 array of rank 4 (`[N, C, H, W]`).
pub fn read_nchw(path: &Path) -> Result<Array4<f32>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let a = ArrayD::<f32>::read_npy(f).map_err(|e| {
        anyhow::anyhow!(
            "{}: expected a float32 .npy array of shape [N, C, H, W]: {e}",
            path.display()
        )
    })?;
    let shape = a.shape().to_vec();
    if shape.len() != 4 {
        bail!(
            "{}: expected shape [N, C, H, W] (rank 4), found rank {} {:?}",
            path.display(),
            shape.len(),
            shape
        );
    }
    Ok(a.into_dimensionality().expect("rank checked"))
}

/// Reads a float32 array from bytes.
pub fn read_f32_bytes(bytes: &[u8], what: &str) -> Result<ArrayD<f32>> {
    ArrayD::<f32>::read_npy(bytes).with_context(|| format!("{what}: not a float32 .npy"))
}

/// Reads an int64 array from bytes.
pub fn read_i64_bytes(bytes: &[u8], what: &str) -> Result<ArrayD<i64>> {
    ArrayD::<i64>::read_npy(bytes).with_context(|| format!("{what}: not an int64 .npy"))
}

/// Writes a float32 matrix.
pub fn write_2d(path: &Path, a: &Array2<f32>) -> Result<()> {
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    a.write_npy(std::io::BufWriter::new(f))
        .with_context(|| format!("cannot write {}", path.display()))
}
