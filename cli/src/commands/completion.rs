//! `tether completion SHELL`: the script that makes Tab complete tether in that shell. The
//! candidates come from [`crate::completion`] at each Tab, so the script never goes stale.

use std::io::Write;
use std::process::ExitCode;

pub fn run(shell: &str) -> ExitCode {
    // clap only lets through the shells clap_complete knows.
    let Some(script) = crate::completion::script(shell) else {
        eprintln!("tether: no completion script for {shell}");
        return ExitCode::from(2);
    };
    // A closed stdout (`tether completion bash | head`) is not an error of tether's.
    let _ = std::io::stdout().write_all(script.as_bytes());
    ExitCode::SUCCESS
}
