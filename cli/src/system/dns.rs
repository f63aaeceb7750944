//! Sending the machine's cluster-name lookups to tether's DNS server, in one of two ways:
//!
//! - with systemd-resolved (its stub resolver is what the resolver file points at, and
//!   `resolvectl` is installed): per-link DNS on the TUN device, `resolvectl dns` and
//!   `resolvectl domain`. resolved forgets them when the device goes away, so a crash leaves
//!   nothing behind.
//! - otherwise: the resolver file is rewritten (see [`super::resolv`]) and restored from a
//!   backup on exit, or by the next tether run after a crash.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::DnsPreference;
use crate::system::resolv::{self, ResolvError};
use crate::system::state::DnsMode;

#[derive(Debug, Error)]
pub enum DnsError {
    #[error(transparent)]
    Resolv(#[from] ResolvError),
    #[error("cannot configure systemd-resolved for {link}: cannot run resolvectl: {source}")]
    ResolvectlStart {
        link: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot configure systemd-resolved for {link}: resolvectl {args} failed: {stderr}")]
    Resolvectl {
        link: String,
        args: String,
        stderr: String,
    },
}

/// The resolver file systemd-resolved writes for its stub listener.
const RESOLVED_STUB: &str = "/run/systemd/resolve/stub-resolv.conf";

/// Which mode to use on this machine.
pub fn detect(wanted: DnsPreference, resolv_conf: &Path) -> DnsMode {
    match wanted {
        DnsPreference::Resolved => DnsMode::Resolved,
        DnsPreference::ResolvConf => DnsMode::ResolvConf,
        DnsPreference::Auto => {
            let stub_in_use = std::fs::canonicalize(resolv_conf)
                .is_ok_and(|target| target == Path::new(RESOLVED_STUB));
            if stub_in_use && super::find_program("resolvectl").is_some() {
                DnsMode::Resolved
            } else {
                DnsMode::ResolvConf
            }
        }
    }
}

/// The host's DNS settings while tether runs.
pub struct HostDns {
    pub mode: DnsMode,
    link: String,
    server: Ipv4Addr,
    resolv_conf: PathBuf,
    backup: PathBuf,
    /// The resolver file as it was before tether, read once at start.
    original: String,
    /// What tether currently applied: the search path, or None before the first apply.
    applied: Option<(String, Vec<String>)>,
}

impl HostDns {
    pub fn new(
        mode: DnsMode,
        link: &str,
        server: Ipv4Addr,
        resolv_conf: &Path,
        backup: &Path,
    ) -> Result<Self, DnsError> {
        Ok(HostDns {
            mode,
            link: link.to_owned(),
            server,
            resolv_conf: resolv_conf.to_owned(),
            backup: backup.to_owned(),
            original: resolv::read(resolv_conf)?,
            applied: None,
        })
    }

    /// DNS for a rootless run's namespace: `namespace_file` (bind-mounted over
    /// /etc/resolv.conf there) is written; the machine's `resolv_conf` is only read, for its
    /// resolvers, search path and options.
    pub fn for_namespace(
        server: Ipv4Addr,
        resolv_conf: &Path,
        namespace_file: &Path,
    ) -> Result<Self, DnsError> {
        Ok(HostDns {
            mode: DnsMode::Namespace,
            link: String::new(),
            server,
            resolv_conf: namespace_file.to_owned(),
            backup: PathBuf::new(),
            original: resolv::read(resolv_conf)?,
            applied: None,
        })
    }

    /// The resolvers that answer names outside the cluster: those the machine used before.
    pub fn upstream(&self) -> Vec<SocketAddr> {
        resolv::nameservers(&self.original)
            .into_iter()
            .filter(|ns| ns.ip() != self.server)
            .collect()
    }

    /// Points lookups of the cluster domain (and the search path) at tether's server;
    /// called again when the cluster reports a new domain or search path.
    pub async fn apply(&mut self, domain: &str, search: &[String]) -> Result<(), DnsError> {
        let wanted = (domain.to_owned(), search.to_vec());
        if self.applied.as_ref() == Some(&wanted) {
            return Ok(());
        }
        match self.mode {
            DnsMode::Resolved => {
                resolvectl(&["dns", &self.link, &self.server.to_string()]).await?;
                let mut args = vec!["domain".to_owned(), self.link.clone()];
                // `~domain` routes every name under it here without adding it to the search
                // path; the search domains are routed here and searched.
                args.push(format!("~{}", domain.trim_end_matches('.')));
                args.extend(search.iter().cloned());
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                resolvectl(&args).await?;
                // Only names under the cluster's domains go to this link.
                resolvectl(&["default-route", &self.link, "false"]).await?;
            }
            DnsMode::ResolvConf => {
                let new = resolv::render(&self.original, self.server, search, &self.backup);
                resolv::rewrite(&self.resolv_conf, &self.backup, &self.original, &new)?;
            }
            DnsMode::Namespace => {
                let new = resolv::render_for_namespace(&self.original, self.server, search);
                resolv::write_in_place(&self.resolv_conf, &new)?;
            }
        }
        self.applied = Some(wanted);
        Ok(())
    }

    /// Undoes [`apply`](Self::apply); errors are logged (the next run retries from the
    /// record). Returns false when the record must be kept for that retry.
    pub async fn revert(&mut self) -> bool {
        if self.mode == DnsMode::Namespace {
            // Nothing outside the namespace reads the file; its mount there keeps it as long
            // as anything inside still runs.
            let _ = std::fs::remove_file(&self.resolv_conf);
            self.applied = None;
            return true;
        }
        if self.applied.is_none() && !self.backup.exists() {
            return true;
        }
        match self.mode {
            DnsMode::Resolved => {
                // The link going away clears these too; reverting first keeps resolved's
                // caches consistent.
                if let Err(e) = resolvectl(&["revert", &self.link]).await {
                    tracing::warn!("{e}");
                }
            }
            DnsMode::Namespace => {}
            DnsMode::ResolvConf => match resolv::restore(&self.resolv_conf, &self.backup) {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    "{} was changed by another program while tether ran; left as it is",
                    self.resolv_conf.display()
                ),
                Err(e) => {
                    tracing::error!("could not restore the resolver configuration: {e}");
                    return false;
                }
            },
        }
        self.applied = None;
        true
    }
}

async fn resolvectl(args: &[&str]) -> Result<(), DnsError> {
    let link = args.get(1).copied().unwrap_or_default().to_owned();
    let out = tokio::process::Command::new("resolvectl")
        .args(args)
        .output()
        .await
        .map_err(|source| DnsError::ResolvectlStart {
            link: link.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DnsError::Resolvectl {
            link,
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_modes_win_and_a_plain_file_is_resolv_conf() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("resolv.conf");
        std::fs::write(&file, "nameserver 10.0.0.1\n").unwrap();
        assert_eq!(detect(DnsPreference::Auto, &file), DnsMode::ResolvConf);
        assert_eq!(detect(DnsPreference::Resolved, &file), DnsMode::Resolved);
        assert_eq!(
            detect(DnsPreference::ResolvConf, &file),
            DnsMode::ResolvConf
        );
    }
}
