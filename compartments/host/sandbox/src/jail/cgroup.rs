//! Cgroup limits of a compartment: memory, CPU and tasks, applied by the
//! daemon (root) to a VMM process it started.
//!
//! `cgroup_limit(name, pid, limits)` makes `<cgroup v2>/ward/<name>`
//! (`/sys/fs/cgroup/ward/<name>` on a host with only cgroup v2), enables the
//! controllers it needs in the parents' `cgroup.subtree_control`, writes
//! `memory.max`, `memory.swap.max = 0` (when swap is accounted), `cpu.max`
//! and `pids.max`, then moves the pid in. Children inherit their parent's
//! cgroup at fork, so the pid must be moved before the VMM forks into its
//! PID namespace (see the `jail` module documentation).
//!
//! **Hosts that allow less.** Each controller is looked for in cgroup v2
//! first (listed in the v2 root's `cgroup.controllers`), then in a cgroup
//! v1 hierarchy that mounts it (found in `/proc/self/mountinfo`), for the
//! "hybrid" layout older systemd and some VM images use, where `memory`,
//! `cpu` and `pids` are bound to v1 and the v2 tree at
//! `/sys/fs/cgroup/unified` has none of them. In v1 the same limits are
//! `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`, equal to it,
//! so no swap), `cpu.cfs_quota_us`/`cpu.cfs_period_us` and `pids.max`, in
//! `<v1 mount>/ward/<name>` of each hierarchy. A controller found in
//! neither is a `Measure` marked missing, with the reason; a host with no
//! cgroup file system at all is `JailError::CgroupUnavailable`. Limits that
//! cannot be written are reported; failing to move the pid is an error
//! (the group would limit nothing).
//!
//! A cgroup outlives its `Cgroup` value (a restarted daemon finds it with
//! `Cgroup::open`); `Cgroup::remove` deletes it once its processes are gone.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::JailError;
use super::report::Measure;

/// The directory under each hierarchy's root that holds compartments.
pub const PARENT: &str = "ward";

/// Memory a compartment's cgroup is allowed besides guest RAM: the VMM's
/// resident memory (about 12 MiB measured), the page tables KVM allocates
/// for the guest (charged to the VMM's cgroup), and page cache of the
/// VMM's disk and log I/O (reclaimed before the limit is hit).
pub const MEMORY_OVERHEAD: u64 = 128 << 20;

/// The length of a CPU period, in µs (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Cgroup limits of one compartment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupLimits {
    /// `memory.max` (v1: `memory.limit_in_bytes`), bytes. The kernel rounds
    /// it down to whole pages. Swap is limited to 0.
    pub memory_max: u64,
    /// `cpu.max`; `None`: no CPU limit (the controller is not used).
    pub cpu: Option<CpuMax>,
    /// `pids.max`: tasks (threads included) in the group.
    pub pids_max: u64,
}

/// A CPU bandwidth limit: `quota_us` of CPU time every `period_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuMax {
    /// CPU time per period, µs (`period_us` is one CPU).
    pub quota_us: u64,
    /// The period, µs.
    pub period_us: u64,
}

impl CgroupLimits {
    /// Limits for a compartment with `memory` bytes of guest RAM and one
    /// vCPU: its memory plus `MEMORY_OVERHEAD`, one CPU's worth of time,
    /// and `limits::DEFAULT_THREADS` tasks.
    pub fn for_guest(memory: u64) -> Self {
        Self {
            memory_max: memory.saturating_add(MEMORY_OVERHEAD),
            cpu: Some(CpuMax { quota_us: CPU_PERIOD_US, period_us: CPU_PERIOD_US }),
            pids_max: super::limits::DEFAULT_THREADS,
        }
    }
}

/// A resource controller the jail uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Controller {
    /// `memory`.
    Memory,
    /// `cpu`.
    Cpu,
    /// `pids`.
    Pids,
}

impl Controller {
    /// Every controller the jail uses.
    pub const ALL: [Controller; 3] = [Controller::Memory, Controller::Cpu, Controller::Pids];

    /// The kernel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }

    /// The report's name for its limit.
    pub fn measure_name(self) -> &'static str {
        match self {
            Controller::Memory => "cgroup memory",
            Controller::Cpu => "cgroup cpu",
            Controller::Pids => "cgroup pids",
        }
    }
}

/// Where this host offers a controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControllerSupport {
    /// In cgroup v2, mounted here.
    V2(PathBuf),
    /// In a cgroup v1 hierarchy mounted here.
    V1(PathBuf),
    /// Nowhere, and why.
    Missing(String),
}

/// The cgroup file systems this process sees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupHost {
    /// The cgroup v2 mount, and the controllers its root offers
    /// (`cgroup.controllers`).
    pub v2: Option<(PathBuf, Vec<String>)>,
    /// Each cgroup v1 mount and the controllers it holds.
    pub v1: Vec<(PathBuf, Vec<String>)>,
}

impl CgroupHost {
    /// Reads `/proc/self/mountinfo`, and the v2 root's `cgroup.controllers`.
    pub fn detect() -> Result<Self, JailError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(path).map_err(|source| io_error("read", path, source))?;
        Ok(Self::from_mountinfo(&text, |mount| fs::read_to_string(mount.join("cgroup.controllers")).ok()))
    }

    /// Parses `mountinfo` text; `controllers_of` reads a v2 mount's
    /// `cgroup.controllers`.
    pub(super) fn from_mountinfo(text: &str, controllers_of: impl Fn(&Path) -> Option<String>) -> Self {
        let mut host = CgroupHost::default();
        for line in text.lines() {
            let Some((mount_point, fstype, options)) = parse_mountinfo_line(line) else { continue };
            match fstype {
                "cgroup2" if host.v2.is_none() => {
                    let controllers = controllers_of(&mount_point)
                        .map(|c| c.split_whitespace().map(str::to_owned).collect())
                        .unwrap_or_default();
                    host.v2 = Some((mount_point, controllers));
                }
                "cgroup" => {
                    let controllers: Vec<String> = options
                        .split(',')
                        .filter(|o| Controller::ALL.iter().any(|c| c.name() == *o))
                        .map(str::to_owned)
                        .collect();
                    let known = host.v1.iter().any(|(_, c)| c.iter().any(|x| controllers.contains(x)));
                    if !controllers.is_empty() && !known {
                        host.v1.push((mount_point, controllers));
                    }
                }
                _ => {}
            }
        }
        host
    }

    /// Where `controller` can be used: v2 first, then v1.
    pub fn support(&self, controller: Controller) -> ControllerSupport {
        let name = controller.name();
        if let Some((mount, controllers)) = &self.v2
            && controllers.iter().any(|c| c == name)
        {
            return ControllerSupport::V2(mount.clone());
        }
        if let Some((mount, _)) = self.v1.iter().find(|(_, c)| c.iter().any(|x| x == name)) {
            return ControllerSupport::V1(mount.clone());
        }
        ControllerSupport::Missing(match &self.v2 {
            Some((mount, c)) => format!(
                "not offered by cgroup v2 at {} (cgroup.controllers: {:?}) and no cgroup v1 hierarchy mounts it",
                mount.display(),
                c.join(" ")
            ),
            None if self.v1.is_empty() => "no cgroup file system is mounted".to_owned(),
            None => "no cgroup v2 is mounted and no cgroup v1 hierarchy mounts it".to_owned(),
        })
    }

    /// Whether any cgroup file system is mounted.
    pub fn any(&self) -> bool {
        self.v2.is_some() || !self.v1.is_empty()
    }
}

/// The mount point, file system type and super options of a mountinfo
/// line (`proc(5)`), mount point unescaped.
fn parse_mountinfo_line(line: &str) -> Option<(PathBuf, &str, &str)> {
    let (before, after) = line.split_once(" - ")?;
    let mount_point = before.split(' ').nth(4)?;
    let mut after = after.split(' ');
    let fstype = after.next()?;
    let _source = after.next()?;
    let options = after.next().unwrap_or("");
    Some((PathBuf::from(unescape_octal(mount_point)), fstype, options))
}

