//! The seed corpora: hand-made inputs that reach what a fuzzer starting
//! from nothing does not (a completed read, write and flush; a device past
//! the driver handshake with buffers on its queues; calls the router
//! allows, denies and asks about). `cargo run --example seeds` (in
//! `fuzz/`) writes them to `fuzz/seeds/<target>/`; `tests/seeds.rs` checks
//! that the checked-in files are these and that each gets where it should.
//!
//! Each seed is described (requests, buffers, what the device must answer)
//! as well as encoded, so the tests check the outcome against what the
//! seed was made to do.

use ward_abi::virtio::{blk, feature, reg, status};
use ward_abi::vsock::{op, service_port};

use crate::image::{Buffer, Image, QUEUE_SIZE, avail_ring, desc_table, used_ring};
use crate::{block, mmio};

/// One seed file.
#[derive(Clone, Debug)]
pub struct Seed {
    /// Its file name.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// The targets and their seeds, by target name.
pub fn all() -> Vec<(&'static str, Vec<Seed>)> {
    let named = |seeds: Vec<(String, Vec<u8>)>| -> Vec<Seed> {
        seeds.into_iter().map(|(name, bytes)| Seed { name, bytes }).collect()
    };
    vec![
        ("policy_parser", named(policy().into_iter().map(|(n, t)| (n.to_owned(), t.into_bytes())).collect())),
        ("virtio_block_request", named(block().into_iter().map(|s| (s.name.to_owned(), s.bytes())).collect())),
        ("virtio_mmio_registers", named(mmio().into_iter().map(|s| (s.name.to_owned(), s.bytes())).collect())),
        ("ipc_router", named(router().into_iter().map(|s| (s.name.to_owned(), s.script.0)).collect())),
    ]
}

// ---------------------------------------------------------------------------
// Block requests (virtio_block_request, and the block device behind
// virtio_mmio_registers).

/// One virtio-blk request of a seed, and what the device must answer.
#[derive(Clone, Debug)]
pub struct BlockRequest {
    /// Its type (`blk::T_*`).
    pub kind: u32,
    /// First sector.
    pub sector: u64,
    /// Its descriptors.
    pub chain: Vec<Buffer>,
    /// The data bytes, where they are in guest memory.
    pub data: Vec<(u64, u32)>,
    /// Where the status byte is.
    pub status: u64,
    /// The status the device must write.
    pub expect: u8,
}

impl BlockRequest {
    /// Whether the device must have completed it (moved the data).
    pub fn succeeds(&self) -> bool {
        self.expect == blk::S_OK
    }

    /// The bytes a write request writes, as the seed's image holds them.
    pub fn write_content(&self) -> Vec<u8> {
        let len: usize = self.data.iter().map(|&(_, len)| len as usize).sum();
        b"ward fuzz seed: bytes the guest writes. "
            .iter()
            .copied()
            .cycle()
            .skip(self.sector as usize)
            .take(len)
            .collect()
    }
}

/// Places requests' buffers in guest memory, from `next` up.
#[derive(Debug)]
pub struct Placer {
    next: u64,
}

impl Placer {
    /// Buffers from `start` up.
    pub fn new(start: u64) -> Self {
        Self { next: start }
    }

    fn take(&mut self, len: u32) -> u64 {
        let at = self.next;
        self.next = (at + u64::from(len) + 15) & !15;
        at
    }

    /// A request in the usual shape: a 16-byte header, data buffers of
    /// `lens` bytes, a status byte, each its own descriptor.
    pub fn request(&mut self, kind: u32, sector: u64, lens: &[u32], expect: u8) -> BlockRequest {
        let header = self.take(16);
        let data: Vec<(u64, u32)> = lens.iter().map(|&len| (self.take(len), len)).collect();
        let status = self.take(1);
        let data_writable = kind != blk::T_OUT;
        let mut chain = vec![Buffer::readable(header, 16)];
        chain.extend(data.iter().map(|&(addr, len)| Buffer { addr, len, writable: data_writable }));
        chain.push(Buffer::writable(status, 1));
        BlockRequest { kind, sector, chain, data, status, expect }
    }

