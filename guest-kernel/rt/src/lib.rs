//! `ward-rt`: the runtime every Ward guest program links.
//!
//! Guest programs are static ELF executables that run in ring 3 of a
//! compartment, at native speed (ring 0 is emulated on our hosts; ring 3 is
//! not), so real work belongs here. The runtime gives them:
//! - the entry point (`_start`), which calls the program's `main` (declared
//!   with [`entry!`]) with its argument bytes and exits with its result;
//! - typed wrappers of every system call ([`sys`]);
//! - a heap (`alloc` works; memory comes from the `map` system call);
//! - [`print!`] and [`println!`] to the compartment's console, one system
//!   call per line;
//! - a panic handler that prints the message and exits with code 101;
//! - inter-compartment IPC over the vsock device ([`ipc`]).
//!
//! A program (built for the guest target, so not a host doctest):
//!
//! ```text
//! #![no_std]
//! #![no_main]
//! ward_rt::entry!(main);
//! fn main(_args: &[u8]) -> i32 {
//!     ward_rt::println!("hello from ring 3");
//!     0
//! }
//! ```

#![no_std]
// Narrowing casts are caught (`clippy::cast_possible_truncation`); the
// deliberate ones go through `ward_abi::width`, which names them.

extern crate alloc;

pub mod io;
pub mod ipc;
pub mod sys;

#[cfg(feature = "guest")]
mod runtime;

pub use ward_abi::syscall::Error;

/// Exit code of a program that panicked.
pub const EXIT_PANIC: i32 = 101;

/// Declares the program's `main`: `fn(args: &[u8]) -> i32`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[unsafe(no_mangle)]
        fn ward_main(args: &[u8]) -> i32 {
            $main(args)
        }
    };
}
