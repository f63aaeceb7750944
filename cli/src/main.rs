//! tether: put this machine inside a Kubernetes cluster.
//!
//! `main` only wires the parts: [`args`] parses the command line into plain configuration,
//! each command is one module with one entry function ([`connect`], [`quit`]), [`output`]
//! prints results as text or JSON, [`system`] owns every change to this machine (resolver,
//! routes, the session record) and [`error`] turns failures into messages that say what to
//! do. The data plane itself lives in the `tether-tunnel` crate.

mod args;
mod cluster;
mod connect;
mod error;
mod output;
mod quit;
mod system;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use output::Printer;
use system::state::StateDir;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let printer = Printer::new(cli.output);
    let state_dir = cli.state_dir.unwrap_or_else(StateDir::default_path);
    // One thread: the stack, the session driver and the flow tasks hand each other work
    // constantly, and cross-thread wakeups cost more than a second core gains.
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
                manager: a.manager_address,
                token_file: a.token_file,
                also_proxy: a.also_proxy,
                tun_name: a.tun_name,
                tun_subnet: a.tun_subnet,
                resolv_conf: a.resolv_conf,
                state_dir,
            },
            printer,
        )),
        Command::Quit => quit::run(&state_dir, printer),
    };
    // Flows may still hold tasks; do not wait for them after the session is torn down.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            printer.error(&e.to_string());
            ExitCode::from(e.exit_code())
        }
    }
}
