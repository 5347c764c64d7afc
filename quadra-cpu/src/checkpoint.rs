//! Reading PyTorch checkpoints saved with `safetensors.torch.save_file(model.state_dict())`
//! and checking them, key by key, against an architecture.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use quadra_core::arch::Arch;
use quadra_core::net::{pack_tensor, visit_tensors};

use crate::aligned::AlignedVec;
use crate::weights::{OwnedMats, OwnedWeights};
use safetensors::{Dtype, SafeTensorError, SafeTensors};

/// What the safetensors parser found wrong, in words (its error type prints as a variant
/// name, e.g. `MetadataIncompleteBuffer`). `len`: the file's length.
fn in_words(e: &SafeTensorError, len: usize) -> String {
    use SafeTensorError as E;
    match e {
        E::HeaderTooSmall => format!("{len} bytes: too short for the 8-byte header length"),
        E::HeaderTooLarge => "its header length is larger than the 100 MB a header may take".into(),
        E::InvalidHeaderLength => format!("its header length runs past the end of the {len}-byte file"),
        E::InvalidHeaderStart => "its header is not a JSON object (it must start with '{')".into(),
        E::InvalidHeader => "its header is not valid UTF-8".into(),
        E::InvalidHeaderDeserialization => {
            "its header is not the JSON safetensors expects (each tensor: dtype, shape, data_offsets)".into()
        }
        E::MetadataIncompleteBuffer => format!(
            "the tensors' data_offsets do not cover the data exactly (the file is {len} bytes: truncated, or offsets that overlap or leave gaps)"
        ),
        E::TensorInvalidInfo => "a tensor's shape does not match its data_offsets".into(),
        E::InvalidOffset(name) => format!("tensor '{name}' has data_offsets out of order or out of the file"),
        E::ValidationOverflow => "a tensor's shape or offsets overflow".into(),
        E::TensorNotFound(name) => format!("tensor '{name}' is not in the file"),
        E::InvalidTensorView(dtype, shape, n) => {
            format!("a {dtype:?} tensor of shape {shape:?} cannot hold {n} bytes")
        }
        other => other.to_string(),
    }
}

/// What a file that users give instead of safetensors is, by its first bytes: `torch.save`
/// writes a zip archive (PyTorch 1.6 and later) or a bare pickle (older).
fn not_safetensors(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [b'P', b'K', 3, 4, ..] => {
            Some("a PyTorch checkpoint saved with torch.save (a zip archive)")
        }
        [0x80, 2..=5, ..] => Some("a Python pickle (torch.save of an older PyTorch)"),
        [b'\x93', b'N', b'U', b'M', b'P', b'Y', ..] => Some("a numpy .npy array"),
        _ => None,
    }
}

/// One tensor, converted to f32, with the dtype it was stored in.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// PyTorch shape.
    pub shape: Vec<usize>,
    /// Stored dtype (`F32`, `F16` or `BF16`).
    pub dtype: Dtype,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// A state_dict: tensors by key, and where they came from (for messages).
#[derive(Clone, Debug, Default)]
pub struct StateDict {
    /// File name or other label, used in every error.
    pub source: String,
    /// Tensors by state_dict key.
    pub tensors: BTreeMap<String, Tensor>,
    /// A prefix every key carried and loading removed: `module.` of a checkpoint saved
    /// from a `DistributedDataParallel` (or `DataParallel`) wrapper.
    pub stripped_prefix: Option<String>,
}

/// One way a checkpoint disagrees with the architecture.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// A tensor the architecture needs is absent.
    Missing {
        /// Key.
        name: String,
        /// Shape the architecture needs.
        shape: Vec<usize>,
    },
    /// A tensor the architecture has no use for.
    Unexpected {
        /// Key.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// Right key, wrong shape.
    Shape {
        /// Key.
        name: String,
        /// Shape the architecture needs.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// NaN or infinite values.
    NonFinite {
        /// Key.
        name: String,
        /// How many values are not finite.
        count: usize,
        /// Flat index of the first.
        first: usize,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { name, shape } => {
                write!(f, "missing tensor '{name}' (expected shape {shape:?})")
            }
            Problem::Unexpected { name, shape } => {
                write!(
                    f,
                    "unexpected tensor '{name}' (shape {shape:?}) is not part of the architecture"
                )
            }
            Problem::Shape {
                name,
                expected,
                found,
            } => {
                write!(
                    f,
                    "tensor '{name}' has shape {found:?}, expected {expected:?}"
                )
            }
            Problem::NonFinite { name, count, first } => {
                write!(f, "tensor '{name}' has {count} non-finite value(s), the first at flat index {first}")
            }
        }
    }
}