/// Undoes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            out.push(digits.iter().fold(0u8, |acc, d| acc.wrapping_mul(8).wrapping_add(d - b'0')));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which cgroup version a directory belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// One directory of the compartment's cgroup, in one hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Dir {
    /// `<mount>/ward/<name>`.
    path: PathBuf,
    /// The hierarchy's mount point.
    mount: PathBuf,
    version: Version,
    /// The controllers limited through it (none: a v2 group used only to
    /// keep the compartment's processes together).
    controllers: Vec<Controller>,
}

/// A compartment's cgroup: one directory per hierarchy it uses.
#[derive(Clone, Debug)]
pub struct Cgroup {
    name: String,
    dirs: Vec<Dir>,
    report: Vec<Measure>,
}

/// Makes the cgroup `name` with `limits` and moves `pid` into it. Limits
/// that cannot be applied are in `Cgroup::report`; see the module
/// documentation.
pub fn cgroup_limit(name: &str, pid: u32, limits: &CgroupLimits) -> Result<Cgroup, JailError> {
    let cgroup = Cgroup::create(name, limits)?;
    if let Err(e) = cgroup.add(pid) {
        // Best effort: a group this call made and could not use is removed.
        let _ = cgroup.clone().remove();
        return Err(e);
    }
    Ok(cgroup)
}

impl Cgroup {
    /// Makes the cgroup `name` (or reuses it if it exists) and writes
    /// `limits`, without moving any process into it.
    pub fn create(name: &str, limits: &CgroupLimits) -> Result<Self, JailError> {
        let host = CgroupHost::detect()?;
        Self::create_on(&host, name, limits)
    }

    /// `create` on a given view of the host's hierarchies.
    fn create_on(host: &CgroupHost, name: &str, limits: &CgroupLimits) -> Result<Self, JailError> {
        check_name(name)?;
        let mut report = Vec::new();
        let wanted: Vec<Controller> =
            Controller::ALL.into_iter().filter(|c| *c != Controller::Cpu || limits.cpu.is_some()).collect();
        let mut dirs = plan(host, name, &wanted, &mut report);
        if dirs.is_empty() {
            return Err(JailError::CgroupUnavailable(reasons(&report, host)));
        }
        let mut made = Vec::new();
        for mut dir in dirs.drain(..) {
            match make_dir(&mut dir, &mut report) {
                Ok(()) => {
                    for &controller in &dir.controllers {
                        report.push(write_limit(&dir, controller, limits));
                    }
                    made.push(dir);
                }
                Err(reason) => {
                    for &controller in &dir.controllers {
                        report.push(Measure::missing(controller.measure_name(), reason.clone()));
                    }
                    if dir.controllers.is_empty() {
                        report.push(Measure::missing("cgroup group", reason));
                    }
                }
            }
        }
        if made.is_empty() {
            return Err(JailError::CgroupUnavailable(reasons(&report, host)));
        }
        Ok(Self { name: name.to_owned(), dirs: made, report })
    }

