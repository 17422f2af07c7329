//! IPC demonstration, the answering side (see `ipc-ping`).

#![no_std]
#![no_main]

use ward_abi::syscall::SHARE_TAG;
use ward_programs::fnv1a;
use ward_rt::sys;

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    let mut shared: Option<(u64, u64)> = None;
    loop {
        let Ok(m) = sys::recv(None) else { return 1 };
        match m.words[0] {
            1 => {
                let _ = sys::send(m.from, [2, m.words[1] + 1, 0, 0]);
            }
            SHARE_TAG => shared = Some((m.words[1], m.words[2])),
            3 => {
                let Some((addr, pages)) = shared else { return 1 };
                // SAFETY: the kernel mapped these pages into us, read-only,
                // for as long as we keep them.
                let buf = unsafe {
                    core::slice::from_raw_parts(addr as *const u8, usize::try_from(pages * 4096).unwrap_or(0))
                };
                let _ = sys::send(m.from, [4, fnv1a(buf), 0, 0]);
            }
            9 => return 0,
            _ => return 1,
        }
    }
}
