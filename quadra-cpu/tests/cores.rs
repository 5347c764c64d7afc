//! The cores policy on fake sysfs trees of real devices, pinning checked from inside the
//! workers, and sysfs garbage that must not matter.

use std::path::{Path, PathBuf};

use quadra_cpu::config::ArchConfig;
use quadra_cpu::cores::{current_affinity, CapacitySource, Cores, Topology, SYSFS_ROOT_ENV};
use quadra_cpu::weights::{OwnedMats, OwnedWeights};
use quadra_cpu::{Network, Session};

/// One CPU of a fake tree: id, cpu_capacity, max kHz, cluster_id.
type FakeCpu = (usize, Option<u64>, Option<u64>, i64);

/// Writes a sysfs tree with these CPUs online under a fresh directory.
fn tree(name: &str, cpus: &[FakeCpu]) -> PathBuf {
    let root = std::env::temp_dir().join(format!("quadra-sysfs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("devices/system/cpu");
    std::fs::create_dir_all(&dir).unwrap();
    let ids: Vec<usize> = cpus.iter().map(|c| c.0).collect();
    std::fs::write(
        dir.join("online"),
        format!("{}\n", quadra_cpu::cores::format_cpu_list(&ids)),
    )
    .unwrap();
    for &(id, cap, freq, cluster) in cpus {
        let c = dir.join(format!("cpu{id}"));
        std::fs::create_dir_all(c.join("topology")).unwrap();
        std::fs::write(c.join("topology/cluster_id"), format!("{cluster}\n")).unwrap();
        std::fs::write(c.join("topology/physical_package_id"), "0\n").unwrap();
        if let Some(cap) = cap {
            std::fs::write(c.join("cpu_capacity"), format!("{cap}\n")).unwrap();
        }
        if let Some(f) = freq {
            std::fs::create_dir_all(c.join("cpufreq")).unwrap();
            std::fs::write(c.join("cpufreq/cpuinfo_max_freq"), format!("{f}\n")).unwrap();
        }
    }
    root
}

/// Raspberry Pi 5: four Cortex-A76 at 2.4 GHz, one cluster.
fn rpi5() -> Vec<FakeCpu> {
    (0..4)
        .map(|i| (i, Some(1024), Some(2_400_000), 0))
        .collect()
}

/// RK3588: cpu0-3 Cortex-A55 (1.8 GHz), cpu4-7 Cortex-A76 (2.4 GHz) in two clusters of two.
fn rk3588() -> Vec<FakeCpu> {
    (0..8)
        .map(|i| match i {
            0..=3 => (i, Some(414), Some(1_800_000), 0),
            4 | 5 => (i, Some(1024), Some(2_400_000), 1),
            _ => (i, Some(1024), Some(2_400_000), 2),
        })
        .collect()
}

/// A three-cluster phone: cpu0-3 little, cpu4-6 big, cpu7 prime.
fn phone() -> Vec<FakeCpu> {
    (0..8)
        .map(|i| match i {
            0..=3 => (i, Some(325), Some(2_016_000), 0),
            4..=6 => (i, Some(870), Some(2_803_000), 1),
            _ => (i, Some(1024), Some(3_187_000), 2),
        })
        .collect()
}

/// An Intel hybrid laptop (no cpu_capacity): cpu0-7 P-core threads at 4.7 GHz, cpu8-15
/// E-cores at 3.4 GHz.
fn intel_hybrid() -> Vec<FakeCpu> {
    (0..16)
        .map(|i| (i, None, Some(if i < 8 { 4_700_000 } else { 3_400_000 }), -1))
        .collect()
}

/// A container: CPUs listed, nothing else readable.
fn container() -> Vec<FakeCpu> {
    (0..4).map(|i| (i, None, None, -1)).collect()
}

fn choose(root: &Path, policy: &str) -> Vec<usize> {
    Topology::read(root)
        .choose(&Cores::parse(policy).unwrap())
        .unwrap()
}

#[test]
fn each_policy_chooses_the_expected_cores_on_each_device() {
    /// A device, its CPUs, what big, little and all choose, and the capacities' source.
    type Case = (&'static str, Vec<FakeCpu>, [Vec<usize>; 3], CapacitySource);
    let cases: [Case; 5] = [
        (
            "rpi5",
            rpi5(),
            [vec![0, 1, 2, 3], vec![0, 1, 2, 3], vec![0, 1, 2, 3]],
            CapacitySource::CpuCapacity,
        ),
        (
            "rk3588",
            rk3588(),
            [
                vec![4, 5, 6, 7],
                vec![0, 1, 2, 3],
                vec![4, 5, 6, 7, 0, 1, 2, 3],
            ],
            CapacitySource::CpuCapacity,
        ),
        (
            "phone",
            phone(),
            [
                vec![7, 4, 5, 6],
                vec![0, 1, 2, 3],
                vec![7, 4, 5, 6, 0, 1, 2, 3],
            ],
            CapacitySource::CpuCapacity,
        ),
        (
            "intel",
            intel_hybrid(),
            [(0..8).collect(), (8..16).collect(), (0..16).collect()],
            CapacitySource::MaxFreq,
        ),
        (
            "container",
            container(),
            [vec![0, 1, 2, 3], vec![0, 1, 2, 3], vec![0, 1, 2, 3]],
            CapacitySource::Unknown,
        ),
    ];
    for (name, cpus, [big, little, all], source) in cases {
        let root = tree(name, &cpus);
        assert_eq!(Topology::read(&root).source(), source, "{name}");
        assert_eq!(choose(&root, "big"), big, "{name}: big");
        assert_eq!(choose(&root, "little"), little, "{name}: little");
        assert_eq!(choose(&root, "all"), all, "{name}: all");
        assert_eq!(
            choose(&root, "2,0"),
            vec![2, 0],
            "{name}: a list keeps its order"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}

#[test]
fn bad_policies_and_lists_are_named() {
    let root = tree("bad", &rk3588());
    let topo = Topology::read(&root);
    for (s, needle) in [
        ("biggest", "unknown cores 'biggest'"),
        ("", "unknown cores ''"),
        ("4-", "'' in '4-' is not a CPU number"),
        ("7-4", "descending range"),
        ("1,1", "CPU 1 appears twice"),
        ("x,1", "unknown cores"),
        ("99999", "not a CPU number"),
    ] {
        let e = Cores::parse(s).unwrap_err();
        assert!(e.contains(needle), "{s:?}: {e}");
    }
    let e = topo.choose(&Cores::parse("4-9").unwrap()).unwrap_err();
    assert!(
        e.contains("CPU 8 is not an online CPU") && e.contains("0-7"),
        "{e}"
    );
    assert!(topo
        .choose(&Cores::List(vec![]))
        .unwrap_err()
        .contains("empty"));
    let _ = std::fs::remove_dir_all(&root);
}

/// Missing, empty, huge or garbage sysfs files never panic and never make a CPU vanish:
/// the CPUs fall back to equal, or to the frequencies.
#[test]
fn sysfs_garbage_makes_cores_equal_never_a_panic() {
    let garbage: [&[u8]; 9] = [
        b"",
        b"\n",
        b"-5\n",
        b"18446744073709551616\n",
        b"1024 2048\n",
        b"\xff\xfe\x00garbage",
        b"0x400\n",
        b"nan\n",
        &[b'9'; 10000],
    ];
    let mut rng = 0x2545f4914f6cdd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..200 {
        let root = tree("garbage", &rk3588());
        let dir = root.join("devices/system/cpu");
        // Spoil a few files of the tree (or the CPU list itself), or delete them.
        for _ in 0..(1 + next() % 6) {
            let cpu = next() % 8;
            let file = match next() % 5 {
                0 => "online".to_string(),
                1 => format!("cpu{cpu}/cpu_capacity"),
                2 => format!("cpu{cpu}/cpufreq/cpuinfo_max_freq"),
                3 => format!("cpu{cpu}/topology/cluster_id"),
                _ => format!("cpu{cpu}/topology"),
            };
            let p = dir.join(&file);
            if next() % 3 == 0 {
                let _ = std::fs::remove_file(&p);
                let _ = std::fs::remove_dir_all(&p);
            } else if p.is_file() {
                std::fs::write(&p, garbage[(next() % 9) as usize]).unwrap();
            }
        }
        let topo = Topology::read(&root);
        assert!(!topo.cpus().is_empty(), "round {round}");
        for policy in ["big", "little", "all"] {
            let chosen = topo.choose(&Cores::parse(policy).unwrap()).unwrap();
            assert!(!chosen.is_empty(), "round {round}: {policy} chose nothing");
        }
        let _ = std::fs::remove_dir_all(&root);
    }
    // No tree at all: the machine's CPU count, equal.
    let topo = Topology::read(Path::new("/nonexistent/sysfs"));
    let n = std::thread::available_parallelism().unwrap().get();
    assert_eq!(topo.cpus().len(), n);
    assert_eq!(topo.source(), CapacitySource::Unknown);
}

fn network() -> Network {
    let cfg = ArchConfig::preset("quadranet25-xxs").unwrap();
    let len = cfg.arch().weights_len();
    let w = OwnedWeights {
        vecs: vec![1.0; len.vecs].into(),
        mats: OwnedMats::F32(vec![0.01; len.mats].into()),
    };
    Network::new(cfg, w).unwrap()
}

/// Each worker checks, from inside, that it runs pinned to its core; with a fake tree that
/// names CPUs this machine lacks, pinning falls back to unpinned with a note, and the
/// network still runs. (One test: it sets QUADRA_SYSFS_ROOT, which the others must not see.)
#[test]
fn workers_are_pinned_to_their_cores_or_fall_back_with_a_note() {
    let Some(mine) = current_affinity() else {
        eprintln!("no sched_getaffinity on this OS: nothing to check");
        return;
    };
    if mine.len() >= 2 {
        let cores = vec![mine[1], mine[0]];
        let net = network()
            .with_cores(Cores::List(cores.clone()))
            .unwrap()
            .with_threads(0)
            .unwrap();
        assert_eq!(net.threads(), 2);
        assert_eq!(net.cores(), &cores[..]);
        // Each task records the thread that ran it and that thread's affinity. Task 1 is
        // worker 1's unless the worker comes late (then the caller runs it): the tasks
        // take a few milliseconds, and runs repeat until worker 1 has run one.
        let worker = net
            .with_executor(|exec| {
                for _ in 0..200 {
                    let mut t = vec![(None, None); 2];
                    quadra_core::Executor::run(exec, &mut t, &|v| {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        let name = std::thread::current().name().map(str::to_string);
                        *v = (name, current_affinity());
                    });
                    let w = t
                        .into_iter()
                        .find(|(n, _)| n.as_deref() == Some("quadra-1"));
                    if let Some((_, affinity)) = w {
                        return Some(affinity);
                    }
                }
                None
            })
            .unwrap()
            .expect("worker 1 ran a task in 200 runs");
        assert_eq!(worker.as_deref(), Some(&cores[1..2]), "worker 1's affinity");
        assert!(
            net.describe().contains("workers pinned"),
            "{}",
            net.describe()
        );
        let s = Session::new(&net, 64, 64, 1).unwrap();
        assert!(s.pinned() && s.cores() == &cores[..], "{}", s.describe());
    }
    // A fake RK3588 on this machine: `big` is CPUs 4-7, which (on a 2-core machine) do
    // not exist: pinning fails, the workers run unpinned, and the run works.
    let root = tree("pin-fallback", &rk3588());
    std::env::set_var(SYSFS_ROOT_ENV, &root);
    let net = network().with_threads(0).unwrap();
    std::env::remove_var(SYSFS_ROOT_ENV);
    assert_eq!(net.cores(), &[4, 5, 6, 7]);
    let mut s = Session::new(&net, 64, 64, 1).unwrap();
    let d = s.describe();
    if mine.iter().all(|&c| c < 4) {
        assert!(
            !s.pinned() && d.contains("not pinned") && d.contains("CPU"),
            "{d}"
        );
    }
    let x = vec![0.5f32; s.input_len()];
    assert!(s
        .run(&x, quadra_cpu::Layout::Nchw)
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
    let _ = std::fs::remove_dir_all(&root);
}
