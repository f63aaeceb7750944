//! What the kernel and the machine allow a user without root, checked before anything is
//! started, so that a refusal is one error that names the cause and the fix.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::NamespaceError;

/// The TUN device node; a rootless run opens it inside its own namespace.
pub const TUN_NODE: &str = "/dev/net/tun";

/// A sysctl that can turn unprivileged user namespaces off; absent on kernels without it.
struct Switch {
    path: &'static str,
    setting: &'static str,
    /// The value that forbids them.
    forbids: &'static str,
    /// The value that allows them.
    allow: &'static str,
}

const SWITCHES: [Switch; 3] = [
    Switch {
        path: "/proc/sys/kernel/unprivileged_userns_clone",
        setting: "kernel.unprivileged_userns_clone",
        forbids: "0",
        allow: "1",
    },
    Switch {
        path: "/proc/sys/user/max_user_namespaces",
        setting: "user.max_user_namespaces",
        forbids: "0",
        allow: "15000",
    },
    // Ubuntu 24.04: a namespace may be made, but it has no capabilities in it.
    Switch {
        path: "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        setting: "kernel.apparmor_restrict_unprivileged_userns",
        forbids: "1",
        allow: "0",
    },
];

/// Whether a rootless run can make its namespaces here (the device is checked by
/// [`check`]); what `tether run` chooses by itself when it is not root.
pub fn available() -> bool {
    user_namespaces().is_ok()
}

/// Every condition of a rootless run, in the order a user would fix them.
pub fn check() -> Result<(), NamespaceError> {
    user_namespaces()?;
    tun_device(Path::new(TUN_NODE))
}

fn user_namespaces() -> Result<(), NamespaceError> {
    for switch in SWITCHES {
        let Ok(value) = std::fs::read_to_string(switch.path) else {
            continue;
        };
        let value = value.trim();
        if value == switch.forbids {
            return Err(NamespaceError::UserNamespacesOff {
                setting: switch.setting,
                value: value.to_owned(),
                allow: switch.allow,
            });
        }
    }
    Ok(())
}

fn tun_device(node: &Path) -> Result<(), NamespaceError> {
    let meta = match std::fs::metadata(node) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(NamespaceError::TunMissing);
        }
        Err(e) => return Err(NamespaceError::Setup(format!("{}: {e}", node.display()))),
    };
    let access = rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK;
    match rustix::fs::access(node, access) {
        Ok(()) => Ok(()),
        Err(_) => Err(NamespaceError::TunDenied {
            uid: rustix::process::getuid().as_raw(),
            mode: meta.permissions().mode() & 0o7777,
            owner: meta.uid(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_says_how_to_load_it() {
        let err = tun_device(Path::new("/nonexistent/net/tun")).unwrap_err();
        assert!(matches!(err, NamespaceError::TunMissing));
        assert!(err.to_string().contains("modprobe tun"), "{err}");
    }

    #[test]
    fn a_refused_device_names_both_fixes() {
        let err = NamespaceError::TunDenied {
            uid: 1000,
            mode: 0o600,
            owner: 0,
        }
        .to_string();
        assert!(err.contains("/dev/net/tun"), "{err}");
        assert!(err.contains("mode 0600"), "{err}");
        assert!(err.contains("--no-rootless"), "{err}");
        assert!(err.contains("sudo chmod 0666 /dev/net/tun"), "{err}");
    }
}
