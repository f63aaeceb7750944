//! `tether intercept`: ask the daemon to send a workload's Service traffic to a local port,
//! follow its progress, and write the intercepted container's environment where asked.
//!
//! The daemon does the work, because the intercept outlives this command; this command only
//! asks and reports. Ctrl-C before the intercept is active hangs up on the daemon, which then
//! undoes what it changed and says so before this command exits.

use std::path::{Path, PathBuf};

use tokio::signal::unix::{SignalKind, signal};

use crate::args::InterceptArgs;
use crate::cluster::env::{Env, EnvSyntax};
use crate::control;
use crate::error::CliError;
use crate::ipc::{self, InterceptInfo, InterceptSpec, Reply, Request};
use crate::output::{Event, Printer};
use crate::system::state::StateDir;

/// What `tether intercept` did.
pub struct Intercepted {
    pub info: InterceptInfo,
    /// The intercepted container's environment.
    pub env: std::collections::BTreeMap<String, String>,
    pub warnings: Vec<String>,
    pub env_files: Vec<PathBuf>,
}

/// The Deployment's name from `NAME` or `deploy/NAME` (kubectl's spellings).
pub fn workload_name(arg: &str) -> Result<String, CliError> {
    let name = match arg.split_once('/') {
        None => arg,
        Some((
            "deploy" | "deployment" | "deployments" | "deployment.apps" | "deployments.apps",
            name,
        )) => name,
        Some(_) => return Err(CliError::NotADeployment(arg.into())),
    };
    if name.is_empty() || name.contains('/') {
        return Err(CliError::NotADeployment(arg.into()));
    }
    Ok(name.to_owned())
}

/// `LOCAL[:SVCPORT]`.
pub fn parse_port(arg: &str) -> Result<(u16, Option<String>), CliError> {
    let (local, service) = match arg.split_once(':') {
        Some((l, s)) if !s.is_empty() => (l, Some(s.to_owned())),
        Some(_) => return Err(CliError::BadPort(arg.into())),
        None => (arg, None),
    };
    let local = local
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| CliError::BadPort(arg.into()))?;
    Ok((local, service))
}

pub async fn intercept(
    args: &InterceptArgs,
    owner: Option<u32>,
    state_dir: &Path,
    printer: &Printer,
) -> Result<Intercepted, CliError> {
    let workload = workload_name(&args.workload)?;
    let (local_port, port) = parse_port(&args.port)?;
    let state = StateDir::open(state_dir)?;
    let socket = state.socket_path();
    let Some(status) = control::query(&socket).await else {
        return Err(CliError::NotConnected("intercept"));
    };
    let namespace = args
        .namespace
        .clone()
        .or(status.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let spec = InterceptSpec {
        name: args.options.name.clone(),
        namespace,
        workload,
        service: args.options.service.clone(),
        port,
        container: args.options.container.clone(),
        address: args
            .options
            .address
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        local_port,
        owner,
    };
    let lost = |e: std::io::Error| CliError::DaemonLost {
        reason: e.to_string(),
        log: status.log.clone(),
    };
    let mut replies = ipc::send(&socket, Request::Intercept(spec))
        .await
        .map_err(lost)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(CliError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(CliError::Signals)?;
    let mut progress = printer.progress();
    let mut hung_up = false;
    let result = loop {
        let reply = tokio::select! {
            reply = replies.next() => reply,
            _ = sigint.recv(), if !hung_up => { hung_up = true; replies.hang_up().await; continue; }
            _ = sigterm.recv(), if !hung_up => { hung_up = true; replies.hang_up().await; continue; }
        };
        match reply.map_err(lost)? {
            Some(Reply::Progress { message }) => progress.step(&message),
            Some(Reply::Intercepted {
                intercept,
                env,
                warnings,
            }) => break Ok((*intercept, env, warnings)),
            Some(Reply::Failed { error, exit_code }) => {
                break Err(CliError::DaemonFailed {
                    message: error,
                    exit_code,
                });
            }
            Some(_) => continue,
            None => {
                break Err(CliError::DaemonLost {
                    reason: "it closed the connection without an answer (an older daemon? `tether quit` and connect again)".into(),
                    log: status.log.clone(),
                });
            }
        }
    };
    progress.finish();
    let (info, env, warnings) = result?;
    let mut env_files = Vec::new();
    let rendered: Env = env.clone().into_iter().collect();
    if let Some(path) = &args.options.env_file {
        write(
            path,
            &rendered.render(args.options.env_syntax.unwrap_or_default())?,
        )?;
        env_files.push(path.clone());
    }
    if let Some(path) = &args.options.env_json {
        write(path, &rendered.render(EnvSyntax::Json)?)?;
        env_files.push(path.clone());
    }
    Ok(Intercepted {
        info,
        env,
        warnings,
        env_files,
    })
}

/// Env files hold Secrets: readable by the user only.
fn write(path: &Path, text: &str) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |source| CliError::WriteFile {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)
}

pub async fn run(args: InterceptArgs, state_dir: &Path, printer: &Printer) -> Result<(), CliError> {
    let done = intercept(&args, None, state_dir, printer).await?;
    for warning in &done.warnings {
        printer.notice(&format!("warning: {warning}"));
    }
    printer.event(&Event::Intercepted {
        intercept: Box::new(done.info),
        env_files: done.env_files,
        warnings: done.warnings,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_and_ports_read_as_kubectl_and_telepresence_spell_them() {
        assert_eq!(workload_name("web").unwrap(), "web");
        assert_eq!(workload_name("deploy/web").unwrap(), "web");
        assert_eq!(workload_name("deployment.apps/web").unwrap(), "web");
        assert!(workload_name("sts/db").is_err());
        assert!(workload_name("deploy/").is_err());
        assert_eq!(parse_port("8080").unwrap(), (8080, None));
        assert_eq!(
            parse_port("8081:http").unwrap(),
            (8081, Some("http".into()))
        );
        assert_eq!(parse_port("8081:80").unwrap(), (8081, Some("80".into())));
        assert!(parse_port("0").is_err());
        assert!(parse_port("http").is_err());
        assert!(parse_port("8080:").is_err());
    }
}
