//! The private root: an empty, read-only tmpfs made the process's `/`,
//! with the host's file system detached.
//!
//! After `enter` the VMM works only on descriptors it opened before, so its
//! root holds nothing at all: no `/etc`, no `/proc`, no `/dev`, no writable
//! directory. A compromised VMM can open no file of the host, and create
//! none.
//!
//! How (in the jail's own mount namespace only, so the host sees nothing):
//! 1. make every mount private (`MS_REC | MS_PRIVATE`), so nothing we mount
//!    or unmount propagates back to the host (systemd makes `/` shared);
//! 2. mount a tiny tmpfs (`nosuid,nodev,noexec`, 16 KiB, a few inodes) on
//!    the spec's directory (`/tmp` by default, like bubblewrap: it always
//!    exists; the host's `/tmp` is covered only in this namespace);
//! 3. `chdir` into it and `pivot_root(".", ".")`: the old root ends up
//!    stacked on `.`, so no directory for it is needed in the new root;
//! 4. `umount2(".", MNT_DETACH)` detaches the old root (lazily: the VMM's
//!    open files on it keep working);
//! 5. remount the new root read-only.
//!
//! If `pivot_root` is refused (a root that is not a mount point, e.g. an
//! initramfs), the fallback is `chroot` into the tmpfs, reported as not
//! applied: the old root's mounts then remain in the namespace, reachable
//! by a process that regains root.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::report::{JailReport, Measure};
use super::sys;

/// Where the tmpfs is mounted by default: a directory every host has.
pub(super) const DEFAULT_ROOT_DIR: &str = "/tmp";

/// The report's name for this measure.
const NAME: &str = "private root";

/// Options of the tmpfs: tiny, and nothing executable or special in it.
const TMPFS_OPTIONS: &str = "size=16k,nr_inodes=16,mode=0755";

/// Mount flags of the tmpfs.
const TMPFS_FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// Makes an empty tmpfs on `mount_on` the root, if the process has its own
/// mount namespace (without one, `pivot_root` would change the host's root).
pub(super) fn enter_private_root(mount_on: &Path, own_mount_ns: bool, report: &mut JailReport) {
    if !own_mount_ns {
        report.push(Measure::missing(NAME, "needs a private mount namespace; the host's files stay visible"));
        return;
    }
    match make_root(mount_on) {
        Ok(how) => report.push(Measure::applied(NAME, how)),
        Err(reason) => report.push(Measure::missing(NAME, reason)),
    }
}

/// The steps, each failure described by its call and `errno`.
fn make_root(mount_on: &Path) -> Result<String, String> {
    let dir = CString::new(mount_on.as_os_str().as_bytes())
        .map_err(|_| format!("the root directory {} holds a NUL byte", mount_on.display()))?;
    let root = c"/";
    let here = c".";
    sys::mount(None, root, None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(|e| format!("mount(\"/\", MS_REC|MS_PRIVATE) failed: {e}"))?;
    let options = CString::new(TMPFS_OPTIONS).map_err(|_| "bad tmpfs options".to_owned())?;
    sys::mount(Some(c"ward-root"), &dir, Some(c"tmpfs"), TMPFS_FLAGS, Some(&options))
        .map_err(|e| format!("mount(tmpfs, {}) failed: {e}", mount_on.display()))?;
    sys::chdir(&dir).map_err(|e| format!("chdir({}) failed: {e}", mount_on.display()))?;
    if let Err(e) = sys::pivot_root(here, here) {
        sys::chroot(here)
            .map_err(|c| format!("pivot_root(\".\", \".\") failed: {e}; the chroot fallback failed too: {c}"))?;
        sys::chdir(root).map_err(|c| format!("chdir(\"/\") after chroot failed: {c}"))?;
        return Err(format!(
            "pivot_root(\".\", \".\") failed: {e}; fell back to chroot into an empty tmpfs \
             (the host's mounts remain attached in this namespace)"
        ));
    }
    sys::umount2(here, libc::MNT_DETACH).map_err(|e| format!("umount2(old root, MNT_DETACH) failed: {e}"))?;
    sys::chdir(root).map_err(|e| format!("chdir(\"/\") failed: {e}"))?;
    // A bind remount changes this mount's flags only; MS_BIND | MS_REMOUNT
    // needs the flags it keeps repeated (nosuid, nodev, noexec).
    sys::mount(None, root, None, libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | TMPFS_FLAGS, None)
        .map_err(|e| format!("remounting the new root read-only failed: {e}"))?;
    Ok(format!(
        "pivot_root into an empty read-only tmpfs (mounted on {} in this namespace); old root detached",
        mount_on.display()
    ))
}
