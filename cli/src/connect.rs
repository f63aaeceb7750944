//! `tether connect` in direct mode: tunnel to a manager at a known address, then bring up the
//! TUN device, routes and DNS, and carry traffic until interrupted.
//!
//! Every change to the machine is recorded in the state directory before it is made and
//! undone on every exit path: a normal exit, an error half-way through setup, Ctrl-C,
//! SIGTERM, or the loss of the tunnel. After SIGKILL the kernel removes the TUN device and
//! its routes, and the next `tether connect` or `tether quit` restores the resolver file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use serde_json::json;
use tether_tunnel::Session;
use tether_tunnel::stack::dns::DnsConfig;
use tether_tunnel::stack::{self, StackConfig, StackError};
use tether_tunnel::wire::control::{ClusterInfo, ControlMessage};
use tether_tunnel::wire::flow::FlowRequest;
use tether_tunnel::wire::frame::{MAX_FRAME, expect_frame, write_frame};
use tether_tunnel::wire::handshake::client_handshake;
use tokio::net::TcpStream;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::error::CliError;
use crate::output::Printer;
use crate::system::state::{Previous, SessionRecord, StateDir};
use crate::system::{resolv, routes::Routes};

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(15);
/// A TUN MTU near the IPv4 maximum: the kernel hands over 64 KiB segments, so each packet
/// carries as much as possible through the userspace stack.
const TUN_MTU: u16 = 65_000;

pub struct ConnectConfig {
    pub manager: String,
    pub token_file: PathBuf,
    pub also_proxy: Vec<IpNet>,
    pub tun_name: String,
    pub tun_subnet: Ipv4Net,
    pub resolv_conf: PathBuf,
    pub state_dir: PathBuf,
}

