//! The `.qnet` file: round trips, and every truncation, bit flip and absurd size refused.

use std::vec;

use super::*;
use crate::arch::{Arch, BlockSpec, Stage};
use crate::isa::Kernels;
use crate::kernels::{Dtype, MatData};
use crate::net::Model;
use crate::weights::Weights;

#[test]
fn qnet_roundtrips_and_rejects_every_corruption() {
    use crate::format::{write, FileLayout, QnetFile};
    const B: [BlockSpec; 2] = [BlockSpec::quadra(3, 2), BlockSpec::IDENTITY];
    let arch = Arch {
        in_chans: 1,
        num_classes: 4,
        stages: [
            Stage { dim: 4, blocks: &B },
            Stage {
                dim: 8,
                blocks: &B[..1],
            },
            Stage {
                dim: 8,
                blocks: &[],
            },
            Stage {
                dim: 16,
                blocks: &B[1..],
            },
        ],
    };
    let sd = StateDict::random(&arch, 31);
    let packed = sd.pack(&arch);
    let meta = r#"{"source":"test"}"#;
    let lay = FileLayout::of(&arch, Dtype::F32, meta.len());
    let mut out = vec![0u8; lay.len];
    write(&arch, packed.weights(), meta, &mut out).unwrap();
    let buf = AlignedBuf::new(&out);
    let file = QnetFile::parse(buf.bytes()).unwrap();
    assert_eq!(file.arch, arch);
    assert_eq!(file.meta, meta);
    let (h, w) = (32, 32);
    let input = Rng::new(32).vec(h * w, -1.0, 1.0);
    let mut arena = vec![0.0; arch.arena_len(h, w)];
    let (mut a, mut b) = (vec![0.0; 4], vec![0.0; 4]);
    file.model()
        .unwrap()
        .forward(Kernels::scalar(), &input, h, w, &mut arena, &mut a)
        .unwrap();
    Model::new(arch, packed.weights())
        .unwrap()
        .forward(Kernels::scalar(), &input, h, w, &mut arena, &mut b)
        .unwrap();
    assert_eq!(a, b);

    // Every truncation is an error.
    for cut in 0..out.len() {
        let t = AlignedBuf::new(&out[..cut]);
        assert!(
            QnetFile::parse(t.bytes()).is_err(),
            "truncated to {cut} bytes parsed"
        );
    }
    // Every single-bit flip is an error (the CRC sees it; header checks see the rest).
    let mut rng = Rng::new(33);
    for _ in 0..2000 {
        let mut c = out.clone();
        let i = rng.usize(0, c.len());
        c[i] ^= 1 << rng.usize(0, 8);
        let t = AlignedBuf::new(&c);
        assert!(
            QnetFile::parse(t.bytes()).is_err(),
            "bit flip at byte {i} parsed"
        );
    }
    // `reparse` gives the same file without reading the values: a flipped weight bit
    // (which `parse` refuses by its checksum) passes it, while every truncation is still
    // refused, and a flipped header bit exactly when `parse` refuses it with the checksum
    // recomputed.
    let again = QnetFile::reparse(buf.bytes()).unwrap();
    assert_eq!((again.arch, again.meta), (file.arch, file.meta));
    let mut c = out.clone();
    let last = lay.mats + 4;
    c[last] ^= 1;
    let t = AlignedBuf::new(&c);
    assert!(QnetFile::parse(t.bytes()).is_err());
    assert!(QnetFile::reparse(t.bytes()).is_ok());
    for cut in 0..out.len() {
        let t = AlignedBuf::new(&out[..cut]);
        assert!(QnetFile::reparse(t.bytes()).is_err(), "truncated to {cut}");
    }
    for i in (0..128).filter(|i| !(96..100).contains(i)) {
        let mut c = out.clone();
        c[i] ^= 0x10;
        let t = AlignedBuf::new(&c);
        let crc = crate::format::file_crc(&c);
        c[96..100].copy_from_slice(&crc.to_le_bytes());
        let sealed = AlignedBuf::new(&c);
        assert_eq!(
            QnetFile::reparse(t.bytes()).is_ok(),
            QnetFile::parse(sealed.bytes()).is_ok(),
            "header byte {i} flipped: reparse and (resealed) parse disagree"
        );
    }
    // A misaligned buffer is reported, not read.
    let mut shifted = vec![0u8; out.len() + 1];
    shifted[1..].copy_from_slice(&out);
    let t = AlignedBuf::new(&shifted);
    let e = QnetFile::parse(&t.bytes()[1..]).unwrap_err();
    assert!(std::format!("{e}").contains("aligned"), "{e}");
    // The checksum of any bytes, however short, is a value, not a panic; the checksum
    // field counts as zero wherever the bytes end.
    for len in [0usize, 1, 95, 96, 97, 99, 100, 101] {
        let _ = crate::format::file_crc(&out[..len]);
    }
    let mut other = out.clone();
    other[96..100].copy_from_slice(&[1, 2, 3, 4]);
    assert_eq!(
        crate::format::file_crc(&other),
        crate::format::file_crc(&out)
    );
    // Other versions are refused by name; version 1 (the old tap layout) with the fix.
    for (v, says) in [(1u8, "reconvert"), (4, "version")] {
        let mut other = out.clone();
        other[8] = v;
        let crc = crate::format::file_crc(&other);
        other[96..100].copy_from_slice(&crc.to_le_bytes());
        let t = AlignedBuf::new(&other);
        let e = std::format!("{}", QnetFile::parse(t.bytes()).unwrap_err());
        assert!(e.contains("version") && e.contains(says), "{e}");
    }
}

#[test]
fn absurd_sizes_in_a_model_file_are_refused_not_overflowed() {
    // Found by the fuzzer: a stage width of 0xf6000004 overflowed the size arithmetic.
    let seed = include_bytes!("../../../fuzz/corpus/qnet_parse/tiny-f32.qnet");
    for (at, value) in [
        (28usize, 0xf600_0004u32),
        (16, 1 << 20),
        (20, u32::MAX),
        (24, 1 << 15),
    ] {
        let mut b = seed.to_vec();
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let crc = crate::format::file_crc(&b);
        b[96..100].copy_from_slice(&crc.to_le_bytes());
        let t = AlignedBuf::new(&b);
        let e = crate::format::QnetFile::parse(t.bytes()).unwrap_err();
        assert!(
            matches!(e, crate::Error::Arch(_)),
            "header field at {at} = {value}: {e}"
        );
    }
    let arch = crate::arch::presets::quadranet25(16);
    let len = arch.weights_len();
    let (v, m) = (vec![0.0; len.vecs], vec![0.0; len.mats]);
    let model = Model::new(
        arch,
        Weights {
            vecs: &v,
            mats: MatData::F32(&m),
        },
    )
    .unwrap();
    let e = model
        .forward(
            Kernels::scalar(),
            &[],
            1 << 40,
            1 << 40,
            &mut [],
            &mut [0.0; 1000],
        )
        .unwrap_err();
    assert!(matches!(e, crate::Error::InputSize { .. }), "{e}");
}
