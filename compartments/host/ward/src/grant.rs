//! What the policy grants a compartment that is about to start: its
//! memory, image and devices. Every launcher (`ward run` now, `wardd`
//! later) asks here; nothing starts with more than the policy says.

use ward_policy::{CompartmentSpec, Lookup, Policy};

use crate::name::CompartmentName;

/// What a compartment may have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// The built-in image it boots.
    pub image: String,
    /// Whether it gets a virtio console (program input and output).
    pub console: bool,
    /// Whether it gets an entropy device.
    pub rng: bool,
    /// Whether it gets a vsock device (IPC through wardd's router).
    pub vsock: bool,
    /// Block volumes it may attach, in order.
    pub volumes: Vec<ward_policy::BlockVolume>,
    /// Whether it is an ad-hoc app made from the app template.
    pub ad_hoc: bool,
}

pub use ward_vmm_process::spec::DiskRequest;

impl Grant {
    /// Checks `disks` (with their sizes in bytes) against the policy's block
    /// volumes, in order: no more disks than volumes, none larger than its
    /// volume, and read-only where the volume is.
    pub fn check_disks(&self, name: &str, disks: &[(DiskRequest, u64)]) -> Result<(), GrantError> {
        if disks.len() > self.volumes.len() {
            return Err(GrantError::TooManyDisks {
                name: name.to_owned(),
                asked: disks.len(),
                granted: self.volumes.len(),
            });
        }
        for ((disk, size), volume) in disks.iter().zip(&self.volumes) {
            if *size > volume.size_mib << 20 {
                return Err(GrantError::DiskTooLarge {
                    name: name.to_owned(),
                    path: disk.path.display().to_string(),
                    volume: volume.name.clone(),
                    size_mib: volume.size_mib,
                });
            }
            if volume.read_only && !disk.read_only {
                return Err(GrantError::DiskMustBeReadOnly {
                    name: name.to_owned(),
                    path: disk.path.display().to_string(),
                    volume: volume.name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The policy does not allow the start as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    /// The name is not defined and no app template applies.
    #[error(
        "compartment {name} is not defined by the policy in {policy}; define [compartment.{name}], \
         or add [template.app] to allow ad-hoc app compartments"
    )]
    Undefined {
        /// The compartment.
        name: String,
        /// Where the policy came from.
        policy: String,
    },
    /// More memory than granted.
    #[error(
        "memory of {asked} MiB is too large for compartment {name}: the policy in {policy} grants at most {granted} MiB"
    )]
    MemoryOverGrant {
        /// The compartment.
        name: String,
        /// Asked for.
        asked: u64,
        /// Granted.
        granted: u64,
        /// Where the policy came from.
        policy: String,
    },
    /// More disks than the policy's block volumes.
    #[error("compartment {name} may have {granted} disk(s) by its policy; {asked} given")]
    TooManyDisks {
        /// The compartment.
        name: String,
        /// Disks asked for.
        asked: usize,
        /// Volumes granted.
        granted: usize,
    },
    /// A disk larger than its volume.
    #[error("disk {path} is larger than volume {volume:?} of compartment {name} ({size_mib} MiB)")]
    DiskTooLarge {
        /// The compartment.
        name: String,
        /// The file.
        path: String,
        /// The volume.
        volume: String,
        /// Its size.
        size_mib: u64,
    },
    /// A writable disk for a read-only volume.
    #[error("volume {volume:?} of compartment {name} is read-only by policy; give the disk as {path}:ro")]
    DiskMustBeReadOnly {
        /// The compartment.
        name: String,
        /// The file.
        path: String,
        /// The volume.
        volume: String,
    },
    /// Another image than the policy's, for a defined compartment.
    #[error(
        "compartment {name} boots image {granted:?} by the policy in {policy}; \
         --image {asked:?} is only for ad-hoc app compartments"
    )]
    ImageNotGranted {
        /// The compartment.
        name: String,
        /// Asked for.
        asked: String,
        /// The policy's.
        granted: String,
        /// Where the policy came from.
        policy: String,
    },
}

