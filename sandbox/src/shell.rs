//! `tether-sandbox shell`: a shell in the workstation namespace, the stand-in for a laptop
//! outside the cluster. Its network namespace has only loopback, where the sandbox's API
//! server also listens, so the kubeconfig works unchanged and nothing else of the cluster is
//! reachable until tether connects. It gets a private mount namespace with its own
//! `/etc/resolv.conf` (kept in the state directory), so DNS changes made in the workstation,
//! as `tether connect` makes them, never touch the host's.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use rustix::mount::{MountPropagationFlags, mount_bind, mount_change};
use rustix::thread::{LinkNameSpaceType, UnshareFlags, move_into_link_name_space, unshare_unsafe};

use crate::daemon::{self, Config};
use crate::node::Names;
use crate::node::netns::Netns;

/// The workstation's resolv.conf: created from the host's the first time, then left as the
/// workstation's programs (tether) make it.
fn resolv_conf(state_dir: &Path) -> std::io::Result<std::path::PathBuf> {
    let dir = state_dir.join("workstation");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("resolv.conf");
    if !path.exists() {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        std::fs::write(&path, host)?;
    }
    Ok(path)
}

pub fn run(cfg: &Config, command: &[String]) -> ExitCode {
    match start(cfg, command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tether-sandbox shell: {e}");
            ExitCode::FAILURE
        }
    }
}

fn start(cfg: &Config, command: &[String]) -> Result<ExitCode, String> {
    if daemon::running(&cfg.state_dir).is_none() {
        return Err(format!(
            "the sandbox of {} is not running; start it with `tether-sandbox up --state-dir {}`",
            cfg.state_dir.display(),
            cfg.state_dir.display()
        ));
    }
    let ws = Netns::named(Names::for_state_dir(&cfg.state_dir).workstation());
    let netns = ws.open().map_err(|e| {
        format!("{e}; restart the sandbox (`tether-sandbox down` then `up`) to recreate it")
    })?;
    let resolv = resolv_conf(&cfg.state_dir)
        .map_err(|e| format!("cannot prepare the workstation's resolv.conf: {e}"))?;
    let resolv = CString::new(resolv.as_os_str().as_encoded_bytes())
        .map_err(|_| "the state directory's path contains a NUL byte".to_string())?;

    // `up --kubeconfig X` recorded X; an explicit `shell --kubeconfig` still wins.
    let kubeconfig = match std::fs::read(crate::daemon::kubeconfig_record(&cfg.state_dir)) {
        Ok(bytes) if cfg.kubeconfig == cfg.state_dir.join("kubeconfig") && !bytes.is_empty() => {
            // SAFETY: written by `up` from an OsStr's encoded bytes.
            PathBuf::from(unsafe { std::ffi::OsString::from_encoded_bytes_unchecked(bytes) })
        }
        _ => cfg.kubeconfig.clone(),
    };
    let mut cmd = match command.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
        None => {
            let shell = std::env::var("SHELL")
                .ok()
                .filter(|s| Path::new(s).exists())
                .unwrap_or_else(|| "/bin/sh".to_string());
            println!(
                "tether-sandbox workstation: only the API server is reachable; KUBECONFIG={}; `exit` to leave",
                kubeconfig.display()
            );
            Command::new(shell)
        }
    };
    cmd.env("KUBECONFIG", &kubeconfig)
        .env("TETHER_SANDBOX_WORKSTATION", ws.name());
    // SAFETY: the closure only makes system calls on values prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network))?;
            unshare_unsafe(UnshareFlags::NEWNS)?;
            mount_change(
                c"/",
                MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
            )?;
            mount_bind(resolv.as_c_str(), c"/etc/resolv.conf")?;
            Ok(())
        });
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
