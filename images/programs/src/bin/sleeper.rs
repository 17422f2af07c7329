//! Sleeps until asked to stop: an idle compartment. It blocks in the
//! kernel (no CPU), and a `ward stop` ends it at once with exit code 0.

#![no_std]
#![no_main]

use ward_rt::{println, sys};

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    println!("sleeper: sleeping until asked to stop");
    sys::wait_for_stop();
    println!("sleeper: asked to stop; exiting");
    0
}
