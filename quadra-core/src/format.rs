//! The `.qnet` model file: architecture and weights in one versioned, checksummed,
//! 64-byte-aligned blob, parsed **zero-copy** from a `&[u8]` (e.g. `include_bytes!`), so
//! the same bytes serve runtime loading and compiled-in firmware.
//!
//! Layout (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `\x89QNET\r\n\x1a` |
//! | 8 | 4 | version (3; 2 is read too) |
//! | 12 | 4 | matrix dtype: 0 f32, 1 f16, 2 int8, 3 w8a8 (version 3 only) |
//! | 16 | 4 | in_chans |
//! | 20 | 4 | num_classes |
//! | 24 | 16 | dims\[4\] |
//! | 40 | 16 | blocks per stage\[4\] |
//! | 56 | 8 | file length |
//! | 64 | 8 | vector stream offset (64-aligned) |
//! | 72 | 8 | vector stream length (f32 elements) |
//! | 80 | 8 | matrix stream offset (64-aligned) |
//! | 88 | 8 | matrix stream length (elements) |
//! | 96 | 4 | CRC-32 (IEEE) of the file with these 4 bytes zeroed |
//! | 100 | 8 | metadata offset |
//! | 108 | 8 | metadata length (UTF-8, free-form JSON) |
//! | 116 | 8 | w8a8 only: float-block section offset (0: every block int8), else zero |
//! | 124 | 4 | w8a8 only: number of float blocks, else zero |
//! | 128 | 2·blocks | block table: `(kernel, expansion)` per block, `(0, 0)` = identity |
//!
//! then the metadata, the vector stream and the matrix stream, each starting 64-aligned,
//! and for a mixed-precision w8a8 model the float-block section: the bitmap of
//! [`crate::FloatBlocks`] (`ceil(quadratic blocks / 8)` bytes), then, 64-aligned, its f32
//! stream.
//! The streams are laid out as [`crate::weights`] describes, so every tensor is 64-byte
//! aligned in the file.

use crate::arch::{Arch, BlockSpec, Stage};
use crate::error::Error;
use crate::kernels::{Dtype, MatData};
use crate::net::Model;
use crate::weights::{FloatBlocks, Weights};

/// File magic.
pub const MAGIC: [u8; 8] = *b"\x89QNET\r\n\x1a";
/// The version this build writes. Version 3 adds the w8a8 dtype (code 3: int8 matrices, the
/// block pointwise panels in the dot-product layout, `kernels::PackedB::dot_index`);
/// otherwise it is version 2, which this build still reads. Version 2 stores QDW taps
/// channel-blocked (`kernels::QdwWeights::tap_index`); version 1 files (taps by
/// tap, then channel) are refused, not misread: reconvert them from the checkpoint.
pub const VERSION: u32 = 3;
/// The oldest version this build reads.
pub const OLDEST_VERSION: u32 = 2;
/// Header bytes before the block table.
pub const HEADER_LEN: usize = 128;
pub use crate::arch::MAX_BLOCKS;

/// A 64-byte-aligned wrapper for embedding a model:
/// `static M: &Aligned<[u8]> = &Aligned(*include_bytes!("model.qnet"));`
#[repr(C, align(64))]
pub struct Aligned<T: ?Sized>(pub T);

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

fn crc_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc = CRC_TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// CRC-32 of a file, with the checksum field (bytes 96..100) taken as zero; of any bytes,
/// however short.
pub fn file_crc(bytes: &[u8]) -> u32 {
    let (head, rest) = bytes.split_at(bytes.len().min(96));
    let crc = crc_update(0xFFFF_FFFF, head);
    let field = rest.len().min(4);
    let crc = crc_update(crc, &[0; 4][..field]);
    !crc_update(crc, &rest[field..])
}

const fn align64(n: usize) -> usize {
    n.div_ceil(64) * 64
}

fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn rd64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Where each section lands for an architecture, dtype and metadata length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLayout {
    /// Metadata offset.
    pub meta: usize,
    /// Vector stream offset.
    pub vecs: usize,
    /// Matrix stream offset.
    pub mats: usize,
    /// Float-block section offset (0: none).
    pub float: usize,
    /// Offset of the float blocks' f32 stream (0: none).
    pub float_mats: usize,
    /// Total file length.
    pub len: usize,
}

