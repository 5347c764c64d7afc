//! The machine's cores as Linux and Android describe them, and which of them a network
//! runs on.
//!
//! Phones and boards have unequal cores: an RK3588 has four Cortex-A76 and four Cortex-A55,
//! a Snapdragon 8-class phone one prime, three big and four little cores, an Intel laptop
//! P and E cores. [`Topology::detect`] reads each online CPU's capacity from sysfs
//! (`cpu_capacity`, 0-1024, where the kernel has it; else `cpufreq/cpuinfo_max_freq`) and
//! its `topology/cluster_id` and `package_id`; CPUs of equal capacity form a class, and the
//! classes are ordered fastest first. Where nothing is readable (a container, another OS)
//! all cores are equal.
//!
//! [`Cores`] picks the cores a network's threads run on: `big` (the default) is every core
//! but the slowest class (all cores when they are equal), `little` the slowest class,
//! `all`, or an explicit list. Workers are pinned to their cores (`sched_setaffinity`);
//! a failure to pin leaves them unpinned and says so, never an error.
//!
//! Everything is read below one root, `/sys` unless `QUADRA_SYSFS_ROOT` names another (a
//! testing aid: the tests point it at fake trees of real devices).
//!
//! ```no_run
//! use quadra_cpu::{cores::Cores, Network, Session};
//! let net = Network::load("m.qnet")?.with_cores(Cores::parse("big")?)?.with_threads(0)?;
//! let s = Session::new(&net, 224, 224, 1)?;
//! println!("{}", s.describe()); // "... 4 threads on cores 4-7 (big), capacity bands, workers pinned"
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

/// Environment variable naming another root for the sysfs tree (testing aid).
pub const SYSFS_ROOT_ENV: &str = "QUADRA_SYSFS_ROOT";

/// Most CPUs read from a topology (ids at or above are ignored).
pub const MAX_CPUS: usize = 1024;

/// One online CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// The CPU number (`cpuN`).
    pub id: usize,
    /// Relative speed: `cpu_capacity` (0-1024) where the kernel gives it, else the
    /// maximum frequency in kHz, else 1 (all equal).
    pub capacity: u64,
    /// `topology/cluster_id` (-1 if unknown).
    pub cluster: i64,
    /// `topology/physical_package_id` (-1 if unknown).
    pub package: i64,
}

/// Where the capacities came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapacitySource {
    /// `cpuN/cpu_capacity` (arm64, some x86 hybrids).
    CpuCapacity,
    /// `cpuN/cpufreq/cpuinfo_max_freq`.
    MaxFreq,
    /// Nothing readable: all cores equal.
    Unknown,
}

/// The online CPUs, fastest first (ties by id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    cpus: Vec<Cpu>,
    source: CapacitySource,
}

/// Which cores a network's threads run on (`--cores big|little|all|LIST`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cores {
    /// Every core but the slowest class; all cores when they are equal (the default).
    #[default]
    Big,
    /// The slowest class only.
    Little,
    /// Every online core.
    All,
    /// These CPU ids, in this order.
    List(Vec<usize>),
}

/// How a layer's rows are split among the threads (`--bands auto|even|capacity|measured`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bands {
    /// `measured` on `--cores all` (where cores differ most), `capacity` otherwise (the
    /// default).
    #[default]
    Auto,
    /// Equal bands.
    Even,
    /// In proportion to each thread's core capacity (equal bands on equal cores).
    Capacity,
    /// Start from the capacities, then follow each thread's measured speed: after every
    /// forward pass, bands move towards equal finishing times.
    Measured,
}

impl Bands {
    /// Parses `auto`, `even`, `capacity` or `measured`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Bands::Auto),
            "even" => Ok(Bands::Even),
            "capacity" => Ok(Bands::Capacity),
            "measured" => Ok(Bands::Measured),
            other => Err(format!(
                "unknown band split '{other}': use auto, even, capacity or measured"
            )),
        }
    }

    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            Bands::Auto => "auto",
            Bands::Even => "even",
            Bands::Capacity => "capacity",
            Bands::Measured => "measured",
        }
    }
}

/// Reads a small sysfs file as a trimmed string (`None`: missing, unreadable, not UTF-8).
fn read(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut s = String::new();
    // Sysfs values are a line; a larger file is not one.
    std::fs::File::open(path)
        .ok()?
        .take(4096)
        .read_to_string(&mut s)
        .ok()?;
    Some(s.trim().to_string())
}

fn read_num(path: &Path) -> Option<u64> {
    read(path)?.parse().ok()
}

fn read_signed(path: &Path) -> Option<i64> {
    read(path)?.parse().ok()
}

