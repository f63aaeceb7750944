//! `tether status`: what the daemon is connected to, what it routes, and how the tunnel
//! has fared.

use std::path::Path;

use serde_json::json;

use crate::error::CliError;
use crate::ipc::{self, Reply, Request, Status};
use crate::output::Printer;
use crate::system::state::StateDir;

pub async fn run(state_dir: &Path, printer: Printer) -> Result<(), CliError> {
    let state = StateDir::open(state_dir)?;
    match query(&state.socket_path()).await {
        Some(status) => printer.emit(&render(&status), to_json(&status, "status")),
        None => printer.emit(
            "Not connected.",
            json!({ "event": "status", "state": "not-connected" }),
        ),
    }
    Ok(())
}

/// The daemon's status, or None when no daemon answers on `socket`.
pub async fn query(socket: &Path) -> Option<Status> {
    let mut replies = ipc::send(socket, Request::Status).await.ok()?;
    match replies.next().await {
        Ok(Some(Reply::Status { status })) => Some(*status),
        _ => None,
    }
}

/// The status as one JSON object with an `event` name first.
pub fn to_json(status: &Status, event: &str) -> serde_json::Value {
    let mut value = json!({ "event": event });
    if let (Some(out), Ok(serde_json::Value::Object(fields))) =
        (value.as_object_mut(), serde_json::to_value(status))
    {
        out.extend(fields);
    }
    value
}

pub fn render(s: &Status) -> String {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let routes = if s.routes.is_empty() {
        "none".to_owned()
    } else {
        s.routes.join(", ")
    };
    let since = s
        .connected_since
        .as_deref()
        .map_or_else(|| "-".to_owned(), since);
    let context = match (&s.context, &s.cluster, &s.namespace) {
        (None, None, None) => String::new(),
        _ => format!(
            "\n  Context:     {}, cluster {}, namespace {}",
            or_dash(&s.context),
            or_dash(&s.cluster),
            or_dash(&s.namespace)
        ),
    };
    format!(
        "{state} ({mode}) to the manager at {addr}, tether-agent {version}{context}\n  \
         Device:      {device} {device_address}\n  \
         Routes:      {routes}\n  \
         DNS:         {dns_mode}, server {server}, domain {domain}, search {search}\n  \
         Since:       {since}, reconnects {reconnects}\n  \
         Open flows:  {flows}\n  \
         Daemon:      pid {pid}, log {log}",
        state = capitalize(&s.state),
        mode = s.mode,
        addr = s.manager.address,
        version = s.manager.version,
        device = s.device,
        device_address = s.device_address,
        dns_mode = s.dns.mode,
        server = s.dns.server,
        domain = s.dns.domain,
        search = s.dns.search.join(" "),
        reconnects = s.reconnects,
        flows = s.open_flows,
        pid = s.pid,
        log = s.log.display(),
    )
}

/// An RFC 3339 time as "2025-01-02T03:04:05Z (5m 3s ago)".
fn since(at: &str) -> String {
    let Ok(at) = at.parse::<jiff::Timestamp>() else {
        return at.to_owned();
    };
    let seconds = jiff::Timestamp::now().duration_since(at).as_secs().max(0);
    let ago = match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    };
    let at = at
        .round(jiff::Unit::Second)
        .map_or_else(|_| at.to_string(), |t| t.to_string());
    format!("{at} ({ago} ago)")
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
