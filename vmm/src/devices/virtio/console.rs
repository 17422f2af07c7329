//! virtio-console (device type 3), one port, no multiport: the
//! compartment's normal output and input.
//!
//! Queue 1 (transmitq) carries the guest's output to the compartment's
//! console sink, filtered like the debug console's so a guest cannot send
//! escape sequences to the user's terminal. Queue 0 (receiveq) carries host
//! input (`ward run`'s stdin, or any file a test hands in) into the buffers
//! the guest posts; the event loop watches the input only while the guest
//! has buffers posted, so unread input waits in the host file, not in the
//! VMM. When the input ends (or there is none), every receive buffer comes
//! back empty (used length 0): that is how the guest learns of the end.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};

use vm_memory::ReadVolatile;
use ward_abi::virtio::device_id;

use super::queue::GuestChain;
use super::{ActiveQueues, HostInput, VirtioDevice, refuse_chain};
use crate::devices::WarnOnce;
use crate::devices::debug_console::sanitize;

/// receiveq: host to guest.
pub const RECEIVEQ: usize = 0;
/// transmitq: guest to host.
pub const TRANSMITQ: usize = 1;

/// Most bytes taken from one transmit chain (the rest is dropped and
/// logged): bounds what one guest request costs the device thread. The
/// kernel refuses larger writes, so its programs never lose bytes here.
pub const MAX_TRANSMIT: usize = ward_abi::syscall::MAX_WRITE_LEN;

/// The compartment's console output, shared by the debug console and the
/// virtio console (each writes whole chunks under the lock).
#[derive(Clone)]
pub struct SharedSink(Arc<Mutex<Box<dyn Write + Send>>>);

impl std::fmt::Debug for SharedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSink")
    }
}

impl SharedSink {
    /// Shares `sink`.
    pub fn new(sink: Box<dyn Write + Send>) -> Self {
        Self(Arc::new(Mutex::new(sink)))
    }
}

impl Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).flush()
    }
}

/// Where console input comes from: a readable file descriptor (a pipe, a
/// terminal, a socket, a regular file). Cloning shares the descriptor.
#[derive(Clone, Debug)]
pub struct ConsoleInput(Arc<File>);

impl ConsoleInput {
    /// The process's standard input (a duplicate of descriptor 0, so it
    /// stays open for the VMM whatever the rest of the process does).
    pub fn stdin() -> std::io::Result<Self> {
        use std::os::fd::AsFd;
        Ok(Self::from(std::io::stdin().as_fd().try_clone_to_owned()?))
    }
}

impl From<OwnedFd> for ConsoleInput {
    fn from(fd: OwnedFd) -> Self {
        Self(Arc::new(File::from(fd)))
    }
}

/// What the guest asked for: a virtio console and where its input comes
/// from. Its output goes to the compartment's console sink.
#[derive(Clone, Debug, Default)]
pub struct ConsoleConfig {
    /// Host input for the guest; `None`: the guest reads nothing.
    pub input: Option<ConsoleInput>,
}

/// The virtio console device.
#[derive(Debug)]
pub struct Console {
    who: String,
    sink: SharedSink,
    input: Option<ConsoleInput>,
    input_ended: bool,
    warned: WarnOnce,
}

impl Console {
    /// A console for `compartment` writing to `sink`, reading `input`.
    pub fn new(compartment: &str, sink: SharedSink, input: Option<ConsoleInput>) -> Self {
        Self {
            who: format!("compartment {compartment}: virtio console"),
            sink,
            input,
            input_ended: false,
            warned: WarnOnce::default(),
        }
    }