/// Parses a CPU list such as `0-3,5,7-8` (sysfs's `online`, or `--cores`). Errors name the
/// part that is wrong.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    if s.trim().is_empty() {
        return Err("an empty CPU list".into());
    }
    for part in s.trim().split(',') {
        let part = part.trim();
        let num = |t: &str| {
            t.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n < MAX_CPUS)
                .ok_or_else(|| {
                    format!("'{t}' in '{s}' is not a CPU number (0 to {})", MAX_CPUS - 1)
                })
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("'{part}' in '{s}' is a descending range"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(d) = out.iter().find(|&&c| !seen.insert(c)) {
        return Err(format!("CPU {d} appears twice in '{s}'"));
    }
    Ok(out)
}

impl Topology {
    /// The machine's topology, read below `$QUADRA_SYSFS_ROOT` or `/sys`.
    pub fn detect() -> Self {
        let root = std::env::var_os(SYSFS_ROOT_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("/sys"), PathBuf::from);
        Self::read(&root)
    }

    /// The topology read below `root` (a sysfs tree). Never fails: missing, empty or
    /// garbage files make the CPUs equal, and no readable CPU list gives
    /// `available_parallelism` equal CPUs.
    pub fn read(root: &Path) -> Self {
        let dir = root.join("devices/system/cpu");
        let ids = read(&dir.join("online"))
            .and_then(|s| parse_cpu_list(&s).ok())
            .filter(|ids| !ids.is_empty())
            .unwrap_or_else(|| {
                let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                (0..n.min(MAX_CPUS)).collect()
            });
        let cap = |id: usize, f: &str| read_num(&dir.join(format!("cpu{id}")).join(f));
        let caps: Vec<Option<u64>> = ids.iter().map(|&i| cap(i, "cpu_capacity")).collect();
        let freqs: Vec<Option<u64>> = ids
            .iter()
            .map(|&i| cap(i, "cpufreq/cpuinfo_max_freq"))
            .collect();
        let all = |v: &[Option<u64>]| v.iter().all(|c| c.is_some_and(|c| c > 0));
        let (source, capacity): (_, Vec<u64>) = if all(&caps) {
            (
                CapacitySource::CpuCapacity,
                caps.iter().flatten().copied().collect(),
            )
        } else if all(&freqs) {
            (
                CapacitySource::MaxFreq,
                freqs.iter().flatten().copied().collect(),
            )
        } else {
            (CapacitySource::Unknown, vec![1; ids.len()])
        };
        let mut cpus: Vec<Cpu> = ids
            .iter()
            .zip(capacity)
            .map(|(&id, capacity)| {
                let t = dir.join(format!("cpu{id}/topology"));
                Cpu {
                    id,
                    capacity,
                    cluster: read_signed(&t.join("cluster_id")).unwrap_or(-1),
                    package: read_signed(&t.join("physical_package_id")).unwrap_or(-1),
                }
            })
            .collect();
        cpus.sort_by(|a, b| b.capacity.cmp(&a.capacity).then(a.id.cmp(&b.id)));
        Topology { cpus, source }
    }

    /// A topology of `n` equal CPUs `0..n` (no sysfs).
    pub fn equal(n: usize) -> Self {
        Topology {
            cpus: (0..n.max(1))
                .map(|id| Cpu {
                    id,
                    capacity: 1,
                    cluster: -1,
                    package: -1,
                })
                .collect(),
            source: CapacitySource::Unknown,
        }
    }

    /// The online CPUs, fastest first.
    pub fn cpus(&self) -> &[Cpu] {
        &self.cpus
    }

    /// Where the capacities came from.
    pub fn source(&self) -> CapacitySource {
        self.source
    }

    /// The capacity classes (CPUs of equal capacity), fastest first, each by id.
    pub fn classes(&self) -> Vec<Vec<usize>> {
        let mut out: Vec<(u64, Vec<usize>)> = Vec::new();
        for c in &self.cpus {
            match out.last_mut() {
                Some((cap, ids)) if *cap == c.capacity => ids.push(c.id),
                _ => out.push((c.capacity, vec![c.id])),
            }
        }
        out.into_iter().map(|(_, ids)| ids).collect()
    }

    /// The capacity of CPU `id` (`None`: not online).
    pub fn capacity(&self, id: usize) -> Option<u64> {
        self.cpus.iter().find(|c| c.id == id).map(|c| c.capacity)
    }

    /// The CPUs `policy` chooses, fastest first (a list keeps its order). An explicit list
    /// must name online CPUs, each once.
    pub fn choose(&self, policy: &Cores) -> Result<Vec<usize>, String> {
        let classes = self.classes();
        let flat = |c: &[Vec<usize>]| c.iter().flatten().copied().collect::<Vec<_>>();
        Ok(match policy {
            Cores::All => flat(&classes),
            Cores::Big if classes.len() > 1 => flat(&classes[..classes.len() - 1]),
            Cores::Big => flat(&classes),
            Cores::Little => classes.last().cloned().unwrap_or_default(),
            Cores::List(ids) => {
                if ids.is_empty() {
                    return Err("an empty CPU list".into());
                }
                let online: Vec<usize> = {
                    let mut v: Vec<usize> = self.cpus.iter().map(|c| c.id).collect();
                    v.sort_unstable();
                    v
                };
                let mut seen = std::collections::BTreeSet::new();
                for &id in ids {
                    if !online.contains(&id) {
                        return Err(format!(
                            "CPU {id} is not an online CPU of this machine (online: {})",
                            format_cpu_list(&online)
                        ));
                    }
                    if !seen.insert(id) {
                        return Err(format!("CPU {id} appears twice in the list"));
                    }
                }
                ids.clone()
            }
        })
    }
}

/// `0-3,5` for `[0, 1, 2, 3, 5]`.
pub fn format_cpu_list(ids: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        parts.push(if j > i {
            format!("{}-{}", ids[i], ids[j])
        } else {
            ids[i].to_string()
        });
        i = j + 1;
    }
    parts.join(",")
}

