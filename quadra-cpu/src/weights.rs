//! Owned weights, conversion to f16/int8, and `.qnet` files.

use std::path::Path;

use quadra_core::arch::Arch;
use quadra_core::format::{self, FileLayout};
use quadra_core::net::{pack_float_blocks, quantize_model, MatDataMut, QuantError};
use quadra_core::{Dtype, FloatBlocks, MatData, Weights};

use crate::aligned::AlignedVec;
use crate::config::ArchConfig;
use crate::{InputError, RunError};

/// An owned matrix stream.
#[derive(Clone, Debug, PartialEq)]
pub enum OwnedMats {
    /// f32 values.
    F32(AlignedVec<f32>),
    /// f16 bit patterns.
    F16(AlignedVec<u16>),
    /// int8 values.
    I8(AlignedVec<i8>),
    /// A w8a8 model: int8 values (pointwise panels in the dot-product layout), and the
    /// blocks kept in f32 (mixed precision): their bitmap and f32 stream
    /// ([`quadra_core::FloatBlocks`]; both empty when every block computes in int8).
    W8A8 {
        /// int8 values.
        q: AlignedVec<i8>,
        /// Bitmap of the quadratic blocks kept in f32.
        flags: Vec<u8>,
        /// Their f32 pointwise weights.
        float: AlignedVec<f32>,
    },
}

/// Owned weight streams.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedWeights {
    /// f32 vector stream.
    pub vecs: AlignedVec<f32>,
    /// Matrix stream.
    pub mats: OwnedMats,
}

/// Quantisation error of one tensor, by name.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorQuantError {
    /// state_dict key.
    pub name: String,
    /// The error.
    pub error: QuantError,
}

impl OwnedWeights {
    /// Borrowed view for the core.
    pub fn view(&self) -> Weights<'_> {
        Weights {
            vecs: &self.vecs,
            mats: match &self.mats {
                OwnedMats::F32(v) => MatData::F32(v),
                OwnedMats::F16(v) => MatData::F16(v),
                OwnedMats::I8(v) => MatData::I8(v),
                OwnedMats::W8A8 { q, flags, float } => {
                    MatData::W8A8(q, FloatBlocks { flags, mats: float })
                }
            },
        }
    }

    /// Matrix storage type.
    pub fn dtype(&self) -> Dtype {
        self.view().mats.dtype()
    }

    /// Copies borrowed weights.
    pub fn from_view(w: Weights<'_>) -> Self {
        OwnedWeights {
            vecs: w.vecs.into(),
            mats: match w.mats {
                MatData::F32(v) => OwnedMats::F32(v.into()),
                MatData::F16(v) => OwnedMats::F16(v.into()),
                MatData::I8(v) => OwnedMats::I8(v.into()),
                MatData::W8A8(v, f) => OwnedMats::W8A8 {
                    q: v.into(),
                    flags: f.flags.to_vec(),
                    float: f.mats.into(),
                },
            },
        }
    }

    /// These f32 weights with the matrices stored as `dtype` (int8 and w8a8: symmetric,
    /// per output channel), and the error each tensor took.
    pub fn quantize(
        &self,
        arch: &Arch<'_>,
        dtype: Dtype,
    ) -> Result<(OwnedWeights, Vec<TensorQuantError>), RunError> {
        let OwnedMats::F32(mats) = &self.mats else {
            return Err(InputError::Other("only f32 weights can be quantised".into()).into());
        };
        let mut vecs = self.vecs.clone();
        let mut report = Vec::new();
        let mut rec = |name: &str, error| {
            report.push(TensorQuantError {
                name: name.to_string(),
                error,
            })
        };
        let out = match dtype {
            Dtype::F32 => return Ok((self.clone(), Vec::new())),
            Dtype::F16 => {
                let mut o = AlignedVec::zeros(mats.len());
                quantize_model(arch, &mut vecs, mats, MatDataMut::F16(&mut o), &mut rec)?;
                OwnedMats::F16(o)
            }
            Dtype::I8 => {
                let mut o = AlignedVec::zeros(mats.len());
                quantize_model(arch, &mut vecs, mats, MatDataMut::I8(&mut o), &mut rec)?;
                OwnedMats::I8(o)
            }
            Dtype::W8A8 => return self.w8a8(arch, false, &[]),
        };
        Ok((OwnedWeights { vecs, mats: out }, report))
    }

    /// These f32 weights as w8a8, with the stem, downsample and head layers kept in f32 if
    /// `float_layers` and the quadratic blocks (counted over non-identity blocks in network
    /// order) listed in `float` kept in f32; and the error each int8 tensor took.
    pub fn w8a8(
        &self,
        arch: &Arch<'_>,
        float_layers: bool,
        float: &[usize],
    ) -> Result<(OwnedWeights, Vec<TensorQuantError>), RunError> {
        let OwnedMats::F32(mats) = &self.mats else {
            return Err(InputError::Other("only f32 weights can be quantised".into()).into());
        };
        let nq = arch.quadratic_blocks();
        if let Some(b) = float.iter().find(|&&b| b >= nq) {
            return Err(InputError::Other(format!(
                "block {b} cannot stay f32: the network has {nq} quadratic blocks"
            ))
            .into());
        }
        let mut vecs = self.vecs.clone();
        let mut report = Vec::new();
        let mut q = AlignedVec::zeros(mats.len());
        quantize_model(
            arch,
            &mut vecs,
            mats,
            MatDataMut::W8A8(&mut q),
            |name, error| {
                report.push(TensorQuantError {
                    name: name.to_string(),
                    error,
                })
            },
        )?;
        let any = float_layers || !float.is_empty();
        let mut flags = vec![0u8; if any { FloatBlocks::flags_len(arch) } else { 0 }];
        for u in float.iter().map(|b| b + 1).chain(float_layers.then_some(0)) {
            flags[u / 8] |= 1 << (u % 8);
        }
        let mut fmats = AlignedVec::zeros(FloatBlocks::stream_len(arch, &flags));
        pack_float_blocks(arch, mats, &flags, &mut fmats)?;
        let mats = OwnedMats::W8A8 {
            q,
            flags,
            float: fmats,
        };
        Ok((OwnedWeights { vecs, mats }, report))
    }

    /// The `.qnet` bytes of `config` with these weights and `meta`.
    pub fn to_qnet(&self, config: &ArchConfig, meta: &str) -> Result<Vec<u8>, RunError> {
        let arch = config.arch();
        let mut out = vec![0u8; FileLayout::for_weights(&arch, &self.view(), meta.len()).len];
        format::write(&arch, self.view(), meta, &mut out)?;
        Ok(out)
    }
}

/// A model loaded from a `.qnet` file: architecture, weights and metadata, owned.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// Architecture.
    pub config: ArchConfig,
    /// Weights.
    pub weights: OwnedWeights,
    /// Metadata (free-form JSON).
    pub meta: String,
}

impl LoadedModel {
    /// An owned copy of a validated model file.
    pub fn from_file(f: &crate::file::ModelFile) -> Result<Self, RunError> {
        let p = f.parsed()?;
        Ok(LoadedModel {
            config: ArchConfig::from_arch(&p.arch),
            weights: OwnedWeights::from_view(p.weights),
            meta: p.meta.to_string(),
        })
    }

    /// Parses `.qnet` bytes (validated: magic, version, checksum, shapes). `source` names
    /// them in errors.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self, RunError> {
        Self::from_file(&crate::file::ModelFile::from_bytes(bytes, source)?)
    }

    /// Reads and parses a `.qnet` file (mapped while it is copied).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, RunError> {
        Self::from_file(&crate::file::ModelFile::open(path)?)
    }
}