/// What `policy` (read from `source`, for messages) grants compartment
/// `name` when started with these optional requests.
pub fn grant(
    policy: &Policy,
    source: &str,
    name: &CompartmentName,
    memory: Option<u64>,
    image: Option<&str>,
) -> Result<Grant, GrantError> {
    let (spec, ad_hoc): (&CompartmentSpec, bool) = match policy.compartment(name.as_str()) {
        Lookup::Defined(spec) => (spec, false),
        Lookup::AdHoc(spec) => (spec, true),
        Lookup::Undefined => {
            return Err(GrantError::Undefined { name: name.to_string(), policy: source.to_owned() });
        }
    };
    let granted = u64::from(spec.memory_mib);
    let memory_mib = match memory {
        Some(asked) if asked > granted => {
            return Err(GrantError::MemoryOverGrant {
                name: name.to_string(),
                asked,
                granted,
                policy: source.to_owned(),
            });
        }
        Some(asked) => asked,
        None => granted,
    };
    let image = match image {
        Some(asked) if asked != spec.image && !ad_hoc => {
            return Err(GrantError::ImageNotGranted {
                name: name.to_string(),
                asked: asked.to_owned(),
                granted: spec.image.clone(),
                policy: source.to_owned(),
            });
        }
        Some(asked) => asked.to_owned(),
        None => spec.image.clone(),
    };
    Ok(Grant {
        memory_mib,
        image,
        console: spec.devices.console,
        rng: spec.devices.rng,
        vsock: spec.devices.vsock,
        volumes: spec.devices.block.clone(),
        ad_hoc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[compartment.mail]
role = "app"
image = "hello"
memory = 48

[compartment.mail.devices]
rng = true

[[compartment.mail.devices.block]]
name = "inbox"
size = 16
read-only = true
"#;

    fn policy(text: &str) -> Policy {
        Policy::from_text("test.toml", text).unwrap()
    }

    fn name(n: &str) -> CompartmentName {
        CompartmentName::new(n).unwrap()
    }

    #[test]
    fn defined_compartment_gets_its_policy_limits() {
        let g = grant(&policy(POLICY), "test.toml", &name("mail"), None, None).unwrap();
        assert_eq!((g.memory_mib, g.image.as_str(), g.rng, g.ad_hoc), (48, "hello", true, false));
        assert_eq!(g.volumes.len(), 1);
        assert!(g.volumes[0].read_only);
    }

    #[test]
    fn less_memory_is_fine_more_is_refused() {
        let p = policy(POLICY);
        assert_eq!(grant(&p, "t", &name("mail"), Some(16), None).unwrap().memory_mib, 16);
        let e = grant(&p, "t", &name("mail"), Some(64), None).unwrap_err();
        assert!(matches!(e, GrantError::MemoryOverGrant { asked: 64, granted: 48, .. }));
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn undefined_compartment_is_refused_without_a_template() {
        let e = grant(&policy(POLICY), "test.toml", &name("stranger"), None, None).unwrap_err();
        assert!(e.to_string().contains("compartment stranger is not defined by the policy in test.toml;"), "{e}");
    }

    #[test]
    fn ad_hoc_apps_come_from_the_template_and_may_choose_an_image() {
        let p = policy(&format!("{POLICY}\n[template.app]\nimage = \"hello\"\nmemory = 20\n"));
        let g = grant(&p, "t", &name("tmp-app"), None, Some("sched-demo")).unwrap();
        assert_eq!((g.memory_mib, g.image.as_str(), g.ad_hoc, g.rng), (20, "sched-demo", true, false));
    }

    fn disk(path: &str, ro: bool) -> DiskRequest {
        DiskRequest { path: path.into(), read_only: ro }
    }

    #[test]
    fn disks_must_fit_the_policys_volumes() {
        let g = grant(&policy(POLICY), "t", &name("mail"), None, None).unwrap();
        assert_eq!(g.check_disks("mail", &[(disk("/d", true), 16 << 20)]), Ok(()));
        assert!(matches!(
            g.check_disks("mail", &[(disk("/d", true), (16 << 20) + 1)]),
            Err(GrantError::DiskTooLarge { .. })
        ));
        assert!(matches!(
            g.check_disks("mail", &[(disk("/d", false), 512)]),
            Err(GrantError::DiskMustBeReadOnly { .. })
        ));
        let two = [(disk("/a", true), 512), (disk("/b", true), 512)];
        assert!(matches!(g.check_disks("mail", &two), Err(GrantError::TooManyDisks { asked: 2, granted: 1, .. })));
    }

    #[test]
    fn disk_arguments_parse() {
        assert_eq!("/tmp/x.img:ro".parse::<DiskRequest>(), Ok(disk("/tmp/x.img", true)));
        assert_eq!("/tmp/x.img".parse::<DiskRequest>(), Ok(disk("/tmp/x.img", false)));
        assert!(":ro".parse::<DiskRequest>().is_err());
    }

    #[test]
    fn defined_compartment_cannot_swap_its_image() {
        let e = grant(&policy(POLICY), "t", &name("mail"), None, Some("fault-demo")).unwrap_err();
        assert!(matches!(e, GrantError::ImageNotGranted { .. }), "{e}");
    }
}