    fn transmit(&mut self, chain: &GuestChain, queues: &ActiveQueues) {
        let mut out = Vec::new();
        for range in chain.readable() {
            let Some(slice) = range.slice(queues.mem()) else { continue };
            let room = MAX_TRANSMIT - out.len();
            let take = slice.len().min(room);
            let start = out.len();
            out.resize(start + take, 0);
            slice.copy_to(&mut out[start..]);
            if take < slice.len() {
                let who = &self.who;
                self.warned.warn("transmit-too-long", || {
                    format!("{who}: a transmit buffer over {MAX_TRANSMIT} bytes; the rest is dropped")
                });
                break;
            }
        }
        if out.is_empty() {
            return;
        }
        // The user's terminal going away must not stop the guest.
        let _ = self.sink.write_all(&sanitize(&out)).and_then(|()| self.sink.flush());
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        device_id::CONSOLE
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_count(&self) -> usize {
        2
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) -> bool {
        // struct virtio_console_config { cols, rows: u16; max_nr_ports,
        // emerg_wr: u32 }: meaningful only with features we do not offer.
        data.fill(0);
        offset.checked_add(data.len() as u64).is_some_and(|end| end <= 12)
    }

    fn process_queue(&mut self, index: usize, queues: &mut ActiveQueues) {
        if index == RECEIVEQ {
            // Buffers posted on the receiveq wait for host input (the event
            // loop starts watching it), unless there is no more.
            if self.input.is_none() || self.input_ended {
                self.answer_end_of_input(queues);
            }
            return;
        }
        if index != TRANSMITQ {
            return;
        }
        while let Some(popped) = queues.pop(TRANSMITQ) {
            let chain = match popped {
                Ok(chain) => chain,
                Err(error) => {
                    refuse_chain(queues, &mut self.warned, &self.who, TRANSMITQ, error.returnable_head(), &error);
                    return;
                }
            };
            self.transmit(&chain, queues);
            queues.complete(TRANSMITQ, chain.head(), 0);
        }
    }

    fn host_input(&mut self) -> Option<&mut dyn HostInput> {
        Some(self)
    }
}

impl HostInput for Console {
    fn fd(&self) -> Option<RawFd> {
        if self.input_ended {
            return None;
        }
        self.input.as_ref().map(|input| input.0.as_raw_fd())
    }

    fn wants(&self, queues: &ActiveQueues) -> bool {
        self.fd().is_some() && queues.has_available(RECEIVEQ)
    }

    fn process(&mut self, queues: &mut ActiveQueues) -> bool {
        let Some(input) = self.input.clone().filter(|_| !self.input_ended) else { return false };
        let Some(popped) = queues.pop(RECEIVEQ) else { return false };
        let chain = match popped {
            Ok(chain) => chain,
            Err(error) => {
                refuse_chain(queues, &mut self.warned, &self.who, RECEIVEQ, error.returnable_head(), &error);
                return false;
            }
        };
        let Some(mut slice) =
            chain.writable().iter().find(|range| !range.is_empty()).and_then(|r| r.slice(queues.mem()))
        else {
            let error = "a receive buffer the device cannot write";
            let who = &self.who;
            self.warned.warn("receive-not-writable", || format!("{who}: {error}; the device needs a reset"));
            queues.complete(RECEIVEQ, chain.head(), 0);
            queues.report_error();
            return false;
        };
        // One read straight into the guest's buffer; the event loop only
        // calls this when the input is readable, so it does not block.
        match (&*input.0).read_volatile(&mut slice) {
            Ok(0) => {
                queues.complete(RECEIVEQ, chain.head(), 0);
                self.end_input(queues);
                true
            }
            Ok(read) => {
                let read = u32::try_from(read).unwrap_or(u32::MAX);
                queues.complete(RECEIVEQ, chain.head(), read);
                true
            }
            Err(vm_memory::VolatileMemoryError::IOError(e))
                if matches!(e.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock) =>
            {
                queues.unpop(RECEIVEQ);
                false
            }
            Err(e) => {
                let who = &self.who;
                self.warned.warn("input-error", || format!("{who}: reading host input failed: {e}; input ends"));
                queues.complete(RECEIVEQ, chain.head(), 0);
                self.end_input(queues);
                true
            }
        }
    }
}

impl Console {
    /// The input ended: every receive buffer from now on comes back empty.
    fn end_input(&mut self, queues: &mut ActiveQueues) {
        self.input_ended = true;
        log::debug!("{}: host input ended", self.who);
        self.answer_end_of_input(queues);
    }