    /// The compartment cgroup `name` as it exists now (after a daemon
    /// restart, to remove it): every hierarchy's directory that exists.
    pub fn open(name: &str) -> Result<Self, JailError> {
        check_name(name)?;
        let host = CgroupHost::detect()?;
        // What is missing on this host was reported when it was made.
        let mut not_reported = Vec::new();
        let dirs =
            plan(&host, name, &Controller::ALL, &mut not_reported).into_iter().filter(|d| d.path.is_dir()).collect();
        Ok(Self { name: name.to_owned(), dirs, report: Vec::new() })
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What was applied and what was not, one entry per controller.
    pub fn report(&self) -> &[Measure] {
        &self.report
    }

    /// The directories, one per hierarchy.
    pub fn paths(&self) -> Vec<&Path> {
        self.dirs.iter().map(|d| d.path.as_path()).collect()
    }

    /// Moves `pid` (and its threads) into every directory of the group.
    pub fn add(&self, pid: u32) -> Result<(), JailError> {
        for dir in &self.dirs {
            write_file(&dir.path.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Whether `pid` is in every directory of the group (`cgroup.procs`).
    pub fn contains(&self, pid: u32) -> bool {
        let wanted = pid.to_string();
        !self.dirs.is_empty()
            && self
                .dirs
                .iter()
                .all(|d| fs::read_to_string(d.path.join("cgroup.procs")).is_ok_and(|t| t.lines().any(|l| l == wanted)))
    }

    /// The memory limit in force, read back (page-rounded by the kernel);
    /// `None` if the group has no memory controller, `u64::MAX` for none.
    pub fn memory_max(&self) -> Result<Option<u64>, JailError> {
        let Some(dir) = self.dirs.iter().find(|d| d.controllers.contains(&Controller::Memory)) else {
            return Ok(None);
        };
        let file = match dir.version {
            Version::V2 => "memory.max",
            Version::V1 => "memory.limit_in_bytes",
        };
        let path = dir.path.join(file);
        let text = fs::read_to_string(&path).map_err(|source| io_error("read", &path, source))?;
        let text = text.trim();
        if text == "max" {
            return Ok(Some(u64::MAX));
        }
        text.parse().map(Some).map_err(|_| {
            io_error("parse", &path, io::Error::new(io::ErrorKind::InvalidData, format!("{text:?} is not a number")))
        })
    }

    /// Has the process `command` starts join this group before it runs a
    /// single instruction of its own. A process that cannot join does not
    /// start: its starter must not believe a process limited that is not.
    pub fn join_before_exec(&self, command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let procs: Vec<std::ffi::CString> = self
            .paths()
            .iter()
            .filter_map(|dir| {
                std::ffi::CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok()
            })
            .collect();
        // SAFETY: runs in the forked child before exec; it only calls
        // open/write/close (async-signal-safe) on paths allocated before the
        // fork, and allocates nothing (an OS error is a plain code).
        unsafe {
            command.pre_exec(move || {
                for path in &procs {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let written = libc::write(fd, c"0".as_ptr().cast(), 1);
                    let error = if written < 0 {
                        std::io::Error::last_os_error()
                    } else {
                        std::io::Error::from_raw_os_error(libc::EIO)
                    };
                    libc::close(fd);
                    if written != 1 {
                        return Err(error);
                    }
                }
                Ok(())
            });
        }
    }

    /// Removes every directory of the group. The processes must be gone
    /// (a cgroup with processes cannot be removed); a process that just
    /// exited may take a moment to leave, so `EBUSY` is retried briefly.
    pub fn remove(self) -> Result<(), JailError> {
        let mut first_error = None;
        for dir in &self.dirs {
            if let Err(e) = remove_dir(&dir.path) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// A cgroup name is spelled as a compartment name (a safe directory
/// name), alone or after a daemon's slot number and a dot (`3.mail`: see
/// `ward_host::daemon::slot`).
fn check_name(name: &str) -> Result<(), JailError> {
    let bad = |reason: String| JailError::CgroupName { name: name.to_owned(), reason };
    let compartment = match name.split_once('.') {
        Some((slot, compartment)) => {
            if slot.is_empty() || slot.len() > 4 || !slot.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("{slot:?} is not a slot number")));
            }
            compartment
        }
        None => name,
    };
    let safe = !compartment.is_empty()
        && compartment.len() <= 63
        && compartment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !compartment.starts_with('-')
        && !compartment.ends_with('-');
    if !safe {
        return Err(bad(format!("{compartment:?} is not a compartment name (a-z, 0-9, '-')")));
    }
    Ok(())
}

/// The directories to use for `wanted` on `host`: the v2 group (always,
/// if v2 is mounted, so the compartment's processes stay together) and a
/// v1 directory per v1 hierarchy. Controllers found nowhere are reported.
fn plan(host: &CgroupHost, name: &str, wanted: &[Controller], report: &mut Vec<Measure>) -> Vec<Dir> {
    let mut dirs: Vec<Dir> = Vec::new();
    if let Some((mount, _)) = &host.v2 {
        dirs.push(Dir {
            path: mount.join(PARENT).join(name),
            mount: mount.clone(),
            version: Version::V2,
            controllers: Vec::new(),
        });
    }
    for &controller in wanted {
        let (mount, version) = match host.support(controller) {
            ControllerSupport::V2(mount) => (mount, Version::V2),
            ControllerSupport::V1(mount) => (mount, Version::V1),
            ControllerSupport::Missing(reason) => {
                report.push(Measure::missing(controller.measure_name(), reason));
                continue;
            }
        };
        match dirs.iter_mut().find(|d| d.mount == mount) {
            Some(dir) => dir.controllers.push(controller),
            None => {
                dirs.push(Dir { path: mount.join(PARENT).join(name), mount, version, controllers: vec![controller] })
            }
        }
    }
    dirs
}

/// Why nothing could be done, from the report.
fn reasons(report: &[Measure], host: &CgroupHost) -> String {
    if !host.any() {
        return "no cgroup file system is mounted (cgroup v2 is expected at /sys/fs/cgroup)".to_owned();
    }
    let parts: Vec<String> =
        report.iter().filter(|m| !m.applied).map(|m| format!("{}: {}", m.name, m.detail)).collect();
    parts.join("; ")
}

/// Makes `<mount>/ward` (enabling the v2 controllers in it) and the
/// group's directory. A v2 controller that cannot be enabled is reported
/// and dropped from `dir`. Another daemon thread may remove an empty
/// `ward` between the two steps, so that race is retried.
fn make_dir(dir: &mut Dir, report: &mut Vec<Measure>) -> Result<(), String> {
    let parent = dir.mount.join(PARENT);
    for _attempt in 0..3 {
        mkdir(&parent)?;
        if dir.version == Version::V2 {
            let enabled = enable_controllers(&dir.mount, &parent, &dir.controllers, report);
            dir.controllers.retain(|c| enabled.contains(c));
        }
        match fs::create_dir(&dir.path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("mkdir {} failed: {e}", dir.path.display())),
        }
    }
    Err(format!("mkdir {} failed: {} kept disappearing", dir.path.display(), parent.display()))
}

/// `mkdir`, where an existing directory is fine.
fn mkdir(path: &Path) -> Result<(), String> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("mkdir {} failed: {e}", path.display())),
    }
}

