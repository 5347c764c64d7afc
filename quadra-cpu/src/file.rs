//! A `.qnet` model kept as its file's bytes: mapped read-only from a path, or copied once
//! into 64-byte aligned memory from a byte slice. The core parses the bytes in place, so
//! the weights are never copied again (a copied 94.7 MB model cost three copies before).

use std::path::Path;

use quadra_core::format::QnetFile;

use crate::aligned::AlignedVec;
use crate::RunError;

enum Bytes {
    /// A read-only private mapping of the file (page-aligned, so 64-byte aligned).
    Mapped(memmap2::Mmap),
    /// A copy in aligned memory.
    Copied(AlignedVec<u8>),
}

/// A validated `.qnet` model held as its bytes (see the module docs).
///
/// ```no_run
/// use quadra_cpu::{file::ModelFile, Network};
/// let file = ModelFile::open("m.qnet")?; // mapped read-only, checksum and values checked
/// assert!(file.is_mapped());
/// println!("{} bytes, {:?}", file.bytes().len(), file.parsed()?.dtype());
/// let net = Network::from_file(file)?; // runs on the mapped bytes
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ModelFile {
    bytes: Bytes,
    source: String,
}

impl ModelFile {
    /// Maps the file at `path` and validates it (magic, version, checksum, layout, values:
    /// [`QnetFile::parse`]). The file must stay unchanged while the model is in use:
    /// truncating or rewriting it in place (rather than replacing it, as `quadra convert`
    /// and `cp` do) would change the mapped bytes under the running model.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RunError> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let cannot = |e: std::io::Error| RunError::Io(format!("cannot read {source}: {e}"));
        let len = crate::regular_file_len(path).map_err(cannot)?;
        if len < 4096 {
            // Too short to be worth a mapping (and an empty file cannot be mapped).
            let bytes = crate::read_file(path).map_err(cannot)?;
            return Self::from_bytes(&bytes, &source);
        }
        let file = std::fs::File::open(path).map_err(cannot)?;
        // SAFETY: the mapping is read-only and private; it stays valid while `file`'s pages
        // exist, whatever happens to the descriptor. What Rust cannot check is that no
        // other process truncates or rewrites the file in place while it is mapped: the
        // documented contract of `open` (a truncation would fault on access, a rewrite
        // would change weights, never the bounds the parser checked).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(cannot)?;
        let m = ModelFile {
            bytes: Bytes::Mapped(map),
            source,
        };
        m.validate()?;
        Ok(m)
    }

    /// Copies `bytes` once into aligned memory and validates them; `source` names them in
    /// errors.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self, RunError> {
        let m = ModelFile {
            bytes: Bytes::Copied(AlignedVec::from_slice(bytes)),
            source: source.to_string(),
        };
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), RunError> {
        QnetFile::parse(self.bytes())
            .map(|_| ())
            .map_err(|e| RunError::Model(format!("{}: {e}", self.source)))
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Mapped(m) => m,
            Bytes::Copied(v) => v,
        }
    }

    /// Whether the bytes are a mapping of the file (rather than a copy).
    pub fn is_mapped(&self) -> bool {
        matches!(self.bytes, Bytes::Mapped(_))
    }

    /// The path or name the bytes came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The parsed file, borrowing the bytes. Cheap: the bytes were validated once when the
    /// model was opened, so only the structure is parsed again ([`QnetFile::reparse`]).
    pub fn parsed(&self) -> Result<QnetFile<'_>, RunError> {
        QnetFile::reparse(self.bytes())
            .map_err(|e| RunError::Model(format!("{}: {e}", self.source)))
    }
}
