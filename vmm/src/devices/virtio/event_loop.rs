//! The device thread: one `event-manager` loop that runs all of a
//! compartment's virtio devices, apart from the vCPU thread.
//!
//! Each device is one subscriber ([`DeviceWorker`]) watching its queues'
//! notifiers (the eventfds KVM signals on QueueNotify), the wakeup eventfd
//! its transport signals on activation and reset, and, while the device has
//! room for it, its host input (console). A notify wakes the loop, which
//! takes the device's mutex and lets it work through the queue; the device
//! raises the interrupt itself (irqfd). [`StopHandle::stop`] ends the loop
//! when the guest has stopped.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::eventfd::EventFd;

use super::DeviceState;
use super::transport::DeviceChannels;
use crate::devices::WarnOnce;

/// Event data of the wakeup eventfd (queue notifiers carry their index).
const WAKEUP: u32 = u32::MAX;
/// Event data of the host input.
const INPUT: u32 = u32::MAX - 1;

/// Running the device loop failed on the host side.
#[derive(Debug, thiserror::Error)]
pub enum EventLoopError {
    /// The epoll instance could not be created.
    #[error("cannot create the device event loop: {0}")]
    Create(event_manager::Error),
    /// An eventfd could not be created.
    #[error("cannot create the device loop's stop eventfd: {0}")]
    EventFd(std::io::Error),
    /// A device's eventfds could not be watched.
    #[error("cannot watch the eventfds of {device}: {source}")]
    Watch {
        /// Which device.
        device: String,
        /// The error.
        source: event_manager::Error,
    },
    /// Waiting for events failed.
    #[error("the device event loop failed: {0}")]
    Wait(event_manager::Error),
}

/// Whether and how a device's host input is being watched.
#[derive(Debug)]
struct InputWatch {
    /// The descriptor in the epoll set, if any.
    watched: Option<RawFd>,
    /// epoll refuses regular files and `/dev/null` (EPERM); those never
    /// block, so the worker reads them whenever the device has room.
    pollable: bool,
}

/// One device on the loop.
#[derive(Debug)]
pub struct DeviceWorker {
    who: String,
    state: Arc<Mutex<DeviceState>>,
    notifiers: Vec<EventFd>,
    wakeup: EventFd,
    input: InputWatch,
    warned: WarnOnce,
    init_error: Option<event_manager::Error>,
}

impl DeviceWorker {
    /// A worker for the device `who` (for logs) behind `channels`.
    pub fn new(who: String, channels: DeviceChannels) -> Self {
        Self {
            who,
            state: channels.state,
            notifiers: channels.notifiers,
            wakeup: channels.wakeup,
            input: InputWatch { watched: None, pollable: true },
            warned: WarnOnce::default(),
            init_error: None,
        }
    }

    fn watch(&mut self, ops: &mut EventOps) -> Result<(), event_manager::Error> {
        for (index, notifier) in self.notifiers.iter().enumerate() {
            let data = u32::try_from(index).unwrap_or(WAKEUP - 2);
            ops.add(Events::with_data(notifier, data, EventSet::IN))?;
        }
        ops.add(Events::with_data(&self.wakeup, WAKEUP, EventSet::IN))
    }

    /// Watches the device's host input exactly while it has room for it.
    fn update_input(&mut self, state: &mut DeviceState, ops: &mut EventOps) {
        let wanted = state.wants_host_input();
        let fd = state.host_input();
        if let Some(watched) = self.input.watched
            && (!wanted || fd != Some(watched))
        {
            let _ = ops.remove(Events::empty_raw(watched));
            self.input.watched = None;
        }
        let Some(fd) = fd.filter(|_| wanted && self.input.watched.is_none()) else { return };
        if self.input.pollable {
            match ops.add(Events::with_data_raw(fd, INPUT, EventSet::IN)) {
                Ok(()) => self.input.watched = Some(fd),
                Err(event_manager::Error::Epoll(e)) if e.errno() == libc::EPERM => self.input.pollable = false,
                Err(e) => {
                    let who = &self.who;
                    self.warned.warn("input-watch", || format!("{who}: cannot watch host input: {e}; input ignored"));
                    self.input.pollable = false;
                    return;
                }
            }
        }
        if !self.input.pollable {
            while state.wants_host_input() && state.process_host_input() {}
        }
    }
}

impl MutEventSubscriber for DeviceWorker {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = self.watch(ops) {
            self.init_error = Some(e);
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let state = self.state.clone();
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        match events.data() {
            WAKEUP => {
                let _ = self.wakeup.read();
                // Activated: buffers may already wait. Reset: nothing runs.
                state.process_all_queues();
            }
            INPUT => {
                state.process_host_input();
            }
            index => {
                let index = usize::try_from(index).unwrap_or(usize::MAX);
                if let Some(notifier) = self.notifiers.get(index) {
                    let _ = notifier.read();
                }
                if !state.process_queue(index) {
                    let who = &self.who;
                    self.warned.warn("notify-before-driver-ok", || {
                        format!("{who}: queue {index} notified before DRIVER_OK; ignored")
                    });
                }
            }
        }
        self.update_input(&mut state, ops);
    }
}

