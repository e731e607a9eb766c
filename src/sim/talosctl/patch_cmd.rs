//! Offline talosctl command (being filled in).

use super::CliError;

/// Runs the command with the arguments after the command word.
pub fn run(args: Vec<String>) -> Result<(), CliError> {
    let _ = args;
    Err(CliError::new("not implemented", ""))
}
