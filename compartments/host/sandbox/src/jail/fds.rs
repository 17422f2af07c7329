//! Closing every descriptor the VMM did not ask to keep.
//!
//! Whatever the VMM inherited (from `wardd`, a terminal, a test harness)
//! and did not list is closed, so a compromised VMM holds only its own
//! `/dev/kvm`, disks, log and control pipe. `close_range(2)` does it in a
//! few calls (no `/proc` needed, which matters after the root is gone);
//! on kernels before 5.9 each descriptor up to the `RLIMIT_NOFILE` limit is
//! closed one by one.

use std::os::fd::RawFd;

use super::error::JailError;
use super::sys;

/// Standard input, output and error: always kept.
const STDIO: [RawFd; 3] = [0, 1, 2];

/// The descriptors to keep: `keep` plus 0, 1 and 2, sorted, without
/// duplicates. A negative descriptor is an error.
pub(super) fn kept(keep: &[RawFd]) -> Result<Vec<u32>, JailError> {
    let mut fds = Vec::with_capacity(keep.len() + STDIO.len());
    for &fd in keep.iter().chain(STDIO.iter()) {
        let fd = u32::try_from(fd).map_err(|_| JailError::InvalidSpec(format!("keep_fds holds {fd}")))?;
        fds.push(fd);
    }
    fds.sort_unstable();
    fds.dedup();
    Ok(fds)
}

/// The ranges between the kept descriptors, inclusive: what to close.
pub(super) fn gaps(kept: &[u32]) -> Vec<(u32, u32)> {
    let mut gaps = Vec::new();
    let mut next = 0u32;
    for &fd in kept {
        if fd > next {
            gaps.push((next, fd - 1));
        }
        next = fd.saturating_add(1);
    }
    if next != u32::MAX || kept.last() != Some(&u32::MAX) {
        gaps.push((next, u32::MAX));
    }
    gaps
}

/// Checks that every descriptor in `keep` is open (0, 1 and 2 may be
/// closed: the VMM may run without a terminal).
pub(super) fn check_open(keep: &[RawFd]) -> Result<(), JailError> {
    match keep.iter().find(|&&fd| !STDIO.contains(&fd) && !sys::fd_is_open(fd)) {
        Some(&fd) => Err(JailError::KeepFdNotOpen(fd)),
        None => Ok(()),
    }
}

/// Closes every descriptor except `keep` and 0, 1, 2. Returns the kept
/// list, for the report.
pub(super) fn close_all_except(keep: &[RawFd]) -> Result<Vec<u32>, JailError> {
    check_open(keep)?;
    let kept = kept(keep)?;
    for (first, last) in gaps(&kept) {
        match sys::close_range(first, last) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => close_one_by_one(first, last)?,
            Err(source) => return Err(JailError::CloseFds { first, last, source }),
        }
    }
    Ok(kept)
}

/// The fallback without `close_range`: descriptors can exist up to the
/// hard `RLIMIT_NOFILE` limit (one opened before the soft limit was
/// lowered may lie above the soft one), so the hard limit bounds the loop.
fn close_one_by_one(first: u32, last: u32) -> Result<(), JailError> {
    let (_, hard) =
        sys::getrlimit(libc::RLIMIT_NOFILE).map_err(|source| JailError::CloseFds { first, last, source })?;
    let bound = u32::try_from(hard).unwrap_or(u32::MAX).min(last);
    for fd in first..=bound {
        let Ok(raw) = RawFd::try_from(fd) else { break };
        sys::close(raw).map_err(|source| JailError::CloseFds { first: fd, last: fd, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_adds_stdio_sorts_and_dedups() {
        assert_eq!(kept(&[7, 3, 7, 1]).ok(), Some(vec![0, 1, 2, 3, 7]));
    }

    #[test]
    fn kept_negative_fd_is_invalid_spec() {
        assert!(matches!(kept(&[-1]), Err(JailError::InvalidSpec(_))));
    }

    #[test]
    fn gaps_between_kept_and_to_the_end() {
        assert_eq!(gaps(&[0, 1, 2]), vec![(3, u32::MAX)]);
        assert_eq!(gaps(&[0, 1, 2, 5, 6, 9]), vec![(3, 4), (7, 8), (10, u32::MAX)]);
    }

    #[test]
    fn gaps_include_low_descriptors_not_kept() {
        // Only possible if stdio were not kept; the function itself is general.
        assert_eq!(gaps(&[4]), vec![(0, 3), (5, u32::MAX)]);
    }

    #[test]
    fn gaps_none_after_the_largest_descriptor() {
        assert_eq!(gaps(&[0, u32::MAX]), vec![(1, u32::MAX - 1)]);
    }

    #[test]
    fn check_open_rejects_a_closed_descriptor() {
        // A descriptor number far above anything this test process opened.
        assert!(matches!(check_open(&[900_000]), Err(JailError::KeepFdNotOpen(900_000))));
    }
}
