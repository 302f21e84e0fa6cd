//! Fault injection for the integration tests, in debug builds only.
//!
//! Some failures a user must be protected from cannot be caused from outside the process on
//! demand (a bug that panics a task, a task that hangs). A debug build reads the names of the
//! faults to inject from `IOC_FORWARDER_FAILPOINTS` (comma-separated), and the code asks
//! [`hit`] at the places where they can happen. Release builds compile every check to `false`.

/// Whether the fault `name` is switched on.
pub fn hit(name: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        std::env::var("IOC_FORWARDER_FAILPOINTS")
            .map(|v| v.split(',').any(|p| p.trim() == name))
            .unwrap_or(false)
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = name;
        false
    }
}
