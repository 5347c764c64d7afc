//! Embeds the first held-out digits (images and labels, from the committed `.npy` files)
//! and the compiled-in model (`QUADRA_FIRMWARE_MODEL`: a `quadra convert --emit-rust`
//! directory, by default `models/digits/rust`, the w8a8 digits model) for the bare-metal
//! example, and, for a bare-metal target, picks the board's linker script (`QUADRA_BOARD`:
//! `virt` for aarch64, `mps2-an386` or `mps3-an547` for Cortex-M).

use std::path::PathBuf;

/// Held-out images embedded in the firmware.
const IMAGES: usize = 36;

/// The data bytes of a `.npy` file (after its header), checking the dtype it declares.
fn npy_data(path: &PathBuf, descr: &str) -> Vec<u8> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        b.starts_with(b"\x93NUMPY") && b[6] == 1,
        "{}: not a v1 .npy",
        path.display()
    );
    let header_len = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = String::from_utf8_lossy(&b[10..10 + header_len]);
    assert!(
        header.contains(descr),
        "{}: expected {descr}: {header}",
        path.display()
    );
    b[10 + header_len..].to_vec()
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..");
    let digits = root.join("models/digits");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let images = npy_data(&digits.join("test_images.npy"), "'<f4'");
    let labels = npy_data(&digits.join("test_labels.npy"), "'<i8'");
    let per = 32 * 32 * 4;
    assert!(images.len() >= IMAGES * per && labels.len() >= IMAGES * 8);
    std::fs::write(out.join("images.bin"), &images[..IMAGES * per]).unwrap();
    let labels: Vec<u8> = labels[..IMAGES * 8].chunks_exact(8).map(|l| l[0]).collect();
    std::fs::write(out.join("labels.bin"), labels).unwrap();
    // The model module, included into the app: its inner attributes and docs (which
    // `include!` does not take) left out; its model.qnet beside it.
    let model_dir = std::env::var("QUADRA_FIRMWARE_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| digits.join("rust"));
    let src = std::fs::read_to_string(model_dir.join("model.rs"))
        .unwrap_or_else(|e| panic!("{}: {e}", model_dir.join("model.rs").display()));
    let body: String = src
        .lines()
        .filter(|l| !l.starts_with("//!") && !l.starts_with("#!["))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(out.join("model.rs"), body).unwrap();
    std::fs::copy(model_dir.join("model.qnet"), out.join("model.qnet")).unwrap();
    println!("cargo:rerun-if-env-changed=QUADRA_FIRMWARE_MODEL");
    println!(
        "cargo:rerun-if-changed={}",
        model_dir.join("model.rs").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        model_dir.join("model.qnet").display()
    );
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../../models/digits/test_images.npy");
    println!("cargo:rerun-if-changed=../../models/digits/test_labels.npy");
    println!("cargo:rerun-if-env-changed=QUADRA_BOARD");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap();
        let board = std::env::var("QUADRA_BOARD").unwrap_or_else(|_| {
            if arch == "aarch64" {
                "virt".into()
            } else {
                "mps2-an386".into()
            }
        });
        let script = root
            .join("examples/baremetal/link")
            .join(format!("{board}.ld"));
        assert!(
            script.exists(),
            "no linker script for board '{board}': {}",
            script.display()
        );
        println!("cargo:rerun-if-changed={}", script.display());
        println!("cargo:rustc-link-arg=-T{}", script.display());
    }
}