pub async fn run(config: ConnectConfig, printer: Printer) -> Result<(), CliError> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(CliError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(CliError::Signals)?;

    let state = StateDir::open(&config.state_dir)?;
    match state.previous()? {
        Previous::Running(record) => {
            return Err(CliError::AlreadyConnected {
                pid: record.pid,
                manager: record.manager,
            });
        }
        Previous::Crashed(record) => crate::quit::undo_leftovers(&state, &record, printer)?,
        Previous::None => {}
    }

    let token = read_token(&config.token_file)?;
    let addr = crate::args::resolve_manager(&config.manager).map_err(|source| {
        CliError::ManagerAddress {
            address: config.manager.clone(),
            source,
        }
    })?;
    // Until something is changed, an interrupt simply ends the attempt.
    let (session, mut control, cluster, manager_version) = tokio::select! {
        opened = open_session(addr, &token) => opened?,
        _ = sigint.recv() => return Err(CliError::Interrupted),
        _ = sigterm.recv() => return Err(CliError::Interrupted),
    };
    let subnets = subnets_to_route(&cluster, &config, addr)?;

    let mut hosts = config.tun_subnet.hosts();
    let (Some(tun_ip), Some(dns_ip)) = (hosts.next(), hosts.next()) else {
        return Err(CliError::TunSubnetTooSmall(config.tun_subnet));
    };
    let original_resolv = resolv::read(&config.resolv_conf)?;
    let upstream: Vec<SocketAddr> = resolv::nameservers(&original_resolv)
        .into_iter()
        .filter(|ns| ns.ip() != dns_ip)
        .collect();

    let record = SessionRecord {
        pid: std::process::id(),
        tun_name: config.tun_name.clone(),
        resolv_conf: config.resolv_conf.clone(),
        resolv_backup: state.backup_path(),
        manager: addr.to_string(),
    };
    state.write(&record)?;
    // From here on, every exit path goes through `undo`.
    let mut changes = Changes {
        state: &state,
        record,
        resolv_rewritten: false,
    };
    let result = async {
        let tun = stack::tun_device::open(
            &config.tun_name,
            tun_ip,
            config.tun_subnet.prefix_len(),
            TUN_MTU,
        )
        .map_err(|e| match &e {
            StackError::CreateTun { source, .. } if is_permission_error(source) => {
                CliError::Privileges(e.to_string())
            }
            _ => CliError::Stack(e),
        })?;
        Routes::new()?.add(&config.tun_name, &subnets).await?;
        let new_resolv = resolv::render(&original_resolv, dns_ip, &cluster.search, &state.backup_path());
        resolv::rewrite(&config.resolv_conf, &state.backup_path(), &original_resolv, &new_resolv)?;
        changes.resolv_rewritten = true;

        let routed: Vec<String> = subnets.iter().map(ToString::to_string).collect();
        printer.emit(
            &format!(
                "Connected to the manager at {addr} (tether-agent {manager_version}).\n  \
                 device {} {tun_ip}/{}, routing {}\n  \
                 DNS {dns_ip}, cluster domain {}, search {}\n\
                 Press Ctrl-C to disconnect.",
                config.tun_name,
                config.tun_subnet.prefix_len(),
                if routed.is_empty() { "nothing".to_owned() } else { routed.join(", ") },
                cluster.dns_domain,
                cluster.search.join(" "),
            ),
            json!({
                "event": "connected",
                "manager": addr.to_string(),
                "manager_version": manager_version,
                "device": config.tun_name,
                "device_address": format!("{tun_ip}/{}", config.tun_subnet.prefix_len()),
                "routes": routed,
                "dns": { "server": dns_ip.to_string(), "domain": cluster.dns_domain, "search": cluster.search },
            }),
        );

        let tun = std::sync::Arc::new(tun);
        let shutdown = CancellationToken::new();
        let stack_config = StackConfig {
            mtu: usize::from(TUN_MTU),
            anchor: dns_ip,
            dns: DnsConfig {
                listen: SocketAddr::new(dns_ip.into(), 53),
                domain: cluster.dns_domain.clone(),
                upstream,
            },
            udp_idle_timeout: Duration::from_secs(60),
        };
        let stack = tokio::spawn(stack::run(tun, session.clone(), stack_config, shutdown.clone()));
        tokio::pin!(stack);
        let reason = tokio::select! {
            _ = sigint.recv() => None,
            _ = sigterm.recv() => None,
            lost = keepalive(&mut control) => Some(lost),
            ended = &mut stack => Some(match ended {
                Ok(Ok(())) => "the network stack stopped".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => format!("the network stack failed: {e}"),
            }),
        };
        shutdown.cancel();
        if !stack.is_finished() {
            // The stack returns promptly once cancelled; do not wait forever regardless.
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut stack).await;
        }
        match reason {
            None => Ok(()),
            Some(reason) => Err(CliError::SessionLost { addr, reason }),
        }
    }
    .await;
    changes.undo();
    if result.is_ok() {
        printer.emit(
            "Disconnected; routes, device and DNS settings are restored.",
            json!({ "event": "disconnected" }),
        );
    }
    result
}

/// What this run changed, undone exactly once whatever the exit path.
struct Changes<'a> {
    state: &'a StateDir,
    record: SessionRecord,
    resolv_rewritten: bool,
}

impl Changes<'_> {
    fn undo(&mut self) {
        if self.resolv_rewritten || self.record.resolv_backup.exists() {
            match resolv::restore(&self.record.resolv_conf, &self.record.resolv_backup) {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    "{} was changed by another program while tether ran; left as it is",
                    self.record.resolv_conf.display()
                ),
                Err(e) => {
                    // Keep the record: the next run retries the restore from the backup.
                    tracing::error!("could not restore the resolver configuration: {e}");
                    return;
                }
            }
            self.resolv_rewritten = false;
        }
        self.state.remove();
    }
}

impl Drop for Changes<'_> {
    fn drop(&mut self) {
        // Reached only if `undo` was skipped by a panic; restoring is still right.
        if self.resolv_rewritten {
            self.undo();
        }
    }
}

fn read_token(path: &PathBuf) -> Result<String, CliError> {
    let token = std::fs::read_to_string(path).map_err(|source| CliError::TokenFile {
        path: path.clone(),
        source,
    })?;
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(CliError::EmptyToken(path.clone()));
    }
    Ok(token)
}

