//! Inter-compartment IPC peer: serves `echo` and `sink` over the vsock
//! device while it runs the steps its arguments name (the kernel command
//! line's words after `--`), one output line per step; after them it
//! prints `ipc: steps done` and serves forever. Everything runs in one
//! poll loop, so a compartment can call another that calls it back.
//!
//! Steps, separated by `,`:
//! - `call TO SERVICE[+ARG] BYTES`: echo BYTES pseudo-random bytes through
//!   TO's SERVICE; `ipc: call TO SERVICE BYTES: ok checksum=HEX ms=N` or
//!   `... failed: CODE: MESSAGE` (the router's code, `reset`, `closed`,
//!   `mismatch`, `timed-out`);
//! - `retry TO SERVICE BYTES`: `call` every 200 ms until it works, at most
//!   150 times; the final line ends in `attempts=K`;
//! - `ping TO N`: N rounds of 64 bytes through TO's `echo`:
//!   `ipc: ping TO 64 bytes x N: median_us=.. mean_us=.. min_us=..`;
//! - `bulk TO BYTES`: BYTES to TO's `sink`, which answers `got BYTES`:
//!   `ipc: bulk TO BYTES: ok ms=N mib_per_s=X.Y`;
//! - `flood-connect N`: N raw connection requests to the router at once,
//!   never a call line: `ipc: flood-connect N: accepted=A refused=R` (the
//!   router's `RESPONSE`s and `RST`s; the router queues at most 64 `RST`s
//!   per compartment, so R may be less than N - A);
//! - `flood-garbage N`: N malformed packets straight to the device:
//!   `ipc: flood-garbage N: sent=S errors=E` (E: refused by the kernel);
//! - `sleep MS`: serves for MS milliseconds (no output);
//! - `serve SERVICE`: also serves SERVICE, as an echo (no output).
//!
//! A step that fails as a whole prints `ipc: STEP: failed: CODE: MESSAGE`.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use ward_abi::vsock::{CALL_PORT, Header, ROUTER_CID, TYPE_STREAM, op};
use ward_programs::parse_u64;
use ward_rt::ipc::{ConnId, ConnState, Device, Ipc, IpcError};
use ward_rt::{println, sys};
use zerocopy::IntoBytes;

ward_rt::entry!(main);

const MS: u64 = 1_000_000;
/// How long a call may take to be answered (the router may ask the user,
/// who has 60 s by default).
const CONNECT_TIMEOUT_NS: u64 = 90_000 * MS;
/// How long a transfer may go without progress.
const STALL_TIMEOUT_NS: u64 = 30_000 * MS;
/// Bytes an echo holds before it stops reading (the caller then runs out
/// of credit).
const ECHO_BACKLOG: usize = 256 * 1024;
const CHUNK: usize = 128 * 1024;
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Deterministic pseudo-random bytes (xorshift64).
struct Stream(u64);

impl Stream {
    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
        }
    }
}

#[derive(PartialEq, Eq)]
enum Service {
    Echo,
    Sink,
}

/// A call we serve.
struct Served {
    conn: ConnId,
    service: Service,
    /// Bytes to send back, from `sent`.
    out: Vec<u8>,
    sent: usize,
    /// Bytes a sink got.
    got: u64,
    /// The caller's end came.
    eof: bool,
    /// The reply is queued: close once it is out.
    finishing: bool,
}

struct Peer {
    ipc: Ipc<Device>,
    served: Vec<Served>,
    scratch: Vec<u8>,
}

/// A step's failure: code and message for the output line.
struct Failure(String, String);

impl From<IpcError> for Failure {
    fn from(e: IpcError) -> Self {
        Failure(String::from(e.code()), String::from(e.message()))
    }
}

fn failure(code: &str, message: &str) -> Failure {
    Failure(String::from(code), String::from(message))
}

