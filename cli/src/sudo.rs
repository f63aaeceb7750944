//! Getting root for the parts that need it. The daemon creates a TUN device and changes
//! routes and DNS, so a user who is not root runs it through `sudo`: the password, if sudo
//! wants one, is asked once in the foreground (`sudo -v`), then the daemon is started with
//! `sudo -n` in the background.

use std::path::Path;
use std::process::Command;

use crate::error::CliError;
use crate::output::Printer;

/// Makes sure `sudo` may run commands for this user, asking for the password if needed.
/// `why` completes "tether needs root to ...".
pub fn prepare(why: &str, printer: &Printer) -> Result<(), CliError> {
    let sudo = crate::system::find_program("sudo").ok_or(CliError::SudoMissing)?;
    printer.notice(&format!("tether needs root to {why}; asking sudo."));
    let status = Command::new(&sudo)
        .arg("-v")
        .status()
        .map_err(CliError::SudoStart)?;
    if !status.success() {
        return Err(CliError::SudoRefused(status));
    }
    Ok(())
}

/// `sudo -n -- program`: runs `program` as root without asking (after [`prepare`]).
pub fn command(program: &Path) -> Command {
    let mut cmd = Command::new("sudo");
    cmd.args(["-n", "--"]).arg(program);
    cmd
}

/// Runs this very command again as root (with the state directory spelled out, since sudo
/// resets the environment) and returns its exit code.
pub fn rerun(state_dir: &Path, why: &str, printer: &Printer) -> Result<u8, CliError> {
    prepare(why, printer)?;
    let exe = std::env::current_exe().map_err(CliError::Spawn)?;
    let mut dir = std::ffi::OsString::from("TETHER_STATE_DIR=");
    dir.push(state_dir);
    // Through `env`, so that a --state-dir on the command line still wins.
    let status = Command::new("sudo")
        .args(["-n", "--", "env"])
        .arg(dir)
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .status()
        .map_err(CliError::Spawn)?;
    Ok(status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(1))
}