async fn open_session(
    addr: SocketAddr,
    token: &str,
) -> Result<(Session, tether_tunnel::FlowStream, ClusterInfo, String), CliError> {
    let unreachable = |reason: String| CliError::ManagerUnreachable { addr, reason };
    let mut stream = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => return Err(unreachable(format!("no answer within {DIAL_TIMEOUT:?}"))),
    };
    let _ = stream.set_nodelay(true);
    let accepted =
        match tokio::time::timeout(DIAL_TIMEOUT, client_handshake(&mut stream, token)).await {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(source)) => return Err(CliError::Handshake { addr, source }),
            Err(_) => return Err(unreachable(format!("no handshake within {DIAL_TIMEOUT:?}"))),
        };
    let session = Session::client(stream);
    let no_info = |reason: String| CliError::NoClusterInfo { addr, reason };
    let mut control = session
        .open(&FlowRequest::Control)
        .await
        .map_err(|e| no_info(e.to_string()))?;
    let frame = tokio::time::timeout(
        DIAL_TIMEOUT,
        expect_frame(&mut control, MAX_FRAME, "cluster info"),
    )
    .await
    .map_err(|_| no_info(format!("nothing within {DIAL_TIMEOUT:?}")))?
    .map_err(|e| no_info(e.to_string()))?;
    match ControlMessage::decode(&frame) {
        Ok(ControlMessage::ClusterInfo(info)) => {
            Ok((session, control, info, accepted.peer.software))
        }
        Ok(other) => Err(no_info(format!("unexpected message {other:?}"))),
        Err(e) => Err(no_info(e.to_string())),
    }
}

fn subnets_to_route(
    cluster: &ClusterInfo,
    config: &ConnectConfig,
    manager: SocketAddr,
) -> Result<Vec<IpNet>, CliError> {
    let mut subnets: Vec<IpNet> = Vec::new();
    for subnet in cluster.subnets.iter().chain(&config.also_proxy) {
        let subnet = subnet.trunc();
        if !subnets.contains(&subnet) {
            subnets.push(subnet);
        }
    }
    let tun: IpNet = config.tun_subnet.trunc().into();
    for subnet in &subnets {
        if matches!(subnet, IpNet::V6(_)) {
            return Err(CliError::Ipv6(*subnet));
        }
        if subnet.contains(&manager.ip()) {
            return Err(CliError::RoutesManager {
                subnet: *subnet,
                manager,
            });
        }
        if subnet.contains(&tun.network()) || tun.contains(&subnet.network()) {
            return Err(CliError::OverlapsTun {
                subnet: *subnet,
                tun,
            });
        }
    }
    Ok(subnets)
}

/// Pings the manager on the control stream; returns why the session is considered lost.
async fn keepalive(control: &mut tether_tunnel::FlowStream) -> String {
    let mut nonce = 0u64;
    loop {
        tokio::time::sleep(KEEPALIVE_INTERVAL).await;
        nonce += 1;
        if let Err(e) = write_frame(control, &ControlMessage::Ping { nonce }.encode()).await {
            return format!("keepalive failed: {e}");
        }
        let answer =
            tokio::time::timeout(KEEPALIVE_TIMEOUT, expect_frame(control, MAX_FRAME, "pong")).await;
        match answer {
            Ok(Ok(frame)) => match ControlMessage::decode(&frame) {
                Ok(ControlMessage::Pong { nonce: n }) if n == nonce => {}
                Ok(_) => {}
                Err(e) => return format!("bad keepalive answer: {e}"),
            },
            Ok(Err(e)) => return format!("keepalive failed: {e}"),
            Err(_) => return format!("no keepalive answer within {KEEPALIVE_TIMEOUT:?}"),
        }
    }
}

fn is_permission_error(err: &tun::Error) -> bool {
    match err {
        tun::Error::Io(e) => e.kind() == std::io::ErrorKind::PermissionDenied,
        other => other.to_string().contains("ermission"),
    }
}
