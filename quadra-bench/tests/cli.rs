//! The `quadra-bench` binary on bad arguments: an error naming the problem, never a panic.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quadra-bench"))
        .args(args)
        .output()
        .expect("quadra-bench runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// QuadraNet25-XXS at 64x64, two iterations, no candidate table: the quick whole-network run.
const SMALL_25XXS: &[&str] = &[
    "--preset",
    "quadranet25-xxs",
    "--input-size",
    "64",
    "--iters",
    "2",
    "--no-candidates",
];

#[test]
fn bad_operators_are_refused_with_the_reason() {
    for (op, says) in [
        ("qdw:0x56x7", "at least 1"),
        ("qdw:64x0x7", "at least 1"),
        ("block:64x14x7x0", "at least 1"),
        ("qdw:64x56", "expected qdw:CxHxK"),
        ("qdw:axbxc", "expected qdw:CxHxK"),
        ("conv:64x56x7", "expected qdw:CxHxK"),
        ("qdw:64x14x4", "3, 5 or 7"),
        // Values that would truncate to a byte or overflow if parsed carelessly.
        ("block:16x16x259x260", "must be 3, 5 or 7, not 259"),
        ("block:16x16x7x260", "must be 1 to 8, not 260"),
        ("qdw:18446744073709551615x2x3", "at most 16384 channels"),
        ("qdw:16x100000x3", "4096x4096"),
    ] {
        let (ok, text) = run(&["--op", op, "--iters", "1", "--warmup", "0"]);
        assert!(!ok, "{op} accepted: {text}");
        assert!(text.contains(says), "{op}: {text}");
        assert!(!text.contains("panicked"), "{op}: {text}");
    }
}

#[test]
fn strips_are_checked_and_do_not_change_the_block() {
    for (args, says) in [
        (
            vec!["--op", "qdw:16x14x7", "--strip", "2"],
            "block:CxHxKxE only",
        ),
        (
            vec!["--op", "block:16x14x7x4", "--strip", "0"],
            "1 to 14 rows",
        ),
        (
            vec!["--op", "block:16x14x7x4", "--strip", "15"],
            "1 to 14 rows",
        ),
        (
            vec!["--op", "block:16x14x7x4", "--strip", "2", "--threads", "2"],
            "one thread",
        ),
    ] {
        let (ok, text) = run(&[&args[..], &["--iters", "1", "--warmup", "0"]].concat());
        assert!(!ok && text.contains(says), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
    // The block's output is the same for any strip (the default included).
    let dir = std::env::temp_dir().join(format!("quadra-strip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("x.bin");
    let x: Vec<u8> = (0..14 * 14 * 16)
        .flat_map(|i| ((i % 23) as f32 * 0.1 - 1.0).to_le_bytes())
        .collect();
    std::fs::write(&input, x).unwrap();
    let mut outs = Vec::new();
    for strip in [None, Some("1"), Some("5"), Some("14")] {
        let out = dir.join(format!("y{}.bin", strip.unwrap_or("d")));
        let mut args = vec!["--op", "block:16x14x7x4", "--iters", "1", "--warmup", "0"];
        args.extend([
            "--op-input",
            input.to_str().unwrap(),
            "--op-output",
            out.to_str().unwrap(),
        ]);
        if let Some(s) = strip {
            args.extend(["--strip", s]);
        }
        let (ok, text) = run(&args);
        assert!(ok, "{args:?}: {text}");
        outs.push(std::fs::read(&out).unwrap());
    }
    assert!(outs
        .iter()
        .all(|o| o == &outs[0] && o.len() == 14 * 14 * 16 * 4));
    // Equal bytes could be equal NaNs: the output must be finite too.
    assert!(outs[0]
        .chunks_exact(4)
        .all(|b| f32::from_le_bytes(b.try_into().unwrap()).is_finite()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn zero_iterations_are_refused_and_zero_threads_mean_one_per_chosen_core() {
    let (ok, text) = run(&["--op", "qdw:16x14x7", "--iters", "0"]);
    assert!(!ok && text.contains("must be at least 1"), "{text}");
    let (ok, text) = run(&[SMALL_25XXS, &["--threads", "0", "--json"]].concat());
    assert!(ok, "{text}");
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cores = r["cores"].as_array().unwrap();
    assert_eq!(r["threads"].as_u64().unwrap() as usize, cores.len(), "{r}");
    assert!(r["pinned"].is_boolean() && r["bands"] == "capacity", "{r}");
}

#[test]
fn one_small_qdw_reports_its_paired_fractions() {
    let (ok, text) = run(&[
        "--op",
        "qdw:20x9x5",
        "--iters",
        "4",
        "--warmup",
        "1",
        "--json",
    ]);
    assert!(ok, "{text}");
    for key in [
        "op_ms",
        "qdw_row_only_ms",
        "op_peak_fraction_paired",
        "qdw_row_only_peak_fraction_paired",
        "fma_peak_gflops_per_core",
    ] {
        assert!(
            text.contains(&format!("\"{key}\"")),
            "{key} missing: {text}"
        );
    }
}

#[test]
fn errors_are_sentences_and_sizes_are_bounded_before_allocating() {
    for (args, says) in [
        (
            vec!["--preset", "nope"],
            "unknown preset 'nope'; known presets: quadranet25-xxs",
        ),
        (vec!["--input-size", "100000"], "too large"),
        (vec!["--threads", "100000"], "at most 16"),
    ] {
        let (ok, text) = run(&args);
        assert!(!ok, "{args:?} accepted: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
        // Not a Debug form (`Error: UnknownPreset("nope")`), not a panic.
        assert!(
            !text.contains("Error: ") && !text.contains("panicked"),
            "{args:?}: {text}"
        );
    }
}

#[test]
fn a_config_is_measured_with_random_weights_and_its_table_sums_to_its_latency() {
    let dir = std::env::temp_dir().join(format!("quadra-bench-lut-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("searched.json");
    // A searched network: mixed kernels and expansions, and identity blocks.
    std::fs::write(
        &cfg,
        r#"{"dims": [16, 32, 64, 128], "num_classes": 7, "blocks": [
            [{"kernel": 3, "expansion": 2}, "identity"], [{"kernel": 5, "expansion": 4}],
            ["identity", {"kernel": 7, "expansion": 2}], [{"kernel": 3, "expansion": 4}]]}"#,
    )
    .unwrap();
    let lut = dir.join("lut.json");
    let yaml = dir.join("lut.yaml");
    let (ok, out) = run(&[
        "--config",
        cfg.to_str().unwrap(),
        "--input-size",
        "64",
        "--iters",
        "5",
        "--warmup",
        "1",
        "--check",
        "--lut-json",
        lut.to_str().unwrap(),
        "--lut-yaml",
        yaml.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("searched.json (random weights)") && out.contains("check "),
        "{out}"
    );
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&lut).unwrap()).unwrap();
    let t = t.as_object().unwrap();
    for (k, v) in t {
        let (m, lo, hi) = (
            v["median"].as_f64().unwrap(),
            v["p10"].as_f64().unwrap(),
            v["p90"].as_f64().unwrap(),
        );
        assert!(lo <= m && m <= hi && m.is_finite() && lo >= 0.0, "{k}: {v}");
        let mean = v["mean"].as_f64().unwrap();
        assert!(mean.is_finite() && mean >= 0.0, "{k}: {v}");
        assert!(v["source"].is_string(), "{k}: {v}");
    }
    // The YAML table, read by PyYAML as ProxylessNAS's LatencyEstimator reads it
    // (`lut[key]['mean']`): every key of the JSON table, with the same numbers.
    let check = r#"
import json, sys, yaml
lut = yaml.safe_load(open(sys.argv[1]))
ref = json.load(open(sys.argv[2]))
assert set(lut) == set(ref), sorted(set(lut) ^ set(ref))
for k, v in ref.items():
    for n in ("mean", "median", "p10", "p90"):
        assert abs(lut[k][n] - v[n]) <= 1e-6 + 1e-6 * abs(v[n]), (k, n, lut[k][n], v[n])
    assert lut[k]["source"] == v["source"] and lut[k]["runs"] == v["runs"], k
print(len(lut), "entries")
"#;
    let py = std::process::Command::new("python3")
        .args(["-c", check, yaml.to_str().unwrap(), lut.to_str().unwrap()])
        .output()
        .expect("python3 (with PyYAML) runs");
    assert!(
        py.status.success(),
        "PyYAML could not read the table: {}{}",
        String::from_utf8_lossy(&py.stdout),
        String::from_utf8_lossy(&py.stderr)
    );
    // The network's own identity blocks and every stage's identity candidate, the model's
    // layers labelled as measured in the model.
    let identity = "Identity-input:16x16x16-output:16x16x16-expand:0-kernel:0-stride:1-idskip:1";
    assert!(
        t[identity]["source"].as_str().unwrap().starts_with("model"),
        "{:?}",
        t[identity]
    );
    assert!(t.keys().filter(|k| k.starts_with("Identity-")).count() >= 4);
    let stem = t.keys().find(|k| k.starts_with("Stem-")).unwrap();
    assert!(t[stem]["source"].as_str().unwrap().starts_with("model"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn w8a8_work_is_not_reported_against_the_f32_fma_peak() {
    let (ok, text) = run(&[SMALL_25XXS, &["--dtype", "w8a8"]].concat());
    assert!(ok, "{text}");
    assert!(
        text.contains("not comparable with the f32 FMA peak")
            && !text.contains("% of the FMA peak"),
        "{text}"
    );
    // One thread is "1 thread".
    assert!(text.contains(", 1 thread,"), "{text}");
    let (ok, text) = run(&[SMALL_25XXS, &["--dtype", "w8a8", "--json"]].concat());
    assert!(ok, "{text}");
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(r["fraction_of_peak"].is_null(), "{r}");
    let (ok, text) = run(&[SMALL_25XXS, &["--dtype", "f32"]].concat());
    assert!(ok && text.contains("% of the FMA peak"), "{text}");
}

/// `--precision fp16` is reported as what runs: half precision where the CPU has FEAT_FP16,
/// else f32 with the placement saying it was asked for (every x86 here).
#[test]
fn fp16_precision_is_reported_as_what_runs() {
    let (ok, text) = run(&[SMALL_25XXS, &["--precision", "fp16", "--json"]].concat());
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    if cfg!(target_arch = "aarch64") && v["precision"] == "fp16" {
        assert!(v["fraction_of_peak"].is_null(), "{text}");
    } else {
        assert_eq!(v["precision"], "f32", "{text}");
        let placement = v["placement"].as_str().unwrap();
        assert!(placement.contains("fp16 requested, running f32"), "{text}");
    }
    let (ok, text) = run(&[SMALL_25XXS, &["--precision", "half"]].concat());
    assert!(!ok && text.contains("unknown precision 'half'"), "{text}");
}