    /// A request in two descriptors, as the parser also takes: what the
    /// device reads (header, then any data to write) in one, what it writes
    /// (any data read, then the status byte) in the other.
    pub fn merged(&mut self, kind: u32, sector: u64, len: u32, expect: u8) -> BlockRequest {
        let readable_len = 16 + if kind == blk::T_OUT { len } else { 0 };
        let writable_len = 1 + if kind == blk::T_OUT { 0 } else { len };
        let readable = self.take(readable_len);
        let writable = self.take(writable_len);
        let data = if kind == blk::T_OUT { (readable + 16, len) } else { (writable, len) };
        let status = writable + u64::from(writable_len) - 1;
        let chain = vec![Buffer::readable(readable, readable_len), Buffer::writable(writable, writable_len)];
        BlockRequest { kind, sector, chain, data: vec![data], status, expect }
    }
}

/// Writes `requests` on queue `q` of `image`: headers, the data of writes,
/// descriptors and the available ring.
pub fn put_requests(image: &mut Image, q: usize, requests: &[BlockRequest]) {
    for request in requests {
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&request.kind.to_le_bytes());
        header[8..].copy_from_slice(&request.sector.to_le_bytes());
        image.put(request.chain[0].addr, &header);
        if request.kind == blk::T_OUT {
            let content = request.write_content();
            let mut at = 0;
            for &(addr, len) in &request.data {
                image.put(addr, &content[at..at + len as usize]);
                at += len as usize;
            }
        }
        // The status byte starts as none of the answers.
        image.put(request.status, &[0xff]);
        image.chain(q, &request.chain);
    }
    // The used ring starts empty, as a driver leaves it.
    image.put(used_ring(q), &[0u8; 4 + 8 * QUEUE_SIZE as usize]);
}

/// A `virtio_block_request` seed.
#[derive(Clone, Debug)]
pub struct BlockSeed {
    /// File name.
    pub name: &'static str,
    /// Byte 0 ([`block::READ_ONLY`], [`block::FLUSH`]).
    pub flags: u8,
    /// Its requests, in queue order.
    pub requests: Vec<BlockRequest>,
}

impl BlockSeed {
    /// The input.
    pub fn bytes(&self) -> Vec<u8> {
        let mut image = Image::new();
        put_requests(&mut image, 0, &self.requests);
        let mut bytes = vec![self.flags];
        bytes.extend(image.into_bytes());
        bytes
    }
}

/// Where block buffers start (after queue 0's rings).
const BLOCK_BUFFERS: u64 = 0x300;

/// The `virtio_block_request` seeds.
pub fn block() -> Vec<BlockSeed> {
    use blk::{S_IOERR, S_OK, S_UNSUPP, T_FLUSH, T_GET_ID, T_IN, T_OUT};
    let seed = |name, flags, make: &dyn Fn(&mut Placer) -> Vec<BlockRequest>| BlockSeed {
        name,
        flags,
        requests: make(&mut Placer::new(BLOCK_BUFFERS)),
    };
    let last = block::SECTORS - 1;
    vec![
        seed("read", block::FLUSH, &|p| vec![p.request(T_IN, 2, &[1024], S_OK)]),
        seed("read-split", block::FLUSH, &|p| vec![p.request(T_IN, 3, &[700, 324, 512], S_OK)]),
        seed("read-merged", block::FLUSH, &|p| vec![p.merged(T_IN, 6, 512, S_OK)]),
        seed("write", block::FLUSH, &|p| vec![p.request(T_OUT, 5, &[512], S_OK)]),
        seed("write-split", block::FLUSH, &|p| vec![p.request(T_OUT, 9, &[512, 256, 256], S_OK)]),
        seed("write-merged", block::FLUSH, &|p| vec![p.merged(T_OUT, 12, 1024, S_OK)]),
        seed("write-through", 0, &|p| vec![p.request(T_OUT, 7, &[512], S_OK)]),
        seed("flush", block::FLUSH, &|p| vec![p.request(T_FLUSH, 0, &[], S_OK)]),
        seed("get-id", block::FLUSH, &|p| vec![p.request(T_GET_ID, 0, &[20], S_OK)]),
        seed("write-read-flush", block::FLUSH, &|p| {
            vec![
                p.request(T_OUT, 1, &[512], S_OK),
                p.request(T_IN, 1, &[512], S_OK),
                p.request(T_IN, last, &[512], S_OK),
                p.request(T_FLUSH, 0, &[], S_OK),
                p.request(T_GET_ID, 0, &[8, 12], S_OK),
            ]
        }),
        seed("read-only", block::READ_ONLY | block::FLUSH, &|p| {
            vec![
                p.request(T_IN, 4, &[512], S_OK),
                p.request(T_OUT, 4, &[512], S_IOERR),
                p.request(T_FLUSH, 0, &[], S_OK),
            ]
        }),
        seed("refused", block::FLUSH, &|p| {
            vec![
                p.request(T_IN, last, &[1024], S_IOERR),
                p.request(T_OUT, 2, &[100], S_IOERR),
                p.request(3, 0, &[], S_UNSUPP),
                p.request(T_FLUSH, 0, &[512], S_IOERR),
            ]
        }),
    ]
}

// ---------------------------------------------------------------------------
// Register sequences (virtio_mmio_registers).

/// A `virtio_mmio_registers` input's operations.
#[derive(Clone, Debug, Default)]
pub struct MmioScript(pub Vec<u8>);

