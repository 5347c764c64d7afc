//! The hostile-input suite: over a hundred broken, lying or absurd inputs to `quadra` and
//! `quadra-bench` (model files with valid checksums, configs, checkpoints, `.npy` inputs,
//! images, non-regular files and option values), each run alone under a 4 GiB address-space
//! limit and a 60 s timeout. Every one must end in a clean error (exit 1 or clap's 2, a
//! message naming the problem, no panic), or, where the input is valid, succeed. A crash,
//! an abort on a failed allocation, a hang or an accepted bad input fails the test; all
//! failures are listed together.

use std::path::PathBuf;
use std::process::Command;

use quadra_core::format::file_crc;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The workspace's `quadra-bench` binary, built beside `quadra` by `cargo test --workspace`.
fn bench_bin() -> PathBuf {
    let quadra = PathBuf::from(env!("CARGO_BIN_EXE_quadra"));
    let b = quadra.with_file_name("quadra-bench");
    assert!(
        b.exists(),
        "{} is missing: build the workspace (cargo test --workspace) first",
        b.display()
    );
    b
}

enum Expect {
    /// A clean error whose message contains each of these.
    Error(&'static [&'static str]),
    /// A valid input: it must succeed.
    Valid,
}

struct Case {
    name: String,
    bin: PathBuf,
    args: Vec<String>,
    expect: Expect,
}

struct Suite {
    dir: PathBuf,
    cases: Vec<Case>,
}

impl Suite {
    fn quadra(&mut self, name: &str, args: &[&str], expect: Expect) {
        self.push(
            name,
            PathBuf::from(env!("CARGO_BIN_EXE_quadra")),
            args,
            expect,
        );
    }

    fn bench(&mut self, name: &str, args: &[&str], expect: Expect) {
        self.push(name, bench_bin(), args, expect);
    }

    fn push(&mut self, name: &str, bin: PathBuf, args: &[&str], expect: Expect) {
        if let Expect::Error(needles) = &expect {
            assert!(
                !needles.is_empty(),
                "{name}: say what the error message must contain"
            );
        }
        self.cases.push(Case {
            name: name.to_string(),
            bin,
            args: args.iter().map(|s| s.to_string()).collect(),
            expect,
        });
    }

    /// Writes `bytes` into the scratch directory as `name`; returns its path.
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }
}

fn rd64(b: &[u8], at: usize) -> usize {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize
}

