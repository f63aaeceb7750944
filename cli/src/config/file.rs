//! The config file and the environment, under the command line: for every setting, a value
//! typed on the command line wins over `TETHER_<KEY>` in the environment, which wins over
//! the file (`$TETHER_CONFIG`, else `config.yaml` in the user's config directory,
//! `~/.config/tether/config.yaml` on Linux), which wins over the built-in default.
//!
//! Keys are spelled as the long flags are. The file is YAML (serde-saphyr); an unknown key or
//! a value of the wrong type is an error naming the file, the line and the column, so a typo
//! never passes unnoticed.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The environment variable naming the config file.
pub const CONFIG_VAR: &str = "TETHER_CONFIG";

/// Every key the file may hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub manager_namespace: Option<String>,
    pub manager_image: Option<String>,
    pub manager_address: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Seconds `connect` waits for a Ready manager.
    pub timeout: Option<u64>,
    pub also_proxy: Option<Vec<IpNet>>,
    pub never_proxy: Option<Vec<IpNet>>,
    pub tun_name: Option<String>,
    pub tun_subnet: Option<Ipv4Net>,
    pub resolv_conf: Option<PathBuf>,
    pub dns_mode: Option<DnsModeKey>,
    /// `auto`, `override` or `off`.
    pub ingress_hosts: Option<IngressHostsKey>,
    /// `intercept` and `run --intercept`.
    pub address: Option<IpAddr>,
    pub env_syntax: Option<crate::cluster::env::EnvSyntax>,
    /// `run`.
    pub quiet: Option<bool>,
    /// tether's log filter on stderr (as `TETHER_LOG`), e.g. `info` or `tether=debug`.
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsModeKey {
    Auto,
    Resolved,
    ResolvConf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IngressHostsKey {
    Auto,
    Override,
    Off,
}

#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}:{column}: {message}. The keys are the long flags of connect, intercept and run (see `tether config view`)."
    )]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{var}={value:?} is not a valid {key}: {reason}")]
    Env {
        var: String,
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// Where a setting came from, for `tether config view`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Flag,
    Environment,
    File,
    Default,
}

/// The config file in effect, if any: `$TETHER_CONFIG` (which must exist), else the user's
/// (which may not).
pub fn path() -> Option<(PathBuf, bool)> {
    match std::env::var_os(CONFIG_VAR).filter(|v| !v.is_empty()) {
        Some(p) => Some((PathBuf::from(p), true)),
        None => dirs::config_dir().map(|d| (d.join("tether").join("config.yaml"), false)),
    }
}

/// Reads the config file; a missing default file is an empty one.
pub fn load() -> Result<(FileConfig, Option<PathBuf>), FileError> {
    let Some((path, required)) = path() else {
        return Ok((FileConfig::default(), None));
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&path, &text).map(|c| (c, Some(path))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            Ok((FileConfig::default(), None))
        }
        Err(source) => Err(FileError::Read { path, source }),
    }
}

pub fn parse(path: &Path, text: &str) -> Result<FileConfig, FileError> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_saphyr::from_str(text).map_err(|e| {
        let message = e.to_string();
        match location(&e) {
            Some((line, column)) => FileError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: first_line(&message),
            },
            None => FileError::Invalid {
                path: path.to_owned(),
                message: first_line(&message),
            },
        }
    })
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_owned()
}

/// The line and column serde-saphyr reports for an error.
fn location(e: &serde_saphyr::Error) -> Option<(usize, usize)> {
    let loc = e.location()?;
    Some((loc.line() as usize, loc.column() as usize))
}

/// A setting from the command line, else `TETHER_<KEY>`, else the file; with its source.
pub fn layer<T: std::str::FromStr>(
    key: &'static str,
    flag: Option<T>,
    file: Option<T>,
) -> Result<(Option<T>, Source), FileError>
where
    T::Err: std::fmt::Display,
{
    if let Some(v) = flag {
        return Ok((Some(v), Source::Flag));
    }
    let var = env_var(key);
    if let Some(value) = std::env::var_os(&var).filter(|v| !v.is_empty()) {
        let value = value.to_string_lossy().into_owned();
        return value
            .parse::<T>()
            .map(|v| (Some(v), Source::Environment))
            .map_err(|e| FileError::Env {
                var,
                key,
                value,
                reason: e.to_string(),
            });
    }
    Ok(match file {
        Some(v) => (Some(v), Source::File),
        None => (None, Source::Default),
    })
}

