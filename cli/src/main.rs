//! tether: put this machine inside a Kubernetes cluster.
//!
//! `main` only parses and dispatches. The parts, from the user inwards:
//! - [`args`] parses the command line into the plain configuration of [`config`], under
//!   which `config::file` layers `TETHER_*` variables and the config file;
//! - [`completion`] answers the shell's Tab (clap_complete's dynamic engine) with values
//!   looked up in the kubeconfig, the API and the daemon;
//! - [`commands`] holds one module per command, each doing its work and returning a typed
//!   result that [`output`] prints (text, JSON or YAML events; progress on stderr);
//! - [`control`] is what the commands do with the local daemon (status, start, stop,
//!   cleaning up after a crash), over the socket protocol of [`ipc`];
//! - [`daemon`] is the background process that owns a session: tunnel, device, routes, DNS,
//!   and the intercepts (claims on each pod's sidecar, kept through port-forwards);
//! - [`cluster`] is everything done with the Kubernetes API (kubeconfig, manager install,
//!   port-forward, sidecar injection and restore, the container environment);
//! - [`subnets`] decides what is routed, [`system`] owns every change to this machine
//!   (resolver, routes, the session record), [`sudo`] gets root when the user is not;
//! - [`namespace`] is the rootless `tether run`: CMD in a user and network namespace of its
//!   own, served by a daemon that needs no root;
//! - [`doctor`] walks the steps of "why does this Service not answer";
//! - [`error`] turns every module's errors into messages that say what to do next.
//!
//! The data plane itself lives in the `tether-tunnel` crate.

mod args;
mod cluster;
mod commands;
mod completion;
mod config;
mod control;
mod daemon;
mod doctor;
mod error;
mod ipc;
mod namespace;
mod output;
mod subnets;
mod sudo;
mod system;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Invocation};
use output::Printer;

fn main() -> ExitCode {
    // Before anything is printed: a Tab in the shell runs this binary to ask for candidates.
    completion::complete_if_asked();
    let mut cli = Cli::parse();
    let printer = Printer::new(cli.output.into());
    let log_level = match cli.uses_config() {
        false => None,
        true => match config::file::load().and_then(|(file, _)| cli.layer(&file)) {
            Ok(level) => level,
            Err(e) => {
                printer.error(&e.to_string(), 2);
                return ExitCode::from(2);
            }
        },
    };
    let (invocation, state_dir) = cli.into_command();
    match invocation {
        // The daemon logs to its own file and has no terminal.
        Invocation::Daemon(config) => return daemon::main(&config),
        Invocation::ExecAs(a) => return cluster::exec_as::run(a.uid, a.gid, &a.command),
        // Before any thread: it makes a user namespace.
        Invocation::NamespaceHelper(a) => return namespace::helper::main(a),
        Invocation::Completion(shell) => return commands::completion::run(&shell),
        _ => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::try_new(log_level.as_deref().unwrap_or("warn"))
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            printer.error(&format!("cannot start the async runtime: {e}"), 1);
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match invocation {
            Invocation::Connect(config) => commands::connect::run(config, &printer).await,
            Invocation::Status => commands::status::run(&state_dir, &printer).await,
            Invocation::Version => commands::version::run(&state_dir, &printer).await,
            Invocation::ConfigView => commands::config::run(&printer),
            Invocation::Quit => commands::quit::run(&state_dir, &printer).await,
            Invocation::Intercept(args) => {
                commands::intercept::run(args, &state_dir, &printer).await
            }
            Invocation::Run(config) => commands::run::run(*config, &state_dir, &printer).await,
            Invocation::Leave(name) => commands::leave::run(&name, &state_dir, &printer).await,
            Invocation::List(target) => commands::list::run(&target, &printer).await,
            Invocation::Rbac(target, who) => commands::rbac::run(&target, who, &printer),
            Invocation::BadUsage(message) => Err(error::CliError::BadUsage(message)),
            Invocation::Doctor(what, target) => {
                commands::doctor::run(&what, &target, &state_dir, &printer).await
            }
            Invocation::Uninstall(target, agents) => {
                commands::uninstall::run(&target, agents, &state_dir, &printer).await
            }
            // Returned above, before logging to stderr was set up.
            Invocation::Daemon(_)
            | Invocation::ExecAs(_)
            | Invocation::NamespaceHelper(_)
            | Invocation::Completion(_) => Ok(()),
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error::CliError::Exited(code)) => ExitCode::from(code),
        Err(e) => {
            printer.error(&e.message(), e.exit_code());
            ExitCode::from(e.exit_code())
        }
    }
}
