//! The seeds in `fuzz/seeds/` are those `src/seeds.rs` makes, and each
//! gets where it was made to go when run through its target's code (the
//! same `run` the libFuzzer binaries call): the block device completes
//! reads, writes and flushes with the data on the disk or in the guest's
//! buffers; every MMIO device reaches DRIVER_OK and uses the buffers on
//! its queues; the router allows, denies and asks, and connects the calls
//! it lets through.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use vm_memory::GuestMemoryMmap;
use ward_abi::virtio::blk;
use ward_fuzz::image::{read, used_elem, used_idx};
use ward_fuzz::seeds::{self, BlockRequest, Placer};
use ward_fuzz::{block, disk_byte, mmio, policy, router};

fn disk_bytes(disk: &File, sector: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    disk.read_exact_at(&mut out, sector * 512).expect("reading the disk");
    out
}

fn gather(mem: &GuestMemoryMmap, ranges: &[(u64, u32)]) -> Vec<u8> {
    ranges.iter().flat_map(|&(addr, len)| read(mem, addr, len as usize)).collect()
}

/// What the block requests of a seed did, counted.
#[derive(Default)]
struct Done {
    reads: usize,
    writes: usize,
    flushes: usize,
    ids: usize,
    refused: usize,
}

/// Checks each of `requests` (queue `q`, chains in order) against guest
/// memory and the disk after the run.
fn check_block(name: &str, mem: &GuestMemoryMmap, disk: &File, q: usize, requests: &[BlockRequest], done: &mut Done) {
    let mut head = 0u32;
    for (i, request) in requests.iter().enumerate() {
        let what = format!("{name}: request {i} (type {})", request.kind);
        let status = read(mem, request.status, 1)[0];
        assert_eq!(status, request.expect, "{what}: status");
        let (used_head, used_len) = used_elem(mem, q, i as u16);
        assert_eq!(used_head, head, "{what}: used element");
        head += request.chain.len() as u32;
        let data_len: usize = request.data.iter().map(|&(_, len)| len as usize).sum();
        if !request.succeeds() {
            done.refused += 1;
            assert_eq!(used_len, 1, "{what}: only the status is written");
            if request.kind == blk::T_OUT && request.sector < block::SECTORS {
                let sector = request.sector;
                let untouched = vec![disk_byte(sector); 512];
                assert_eq!(disk_bytes(disk, sector, 512), untouched, "{what}: a refused write changed the disk");
            }
            continue;
        }
        match request.kind {
            blk::T_IN => {
                let got = gather(mem, &request.data);
                assert_eq!(got, disk_bytes(disk, request.sector, data_len), "{what}: the guest got the disk's bytes");
                assert_eq!(used_len as usize, data_len + 1, "{what}: used length");
                done.reads += 1;
            }
            blk::T_OUT => {
                let written = disk_bytes(disk, request.sector, data_len);
                assert_eq!(written, request.write_content(), "{what}: the disk holds the guest's bytes");
                assert_ne!(written[..512], [disk_byte(request.sector); 512], "{what}: the disk is unchanged");
                assert_eq!(used_len, 1, "{what}: used length");
                done.writes += 1;
            }
            blk::T_FLUSH => {
                assert_eq!(used_len, 1, "{what}: used length");
                done.flushes += 1;
            }
            blk::T_GET_ID => {
                let id = gather(mem, &request.data);
                assert!(id.starts_with(b"ward-disk-0"), "{what}: id {id:?}");
                assert_eq!(used_len as usize, data_len.min(20) + 1, "{what}: used length");
                done.ids += 1;
            }
            other => panic!("{what}: no check for type {other}"),
        }
    }
}

#[test]
fn checked_in_seeds_are_the_generated_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (target, seeds) in seeds::all() {
        let dir = root.join(target);
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut made: Vec<String> = seeds.iter().map(|seed| seed.name.clone()).collect();
        made.sort();
        let stale = "out of date: cargo run --manifest-path fuzz/Cargo.toml --example seeds";
        assert_eq!(on_disk, made, "{target}: seeds {stale}");
        for seed in &seeds {
            let bytes = std::fs::read(dir.join(&seed.name)).expect("reading a seed");
            assert!(bytes == seed.bytes, "{target}/{}: {stale}", seed.name);
        }
        assert!((4..=40).contains(&seeds.len()), "{target}: {} seeds", seeds.len());
    }
}

#[test]
fn the_router_dictionary_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ipc_router.dict");
    let on_disk = std::fs::read_to_string(&path).expect("reading ipc_router.dict");
    assert!(on_disk == seeds::router_dict(), "ipc_router.dict is out of date: cargo run --example seeds");
    assert!(on_disk.contains("call=\"CALL \"") && on_disk.contains("call_line=\"CALL vault echo\\x0a\""));
}

#[test]
fn block_seeds_complete_reads_writes_and_flushes() {
    let mut done = Done::default();
    for seed in seeds::block() {
        let outcome = block::run(&seed.bytes()).expect("an outcome");
        assert_eq!(usize::from(outcome.used), seed.requests.len(), "{}: chains used", seed.name);
        check_block(seed.name, &outcome.mem, &outcome.disk, 0, &seed.requests, &mut done);
    }
    assert!(done.reads >= 4 && done.writes >= 4 && done.flushes >= 2 && done.ids >= 2 && done.refused >= 4);
}