impl MmioScript {
    fn op(&mut self, op: mmio::Op, width: u8, offset: u64, value: u32) -> &mut Self {
        let offset = u16::try_from(offset).expect("offset");
        self.0.extend([op as u8, width]);
        self.0.extend(offset.to_le_bytes());
        self.0.extend(value.to_le_bytes());
        self
    }

    /// A 32-bit register write, as a driver makes it.
    pub fn write(&mut self, offset: u64, value: u32) -> &mut Self {
        self.op(mmio::Op::Register, 2, offset, value)
    }

    /// A read of `len` bytes (1, 2, 4 or 8).
    pub fn read(&mut self, offset: u64, len: u8) -> &mut Self {
        let width = match len {
            1 => 0,
            2 => 1,
            4 => 2,
            _ => 3,
        };
        self.op(mmio::Op::Read, width, offset, 0)
    }

    /// The device thread's turn.
    pub fn device_thread(&mut self) -> &mut Self {
        self.op(mmio::Op::DeviceThread, 0, 0, 0)
    }

    /// Notifies queue `q`.
    pub fn notify(&mut self, q: u32) -> &mut Self {
        self.write(reg::QUEUE_NOTIFY, q)
    }

    /// The driver's handshake, register by register, accepting `features`,
    /// with `queues` queues laid out as [`crate::image`] says.
    pub fn handshake(&mut self, features: u64, queues: usize) -> &mut Self {
        use status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
        self.read(reg::MAGIC_VALUE, 4).read(reg::VERSION, 4).read(reg::DEVICE_ID, 4);
        self.write(reg::STATUS, 0).write(reg::STATUS, ACKNOWLEDGE).write(reg::STATUS, ACKNOWLEDGE | DRIVER);
        self.write(reg::DEVICE_FEATURES_SEL, 0).read(reg::DEVICE_FEATURES, 4);
        self.write(reg::DEVICE_FEATURES_SEL, 1).read(reg::DEVICE_FEATURES, 4);
        self.write(reg::DRIVER_FEATURES_SEL, 0).write(reg::DRIVER_FEATURES, features as u32);
        self.write(reg::DRIVER_FEATURES_SEL, 1).write(reg::DRIVER_FEATURES, (features >> 32) as u32);
        self.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK).read(reg::STATUS, 4);
        for q in 0..queues {
            self.write(reg::QUEUE_SEL, q as u32).read(reg::QUEUE_NUM_MAX, 4);
            self.write(reg::QUEUE_NUM, u32::from(QUEUE_SIZE));
            self.write(reg::QUEUE_DESC_LOW, desc_table(q) as u32).write(reg::QUEUE_DESC_HIGH, 0);
            self.write(reg::QUEUE_AVAIL_LOW, avail_ring(q) as u32).write(reg::QUEUE_AVAIL_HIGH, 0);
            self.write(reg::QUEUE_USED_LOW, used_ring(q) as u32).write(reg::QUEUE_USED_HIGH, 0);
            self.write(reg::QUEUE_READY, 1).read(reg::QUEUE_READY, 4);
        }
        self.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
    }

    /// Acknowledges the interrupt, as a driver's handler does.
    pub fn interrupt(&mut self) -> &mut Self {
        self.read(reg::INTERRUPT_STATUS, 4).write(reg::INTERRUPT_ACK, 3)
    }
}

/// A `virtio_mmio_registers` seed.
#[derive(Clone, Debug)]
pub struct MmioSeed {
    /// File name.
    pub name: &'static str,
    /// Byte 0.
    pub choice: u8,
    /// Guest memory.
    pub image: Vec<u8>,
    /// The operations.
    pub script: MmioScript,
    /// What must happen.
    pub expect: MmioExpect,
}

/// What an MMIO seed must do.
#[derive(Clone, Debug, Default)]
pub struct MmioExpect {
    /// Chains the device must have returned, per queue.
    pub used: Vec<u16>,
    /// Block requests on queue 0 and their answers.
    pub block: Vec<BlockRequest>,
    /// Entropy buffers on queue 0 the device must have filled.
    pub rng: Vec<(u64, u32)>,
    /// What the console must have written.
    pub console_out: &'static [u8],
    /// Console receive buffers (queue 0): where the host input must land.
    pub console_in: Vec<(u64, u32)>,
    /// The device must have needed a reset at some point.
    pub needs_reset: bool,
}

impl MmioSeed {
    /// The input.
    pub fn bytes(&self) -> Vec<u8> {
        let len = u16::try_from(self.image.len()).expect("image length");
        let mut bytes = vec![self.choice];
        bytes.extend(len.to_le_bytes());
        bytes.extend(&self.image);
        bytes.extend(&self.script.0);
        bytes
    }
}

/// Where MMIO buffers start (after queue 1's rings).
const MMIO_BUFFERS: u64 = 0x1300;

