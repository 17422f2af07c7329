//! Echoes the console's input, a line at a time, until the input ends or a
//! line says `quit`.

#![no_std]
#![no_main]

use ward_rt::{println, sys};

ward_rt::entry!(main);

fn main(_args: &[u8]) -> i32 {
    println!("echo: type lines; 'quit' ends");
    let mut line = [0u8; 256];
    let mut len = 0;
    let mut buf = [0u8; 256];
    loop {
        let n = match sys::read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                println!("echo: read failed: {}", e.as_str());
                return 1;
            }
        };
        for &b in &buf[..n] {
            if b == b'\n' || len == line.len() {
                let text = core::str::from_utf8(&line[..len]).unwrap_or("?");
                if text == "quit" {
                    println!("echo: bye");
                    return 0;
                }
                println!("echo: {text}");
                len = 0;
            }
            if b != b'\n' {
                line[len] = b;
                len += 1;
            }
        }
    }
    println!("echo: input ended");
    0
}