impl Cores {
    /// Parses `big`, `little`, `all` or a CPU list (`4-7`, `0,2,5`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "big" => Ok(Cores::Big),
            "little" => Ok(Cores::Little),
            "all" => Ok(Cores::All),
            list if list.starts_with(|c: char| c.is_ascii_digit()) => {
                parse_cpu_list(list).map(Cores::List)
            }
            other => Err(format!(
                "unknown cores '{other}': use big, little, all or a CPU list such as 4-7 or 0,2,5"
            )),
        }
    }

    /// The form `parse` takes.
    pub fn name(&self) -> String {
        match self {
            Cores::Big => "big".into(),
            Cores::Little => "little".into(),
            Cores::All => "all".into(),
            Cores::List(ids) => ids
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// The cores a gang runs on: thread `i` is meant for `cores[i]` (thread 0, the caller,
/// runs wherever it is; workers are pinned), with the core's capacity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) cores: Vec<usize>,
    pub(crate) capacity: Vec<u64>,
    pub(crate) bands: Bands,
    /// Whether workers should be pinned (false when there are more threads than cores).
    pub(crate) pin: bool,
}

impl Placement {
    /// `threads` threads (0: one per chosen core) on the cores `policy` chooses.
    pub(crate) fn new(
        topo: &Topology,
        policy: &Cores,
        threads: usize,
        bands: Bands,
    ) -> Result<Self, String> {
        let mut chosen = topo.choose(policy)?;
        if chosen.is_empty() {
            return Err(format!("the cores '{}' name no CPU", policy.name()));
        }
        // Thread 0 is the caller's, which is not pinned: leave it the core it runs on now
        // (when that core is chosen), so no worker is pinned beside it. A list keeps the
        // order it was given.
        if !matches!(policy, Cores::List(_)) {
            if let Some(pos) = current_cpu().and_then(|c| chosen.iter().position(|&x| x == c)) {
                let here = chosen.remove(pos);
                chosen.insert(0, here);
            }
        }
        let threads = if threads == 0 {
            chosen.len().min(crate::MAX_THREADS)
        } else {
            threads
        };
        let cores: Vec<usize> = (0..threads).map(|i| chosen[i % chosen.len()]).collect();
        let capacity = cores
            .iter()
            .map(|&c| topo.capacity(c).unwrap_or(1))
            .collect();
        let bands = match (bands, policy) {
            (Bands::Auto, Cores::All) => Bands::Measured,
            (Bands::Auto, _) => Bands::Capacity,
            (b, _) => b,
        };
        Ok(Placement {
            cores,
            capacity,
            bands,
            pin: threads <= chosen.len(),
        })
    }

    /// One thread, nowhere in particular.
    pub(crate) fn single() -> Self {
        Placement {
            cores: vec![0],
            capacity: vec![1],
            bands: Bands::Even,
            pin: false,
        }
    }

    pub(crate) fn threads(&self) -> usize {
        self.cores.len()
    }

    /// The starting band weights: capacities scaled to about 1024 for the fastest, or
    /// equal.
    pub(crate) fn weights(&self) -> Vec<u32> {
        let max = self.capacity.iter().copied().max().unwrap_or(1).max(1);
        self.capacity
            .iter()
            .map(|&c| match self.bands {
                Bands::Even => 1024,
                _ => ((c.max(1) as u128 * 1024 / max as u128) as u32).max(1),
            })
            .collect()
    }
}

/// Pins the calling thread to CPU `cpu`; the error says why not.
pub(crate) fn pin_to(cpu: usize) -> Result<(), String> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(format!("CPU {cpu} is beyond the affinity mask"));
        }
        // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes bit `cpu` inside it
        // (checked above); sched_setaffinity reads `size_of::<cpu_set_t>()` bytes of it.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(format!(
                "sched_setaffinity(CPU {cpu}): {}",
                std::io::Error::last_os_error()
            ))
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = cpu;
        Err("pinning threads is not supported on this OS".into())
    }
}

/// The CPU the calling thread runs on now (Linux and Android; `None` elsewhere).
pub fn current_cpu() -> Option<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: sched_getcpu takes nothing and returns a CPU number or -1.
        let c = unsafe { libc::sched_getcpu() };
        usize::try_from(c).ok()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    None
}

/// The CPUs the calling thread may run on (Linux and Android; `None` elsewhere).
pub fn current_affinity() -> Option<Vec<usize>> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: sched_getaffinity writes at most `size_of::<cpu_set_t>()` bytes into the
        // zeroed set; CPU_ISSET reads bits inside it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return None;
            }
            Some(
                (0..libc::CPU_SETSIZE as usize)
                    .filter(|&c| libc::CPU_ISSET(c, &set))
                    .collect(),
            )
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    None
}
