//! IPC demonstration, the caller side: messages both ways, a page shared
//! without copying (checksummed by the other side), and a receive timeout.

#![no_std]
#![no_main]

use ward_programs::fnv1a;
use ward_rt::{Error, println, sys};

ward_rt::entry!(main);

const ROUNDS: u64 = 100;
const SHARED_PAGES: u64 = 4;

fn main(_args: &[u8]) -> i32 {
    let Ok(pong) = sys::spawn("ipc-pong", b"", None) else {
        println!("ipc-ping: cannot spawn ipc-pong");
        return 1;
    };
    let start = sys::clock_ns();
    for i in 0..ROUNDS {
        if sys::send(pong, [1, i, 0, 0]).is_err() {
            println!("ipc-ping: send failed");
            return 1;
        }
        match sys::recv(Some(1_000_000_000)) {
            Ok(m) if m.from == pong && m.words == [2, i + 1, 0, 0] => {}
            other => {
                println!("ipc-ping: bad reply {other:?}");
                return 1;
            }
        }
    }
    let per_round = (sys::clock_ns() - start) / ROUNDS;
    println!("ipc-ping: {ROUNDS} request/reply round trips, {} us each", per_round / 1000);

    let Ok(addr) = sys::map(SHARED_PAGES) else { return 1 };
    // SAFETY: `map` just gave us these pages, read-write.
    let buf =
        unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, usize::try_from(SHARED_PAGES * 4096).unwrap_or(0)) };
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i * 7 + 3).to_le_bytes()[0];
    }
    let sum = fnv1a(buf);
    if sys::share(pong, addr, SHARED_PAGES, false).is_err() || sys::send(pong, [3, sum, 0, 0]).is_err() {
        println!("ipc-ping: share failed");
        return 1;
    }
    match sys::recv(Some(1_000_000_000)) {
        Ok(m) if m.words[0] == 4 && m.words[1] == sum => {
            println!("ipc-ping: {} shared bytes checksummed {sum:#x} on both sides", SHARED_PAGES * 4096);
        }
        other => {
            println!("ipc-ping: shared page check failed: {other:?}");
            return 1;
        }
    }

    let before = sys::clock_ns();
    let timed_out = sys::recv(Some(20_000_000));
    let waited = sys::clock_ns() - before;
    if timed_out.map(|_| ()) != Err(Error::TimedOut) || waited < 20_000_000 {
        println!("ipc-ping: receive with a timeout did not time out properly ({waited} ns)");
        return 1;
    }
    println!("ipc-ping: an empty receive timed out after {} ms", waited / 1_000_000);
    let _ = sys::send(pong, [9, 0, 0, 0]);
    match sys::wait(pong) {
        Ok(sys::Status::Exited(0)) => 0,
        other => {
            println!("ipc-ping: ipc-pong ended with {other:?}");
            1
        }
    }
}
