//! Processes: what the kernel keeps for each program it runs.

pub mod elf;
pub mod sched;
pub mod spawn;

use alloc::boxed::Box;
use alloc::collections::VecDeque;

use ward_abi::layout::KERNEL_STACKS_BASE;
use ward_abi::syscall::ProcessState;

use crate::arch::FpuArea;
use crate::mem::aspace::AddressSpace;
use crate::mem::phys::PAGE_SIZE;
use crate::traps::TrapFrame;

/// A process id. 0 is "no process" (the parent of boot programs).
pub type Pid = u32;

/// Most processes alive at once (kernel stack slots).
pub const MAX_PROCESSES: usize = 1024;
/// Messages a mailbox holds before [`ward_abi::syscall::SEND`] fails.
pub const MAILBOX_CAPACITY: usize = 32;
/// Virtual size of a kernel stack slot: the stack at its top, unmapped
/// guard pages below.
pub const KSTACK_SLOT_SIZE: u64 = 64 * 1024;
/// Pages of each kernel stack.
pub const KSTACK_PAGES: u64 = 4;

/// A four-word message and its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender's pid (0: the kernel).
    pub from: Pid,
    /// Payload.
    pub words: [u64; 4],
}

/// What a process is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Running or ready to run.
    Runnable,
    /// In `sleep` until the TSC reaches `deadline`.
    Sleeping {
        /// TSC deadline.
        deadline: u64,
    },
    /// In `wait` for `child`.
    Waiting {
        /// The child.
        child: Pid,
    },
    /// In `recv`, until a message or the TSC reaches `deadline`.
    Receiving {
        /// TSC deadline, if any.
        deadline: Option<u64>,
    },
    /// Waiting for a device to finish a transfer.
    Io,
    /// In `vsock_recv`, until the vsock device fills a buffer (or reports
    /// a transport reset) or the TSC reaches `deadline`.
    VsockRecv {
        /// TSC deadline, if any.
        deadline: Option<u64>,
    },
    /// Ended with `status`; its parent has not reaped it yet.
    Zombie {
        /// Exit status (see `ward_abi::syscall::STATUS_KILLED`).
        status: i64,
    },
}

impl State {
    /// The state as the ABI reports it.
    pub fn abi(&self) -> ProcessState {
        match self {
            Self::Runnable => ProcessState::Runnable,
            Self::Sleeping { .. } => ProcessState::Sleeping,
            Self::Waiting { .. } => ProcessState::Waiting,
            Self::Receiving { .. } => ProcessState::Receiving,
            Self::Io | Self::VsockRecv { .. } => ProcessState::Io,
            Self::Zombie { .. } => ProcessState::Zombie,
        }
    }

    /// When the state times out, if it does (the process is then among the
    /// kernel's sleepers).
    pub fn deadline(&self) -> Option<u64> {
        match *self {
            Self::Sleeping { deadline }
            | Self::Receiving { deadline: Some(deadline) }
            | Self::VsockRecv { deadline: Some(deadline) } => Some(deadline),
            _ => None,
        }
    }
}

/// A kernel stack: slot `slot` of the kernel-stack region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelStack {
    /// Slot index.
    pub slot: usize,
}

impl KernelStack {
    /// One past the highest byte: RSP0 while the process runs.
    pub fn top(&self) -> u64 {
        KERNEL_STACKS_BASE + (self.slot as u64 + 1) * KSTACK_SLOT_SIZE
    }

    /// Lowest mapped page.
    pub fn bottom(&self) -> u64 {
        self.top() - KSTACK_PAGES * PAGE_SIZE
    }

    /// Where the process's saved user registers are: the top of its stack,
    /// where every entry from ring 3 pushes them.
    pub fn frame_addr(&self) -> u64 {
        self.top() - core::mem::size_of::<TrapFrame>() as u64
    }
}

/// A process.
#[derive(Debug)]
pub struct Process {
    /// Its pid.
    pub pid: Pid,
    /// Its parent (0: none).
    pub parent: Pid,
    /// Program name, NUL padded.
    pub name: [u8; 16],
    /// What it is doing.
    pub state: State,
    /// 0 (highest) to 7.
    pub priority: u8,
    /// Its memory; `None` once it has ended.
    pub space: Option<AddressSpace>,
    /// Its kernel stack.
    pub kstack: KernelStack,
    /// Its FPU/SSE registers while another process owns the FPU; `None`
    /// until it is first switched away from (it starts from the initial
    /// state).
    pub fpu: Option<Box<FpuArea>>,
    /// TSC cycles it has run.
    pub cpu_cycles: u64,
    /// Messages not yet received.
    pub mailbox: VecDeque<Message>,
    /// Next address for `map`.
    pub heap_next: u64,
    /// Next address for pages shared with it.
    pub share_next: u64,
    /// Why the kernel killed it, once it did: kept with the dead process
    /// for `wait` and `ps`.
    pub fault: Option<ward_abi::fault::Fault>,
    /// While it waits for a child: where `wait` writes the child's fault
    /// (0: nowhere).
    pub wait_fault_out: u64,
    /// The compartment was asked to stop and its next `recv` says so
    /// (ahead of its mailbox, which may be full).
    pub stop_pending: bool,
}

impl Process {
    /// The name without padding.
    pub fn name(&self) -> &[u8] {
        let len = self.name.iter().position(|&b| b == 0).unwrap_or(self.name.len());
        &self.name[..len]
    }

    /// Whether it has ended.
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, State::Zombie { .. })
    }

    /// Its saved user registers.
    ///
    /// # Safety
    /// The kernel stack is mapped (the process has not been reaped), and no
    /// other reference to the frame is live.
    #[allow(clippy::mut_from_ref, reason = "the frame lives on the process's kernel stack, not in `self`")]
    pub unsafe fn frame(&self) -> &mut TrapFrame {
        // SAFETY: the caller guarantees the stack is mapped and unaliased;
        // the address is aligned (the stack top is page aligned and the
        // frame size a multiple of 16).
        unsafe { &mut *(self.kstack.frame_addr() as *mut TrapFrame) }
    }
}
