//! Heap buffers whose first element sits on a 64-byte boundary.
//!
//! The kernels load whole vectors (64 bytes for AVX-512) from weights and activations; a
//! buffer at 16 mod 64, which is where `malloc` puts large blocks, makes every such load
//! straddle two cache lines, and that costs the QDW and GEMM kernels 5-10%. Safe code: the
//! buffer is over-allocated by one cache line and used from its first aligned element.

use std::fmt;
use std::ops::{Deref, DerefMut};

/// A fixed-length `Vec<T>` whose data starts 64-byte aligned.
pub struct AlignedVec<T> {
    buf: Vec<T>,
    off: usize,
    len: usize,
}

/// The activation and scratch buffers.
pub type AlignedF32 = AlignedVec<f32>;

impl<T: Copy + Default> AlignedVec<T> {
    /// `len` default values (zeros).
    pub fn zeros(len: usize) -> Self {
        let pad = (64 / std::mem::size_of::<T>().max(1)).max(1);
        let buf = vec![T::default(); len + pad];
        // `align_offset` may in principle decline (usize::MAX); then stay unaligned rather
        // than index out of bounds.
        let off = buf.as_ptr().align_offset(64).min(pad);
        AlignedVec { buf, off, len }
    }

    /// `len` zeros, or `None` if the memory cannot be had (instead of aborting).
    pub fn try_zeros(len: usize) -> Option<Self> {
        let pad = (64 / std::mem::size_of::<T>().max(1)).max(1);
        let mut buf = Vec::new();
        buf.try_reserve_exact(len.checked_add(pad)?).ok()?;
        buf.resize(len + pad, T::default());
        let off = buf.as_ptr().align_offset(64).min(pad);
        Some(AlignedVec { buf, off, len })
    }

    /// A copy of `src`.
    pub fn from_slice(src: &[T]) -> Self {
        let mut v = Self::zeros(src.len());
        v.copy_from_slice(src);
        v
    }

    /// The buffer.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.buf[self.off..self.off + self.len]
    }

    /// The buffer.
    pub fn as_slice(&self) -> &[T] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl<T: Copy + Default> Deref for AlignedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Copy + Default> DerefMut for AlignedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

impl<T: Copy + Default> From<Vec<T>> for AlignedVec<T> {
    fn from(v: Vec<T>) -> Self {
        Self::from_slice(&v)
    }
}

impl<T: Copy + Default> From<&[T]> for AlignedVec<T> {
    fn from(v: &[T]) -> Self {
        Self::from_slice(v)
    }
}

/// A clone is a new allocation, aligned on its own.
impl<T: Copy + Default> Clone for AlignedVec<T> {
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

impl<T: Copy + Default + PartialEq> PartialEq for AlignedVec<T> {
    fn eq(&self, o: &Self) -> bool {
        self.as_slice() == o.as_slice()
    }
}

impl<T: Copy + Default + fmt::Debug> fmt::Debug for AlignedVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_slice().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_for_every_element_size_and_clone() {
        for len in [0usize, 1, 17, 1000, 100_000] {
            let a = AlignedVec::<f32>::from_slice(&vec![1.5; len]);
            assert_eq!(a.as_ptr() as usize % 64, 0);
            assert_eq!(a.len(), len);
            let b = a.clone();
            assert_eq!(b.as_ptr() as usize % 64, 0);
            assert_eq!(a, b);
            let h = AlignedVec::<u16>::zeros(len);
            assert_eq!((h.as_ptr() as usize % 64, h.len()), (0, len));
            let i = AlignedVec::<i8>::from(vec![3i8; len]);
            assert_eq!((i.as_ptr() as usize % 64, i.len()), (0, len));
            assert!(i.iter().all(|&v| v == 3));
        }
    }
}
