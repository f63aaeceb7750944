//! Credential plugins run as the user who typed `tether connect`, not as root.
//!
//! A user who is not root gets the daemon through sudo, and the daemon is the one that talks
//! to the API server. kube-rs would then start the kubeconfig's exec plugin (`aws eks
//! get-token`, `gke-gcloud-auth-plugin`, `kubelogin`, ...) as root, with sudo's reset
//! environment: it would not find the user's cloud credentials, and whatever it caches
//! would land in the user's home owned by root. So `tether connect` records who the user
//! is and their environment ([`Invoker`]), and the daemon rewrites the exec entry to go
//! through `tether exec-as`, which takes on the user's identity and environment before it
//! runs the plugin, as kubectl would have run it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsString};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};

use kube::config::ExecConfig;
use serde::{Deserialize, Serialize};

/// The user a credential plugin runs as, and the environment it sees.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoker {
    pub uid: u32,
    pub gid: u32,
    /// The user's environment when they ran `tether connect`.
    pub env: BTreeMap<String, String>,
}

/// Variables sudo adds that say nothing about the user a plugin runs for.
const SUDO_VARIABLES: &[&str] = &[
    "SUDO_COMMAND",
    "SUDO_USER",
    "SUDO_UID",
    "SUDO_GID",
    "SUDO_HOME",
];

// The environment may hold secrets: logs get its size only.
impl std::fmt::Debug for Invoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invoker")
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("env", &format_args!("{} variables", self.env.len()))
            .finish()
    }
}

/// Credential plugins run through `helper exec-as` as `invoker`.
#[derive(Debug, Clone)]
pub struct ExecAs {
    pub invoker: Invoker,
    /// The `tether` executable.
    pub helper: std::path::PathBuf,
}

impl Invoker {
    /// The user running this process, with its environment.
    pub fn current() -> Invoker {
        // SAFETY: getuid and getgid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Invoker {
            uid,
            gid,
            env: std::env::vars().collect(),
        }
    }
}

/// Makes `exec` run its plugin through `helper exec-as` as `invoker`. The plugin's own
/// `env` entries still win over the user's environment, as they do in kubectl.
pub fn wrap(exec: &mut ExecConfig, invoker: &Invoker, helper: &Path) {
    let Some(command) = exec.command.take() else {
        // kube-rs reports the missing command itself.
        return;
    };
    let mut args = vec![
        "exec-as".to_owned(),
        "--uid".to_owned(),
        invoker.uid.to_string(),
        "--gid".to_owned(),
        invoker.gid.to_string(),
        "--".to_owned(),
        command,
    ];
    args.extend(exec.args.take().unwrap_or_default());
    exec.command = Some(helper.to_string_lossy().into_owned());
    exec.args = Some(args);
    let own: Vec<HashMap<String, String>> = exec.env.take().unwrap_or_default();
    let named = |name: &str| {
        own.iter()
            .any(|e| e.get("name").map(String::as_str) == Some(name))
    };
    let mut env: Vec<HashMap<String, String>> = invoker
        .env
        .iter()
        .filter(|(name, _)| !named(name))
        .map(|(name, value)| {
            HashMap::from([
                ("name".to_owned(), name.clone()),
                ("value".to_owned(), value.clone()),
            ])
        })
        .collect();
    env.extend(own);
    exec.env = Some(env);
}

/// `tether exec-as --uid U --gid G -- COMMAND ARGS...`: becomes that user (with their
/// supplementary groups) and runs the command in its place; the exit code is the
/// command's. Run by the daemon for credential plugins, never by users.
pub fn run(uid: u32, gid: u32, command: &[OsString]) -> ExitCode {
    let Some((program, args)) = command.split_first() else {
        eprintln!("tether exec-as: no command given");
        return ExitCode::from(2);
    };
    if let Err(e) = become_user(uid, gid) {
        eprintln!("tether exec-as: cannot run as uid {uid}, gid {gid}: {e}");
        return ExitCode::from(1);
    }
    let mut cmd = Command::new(program);
    cmd.args(args);
    for name in SUDO_VARIABLES {
        cmd.env_remove(name);
    }
    // Only returns when the command could not be started.
    let e = cmd.exec();
    eprintln!(
        "tether exec-as: cannot run {}: {e}",
        program.to_string_lossy()
    );
    ExitCode::from(1)
}

fn become_user(uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == uid {
        return Ok(());
    }
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // The user's supplementary groups (a plugin may need a group's files), found by name.
    // SAFETY: getpwuid returns null or a pointer valid until the next such call; this
    // process is single-threaded here and copies the name at once.
    let name = unsafe {
        let entry = libc::getpwuid(uid);
        (!entry.is_null()).then(|| CString::from(std::ffi::CStr::from_ptr((*entry).pw_name)))
    };
    // SAFETY: plain system calls on values owned here; the order (groups, gid, uid) is the
    // one that still has the privilege each step needs.
    unsafe {
        match &name {
            Some(name) => check(libc::initgroups(name.as_ptr(), gid))?,
            None => check(libc::setgroups(0, std::ptr::null()))?,
        }
        check(libc::setgid(gid))?;
        check(libc::setuid(uid))?;
        // Dropping to a user must be permanent.
        if libc::setuid(0) == 0 {
            return Err(std::io::Error::other("root could be regained"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(env: &[(&str, &str)]) -> ExecConfig {
        let env: Vec<serde_json::Value> = env
            .iter()
            .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "aws",
            "args": ["eks", "get-token"],
            "env": env,
        }))
        .unwrap()
    }

    #[test]
    fn the_plugin_runs_through_the_helper_with_the_users_environment() {
        let mut config = exec(&[("AWS_PROFILE", "from-kubeconfig")]);
        let invoker = Invoker {
            uid: 1000,
            gid: 100,
            env: BTreeMap::from([
                ("HOME".into(), "/home/dev".into()),
                ("AWS_PROFILE".into(), "from-shell".into()),
            ]),
        };
        wrap(&mut config, &invoker, Path::new("/usr/bin/tether"));
        assert_eq!(config.command.as_deref(), Some("/usr/bin/tether"));
        assert_eq!(
            config.args.unwrap(),
            [
                "exec-as",
                "--uid",
                "1000",
                "--gid",
                "100",
                "--",
                "aws",
                "eks",
                "get-token"
            ]
        );
        let env: BTreeMap<String, String> = config
            .env
            .unwrap()
            .into_iter()
            .map(|e| (e["name"].clone(), e["value"].clone()))
            .collect();
        assert_eq!(env["HOME"], "/home/dev");
        // The kubeconfig's own entry wins, as in kubectl.
        assert_eq!(env["AWS_PROFILE"], "from-kubeconfig");
    }
}
