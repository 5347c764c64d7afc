//! Reading and writing `.npy` with messages that name the file and what was expected.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ndarray::{Array2, Array4, ArrayD};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};

/// The shape an `.npy` header claims, checked against the data bytes that follow it
/// (float32: 4 bytes a value) before anything is allocated for it.
fn checked_shape(bytes: &[u8], path: &Path) -> Result<Vec<usize>> {
    let shown = path.display();
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("{shown} is not an .npy file (bad magic)");
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => bail!("{shown}: unsupported .npy version {v}"),
    };
    let Some(header) = start.checked_add(len).and_then(|end| bytes.get(start..end)) else {
        bail!("{shown}: the .npy header runs past the end of the file");
    };
    let header = String::from_utf8_lossy(header);
    let descr = header
        .split_once("'descr':")
        .and_then(|(_, rest)| rest.split('\'').nth(1))
        .unwrap_or("");
    // float32 in either byte order (the reader swaps big-endian values).
    if descr != "<f4" && descr != ">f4" {
        let name = match descr {
            "<f8" => "float64",
            "<f2" => "float16",
            "|u1" => "uint8",
            "|i1" => "int8",
            "<i8" => "int64",
            "<i4" => "int32",
            _ => "not float32",
        };
        bail!(
            "{shown}: the array is {name} ('{descr}'); quadra reads float32 .npy files: \
             convert it with x.astype(numpy.float32)"
        );
    }
    let shape = header
        .split_once("'shape':")
        .and_then(|(_, rest)| rest.split_once('(')?.1.split_once(')'))
        .map(|(dims, _)| dims)
        .with_context(|| format!("{shown}: the .npy header has no shape"))?;
    let shape: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{shown}: cannot read the shape ({shape})"))?;
    let data = bytes.len() - start - len;
    let want = shape
        .iter()
        .try_fold(4usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n == data);
    if want.is_none() {
        bail!(
            "{shown}: the header says shape {shape:?} ({} float32 values), but {data} bytes of data follow it",
            shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).map_or("too many".into(), |n| n.to_string())
        );
    }
    Ok(shape)
}

/// Reads a float32 array of rank 4 (`[N, C, H, W]`).
pub fn read_nchw(path: &Path) -> Result<Array4<f32>> {
    let bytes = quadra_cpu::file::read_file(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    checked_shape(&bytes, path)?;
    let a = ArrayD::<f32>::read_npy(&bytes[..]).map_err(|e| {
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
    if shape[0] == 0 {
        bail!(
            "{}: the batch holds no images (shape {shape:?})",
            path.display()
        );
    }
    if let Some(i) = a.iter().position(|v| !v.is_finite()) {
        bail!(
            "{}: element {i} is {}: inputs must be finite",
            path.display(),
            a.iter().nth(i).copied().unwrap_or(f32::NAN)
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

/// Writes a float32 matrix (replacing the file: [`quadra_cpu::file::write_atomic`]).
pub fn write_2d(path: &Path, a: &Array2<f32>) -> Result<()> {
    let mut bytes = Vec::new();
    a.write_npy(&mut bytes)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    quadra_cpu::file::write_atomic(path, &bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}
