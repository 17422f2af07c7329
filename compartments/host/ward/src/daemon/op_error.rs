//! Why a lifecycle operation failed, and whose fault it is: the request's
//! (a name that does not exist, a disk that is not a file), the policy's
//! (a real refusal), the host's configuration (a policy that cannot be
//! read), or the daemon's own. `ward` shows the message; a script reads
//! the [`ErrorKind`] of the reply.

use std::path::PathBuf;

use super::ipc::IpcError;
use super::proto::{ErrorKind, Reply, State};
use super::state::StoreError;
use crate::grant::GrantError;
use crate::name::NameError;
use crate::policy_source::SourceError;

/// A lifecycle operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No compartment has that name.
    #[error("no compartment {0}")]
    NoSuchCompartment(String),
    /// A compartment has that name already.
    #[error("compartment {0} exists")]
    Exists(String),
    /// The compartment is not in a state that allows it.
    #[error("compartment {name} is {state:?}{hint}")]
    WrongState {
        /// The compartment.
        name: String,
        /// Its state.
        state: State,
        /// What to do first, if anything (", stop it first").
        hint: &'static str,
    },
    /// The name is not a compartment name.
    #[error(transparent)]
    BadName(#[from] NameError),
    /// A disk the request names cannot be used.
    #[error("compartment {name}: disk {path}: {reason}")]
    BadDisk {
        /// The compartment.
        name: String,
        /// The path as given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The kernel command line cannot be given to a guest.
    #[error("compartment {name}: {source}")]
    BadCmdline {
        /// The compartment.
        name: String,
        /// Why.
        source: ward_vmm::boot::BootError,
    },
    /// No built-in image has that name.
    #[error("no image called {0:?}; `ward images` lists them")]
    NoSuchImage(String),
    /// The policy refuses it.
    #[error(transparent)]
    Denied(#[from] GrantError),
    /// The policy cannot be read or has errors: nothing is decided.
    #[error(transparent)]
    Policy(#[from] SourceError),
    /// The compartment has no console input from this daemon, or it
    /// stopped taking it.
    #[error("compartment {name}: {reason}")]
    NoInput {
        /// The compartment.
        name: String,
        /// Why.
        reason: String,
    },
    /// The IPC router refused or failed (a pending call that is not
    /// there is [`ErrorKind::NotFound`]).
    #[error(transparent)]
    Ipc(#[from] IpcError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The daemon could not do its part (write a spec, start a process).
    #[error("{what}: {source}")]
    Host {
        /// What it was doing.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The daemon's own limits (every uid of its slot in use).
    #[error("{0}")]
    Exhausted(String),
    /// The VMM outlived its stop.
    #[error("compartment {0} did not stop")]
    DidNotStop(String),
}

impl OpError {
    /// The reply's kind: whose fault it is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NoSuchCompartment(_) => ErrorKind::NotFound,
            Self::Ipc(IpcError::NoSuchAsk(_)) => ErrorKind::NotFound,
            Self::Exists(_) => ErrorKind::Exists,
            Self::WrongState { .. } | Self::NoInput { .. } => ErrorKind::WrongState,
            Self::BadName(_) | Self::BadDisk { .. } | Self::BadCmdline { .. } | Self::NoSuchImage(_) => {
                ErrorKind::Invalid
            }
            Self::Denied(_) => ErrorKind::Denied,
            Self::Policy(_) => ErrorKind::Policy,
            Self::Ipc(_) | Self::Store(_) | Self::Host { .. } | Self::Exhausted(_) | Self::DidNotStop(_) => {
                ErrorKind::Internal
            }
        }
    }

    /// A host-side failure while doing `what`.
    pub fn host(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Host { what: what.into(), source }
    }
}

impl From<OpError> for Reply {
    fn from(e: OpError) -> Self {
        Reply::error(e.kind(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_says_whose_fault_it_is() {
        let bad_disk = OpError::BadDisk { name: "a".into(), path: "/x".into(), reason: "not a file".into() };
        assert_eq!(bad_disk.kind(), ErrorKind::Invalid);
        let refused = OpError::Denied(GrantError::Undefined { name: "a".into(), policy: "p".into() });
        assert_eq!(refused.kind(), ErrorKind::Denied);
        let unreadable = OpError::Policy(SourceError::Read {
            path: "/etc/ward/policy".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert_eq!(unreadable.kind(), ErrorKind::Policy);
        assert_eq!(OpError::Ipc(IpcError::NoSuchAsk(3)).kind(), ErrorKind::NotFound);
        assert_eq!(OpError::host("writing the spec", std::io::Error::other("disk full")).kind(), ErrorKind::Internal);
    }
}
