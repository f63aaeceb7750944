//! The daemon's Unix socket: one JSON object per line in each direction.
//!
//! A client sends one [`Request`] and reads [`Reply`] lines: `status` gets one `status`
//! reply; `quit` gets `disconnected` once everything is undone; `watch` gets every progress
//! event of the daemon's start, from the first, ending with `connected` or `failed`.
//! The socket is mode 0600 and owned by the user who ran `tether connect`, so only that
//! user (and root) can stop or inspect the session.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;

/// A client's one request.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Quit,
    Watch,
}

/// One line from the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Reply {
    /// A step of the start, for the user to follow.
    Progress {
        message: String,
    },
    /// Leftovers of a crashed session were undone before this one started.
    CleanedUp {
        text: String,
        pid: u32,
        resolv_conf_restored: bool,
    },
    Connected {
        status: Box<Status>,
    },
    Failed {
        error: String,
        exit_code: u8,
    },
    Status {
        status: Box<Status>,
    },
    Disconnected {
        manager: String,
        pid: u32,
    },
}

/// Everything `tether status` shows.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct Status {
    /// The daemon's pid.
    pub pid: u32,
    /// How the manager is reached: "direct" (a known address) or "kubernetes".
    pub mode: String,
    /// Names of the kubeconfig context, cluster and namespace, as the daemon was given them.
    pub context: Option<String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    /// "connecting", "connected" or "reconnecting".
    pub state: String,
    pub manager: ManagerStatus,
    pub device: String,
    pub device_address: String,
    pub routes: Vec<String>,
    pub dns: DnsStatus,
    /// When the current tunnel came up (RFC 3339); none while reconnecting.
    pub connected_since: Option<String>,
    /// How often the tunnel was re-established after it dropped.
    pub reconnects: u64,
    /// TCP connections from this machine into routed subnets.
    pub open_flows: u64,
    /// The daemon's log file.
    pub log: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct ManagerStatus {
    pub address: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct DnsStatus {
    /// "resolved" (per-link DNS through systemd-resolved) or "resolv-conf".
    pub mode: String,
    pub server: String,
    pub domain: String,
    pub search: Vec<String>,
}

/// An open request: the daemon's reply lines.
pub struct Replies {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    // Kept so the daemon does not see the client go away while it still answers.
    _write: tokio::net::unix::OwnedWriteHalf,
}

impl Replies {
    /// The next reply; `Ok(None)` when the daemon closed the connection.
    pub async fn next(&mut self) -> std::io::Result<Option<Reply>> {
        match self.lines.next_line().await? {
            None => Ok(None),
            Some(line) => serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    }
}

/// Sends `request` to the daemon listening on `socket`.
pub async fn send(socket: &Path, request: Request) -> std::io::Result<Replies> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    // Serializing a unit enum cannot fail.
    let mut line = serde_json::to_string(&request).expect("requests serialize");
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    Ok(Replies {
        lines: BufReader::new(read).lines(),
        _write: write,
    })
}

/// Encodes one reply line.
pub fn encode(reply: &Reply) -> String {
    // Replies are plain structs of strings and numbers.
    let mut line = serde_json::to_string(reply).expect("replies serialize");
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"cmd":"status"}"#
        );
        let reply = Reply::Failed {
            error: "no".into(),
            exit_code: 4,
        };
        let line = encode(&reply);
        assert_eq!(
            line,
            "{\"event\":\"failed\",\"error\":\"no\",\"exit_code\":4}\n"
        );
        assert!(matches!(
            serde_json::from_str::<Reply>(line.trim()).unwrap(),
            Reply::Failed { exit_code: 4, .. }
        ));
    }
}