impl Peer {
    /// Handles packets (waiting at most `timeout_ns`) and serves.
    fn tick(&mut self, timeout_ns: Option<u64>) -> Result<(), IpcError> {
        let mut events = Vec::new();
        // Served calls with data to send wait for credit, which comes as a
        // packet: waiting is fine either way.
        self.ipc.poll(timeout_ns, &mut events)?;
        while let Some(a) = self.ipc.try_accept() {
            let name = a.service.split('+').next().unwrap_or("");
            // `sink` sinks; every other service listened for echoes.
            let service = if name == "sink" { Service::Sink } else { Service::Echo };
            self.served.push(Served {
                conn: a.conn,
                service,
                out: Vec::new(),
                sent: 0,
                got: 0,
                eof: false,
                finishing: false,
            });
        }
        let mut i = 0;
        while i < self.served.len() {
            if self.serve(i) {
                i += 1;
            } else {
                let s = self.served.swap_remove(i);
                self.ipc.close(s.conn);
            }
        }
        Ok(())
    }

    /// Moves served call `i` along; false when it is over.
    fn serve(&mut self, i: usize) -> bool {
        let Self { ipc, served, scratch } = self;
        let s = &mut served[i];
        while !s.eof && s.out.len() - s.sent < ECHO_BACKLOG {
            match ipc.try_recv(s.conn, scratch) {
                Ok(0) => s.eof = true,
                Ok(n) if s.service == Service::Echo => {
                    if s.sent == s.out.len() {
                        s.out.clear();
                        s.sent = 0;
                    }
                    s.out.extend_from_slice(&scratch[..n]);
                }
                Ok(n) => s.got += n as u64,
                Err(IpcError::WouldBlock) => break,
                Err(_) => return false,
            }
        }
        if s.eof && !s.finishing {
            s.finishing = true;
            if s.service == Service::Sink {
                let line = alloc::format!("got {}\n", s.got);
                s.out.extend_from_slice(line.as_bytes());
            }
        }
        if s.sent < s.out.len() {
            match ipc.try_send(s.conn, &s.out[s.sent..]) {
                Ok(n) => s.sent += n,
                Err(_) => return false,
            }
        }
        if s.finishing && s.sent == s.out.len() {
            let _ = ipc.shutdown_send(s.conn);
            return false;
        }
        true
    }

    /// Calls `service` of `to`, serving meanwhile.
    fn connect(&mut self, to: &str, service: &str) -> Result<ConnId, Failure> {
        let c = self.ipc.connect_start(to, service)?;
        let deadline = sys::clock_ns() + CONNECT_TIMEOUT_NS;
        loop {
            match self.ipc.state(c) {
                Some(ConnState::Open) => return Ok(c),
                Some(ConnState::Failed(e)) => {
                    self.ipc.close(c);
                    return Err(e.into());
                }
                None => return Err(IpcError::NoConnection.into()),
                Some(_) if sys::clock_ns() > deadline => {
                    self.ipc.close(c);
                    return Err(failure("timed-out", "no answer from the router"));
                }
                Some(_) => self.tick(Some(50 * MS))?,
            }
        }
    }

    /// Serves for `ms` milliseconds.
    fn idle(&mut self, ms: u64) -> Result<(), IpcError> {
        let deadline = sys::clock_ns() + ms * MS;
        loop {
            let now = sys::clock_ns();
            if now >= deadline {
                return Ok(());
            }
            self.tick(Some(deadline - now))?;
        }
    }

