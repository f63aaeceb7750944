//! Finding what scripts/build-upstream.sh built, and saying what is missing when it is not
//! there.

use std::path::{Path, PathBuf};

/// The control plane's binary (kube-apiserver, kube-controller-manager, kube-scheduler, etcd).
pub const CONTROL_PLANE: &str = "tether-upstream";
/// CoreDNS with kubeadm's plugins.
pub const COREDNS: &str = "coredns";

#[derive(Debug, thiserror::Error)]
#[error(
    "the upstream control plane is not built: {missing} not found in {searched}. Build it with scripts/build-upstream.sh{go} (or point TETHER_UPSTREAM_BIN at its output)"
)]
pub struct NotBuilt {
    missing: String,
    searched: String,
    go: &'static str,
}

/// Where the binaries are looked for: `$TETHER_UPSTREAM_BIN`, else `upstream/bin` in the
/// cargo target directory this executable was built into (`target/debug/tether-sandbox` →
/// `target/upstream/bin`).
fn candidates() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os("TETHER_UPSTREAM_BIN") {
        return vec![PathBuf::from(dir)];
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|d| d.join("upstream/bin"))
        .collect()
}

fn go_on_path() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("go").is_file()))
}

/// The directory holding every one of `names`.
pub fn find(names: &[&str]) -> Result<PathBuf, NotBuilt> {
    let dirs = candidates();
    if let Some(dir) = dirs
        .iter()
        .find(|d| names.iter().all(|n| d.join(n).is_file()))
    {
        return Ok(dir.clone());
    }
    let first = dirs.first().map(PathBuf::as_path).unwrap_or(Path::new("."));
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !first.join(n).is_file())
        .collect();
    Err(NotBuilt {
        missing: missing.join(", "),
        searched: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        go: if go_on_path() {
            ""
        } else {
            ", which needs Go 1.24 or newer (not found on PATH)"
        },
    })
}

/// The CoreDNS executable, for the kubelet's image mapping.
pub fn coredns() -> Option<PathBuf> {
    find(&[COREDNS]).ok().map(|d| d.join(COREDNS))
}
