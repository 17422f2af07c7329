//! Introspection on the console: the process table and memory, printed by
//! the kernel itself (with `ward.stats`, at power-off) in the format the
//! `ps` program uses.

use crate::console::Bytes;
use crate::kernel::Kernel;
use crate::kprintln;
use crate::syscall::{mem_info, process_info};

/// Prints every process and the frame counts.
pub fn print(k: &Kernel) {
    kprintln!("  PID  PARENT STATE  PRI     CPU(us)  PAGES NAME");
    for p in k.procs.values() {
        let info = process_info(k, p);
        let state = ward_abi::syscall::ProcessState::from_raw(info.state).map_or("?", |s| s.as_str());
        kprintln!(
            "  ",
            info.pid,
            "  ",
            info.parent,
            "  ",
            state,
            "  ",
            info.priority,
            "  ",
            info.cpu_ns / 1000,
            "  ",
            info.pages,
            "  ",
            Bytes(p.name())
        );
    }
    let m = mem_info(k);
    kprintln!(
        "  memory: ",
        m.free_frames,
        " of ",
        m.total_frames,
        " frames free; heap ",
        m.heap_used,
        " of ",
        m.heap_size,
        " bytes used"
    );
}