/// Enables each controller in the v2 root's and in `ward`'s
/// `cgroup.subtree_control`; returns those enabled in both, reports the others.
fn enable_controllers(
    root: &Path,
    parent: &Path,
    controllers: &[Controller],
    report: &mut Vec<Measure>,
) -> Vec<Controller> {
    let mut enabled = Vec::new();
    'controllers: for &controller in controllers {
        for dir in [root, parent] {
            let file = dir.join("cgroup.subtree_control");
            if let Err(e) = fs::write(&file, format!("+{}", controller.name())) {
                let hint = if e.raw_os_error() == Some(libc::EBUSY) {
                    " (that cgroup holds processes: cgroup v2 lets only leaf cgroups hold processes)"
                } else {
                    ""
                };
                report.push(Measure::missing(
                    controller.measure_name(),
                    format!("writing +{} to {} failed: {e}{hint}", controller.name(), file.display()),
                ));
                continue 'controllers;
            }
        }
        enabled.push(controller);
    }
    enabled
}

/// Writes `controller`'s limits in `dir`, returning the measure.
fn write_limit(dir: &Dir, controller: Controller, limits: &CgroupLimits) -> Measure {
    let name = controller.measure_name();
    let result = match (controller, dir.version) {
        (Controller::Memory, Version::V2) => write_memory_v2(&dir.path, limits.memory_max),
        (Controller::Memory, Version::V1) => write_memory_v1(&dir.path, limits.memory_max),
        (Controller::Cpu, version) => match limits.cpu {
            Some(cpu) => write_cpu(&dir.path, version, cpu),
            None => Ok("no limit asked".to_owned()),
        },
        (Controller::Pids, _) => write_file(&dir.path.join("pids.max"), &limits.pids_max.to_string())
            .map(|()| format!("pids.max {} in {}", limits.pids_max, dir.path.display())),
    };
    match result {
        Ok(detail) => Measure::applied(name, detail),
        Err(e) => Measure::missing(name, e.to_string()),
    }
}

