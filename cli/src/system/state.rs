//! The session record: written before tether changes anything, removed after everything is
//! undone. A record whose process is gone marks leftovers of a crash.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::process;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("cannot use the state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the session record {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the session record {path} is unreadable ({reason}); if the resolver file (/etc/resolv.conf \
         unless --resolv-conf was given) starts with \"# Written by tether\", copy {backup} over it, \
         then remove the record"
    )]
    Corrupt {
        path: PathBuf,
        reason: String,
        backup: PathBuf,
    },
}

/// What a running tether daemon changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecord {
    pub pid: u32,
    pub tun_name: String,
    /// The resolver file tether rewrote, and where its original content is kept.
    pub resolv_conf: PathBuf,
    pub resolv_backup: PathBuf,
    pub manager: String,
    /// How DNS was configured; per-link DNS in systemd-resolved goes away with the device.
    #[serde(default)]
    pub dns_mode: DnsMode,
}

/// How cluster names reach tether's DNS server.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DnsMode {
    /// Per-link DNS servers and domains on the TUN device, through systemd-resolved.
    Resolved,
    /// The resolver file rewritten, with a backup restored on exit.
    #[default]
    ResolvConf,
    /// A resolver file of tether's own, bind-mounted over /etc/resolv.conf inside a rootless
    /// run's namespace; the machine's file is not touched.
    Namespace,
}

impl DnsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DnsMode::Resolved => "resolved",
            DnsMode::ResolvConf => "resolv-conf",
            DnsMode::Namespace => "namespace",
        }
    }
}

pub struct StateDir {
    dir: PathBuf,
}

/// The daemon's socket's file name in the state directory.
pub const SOCKET: &str = "daemon.sock";

impl StateDir {
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        Ok(StateDir {
            dir: dir.to_owned(),
        })
    }

    fn record_path(&self) -> PathBuf {
        self.dir.join("session.json")
    }

    pub fn backup_path(&self) -> PathBuf {
        self.dir.join("resolv.conf.orig")
    }

    /// The daemon's Unix socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join(SOCKET)
    }

    /// The daemon's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// The configuration `tether connect` hands to the daemon it starts.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("daemon.json")
    }

    pub fn read(&self) -> Result<Option<SessionRecord>, StateError> {
        let path = self.record_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Dir { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path,
                reason: e.to_string(),
                backup: self.backup_path(),
            })
    }

    /// Writes the record atomically (temporary file, then rename).
    pub fn write(&self, record: &SessionRecord) -> Result<(), StateError> {
        let path = self.record_path();
        let tmp = self.dir.join("session.json.tmp");
        // Serializing a struct of strings and integers cannot fail.
        let text = serde_json::to_string_pretty(record).expect("record serializes");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|source| StateError::Write { path, source })
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_file(self.record_path());
    }
}

/// The state of the previous session, as found in a record.
pub enum Previous {
    None,
    Running(SessionRecord),
    Crashed(SessionRecord),
}

impl StateDir {
    pub fn previous(&self) -> Result<Previous, StateError> {
        Ok(match self.read()? {
            None => Previous::None,
            Some(record) if record.pid != std::process::id() && process::is_tether(record.pid) => {
                Previous::Running(record)
            }
            Some(record) => Previous::Crashed(record),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let state = StateDir::open(&dir).unwrap();
        assert!(state.read().unwrap().is_none());
        let record = SessionRecord {
            pid: 4_000_000,
            tun_name: "tether9".into(),
            resolv_conf: "/etc/resolv.conf".into(),
            resolv_backup: state.backup_path(),
            manager: "10.0.0.1:8022".into(),
            dns_mode: DnsMode::ResolvConf,
        };
        state.write(&record).unwrap();
        assert_eq!(state.read().unwrap(), Some(record));
        assert!(matches!(state.previous().unwrap(), Previous::Crashed(_)));
        std::fs::write(dir.join("session.json"), "{not json").unwrap();
        assert!(matches!(state.read(), Err(StateError::Corrupt { .. })));
        state.remove();
    }
}
