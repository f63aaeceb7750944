//! tether: put this machine inside a Kubernetes cluster.
//!
//! `main` only wires the parts: [`args`] parses the command line into plain configuration,
//! each command is one module with one entry function ([`connect`], [`status`], [`quit`],
//! [`uninstall`]), [`cluster`] is everything done with the Kubernetes API,
//! [`daemon`] is the background process that owns the session and [`ipc`] the socket the
//! commands reach it on. [`output`] prints results as text or JSON and progress on stderr,
//! [`subnets`] decides what is routed, [`system`] owns every change to this machine
//! (resolver, routes, the session record), [`sudo`] gets root when the user is not, and
//! [`error`] turns failures into messages that say what to do. The data plane itself lives
//! in the `tether-tunnel` crate.

mod args;
mod cluster;
mod connect;
mod daemon;
mod error;
mod ipc;
mod output;
mod quit;
mod status;
mod subnets;
mod sudo;
mod system;
mod uninstall;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use error::CliError;
use output::Printer;
use system::state::StateDir;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        // The daemon logs to its own file and has no terminal.
        Command::Daemon(args) => return daemon::main(&args.config),
        Command::ExecAs(a) => return cluster::exec_as::run(a.uid, a.gid, &a.command),
        _ => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let printer = Printer::new(cli.output);
    let state_dir = cli.state_dir.unwrap_or_else(StateDir::default_path);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            printer.error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Connect(a) => runtime.block_on(connect::run(
            connect::ConnectConfig {
                target: match (a.manager_address, a.token_file) {
                    (Some(manager), Some(token_file)) => {
                        connect::Target::Direct(daemon::Source::Direct {
                            manager,
                            token_file: absolute(token_file),
                        })
                    }
                    // clap makes the two flags come together.
                    _ => connect::Target::Kubernetes {
                        options: kube_options(&a.kube),
                        install: cluster::InstallOptions {
                            namespace: a.kube.manager_namespace.clone(),
                            image: a.manager_image,
                            ..Default::default()
                        },
                    },
                },
                also_proxy: a.also_proxy,
                never_proxy: a.never_proxy,
                tun_name: a.tun_name,
                tun_subnet: a.tun_subnet,
                resolv_conf: absolute(a.resolv_conf),
                dns_mode: a.dns_mode,
                state_dir: absolute(state_dir),
            },
            printer,
        )),
        Command::Status => runtime.block_on(status::run(&state_dir, printer)),
        Command::Quit => runtime.block_on(quit::run(&state_dir, printer)),
        Command::Uninstall(a) => runtime.block_on(uninstall::run(
            &kube_options(&a.kube),
            &a.kube.manager_namespace,
            &state_dir,
            printer,
        )),
        // Returned above, before logging to stderr was set up.
        Command::Daemon(_) | Command::ExecAs(_) => return ExitCode::FAILURE,
    };
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Exited(code)) => ExitCode::from(code),
        Err(e) => {
            printer.error(&e.to_string());
            ExitCode::from(e.exit_code())
        }
    }
}

fn kube_options(a: &args::KubeArgs) -> cluster::KubeOptions {
    cluster::KubeOptions {
        kubeconfig: a.kubeconfig.clone(),
        context: a.context.clone(),
        namespace: a.namespace.clone(),
        exec_as: None,
    }
}

/// Paths handed to the daemon must not depend on its working directory.
fn absolute(path: std::path::PathBuf) -> std::path::PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}
