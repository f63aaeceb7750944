//! Shell completion with clap_complete's dynamic engine: `tether completion SHELL` prints a
//! script that, at each Tab, runs tether itself with `TETHER_COMPLETE=SHELL`, and tether
//! answers from its own command definition plus values looked up then: contexts from the
//! kubeconfig, namespaces and Deployments from the API, intercept names from the daemon,
//! Service ports of the workload being intercepted.
//!
//! Lookups read the words typed so far (`-n`, `--context`, `--kubeconfig`, the workload)
//! from the command line the shell passes, get at most [`LOOKUP_BUDGET`], and yield nothing
//! on any error: a completion must never print an error onto the command line.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory;
use clap_complete::engine::CompletionCandidate;
use clap_complete::env::{CompleteEnv, EnvCompleter};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::args::Cli;

/// The environment variable that turns a tether run into a completion request.
pub const VAR: &str = "TETHER_COMPLETE";
/// How long a lookup may take; a slower cluster gives no candidates rather than a stuck Tab.
const LOOKUP_BUDGET: Duration = Duration::from_millis(300);

/// Answers a completion request and exits, if this run is one.
pub fn complete_if_asked() {
    CompleteEnv::with_factory(Cli::command).var(VAR).complete();
}

/// The registration script for `shell`.
pub fn script(shell: &str) -> Option<String> {
    let shells = clap_complete::env::Shells::builtins();
    let completer: &dyn EnvCompleter = shells.completer(shell)?;
    // The script calls this very binary, wherever it is installed.
    let exe = std::env::current_exe()
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tether".to_owned());
    let mut out = Vec::new();
    completer
        .write_registration(VAR, "tether", "tether", &exe, &mut out)
        .ok()?;
    String::from_utf8(out).ok()
}

/// The words typed so far: what the shell passed after `--`, without the program name.
fn typed() -> Vec<String> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let start = args
        .iter()
        .position(|a| a == "--")
        .map_or(args.len(), |i| i + 2);
    args.get(start..)
        .unwrap_or_default()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// The value of `long` (or `short`) among `words`, in either `--flag value` or
/// `--flag=value` form.
fn flag(words: &[String], long: &str, short: Option<&str>) -> Option<String> {
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if let Some(v) = w.strip_prefix(&format!("{long}=")) {
            return Some(v.to_owned());
        }
        if w == long || short.is_some_and(|s| w == s) {
            return it.next().cloned();
        }
    }
    None
}

/// The first word after `subcommand` that is neither a flag nor a flag's value.
fn positional_after(words: &[String], subcommand: &str) -> Option<String> {
    let at = words.iter().position(|w| w == subcommand)?;
    let mut it = words[at + 1..].iter();
    while let Some(w) = it.next() {
        if w.starts_with('-') {
            // Every flag of intercept takes a value except none; skip it.
            if !w.contains('=') {
                it.next();
            }
            continue;
        }
        return Some(w.trim_start_matches("deploy/").to_owned());
    }
    None
}

/// Runs a lookup with a client for the typed context, within the budget.
fn with_client<T, F>(lookup: impl FnOnce(Client, Option<String>) -> F) -> Option<T>
where
    F: Future<Output = Option<T>>,
{
    let words = typed();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        tokio::time::timeout(LOOKUP_BUDGET, async {
            let kubeconfig = match flag(&words, "--kubeconfig", None) {
                Some(path) => Kubeconfig::read_from(path).ok()?,
                None => Kubeconfig::read().ok()?,
            };
            let options = KubeConfigOptions {
                context: flag(&words, "--context", None),
                ..Default::default()
            };
            let config = Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .ok()?;
            let default_namespace = config.default_namespace.clone();
            let client = Client::try_from(config).ok()?;
            // Typed, else the connection's (what `intercept` uses), else the context's.
            let namespace = match flag(&words, "--namespace", Some("-n")) {
                Some(ns) => ns,
                None => crate::control::query(&socket_path(&words))
                    .await
                    .and_then(|s| s.namespace)
                    .unwrap_or(default_namespace),
            };
            let namespace = Some(namespace);
            lookup(client, namespace).await
        })
        .await
        .ok()
        .flatten()
    })
}

fn matching(current: &OsStr, values: impl IntoIterator<Item = String>) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    values
        .into_iter()
        .filter(|v| v.starts_with(prefix.as_ref()))
        .map(CompletionCandidate::new)
        .collect()
}

pub fn contexts(current: &OsStr) -> Vec<CompletionCandidate> {
    let words = typed();
    let kubeconfig = match flag(&words, "--kubeconfig", None) {
        Some(path) => Kubeconfig::read_from(path).ok(),
        None => Kubeconfig::read().ok(),
    };
    let names = kubeconfig
        .map(|k| k.contexts.into_iter().map(|c| c.name).collect::<Vec<_>>())
        .unwrap_or_default();
    matching(current, names)
}

