//! `ward-policy`: the single source of truth for what every compartment may
//! do. A pure library: no I/O besides what its caller hands it.
