//! The talix command line (placeholder, filled by the foundation work).
use std::ffi::OsString;
use std::process::ExitCode;

pub fn run(_args: Vec<OsString>) -> ExitCode {
    ExitCode::SUCCESS
}