    /// Returns every posted receive buffer empty: the guest's end of input.
    fn answer_end_of_input(&mut self, queues: &mut ActiveQueues) {
        while let Some(popped) = queues.pop(RECEIVEQ) {
            match popped {
                Ok(chain) => queues.complete(RECEIVEQ, chain.head(), 0),
                Err(error) => {
                    refuse_chain(queues, &mut self.warned, &self.who, RECEIVEQ, error.returnable_head(), &error);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn console(input: Option<ConsoleInput>) -> (Console, Capture, GuestMemoryMmap) {
        let capture = Capture::default();
        let console = Console::new("test", SharedSink::new(Box::new(capture.clone())), input);
        (console, capture, memory())
    }

    #[test]
    fn transmitted_bytes_reach_the_sink_filtered() {
        let (mut dev, capture, mem) = console(None);
        let (mut queues, irq) = active_queues(&mem, 2, 0);
        mem.write_slice(b"hello \x1b[31m", GuestAddress(0x8_0000)).unwrap();
        mem.write_slice(b"world\n", GuestAddress(0x9_0000)).unwrap();
        offer(&mem, TRANSMITQ, 0, &[(0x8_0000, 11, false), (0x9_0000, 6, false)]);
        dev.process_queue(TRANSMITQ, &mut queues);
        queues.signal_used();
        assert_eq!(&*capture.0.lock().unwrap(), b"hello ?[31mworld\n");
        assert_eq!(used_count(&mem, TRANSMITQ), 1);
        assert_eq!(irq.used(), 1);
    }

    #[test]
    fn input_fills_posted_buffers_and_waits_without_them() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let (mut dev, _, mem) = console(Some(ConsoleInput::from(OwnedFd::from(reader))));
        let (mut queues, _) = active_queues(&mem, 2, 0);
        assert!(!dev.wants(&queues), "no buffer posted yet");
        offer(&mem, RECEIVEQ, 0, &[(0x8_0000, 64, true)]);
        assert!(dev.wants(&queues));
        writer.write_all(b"typed\n").unwrap();
        assert!(dev.process(&mut queues));
        assert_eq!(used_entry(&mem, RECEIVEQ, 0), (0, 6));
        let mut got = [0u8; 6];
        mem.read_slice(&mut got, GuestAddress(0x8_0000)).unwrap();
        assert_eq!(&got, b"typed\n");
        assert!(!dev.wants(&queues), "the only buffer is used");
    }

    #[test]
    fn end_of_input_returns_buffers_empty_and_stops_watching() {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(writer);
        let (mut dev, _, mem) = console(Some(ConsoleInput::from(OwnedFd::from(reader))));
        let (mut queues, _) = active_queues(&mem, 2, 0);
        offer(&mem, RECEIVEQ, 0, &[(0x8_0000, 64, true)]);
        offer(&mem, RECEIVEQ, 1, &[(0x9_0000, 64, true)]);
        assert!(dev.process(&mut queues));
        assert_eq!((used_entry(&mem, RECEIVEQ, 0), used_entry(&mem, RECEIVEQ, 1)), ((0, 0), (1, 0)));
        assert!(dev.fd().is_none());
        assert!(!dev.wants(&queues));
        // Buffers posted later come back empty too.
        offer(&mem, RECEIVEQ, 2, &[(0xa_0000, 64, true)]);
        dev.process_queue(RECEIVEQ, &mut queues);
        assert_eq!(used_entry(&mem, RECEIVEQ, 2), (2, 0));
    }

    #[test]
    fn without_input_every_read_ends_at_once() {
        let (mut dev, _, mem) = console(None);
        let (mut queues, _) = active_queues(&mem, 2, 0);
        offer(&mem, RECEIVEQ, 0, &[(0x8_0000, 64, true)]);
        dev.process_queue(RECEIVEQ, &mut queues);
        assert_eq!(used_entry(&mem, RECEIVEQ, 0), (0, 0));
    }

    #[test]
    fn transmit_chain_outside_memory_needs_reset_and_device_survives() {
        let (mut dev, capture, mem) = console(None);
        let (mut queues, irq) = active_queues(&mem, 2, 0);
        offer(&mem, TRANSMITQ, 0, &[(0xf_fff0, 0x100, false)]);
        dev.process_queue(TRANSMITQ, &mut queues);
        assert_eq!(irq.resets(), 1);
        assert_eq!(used_entry(&mem, TRANSMITQ, 0), (0, 0), "the chain goes back empty");
        assert!(capture.0.lock().unwrap().is_empty());
        // A second bad chain is not processed (the device awaits a reset) nor re-reported.
        offer(&mem, TRANSMITQ, 1, &[(0xf_fff0, 0x100, false)]);
        dev.process_queue(TRANSMITQ, &mut queues);
        assert_eq!(irq.resets(), 1);
    }

    #[test]
    fn receive_buffer_the_device_cannot_write_needs_reset() {
        let (reader, _writer) = std::io::pipe().unwrap();
        let (mut dev, _, mem) = console(Some(ConsoleInput::from(OwnedFd::from(reader))));
        let (mut queues, irq) = active_queues(&mem, 2, 0);
        offer(&mem, RECEIVEQ, 0, &[(0x8_0000, 64, false)]);
        assert!(!dev.process(&mut queues));
        assert_eq!(irq.resets(), 1);
    }

    #[test]
    fn config_space_is_twelve_zero_bytes() {
        let (dev, _, _) = console(None);
        let mut data = [0xffu8; 4];
        assert!(dev.read_config(8, &mut data));
        assert_eq!(data, [0; 4]);
        assert!(!dev.read_config(12, &mut data));
    }
}