#[test]
fn every_block_input_gets_a_fresh_disk() {
    // A write, then a read of the same sector in another input: the read
    // finds the disk as it was made, not the first input's bytes.
    let write = seeds::block().into_iter().find(|seed| seed.name == "write").expect("the write seed");
    let sector = write.requests[0].sector;
    let first = block::run(&write.bytes()).expect("an outcome");
    assert_eq!(disk_bytes(&first.disk, sector, 512), write.requests[0].write_content());
    let read_back = seeds::BlockSeed {
        name: "read-back",
        flags: block::FLUSH,
        requests: vec![Placer::new(0x300).request(blk::T_IN, sector, &[512], blk::S_OK)],
    };
    let second = block::run(&read_back.bytes()).expect("an outcome");
    assert_eq!(gather(&second.mem, &read_back.requests[0].data), vec![disk_byte(sector); 512]);
    // And the same input twice does the same.
    let again = block::run(&write.bytes()).expect("an outcome");
    assert_eq!(read(&first.mem, 0, block::MEMORY), read(&again.mem, 0, block::MEMORY));
    assert_eq!(disk_bytes(&first.disk, 0, 8192), disk_bytes(&again.disk, 0, 8192));
}

#[test]
fn mmio_seeds_reach_driver_ok_and_use_their_queues() {
    let mut done = Done::default();
    let mut handshakes = 0;
    for seed in seeds::mmio() {
        let name = seed.name;
        let outcome = mmio::run(&seed.bytes()).expect("an outcome");
        assert!(outcome.driver_ok, "{name}: DRIVER_OK never reached");
        assert_eq!(outcome.needs_reset, seed.expect.needs_reset, "{name}: DEVICE_NEEDS_RESET");
        handshakes += usize::from(seed.choice & mmio::HANDSHAKE != 0);
        for (q, &used) in seed.expect.used.iter().enumerate() {
            assert_eq!(used_idx(&outcome.mem, q), used, "{name}: chains used on queue {q}");
        }
        if !seed.expect.block.is_empty() {
            let disk = outcome.disk.as_ref().expect("a disk");
            check_block(name, &outcome.mem, disk, 0, &seed.expect.block, &mut done);
        }
        for (i, &(addr, len)) in seed.expect.rng.iter().enumerate() {
            let bytes = read(&outcome.mem, addr, len as usize);
            assert!(bytes.iter().filter(|&&b| b != 0).count() > len as usize / 2, "{name}: entropy {i}: {bytes:?}");
            assert_eq!(used_elem(&outcome.mem, 0, i as u16).1, len, "{name}: entropy {i}: used length");
        }
        assert_eq!(outcome.console, seed.expect.console_out, "{name}: console output");
        for &(addr, _) in &seed.expect.console_in {
            let got = read(&outcome.mem, addr, mmio::CONSOLE_INPUT.len());
            assert_eq!(got, mmio::CONSOLE_INPUT, "{name}: console input");
            assert_eq!(used_elem(&outcome.mem, 0, 0).1 as usize, mmio::CONSOLE_INPUT.len(), "{name}: used length");
        }
    }
    assert!(handshakes >= 8, "{handshakes} seeds use the target's handshake");
    // Two block devices, three seeds each; reads, flushes and ids on both,
    // writes on the writable one only.
    assert_eq!((done.reads, done.writes, done.flushes, done.ids, done.refused), (6, 3, 6, 6, 3));
}

/// Whether `pieces` occur in `bytes` in this order.
fn in_order(bytes: &[u8], pieces: &[&str]) -> bool {
    let mut rest = bytes;
    for piece in pieces {
        let Some(at) = rest.windows(piece.len()).position(|w| w == piece.as_bytes()) else { return false };
        rest = &rest[at + piece.len()..];
    }
    true
}

#[test]
fn router_seeds_allow_deny_ask_and_connect() {
    let mut totals = [0usize; 4];
    for seed in seeds::router() {
        let name = seed.name;
        let outcome = router::run(&seed.script.0);
        let expect = &seed.expect;
        let got = |i: usize| String::from_utf8_lossy(&outcome.received[i]).into_owned();
        let received = format!("mail got {:?}, vault got {:?}", got(0), got(1));
        assert_eq!(outcome.allowed, expect.allowed, "{name}: allowed; {received}");
        assert_eq!(outcome.denied, expect.denied, "{name}: denied; {received}");
        assert_eq!(outcome.asked, expect.asked, "{name}: asked; {received}");
        assert_eq!(outcome.answered, expect.answered, "{name}: answered");
        assert_eq!(outcome.host_calls, expect.host_calls, "{name}: host calls");
        assert_eq!(outcome.requests[1], expect.vault_requests, "{name}: connections to vault");
        assert!(in_order(&outcome.received[0], &expect.mail_got), "{name}: mail got {:?}", got(0));
        assert!(in_order(&outcome.received[1], &expect.vault_got), "{name}: vault got {:?}", got(1));
        for (total, n) in totals.iter_mut().zip([outcome.allowed, outcome.denied, outcome.asked, outcome.host_calls]) {
            *total += n;
        }
    }
    assert!(totals.iter().all(|&n| n > 0), "allowed, denied, asked, host calls: {totals:?}");
}

#[test]
fn policy_seeds_load_and_explain() {
    for (name, text) in seeds::policy() {
        let outcome = policy::run(text.as_bytes());
        assert!(outcome.loaded, "{name} does not load");
        assert!(outcome.compartments > 0 && outcome.rules > 0 && outcome.explained > 0, "{name}: {outcome:?}");
    }
}
