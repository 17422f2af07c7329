//! Installing a seccomp filter on the calling thread. The filters are
//! their owners' (the VMM's per thread, the IPC router's per thread), built
//! with seccompiler; this is the one place that hands one to the kernel.
//!
//! A filter is installed with `SECCOMP_FILTER_FLAG_LOG`, so what it refuses
//! lands in the kernel's audit log (kernels without the flag still refuse,
//! silently), after `PR_SET_NO_NEW_PRIVS`.

use seccompiler::BpfProgram;

/// Installs `program` on the calling thread, for the rest of its life.
pub fn install(program: &BpfProgram) -> std::io::Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| std::io::Error::other("seccomp filter too long"))?;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers and only affects this
    // thread; we check the result.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fprog = libc::sock_fprog {
        len,
        // seccompiler's `sock_filter` is `#[repr(C)]` with the kernel's
        // layout (u16, u8, u8, u32), the same as libc's.
        filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    let load = |flags: libc::c_ulong| {
        // SAFETY: `fprog` points at `program`, alive for the call; the
        // kernel copies the filter and keeps no pointer to it. We check the
        // result.
        unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, flags, std::ptr::from_ref(&fprog)) }
    };
    if load(libc::SECCOMP_FILTER_FLAG_LOG) != 0 && load(0) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use seccompiler::{SeccompAction, SeccompFilter, TargetArch};

    #[test]
    fn an_installed_filter_refuses_what_it_does_not_allow() {
        let refused = std::thread::spawn(|| {
            // Everything but getppid.
            let rules = BTreeMap::from([(libc::SYS_getppid, Vec::new())]);
            let filter =
                SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(1), TargetArch::x86_64).unwrap();
            install(&BpfProgram::try_from(filter).unwrap()).unwrap();
            // SAFETY: getppid has no preconditions (through syscall(2), which
            // sets errno; glibc's getppid does not).
            let rc = unsafe { libc::syscall(libc::SYS_getppid) };
            (rc, std::io::Error::last_os_error().raw_os_error())
        })
        .join()
        .unwrap();
        assert_eq!(refused, (-1, Some(libc::EPERM)));
    }
}