/// What the console seeds' guest writes.
pub const CONSOLE_OUTPUT: &[u8] = b"hello from the fuzzed guest\n";

/// Guest memory for a device of `choice`: buffers on its queues, and what
/// the seed must make of them.
fn mmio_work(choice: u8) -> (Vec<u8>, MmioExpect) {
    let mut image = Image::new();
    let mut placer = Placer::new(MMIO_BUFFERS);
    let mut expect = MmioExpect::default();
    match choice & 3 {
        mmio::RNG => {
            let a = placer.take(64);
            let b = placer.take(200);
            image.chain(0, &[Buffer::writable(a, 64)]);
            image.chain(0, &[Buffer::writable(b, 100), Buffer::writable(b + 100, 100)]);
            expect.rng = vec![(a, 64), (b, 200)];
            expect.used = vec![2];
        }
        mmio::CONSOLE => {
            let out = placer.take(CONSOLE_OUTPUT.len() as u32);
            image.put(out, CONSOLE_OUTPUT);
            let split = 6;
            image.chain(
                1,
                &[
                    Buffer::readable(out, split),
                    Buffer::readable(out + u64::from(split), CONSOLE_OUTPUT.len() as u32 - split),
                ],
            );
            let input = placer.take(64);
            image.chain(0, &[Buffer::writable(input, 64)]);
            // A second receive buffer: it comes back empty, at the input's end.
            let end = placer.take(64);
            image.chain(0, &[Buffer::writable(end, 64)]);
            expect.console_out = CONSOLE_OUTPUT;
            expect.console_in = vec![(input, 64)];
            expect.used = vec![2, 1];
        }
        kind => {
            let ok_unless_read_only = if kind == mmio::BLOCK_READ_ONLY { blk::S_IOERR } else { blk::S_OK };
            let requests = vec![
                placer.request(blk::T_OUT, 3, &[512, 512], ok_unless_read_only),
                placer.request(blk::T_IN, 2, &[1024, 512], blk::S_OK),
                placer.request(blk::T_FLUSH, 0, &[], blk::S_OK),
                placer.request(blk::T_GET_ID, 0, &[20], blk::S_OK),
            ];
            put_requests(&mut image, 0, &requests);
            expect.used = vec![requests.len() as u16];
            expect.block = requests;
        }
    }
    (image.into_bytes(), expect)
}

/// The features a device offers besides VERSION_1.
fn device_features(choice: u8) -> u64 {
    match choice & 3 {
        mmio::BLOCK => feature::BLK_FLUSH,
        mmio::BLOCK_READ_ONLY => feature::BLK_FLUSH | feature::BLK_RO,
        _ => 0,
    }
}

fn queue_count(choice: u8) -> usize {
    if choice & 3 == mmio::CONSOLE { 2 } else { 1 }
}

/// The `virtio_mmio_registers` seeds.
pub fn mmio() -> Vec<MmioSeed> {
    let devices =
        [("rng", mmio::RNG), ("console", mmio::CONSOLE), ("block", mmio::BLOCK), ("block-ro", mmio::BLOCK_READ_ONLY)];
    let mut seeds = Vec::new();
    for (device, choice) in devices {
        let name = |what: &str| -> &'static str { format!("{device}-{what}").leak() };
        let queues = queue_count(choice);
        let features = feature::VERSION_1 | device_features(choice);
        let (image, expect) = mmio_work(choice);
        let notify_all = |script: &mut MmioScript| {
            for q in (0..queues).rev() {
                script.notify(q as u32);
            }
            script.device_thread().interrupt();
        };

        // The driver's whole handshake in registers, then the queues' work.
        let mut script = MmioScript::default();
        script.handshake(features, queues);
        if choice & 2 != 0 {
            // The block device's capacity, as a driver reads it.
            script.read(reg::CONFIG, 4).read(reg::CONFIG + 4, 4).read(reg::CONFIG, 8);
        }
        notify_all(&mut script);
        seeds.push(MmioSeed { name: name("driver"), choice, image: image.clone(), script, expect: expect.clone() });

        // The target's handshake, every feature taken: the input only
        // drives the queues.
        let mut script = MmioScript::default();
        notify_all(&mut script);
        let choice_hs = choice | mmio::HANDSHAKE | mmio::ALL_FEATURES;
        seeds.push(MmioSeed {
            name: name("handshake"),
            choice: choice_hs,
            image: image.clone(),
            script,
            expect: expect.clone(),
        });

        // The target's handshake with VERSION_1 only, a reset, and the
        // driver's handshake again (the queues start over).
        let mut script = MmioScript::default();
        script.write(reg::STATUS, 0);
        script.handshake(features, queues);
        notify_all(&mut script);
        seeds.push(MmioSeed {
            name: name("reset"),
            choice: choice | mmio::HANDSHAKE,
            image: image.clone(),
            script,
            expect: expect.clone(),
        });
    }

    // Protocol errors: a queue set up before features were negotiated and
    // a write to a read-only register make the device need a reset; the
    // reset clears it and a handshake then goes through.
    let (image, mut expect) = mmio_work(mmio::RNG);
    let mut script = MmioScript::default();
    script.write(reg::STATUS, status::ACKNOWLEDGE).write(reg::QUEUE_NUM, 16).write(reg::MAGIC_VALUE, 1);
    script.read(reg::STATUS, 4).read(reg::STATUS, 1).write(reg::STATUS, 0);
    script.handshake(feature::VERSION_1, 1);
    script.notify(0).device_thread();
    expect.needs_reset = true;
    seeds.push(MmioSeed { name: "rng-needs-reset", choice: mmio::RNG, image, script, expect });
    seeds
}

