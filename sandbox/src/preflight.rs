//! What `up` needs from the machine, checked before anything starts: without `nft` the
//! sandbox used to start, report ready, and then retry its Service rules forever in its log,
//! so that nothing of the cluster ever worked and nothing said why. Likewise `--demo` without
//! nginx would wait out its timeout on an ingress controller that cannot start.

use std::path::Path;

/// The programs the node and kube-proxy run, with the Debian package of each.
const TOOLS: &[(&str, &str)] = &[("ip", "iproute2"), ("nft", "nftables")];
/// What `--demo` needs besides: the proxy its ingress controller runs.
const DEMO_TOOLS: &[(&str, &str)] = &[("nginx", "nginx-light")];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreflightError {
    #[error(
        "this machine lacks what the sandbox needs: {}. Run `scripts/install-deps.sh` as root (or `apt-get install {}`), then `tether-sandbox up` again.",
        .missing.join("; "),
        .packages.join(" ")
    )]
    Missing {
        missing: Vec<String>,
        packages: Vec<String>,
    },
}

/// Every missing tool and device at once, so one round of installing fixes them all; with
/// `demo`, also what the demo's workloads run.
pub fn check(demo: bool) -> Result<(), PreflightError> {
    check_with(
        std::env::var_os("PATH").unwrap_or_default().as_os_str(),
        Path::new("/"),
        demo,
    )
}

fn check_with(path: &std::ffi::OsStr, root: &Path, demo: bool) -> Result<(), PreflightError> {
    let mut missing = Vec::new();
    let mut packages = Vec::new();
    let demo_tools = if demo { DEMO_TOOLS } else { &[] };
    for (tool, package) in TOOLS.iter().chain(demo_tools) {
        let found = std::env::split_paths(path).any(|dir| is_executable(&dir.join(tool)));
        if !found {
            missing.push(format!("`{tool}` is not on PATH (package {package})"));
            packages.push((*package).to_owned());
        }
    }
    if !root.join("proc/self/ns/net").exists() {
        missing
            .push("network namespaces (/proc/self/ns/net) are not available in this kernel".into());
    }
    if !root.join("dev/net/tun").exists() {
        missing.push(
            "/dev/net/tun does not exist (`modprobe tun`), and tether's tests need it".into(),
        );
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::Missing { missing, packages })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_its_package_and_the_script() {
        let empty = tempfile::tempdir().unwrap();
        let e = check_with(empty.path().as_os_str(), Path::new("/"), false).unwrap_err();
        let text = e.to_string();
        for part in ["`nft`", "nftables", "iproute2", "scripts/install-deps.sh"] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(!text.contains("nginx"), "{text}");
        let e = check_with(empty.path().as_os_str(), Path::new("/"), true).unwrap_err();
        assert!(
            e.to_string()
                .contains("`nginx` is not on PATH (package nginx-light)"),
            "{e}"
        );
        let bin = tempfile::tempdir().unwrap();
        for tool in ["ip", "nft"] {
            let p = bin.path().join(tool);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let fake_root = tempfile::tempdir().unwrap();
        let e = check_with(bin.path().as_os_str(), fake_root.path(), false).unwrap_err();
        assert!(e.to_string().contains("/dev/net/tun"), "{e}");
        assert!(!e.to_string().contains("nftables"), "{e}");
    }
}
