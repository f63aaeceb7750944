//! One session, from the first dial to quit: open the first tunnel (its error is the user's
//! answer), record what is about to change, set up the device, routes and DNS, then serve
//! the tunnel and redial whenever it drops, until quit undoes it all.

use std::sync::{Arc, Mutex};

use tether_tunnel::stack::dns::hosts::LocalHosts;
use tokio_util::sync::CancellationToken;

use super::dial::{Dialer, Opened};
use super::host::{self, Device, Host, RouteFlags};
use super::server::Events;
use super::tunnel::{self, Ended};
use super::{DaemonConfig, DaemonError, Source};
use crate::ipc::{DnsStatus, ManagerStatus, Reply, SessionState, Status};
use crate::system::dns::{HostDns, detect};
use crate::system::state::{SessionRecord, StateDir};

/// What a session works with; borrowed from the daemon for its whole life.
pub struct Session<'a> {
    pub config: &'a DaemonConfig,
    pub state: &'a StateDir,
    pub events: &'a Events,
    pub status: &'a Arc<Mutex<Status>>,
    pub stop: &'a CancellationToken,
    /// The names the DNS server answers itself (Ingress hosts).
    pub hosts: LocalHosts,
}

impl Session<'_> {
    /// Runs the session over tunnels from `dialer` until quit (Ok) or until the first tunnel
    /// or the machine's set-up fails.
    pub async fn run<D: Dialer>(&self, mut dialer: D) -> Result<(), DaemonError> {
        let settings = &self.config.settings;
        // Until something is changed, a stop simply ends the attempt.
        host::tun_addresses(settings.tun_subnet)?;
        self.events
            .progress(format!("Connecting to {}", describe(&self.config.source)));
        let opened = tokio::select! {
            opened = tunnel::first(&mut dialer) => opened?,
            _ = self.stop.cancelled() => return Ok(()),
        };
        self.events.progress(match self.config.namespace {
            Some(_) => format!("Serving {} in the rootless namespace", settings.tun_name),
            None => format!("Setting up {} with routes and DNS", settings.tun_name),
        });
        let (mut host, mut record) = self.set_up(&opened).await?;
        self.set_connected(&host, &opened, false);
        if let Ok(s) = self.status.lock() {
            self.events.push(Reply::Connected {
                status: Box::new(s.clone()),
            });
        }
        tracing::info!(manager = %opened.manager, routes = ?host.routed, "connected");

        self.serve(&mut dialer, &mut host, &mut record, opened)
            .await;
        if host.down().await {
            self.state.remove();
        }
        Ok(())
    }

    /// Records the session, then creates the device with its routes and DNS. On error the
    /// record goes again: nothing it describes is left.
    async fn set_up(&self, opened: &Opened) -> Result<(Host, SessionRecord), DaemonError> {
        let settings = &self.config.settings;
        let (_, dns_ip) = host::tun_addresses(settings.tun_subnet)?;
        let (dns, device) = match &self.config.namespace {
            Some(link) => (
                HostDns::for_namespace(dns_ip, &settings.resolv_conf, &link.resolv_conf),
                Device::Namespace {
                    fd: take_inherited(link.tun_fd),
                    host_address: link.host_address,
                },
            ),
            None => (
                HostDns::new(
                    detect(settings.dns, &settings.resolv_conf),
                    &settings.tun_name,
                    dns_ip,
                    &settings.resolv_conf,
                    &self.state.backup_path(),
                ),
                Device::Create,
            ),
        };
        let dns = dns.map_err(host::HostError::from)?;
        let dns_mode = dns.mode;
        let record = SessionRecord {
            pid: std::process::id(),
            tun_name: settings.tun_name.clone(),
            resolv_conf: settings.resolv_conf.clone(),
            resolv_backup: self.state.backup_path(),
            manager: opened.manager.clone(),
            dns_mode,
        };
        self.state.write(&record)?;
        let host = Host::up(
            device,
            &settings.tun_name,
            settings.tun_subnet,
            RouteFlags {
                also_proxy: settings.also_proxy.clone(),
                never_proxy: settings.never_proxy.clone(),
            },
            dns,
            search_namespace(&self.config.source),
            opened.cluster.clone(),
            opened.peer_ip,
        )
        .await;
        match host {
            Ok(mut host) => {
                host.local_hosts = self.hosts.clone();
                Ok((host, record))
            }
            Err(e) => {
                self.state.remove();
                Err(e.into())
            }
        }
    }

    /// Serves tunnels until quit, redialing after each drop; the device, routes and DNS
    /// stay in place meanwhile.
    async fn serve<D: Dialer>(
        &self,
        dialer: &mut D,
        host: &mut Host,
        record: &mut SessionRecord,
        mut opened: Opened,
    ) {
        loop {
            let ended = tunnel::serve(host, opened, self.stop, |host| {
                if let Ok(mut s) = self.status.lock() {
                    fill_from_host(&mut s, host);
                }
            })
            .await;
            match ended {
                Ended::Stop => return,
                Ended::Lost(reason) => tracing::warn!("tunnel lost: {reason}; reconnecting"),
            }
            if let Ok(mut s) = self.status.lock() {
                s.state = SessionState::Reconnecting;
                s.connected_since = None;
            }
            let Some(again) = tunnel::reconnect(dialer, &host.tun, self.stop).await else {
                return;
            };
            host.update(again.cluster.clone(), again.peer_ip).await;
            self.set_connected(host, &again, true);
            tracing::info!(manager = %again.manager, "reconnected");
            if record.manager != again.manager {
                // quit names the manager it disconnects from: the current one, not the first.
                record.manager = again.manager.clone();
                if let Err(e) = self.state.write(record) {
                    tracing::warn!("cannot record the new manager: {e}");
                }
            }
            opened = again;
        }
    }

    fn set_connected(&self, host: &Host, opened: &Opened, reconnected: bool) {
        let Ok(mut s) = self.status.lock() else {
            return;
        };
        s.state = SessionState::Connected;
        s.manager = ManagerStatus {
            address: opened.manager.clone(),
            version: opened.manager_version.clone(),
        };
        s.connected_since = Some(jiff::Timestamp::now());
        if reconnected {
            s.reconnects += 1;
        }
        fill_from_host(&mut s, host);
    }
}

/// The rootless run's device, which this process inherited under the number `fd`.
fn take_inherited(fd: i32) -> std::os::fd::OwnedFd {
    // SAFETY: `run` passed this descriptor to this process alone, and it is taken once: a
    // session sets the machine up once.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}

/// The manager as the user knows it, for progress messages.
fn describe(source: &Source) -> String {
    match source {
        Source::Direct(target) => format!("the manager at {}", target.manager),
        Source::Kubernetes(k) => format!(
            "the traffic manager in namespace {} (port-forward)",
            k.manager_namespace
        ),
    }
}

/// The namespace whose Services short names mean, when it is not the manager's.
fn search_namespace(source: &Source) -> Option<String> {
    match source {
        Source::Direct(_) => None,
        Source::Kubernetes(k) => Some(k.namespace.clone()),
    }
}

fn fill_from_host(status: &mut Status, host: &Host) {
    status.device = host.tun_name.clone();
    // The prefix length comes from the device's subnet.
    status.device_address = ipnet::Ipv4Net::new(host.tun_ip, host.tun_subnet.prefix_len())
        .expect("a valid prefix length");
    status.routes = host.routed.clone();
    status.dns = DnsStatus {
        mode: host.dns.mode,
        server: host.dns_ip,
        domain: host.cluster.dns_domain.clone(),
        search: host.cluster.search.clone(),
    };
}
