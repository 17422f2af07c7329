//! Keeps block device 0 until asked to stop, then writes a marker to its
//! first sector, flushes it and exits 0: what a storage compartment does
//! with what it has not yet written when `ward stop` asks it to stop.
//!
//! The marker is [`MARKER`], then the number of nanoseconds the program
//! waited, in decimal, then a newline; the rest of the sector is zeros.

#![no_std]
#![no_main]

use ward_rt::{println, sys};

ward_rt::entry!(main);

/// What the first sector starts with after a graceful stop.
const MARKER: &[u8] = b"ward stop-marker: stopped cleanly after ";

fn main(_args: &[u8]) -> i32 {
    let read_only = match sys::blk_info(0) {
        Ok(info) => info.read_only != 0,
        Err(e) => {
            println!("stop-marker: no block device 0: {}", e.as_str());
            return 1;
        }
    };
    if read_only {
        println!("stop-marker: block device 0 is read-only");
        return 1;
    }
    let started = sys::clock_ns();
    println!("stop-marker: waiting to be asked to stop");
    sys::wait_for_stop();
    let mut sector = [0u8; 512];
    let mut len = MARKER.len();
    sector[..len].copy_from_slice(MARKER);
    len += decimal(sys::clock_ns().saturating_sub(started), &mut sector[len..]);
    sector[len] = b'\n';
    match sys::blk_write(0, 0, &sector).and_then(|()| sys::blk_flush(0)) {
        Ok(()) => {
            println!("stop-marker: asked to stop; marker written and flushed");
            0
        }
        Err(e) => {
            println!("stop-marker: asked to stop; writing the marker failed: {}", e.as_str());
            1
        }
    }
}

/// Writes `n` in decimal at the start of `out`; returns how many bytes.
fn decimal(mut n: u64, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 20];
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (slot, digit) in out.iter_mut().zip(digits[..count].iter().rev()) {
        *slot = *digit;
    }
    count
}