// ---------------------------------------------------------------------------
// Guest packets (ipc_router).

/// A port, as the router target encodes it.
#[derive(Clone, Copy, Debug)]
pub enum Port {
    /// The router's call port.
    Call,
    /// 1024 + n (n < 8).
    Local(u8),
    /// The `echo` service's port.
    Echo,
    /// Any.
    Raw(u32),
}

/// An `ipc_router` input: steps as [`crate::router::run`] reads them.
#[derive(Clone, Debug, Default)]
pub struct RouterScript(pub Vec<u8>);

/// Mail, the first guest.
pub const MAIL: u8 = 0;
/// Vault, the second.
pub const VAULT: u8 = 1;

impl RouterScript {
    /// A well-formed packet from `guest`, with a 64 KiB receive buffer.
    pub fn packet(&mut self, guest: u8, dst: Port, src: Port, operation: u16, payload: &[u8], flags: u32) -> &mut Self {
        let (dst_sel, dst_bytes) = match dst {
            Port::Call => (0, vec![]),
            Port::Raw(port) => (1, port.to_le_bytes().to_vec()),
            Port::Echo => (1, service_port(b"echo").to_le_bytes().to_vec()),
            Port::Local(n) => (2, vec![n]),
        };
        let (src_sel, src_bytes) = match src {
            Port::Local(n) => (0, vec![n]),
            Port::Echo => (1, vec![]),
            Port::Raw(port) => (2, port.to_le_bytes().to_vec()),
            Port::Call => (2, 1u32.to_le_bytes().to_vec()),
        };
        self.0.extend([guest, crate::router::Step::Packet as u8, dst_sel + 4 * src_sel]);
        self.0.extend(dst_bytes);
        self.0.extend(src_bytes);
        self.0.push(u8::try_from(operation - 1).expect("operation"));
        let len = payload.len();
        let encoded =
            (1..=4).find_map(|k| (len.is_multiple_of(k) && len / k <= 255).then(|| [(len / k) as u8, (k - 1) as u8]));
        self.0.extend(encoded.expect("payload length"));
        self.0.extend(payload);
        // flags, buf_alloc (64 KiB), fwd_cnt 0.
        self.0.extend([u8::try_from(flags).expect("flags"), 64, 0, 0, 0, 0]);
        self
    }

    /// `guest` takes up to `count` packets into 4 KiB buffers.
    pub fn drain(&mut self, guest: u8, count: u8) -> &mut Self {
        self.0.extend([guest, crate::router::Step::Drain as u8, 8, count]);
        self
    }

    /// The user answers ask `id`.
    pub fn answer(&mut self, id: u8, allow: bool) -> &mut Self {
        self.0.extend([0, crate::router::Step::Answer as u8, id, u8::from(!allow)]);
        self
    }

    /// `seconds` pass.
    pub fn tick(&mut self, seconds: u8) -> &mut Self {
        self.0.extend([0, crate::router::Step::Tick as u8, seconds]);
        self
    }

    /// `guest` opens a connection to the call port from 1024 + `port` and
    /// sends `line`; it takes the router's RESPONSE.
    pub fn call(&mut self, guest: u8, port: u8, line: &str) -> &mut Self {
        self.packet(guest, Port::Call, Port::Local(port), op::REQUEST, b"", 0);
        self.drain(guest, 4);
        self.packet(guest, Port::Call, Port::Local(port), op::RW, line.as_bytes(), 0)
    }

    /// The callee `guest` takes the router's REQUEST on `service`'s port
    /// and accepts it (the router's first port, 1024 + `port`).
    pub fn accept(&mut self, guest: u8, service: Port, port: u8) -> &mut Self {
        self.drain(guest, 4);
        self.packet(guest, Port::Local(port), service, op::RESPONSE, b"", 0);
        self.drain(guest, 4)
    }
}

