//! Images → executables. The sandbox has no image store: a container's image names a program
//! on the host, through this mapping (first match wins):
//!
//! - `tether-sandbox/http-echo`, `tether-sandbox/tcp-echo`, `tether-sandbox/udp-echo`,
//!   `tether-sandbox/ingress-nginx` (any tag): this executable with `workload KIND`;
//! - any image whose repository ends in `/tether-agent` (any tag, any registry): the
//!   `tether-agent` binary, from `$TETHER_AGENT_BIN`, else next to this executable, else `PATH`;
//! - any image whose repository ends in `/coredns`: the CoreDNS built by
//!   scripts/build-upstream.sh (see [`crate::upstream::binaries`]), when it is built;
//! - `tether-sandbox/host`: no entrypoint; `command[0]` is looked up on the host's `PATH`;
//! - `images.json` in the state directory: `{"image or repository": "/path/to/exe"}` or
//!   `{"image": ["/path/to/exe", "default", "args"]}`; the full reference is tried before the
//!   repository without tag.
//!
//! As in Kubernetes, a container's `command` replaces the image's entrypoint (its first element
//! is then looked up on the host's `PATH` unless it contains a `/`) and `args` replaces the
//! image's default arguments. The mapped images have none: their fixed words (`workload
//! tcp-echo`, the array in `images.json`) belong to the entrypoint, so `args` add to them.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The file in the state directory that maps further images.
pub const IMAGES_FILE: &str = "images.json";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error(
        "image {image:?} is not known to the sandbox: use a built-in image (tether-sandbox/http-echo, tether-sandbox/tcp-echo, tether-sandbox/udp-echo, tether-sandbox/ingress-nginx, tether-sandbox/host, .../tether-agent) or map it to an executable in {mapping}"
    )]
    Unknown { image: String, mapping: String },
    #[error("{0}")]
    Invalid(String),
}

/// What an image runs by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entrypoint {
    /// None: the image has no entrypoint (`tether-sandbox/host`); `command` must be given.
    pub exe: Option<PathBuf>,
    /// Arguments that are part of the entrypoint (kept unless `command` replaces it).
    pub entry_args: Vec<String>,
}

/// The executable and arguments a container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub exe: PathBuf,
    pub args: Vec<String>,
}

/// The repository part of an image reference (no tag, no digest).
pub fn repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// The entrypoint an image maps to.
pub fn entrypoint(image: &str, state_dir: &Path) -> Result<Entrypoint, ImageError> {
    let repo = repository(image);
    let builtin = |which: &str| {
        Ok(Entrypoint {
            exe: Some(std::env::current_exe().map_err(|e| {
                ImageError::Invalid(format!("cannot find the sandbox executable: {e}"))
            })?),
            entry_args: vec!["workload".into(), which.into()],
        })
    };
    match repo {
        "tether-sandbox/http-echo" => return builtin("http-echo"),
        "tether-sandbox/tcp-echo" => return builtin("tcp-echo"),
        "tether-sandbox/udp-echo" => return builtin("udp-echo"),
        "tether-sandbox/ingress-nginx" => return builtin("ingress-nginx"),
        "tether-sandbox/host" => {
            return Ok(Entrypoint {
                exe: None,
                entry_args: Vec::new(),
            });
        }
        _ => {}
    }
    if repo == "tether-agent" || repo.ends_with("/tether-agent") {
        return Ok(Entrypoint {
            exe: Some(agent_binary()),
            entry_args: Vec::new(),
        });
    }
    // CoreDNS's image (registry.k8s.io/coredns/coredns, any tag): the CoreDNS that
    // scripts/build-upstream.sh built, for the upstream control plane's cluster DNS.
    if (repo == "coredns" || repo.ends_with("/coredns"))
        && let Some(exe) = crate::upstream::binaries::coredns()
    {
        return Ok(Entrypoint {
            exe: Some(exe),
            entry_args: Vec::new(),
        });
    }
    let mapping = state_dir.join(IMAGES_FILE);
    let unknown = || ImageError::Unknown {
        image: image.to_string(),
        mapping: mapping.display().to_string(),
    };
    let Ok(text) = std::fs::read_to_string(&mapping) else {
        return Err(unknown());
    };
    let map: Value = serde_json::from_str(&text).map_err(|e| {
        ImageError::Invalid(format!("{} is not valid JSON: {e}", mapping.display()))
    })?;
    let entry = map
        .get(image)
        .or_else(|| map.get(repo))
        .ok_or_else(unknown)?;
    let words: Vec<String> = match entry {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let Some((exe, args)) = words.split_first() else {
        return Err(ImageError::Invalid(format!(
            "{}: the entry for {image:?} must be a path or a non-empty array of strings",
            mapping.display()
        )));
    };
    Ok(Entrypoint {
        exe: Some(PathBuf::from(exe)),
        entry_args: args.to_vec(),
    })
}

/// `$TETHER_AGENT_BIN`, else `tether-agent` next to this executable, else from `PATH`.
fn agent_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TETHER_AGENT_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(me) = std::env::current_exe()
        && let Some(dir) = me.parent()
        && dir.join("tether-agent").is_file()
    {
        return dir.join("tether-agent");
    }
    lookup_path("tether-agent").unwrap_or_else(|| PathBuf::from("tether-agent"))
}

