//! The kernel's state and the operations that change it: scheduling,
//! blocking and waking, process exit, and time.
//!
//! There is one vCPU, and kernel code always runs with interrupts off, from
//! one trap entry to the `iretq` that leaves it; nothing in the kernel is
//! preempted or re-entered. That is what makes a single `&mut Kernel`,
//! handed down from the trap entry, sound.

use crate::mem::phys::PhysMemory as _;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use ward_abi::fault::Fault;
use ward_abi::width::low_u32;
use ward_abi::width::u64_from;
use zerocopy::IntoBytes;

use ward_abi::debug_console::{EXIT_INIT_KILLED, MARK_FIRST_USER_OUTPUT};
use ward_abi::syscall::STATUS_KILLED;

use crate::arch::{self, gdt, lapic};
use crate::console::Bytes;
use crate::kprintln;
use crate::mem::frame::FrameAllocator;
use crate::mem::paging::{self, NO_EXECUTE, WRITABLE};
use crate::mem::phys::{DirectMap, PAGE_SIZE};
use crate::proc::sched::{RunQueues, Sleepers};
use crate::proc::{KSTACK_PAGES, KernelStack, MAX_PROCESSES, Pid, Process, State};
use crate::traps::TrapFrame;

/// Time slice of a process before another of its priority gets the CPU.
pub const TIME_SLICE_NS: u64 = 10_000_000;
/// Kernel stacks kept mapped for reuse when their processes end.
pub const SPARE_KSTACKS: usize = 4;

/// A boot module: a program image the VMM placed in guest memory.
#[derive(Clone, Copy, Debug)]
pub struct Module {
    /// Name, NUL padded.
    pub name: [u8; 32],
    /// Guest-physical base (page aligned).
    pub phys: u64,
    /// Size in bytes.
    pub size: u64,
    /// Its parsed ELF headers, once a spawn has read them (parsing costs
    /// hundreds of emulated instructions; the module never changes).
    pub program: Option<crate::proc::elf::Program>,
}

impl Module {
    /// The name without padding.
    pub fn name(&self) -> &[u8] {
        let len = self.name.iter().position(|&b| b == 0).unwrap_or(self.name.len());
        &self.name[..len]
    }
}

/// All kernel state.
#[derive(Debug)]
pub struct Kernel {
    /// Physical memory access.
    pub mem: DirectMap,
    /// The frame allocator.
    pub frames: FrameAllocator,
    /// The kernel's page tables (no lower half).
    pub kernel_root: u64,
    /// Boot modules.
    pub modules: Vec<Module>,
    /// Processes by pid, zombies included.
    pub procs: BTreeMap<Pid, Process>,
    /// Next pid to hand out.
    pub next_pid: Pid,
    /// Kernel stack slots in use.
    pub kstack_used: Vec<bool>,
    /// Kernel stacks of ended processes, freed once off them.
    pub dead_kstacks: Vec<KernelStack>,
    /// Mapped kernel stacks ready for new processes.
    pub spare_kstacks: Vec<KernelStack>,
    /// Whether a trap changed who may run (a wake, a block, an exit, a
    /// spawn, a yield): if not, a system call returns straight to its
    /// caller without consulting the scheduler.
    pub sched_dirty: bool,
    /// Runnable processes (not the running one).
    pub run: RunQueues,
    /// Sleeping and timed-receiving processes.
    pub sleepers: Sleepers,
    /// The running process, if any (none: idle).
    pub current: Option<Pid>,
    /// Whether the running process should give way to its peers.
    pub resched: bool,
    /// TSC at which the running process's slice ends.
    pub slice_end: u64,
    /// Whose registers are in the FPU.
    pub fpu_owner: Option<Pid>,
    /// TSC frequency.
    pub tsc_khz: u64,
    /// TSC at boot.
    pub boot_tsc: u64,
    /// TSC when CPU time was last charged.
    pub last_charge: u64,
    /// The first boot program: the compartment's exit code is its.
    pub init: Pid,
    /// Its status, once it ended.
    pub init_status: Option<i64>,
    /// Whether the first program output was marked for the host.
    pub user_output_marked: bool,
    /// Print the process table at power-off (`ward.stats`).
    pub stats: bool,
    /// The timer deadline programmed now (0: off).
    pub armed: u64,
    /// CR3 now (reading CR3 is an emulated instruction; we remember it).
    pub cr3: u64,
    /// Whose kernel stack RSP0 names now.
    pub stack_owner: Option<Pid>,
    /// The virtio devices.
    pub devices: crate::virtio::Devices,
    /// The host asked the compartment to stop (its power button).
    pub stopping: bool,
}