/// The names of the objects `api` lists.
async fn names<K>(api: Api<K>) -> Option<Vec<String>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let list = api.list(&Default::default()).await.ok()?;
    Some(
        list.items
            .into_iter()
            .filter_map(|o| o.meta().name.clone())
            .collect(),
    )
}

pub fn namespaces(current: &OsStr) -> Vec<CompletionCandidate> {
    let names = with_client(|client, _| names(Api::<Namespace>::all(client)));
    matching(current, names.unwrap_or_default())
}

pub fn workloads(current: &OsStr) -> Vec<CompletionCandidate> {
    let names = with_client(|client, namespace| async move {
        names(Api::<Deployment>::namespaced(client, &namespace?)).await
    });
    let prefix = current.to_string_lossy();
    let names = names.unwrap_or_default();
    // `deploy/NAME` is offered in the spelling being typed.
    let names = match prefix.strip_prefix("deploy/") {
        Some(_) => names.into_iter().map(|n| format!("deploy/{n}")).collect(),
        None => names,
    };
    matching(current, names)
}

/// `svc/NAME` and `deploy/NAME` for `tether doctor`: Services, and Deployments once
/// `deploy/` is typed.
pub fn doctor_targets(current: &OsStr) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    if prefix.starts_with("deploy/") {
        return workloads(current);
    }
    let names = with_client(|client, namespace| async move {
        names(Api::<k8s_openapi::api::core::v1::Service>::namespaced(
            client,
            &namespace?,
        ))
        .await
    });
    let names: Vec<String> = names
        .unwrap_or_default()
        .into_iter()
        .map(|n| format!("svc/{n}"))
        .chain(["deploy/".to_owned()])
        .collect();
    matching(current, names)
}

/// `LOCAL:SERVICE_PORT` for the ports of the Services that select the typed workload.
pub fn ports(current: &OsStr) -> Vec<CompletionCandidate> {
    let typed_now = current.to_string_lossy().into_owned();
    let Some((local, _)) = typed_now.split_once(':') else {
        return Vec::new();
    };
    let words = typed();
    let Some(workload) =
        positional_after(&words, "intercept").or_else(|| flag(&words, "--intercept", None))
    else {
        return Vec::new();
    };
    let local = local.to_owned();
    let ports = with_client(|client, namespace| async move {
        let namespace = namespace?;
        let deploy = Api::<Deployment>::namespaced(client.clone(), &namespace)
            .get(workload.trim_start_matches("deploy/"))
            .await
            .ok()?;
        let services = Api::<Service>::namespaced(client, &namespace)
            .list(&Default::default())
            .await
            .ok()?;
        let mut out = Vec::new();
        for s in services
            .items
            .iter()
            .filter(|s| crate::cluster::workload::selects(s, &deploy))
        {
            for p in s.spec.iter().flat_map(|spec| spec.ports.iter().flatten()) {
                if let Some(name) = &p.name {
                    out.push(format!("{local}:{name}"));
                }
                out.push(format!("{local}:{}", p.port));
            }
        }
        Some(out)
    });
    matching(current, ports.unwrap_or_default())
}

/// The daemon's socket, in the state directory typed or in the environment.
fn socket_path(words: &[String]) -> PathBuf {
    flag(words, "--state-dir", None)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("TETHER_STATE_DIR").map(PathBuf::from))
        .unwrap_or_else(crate::config::default_state_dir)
        .join(crate::system::state::SOCKET)
}

/// The daemon's current intercepts.
pub fn intercepts(current: &OsStr) -> Vec<CompletionCandidate> {
    let socket = socket_path(&typed());
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    let names = runtime.block_on(async {
        let status = tokio::time::timeout(LOOKUP_BUDGET, crate::control::query(&socket))
            .await
            .ok()
            .flatten()?;
        Some(
            status
                .intercepts
                .into_iter()
                .map(|i| i.name)
                .collect::<Vec<_>>(),
        )
    });
    matching(current, names.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags_and_the_workload_are_read_from_what_was_typed() {
        let w = words("intercept -n demo --context=kind deploy/web --port 80");
        assert_eq!(flag(&w, "--namespace", Some("-n")).as_deref(), Some("demo"));
        assert_eq!(flag(&w, "--context", None).as_deref(), Some("kind"));
        assert_eq!(positional_after(&w, "intercept").as_deref(), Some("web"));
        assert_eq!(
            positional_after(&words("intercept --port 80"), "intercept"),
            None
        );
    }

    #[test]
    fn every_shell_gets_a_script_that_calls_this_binary() {
        for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
            let script = script(shell).unwrap_or_else(|| panic!("{shell}"));
            assert!(script.contains(VAR), "{shell}: {script}");
        }
        assert!(script("tcsh").is_none());
    }
}
