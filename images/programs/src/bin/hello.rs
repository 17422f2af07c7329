//! The default compartment program: greets from ring 3, then runs `ps`.

#![no_std]
#![no_main]

use ward_rt::{println, sys};

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    println!("hello from ring 3: process {} at {} us after boot", sys::getpid(), sys::clock_ns() / 1000);
    // `ps` runs one priority below us, so it starts only once we wait for
    // it: the table it prints always shows us waiting.
    let below = sys::PRIORITY_DEFAULT + 1;
    match sys::spawn("ps", b"", Some(below)).and_then(sys::wait) {
        Ok(sys::Status::Exited(0)) => 0,
        Ok(status) => {
            println!("hello: ps ended with {status:?}");
            1
        }
        Err(e) => {
            println!("hello: cannot run ps: {}", e.as_str());
            1
        }
    }
}