    /// Sends `bytes` pseudo-random bytes on `c` and reads what comes back
    /// until the peer's end; returns (sent checksum, bytes back, their
    /// checksum, the last bytes back).
    fn exchange(&mut self, c: ConnId, bytes: u64, keep: bool) -> Result<(u64, u64, u64, Vec<u8>), Failure> {
        let mut stream = Stream(0x9e37_79b9_7f4a_7c15 ^ bytes);
        let mut chunk = vec![0u8; CHUNK];
        let (mut chunk_len, mut chunk_off) = (0usize, 0usize);
        let (mut sent, mut back) = (0u64, 0u64);
        let (mut h_out, mut h_in) = (FNV_START, FNV_START);
        let mut kept = Vec::new();
        let mut buf = vec![0u8; CHUNK];
        let mut shut = false;
        let mut last_progress = sys::clock_ns();
        loop {
            let mut progress = false;
            if sent < bytes {
                if chunk_off == chunk_len {
                    chunk_len = usize::try_from(bytes - sent).map_or(CHUNK, |left| left.min(CHUNK));
                    stream.fill(&mut chunk[..chunk_len]);
                    chunk_off = 0;
                }
                let n = self.ipc.try_send(c, &chunk[chunk_off..chunk_len])?;
                h_out = fnv(h_out, &chunk[chunk_off..chunk_off + n]);
                chunk_off += n;
                sent += n as u64;
                progress |= n > 0;
            } else if !shut {
                self.ipc.shutdown_send(c)?;
                shut = true;
            }
            loop {
                match self.ipc.try_recv(c, &mut buf) {
                    Ok(0) => {
                        if sent < bytes {
                            return Err(failure("closed", "the peer ended the call early"));
                        }
                        return Ok((h_out, back, h_in, kept));
                    }
                    Ok(n) => {
                        h_in = fnv(h_in, &buf[..n]);
                        back += n as u64;
                        if keep && kept.len() < 256 {
                            kept.extend_from_slice(&buf[..n]);
                        }
                        progress = true;
                    }
                    Err(IpcError::WouldBlock) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            let now = sys::clock_ns();
            if progress {
                last_progress = now;
                self.tick(Some(0))?;
            } else if now - last_progress > STALL_TIMEOUT_NS {
                return Err(failure("timed-out", "no progress"));
            } else {
                self.tick(Some(20 * MS))?;
            }
        }
    }

    fn call_once(&mut self, to: &str, service: &str, bytes: u64) -> Result<(u64, u64), Failure> {
        let start = sys::clock_ns();
        let c = self.connect(to, service)?;
        let result = self.exchange(c, bytes, false);
        self.ipc.close(c);
        let (h_out, back, h_in, _) = result?;
        if back != bytes || h_in != h_out {
            let why = alloc::format!("sent {bytes} bytes checksum {h_out:x}, got {back} bytes checksum {h_in:x}");
            return Err(Failure(String::from("mismatch"), why));
        }
        Ok((h_out, (sys::clock_ns() - start) / MS))
    }

    fn call(&mut self, to: &str, service: &str, bytes: u64) {
        match self.call_once(to, service, bytes) {
            Ok((sum, ms)) => println!("ipc: call {to} {service} {bytes}: ok checksum={sum:x} ms={ms}"),
            Err(Failure(code, message)) => println!("ipc: call {to} {service} {bytes}: failed: {code}: {message}"),
        }
    }

    fn retry(&mut self, to: &str, service: &str, bytes: u64) {
        const ATTEMPTS: u32 = 150;
        for attempt in 1..=ATTEMPTS {
            match self.call_once(to, service, bytes) {
                Ok((sum, ms)) => {
                    println!("ipc: retry {to} {service} {bytes}: ok checksum={sum:x} ms={ms} attempts={attempt}");
                    return;
                }
                Err(Failure(code, message)) if attempt == ATTEMPTS => {
                    println!("ipc: retry {to} {service} {bytes}: failed: {code}: {message} attempts={attempt}");
                }
                Err(_) => {
                    let _ = self.idle(200);
                }
            }
        }
    }

    fn ping(&mut self, to: &str, rounds: u64) -> Result<(), Failure> {
        let c = self.connect(to, "echo")?;
        let result = self.ping_rounds(c, rounds);
        self.ipc.close(c);
        let mut times = result?;
        if times.is_empty() {
            return Err(failure("bad-step", "no rounds"));
        }
        times.sort_unstable();
        let median = times[times.len() / 2];
        let mean = times.iter().sum::<u64>() / times.len() as u64;
        println!("ipc: ping {to} 64 bytes x {rounds}: median_us={median} mean_us={mean} min_us={}", times[0]);
        Ok(())
    }

    fn ping_rounds(&mut self, c: ConnId, rounds: u64) -> Result<Vec<u64>, Failure> {
        let mut times = Vec::with_capacity(usize::try_from(rounds).map_or(0, |r| r.min(1 << 20)));
        let mut msg = [0u8; 64];
        let mut buf = [0u8; 64];
        for round in 0..rounds {
            msg[..8].copy_from_slice(&round.to_le_bytes());
            let start = sys::clock_ns();
            let mut off = 0;
            while off < msg.len() {
                off += self.ipc.try_send(c, &msg[off..])?;
                if off < msg.len() {
                    self.tick(Some(20 * MS))?;
                }
            }
            let mut got = 0;
            let deadline = start + STALL_TIMEOUT_NS;
            while got < buf.len() {
                match self.ipc.try_recv(c, &mut buf[got..]) {
                    Ok(0) => return Err(failure("closed", "the echo ended early")),
                    Ok(n) => got += n,
                    Err(IpcError::WouldBlock) if sys::clock_ns() > deadline => {
                        return Err(failure("timed-out", "no echo"));
                    }
                    Err(IpcError::WouldBlock) => self.tick(Some(20 * MS))?,
                    Err(e) => return Err(e.into()),
                }
            }
            times.push((sys::clock_ns() - start) / 1000);
            if buf != msg {
                return Err(failure("mismatch", "the echo differs"));
            }
        }
        let _ = self.ipc.shutdown_send(c);
        Ok(times)
    }

    fn bulk(&mut self, to: &str, bytes: u64) -> Result<(), Failure> {
        let start = sys::clock_ns();
        let c = self.connect(to, "sink")?;
        let result = self.exchange(c, bytes, true);
        self.ipc.close(c);
        let (_, _, _, reply) = result?;
        let ns = (sys::clock_ns() - start).max(1);
        let expected = alloc::format!("got {bytes}\n");
        if reply != expected.as_bytes() {
            let got = String::from_utf8_lossy(&reply);
            return Err(Failure(String::from("mismatch"), alloc::format!("sink said {:?}", got.trim_end())));
        }
        // MiB/s with one decimal, in integers.
        let tenths = u128::from(bytes) * 10 * 1_000_000_000 / (u128::from(ns) * 1024 * 1024);
        println!("ipc: bulk {to} {bytes}: ok ms={} mib_per_s={}.{}", ns / MS, tenths / 10, tenths % 10);
        Ok(())
    }

    /// Opens `n` connections to the router at once with raw `REQUEST`s,
    /// past the runtime's own limit, and never sends a call line: the
    /// router's answers show its limit (`RESPONSE`: accepted, `RST`:
    /// refused; the runtime resets each accepted one as a stranger).
    fn flood_connect(&mut self, n: u64) -> Result<(), Failure> {
        let before = self.ipc.stats();
        let cid = self.ipc.cid();
        for i in 0..n {
            let port = u32::try_from(i).unwrap_or(0).wrapping_add(0x3000_0000);
            let h = Header {
                src_cid: cid,
                dst_cid: ROUTER_CID,
                src_port: port,
                dst_port: CALL_PORT,
                kind: TYPE_STREAM,
                op: op::REQUEST,
                buf_alloc: 4096,
                ..Header::default()
            };
            self.ipc.send_raw(h.as_bytes())?;
        }
        // Collect the answers.
        let deadline = sys::clock_ns() + 3_000 * MS;
        while sys::clock_ns() < deadline {
            self.tick(Some(20 * MS))?;
        }
        let after = self.ipc.stats();
        let accepted = after.unknown_connection - before.unknown_connection;
        let refused = after.stray_rst - before.stray_rst;
        println!("ipc: flood-connect {n}: accepted={accepted} refused={refused}");
        Ok(())
    }

    fn flood_garbage(&mut self, n: u64) -> Result<(), Failure> {
        let mut rng = Stream(0x0005_eed0_f9a4_ba9e ^ n);
        let (mut sent, mut errors) = (0u64, 0u64);
        let mut packet = vec![0u8; 44 + 512];
        for i in 0..n {
            let mut r = [0u8; 8];
            rng.fill(&mut r);
            let len = 40 + usize::from(r[0]) + usize::from(r[1] & 1) * 256;
            rng.fill(&mut packet[..len]);
            if i % 2 == 0 && len >= 44 {
                // Half look plausible: our CID to the router, stream type,
                // random op, ports and lengths.
                packet[..8].copy_from_slice(&self.ipc.cid().to_le_bytes());
                packet[8..16].copy_from_slice(&2u64.to_le_bytes());
                packet[28..30].copy_from_slice(&1u16.to_le_bytes());
                packet[30..32].copy_from_slice(&u16::from(r[2] % 9).to_le_bytes());
                if r[3] & 1 == 0 {
                    packet[16..20].copy_from_slice(&1024u32.to_le_bytes());
                    packet[20..24].copy_from_slice(&1u32.to_le_bytes());
                }
            }
            match self.ipc.send_raw(&packet[..len]) {
                Ok(()) => sent += 1,
                Err(_) => errors += 1,
            }
            if i % 64 == 63 {
                self.tick(Some(0))?;
            }
        }
        println!("ipc: flood-garbage {n}: sent={sent} errors={errors}");
        Ok(())
    }

    fn step(&mut self, step: &str) {
        let words: Vec<&str> = step.split(' ').filter(|w| !w.is_empty()).collect();
        let num = |i: usize| words.get(i).and_then(|w| parse_u64(w.as_bytes()));
        let result = match (words.first().copied(), words.len()) {
            (Some("call"), 4) if num(3).is_some() => {
                self.call(words[1], words[2], num(3).unwrap_or(0));
                Ok(())
            }
            (Some("retry"), 4) if num(3).is_some() => {
                self.retry(words[1], words[2], num(3).unwrap_or(0));
                Ok(())
            }
            (Some("ping"), 3) if num(2).is_some() => self.ping(words[1], num(2).unwrap_or(0)),
            (Some("bulk"), 3) if num(2).is_some() => self.bulk(words[1], num(2).unwrap_or(0)),
            (Some("flood-connect"), 2) if num(1).is_some() => self.flood_connect(num(1).unwrap_or(0)),
            (Some("flood-garbage"), 2) if num(1).is_some() => self.flood_garbage(num(1).unwrap_or(0)),
            (Some("sleep"), 2) if num(1).is_some() => self.idle(num(1).unwrap_or(0)).map_err(Failure::from),
            (Some("serve"), 2) => self.ipc.listen(words[1]).map_err(Failure::from),
            _ => Err(failure("bad-step", "see ipc_peer.rs for the steps")),
        };
        if let Err(Failure(code, message)) = result {
            println!("ipc: {step}: failed: {code}: {message}");
        }
    }
}

fn main(args: &[u8]) -> i32 {
    let mut ipc = match Ipc::attach() {
        Ok(ipc) => ipc,
        Err(IpcError::NoDevice) => {
            println!("ipc: no vsock device");
            return 1;
        }
        Err(e) => {
            println!("ipc: cannot attach the vsock device: {}", e.message());
            return 1;
        }
    };
    for service in ["echo", "sink"] {
        if let Err(e) = ipc.listen(service) {
            println!("ipc: cannot listen for {service}: {}", e.message());
            return 1;
        }
    }
    println!("ipc: ready cid={}", ipc.cid());
    let mut peer = Peer { ipc, served: Vec::new(), scratch: vec![0u8; CHUNK] };
    let args = String::from_utf8_lossy(args);
    for step in args.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        peer.step(step);
    }
    println!("ipc: steps done");
    loop {
        if let Err(e) = peer.tick(None) {
            println!("ipc: serving failed: {}", e.message());
            return 1;
        }
    }
}