impl Kernel {
    /// Nanoseconds since boot.
    pub fn now_ns(&self) -> u64 {
        cycles_to_ns(arch::rdtsc().wrapping_sub(self.boot_tsc), self.tsc_khz)
    }

    /// The TSC value `ns` nanoseconds from now.
    pub fn deadline_in(&self, ns: u64) -> u64 {
        arch::rdtsc().saturating_add(ns_to_cycles(ns, self.tsc_khz))
    }

    /// Charges the CPU time since the last charge to the running process.
    pub fn charge(&mut self) {
        let now = arch::rdtsc();
        let spent = now.wrapping_sub(self.last_charge);
        self.last_charge = now;
        if let Some(p) = self.current.and_then(|pid| self.procs.get_mut(&pid)) {
            p.cpu_cycles = p.cpu_cycles.wrapping_add(spent);
        }
    }

    /// Frees kernel stacks of processes that ended. Called on trap entry,
    /// when the CPU is on another stack. A few stay mapped for the next
    /// processes (mapping a stack costs hundreds of emulated instructions).
    pub fn free_dead_kstacks(&mut self) {
        while let Some(stack) = self.dead_kstacks.pop() {
            if self.spare_kstacks.len() < SPARE_KSTACKS {
                self.spare_kstacks.push(stack);
                continue;
            }
            for i in 0..KSTACK_PAGES {
                let virt = stack.bottom() + i * PAGE_SIZE;
                if let Some(entry) = paging::unmap_page(&mut self.mem, self.kernel_root, virt) {
                    arch::invlpg(virt);
                    let _ = self.frames.release(&mut self.mem, entry & paging::ADDR_MASK);
                }
            }
            if let Some(used) = self.kstack_used.get_mut(stack.slot) {
                *used = false;
            }
            if self.stack_owner.is_some_and(|pid| !self.procs.contains_key(&pid)) {
                self.stack_owner = None;
            }
        }
    }

    /// A kernel stack: a spare one, or a new one mapped in a free slot.
    pub fn alloc_kstack(&mut self) -> Option<KernelStack> {
        if let Some(stack) = self.spare_kstacks.pop() {
            return Some(stack);
        }
        let slot = match self.kstack_used.iter().position(|used| !used) {
            Some(slot) => slot,
            None if self.kstack_used.len() < MAX_PROCESSES => {
                self.kstack_used.push(false);
                self.kstack_used.len() - 1
            }
            None => return None,
        };
        let stack = KernelStack { slot };
        for i in 0..KSTACK_PAGES {
            let virt = stack.bottom() + i * PAGE_SIZE;
            let mapped = self.frames.alloc(&mut self.mem).map(|f| f.phys).and_then(|frame| {
                paging::map_page(&mut self.mem, &mut self.frames, self.kernel_root, virt, frame, WRITABLE | NO_EXECUTE)
                    .map_err(|_| {
                        let _ = self.frames.release(&mut self.mem, frame);
                    })
                    .ok()
            });
            if mapped.is_none() {
                self.dead_kstacks.push(stack);
                self.kstack_used[slot] = true;
                self.free_dead_kstacks();
                return None;
            }
        }
        self.kstack_used[slot] = true;
        Some(stack)
    }

    /// Makes `pid` runnable.
    pub fn wake(&mut self, pid: Pid) {
        self.sched_dirty = true;
        if let Some(p) = self.procs.get_mut(&pid) {
            if let Some(deadline) = p.state.deadline() {
                self.sleepers.remove(deadline, pid);
            }
            p.state = State::Runnable;
            if self.current != Some(pid) {
                self.run.push(pid, p.priority);
            }
        }
    }

    /// Blocks the running process in `state`.
    pub fn block_current(&mut self, state: State) {
        self.sched_dirty = true;
        let Some(pid) = self.current else { return };
        if let Some(p) = self.procs.get_mut(&pid) {
            p.state = state;
            if let Some(deadline) = state.deadline() {
                self.sleepers.insert(deadline, pid);
            }
        }
    }

    /// Sets the return value of `pid`'s pending system call.
    pub fn set_return(&mut self, pid: Pid, value: u64) {
        if let Some(p) = self.procs.get(&pid) {
            // SAFETY: the process is alive, so its kernel stack is mapped;
            // no other frame reference is live here.
            unsafe { p.frame().rax = value };
        }
    }