/// Finds a program on the sandbox's own `PATH` (the "image" is the host's filesystem).
pub fn lookup_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    lookup_in(program, &path)
}

/// Finds a program on a given `PATH` (a container's, for `kubectl exec`); a name with a `/`
/// is taken as it is.
pub fn lookup_in(program: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::split_paths(path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Applies Kubernetes' rules: `command` replaces the entrypoint, `args` follow it.
pub fn resolve(
    entry: &Entrypoint,
    command: Option<&[String]>,
    args: Option<&[String]>,
) -> Result<Resolved, ImageError> {
    let (exe, mut argv) = match command.filter(|c| !c.is_empty()) {
        Some(cmd) => {
            let exe = lookup_path(&cmd[0]).ok_or_else(|| {
                ImageError::Invalid(format!(
                    "exec: {:?}: executable file not found in $PATH",
                    cmd[0]
                ))
            })?;
            (exe, cmd[1..].to_vec())
        }
        None => {
            let exe = entry.exe.clone().ok_or_else(|| {
                ImageError::Invalid("no command specified (the image has no entrypoint)".into())
            })?;
            (exe, entry.entry_args.clone())
        }
    };
    if let Some(a) = args {
        argv.extend(a.iter().cloned());
    }
    Ok(Resolved { exe, args: argv })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_drop_tags_and_digests() {
        assert_eq!(
            repository("tether-sandbox/http-echo:1.0"),
            "tether-sandbox/http-echo"
        );
        assert_eq!(
            repository("localhost:5000/x/tether-agent"),
            "localhost:5000/x/tether-agent"
        );
        assert_eq!(
            repository("ghcr.io/a/tether-agent:v2@sha256:ab"),
            "ghcr.io/a/tether-agent"
        );
    }

    #[test]
    fn mapping_and_kubernetes_command_rules() {
        let dir = tempfile::tempdir().unwrap();
        let e = entrypoint("tether-sandbox/tcp-echo:latest", dir.path()).unwrap();
        assert_eq!(e.entry_args, vec!["workload", "tcp-echo"]);
        let r = resolve(&e, None, Some(&["--port".into(), "9".into()])).unwrap();
        assert_eq!(r.args, vec!["workload", "tcp-echo", "--port", "9"]);
        assert!(matches!(
            entrypoint("nginx", dir.path()),
            Err(ImageError::Unknown { .. })
        ));
        std::fs::write(
            dir.path().join(IMAGES_FILE),
            r#"{"nginx": ["/bin/echo", "hi"], "redis:7": "/bin/true"}"#,
        )
        .unwrap();
        let e = entrypoint("nginx:1.25", dir.path()).unwrap();
        let r = resolve(&e, None, None).unwrap();
        assert_eq!(
            (r.exe.as_path(), r.args),
            (Path::new("/bin/echo"), vec!["hi".to_string()])
        );
        assert!(entrypoint("redis:7", dir.path()).is_ok());
        assert!(entrypoint("redis:6", dir.path()).is_err());
        let host = entrypoint("tether-sandbox/host", dir.path()).unwrap();
        assert!(resolve(&host, None, None).is_err());
        let r = resolve(
            &host,
            Some(&["sh".into(), "-c".into()]),
            Some(&["true".into()]),
        )
        .unwrap();
        assert!(r.exe.ends_with("sh"));
        assert_eq!(r.args, vec!["-c", "true"]);
        assert!(entrypoint("ghcr.io/me/tether-agent:dev", dir.path()).is_ok());
    }
}
