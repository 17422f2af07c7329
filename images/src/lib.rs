//! The guest images Ward boots, embedded in the host binaries.
//!
//! `build.rs` builds the guest kernel and the guest programs with the
//! guest's codegen flags (see its documentation). This crate hands them to
//! the host side: the kernel, every program, and the *images*: named lists
//! of the programs a compartment gets as boot modules and of those its
//! kernel starts at boot.

#![forbid(unsafe_code)]

/// The guest kernel ELF (`ward-kernel`), built by `build.rs`.
pub static KERNEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ward-kernel"));

/// Where `build.rs` left the kernel ELF, for tools that inspect it.
pub const KERNEL_PATH: &str = concat!(env!("OUT_DIR"), "/ward-kernel");

/// A guest program: a static ELF built with `ward-rt`.
#[derive(Debug)]
pub struct Program {
    /// Its name (the boot module's name in the guest).
    pub name: &'static str,
    /// The ELF image.
    pub elf: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/programs.rs"));

/// A compartment image: which programs it carries and which start at boot.
#[derive(Debug)]
pub struct Image {
    /// Its name, as `ward run --image` takes it.
    pub name: &'static str,
    /// What it is for.
    pub description: &'static str,
    /// Programs the kernel starts at boot, in order (the first is the
    /// compartment's init: its exit code is the compartment's).
    pub boot: &'static [&'static str],
    /// Further programs the boot programs may spawn.
    pub also: &'static [&'static str],
}

/// The image `ward run` boots when none is named.
pub const DEFAULT_IMAGE: &str = "hello";

/// The built-in images.
pub static IMAGES: &[Image] = &[
    Image { name: "hello", description: "greets from ring 3 and lists the processes", boot: &["hello"], also: &["ps"] },
    Image { name: "bare", description: "the kernel alone, no programs", boot: &[], also: &[] },
    Image {
        name: "sched-demo",
        description: "CPU-bound programs sharing the CPU, and priorities",
        boot: &["sched"],
        also: &["spin"],
    },
    Image {
        name: "fault-demo",
        description: "misbehaving programs killed while others finish",
        boot: &["faults"],
        also: &["bad-kernel-write", "bad-jump", "bad-privileged", "spin"],
    },
    Image {
        name: "spawn-demo",
        description: "1000 processes spawned and reaped; memory comes back",
        boot: &["spawner"],
        also: &["true"],
    },
    Image {
        name: "badptr-demo",
        description: "bad pointers and lengths refused by system calls",
        boot: &["badptr"],
        also: &[],
    },
    Image { name: "idle", description: "a program that sleeps until asked to stop", boot: &["sleeper"], also: &["ps"] },
    Image { name: "busy", description: "a program that spins and ignores stop requests", boot: &["busy"], also: &[] },
    Image {
        name: "stop-marker",
        description: "writes a marker to block device 0 when asked to stop (a graceful stop)",
        boot: &["stop-marker"],
        also: &[],
    },
    Image {
        name: "ipc-demo",
        description: "messages, shared pages and timeouts between processes",
        boot: &["ipc-ping"],
        also: &["ipc-pong"],
    },
    Image {
        name: "ipc-peer",
        description: "inter-compartment IPC over vsock: serves echo and sink, runs the steps after -- (see ipc_peer.rs)",
        boot: &["ipc-peer"],
        also: &[],
    },
    Image { name: "echo", description: "echoes the console's input (virtio console)", boot: &["echo"], also: &[] },
    Image { name: "entropy", description: "draws entropy from the host (virtio-rng)", boot: &["entropy"], also: &[] },
    Image {
        name: "disk",
        description: "exercises block device 0: id, write, flush, read back (virtio-blk)",
        boot: &["disk"],
        also: &[],
    },
    Image {
        name: "diskbench",
        description: "sequential throughput of block device 0 from ring 3",
        boot: &["diskbench"],
        also: &[],
    },
    Image {
        name: "bench",
        description: "system-call and spawn costs, measured in ring 3",
        boot: &["bench"],
        also: &["true"],
    },
];

/// The program called `name`.
pub fn program(name: &str) -> Option<&'static Program> {
    PROGRAMS.iter().find(|p| p.name == name)
}

/// The image called `name`.
pub fn image(name: &str) -> Option<&'static Image> {
    IMAGES.iter().find(|i| i.name == name)
}

impl Image {
    /// The image's programs, each with whether it starts at boot.
    pub fn programs(&self) -> impl Iterator<Item = (&'static Program, bool)> + '_ {
        let boot = self.boot.iter().map(|n| (n, true));
        let also = self.also.iter().map(|n| (n, false));
        boot.chain(also).filter_map(|(name, at_boot)| program(name).map(|p| (p, at_boot)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_x86_64_elf(bytes: &[u8]) -> bool {
        bytes.len() > 20 && bytes[..4] == *b"\x7fELF" && u16::from_le_bytes([bytes[18], bytes[19]]) == 62
    }

    #[test]
    fn embedded_kernel_is_an_x86_64_executable() {
        assert!(is_x86_64_elf(KERNEL));
        assert_eq!(std::fs::read(KERNEL_PATH).unwrap(), KERNEL);
    }

    #[test]
    fn every_image_names_only_programs_that_exist() {
        for image in IMAGES {
            for name in image.boot.iter().chain(image.also) {
                let p = program(name).unwrap_or_else(|| panic!("image {} names unknown program {name}", image.name));
                assert!(is_x86_64_elf(p.elf), "{name} is not an x86_64 ELF");
            }
            assert_eq!(image.programs().count(), image.boot.len() + image.also.len());
        }
        assert!(image(DEFAULT_IMAGE).is_some());
    }
}