    /// Ends process `pid` with `status`: returns its memory at once, tells
    /// a waiting parent, and powers off when it was the last process.
    pub fn exit(&mut self, pid: Pid, status: i64) {
        self.sched_dirty = true;
        let Some(p) = self.procs.get_mut(&pid) else { return };
        if p.is_zombie() {
            return;
        }
        if let Some(deadline) = p.state.deadline() {
            self.sleepers.remove(deadline, pid);
        }
        p.state = State::Zombie { status };
        p.mailbox.clear();
        p.fpu = None;
        let parent = p.parent;
        if let Some(space) = p.space.take() {
            if self.cr3 == space.root() {
                self.cr3 = self.kernel_root;
                // SAFETY: the kernel tables map everything the kernel uses.
                unsafe { arch::write_cr3(self.kernel_root) };
            }
            space.destroy(&mut self.mem, &mut self.frames);
            // One page-service exit zeroes (and hands back to the host)
            // everything the process had.
            self.frames.clean_dirty(&mut self.mem);
        }
        // Its receive area went with its address space; the buffers it
        // held go back to the device.
        if let Some(v) = self.devices.vsock.as_mut() {
            v.release(pid);
        }
        self.run.remove(pid);
        if self.fpu_owner == Some(pid) {
            self.fpu_owner = None;
        }
        if pid == self.init {
            self.init_status = Some(status);
        }
        // Orphans: nobody will reap them, so they go when they end.
        let orphans: Vec<Pid> = self.procs.values().filter(|c| c.parent == pid).map(|c| c.pid).collect();
        for child in orphans {
            let zombie = self.procs.get_mut(&child).map(|c| {
                c.parent = 0;
                c.is_zombie()
            });
            if zombie == Some(true) {
                self.reap(child);
            }
        }
        let parent_waits = self.procs.get(&parent).is_some_and(|q| q.state == State::Waiting { child: pid });
        if parent_waits {
            let fault = self.procs.get(&pid).and_then(|p| p.fault);
            let out = self.procs.get(&parent).map_or(0, |q| q.wait_fault_out);
            if out != 0 {
                // Checked writable when the parent called `wait`, and its
                // address space has not changed since: it was blocked.
                let record = fault.map(|f| f.record()).unwrap_or_default();
                let _ = self.write_user(parent, out, record.as_bytes());
            }
            self.set_return(parent, status.cast_unsigned());
            self.wake(parent);
            self.reap(pid);
        } else if !self.procs.contains_key(&parent) {
            self.reap(pid);
        }
        if self.procs.values().all(Process::is_zombie) {
            self.power_off();
        }
    }

    /// Writes `bytes` (whole 64-bit words) at `addr` in `pid`'s memory,
    /// checked writable, through the direct map: its address space need
    /// not be the one loaded. `addr` is 8-byte aligned, so no word
    /// straddles a page.
    pub fn write_user(&mut self, pid: Pid, addr: u64, bytes: &[u8]) -> Result<(), ward_abi::syscall::Error> {
        use ward_abi::syscall::Error;
        let len = u64_from(bytes.len());
        if !addr.is_multiple_of(8) || !len.is_multiple_of(8) {
            return Err(Error::BadAddress);
        }
        let space = self.procs.get(&pid).and_then(|p| p.space.as_ref()).ok_or(Error::NoSuchProcess)?;
        crate::mem::user::UserRange::<crate::mem::user::ForWriting>::new(&mut self.mem, space, addr, len, len)?;
        for (i, word) in (0u64..).zip(bytes.chunks_exact(8)) {
            let phys = space.translate(&mut self.mem, addr + 8 * i).ok_or(Error::BadAddress)?.phys;
            let mut value = [0u8; 8];
            value.copy_from_slice(word);
            self.mem.write_u64(phys, u64::from_le_bytes(value));
        }
        Ok(())
    }

    /// Forgets an ended process; its kernel stack goes once we are off it.
    pub fn reap(&mut self, pid: Pid) {
        if let Some(p) = self.procs.remove(&pid) {
            self.dead_kstacks.push(p.kstack);
        }
    }

    /// Kills the running process for `fault` (`what`, for the report on
    /// the console), keeping the fault with it.
    pub fn kill_current(&mut self, frame: &TrapFrame, fault: Fault, what: &str) {
        let Some(pid) = self.current else { return };
        if let Some(p) = self.procs.get_mut(&pid) {
            p.fault = Some(fault);
        }
        let fault_addr = match fault {
            Fault::Memory { address, .. } => Some(address),
            _ => None,
        };
        let name = self.procs.get(&pid).map_or(&b"?"[..], Process::name);
        kprintln!(
            "ward-kernel: killed process ",
            pid,
            " (",
            Bytes(name),
            "): ",
            what,
            " at rip ",
            crate::console::Hex(frame.rip),
            ", error code ",
            frame.error_code
        );
        if let Some(addr) = fault_addr {
            kprintln!("ward-kernel:   faulting address ", crate::console::Hex(addr));
        }
        self.exit(pid, STATUS_KILLED | (frame.vector as i64 & 0xff));
    }