/// `b` with its checksum recomputed, as someone editing a model on purpose would.
fn resealed(mut b: Vec<u8>) -> Vec<u8> {
    let crc = file_crc(&b);
    b[96..100].copy_from_slice(&crc.to_le_bytes());
    b
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn fill_f32(b: &mut [u8], from: usize, count: usize, v: f32) {
    for i in 0..count {
        b[from + 4 * i..from + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// A `.npy` v1 file with header `dict` (padded as numpy does) and `data`.
fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut h = dict.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((h.len() as u16).to_le_bytes());
    b.extend(h.as_bytes());
    b.extend(data);
    b
}

/// A safetensors file from a raw JSON header and data.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

#[test]
fn every_hostile_input_is_a_clean_error_and_every_valid_one_runs() {
    let dir = std::env::temp_dir().join(format!("quadra-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut s = Suite {
        dir: dir.clone(),
        cases: Vec::new(),
    };
    let q = env!("CARGO_BIN_EXE_quadra");
    let digits = root().join("models/digits");
    let ckpt = digits.join("digits.safetensors");
    let cfg = digits.join("digits.json");
    let (ckpt, cfg) = (ckpt.to_str().unwrap(), cfg.to_str().unwrap());

    // Base files: the digits model as f32, int8 and (committed) w8a8; an RGB model for
    // images; a valid input.
    for (dtype, name) in [("f32", "f32.qnet"), ("int8", "int8.qnet")] {
        let st = Command::new(q)
            .args([
                "convert",
                "--weights",
                ckpt,
                "--config",
                cfg,
                "--dtype",
                dtype,
                "--out",
            ])
            .arg(dir.join(name))
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    let xxs_cfg = {
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root().join("tests/fixtures/quadranet25_xxs.json")).unwrap(),
        )
        .unwrap();
        s.file("xxs.json", meta["config"].to_string().as_bytes())
    };
    let xxs_w = root().join("tests/fixtures/quadranet25_xxs.weights.safetensors");
    let st = Command::new(q)
        .args([
            "convert",
            "--weights",
            xxs_w.to_str().unwrap(),
            "--config",
            &xxs_cfg,
        ])
        .args(["--input-size", "64", "--out"])
        .arg(dir.join("rgb.qnet"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let f32m = std::fs::read(dir.join("f32.qnet")).unwrap();
    let int8m = std::fs::read(dir.join("int8.qnet")).unwrap();
    let w8a8m = std::fs::read(digits.join("rust/model.qnet")).unwrap();
    let one_image: Vec<u8> = (0..32 * 32)
        .flat_map(|i| ((i % 7) as f32 * 0.1).to_le_bytes())
        .collect();
    let x = s.file(
        "x.npy",
        &npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 32, 32), }",
            &one_image,
        ),
    );
    let y = s.path("y.npy");
    let rgb = s.path("rgb.qnet");

    // ---- model files with valid checksums: structure and values
    let models: Vec<(&str, Vec<u8>, &'static [&'static str])> = {
        let mut v: Vec<(&str, Vec<u8>, &'static [&'static str])> = Vec::new();
        let edit = |base: &[u8], f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = base.to_vec();
            f(&mut b);
            resealed(b)
        };
        v.push(("bad magic", edit(&f32m, &|b| b[0] = b'X'), &["bad magic"]));
        v.push(("version 0", edit(&f32m, &|b| put32(b, 8, 0)), &["version"]));
        v.push((
            "version 1",
            edit(&f32m, &|b| put32(b, 8, 1)),
            &["reconvert"],
        ));
        v.push((
            "version 99",
            edit(&f32m, &|b| put32(b, 8, 99)),
            &["version"],
        ));
        v.push((
            "dtype code 7",
            edit(&f32m, &|b| put32(b, 12, 7)),
            &["dtype"],
        ));
        v.push((
            "dtype f16 over f32 data",
            edit(&f32m, &|b| put32(b, 12, 1)),
            &["does not end where its layout does"],
        ));
        v.push((
            "dtype int8 over f32 data",
            edit(&f32m, &|b| put32(b, 12, 2)),
            &["does not end where its layout does"],
        ));
        v.push((
            "dtype f32 over w8a8 data",
            edit(&w8a8m, &|b| put32(b, 12, 0)),
            &["past the end"],
        ));
        v.push((
            "in_chans 0",
            edit(&f32m, &|b| put32(b, 16, 0)),
            &["in_chans must be between 1 and 1024"],
        ));
        v.push((
            "in_chans 2^31",
            edit(&f32m, &|b| put32(b, 16, 1 << 31)),
            &["in_chans must be between 1 and 1024"],
        ));
        v.push((
            "num_classes 0",
            edit(&f32m, &|b| put32(b, 20, 0)),
            &["num_classes must be between 1"],
        ));
        v.push((
            "num_classes 2^32-1",
            edit(&f32m, &|b| put32(b, 20, u32::MAX)),
            &["num_classes must be between 1"],
        ));
        v.push((
            "stage dim 0",
            edit(&f32m, &|b| put32(b, 24, 0)),
            &["stage dim must be between 1"],
        ));
        v.push((
            "stage dim 2^30",
            edit(&f32m, &|b| put32(b, 28, 1 << 30)),
            &["stage dim must be between 1"],
        ));
        v.push((
            "stage dims shrinking",
            edit(&f32m, &|b| put32(b, 36, 8)),
            &["weight stream lengths do not match"],
        ));
        v.push((
            "block count 2^32-1",
            edit(&f32m, &|b| put32(b, 40, u32::MAX)),
            &["blocks"],
        ));
        v.push((
            "block count +1",
            edit(&f32m, &|b| put32(b, 44, 2)),
            &["weight stream lengths do not match"],
        ));
        v.push((
            "kernel 4",
            edit(&f32m, &|b| b[128] = 4),
            &["kernel must be 3, 5 or 7"],
        ));
        v.push((
            "kernel 255",
            edit(&f32m, &|b| b[128] = 255),
            &["kernel must be 3, 5 or 7"],
        ));
        v.push((
            "expansion 0 on a quadratic block",
            edit(&f32m, &|b| b[129] = 0),
            &["expansion must be between 1 and 8"],
        ));
        v.push((
            "expansion 200",
            edit(&f32m, &|b| b[129] = 200),
            &["expansion must be between 1 and 8"],
        ));
        v.push((
            "file length field +64",
            edit(&f32m, &|b| {
                let n = rd64(b, 56);
                put64(b, 56, n as u64 + 64)
            }),
            &["file length"],
        ));
        v.push((
            "file length field 2^64-1",
            edit(&f32m, &|b| put64(b, 56, u64::MAX)),
            &["file length"],
        ));
        v.push((
            "vector stream over the header",
            edit(&f32m, &|b| put64(b, 64, 0)),
            &["not where the layout puts them"],
        ));
        v.push((
            "vector stream at offset 64",
            edit(&f32m, &|b| put64(b, 64, 64)),
            &["layout"],
        ));
        v.push((
            "matrix stream on the vector stream",
            edit(&f32m, &|b| {
                let o = rd64(b, 64);
                put64(b, 80, o as u64)
            }),
            &["layout"],
        ));
        v.push((
            "vector length wrong",
            edit(&f32m, &|b| {
                let n = rd64(b, 72);
                put64(b, 72, n as u64 + 16)
            }),
            &["lengths"],
        ));
        v.push((
            "matrix length 2^62",
            edit(&f32m, &|b| put64(b, 88, 1 << 62)),
            &["lengths"],
        ));
        v.push((
            "meta offset past the end",
            edit(&f32m, &|b| put64(b, 100, 1 << 40)),
            &["runs past the end of the file"],
        ));
        v.push((
            "meta length 2^64-1",
            edit(&f32m, &|b| put64(b, 108, u64::MAX)),
            &["section end overflows"],
        ));
        v.push((
            "meta not UTF-8",
            edit(&f32m, &|b| {
                let o = rd64(b, 100);
                b[o] = 0xFF
            }),
            &["UTF-8"],
        ));
        v.push((
            "NaN in the vector stream",
            edit(&f32m, &|b| {
                let o = rd64(b, 64);
                fill_f32(b, o, 1, f32::NAN)
            }),
            &["NaN"],
        ));
        v.push((
            "infinity in the matrix stream",
            edit(&f32m, &|b| {
                let o = rd64(b, 80);
                fill_f32(b, o + 400, 1, f32::INFINITY)
            }),
            &["NaN or infinity"],
        ));
        v.push((
            "int8 scales zero",
            edit(&int8m, &|b| {
                let (o, n) = (rd64(b, 64), rd64(b, 72));
                fill_f32(b, o, n, 0.0)
            }),
            &["scale"],
        ));
        v.push((
            "int8 scales negative",
            edit(&int8m, &|b| {
                let (o, n) = (rd64(b, 64), rd64(b, 72));
                fill_f32(b, o, n, -1.0)
            }),
            &["scale"],
        ));
        v.push((
            "int8 scales 3e38",
            edit(&int8m, &|b| {
                let (o, n) = (rd64(b, 64), rd64(b, 72));
                fill_f32(b, o, n, 3e38)
            }),
            &["scale"],
        ));
        v.push((
            "w8a8 weight -128",
            edit(&w8a8m, &|b| {
                let o = rd64(b, 80);
                b[o] = 0x80
            }),
            &["-128"],
        ));
        v.push((
            "float-block fields in an f32 file",
            edit(&f32m, &|b| put32(b, 124, 1)),
            &["reserved"],
        ));
        v.push((
            "float-block count without a section",
            edit(&w8a8m, &|b| put32(b, 124, 3)),
            &["float"],
        ));
        v.push((
            "float-block section over the header",
            edit(&w8a8m, &|b| {
                put64(b, 116, 64);
                put32(b, 124, 1)
            }),
            &["float-block"],
        ));
        v.push((
            "truncated by one byte",
            f32m[..f32m.len() - 1].to_vec(),
            &["file length"],
        ));
        v.push((
            "truncated to the header",
            f32m[..128].to_vec(),
            &["file length does not match the header"],
        ));
        v.push((
            "one byte",
            vec![0x93],
            &["shorter than the 128-byte header"],
        ));
        v.push((
            "a flipped weight bit without a new checksum",
            {
                let mut b = f32m.clone();
                let o = rd64(&b, 80);
                b[o + 1000] ^= 1;
                b
            },
            &["checksum"],
        ));
        v.push((
            "1 MB of noise",
            (0..1u32 << 20)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            &["bad magic"],
        ));
        v
    };
    for (name, bytes, needles) in models {
        let path = s.file(&format!("m-{}.qnet", name.replace(' ', "_")), &bytes);
        s.quadra(
            &format!("inspect: {name}"),
            &["inspect", &path],
            Expect::Error(needles),
        );
        s.quadra(
            &format!("infer: {name}"),
            &["infer", "--model", &path, "--input", &x, "--output", &y],
            Expect::Error(needles),
        );
    }
    let empty = s.file("empty.qnet", b"");
    s.quadra(
        "empty model file",
        &["inspect", &empty],
        Expect::Error(&["shorter"]),
    );
    s.quadra(
        "model path is a directory",
        &["inspect", dir.to_str().unwrap()],
        Expect::Error(&["not a regular file"]),
    );
    s.quadra(
        "model path is /dev/zero",
        &["inspect", "/dev/zero"],
        Expect::Error(&["not a regular file"]),
    );
    s.quadra(
        "model path does not exist",
        &["inspect", "/nonexistent/m.qnet"],
        Expect::Error(&["/nonexistent/m.qnet"]),
    );
    let fifo = dir.join("fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if made {
        let f = fifo.to_str().unwrap();
        s.quadra(
            "model path is a FIFO",
            &["infer", "--model", f, "--input", &x, "--output", &y],
            Expect::Error(&["not a regular file"]),
        );
        s.quadra(
            "input path is a FIFO",
            &[
                "infer",
                "--model",
                &s.path("f32.qnet"),
                "--input",
                f,
                "--output",
                &y,
            ],
            Expect::Error(&["not a regular file"]),
        );
        s.quadra(
            "checkpoint path is a FIFO",
            &["convert", "--weights", f, "--config", cfg, "--out", &y],
            Expect::Error(&["not a regular file"]),
        );
    }

    // ---- configs
    let configs: Vec<(&str, &str, &'static [&'static str])> = vec![
        (
            "depths 1e19",
            r#"{"dims":[16,32,64,128],"depths":[10000000000000000000,1,1,1],"kernel":7,"expansion":4,"num_classes":10,"in_chans":1}"#,
            &["depths"],
        ),
        (
            "depths 1e18",
            r#"{"dims":[16,32,64,128],"depths":[1000000000000000000,1,1,1],"kernel":7,"expansion":4,"num_classes":10,"in_chans":1}"#,
            &["at most 4096 blocks"],
        ),
        (
            "dims 16384 x 4 at E = 8",
            r#"{"dims":[16384,16384,16384,16384],"depths":[1,1,1,1],"kernel":7,"expansion":8,"num_classes":10,"in_chans":1}"#,
            &["does not fit the architecture"],
        ),
        (
            "dims negative",
            r#"{"dims":[-16,32,64,128],"depths":[1,1,2,1],"kernel":7,"expansion":4}"#,
            &["dims"],
        ),
        (
            "dims fractional",
            r#"{"dims":[16.5,32,64,128],"depths":[1,1,2,1],"kernel":7,"expansion":4}"#,
            &["dims"],
        ),
        (
            "dims zero",
            r#"{"dims":[0,32,64,128],"depths":[1,1,2,1],"kernel":7,"expansion":4}"#,
            &["dims[0] must be at least 1"],
        ),
        (
            "kernel 4",
            r#"{"dims":[16,32,64,128],"depths":[1,1,2,1],"kernel":4,"expansion":4}"#,
            &["kernel"],
        ),
        (
            "kernel 9",
            r#"{"dims":[16,32,64,128],"depths":[1,1,2,1],"kernel":9,"expansion":4}"#,
            &["kernel"],
        ),
        (
            "expansion 0",
            r#"{"dims":[16,32,64,128],"depths":[1,1,2,1],"kernel":7,"expansion":0}"#,
            &["expansion"],
        ),
        (
            "expansion 300",
            r#"{"dims":[16,32,64,128],"depths":[1,1,2,1],"kernel":7,"expansion":300}"#,
            &["expansion"],
        ),
        (
            "no dims",
            r#"{"depths":[1,1,2,1],"kernel":7,"expansion":4}"#,
            &["dims"],
        ),
        (
            "base_dim 0",
            r#"{"base_dim":0,"depths":[1,1,2,1],"kernel":7,"expansion":4}"#,
            &["dims[0] must be at least 1"],
        ),
        (
            "base_dim 2^62",
            r#"{"base_dim":4611686018427387904,"depths":[1,1,2,1],"kernel":7,"expansion":4}"#,
            &["base_dim"],
        ),
        (
            "three stages",
            r#"{"dims":[16,32,64],"depths":[1,1,2],"kernel":7,"expansion":4}"#,
            &["must have 4 entries, found 3"],
        ),
        (
            "unknown block",
            r#"{"dims":[16,32,64,128],"blocks":[["wat"],[{"kernel":7,"expansion":4}],[],[]]}"#,
            &["\"wat\" is not a block"],
        ),
        (
            "kernels list of 3",
            r#"{"dims":[16,32,64,128],"depths":[1,1,2,1],"kernels":[3,5,7],"expansion":4}"#,
            &["kernels"],
        ),
        (
            "num_classes 0",
            r#"{"dims":[16,32,64,128],"depths":[1,1,2,1],"kernel":7,"expansion":4,"num_classes":0}"#,
            &["\"num_classes\" must be at least 1"],
        ),
        (
            "in_chans 1e12",
            r#"{"dims":[16,32,64,128],"depths":[1,1,2,1],"kernel":7,"expansion":4,"in_chans":1000000000000}"#,
            &["in_chans must be between 1 and 1024"],
        ),
        ("not JSON", "{dims: [16", &["line 1 column 2"]),
        ("empty", "", &["EOF while parsing"]),
        ("a JSON array", "[1, 2, 3]", &["JSON object"]),
    ];
    for (name, text, needles) in configs {
        let path = s.file(
            &format!("c-{}.json", name.replace(' ', "_")),
            text.as_bytes(),
        );
        s.quadra(
            &format!("config: {name}"),
            &["convert", "--weights", ckpt, "--config", &path, "--out", &y],
            Expect::Error(needles),
        );
    }

    // ---- checkpoints
    let f16 = |n: usize| vec![0u8; 2 * n];
    let checkpoints: Vec<(&str, Vec<u8>, &'static [&'static str])> = vec![
        ("empty", vec![], &["too short"]),
        ("seven bytes", vec![1, 2, 3, 4, 5, 6, 7], &["too short"]),
        (
            "header length 2^64-1",
            u64::MAX.to_le_bytes().to_vec(),
            &["header length"],
        ),
        (
            "header length 2^40 over 100 bytes",
            {
                let mut b = (1u64 << 40).to_le_bytes().to_vec();
                b.extend([b'{'; 92]);
                b
            },
            &["header length"],
        ),
        (
            "header not JSON",
            safetensors("{not json}", &[]),
            &["not the JSON safetensors expects"],
        ),
        (
            "tensor past the end",
            safetensors(
                r#"{"norm.weight":{"dtype":"F32","shape":[128],"data_offsets":[0,512]}}"#,
                &[0; 16],
            ),
            &["data_offsets"],
        ),
        (
            "offsets reversed",
            safetensors(
                r#"{"norm.weight":{"dtype":"F32","shape":[128],"data_offsets":[512,0]}}"#,
                &[0; 512],
            ),
            &["data_offsets out of order"],
        ),
        (
            "shape product overflows",
            safetensors(
                r#"{"norm.weight":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}"#,
                &[0; 16],
            ),
            &["shape or offsets overflow"],
        ),
        (
            "int64 tensor",
            safetensors(
                r#"{"norm.weight":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#,
                &[0; 16],
            ),
            &["I64"],
        ),
        (
            "only one of many tensors",
            safetensors(
                r#"{"norm.weight":{"dtype":"F16","shape":[128],"data_offsets":[0,256]}}"#,
                &f16(128),
            ),
            &["missing"],
        ),
    ];
    for (name, bytes, needles) in checkpoints {
        let path = s.file(&format!("w-{}.safetensors", name.replace(' ', "_")), &bytes);
        s.quadra(
            &format!("checkpoint: {name}"),
            &["convert", "--weights", &path, "--config", cfg, "--out", &y],
            Expect::Error(needles),
        );
    }
    s.quadra(
        "checkpoint with the wrong architecture",
        &[
            "convert",
            "--weights",
            ckpt,
            "--preset",
            "quadranet25-xxs",
            "--out",
            &y,
        ],
        Expect::Error(&["expected"]),
    );

    // ---- .npy inputs
    let f32m_path = s.path("f32.qnet");
    let inputs: Vec<(&str, Vec<u8>, &'static [&'static str])> = vec![
        (
            "shape claims 100000x100000 over 64 bytes",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 100000, 100000), }",
                &[0; 64],
            ),
            &["10000000000 float32 values"],
        ),
        (
            "v2 header length 0xFFFFFFF0",
            {
                let mut b = b"\x93NUMPY\x02\x00".to_vec();
                b.extend(0xFFFF_FFF0u32.to_le_bytes());
                b.extend([b' '; 52]);
                b
            },
            &["header runs past the end"],
        ),
        (
            "float64",
            npy(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 32, 32), }",
                &[0; 8192],
            ),
            &["float64"],
        ),
        (
            "three dimensions",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 32, 32), }",
                &[0; 4096],
            ),
            &["rank 4"],
        ),
        (
            "three channels for a one-channel model",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 32, 32), }",
                &[0; 12288],
            ),
            &["channels"],
        ),
        (
            "16x16 image",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 16, 16), }",
                &[0; 1024],
            ),
            &["32"],
        ),
        (
            "NaN pixel",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 32, 32), }",
                &{
                    let mut d = one_image.clone();
                    d[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
                    d
                },
            ),
            &["finite"],
        ),
        (
            "data cut short",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 32, 32), }",
                &[0; 4000],
            ),
            &["4000 bytes of data"],
        ),
        (
            "zero images",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1, 32, 32), }",
                &[],
            ),
            &["no images"],
        ),
        (
            "not an .npy",
            b"hello world, not numpy".to_vec(),
            &["not an .npy file"],
        ),
        (
            "header dict cut off",
            b"\x93NUMPY\x01\x00\x40\x00{'descr': '<f4', 'fortran_".to_vec(),
            &["header runs past the end"],
        ),
    ];
    for (name, bytes, needles) in inputs {
        let path = s.file(&format!("x-{}.npy", name.replace(' ', "_")), &bytes);
        s.quadra(
            &format!("npy: {name}"),
            &[
                "infer", "--model", &f32m_path, "--input", &path, "--output", &y,
            ],
            Expect::Error(needles),
        );
    }
    // Big-endian and Fortran-order arrays are valid .npy: read as numpy would.
    let be: Vec<u8> = one_image
        .chunks(4)
        .flat_map(|c| [c[3], c[2], c[1], c[0]])
        .collect();
    let be = s.file(
        "x-be.npy",
        &npy(
            "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 1, 32, 32), }",
            &be,
        ),
    );
    s.quadra(
        "big-endian float32 input",
        &[
            "infer", "--model", &f32m_path, "--input", &be, "--output", &y,
        ],
        Expect::Valid,
    );
    let fortran = s.file(
        "x-f.npy",
        &npy(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 1, 32, 32), }",
            &one_image,
        ),
    );
    s.quadra(
        "Fortran-order input",
        &[
            "infer", "--model", &f32m_path, "--input", &fortran, "--output", &y,
        ],
        Expect::Valid,
    );
    s.quadra(
        "valid input",
        &[
            "infer", "--model", &f32m_path, "--input", &x, "--output", &y,
        ],
        Expect::Valid,
    );
    s.quadra(
        "valid input, w8a8 model, 2 threads",
        &[
            "infer",
            "--model",
            digits.join("rust/model.qnet").to_str().unwrap(),
            "--input",
            &x,
            "--output",
            &y,
            "--threads",
            "2",
        ],
        Expect::Valid,
    );

    // ---- images (an RGB model)
    let png = |w: u32, h: u32| {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_pixel(w, h, image::Rgb([200, 30, 90]))
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    };
    let jpeg = {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_fn(300, 200, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 77])
        })
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
        out.into_inner()
    };
    let images: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("1x60000 PNG", png(1, 60000), Expect::Error(&["pixels"])),
        (
            "1x10000 PNG",
            png(1, 10000),
            Expect::Error(&["too elongated"]),
        ),
        (
            "truncated PNG",
            {
                let b = png(300, 200);
                b[..b.len() / 2].to_vec()
            },
            Expect::Error(&["decode"]),
        ),
        (
            "truncated JPEG",
            jpeg[..jpeg.len() / 2].to_vec(),
            Expect::Error(&["truncated"]),
        ),
        (
            "JPEG without its end marker",
            jpeg[..jpeg.len() - 2].to_vec(),
            Expect::Error(&["truncated"]),
        ),
        ("empty file", vec![], Expect::Error(&["image"])),
        (
            "text named .png",
            b"not an image at all".to_vec(),
            Expect::Error(&["image"]),
        ),
        ("valid 1x1 PNG (upscaled)", png(1, 1), Expect::Valid),
        ("valid 300x200 PNG", png(300, 200), Expect::Valid),
        ("valid 300x200 JPEG", jpeg.clone(), Expect::Valid),
    ];
    for (name, bytes, expect) in images {
        let path = s.file(&format!("i-{}.png", name.replace(' ', "_")), &bytes);
        s.quadra(
            &format!("image: {name}"),
            &[
                "infer",
                "--model",
                &rgb,
                "--image",
                &path,
                "--input-size",
                "64",
            ],
            expect,
        );
    }
    s.quadra(
        "image into a one-channel model",
        &[
            "infer",
            "--model",
            &f32m_path,
            "--image",
            &s.path("i-valid_300x200_PNG.png"),
        ],
        Expect::Error(&["3-channel"]),
    );

    // ---- option values
    let good_png = s.path("i-valid_300x200_PNG.png");
    let opts: Vec<(&str, Vec<&str>, &'static [&'static str])> = vec![
        (
            "--threads 17",
            vec![
                "infer",
                "--model",
                &f32m_path,
                "--input",
                &x,
                "--output",
                &y,
                "--threads",
                "17",
            ],
            &["at most 16"],
        ),
        (
            "--cores of an offline CPU",
            vec![
                "infer", "--model", &f32m_path, "--input", &x, "--cores", "1000",
            ],
            &["CPU 1000 is not an online CPU"],
        ),
        (
            "--threads 10^6",
            vec![
                "infer",
                "--model",
                &f32m_path,
                "--input",
                &x,
                "--output",
                &y,
                "--threads",
                "1000000",
            ],
            &["--threads"],
        ),
        (
            "--threads -1",
            vec![
                "infer",
                "--model",
                &f32m_path,
                "--input",
                &x,
                "--output",
                &y,
                "--threads",
                "-1",
            ],
            &["'-1'"],
        ),
        (
            "--kernel bogus",
            vec![
                "infer", "--model", &f32m_path, "--input", &x, "--output", &y, "--kernel", "bogus",
            ],
            &["bogus"],
        ),
        (
            "--dtype bogus",
            vec![
                "convert",
                "--weights",
                ckpt,
                "--config",
                cfg,
                "--dtype",
                "bogus",
                "--out",
                &y,
            ],
            &["bogus"],
        ),
        (
            "--input-size 2^32",
            vec![
                "convert",
                "--weights",
                ckpt,
                "--config",
                cfg,
                "--input-size",
                "4294967296",
                "--out",
                &y,
            ],
            &["input size"],
        ),
        (
            "inspect --input-size 2^64-1",
            vec![
                "inspect",
                &f32m_path,
                "--input-size",
                "18446744073709551615",
            ],
            &["too large"],
        ),
        (
            "--input-size 0x0",
            vec!["inspect", &f32m_path, "--input-size", "0x0"],
            &["too small"],
        ),
        (
            "--min-cosine 2",
            vec![
                "convert",
                "--weights",
                ckpt,
                "--config",
                cfg,
                "--dtype",
                "w8a8",
                "--min-cosine",
                "2",
                "--out",
                &y,
            ],
            &["cosine"],
        ),
        (
            "--min-cosine NaN",
            vec![
                "convert",
                "--weights",
                ckpt,
                "--config",
                cfg,
                "--dtype",
                "w8a8",
                "--min-cosine",
                "NaN",
                "--out",
                &y,
            ],
            &["cosine"],
        ),
        (
            "--meta missing file",
            vec![
                "convert",
                "--weights",
                ckpt,
                "--config",
                cfg,
                "--meta",
                "/nonexistent/meta.json",
                "--out",
                &y,
            ],
            &["/nonexistent/meta.json"],
        ),
        (
            "--resize 0",
            vec![
                "infer", "--model", &rgb, "--image", &good_png, "--resize", "0",
            ],
            &["resize"],
        ),
        (
            "--std 0",
            vec![
                "infer", "--model", &rgb, "--image", &good_png, "--std", "0,0,0",
            ],
            &["std"],
        ),
        (
            "--top 0",
            vec![
                "infer",
                "--model",
                &rgb,
                "--image",
                &good_png,
                "--top",
                "0",
                "--input-size",
                "64",
            ],
            &[],
        ),
        (
            "unknown preset",
            vec![
                "convert",
                "--weights",
                ckpt,
                "--preset",
                "quadranet99-z",
                "--out",
                &y,
            ],
            &["quadranet36-t"],
        ),
    ];
    for (name, args, needles) in opts {
        let expect = if name == "--top 0" {
            Expect::Valid
        } else {
            Expect::Error(needles)
        };
        s.quadra(&format!("option: {name}"), &args, expect);
    }
    let bench: Vec<(&str, Vec<&str>, &'static [&'static str])> = vec![
        (
            "--op qdw:2^64-1x2x3",
            vec!["--op", "qdw:18446744073709551615x2x3"],
            &["at most 16384 channels"],
        ),
        (
            "--op block:16x16x259x260",
            vec!["--op", "block:16x16x259x260"],
            &["must be 3, 5 or 7, not 259"],
        ),
        (
            "--op qdw:0x16x3",
            vec!["--op", "qdw:0x16x3"],
            &["at least 1"],
        ),
        (
            "--op nonsense",
            vec!["--op", "gemm:1"],
            &["expected qdw:CxHxK or block:CxHxKxE"],
        ),
        (
            "--input-size 100000",
            vec!["--preset", "quadranet25-xxs", "--input-size", "100000"],
            &["100000"],
        ),
        ("--threads 17", vec!["--threads", "17"], &["at most 16"]),
        (
            "--cores 0-99999",
            vec!["--cores", "0-99999"],
            &["not a CPU number"],
        ),
        (
            "--cores fast",
            vec!["--cores", "fast"],
            &["unknown cores 'fast'"],
        ),
        (
            "--bands fair",
            vec!["--bands", "fair"],
            &["unknown band split 'fair'"],
        ),
        ("--iters 0", vec!["--iters", "0"], &["'0' for '--iters"]),
        (
            "--model a corrupt file",
            vec!["--model", "/dev/null"],
            &["not a regular file"],
        ),
        ("--preset unknown", vec!["--preset", "nope"], &["nope"]),
        ("--dtype bogus", vec!["--dtype", "bogus"], &["bogus"]),
    ];
    let short_input = s.file("op_in.f32", &[0u8; 100]);
    let bench_ops: Vec<(&str, Vec<&str>, &'static [&'static str])> = vec![
        (
            "--op-weights of a whole network",
            vec!["--op", "block:16x8x7x4", "--op-weights", ckpt],
            &["expected the state_dict of one QuadraBlock1_dw"],
        ),
        (
            "--op-input of the wrong length",
            vec![
                "--op",
                "qdw:16x8x7",
                "--op-input",
                &short_input,
                "--op-output",
                &y,
            ],
            &["100 bytes, expected 4096"],
        ),
        (
            "--op-input without --op-output",
            vec!["--op", "qdw:16x8x7", "--op-input", &short_input],
            &["--op-output"],
        ),
    ];
    for (name, args, needles) in bench_ops {
        s.bench(&format!("bench: {name}"), &args, Expect::Error(needles));
    }
    for (name, args, needles) in bench {
        s.bench(&format!("bench: {name}"), &args, Expect::Error(needles));
    }

    // ---- run every case alone under the limits
    let total = s.cases.len();
    let mut failures = Vec::new();
    for c in &s.cases {
        let out = Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 4194304 && exec timeout 60 \"$0\" \"$@\"")
            .arg(&c.bin)
            .args(&c.args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        let verdict = match (&c.expect, code) {
            (_, Some(124)) => Some("hung (killed after 60 s)".to_string()),
            (_, None) => Some(format!("died of a signal: {:?}", out.status)),
            (_, _) if err.contains("panicked") => Some(format!("panicked: {err}")),
            (_, _) if err.contains("memory allocation") => {
                Some(format!("aborted on allocation: {err}"))
            }
            (Expect::Valid, Some(0)) => None,
            (Expect::Valid, _) => Some(format!("a valid input failed ({code:?}): {err}")),
            (Expect::Error(_), Some(0)) => Some(format!(
                "accepted (exit 0): {}",
                String::from_utf8_lossy(&out.stdout)
            )),
            (Expect::Error(needles), Some(1 | 2)) => {
                let missing: Vec<_> = needles.iter().filter(|n| !err.contains(*n)).collect();
                if err.trim().is_empty() {
                    Some("failed without a message".to_string())
                } else if !missing.is_empty() {
                    Some(format!("message lacks {missing:?}: {err}"))
                } else {
                    None
                }
            }
            (Expect::Error(_), Some(c)) => Some(format!("exit code {c}: {err}")),
        };
        if let Some(v) = verdict {
            failures.push(format!("{}: {}", c.name, v.trim()));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(total >= 100, "{total} cases");
    assert!(
        failures.is_empty(),
        "{} of {total} hostile cases misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