impl FileLayout {
    /// Layout of a file holding `arch` with matrices in `dtype` and `meta_len` bytes of
    /// metadata.
    pub const fn of(arch: &Arch<'_>, dtype: Dtype, meta_len: usize) -> FileLayout {
        let blocks = arch.stages[0].blocks.len()
            + arch.stages[1].blocks.len()
            + arch.stages[2].blocks.len()
            + arch.stages[3].blocks.len();
        let meta = align64(HEADER_LEN + 2 * blocks);
        let vecs = align64(meta + meta_len);
        let w = arch.weights_len();
        let mats = align64(vecs + 4 * w.vecs);
        FileLayout {
            meta,
            vecs,
            mats,
            float: 0,
            float_mats: 0,
            len: mats + w.mats * dtype.size(),
        }
    }

    /// This layout with a float-block section of `flags` bitmap bytes and `floats` f32
    /// values appended (mixed-precision w8a8); unchanged when `flags` is 0.
    pub const fn with_float(self, flags: usize, floats: usize) -> FileLayout {
        if flags == 0 {
            return self;
        }
        let float = align64(self.len);
        let float_mats = align64(float + flags);
        FileLayout {
            float,
            float_mats,
            len: float_mats + 4 * floats,
            ..self
        }
    }

    /// The layout [`write()`] gives `weights` of `arch` with `meta_len` bytes of metadata.
    pub const fn for_weights(
        arch: &Arch<'_>,
        weights: &Weights<'_>,
        meta_len: usize,
    ) -> FileLayout {
        let lay = FileLayout::of(arch, weights.mats.dtype(), meta_len);
        match weights.mats {
            MatData::W8A8(_, f) if !f.flags.is_empty() => {
                lay.with_float(f.flags.len(), f.mats.len())
            }
            _ => lay,
        }
    }
}

const fn dtype_code(d: Dtype) -> u32 {
    match d {
        Dtype::F32 => 0,
        Dtype::F16 => 1,
        Dtype::I8 => 2,
        Dtype::W8A8 => 3,
    }
}

