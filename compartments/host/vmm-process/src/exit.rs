//! How a compartment's end becomes a process exit code.

use ward_vmm::GuestExit;

/// The exit code of a compartment that crashed (no guest exit code).
pub const EXIT_CRASHED: u8 = 125;

/// The process exit code for how the compartment ended.
pub fn exit_code(exit: &GuestExit) -> u8 {
    match exit.exit_code() {
        // Exit statuses are 8 bits; a larger code must not wrap to success.
        Some(code) => u8::try_from(code).unwrap_or(u8::MAX),
        None => EXIT_CRASHED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_guest_and_never_wrap_to_success() {
        assert_eq!(exit_code(&GuestExit::PowerOff(0)), 0);
        assert_eq!(exit_code(&GuestExit::PowerOff(101)), 101);
        assert_eq!(exit_code(&GuestExit::PowerOff(256)), 255);
        assert_eq!(exit_code(&GuestExit::TripleFault { rip: 0 }), EXIT_CRASHED);
    }
}
