//! The files a pod's containers see in place of the host's: `/etc/resolv.conf`, `/etc/hosts`,
//! `/etc/hostname`, and a per-pod directory mounted over `/run` that holds the service-account
//! token at `/run/secrets/kubernetes.io/serviceaccount` (`/var/run` is `/run` on the hosts the
//! sandbox runs on; when it is not, the same directory is mounted there too).
//!
//! A host file that is a symlink into `/run` (systemd-resolved's `resolv.conf`) cannot be
//! bind-mounted over: `/run` itself gets covered. Its content is written instead at the same
//! place inside the pod's `/run`, where the symlink leads.

use std::path::{Path, PathBuf};

/// The cluster DNS Service's address, which pods use as their nameserver.
pub const CLUSTER_DNS: &str = "10.96.0.10";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Where the service-account files appear inside a container.
pub const SA_DIR: &str = "secrets/kubernetes.io/serviceaccount";

/// What one pod's files say.
#[derive(Debug, Clone)]
pub struct PodFiles<'a> {
    pub namespace: &'a str,
    pub hostname: &'a str,
    pub subdomain: Option<&'a str>,
    pub pod_ip: &'a str,
    /// `spec.hostAliases`: (ip, hostnames).
    pub host_aliases: Vec<(String, Vec<String>)>,
    /// None when `automountServiceAccountToken: false`.
    pub token: Option<&'a str>,
    pub ca_pem: &'a str,
}

/// How to mount a pod's files: bind `binds` (source, target), then `run_dir` over each of
/// `run_targets`.
#[derive(Debug, Clone, Default)]
pub struct MountPlan {
    pub binds: Vec<(PathBuf, PathBuf)>,
    pub run_dir: PathBuf,
    pub run_targets: Vec<PathBuf>,
}

pub fn resolv_conf(namespace: &str) -> String {
    format!(
        "search {namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\nnameserver {CLUSTER_DNS}\noptions ndots:5\n"
    )
}

pub fn hosts(f: &PodFiles) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    match f.subdomain.filter(|s| !s.is_empty()) {
        Some(sub) => s.push_str(&format!(
            "{}\t{}.{sub}.{}.svc.{CLUSTER_DOMAIN}\t{}\n",
            f.pod_ip, f.hostname, f.namespace, f.hostname
        )),
        None => s.push_str(&format!("{}\t{}\n", f.pod_ip, f.hostname)),
    }
    if !f.host_aliases.is_empty() {
        s.push_str("\n# Entries added by HostAliases.\n");
        for (ip, names) in &f.host_aliases {
            s.push_str(&format!("{ip}\t{}\n", names.join("\t")));
        }
    }
    s
}

/// Writes a pod's files under `pod_dir` and says how to mount them.
pub fn write(pod_dir: &Path, f: &PodFiles) -> std::io::Result<MountPlan> {
    let etc = pod_dir.join("etc");
    let run_dir = pod_dir.join("run");
    std::fs::create_dir_all(&etc)?;
    std::fs::create_dir_all(&run_dir)?;
    let mut plan = MountPlan {
        run_dir: run_dir.clone(),
        ..Default::default()
    };
    let files = [
        ("resolv.conf", resolv_conf(f.namespace)),
        ("hosts", hosts(f)),
        ("hostname", format!("{}\n", f.hostname)),
    ];
    for (name, content) in files {
        let ours = etc.join(name);
        std::fs::write(&ours, &content)?;
        // A host without the file has nothing to mount over; the container goes without.
        let Ok(target) = Path::new("/etc").join(name).canonicalize() else {
            continue;
        };
        match target.strip_prefix("/run") {
            Ok(rel) => {
                let inside = run_dir.join(rel);
                if let Some(parent) = inside.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(inside, &content)?;
            }
            Err(_) => plan.binds.push((ours, target)),
        }
    }
    let sa = run_dir.join(SA_DIR);
    match f.token {
        Some(token) => {
            std::fs::create_dir_all(&sa)?;
            std::fs::write(sa.join("token"), token)?;
            std::fs::write(sa.join("ca.crt"), f.ca_pem)?;
            std::fs::write(sa.join("namespace"), f.namespace)?;
        }
        None => {
            let _ = std::fs::remove_dir_all(&sa);
        }
    }
    plan.run_targets.push(PathBuf::from("/run"));
    if let Ok(var_run) = Path::new("/var/run").canonicalize()
        && var_run != Path::new("/run")
    {
        plan.run_targets.push(var_run);
    }
    Ok(plan)
}

/// Replaces the service-account token of a running pod (a refreshed one): written beside
/// and renamed over the old, so a container never reads half a token.
pub fn write_token(pod_dir: &Path, token: &str) -> std::io::Result<()> {
    let sa = pod_dir.join("run").join(SA_DIR);
    let fresh = sa.join("..token.new");
    std::fs::write(&fresh, token)?;
    std::fs::rename(&fresh, sa.join("token"))
}

/// Removes what only running containers need (logs stay for `kubectl logs` after the fact).
pub fn remove_runtime(pod_dir: &Path) {
    for d in ["etc", "run"] {
        let _ = std::fs::remove_dir_all(pod_dir.join(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_dns_hosts_and_token() {
        let dir = tempfile::tempdir().unwrap();
        let f = PodFiles {
            namespace: "demo",
            hostname: "web-0",
            subdomain: Some("web"),
            pod_ip: "10.244.0.9",
            host_aliases: vec![("1.2.3.4".into(), vec!["foo".into(), "bar".into()])],
            token: Some("tok"),
            ca_pem: "PEM",
        };
        let plan = write(dir.path(), &f).unwrap();
        let sa = plan.run_dir.join(SA_DIR);
        assert_eq!(std::fs::read_to_string(sa.join("token")).unwrap(), "tok");
        write_token(dir.path(), "fresh").unwrap();
        assert_eq!(std::fs::read_to_string(sa.join("token")).unwrap(), "fresh");
        assert!(!sa.join("..token.new").exists());
        assert_eq!(
            std::fs::read_to_string(sa.join("namespace")).unwrap(),
            "demo"
        );
        let hosts = std::fs::read_to_string(dir.path().join("etc/hosts")).unwrap();
        assert!(hosts.contains("10.244.0.9\tweb-0.web.demo.svc.cluster.local\tweb-0\n"));
        assert!(hosts.contains("1.2.3.4\tfoo\tbar\n"));
        assert!(resolv_conf("demo").contains("search demo.svc.cluster.local svc.cluster.local"));
        assert_eq!(plan.run_targets[0], Path::new("/run"));
        remove_runtime(dir.path());
        assert!(!dir.path().join("run").exists());
    }
}