    /// A device interrupted: finishes the transfers it completed and wakes
    /// the processes that wait for them.
    pub fn device_interrupt(&mut self, vector: u8) {
        // The list is the devices' own, lent out so waking needs `self`.
        let mut finished = core::mem::take(&mut self.devices.done);
        self.devices.interrupt(vector, &mut finished);
        for done in finished.drain(..) {
            if self.procs.get(&done.pid).is_some_and(|p| p.state == State::Io) {
                self.set_return(done.pid, done.result);
                self.wake(done.pid);
            }
        }
        self.devices.done = finished;
        // A vsock owner waiting in `vsock_recv` gets what just arrived.
        let vsock = self.devices.vsock.as_mut().filter(|v| v.transport.vector == vector);
        if let Some(v) = vsock
            && let Some(owner) = v.owner_pid()
            && self.procs.get(&owner).is_some_and(|p| matches!(p.state, State::VsockRecv { .. }))
            && let Some(result) = v.next_ready()
        {
            self.set_return(owner, result);
            self.wake(owner);
        }
    }

    /// The host asked the compartment to stop: every program is told by its
    /// next `recv` (one blocked in it now is woken with the request); the
    /// compartment powers off when they have all ended, as ever. A second
    /// request changes nothing.
    pub fn request_stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        kprintln!("ward-kernel: asked to stop; telling every program");
        let stop = crate::proc::Message { from: 0, words: [ward_abi::syscall::STOP_TAG, 0, 0, 0] };
        let mut woken = Vec::new();
        for p in self.procs.values_mut().filter(|p| !p.is_zombie()) {
            if let State::Receiving { .. } = p.state {
                // SAFETY: the process is alive and blocked: its kernel
                // stack is mapped and its frame is not in use.
                crate::syscall::put_message(unsafe { p.frame() }, &stop);
                woken.push(p.pid);
            } else {
                p.stop_pending = true;
            }
        }
        for pid in woken {
            self.wake(pid);
        }
    }

    /// Marks, once, that program output is about to reach the host.
    pub fn mark_user_output(&mut self) {
        if !self.user_output_marked {
            self.user_output_marked = true;
            crate::power::mark(MARK_FIRST_USER_OUTPUT);
        }
    }

    /// Picks what runs next and prepares the CPU for it: page tables, RSP0,
    /// FPU, timer. Returns the frame to resume.
    pub fn schedule(&mut self, idle_frame: *mut TrapFrame) -> *mut TrapFrame {
        self.charge();
        self.sched_dirty = false;
        let now = self.last_charge;
        let slice = ns_to_cycles(TIME_SLICE_NS, self.tsc_khz);
        let mut next = None;
        if let Some(pid) = self.current
            && let Some(p) = self.procs.get(&pid)
            && p.state == State::Runnable
        {
            let better_waiting = self.run.best_priority().is_some_and(|best| best < p.priority);
            let peer_waiting = self.run.best_priority().is_some_and(|best| best <= p.priority);
            let slice_over = self.resched || now >= self.slice_end;
            if better_waiting || (slice_over && peer_waiting) {
                self.run.push(pid, p.priority);
            } else {
                if slice_over {
                    self.slice_end = now + slice;
                }
                next = Some(pid);
            }
        }
        self.resched = false;
        let next = next.or_else(|| {
            let pid = self.run.pop()?;
            self.slice_end = now + slice;
            Some(pid)
        });
        self.current = next;
        let Some(p) = next.and_then(|pid| self.procs.get(&pid)) else {
            self.arm(self.sleepers.next_deadline().unwrap_or(0));
            return idle_frame;
        };
        if let Some(space) = &p.space
            && self.cr3 != space.root()
        {
            self.cr3 = space.root();
            // SAFETY: every address space shares the kernel half.
            unsafe { arch::write_cr3(self.cr3) };
        }
        if self.stack_owner != Some(p.pid) {
            self.stack_owner = Some(p.pid);
            gdt::set_rsp0(p.kstack.top());
            crate::traps::set_syscall_stack(p.kstack.top());
        }
        let pid = p.pid;
        if self.fpu_owner != Some(pid) {
            if let Some(owner) = self.fpu_owner.and_then(|o| self.procs.get_mut(&o)) {
                match owner.fpu.as_mut() {
                    Some(area) => arch::fxsave(area),
                    None => owner.fpu = Some(arch::fxsave_new()),
                }
            }
            match self.procs.get(&pid).and_then(|p| p.fpu.as_ref()) {
                Some(area) => arch::fxrstor(area),
                None => arch::fxrstor(&arch::INITIAL_FPU),
            }
            self.fpu_owner = Some(pid);
        }
        let deadline = self.sleepers.next_deadline().map_or(self.slice_end, |d| d.min(self.slice_end));
        self.arm(deadline);
        self.procs.get(&pid).map_or(idle_frame, |p| p.kstack.frame_addr() as *mut TrapFrame)
    }

    /// Programs the timer for `deadline` (0: off), unless it already is:
    /// each write is an exit.
    fn arm(&mut self, deadline: u64) {
        if self.armed != deadline {
            self.armed = deadline;
            lapic::arm_timer(deadline);
        }
    }

    /// The timer fired: wakes sleepers that are due, times out receivers.
    pub fn timer(&mut self) {
        let now = arch::rdtsc();
        while let Some(pid) = self.sleepers.pop_due(now) {
            let timed_out = self
                .procs
                .get(&pid)
                .is_some_and(|p| matches!(p.state, State::Receiving { .. } | State::VsockRecv { .. }));
            if let Some(p) = self.procs.get_mut(&pid) {
                // The deadline is already off the timeline.
                p.state = State::Runnable;
                let priority = p.priority;
                if timed_out {
                    self.set_return(pid, ward_abi::syscall::Error::TimedOut.to_return());
                }
                if self.current != Some(pid) {
                    self.run.push(pid, priority);
                }
            }
        }
    }

    /// Powers the compartment off with the first boot program's status.
    pub fn power_off(&mut self) -> ! {
        if self.stats {
            crate::stats::print(self);
        }
        let code = match self.init_status {
            Some(status) if status & STATUS_KILLED != 0 => EXIT_INIT_KILLED,
            // The exit code is the status's low 32 bits (ward_abi::syscall).
            Some(status) => low_u32(status.cast_unsigned()),
            None => 0,
        };
        kprintln!("ward-kernel: all programs ended; powering off with exit code ", code);
        crate::power::power_off(code)
    }
}

