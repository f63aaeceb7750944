//! An unprivileged user in the sandbox's workstation, for rootless `tether run`: uid 65534
//! with no capabilities, a home with their own kubeconfig and tether state directory, and a
//! `/dev/net/tun` of a chosen mode that exists only in a private mount namespace of the
//! test's own (`tether-sandbox shell` makes one per command; the host's node is never
//! changed).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::check;
use crate::sandbox::SandboxCluster;

/// The unprivileged user.
pub const USER: &str = "65534";

/// In the shell's private mount namespace: a device node of mode `$1` over /dev/net/tun,
/// then the rest of the arguments as `$USER_ID` with no capabilities.
const AS_USER: &str = r#"set -e
mode="$1"; shift
node="$(mktemp -d)"
mount -t tmpfs -o mode=0755 tmpfs "$node"
mknod -m "$mode" "$node/tun" c 10 200
mount --bind "$node/tun" /dev/net/tun
exec setpriv --reuid "$USER_ID" --regid "$USER_ID" --clear-groups --inh-caps=-all --bounding-set=-all "$@"
"#;

/// The user's home: their kubeconfig and tether's state directory; removed on drop.
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    pub fn new(c: &SandboxCluster) -> Home {
        let dir = tempfile::Builder::new()
            .prefix("tether-rootless-")
            .tempdir()
            .expect("create the user's home");
        std::fs::copy(&c.kubeconfig, dir.path().join("kubeconfig")).expect("copy the kubeconfig");
        std::fs::create_dir(dir.path().join("state")).expect("create the state directory");
        check(
            Command::new("chown")
                .args(["-R", &format!("{USER}:{USER}")])
                .arg(dir.path()),
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("let the user in");
        Home { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// tether's state directory for this user.
    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    /// `program ARGS` as the user, in the workstation, with a `/dev/net/tun` of `mode`
    /// (e.g. "0666" or "0600") and the user's KUBECONFIG, HOME and tether state directory.
    pub fn command(
        &self,
        c: &SandboxCluster,
        mode: &str,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Command {
        let mut cmd = c.shell("sh");
        cmd.args(["-c", AS_USER, "as-user", mode, "env"])
            .arg(format!("HOME={}", self.path().display()))
            .arg(format!(
                "KUBECONFIG={}",
                self.path().join("kubeconfig").display()
            ))
            .arg(format!("TETHER_STATE_DIR={}", self.state().display()))
            .arg(program)
            .env("USER_ID", USER)
            .current_dir(self.path());
        cmd
    }
}
