//! Memory: physical frames, page tables, address spaces, the kernel heap,
//! and checked access to user memory.

pub mod aspace;
pub mod frame;
pub mod heap;
pub mod host;
pub mod paging;
pub mod phys;
pub mod user;
