//! The operator's commands besides `run`, `once` and `demo`: each prints for a person (results
//! on stdout, errors on stderr) and returns the process's exit code — 0 success, 1 a runtime
//! failure or damage found, 2 a usage error.

pub mod config_file;
pub mod queue;
pub mod test_destination;

/// Prints an error for the operator and returns exit code 1.
fn failed(e: impl std::fmt::Display) -> u8 {
    eprintln!("error: {e}");
    1
}