/// An `ipc_router` seed.
#[derive(Clone, Debug)]
pub struct RouterSeed {
    /// File name.
    pub name: &'static str,
    /// The input.
    pub script: RouterScript,
    /// What must happen.
    pub expect: RouterExpect,
}

/// What a router seed must do.
#[derive(Clone, Debug, Default)]
pub struct RouterExpect {
    /// Least decisions of each kind: allowed, denied, asked.
    pub allowed: usize,
    /// See `allowed`.
    pub denied: usize,
    /// See `allowed`.
    pub asked: usize,
    /// Answers the router must have taken.
    pub answered: usize,
    /// Calls to the host side.
    pub host_calls: usize,
    /// Connections the router must have opened to vault.
    pub vault_requests: usize,
    /// Bytes each guest must have received, in this order (each piece
    /// somewhere after the one before): mail's, vault's.
    pub mail_got: Vec<&'static str>,
    /// See `mail_got`.
    pub vault_got: Vec<&'static str>,
}

fn port_of(service: &[u8]) -> Port {
    Port::Raw(service_port(service))
}

/// The `ipc_router` seeds.
pub fn router() -> Vec<RouterSeed> {
    let mut seeds = Vec::new();
    let mut seed = |name, script: &mut RouterScript, expect| {
        seeds.push(RouterSeed { name, script: std::mem::take(script), expect });
    };
    let mut s = RouterScript::default();

    // A whole call: allowed, connected, bytes both ways, closed cleanly.
    s.call(MAIL, 0, "CALL vault echo\n").accept(VAULT, Port::Echo, 0).drain(MAIL, 4);
    s.packet(MAIL, Port::Call, Port::Local(0), op::RW, b"ping\n", 0).drain(VAULT, 4);
    s.packet(VAULT, Port::Local(0), Port::Echo, op::RW, b"pong\n", 0).drain(MAIL, 4);
    s.packet(MAIL, Port::Call, Port::Local(0), op::CREDIT_UPDATE, b"", 0);
    s.packet(VAULT, Port::Local(0), Port::Echo, op::CREDIT_REQUEST, b"", 0).drain(VAULT, 4);
    s.packet(MAIL, Port::Call, Port::Local(0), op::SHUTDOWN, b"", 3).drain(VAULT, 4);
    s.packet(VAULT, Port::Local(0), Port::Echo, op::SHUTDOWN, b"", 3).drain(MAIL, 4);
    s.packet(MAIL, Port::Call, Port::Local(0), op::RST, b"", 0);
    s.packet(VAULT, Port::Local(0), Port::Echo, op::RST, b"", 0).drain(MAIL, 4).drain(VAULT, 4);
    seed(
        "allow-echo",
        &mut s,
        RouterExpect {
            allowed: 1,
            vault_requests: 1,
            mail_got: vec!["OK\n", "pong\n"],
            vault_got: vec!["FROM mail echo\n", "ping\n"],
            ..RouterExpect::default()
        },
    );

    // The other way round, with an argument, two calls at once.
    s.call(VAULT, 1, "CALL mail echo+greeting\n").call(VAULT, 2, "CALL mail echo\n");
    s.accept(MAIL, Port::Echo, 0).accept(MAIL, Port::Echo, 1).drain(VAULT, 8);
    s.packet(VAULT, Port::Call, Port::Local(1), op::RW, b"one\n", 0).drain(MAIL, 4);
    s.packet(VAULT, Port::Call, Port::Local(2), op::RW, b"two\n", 0).drain(MAIL, 4);
    s.packet(MAIL, Port::Local(0), Port::Echo, op::RST, b"", 0).drain(VAULT, 4);
    seed(
        "allow-echo-two-calls",
        &mut s,
        RouterExpect {
            allowed: 2,
            vault_got: vec!["OK\n", "OK\n"],
            mail_got: vec!["FROM vault echo+greeting\n", "FROM vault echo\n", "one\n", "two\n"],
            ..RouterExpect::default()
        },
    );

    // Denied by a rule, and for want of one.
    s.call(MAIL, 0, "CALL vault wipe\n").drain(MAIL, 4);
    s.call(MAIL, 1, "CALL mail sign\n").drain(MAIL, 4);
    seed(
        "deny",
        &mut s,
        RouterExpect {
            denied: 2,
            mail_got: vec!["ERR denied by policy\n", "ERR denied by policy\n"],
            ..RouterExpect::default()
        },
    );

    // Asked, and the user allows.
    s.call(MAIL, 0, "CALL vault sign+key-1\n").drain(MAIL, 4).answer(1, true);
    s.accept(VAULT, port_of(b"sign"), 0).drain(MAIL, 4);
    s.packet(MAIL, Port::Call, Port::Local(0), op::RW, b"sign this\n", 0).drain(VAULT, 4);
    seed(
        "ask-allowed",
        &mut s,
        RouterExpect {
            asked: 1,
            answered: 1,
            vault_requests: 1,
            mail_got: vec!["OK\n"],
            vault_got: vec!["FROM mail sign+key-1\n", "sign this\n"],
            ..RouterExpect::default()
        },
    );

    // Asked: the user denies one; nobody answers another in time.
    s.call(MAIL, 0, "CALL vault sign\n").call(MAIL, 1, "CALL vault sign\n").answer(1, false).drain(MAIL, 4);
    for _ in 0..9 {
        s.tick(15);
    }
    s.drain(MAIL, 8);
    seed(
        "ask-denied",
        &mut s,
        RouterExpect {
            asked: 2,
            answered: 1,
            denied: 1,
            mail_got: vec!["ERR denied by the user\n", "ERR denied no answer\n"],
            ..RouterExpect::default()
        },
    );

    // A host service: the router hands the call to the host side, which
    // never answers here; the call times out.
    s.call(VAULT, 0, "CALL host notify\n").drain(VAULT, 4).tick(1).tick(11).drain(VAULT, 4);
    seed(
        "host-call",
        &mut s,
        RouterExpect {
            allowed: 1,
            host_calls: 1,
            vault_got: vec!["ERR unreachable host did not answer\n"],
            ..RouterExpect::default()
        },
    );

    // The callee refuses (RST), or never answers.
    s.call(MAIL, 0, "CALL vault echo\n").drain(VAULT, 4);
    s.packet(VAULT, Port::Local(0), Port::Echo, op::RST, b"", 0).drain(MAIL, 4);
    s.call(MAIL, 1, "CALL vault echo\n").drain(VAULT, 4).tick(1).tick(11).drain(MAIL, 4);
    seed(
        "callee-refuses",
        &mut s,
        RouterExpect {
            allowed: 2,
            vault_requests: 2,
            mail_got: vec![
                "ERR not-listening vault does not listen for the service\n",
                "ERR unreachable vault did not answer\n",
            ],
            ..RouterExpect::default()
        },
    );

    // Call lines the router cannot take.
    s.call(MAIL, 0, "CALL vault\n").drain(MAIL, 4);
    s.call(MAIL, 1, "HELLO vault echo\n").drain(MAIL, 4);
    s.call(MAIL, 2, "CALL Vault echo\n").drain(MAIL, 4);
    // No rule can name a compartment the policy does not define.
    s.call(MAIL, 3, "CALL nobody echo\n").drain(MAIL, 4);
    s.packet(MAIL, Port::Call, Port::Local(4), op::REQUEST, b"", 0);
    s.packet(MAIL, Port::Call, Port::Local(4), op::SHUTDOWN, b"", 2).drain(MAIL, 8);
    seed(
        "bad-lines",
        &mut s,
        RouterExpect {
            mail_got: vec![
                "ERR bad-request expected",
                "ERR bad-request expected",
                "ERR bad-request expected",
                "ERR denied by policy\n",
                "ERR bad-request no call line\n",
            ],
            denied: 1,
            ..RouterExpect::default()
        },
    );
    seeds
}