/// `namespace` -> `TETHER_NAMESPACE`, `manager-namespace` -> `TETHER_MANAGER_NAMESPACE`.
pub fn env_var(key: &str) -> String {
    format!("TETHER_{}", key.replace('-', "_").to_uppercase())
}

/// One setting as `tether config view` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setting {
    pub key: String,
    /// As the file would spell it; null when unset (the command decides, e.g. the context's
    /// namespace).
    pub value: serde_json::Value,
    pub source: Source,
}

/// Every key with the value in effect without flags, and where it comes from.
pub fn view(file: &FileConfig) -> Vec<Setting> {
    let from_file = serde_json::to_value(file).unwrap_or_default();
    let keys = serde_json::to_value(FileConfig::default()).unwrap_or_default();
    let Some(keys) = keys.as_object() else {
        return Vec::new();
    };
    keys.keys()
        .map(|key| {
            let var = env_var(key);
            let (value, source) = match std::env::var(&var).ok().filter(|v| !v.is_empty()) {
                Some(v) => (serde_json::Value::String(v), Source::Environment),
                None => match from_file.get(key).filter(|v| !v.is_null()) {
                    Some(v) => (v.clone(), Source::File),
                    None => (default_of(key), Source::Default),
                },
            };
            Setting {
                key: key.clone(),
                value,
                source,
            }
        })
        .collect()
}

fn default_of(key: &str) -> serde_json::Value {
    let defaults = crate::config::SessionSettings::default();
    let v = match key {
        "manager-namespace" => crate::config::DEFAULT_MANAGER_NAMESPACE.to_owned(),
        "timeout" => return crate::config::DEFAULT_CONNECT_TIMEOUT.as_secs().into(),
        "tun-name" => defaults.tun_name,
        "tun-subnet" => defaults.tun_subnet.to_string(),
        "resolv-conf" => defaults.resolv_conf.display().to_string(),
        "dns-mode" | "ingress-hosts" => "auto".to_owned(),
        "address" => "127.0.0.1".to_owned(),
        "env-syntax" => "docker".to_owned(),
        "quiet" => return serde_json::Value::Bool(false),
        "log-level" => "warn".to_owned(),
        "also-proxy" | "never-proxy" => return serde_json::Value::Array(Vec::new()),
        _ => return serde_json::Value::Null,
    };
    serde_json::Value::String(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_long_flags() {
        let c = parse(
            Path::new("config.yaml"),
            "namespace: demo\nalso-proxy: [10.1.0.0/16]\ndns-mode: resolv-conf\nquiet: true\n",
        )
        .unwrap();
        assert_eq!(c.namespace.as_deref(), Some("demo"));
        assert_eq!(c.also_proxy, Some(vec!["10.1.0.0/16".parse().unwrap()]));
        assert_eq!(c.dns_mode, Some(DnsModeKey::ResolvConf));
        assert_eq!(c.quiet, Some(true));
        assert_eq!(parse(Path::new("c"), "").unwrap(), FileConfig::default());
    }

    #[test]
    fn a_typo_or_a_wrong_type_names_the_file_line_and_column() {
        let e = parse(
            Path::new("/home/u/.config/tether/config.yaml"),
            "namespace: demo\nnamspace: x\n",
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("/home/u/.config/tether/config.yaml:2:"),
            "{text}"
        );
        assert!(text.contains("namspace"), "{text}");
        let e = parse(Path::new("config.yaml"), "tun-subnet: banana\n").unwrap_err();
        assert!(e.to_string().starts_with("config.yaml:1:"), "{e}");
    }

    #[test]
    fn the_flag_wins_then_the_environment_then_the_file() {
        assert_eq!(
            layer("tun-name", Some("a".to_string()), Some("c".into())).unwrap(),
            (Some("a".into()), Source::Flag)
        );
        assert_eq!(
            layer::<String>("tun-name", None, Some("c".into())).unwrap(),
            (Some("c".into()), Source::File)
        );
        assert_eq!(
            layer::<String>("tun-name", None, None).unwrap(),
            (None, Source::Default)
        );
        assert_eq!(env_var("manager-namespace"), "TETHER_MANAGER_NAMESPACE");
    }
}
