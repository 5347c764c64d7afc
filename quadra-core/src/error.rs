//! Error type of the core. Small, `Copy`, no allocation: every variant says what was
//! expected and what was found, so a caller can print a precise message.

use core::fmt;

/// Which buffer a length error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Buffer {
    /// The input image (channels-last `[H, W, in_chans]`).
    Input,
    /// The logits output (`num_classes` floats).
    Output,
    /// The pooled-feature output (`dims[3]` floats).
    Features,
    /// The caller-provided arena.
    Arena,
    /// The block scratch.
    Scratch,
    /// The activation tensor of a block or conv.
    Activation,
    /// The packed weights.
    Weights,
}

impl fmt::Display for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Buffer::Input => "input",
            Buffer::Output => "output",
            Buffer::Features => "features",
            Buffer::Arena => "arena",
            Buffer::Scratch => "scratch",
            Buffer::Activation => "activation",
            Buffer::Weights => "weights",
        })
    }
}

/// Everything that can go wrong in the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A buffer does not have the length the architecture and input size require.
    Length {
        /// Which buffer.
        buffer: Buffer,
        /// Required length in elements (for the arena and scratch: at least this many).
        expected: usize,
        /// Length handed in.
        found: usize,
    },
    /// The architecture is not one the core can run; the message says why.
    Arch(&'static str),
    /// The input spatial size is out of range: at least 32x32 (the network downsamples by
    /// 32), at most 32768 on a side.
    InputSize {
        /// Height handed in.
        h: usize,
        /// Width handed in.
        w: usize,
    },
    /// A model file could not be parsed; the message says what is wrong.
    Format(&'static str),
    /// A weight does not fit in f16 (beyond ±65504).
    F16Range,
    /// A buffer's extent (rows x stride, rows x columns) does not fit in `usize`.
    Overflow {
        /// Which buffer.
        buffer: Buffer,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Length {
                buffer,
                expected,
                found,
            } => write!(
                f,
                "{buffer} has {found} elements, expected {expected}"
            ),
            Error::Arch(why) => write!(f, "invalid architecture: {why}"),
            Error::InputSize { h, w } => write!(
                f,
                "input of {h}x{w} is out of range: QuadraNet downsamples by 32, so H and W must be between 32 and 32768"
            ),
            Error::Format(why) => write!(f, "invalid model file: {why}"),
            Error::F16Range => f.write_str("a weight is outside the f16 range (±65504)"),
            Error::Overflow { buffer } => write!(
                f,
                "the {buffer}'s extent (rows x stride) overflows the address space"
            ),
        }
    }
}

impl core::error::Error for Error {}