/// Inputs that once broke a target, made by hand (those found by fuzzing
/// are kept as found, beside them): `fuzz/regressions/<target>/`.
pub fn regressions() -> Vec<(&'static str, Vec<Seed>)> {
    // The callee answers the router's REQUEST before it got it: the router
    // takes the answer (and its credit), tells the caller OK, and sends the
    // REQUEST afterwards, then the FROM line (docs/FUZZING.md, "Findings").
    let mut s = RouterScript::default();
    s.call(VAULT, 0, "CALL mail echo\n");
    s.packet(MAIL, Port::Local(0), Port::Echo, op::RESPONSE, b"", 0);
    s.drain(MAIL, 8).drain(VAULT, 8);
    vec![("ipc_router", vec![Seed { name: "response-before-request".to_owned(), bytes: s.0 }])]
}

/// The router target's dictionary (`fuzz/ipc_router.dict`, libFuzzer's
/// `-dict=`): call lines and their words, the reply and `FROM` lines,
/// service ports, and whole steps (a call port `REQUEST`, a drain, an
/// answer, a tick).
pub fn router_dict() -> String {
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: &[u8]| entries.push((name.to_owned(), bytes.to_vec()));
    add("call", b"CALL ");
    for line in
        ["CALL vault echo\n", "CALL mail echo\n", "CALL vault sign\n", "CALL vault wipe\n", "CALL host notify\n"]
    {
        add("call_line", line.as_bytes());
    }
    for word in ["mail", "vault", "host", "echo", "sign", "wipe", "notify", "+", "\n", " "] {
        add("word", word.as_bytes());
    }
    for reply in ["OK\n", "ERR ", "FROM ", "FROM mail echo\n"] {
        add("reply", reply.as_bytes());
    }
    for service in ["echo", "sign", "wipe", "notify"] {
        add(&format!("port_{service}"), &service_port(service.as_bytes()).to_le_bytes());
    }
    for (guest, name) in [(MAIL, "mail"), (VAULT, "vault")] {
        let mut step = RouterScript::default();
        step.packet(guest, Port::Call, Port::Local(0), op::REQUEST, b"", 0);
        add(&format!("{name}_request"), &step.0);
        let mut step = RouterScript::default();
        step.packet(guest, Port::Local(0), Port::Echo, op::RESPONSE, b"", 0);
        add(&format!("{name}_response"), &step.0);
        let mut step = RouterScript::default();
        step.drain(guest, 8);
        add(&format!("{name}_drain"), &step.0);
    }
    let mut step = RouterScript::default();
    step.answer(1, true);
    add("answer", &step.0);
    let mut step = RouterScript::default();
    step.tick(15);
    add("tick", &step.0);

    let mut out = String::from("# Tokens for the ipc_router target (libFuzzer's -dict=); written by\n");
    out.push_str("# `cargo run --example seeds` from src/seeds.rs, do not edit.\n");
    for (name, bytes) in entries {
        let value: String = bytes
            .iter()
            .map(|&b| match b {
                b'"' | b'\\' => format!("\\{}", b as char),
                b' '..=b'~' => (b as char).to_string(),
                _ => format!("\\x{b:02x}"),
            })
            .collect();
        out.push_str(&format!("{name}=\"{value}\"\n"));
    }
    out
}