/// `memory.max`, and `memory.swap.max = 0` where swap is accounted.
fn write_memory_v2(dir: &Path, max: u64) -> Result<String, JailError> {
    write_file(&dir.join("memory.max"), &max.to_string())?;
    let swap = dir.join("memory.swap.max");
    let swap_note = if swap.exists() {
        write_file(&swap, "0")?;
        "memory.swap.max 0"
    } else {
        "no memory.swap.max (swap not accounted)"
    };
    Ok(format!("memory.max {max}, {swap_note} in {}", dir.display()))
}

/// v1: `memory.limit_in_bytes`, and `memory.memsw.limit_in_bytes` (memory
/// plus swap) equal to it, so no swap. The kernel requires memsw ≥ the
/// limit at every step, so memsw is lifted first, then both are set.
fn write_memory_v1(dir: &Path, max: u64) -> Result<String, JailError> {
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let has_memsw = memsw.exists();
    if has_memsw {
        write_file(&memsw, "-1")?;
    }
    write_file(&dir.join("memory.limit_in_bytes"), &max.to_string())?;
    let swap_note = if has_memsw {
        write_file(&memsw, &max.to_string())?;
        "memory.memsw.limit_in_bytes equal (no swap)"
    } else {
        "no memory.memsw (swap not accounted)"
    };
    Ok(format!("cgroup v1 memory.limit_in_bytes {max}, {swap_note} in {}", dir.display()))
}

/// `cpu.max`, or v1's `cpu.cfs_period_us` then `cpu.cfs_quota_us`.
fn write_cpu(dir: &Path, version: Version, cpu: CpuMax) -> Result<String, JailError> {
    match version {
        Version::V2 => {
            write_file(&dir.join("cpu.max"), &format!("{} {}", cpu.quota_us, cpu.period_us))?;
            Ok(format!("cpu.max {} {} in {}", cpu.quota_us, cpu.period_us, dir.display()))
        }
        Version::V1 => {
            write_file(&dir.join("cpu.cfs_period_us"), &cpu.period_us.to_string())?;
            write_file(&dir.join("cpu.cfs_quota_us"), &cpu.quota_us.to_string())?;
            Ok(format!("cgroup v1 cpu.cfs_quota_us {} per {} in {}", cpu.quota_us, cpu.period_us, dir.display()))
        }
    }
}

/// Writes `value` to a cgroup file.
fn write_file(path: &Path, value: &str) -> Result<(), JailError> {
    fs::write(path, value).map_err(|source| io_error(&format!("write {value} to"), path, source))
}

/// `rmdir`, retrying `EBUSY` for up to 200 ms; a missing directory is fine.
fn remove_dir(path: &Path) -> Result<(), JailError> {
    const ATTEMPTS: u32 = 40;
    for attempt in 1..=ATTEMPTS {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(source) => return Err(io_error("rmdir", path, source)),
        }
    }
    Ok(())
}