/// Ends the loop.
#[derive(Debug)]
struct StopWatcher {
    event: EventFd,
}

impl MutEventSubscriber for StopWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        // Checked by `EventLoop::new` through the stop test below failing
        // loudly: without it the loop could never end.
        if let Err(e) = ops.add(Events::new(&self.event, EventSet::IN)) {
            log::error!("cannot watch the device loop's stop eventfd: {e}");
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.event.read();
    }
}

/// A subscriber of the loop.
#[derive(Debug)]
enum Member {
    Device(Box<DeviceWorker>),
    Stop(StopWatcher),
}

impl MutEventSubscriber for Member {
    fn init(&mut self, ops: &mut EventOps) {
        match self {
            Self::Device(worker) => worker.init(ops),
            Self::Stop(stop) => stop.init(ops),
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match self {
            Self::Device(worker) => worker.process(events, ops),
            Self::Stop(stop) => stop.process(events, ops),
        }
    }
}

/// Asks a running loop to end.
#[derive(Debug)]
pub struct StopHandle {
    requested: Arc<AtomicBool>,
    event: EventFd,
}

impl StopHandle {
    /// Ends the loop after the events at hand.
    pub fn stop(&self) {
        self.requested.store(true, Ordering::Release);
        if let Err(e) = self.event.write(1) {
            log::error!("cannot stop the device loop: {e}");
        }
    }
}

/// The device loop of one compartment.
pub struct EventLoop {
    manager: EventManager<Member>,
    requested: Arc<AtomicBool>,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop").finish_non_exhaustive()
    }
}

impl EventLoop {
    /// A loop running `workers`, and the handle that stops it.
    pub fn new(workers: Vec<DeviceWorker>) -> Result<(Self, StopHandle), EventLoopError> {
        let mut manager = EventManager::new().map_err(EventLoopError::Create)?;
        for worker in workers {
            let who = worker.who.clone();
            let id = manager.add_subscriber(Member::Device(Box::new(worker)));
            if let Ok(Member::Device(worker)) = manager.subscriber_mut(id)
                && let Some(source) = worker.init_error.take()
            {
                return Err(EventLoopError::Watch { device: who, source });
            }
        }
        let event = EventFd::new(libc::EFD_NONBLOCK).map_err(EventLoopError::EventFd)?;
        let stop = StopWatcher { event: event.try_clone().map_err(EventLoopError::EventFd)? };
        manager.add_subscriber(Member::Stop(stop));
        let requested = Arc::new(AtomicBool::new(false));
        Ok((Self { manager, requested: requested.clone() }, StopHandle { requested, event }))
    }

    /// Runs until [`StopHandle::stop`].
    pub fn run(mut self) -> Result<(), EventLoopError> {
        while !self.requested.load(Ordering::Acquire) {
            self.manager.run().map_err(EventLoopError::Wait)?;
        }
        Ok(())
    }

