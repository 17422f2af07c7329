//! Starting a program: a boot module becomes a process.
//!
//! Read-only segments are mapped from the module's frames in place (shared
//! by every process of the program, never copied, never freed); writable
//! segments get private frames holding a copy of their file bytes. The
//! stack is mapped one page at a time as it grows (the page-fault handler
//! adds pages down to `USER_STACK_MAX`), so a new process costs a few
//! frames, not its whole stack.

use alloc::collections::VecDeque;
use ward_abi::width::usize_from;

use ward_abi::layout::{USER_HEAP_BASE, USER_SHARE_BASE, USER_STACK_TOP};
use ward_abi::syscall::{Error, MAX_ARGS_LEN};

use super::elf::{self, PF_W, PF_X, Segment};
use super::{Pid, Process, State};
use crate::arch::gdt::{USER_CS, USER_DS};
use crate::kernel::{Kernel, Module};
use crate::mem::aspace::AddressSpace;
use crate::mem::paging::{MODULE_FRAME, MapError, NO_EXECUTE, WRITABLE};
use crate::mem::phys::{PAGE_SIZE, PhysMemory};
use crate::traps::TrapFrame;

/// RFLAGS of a new process: interrupts on.
const USER_RFLAGS: u64 = 0x202;

/// Starts module `name` as a child of `parent` with argument bytes `args`.
pub fn spawn(k: &mut Kernel, name: &[u8], args: &[u8], priority: u8, parent: Pid) -> Result<Pid, Error> {
    if args.len() > MAX_ARGS_LEN {
        return Err(Error::BadArgument);
    }
    let index = k.modules.iter().position(|m| m.name() == name).ok_or(Error::NoSuchProgram)?;
    let module = k.modules[index];
    let program = match module.program {
        Some(program) => program,
        None => {
            // SAFETY: boot modules are reserved memory the kernel never
            // writes, inside RAM (checked when the module list was read).
            let image = unsafe {
                core::slice::from_raw_parts(
                    crate::addr::phys_to_virt(module.phys) as *const u8,
                    usize_from(module.size),
                )
            };
            let program = elf::parse(image).map_err(|_| Error::BadProgram)?;
            k.modules[index].program = Some(program);
            program
        }
    };
    if k.procs.len() >= super::MAX_PROCESSES {
        return Err(Error::TooManyProcesses);
    }
    let mut space = AddressSpace::new(&mut k.mem, &mut k.frames, k.kernel_root).map_err(map_error)?;
    let args_addr = match load(k, &mut space, &module, &program, args) {
        Ok(addr) => addr,
        Err(e) => {
            space.destroy(&mut k.mem, &mut k.frames);
            return Err(e);
        }
    };
    let Some(kstack) = k.alloc_kstack() else {
        space.destroy(&mut k.mem, &mut k.frames);
        return Err(Error::NoMemory);
    };
    let pid = k.next_pid;
    k.next_pid += 1;
    let mut proc_name = [0u8; 16];
    let n = name.len().min(16);
    proc_name[..n].copy_from_slice(&name[..n]);
    let process = Process {
        pid,
        parent,
        name: proc_name,
        state: State::Runnable,
        priority,
        space: Some(space),
        kstack,
        fpu: None,
        cpu_cycles: 0,
        mailbox: VecDeque::new(),
        heap_next: USER_HEAP_BASE,
        share_next: USER_SHARE_BASE,
        fault: None,
        wait_fault_out: 0,
        // Started while the compartment stops: it is told at once.
        stop_pending: k.stopping,
    };
    let frame = TrapFrame {
        rip: program.entry,
        cs: u64::from(USER_CS),
        rflags: USER_RFLAGS,
        rsp: args_addr & !0xf,
        ss: u64::from(USER_DS),
        rdi: args_addr,
        rsi: args.len() as u64,
        ..TrapFrame::default()
    };
    // SAFETY: the kernel stack was just mapped; nothing else refers to it.
    unsafe { *process.frame() = frame };
    k.procs.insert(pid, process);
    k.run.push(pid, priority);
    k.sched_dirty = true;
    Ok(pid)
}

fn map_error(e: MapError) -> Error {
    match e {
        MapError::NoMemory => Error::NoMemory,
        MapError::AlreadyMapped(_) | MapError::Misaligned(_) => Error::BadProgram,
    }
}

/// Maps the program's segments and first stack page; copies `args` to the
/// top of the stack and returns their address.
fn load(
    k: &mut Kernel,
    space: &mut AddressSpace,
    module: &Module,
    program: &elf::Program,
    args: &[u8],
) -> Result<u64, Error> {
    for seg in &program.segments[..program.count] {
        load_segment(k, space, module, seg)?;
    }
    let stack_page = USER_STACK_TOP - PAGE_SIZE;
    let frame = space.map_zeroed(&mut k.mem, &mut k.frames, stack_page, WRITABLE | NO_EXECUTE).map_err(map_error)?;
    let args_addr = USER_STACK_TOP - (args.len() as u64).next_multiple_of(16) - 16;
    if !args.is_empty() {
        let dst = crate::addr::phys_to_virt(frame + (args_addr - stack_page)) as *mut u8;
        // SAFETY: the destination lies in the fresh stack frame (args are at
        // most MAX_ARGS_LEN < one page); `args` is a checked slice of the
        // caller's memory or kernel data; they cannot overlap.
        unsafe { crate::arch::copy_bytes(dst, args.as_ptr(), args.len()) };
    }
    Ok(args_addr)
}

fn load_segment(k: &mut Kernel, space: &mut AddressSpace, module: &Module, seg: &Segment) -> Result<(), Error> {
    let writable = seg.flags & PF_W != 0;
    let mut flags = if seg.flags & PF_X != 0 { 0 } else { NO_EXECUTE };
    if writable {
        flags |= WRITABLE;
    }
    // Read-only pages come from the module itself, unless the segment has
    // zero-fill (.bss-like) bytes that the module page would not hold.
    let in_place = !writable && seg.file_size == seg.mem_size;
    let file_page = seg.offset & !(PAGE_SIZE - 1);
    let mut page = seg.page_start();
    while page < seg.page_end() {
        if in_place {
            let phys = module.phys + file_page + (page - seg.page_start());
            space.map(&mut k.mem, &mut k.frames, page, phys, flags | MODULE_FRAME).map_err(map_error)?;
        } else {
            let frame = space.map_zeroed(&mut k.mem, &mut k.frames, page, flags).map_err(map_error)?;
            // The file bytes that fall in this page, if any.
            let start = page.max(seg.vaddr);
            let end = (page + PAGE_SIZE).min(seg.vaddr + seg.file_size);
            if end > start {
                let src = module.phys + seg.offset + (start - seg.vaddr);
                k.mem.copy_bytes(frame + (start - page), src, end - start);
            }
        }
        page += PAGE_SIZE;
    }
    Ok(())
}