/// TSC cycles to nanoseconds, without overflow for any u64 count.
pub fn cycles_to_ns(cycles: u64, tsc_khz: u64) -> u64 {
    if tsc_khz == 0 {
        return 0;
    }
    (cycles / tsc_khz).saturating_mul(1_000_000) + (cycles % tsc_khz) * 1_000_000 / tsc_khz
}

/// Nanoseconds to TSC cycles, saturating.
pub fn ns_to_cycles(ns: u64, tsc_khz: u64) -> u64 {
    (ns / 1_000_000).saturating_mul(tsc_khz).saturating_add((ns % 1_000_000) * tsc_khz / 1_000_000)
}

/// The kernel state behind the single-CPU, interrupts-off rule.
pub struct Global(core::cell::UnsafeCell<Option<Kernel>>);

// SAFETY: one vCPU, and kernel code runs with interrupts off and is never
// re-entered (see the module documentation), so at most one `&mut Kernel`
// exists at a time.
unsafe impl Sync for Global {}

/// The kernel.
pub static KERNEL: Global = Global(core::cell::UnsafeCell::new(None));

impl Global {
    /// Installs the kernel state at boot.
    ///
    /// # Safety
    /// Called once, before interrupts or traps can reach [`Global::get`].
    pub unsafe fn set(&self, kernel: Kernel) {
        // SAFETY: the caller guarantees nobody else holds a reference.
        unsafe { *self.0.get() = Some(kernel) };
    }

    /// The kernel state.
    ///
    /// # Safety
    /// Called once per trap entry (or at boot), and the reference is not
    /// kept past the trap's return.
    #[allow(clippy::mut_from_ref, reason = "the single-CPU, interrupts-off rule makes it unique")]
    pub unsafe fn get(&self) -> Option<&mut Kernel> {
        // SAFETY: the caller guarantees uniqueness, as described above.
        unsafe { (*self.0.get()).as_mut() }
    }
}

impl core::fmt::Debug for Global {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Global")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_conversions_round_trip_and_never_overflow() {
        let khz = 2_596_138;
        assert_eq!(cycles_to_ns(2_596_138_000, khz), 1_000_000_000);
        assert_eq!(ns_to_cycles(1_000_000_000, khz), 2_596_138_000);
        assert_eq!(ns_to_cycles(u64::MAX, khz), u64::MAX);
        assert!(cycles_to_ns(u64::MAX, khz) > 7_000_000_000_000_000);
        assert_eq!(cycles_to_ns(5, 0), 0);
    }
}