    /// Handles the events ready within `timeout_ms`; how many (tests).
    pub fn run_once(&mut self, timeout_ms: i32) -> Result<usize, EventLoopError> {
        self.manager.run_with_timeout(timeout_ms).map_err(EventLoopError::Wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::BusDevice;
    use crate::devices::virtio::console::{Console, ConsoleInput, RECEIVEQ, SharedSink};
    use crate::devices::virtio::rng::Rng;
    use crate::devices::virtio::testing::*;
    use crate::devices::virtio::transport::MmioTransport;
    use std::io::Write;
    use std::os::fd::OwnedFd;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use ward_abi::virtio::{feature, reg, status};

    fn write(transport: &mut MmioTransport, offset: u64, value: u32) {
        transport.write(offset, &value.to_le_bytes());
    }

    /// Brings the device up with every queue at its test base.
    fn bring_up(transport: &mut MmioTransport, queues: u32) {
        write(transport, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        write(transport, reg::DRIVER_FEATURES_SEL, 1);
        write(transport, reg::DRIVER_FEATURES, u32::try_from(feature::VERSION_1 >> 32).unwrap());
        write(transport, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        for index in 0..queues {
            let base = queue_base(usize::try_from(index).unwrap()).0;
            write(transport, reg::QUEUE_SEL, index);
            write(transport, reg::QUEUE_NUM, u32::from(TEST_QUEUE_SIZE));
            write(transport, reg::QUEUE_DESC_LOW, u32::try_from(base).unwrap());
            write(transport, reg::QUEUE_AVAIL_LOW, u32::try_from(base + 0x1000).unwrap());
            write(transport, reg::QUEUE_USED_LOW, u32::try_from(base + 0x2000).unwrap());
            write(transport, reg::QUEUE_READY, 1);
        }
        write(transport, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    }

    fn transport(
        device: Box<dyn super::super::VirtioDevice>,
        mem: &GuestMemoryMmap,
    ) -> (MmioTransport, EventLoop, StopHandle, EventFd) {
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let (transport, channels) =
            MmioTransport::new("test", "dev", device, mem.clone(), irqfd.try_clone().unwrap()).unwrap();
        let (event_loop, stop) = EventLoop::new(vec![DeviceWorker::new("dev".into(), channels)]).unwrap();
        (transport, event_loop, stop, irqfd)
    }

    /// Runs the loop until `done` holds (at most two seconds).
    fn run_until(event_loop: &mut EventLoop, done: impl Fn() -> bool) {
        for _ in 0..200 {
            if done() {
                return;
            }
            event_loop.run_once(10).unwrap();
        }
        assert!(done(), "the device loop did not get there");
    }

    #[test]
    fn a_notify_is_served_on_the_loop_and_interrupts() {
        let mem = memory();
        let (mut transport, mut event_loop, _stop, irqfd) = transport(Box::new(Rng::new("test")), &mem);
        bring_up(&mut transport, 1);
        offer(&mem, 0, 0, &[(0x8_0000, 32, true)]);
        write(&mut transport, reg::QUEUE_NOTIFY, 0);
        run_until(&mut event_loop, || used_count(&mem, 0) == 1);
        assert_eq!(used_entry(&mem, 0, 0), (0, 32));
        assert_eq!(irqfd.read().unwrap(), 1);
    }

    #[test]
    fn console_input_waits_for_buffers_then_arrives() {
        let mem = memory();
        let (reader, mut writer) = std::io::pipe().unwrap();
        let sink = SharedSink::new(Box::new(std::io::sink()));
        let console = Console::new("test", sink, Some(ConsoleInput::from(OwnedFd::from(reader))));
        let (mut transport, mut event_loop, _stop, _irqfd) = transport(Box::new(console), &mem);
        writer.write_all(b"early").unwrap();
        bring_up(&mut transport, 2);
        event_loop.run_once(10).unwrap();
        assert_eq!(used_count(&mem, RECEIVEQ), 0, "no buffer posted: the input waits in the pipe");
        offer(&mem, RECEIVEQ, 0, &[(0x8_0000, 64, true)]);
        write(&mut transport, reg::QUEUE_NOTIFY, 0);
        run_until(&mut event_loop, || used_count(&mem, RECEIVEQ) == 1);
        let mut got = [0u8; 5];
        mem.read_slice(&mut got, GuestAddress(0x8_0000)).unwrap();
        assert_eq!(&got, b"early");
    }

    #[test]
    fn unpollable_input_is_read_whenever_there_is_room() {
        let mem = memory();
        let path = std::env::temp_dir().join(format!("ward-vmm-input-{}", std::process::id()));
        std::fs::write(&path, b"from a file").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let console = Console::new(
            "test",
            SharedSink::new(Box::new(std::io::sink())),
            Some(ConsoleInput::from(OwnedFd::from(file))),
        );
        let (mut transport, mut event_loop, _stop, _irqfd) = transport(Box::new(console), &mem);
        bring_up(&mut transport, 2);
        offer(&mem, RECEIVEQ, 0, &[(0x8_0000, 64, true)]);
        write(&mut transport, reg::QUEUE_NOTIFY, 0);
        run_until(&mut event_loop, || used_count(&mem, RECEIVEQ) == 1);
        assert_eq!(used_entry(&mem, RECEIVEQ, 0), (0, 11));
    }

    #[test]
    fn hostile_queue_leaves_the_loop_running() {
        let mem = memory();
        let (mut transport, mut event_loop, stop, _irqfd) = transport(Box::new(Rng::new("test")), &mem);
        bring_up(&mut transport, 1);
        // A looping chain: the device needs a reset, the loop goes on.
        write_desc(&mem, 0, 0, raw_desc(0x8_0000, 16, ward_abi::virtio::desc::NEXT | ward_abi::virtio::desc::WRITE, 0));
        make_available(&mem, 0, 0);
        write(&mut transport, reg::QUEUE_NOTIFY, 0);
        run_until(&mut event_loop, || transport.status() & status::DEVICE_NEEDS_RESET != 0);
        // The driver resets and starts over; the device works again.
        write(&mut transport, reg::STATUS, 0);
        mem.write_slice(&[0u8; 0x3000], queue_base(0)).unwrap();
        bring_up(&mut transport, 1);
        offer(&mem, 0, 0, &[(0x8_0000, 8, true)]);
        write(&mut transport, reg::QUEUE_NOTIFY, 0);
        run_until(&mut event_loop, || used_count(&mem, 0) == 1);
        // And the loop stops when asked, from another thread.
        let runner = std::thread::spawn(move || event_loop.run());
        stop.stop();
        runner.join().unwrap().unwrap();
    }
}
