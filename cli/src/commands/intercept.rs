//! `tether intercept`: ask the daemon to send a workload's Service traffic to a local port,
//! follow its progress, and write the intercepted container's environment where asked.
//!
//! The daemon does the work, because the intercept outlives this command; this command only
//! asks and reports. Ctrl-C before the intercept is active hangs up on the daemon, which then
//! undoes what it changed and says so before this command exits.

use std::path::{Path, PathBuf};

use tokio::signal::unix::{SignalKind, signal};

use tether_tunnel::wire::route::{Filter, HeaderMatch, Mode, PathMatch, Pattern, Route};

use crate::args::{InterceptArgs, RouteArgs};
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

/// The header `--http-header auto` sets.
pub const AUTO_HEADER: &str = "x-tether-intercept";
/// The variable that holds `AUTO_HEADER: value` in the intercept's environment.
pub const HEADER_VARIABLE: &str = "TETHER_INTERCEPT_HEADER";

/// The route the flags ask for, and the header `auto` made up (`name: value`).
pub fn route(args: &RouteArgs, name: &str) -> Result<(Route, Option<String>), CliError> {
    let mut headers = Vec::new();
    let mut made_up = None;
    let bad = |flag: &str, arg: &str| {
        CliError::BadFilter(format!(
            "{flag} {arg:?} is not NAME=VALUE (e.g. {flag} x-dev=alice)"
        ))
    };
    for arg in &args.http_header {
        if arg == "auto" {
            let value = format!("{name}-{}", random_suffix());
            made_up = Some(format!("{AUTO_HEADER}: {value}"));
            headers.push(HeaderMatch {
                name: AUTO_HEADER.into(),
                value: Pattern::exact(value),
            });
            continue;
        }
        let (k, v) = arg
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| bad("--http-header", arg))?;
        headers.push(HeaderMatch {
            name: k.to_ascii_lowercase(),
            value: Pattern::exact(v),
        });
    }
    for arg in &args.http_header_regex {
        let (k, v) = arg
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| bad("--http-header-regex", arg))?;
        headers.push(HeaderMatch {
            name: k.to_ascii_lowercase(),
            value: Pattern::regex(v),
        });
    }
    let path = match (
        &args.http_path_prefix,
        &args.http_path_equal,
        &args.http_path_regex,
    ) {
        (Some(p), _, _) => Some(PathMatch::prefix(p.clone())),
        (_, Some(p), _) => Some(PathMatch::equal(p.clone())),
        (_, _, Some(r)) => Some(PathMatch::regex(r.clone())),
        _ => None,
    };
    let filter = Filter { headers, path };
    filter
        .validate()
        .map_err(|e| CliError::BadFilter(format!("bad HTTP filter: {e}")))?;
    let mode = if args.mirror {
        Mode::Mirror
    } else {
        Mode::Steal
    };
    Ok((Route { mode, filter }, made_up))
}

/// Eight hex digits, so that two developers' `auto` headers differ.
fn random_suffix() -> String {
    let mut bytes = [0u8; 4];
    // Without the OS's randomness, the time and pid still tell two intercepts apart.
    if getrandom::fill(&mut bytes).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        bytes = (now ^ std::process::id()).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn intercept(
    args: &InterceptArgs,
    owner: Option<u32>,
    state_dir: &Path,
    printer: &Printer,
) -> Result<Intercepted, CliError> {
    let workload = workload_name(&args.workload)?;
    let (local_port, port) = parse_port(&args.port)?;
    let name = args
        .options
        .name
        .clone()
        .unwrap_or_else(|| workload.clone());
    let (route, header) = route(&args.options.route, &name)?;
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
        route,
        replace: args.options.route.replace,
    };
    let lost = |e: std::io::Error| CliError::DaemonLost {
        reason: e.to_string(),
        log: status.log.clone(),
    };
    let mut replies = ipc::send(&socket, Request::Intercept(Box::new(spec)))
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
    let (mut info, mut env, warnings) = result?;
    if let Some(header) = header {
        env.insert(HEADER_VARIABLE.into(), header.clone());
        info.header = Some(header);
    }
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

    #[test]
    fn filters_read_from_the_flags() {
        let args = RouteArgs {
            http_header: vec!["X-Dev=one".into(), "auto".into()],
            http_path_prefix: Some("/v2".into()),
            ..Default::default()
        };
        let (asked, header) = route(&args, "web").unwrap();
        assert_eq!(asked.mode, Mode::Steal);
        assert_eq!(asked.filter.headers[0].name, "x-dev");
        assert_eq!(asked.filter.headers[1].name, AUTO_HEADER);
        let header = header.unwrap();
        assert!(header.starts_with("x-tether-intercept: web-"), "{header}");
        assert_eq!(asked.filter.path, Some(PathMatch::prefix("/v2")));
        // Two `auto` headers differ.
        assert_ne!(
            asked.filter.headers[1],
            route(&args, "web").unwrap().0.filter.headers[1]
        );

        let bad = |args: RouteArgs| route(&args, "web").unwrap_err().to_string();
        assert!(
            bad(RouteArgs {
                http_header: vec!["x-dev".into()],
                ..Default::default()
            })
            .contains("NAME=VALUE")
        );
        assert!(
            bad(RouteArgs {
                http_header_regex: vec!["x-dev=(".into()],
                ..Default::default()
            })
            .contains("regex")
        );
        assert!(
            bad(RouteArgs {
                http_path_prefix: Some("v2".into()),
                ..Default::default()
            })
            .contains("start with /")
        );
        let (global, none) = route(&RouteArgs::default(), "web").unwrap();
        assert!(global.is_global() && none.is_none());
        let (mirror, _) = route(
            &RouteArgs {
                mirror: true,
                ..Default::default()
            },
            "web",
        )
        .unwrap();
        assert_eq!(mirror.mode, Mode::Mirror);
    }
}
