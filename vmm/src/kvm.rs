//! Opening KVM, with an error for each way it can fail on a user's machine.

use std::path::{Path, PathBuf};

use kvm_ioctls::{Cap, Kvm};

/// The default KVM device.
pub const DEFAULT_KVM_PATH: &str = "/dev/kvm";

/// The only KVM API version there is.
const KVM_API_VERSION: i32 = 12;

/// Opening KVM failed.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// The device node does not exist.
    #[error("{0} does not exist: this machine has no KVM (load the kvm module, or enable virtualization)")]
    Missing(PathBuf),
    /// No permission to open it.
    #[error("no permission to open {0}: run as root or add your user to the group that owns it")]
    PermissionDenied(PathBuf),
    /// It opened, but is not a KVM device.
    #[error("{0} is not a KVM device")]
    NotKvm(PathBuf),
    /// Opening failed for another reason.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The device.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// KVM lacks a capability Ward needs.
    #[error("KVM at {path} lacks {capability}, which Ward needs")]
    MissingCapability {
        /// The device.
        path: PathBuf,
        /// The capability.
        capability: &'static str,
    },
}

/// Opens the KVM device at `path` and checks what Ward relies on.
pub fn open(path: &Path) -> Result<Kvm, KvmError> {
    let kvm = Kvm::new_with_path(path_cstring(path)?).map_err(|e| match e.errno() {
        libc::ENOENT => KvmError::Missing(path.to_owned()),
        libc::EACCES | libc::EPERM => KvmError::PermissionDenied(path.to_owned()),
        libc::ENOTTY | libc::EINVAL | libc::ENODEV | libc::ENXIO => KvmError::NotKvm(path.to_owned()),
        _ => KvmError::Open { path: path.to_owned(), source: e.into() },
    })?;
    checked(kvm, path)
}

/// KVM from a device already open (a jailed VMM process opens `/dev/kvm`
/// before it loses the right to); `path` names it in errors.
pub fn from_fd(fd: &std::os::fd::OwnedFd, path: &Path) -> Result<Kvm, KvmError> {
    use std::os::fd::IntoRawFd;
    let own = fd.try_clone().map_err(|source| KvmError::Open { path: path.to_owned(), source })?;
    // SAFETY: `own` is a fresh duplicate we own; `Kvm` takes it over and
    // closes it when dropped.
    let kvm = unsafe { <Kvm as std::os::fd::FromRawFd>::from_raw_fd(own.into_raw_fd()) };
    checked(kvm, path)
}

fn checked(kvm: Kvm, path: &Path) -> Result<Kvm, KvmError> {
    // Opening a regular file succeeds; the first ioctl tells. The KVM API
    // version has been 12 since Linux 2.6.22 (KVM_API_VERSION).
    if kvm.get_api_version() != KVM_API_VERSION {
        return Err(KvmError::NotKvm(path.to_owned()));
    }
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
        (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
        (Cap::TscDeadlineTimer, "KVM_CAP_TSC_DEADLINE_TIMER"),
        (Cap::GetTscKhz, "KVM_CAP_GET_TSC_KHZ"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCapability { path: path.to_owned(), capability: name });
        }
    }
    Ok(kvm)
}

fn path_cstring(path: &Path) -> Result<std::ffi::CString, KvmError> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| KvmError::Missing(path.to_owned()))
}