/// Why a checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a safetensors file (truncated, corrupt header, ...).
    #[error("{source_name} is not a valid safetensors file: {msg}")]
    Format {
        /// File or label.
        source_name: String,
        /// What the parser said.
        msg: String,
    },
    /// A tensor in a dtype we cannot read.
    #[error("{source_name}: tensor '{name}' is {dtype:?}; supported dtypes are F32, F16 and BF16")]
    Dtype {
        /// File or label.
        source_name: String,
        /// Key.
        name: String,
        /// Its dtype.
        dtype: Dtype,
    },
    /// Keys, shapes or values that do not fit the architecture; every problem is listed.
    #[error("{source_name} does not fit the architecture ({n} problem(s)):\n  {list}", n = problems.len(), list = list_problems(problems))]
    Mismatch {
        /// File or label.
        source_name: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// The architecture itself is invalid.
    #[error("{0}")]
    Core(#[from] quadra_core::Error),
}

/// The first problems, one per line, and how many more there are.
fn list_problems(problems: &[Problem]) -> String {
    const SHOWN: usize = 30;
    let mut lines: Vec<String> = problems.iter().take(SHOWN).map(|p| p.to_string()).collect();
    if problems.len() > SHOWN {
        lines.push(format!("... and {} more", problems.len() - SHOWN));
    }
    lines.join("\n  ")
}

impl StateDict {
    /// Reads a safetensors file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        let bytes = crate::file::read_file(path).map_err(|source| CheckpointError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses safetensors bytes; `source` names them in errors.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self, CheckpointError> {
        if let Some(what) = not_safetensors(bytes) {
            return Err(CheckpointError::Format {
                source_name: source.to_string(),
                msg: format!(
                    "{what}, not safetensors: save the state_dict with \
                     safetensors.torch.save_file(model.state_dict(), \"model.safetensors\")"
                ),
            });
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| CheckpointError::Format {
            source_name: source.to_string(),
            msg: in_words(&e, bytes.len()),
        })?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F16 => raw
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => raw
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                dtype => {
                    return Err(CheckpointError::Dtype {
                        source_name: source.to_string(),
                        name,
                        dtype,
                    })
                }
            };
            let tensor = Tensor {
                shape: view.shape().to_vec(),
                dtype: view.dtype(),
                data,
            };
            tensors.insert(name, tensor);
        }
        Ok(Self::from_tensors(source, tensors))
    }

    /// A state_dict from tensors already in memory (e.g. a Python `state_dict()`), named
    /// `source` in messages. As for a file, a `module.` prefix on every key (a model
    /// wrapped for data-parallel training) is removed and noted.
    pub fn from_tensors(source: &str, mut tensors: BTreeMap<String, Tensor>) -> Self {
        // A model wrapped for data-parallel training saves every key under `module.`.
        let prefix = "module.";
        let stripped_prefix = (!tensors.is_empty()
            && tensors.keys().all(|k| k.starts_with(prefix)))
        .then(|| prefix.to_string());
        if stripped_prefix.is_some() {
            tensors = tensors
                .into_iter()
                .map(|(k, v)| (k[prefix.len()..].to_string(), v))
                .collect();
        }
        StateDict {
            source: source.to_string(),
            tensors,
            stripped_prefix,
        }
    }

    /// Checks every key against `arch` and packs the weights for the core as f32 streams.
    /// All problems (missing, unexpected, misshapen, non-finite) are reported together.
    pub fn pack(&self, arch: &Arch<'_>) -> Result<OwnedWeights, CheckpointError> {
        // Every key, shape and value first, without allocating: an architecture whose
        // weights would take 80 GB is refused by its missing or misshapen tensors, not by
        // an allocation that aborts.
        let mut problems = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        visit_tensors::<quadra_core::Error>(arch, |slot| {
            seen.insert(slot.name.to_string());
            let Some(t) = self.tensors.get(slot.name) else {
                problems.push(Problem::Missing {
                    name: slot.name.into(),
                    shape: slot.shape.to_vec(),
                });
                return Ok(());
            };
            if t.shape != slot.shape {
                problems.push(Problem::Shape {
                    name: slot.name.into(),
                    expected: slot.shape.to_vec(),
                    found: t.shape.clone(),
                });
                return Ok(());
            }
            let bad = t.data.iter().filter(|v| !v.is_finite()).count();
            if bad > 0 {
                problems.push(Problem::NonFinite {
                    name: slot.name.into(),
                    count: bad,
                    first: t.data.iter().position(|v| !v.is_finite()).unwrap_or(0),
                });
            }
            Ok(())
        })?;
        for (name, t) in &self.tensors {
            if !seen.contains(name) {
                problems.push(Problem::Unexpected {
                    name: name.clone(),
                    shape: t.shape.clone(),
                });
            }
        }
        if !problems.is_empty() {
            return Err(CheckpointError::Mismatch {
                source_name: self.source.clone(),
                problems,
            });
        }
        // Every tensor is present with its shape, so the streams are about as large as the
        // checkpoint's values (plus alignment padding); still allocated fallibly.
        let len = arch.weights_len();
        let alloc = |n: usize| {
            AlignedVec::<f32>::try_zeros(n).ok_or_else(|| CheckpointError::Format {
                source_name: self.source.clone(),
                msg: format!("cannot allocate {} bytes for the packed weights", n * 4),
            })
        };
        let (mut vecs, mut mats) = (alloc(len.vecs)?, alloc(len.mats)?);
        visit_tensors::<quadra_core::Error>(arch, |slot| match self.tensors.get(slot.name) {
            Some(t) => pack_tensor(&slot, &t.data, &mut vecs, &mut mats),
            None => Ok(()),
        })?;
        Ok(OwnedWeights {
            vecs,
            mats: OwnedMats::F32(mats),
        })
    }
}
