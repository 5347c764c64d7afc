//! A `.qnet` model kept as its file's bytes: mapped read-only from a path, or copied once
//! into 64-byte aligned memory from a byte slice. The core parses the bytes in place, so
//! the weights are never copied.
//!
//! A mapped model shares the file's pages with the page cache (a shared, read-only
//! mapping: several processes running one model hold it once). The file must therefore be
//! *replaced*, never rewritten in place, while a process has it open: [`write_atomic`]
//! (what `quadra convert` and every other tool of this workspace write with) puts the new
//! bytes in a new file and renames it over the old path, and a running process keeps the
//! old file's pages. Rewriting in place (`std::fs::write`, `cp`, `>` in a shell) first
//! truncates the file: a process that then touches the truncated pages is killed by
//! SIGBUS, which no library can catch. A rewrite that keeps the length changes the bytes
//! under the running model instead: the structure is parsed again (every bound checked)
//! at each use, so the next run fails with an error naming the file, but a run already in
//! progress may compute with a mix of old and new weights.

use std::path::Path;

use quadra_core::format::QnetFile;

use crate::aligned::AlignedVec;
use crate::RunError;

enum Bytes {
    /// A read-only shared mapping of the file (page-aligned, so 64-byte aligned).
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
    /// [`QnetFile::parse`]). Replace the file by rename ([`write_atomic`]) while the model
    /// is in use, never rewrite it in place (see the module docs: a truncation faults).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RunError> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let cannot = |e: std::io::Error| RunError::Io {
            path: source.clone(),
            source: e,
        };
        let len = regular_file_len(path).map_err(cannot)?;
        if len < 4096 {
            // Too short to be worth a mapping (and an empty file cannot be mapped).
            let bytes = read_file(path).map_err(cannot)?;
            return Self::from_bytes(&bytes, &source);
        }
        let file = std::fs::File::open(path).map_err(cannot)?;
        // SAFETY: a read-only shared mapping; it stays valid while `file`'s pages exist,
        // whatever happens to the descriptor or the path (a rename over it keeps them). What
        // Rust cannot check is that no process truncates or rewrites the file in place while
        // it is mapped, the documented contract of `open`: a truncation faults on access
        // (SIGBUS); a same-length rewrite changes bytes under us, and every bound taken from
        // them is checked again when the structure is parsed at each use (`parsed`).
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
            .map_err(|e| RunError::Model {
                file: self.source.clone(),
                reason: e.to_string(),
            })
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
        QnetFile::reparse(self.bytes()).map_err(|e| RunError::Model {
            file: self.source.clone(),
            reason: e.to_string(),
        })
    }
}

/// Largest file read as a model, checkpoint or input (16 GiB).
pub const MAX_FILE_BYTES: u64 = 16 << 30;

/// Reads a whole regular file of at most [`MAX_FILE_BYTES`]: a FIFO or a device (which
/// could block forever or never end, like `/dev/zero`) and a directory are refused, as is
/// a file that grows past the limit while it is read. The error says why; the caller
/// names the path (as for any I/O error).
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, std::io::Error> {
    use std::io::{Error, ErrorKind, Read};
    regular_file_len(path)?;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("grew past {MAX_FILE_BYTES} bytes while it was read"),
        ));
    }
    Ok(bytes)
}

/// The length of the regular file at `path`, at most [`MAX_FILE_BYTES`]: a FIFO, a device
/// or a directory is refused, as is a larger file (the error says why; the caller names
/// the path).
pub fn regular_file_len(path: &std::path::Path) -> Result<u64, std::io::Error> {
    use std::io::{Error, ErrorKind};
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a directory, FIFO or device?)",
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} bytes, more than the {MAX_FILE_BYTES} read here",
                meta.len()
            ),
        ));
    }
    Ok(meta.len())
}

/// Writes `bytes` to `path` by replacing it: the bytes go to a new temporary file in the
/// same directory, which is flushed to disk and then renamed over `path`. A process that
/// has the old file mapped (a running [`ModelFile`]) keeps reading the old bytes, and a
/// reader never sees a half-written file; on failure `path` is unchanged and the
/// temporary file is removed. (Writing in place, as `std::fs::write` and `cp` do,
/// truncates the file first: a process with it mapped then faults with SIGBUS.)
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let path = path.as_ref();
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_a_mapping_intact() {
        let dir = std::env::temp_dir().join(format!("quadra-write-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.bin");
        write_atomic(&p, &[1u8; 8192]).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        // SAFETY: the test's own file, replaced below only by rename.
        let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        #[cfg(unix)]
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        #[cfg(unix)]
        let before = inode(&p);
        write_atomic(&p, &[2u8; 100]).unwrap();
        // The old bytes are still mapped (a truncation in place would fault here).
        assert!(map.iter().all(|&b| b == 1));
        assert_eq!(std::fs::read(&p).unwrap(), vec![2u8; 100]);
        #[cfg(unix)]
        assert_ne!(
            before,
            inode(&p),
            "replaced by rename, not rewritten in place"
        );
        // Nothing temporary is left behind, and a failing write leaves the target alone.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        assert!(write_atomic(dir.join("no-such-dir").join("x"), b"x").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), vec![2u8; 100]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
