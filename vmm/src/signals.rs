//! Which thread handles the signals that end a VMM process.
//!
//! A process-directed SIGTERM or SIGINT may be delivered to any thread that
//! does not block it. The VMM's own threads run under seccomp filters made
//! for their work (the vCPU thread may not even `pwrite`), so a handler
//! that records the end and exits must run on the main thread: every other
//! thread blocks these signals first thing.
//!
//! **The kick.** A vCPU in `KVM_RUN` is out of the VMM's sight; a guest
//! that halted with interrupts disabled (`cli; hlt`) would keep it there
//! for ever, since with the in-kernel irqchip KVM never returns a `Hlt`
//! exit. So the thread that runs the VM sends the vCPU thread a real-time
//! signal ([`kick_signal`]) every [`KICK_INTERVAL`]: its handler does
//! nothing, `KVM_RUN` returns `EINTR`, and the vCPU loop looks at the
//! vCPU (`vcpu::halted_for_good`) before it goes back in. The handler is
//! installed with `SA_RESTART`, so the vCPU thread's other system calls
//! never see the signal; `KVM_RUN` returns `EINTR` regardless.

use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use crate::devices::debug_console::PowerButton;

/// The power button the stop signals press (set once, never freed: the
/// handler may run at any time until the process ends).
static BUTTON: AtomicPtr<PowerButton> = AtomicPtr::new(std::ptr::null_mut());
/// Whether a second stop signal ends the process ([`AgainExits`]).
static AGAIN_EXITS: AtomicBool = AtomicBool::new(false);
/// Whether a stop signal pressed the button already.
static PRESSED: AtomicBool = AtomicBool::new(false);

/// What a stop signal does after the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Again {
    /// Press the button again (`ward-vmm`: a restarted wardd sends SIGTERM
    /// again to finish a stop, and kills at the deadline itself).
    Presses,
    /// End the process at once with 128 + the signal, as a shell reports
    /// it (`ward run`: a second Ctrl-C when the guest does not stop).
    Exits,
}

extern "C" fn press_button(signal: libc::c_int) {
    if PRESSED.swap(true, Ordering::AcqRel) && AGAIN_EXITS.load(Ordering::Acquire) {
        // SAFETY: _exit is async-signal-safe and ends the process.
        unsafe { libc::_exit(128 + signal) };
    }
    let button = BUTTON.load(Ordering::Acquire);
    // SAFETY: BUTTON is null or a leaked `PowerButton` that lives until
    // the process ends; `press` is async-signal-safe.
    if let Some(button) = unsafe { button.as_ref() } {
        button.press();
    }
}

/// Makes SIGTERM and SIGINT press `button` (ask the guest to stop) instead
/// of ending the process: a graceful stop, which whoever sent the signal
/// bounds (wardd kills the VMM at the stop's deadline). `again` says what
/// later signals do. For a process that runs one VM: the first button set
/// stays.
pub fn press_on_stop_signals(button: std::sync::Arc<PowerButton>, again: Again) -> std::io::Result<()> {
    AGAIN_EXITS.store(again == Again::Exits, Ordering::Release);
    let leaked = std::sync::Arc::into_raw(button).cast_mut();
    if BUTTON.compare_exchange(std::ptr::null_mut(), leaked, Ordering::AcqRel, Ordering::Acquire).is_err() {
        // SAFETY: `leaked` came from `Arc::into_raw` just above and was not
        // stored, so this is its only owner.
        drop(unsafe { std::sync::Arc::from_raw(leaked) });
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed `sigaction` is valid; the handler only calls
        // async-signal-safe code (an atomic load and `press`); SA_RESTART
        // keeps the main thread's system calls from seeing the signal.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = press_button as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Blocks SIGTERM and SIGINT in the calling thread (they stay pending for
/// the process, and the main thread takes them).
pub fn leave_stop_signals_to_main() {
    // SAFETY: `set` is a local `sigset_t` that `sigemptyset` initializes
    // before use; `pthread_sigmask` reads it and changes only this thread's
    // mask (the old mask is not asked for).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// How often the vCPU thread is kicked out of `KVM_RUN`: a vCPU halted
/// for good is found within this; one exit a second costs nothing.
pub const KICK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The signal that kicks a vCPU thread: the first real-time one.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn ignore_kick(_: libc::c_int) {}

/// Installs the kick's handler, which does nothing (once per process is
/// enough; again is harmless).
pub fn install_kick_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed `sigaction` is valid; we set a handler that touches
    // nothing (async-signal-safe by being empty), an empty mask and
    // SA_RESTART, and check the result.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore_kick as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(kick_signal(), &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Kicks `thread` (a vCPU thread's `pthread_self()`) out of `KVM_RUN`.
pub fn kick(thread: libc::pthread_t) {
    // SAFETY: `thread` is a live thread of this process (the caller joins
    // it only after its last kick); the signal has the handler above.
    unsafe { libc::pthread_kill(thread, kick_signal()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_leaves_the_signals_to_main_blocks_them() {
        let blocked = std::thread::spawn(|| {
            leave_stop_signals_to_main();
            // SAFETY: as above; the old mask is read into a local.
            unsafe {
                let mut old: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old);
                (libc::sigismember(&old, libc::SIGTERM), libc::sigismember(&old, libc::SIGINT))
            }
        })
        .join()
        .unwrap();
        assert_eq!(blocked, (1, 1));
    }
}