// ---------------------------------------------------------------------------
// Policies (policy_parser).

/// The `policy_parser` seeds: file name and text (files cut at NUL).
pub fn policy() -> Vec<(&'static str, String)> {
    vec![
        ("router-policy", crate::router::POLICY.to_owned()),
        ("example-two-files", format!("{POLICY_BASE}\0{POLICY_WORK}")),
        ("host-and-templates", POLICY_HOST.to_owned()),
        ("three-files", "[compartment.a]\nrole = \"app\"\nimage = \"a\"\n\0[template.app]\nimage = \"t\"\n\0[[rule]]\nservice = \"ping\"\nfrom = \"@any\"\nto = \"@any\"\naction = \"deny\"\n".to_owned()),
    ]
}

const POLICY_BASE: &str = r#"# The user's core compartments.

[compartment.vault]
role = "identity"
image = "vault.img"
memory = 64
autostart = true
restart = "always"
tags = ["personal"]
offers = ["sign", "identity.get"]
devices = { rng = true }

[compartment.storage]
role = "storage"
image = "storage.img"
memory = 256
autostart = true
restart = "on-failure"
tags = ["personal", "work"]
offers = ["storage.get", "storage.put"]

[[compartment.storage.devices.block]]
name = "data"
size = 65536

[[compartment.storage.devices.block]]
name = "backup"
size = 65536
read-only = true

[compartment.comms]
role = "communication"
image = "comms.img"
memory = 192
vcpus = 2
autostart = true
tags = ["personal"]
offers = ["message.send"]
devices = { network = true, vsock = true }
network = [
    { peer = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK" },
    { peer = "2001:db8::/32", ports = [443] },
]

[template.app]
image = "app.img"
memory = 256
tags = ["untrusted"]

[[rule]]
service = "sign"
from = "comms"
to = "vault"
action = "allow"

[[rule]]
service = "sign"
from = "@any"
to = "vault"
action = "ask"
"#;

const POLICY_WORK: &str = r#"# Work: mail and a browser that reaches the office network only.

[compartment.work-mail]
role = "app"
image = "mail.img"
memory = 512
tags = ["work"]
devices.network = true
network = [{ peer = "192.0.2.0/24", ports = [993, 587] }]

[[rule]]
service = "storage.get+work"
from = "@tag:work"
to = "storage"
action = "allow"

[[rule]]
service = "storage.get"
from = "@disposable"
to = "@any"
action = "ask"
target = "storage"

[[rule]]
service = "*"
from = "@disposable"
to = "@any"
action = "deny"
"#;

const POLICY_HOST: &str = r#"[host]
offers = ["notify", "clipboard.get"]

[template.app]
image = "app.img"

[compartment.browser]
role = "app"
image = "browser.img"
devices = { vsock = true }

[compartment.notes]
role = "storage"
image = "disk"
memory = 96
offers = ["notes.get"]
devices = { console = true, rng = true, vsock = true }

[[rule]]
service = "notify"
from = "@any"
to = "host"
action = "allow"

[[rule]]
service = "clipboard.get"
from = "@role:app"
to = "host"
action = "ask"

[[rule]]
service = "notes.get"
from = "@disposable"
to = "notes"
action = "deny"
"#;