/// Writes a model file into `out` (exactly [`FileLayout::of`]`(..).len` bytes).
pub fn write(
    arch: &Arch<'_>,
    weights: Weights<'_>,
    meta: &str,
    out: &mut [u8],
) -> Result<(), Error> {
    Model::new(*arch, weights)?;
    if cfg!(target_endian = "big") {
        return Err(Error::Format("big-endian targets are not supported"));
    }
    let dtype = weights.mats.dtype();
    if let MatData::W8A8(_, f) = weights.mats {
        f.check(arch)?;
    }
    let lay = FileLayout::for_weights(arch, &weights, meta.len());
    if out.len() != lay.len {
        return Err(Error::Length {
            buffer: crate::error::Buffer::Output,
            expected: lay.len,
            found: out.len(),
        });
    }
    out.fill(0);
    out[..8].copy_from_slice(&MAGIC);
    let mut put32 = |at: usize, v: u32| out[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put32(8, VERSION);
    put32(12, dtype_code(dtype));
    put32(16, arch.in_chans as u32);
    put32(20, arch.num_classes as u32);
    for s in 0..4 {
        put32(24 + 4 * s, arch.stages[s].dim as u32);
        put32(40 + 4 * s, arch.stages[s].blocks.len() as u32);
    }
    let w = weights.len();
    let fields = [
        (56, lay.len),
        (64, lay.vecs),
        (72, w.vecs),
        (80, lay.mats),
        (88, w.mats),
        (100, lay.meta),
        (108, meta.len()),
        (116, lay.float),
    ];
    for (at, v) in fields {
        out[at..at + 8].copy_from_slice(&(v as u64).to_le_bytes());
    }
    let mut at = HEADER_LEN;
    for stage in &arch.stages {
        for b in stage.blocks {
            out[at] = b.kernel;
            out[at + 1] = b.expansion;
            at += 2;
        }
    }
    out[lay.meta..lay.meta + meta.len()].copy_from_slice(meta.as_bytes());
    for (i, v) in weights.vecs.iter().enumerate() {
        out[lay.vecs + 4 * i..lay.vecs + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    let m = lay.mats;
    match weights.mats {
        MatData::F32(d) => {
            for (i, v) in d.iter().enumerate() {
                out[m + 4 * i..m + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        MatData::F16(d) => {
            for (i, v) in d.iter().enumerate() {
                out[m + 2 * i..m + 2 * i + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        MatData::I8(d) | MatData::W8A8(d, _) => {
            for (o, v) in out[m..].iter_mut().zip(d) {
                *o = *v as u8;
            }
        }
    }
    if let MatData::W8A8(_, f) = weights.mats {
        if !f.flags.is_empty() {
            out[124..128].copy_from_slice(&(f.count() as u32).to_le_bytes());
            out[lay.float..lay.float + f.flags.len()].copy_from_slice(f.flags);
            for (i, v) in f.mats.iter().enumerate() {
                let at = lay.float_mats + 4 * i;
                out[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
    let crc = file_crc(out);
    out[96..100].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The float-block section of a w8a8 file (header bytes 116..128), which must start
/// 64-aligned at or after `after` (the end of the matrix stream) and end the file.
fn float_section<'a>(
    bytes: &'a [u8],
    arch: &Arch<'_>,
    after: u64,
    scan: bool,
) -> Result<FloatBlocks<'a>, Error> {
    let (off, count) = (rd64(bytes, 116), rd32(bytes, 124) as usize);
    if off == 0 {
        return if count == 0 {
            Ok(FloatBlocks::NONE)
        } else {
            Err(Error::Format(
                "float blocks counted but no float-block section",
            ))
        };
    }
    if !off.is_multiple_of(64) || off < after {
        return Err(Error::Format(
            "the float-block section overlaps the weight streams or is not 64-byte aligned",
        ));
    }
    let flags = range(bytes, off, FloatBlocks::flags_len(arch) as u64, 1)?;
    let mut f = FloatBlocks { flags, mats: &[] };
    if f.count() != count || count == 0 {
        return Err(Error::Format("float-block count does not match its bitmap"));
    }
    let fo = (off + flags.len() as u64).div_ceil(64) * 64;
    // Everything after the bitmap is the f32 stream; `check` compares its length with the
    // flagged blocks'.
    let rest = bytes.len() as u64 - fo.min(bytes.len() as u64);
    if !rest.is_multiple_of(4) {
        return Err(Error::Format("float-block stream is not whole f32 values"));
    }
    // SAFETY: f32 accepts every bit pattern.
    f.mats = unsafe { cast::<f32>(range(bytes, fo, rest / 4, 4)?)? };
    f.check(arch)?;
    if scan && f.mats.iter().any(|v| !v.is_finite()) {
        return Err(Error::Format("float-block weights contain NaN or infinity"));
    }
    Ok(f)
}

/// A parsed model file: everything borrows from the file's bytes.
///
/// ```
/// use quadra_core::{arch::presets, format::{self, FileLayout}, MatData, QnetFile, Weights};
/// let arch = presets::quadranet25(16);
/// let len = arch.weights_len();
/// let (vecs, mats) = (vec![0.01f32; len.vecs], vec![0.01f32; len.mats]);
/// let weights = Weights { vecs: &vecs, mats: MatData::F32(&mats) };
/// let n = FileLayout::for_weights(&arch, &weights, 2).len;
/// let mut buf = vec![0u8; n + 64];
/// let at = buf.as_ptr().align_offset(64); // the parser wants 64-byte aligned bytes
/// format::write(&arch, weights, "{}", &mut buf[at..at + n])?;
/// let file = QnetFile::parse(&buf[at..at + n])?; // zero-copy: views into `buf`
/// assert_eq!((file.arch, file.meta), (arch, "{}"));
/// let model = file.model()?;
/// # Ok::<(), quadra_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct QnetFile<'a> {
    /// The architecture (its block tables point into the file).
    pub arch: Arch<'a>,
    /// The weights (both streams point into the file).
    pub weights: Weights<'a>,
    /// Free-form metadata (UTF-8, JSON by convention).
    pub meta: &'a str,
}

fn range(bytes: &[u8], off: u64, len: u64, elem: u64) -> Result<&[u8], Error> {
    let bytes_len = len
        .checked_mul(elem)
        .ok_or(Error::Format("section length overflows"))?;
    let end = off
        .checked_add(bytes_len)
        .ok_or(Error::Format("section end overflows"))?;
    if end > bytes.len() as u64 {
        return Err(Error::Format("a section runs past the end of the file"));
    }
    Ok(&bytes[off as usize..end as usize])
}

/// Views `bytes` as `T` elements.
///
/// # Safety
/// `T` must be a plain number type (`f32`, `u16`, `i8`): every bit pattern valid.
unsafe fn cast<T>(bytes: &[u8]) -> Result<&[T], Error> {
    let size = core::mem::size_of::<T>();
    if bytes.as_ptr().align_offset(core::mem::align_of::<T>()) != 0 {
        return Err(Error::Format(
            "model bytes are not aligned; load them into a 64-byte aligned buffer (quadra_core::format::Aligned)",
        ));
    }
    // SAFETY: the pointer is aligned for T (checked above), the length covers exactly
    // `len / size` elements inside `bytes`, the borrow keeps them alive, and the caller
    // guarantees every bit pattern is a valid T.
    Ok(unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) })
}

impl<'a> QnetFile<'a> {
    /// Parses and validates a model file without copying. Any corruption, truncation or
    /// version mismatch is an error, never a panic.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::parse_with(bytes, true)
    }

    /// Parses bytes that [`QnetFile::parse`] accepted before and that have not changed
    /// since (a model kept mapped or in memory): every structural check again, but not the
    /// checksum nor the scans of the weight values (non-finite floats, int8 scales, -128
    /// in w8a8), which read every byte of the file, so a mapped 95 MB model is not read
    /// again for each inference. Given other bytes it still returns an error or a model,
    /// never undefined behaviour; only the numbers may then be wrong.
    pub fn reparse(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::parse_with(bytes, false)
    }

    fn parse_with(bytes: &'a [u8], scan: bool) -> Result<Self, Error> {
        if cfg!(target_endian = "big") {
            return Err(Error::Format("big-endian targets are not supported"));
        }
        if bytes.len() < HEADER_LEN {
            return Err(Error::Format("file is shorter than the 128-byte header"));
        }
        if bytes[..8] != MAGIC {
            return Err(Error::Format("not a .qnet file (bad magic)"));
        }
        let version = rd32(bytes, 8);
        if version == 1 {
            return Err(Error::Format(
                "a version 1 .qnet file (its QDW taps are laid out differently): reconvert it from the checkpoint with `quadra convert`",
            ));
        }
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(Error::Format(
                "unsupported .qnet version (this build reads versions 2 and 3)",
            ));
        }
        if rd64(bytes, 56) != bytes.len() as u64 {
            return Err(Error::Format(
                "file length does not match the header (truncated or padded)",
            ));
        }
        // Under the fuzzer the checksum is not enforced, so mutations reach the checks behind it.
        if scan && rd32(bytes, 96) != file_crc(bytes) && !cfg!(fuzzing) {
            return Err(Error::Format("checksum mismatch: the file is corrupt"));
        }
        let float_fields = version >= 3 && rd32(bytes, 12) == 3;
        if bytes[116..128].iter().any(|&b| b != 0) && !float_fields {
            return Err(Error::Format("reserved header bytes are not zero"));
        }
        let dtype = match rd32(bytes, 12) {
            0 => Dtype::F32,
            1 => Dtype::F16,
            2 => Dtype::I8,
            3 if version >= 3 => Dtype::W8A8,
            3 => return Err(Error::Format("matrix dtype w8a8 (3) in a version 2 file")),
            _ => {
                return Err(Error::Format(
                    "unknown matrix dtype (this build knows 0 f32, 1 f16, 2 int8, 3 w8a8)",
                ))
            }
        };
        let mut counts = [0usize; 4];
        let mut total = 0usize;
        for (s, c) in counts.iter_mut().enumerate() {
            *c = rd32(bytes, 40 + 4 * s) as usize;
            total = total.saturating_add(*c);
        }
        if total > MAX_BLOCKS {
            return Err(Error::Format("more blocks than a model file may hold"));
        }
        let table = range(bytes, HEADER_LEN as u64, total as u64, 2)?;
        // SAFETY: BlockSpec is repr(C) of two u8: alignment 1, any bit pattern valid.
        let blocks: &[BlockSpec] = unsafe { cast(table)? };
        let mut rest = blocks;
        let mut stage = |s: usize| {
            let (head, tail) = rest.split_at(counts[s]);
            rest = tail;
            Stage {
                dim: rd32(bytes, 24 + 4 * s) as usize,
                blocks: head,
            }
        };
        let arch = Arch {
            in_chans: rd32(bytes, 16) as usize,
            num_classes: rd32(bytes, 20) as usize,
            stages: [stage(0), stage(1), stage(2), stage(3)],
        };
        arch.validate()?;
        let meta = range(bytes, rd64(bytes, 100), rd64(bytes, 108), 1)?;
        let meta =
            core::str::from_utf8(meta).map_err(|_| Error::Format("metadata is not UTF-8"))?;
        let want = arch.weights_len();
        if rd64(bytes, 72) != want.vecs as u64 || rd64(bytes, 88) != want.mats as u64 {
            return Err(Error::Format(
                "weight stream lengths do not match the architecture",
            ));
        }
        let (vo, mo) = (rd64(bytes, 64), rd64(bytes, 80));
        if vo % 64 != 0 || mo % 64 != 0 {
            return Err(Error::Format(
                "weight streams are not 64-byte aligned in the file",
            ));
        }
        // Every section where the layout puts it (the same in versions 2 and 3): a CRC
        // recomputed after moving a stream over the header or onto another stream must
        // not pass.
        let lay = FileLayout::of(&arch, dtype, meta.len());
        if (rd64(bytes, 100), vo, mo) != (lay.meta as u64, lay.vecs as u64, lay.mats as u64) {
            return Err(Error::Format(
                "sections are not where the layout puts them (overlapping or out of order)",
            ));
        }
        let vec_bytes = range(bytes, vo, want.vecs as u64, 4)?;
        let mat_bytes = range(bytes, mo, want.mats as u64, dtype.size() as u64)?;
        let float = if float_fields {
            float_section(bytes, &arch, mo + want.mats as u64, scan)?
        } else {
            FloatBlocks::NONE
        };
        // The file ends where its layout does: bytes past the matrix stream would mean a
        // dtype code that does not match the data (f32 data read as int8), or smuggled data.
        let full = lay.with_float(float.flags.len(), float.mats.len());
        if bytes.len() != full.len || rd64(bytes, 116) != full.float as u64 {
            return Err(Error::Format(
                "the file does not end where its layout does (a dtype that does not match the data, or trailing bytes)",
            ));
        }
        // SAFETY: f32, u16 and i8 accept every bit pattern.
        let weights = unsafe {
            Weights {
                vecs: cast::<f32>(vec_bytes)?,
                mats: match dtype {
                    Dtype::F32 => MatData::F32(cast(mat_bytes)?),
                    Dtype::F16 => MatData::F16(cast(mat_bytes)?),
                    Dtype::I8 => MatData::I8(cast(mat_bytes)?),
                    Dtype::W8A8 => MatData::W8A8(cast(mat_bytes)?, float),
                },
            }
        };
        if !scan {
            return Ok(QnetFile {
                arch,
                weights,
                meta,
            });
        }
        if weights.vecs.iter().any(|v| !v.is_finite()) {
            return Err(Error::Format("vector weights contain NaN or infinity"));
        }
        let finite = match weights.mats {
            MatData::F32(m) => m.iter().all(|v| v.is_finite()),
            // An f16 is NaN or infinite when its exponent bits are all ones.
            MatData::F16(m) => m.iter().all(|&h| h & 0x7C00 != 0x7C00),
            MatData::I8(_) | MatData::W8A8(..) => true,
        };
        if !finite {
            return Err(Error::Format("matrix weights contain NaN or infinity"));
        }
        crate::net::check_scales(&arch, weights)?;
        Ok(QnetFile {
            arch,
            weights,
            meta,
        })
    }

    /// The model, ready to run.
    pub fn model(&self) -> Result<Model<'a>, Error> {
        Model::new(self.arch, self.weights)
    }

    /// Storage type of the matrices.
    pub fn dtype(&self) -> Dtype {
        self.weights.mats.dtype()
    }
}
