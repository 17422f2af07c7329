//! Why jailing failed: one variant per step that can fail, each naming the
//! system call and the `errno` it returned.

use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

/// The jail, or a cgroup, could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The spec asks for something the jail refuses to do.
    #[error("invalid jail spec: {0}")]
    InvalidSpec(String),

    /// The process has more than one thread: namespaces, identity and
    /// limits would apply to one thread only.
    #[error("the jail must be entered by a single-threaded process, but this one has {0} threads")]
    NotSingleThreaded(usize),

    /// The thread count could not be read.
    #[error("cannot count this process's threads in /proc/self/task: {0}")]
    CountThreads(#[source] io::Error),

    /// A descriptor the spec says to keep is not open.
    #[error("descriptor {0} is listed in keep_fds but is not open")]
    KeepFdNotOpen(RawFd),

    /// Closing the descriptors not kept failed.
    #[error("closing descriptors {first}..={last} failed: {source}")]
    CloseFds {
        /// First descriptor of the range.
        first: u32,
        /// Last descriptor of the range.
        last: u32,
        /// The `close_range`/`close` error.
        #[source]
        source: io::Error,
    },

    /// A system call of the jail failed.
    #[error("{call} failed: {source}")]
    Syscall {
        /// The call and its arguments, e.g. `setresuid(65534)`.
        call: String,
        /// The error it returned.
        #[source]
        source: io::Error,
    },

    /// Setting a resource limit failed.
    #[error("setrlimit({resource}, {value}) failed: {source}")]
    Rlimit {
        /// The limit, e.g. `RLIMIT_AS`.
        resource: &'static str,
        /// The value asked for.
        value: u64,
        /// The error.
        #[source]
        source: io::Error,
    },

    /// After dropping privileges, the process still has, or could get back,
    /// something of root's.
    #[error("privileges were not dropped: {0}")]
    PrivilegesKept(String),

    /// `require_all` was set and some measures could not be applied.
    #[error("the jail is incomplete and the spec requires all of it: {0}")]
    Incomplete(String),

    /// Forking failed.
    #[error("fork failed: {0}")]
    Fork(#[source] io::Error),

    /// Waiting for a child failed.
    #[error("waitpid({pid}) failed: {source}")]
    Wait {
        /// The child.
        pid: i32,
        /// The error.
        #[source]
        source: io::Error,
    },

    /// The cgroup name cannot be a directory name.
    #[error("invalid cgroup name {name:?}: {reason}")]
    CgroupName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },

    /// This host has no cgroup hierarchy the limits could use.
    #[error("no cgroup limits can be applied on this host: {0}")]
    CgroupUnavailable(String),

    /// Reading or writing a cgroup file or directory failed.
    #[error("cgroup: {action} {path} failed: {source}")]
    CgroupIo {
        /// What was done, e.g. `write 67108864 to`.
        action: String,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl JailError {
    /// A failed system call, described by `call`.
    pub(super) fn syscall(call: impl Into<String>, source: io::Error) -> Self {
        Self::Syscall { call: call.into(), source }
    }
}