/// A `CgroupIo` error.
fn io_error(action: &str, path: &Path, source: io::Error) -> JailError {
    JailError::CgroupIo { action: action.to_owned(), path: path.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's layout: cgroup v1 controllers, v2 at
    /// /sys/fs/cgroup/unified with only hugetlb.
    const HYBRID: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A current systemd host: cgroup v2 only.
    const UNIFIED: &str = "\
25 1 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
";

    fn host(text: &str, v2_controllers: &str) -> CgroupHost {
        CgroupHost::from_mountinfo(text, |_| Some(v2_controllers.to_owned()))
    }

    #[test]
    fn hybrid_host_uses_v1_for_each_controller() {
        let h = host(HYBRID, "hugetlb\n");
        assert_eq!(h.v2, Some((PathBuf::from("/sys/fs/cgroup/unified"), vec!["hugetlb".to_owned()])));
        assert_eq!(h.support(Controller::Memory), ControllerSupport::V1("/sys/fs/cgroup/memory".into()));
        assert_eq!(h.support(Controller::Cpu), ControllerSupport::V1("/sys/fs/cgroup/cpu".into()));
        assert_eq!(h.support(Controller::Pids), ControllerSupport::V1("/sys/fs/cgroup/pids".into()));
    }

    #[test]
    fn unified_host_uses_v2() {
        let h = host(UNIFIED, "cpuset cpu io memory hugetlb pids rdma misc\n");
        assert!(h.v1.is_empty());
        for c in Controller::ALL {
            assert_eq!(h.support(c), ControllerSupport::V2("/sys/fs/cgroup".into()));
        }
    }

    #[test]
    fn controller_in_neither_is_missing_with_reason() {
        let h = host(UNIFIED, "cpu pids\n");
        match h.support(Controller::Memory) {
            ControllerSupport::Missing(reason) => assert!(reason.contains("cgroup.controllers: \"cpu pids\"")),
            other => panic!("expected Missing, got {other:?}"),
        }
    }

    #[test]
    fn no_cgroup_mounted_is_missing() {
        let h = host("22 27 0:21 / /proc rw,relatime - proc proc rw\n", "");
        assert!(!h.any());
        assert_eq!(h.support(Controller::Pids), ControllerSupport::Missing("no cgroup file system is mounted".into()));
    }

    #[test]
    fn v1_comounted_cpu_cpuacct_is_found() {
        let text = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let h = host(text, "");
        assert_eq!(h.support(Controller::Cpu), ControllerSupport::V1("/sys/fs/cgroup/cpu,cpuacct".into()));
    }

    #[test]
    fn mountinfo_optional_fields_and_escapes() {
        let line = "30 25 0:26 / /sys/fs/my\\040cgroup rw shared:9 master:1 - cgroup2 cgroup2 rw";
        let (mount, fstype, options) = parse_mountinfo_line(line).unwrap();
        assert_eq!(mount, PathBuf::from("/sys/fs/my cgroup"));
        assert_eq!(fstype, "cgroup2");
        assert_eq!(options, "rw");
    }

    #[test]
    fn plan_on_hybrid_host_has_a_v2_group_and_three_v1_dirs() {
        let h = host(HYBRID, "hugetlb\n");
        let mut report = Vec::new();
        let dirs = plan(&h, "mail", &Controller::ALL, &mut report);
        assert!(report.is_empty());
        let paths: Vec<_> = dirs.iter().map(|d| d.path.to_string_lossy().into_owned()).collect();
        assert_eq!(
            paths,
            [
                "/sys/fs/cgroup/unified/ward/mail",
                "/sys/fs/cgroup/memory/ward/mail",
                "/sys/fs/cgroup/cpu/ward/mail",
                "/sys/fs/cgroup/pids/ward/mail"
            ]
        );
        assert!(dirs[0].controllers.is_empty());
    }

    #[test]
    fn plan_on_unified_host_is_one_dir_with_every_controller() {
        let h = host(UNIFIED, "cpu io memory pids\n");
        let mut report = Vec::new();
        let dirs = plan(&h, "mail", &Controller::ALL, &mut report);
        assert_eq!(dirs.len(), 1);
        assert_eq!(dirs[0].path, PathBuf::from("/sys/fs/cgroup/ward/mail"));
        assert_eq!(dirs[0].controllers, Controller::ALL.to_vec());
    }

    #[test]
    fn create_without_any_cgroup_is_unavailable() {
        let h = host("22 27 0:21 / /proc rw,relatime - proc proc rw\n", "");
        let err = Cgroup::create_on(&h, "mail", &CgroupLimits::for_guest(64 << 20));
        assert!(matches!(err, Err(JailError::CgroupUnavailable(ref r)) if r.contains("no cgroup file system")));
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", "..", "a/b", "UPPER", "3./x", "x.mail", "12345.mail", ".mail", "3.", "3.a.b"] {
            assert!(matches!(check_name(name), Err(JailError::CgroupName { .. })), "{name:?}");
        }
        for name in ["mail", "0.mail", "999.ward-ipc"] {
            assert!(check_name(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn for_guest_adds_overhead_and_one_cpu() {
        let l = CgroupLimits::for_guest(64 << 20);
        assert_eq!(l.memory_max, (64 << 20) + MEMORY_OVERHEAD);
        assert_eq!(l.cpu, Some(CpuMax { quota_us: 100_000, period_us: 100_000 }));
        assert_eq!(l.pids_max, super::super::limits::DEFAULT_THREADS);
    }
}
