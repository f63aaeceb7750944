//! nginx as the controller's child: started in the foreground (`daemon off`) with its prefix
//! and configuration in the controller's private directory, logging to the container's
//! stdout/stderr, and reloaded (SIGHUP) only with a configuration `nginx -t` accepted, so a
//! bad render never takes the running proxy down.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// The configuration nginx runs with, inside the directory.
pub const CONF: &str = "nginx.conf";
/// A candidate configuration, tested before it replaces [`CONF`].
const CANDIDATE: &str = "nginx.conf.next";
/// How long nginx gets to finish open requests when the controller stops.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    #[error("cannot prepare {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {bin}: {source} (install Debian's nginx-light)")]
    Spawn { bin: String, source: std::io::Error },
    #[error("nginx rejected the configuration: {0}")]
    Invalid(String),
    #[error("cannot signal nginx: {0}")]
    Signal(std::io::Error),
}

/// The nginx executable and its private directory.
#[derive(Debug, Clone)]
pub struct Nginx {
    pub bin: String,
    pub dir: PathBuf,
}

impl Nginx {
    /// Creates the directory and its `tmp` (readable by workers, which nginx chowns into).
    pub fn prepare(&self) -> Result<(), NginxError> {
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|source| NginxError::Dir {
            path: tmp.clone(),
            source,
        })?;
        for d in [&self.dir, &tmp] {
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(|source| NginxError::Dir {
                    path: d.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    fn command(&self, conf: &Path) -> Command {
        let mut cmd = Command::new(&self.bin);
        // `-e stderr`: nginx opens its compiled-in error log before it reads the
        // configuration, and that path (/var/log/nginx) is not ours.
        cmd.arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(conf)
            .args(["-e", "stderr"]);
        cmd
    }

    /// `nginx -t` on `text`; on success the text becomes [`CONF`].
    pub async fn install(&self, text: &str) -> Result<(), NginxError> {
        let candidate = self.dir.join(CANDIDATE);
        let dir_error = |source| NginxError::Dir {
            path: candidate.clone(),
            source,
        };
        std::fs::write(&candidate, text).map_err(dir_error)?;
        let out = self
            .command(&candidate)
            .arg("-t")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| NginxError::Spawn {
                bin: self.bin.clone(),
                source,
            })?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| !l.contains("test failed"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(NginxError::Invalid(why));
        }
        std::fs::rename(&candidate, self.dir.join(CONF)).map_err(dir_error)
    }

    /// Starts nginx with [`CONF`]; its output is the container's.
    pub fn start(&self) -> Result<Child, NginxError> {
        let mut cmd = self.command(&self.dir.join(CONF));
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // nginx (and with it its workers) stops when the controller dies, rather
                // than holding the port for a controller that is gone.
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::TERM,
                ))?;
                Ok(())
            });
        }
        cmd.spawn().map_err(|source| NginxError::Spawn {
            bin: self.bin.clone(),
            source,
        })
    }
}

fn signal(child: &Child, sig: rustix::process::Signal) -> Result<(), NginxError> {
    let pid = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        .ok_or_else(|| NginxError::Signal(std::io::Error::other("nginx has exited")))?;
    rustix::process::kill_process(pid, sig).map_err(|e| NginxError::Signal(e.into()))
}

/// Makes nginx read [`CONF`] again (new workers take over, old ones finish their requests).
pub fn reload(child: &Child) -> Result<(), NginxError> {
    signal(child, rustix::process::Signal::HUP)
}

/// Stops nginx gracefully (SIGQUIT), killing it when it takes too long.
pub async fn stop(mut child: Child) -> Option<ExitStatus> {
    if signal(&child, rustix::process::Signal::QUIT).is_ok()
        && let Ok(status) = tokio::time::timeout(STOP_GRACE, child.wait()).await
    {
        return status.ok();
    }
    let _ = child.kill().await;
    child.wait().await.ok()
}
