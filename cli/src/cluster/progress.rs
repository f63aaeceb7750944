//! What an install is doing, as events, and one way to show them.
//!
//! [`install`](super::install) reports [`Progress`] through a callback and never prints; the
//! caller decides. [`Renderer`] is the usual choice: a spinner with the current step on a
//! terminal (indicatif), one plain line per step otherwise, so logs and CI output stay readable.

use std::fmt;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// One step of an install or uninstall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Looking at what is installed in the namespace.
    Checking { namespace: String },
    /// An object did not exist and was created (`kind` as in kubectl: `deployment`, ...).
    Created { kind: &'static str, name: String },
    /// An object existed with other content and was replaced.
    Updated { kind: &'static str, name: String },
    /// The installed manager is older (or differs) and is being replaced.
    Upgrading { from: String, to: String },
    /// A compatible manager is installed and is used as it is.
    UsingInstalled { version: String },
    /// Waiting for the manager rollout; `status` says what is still missing.
    Waiting { status: String },
    /// A manager pod is Ready.
    Ready { pod: String, version: String },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Checking { namespace } => {
                write!(f, "checking the traffic manager in namespace {namespace}")
            }
            Progress::Created { kind, name } => write!(f, "created {kind}/{name}"),
            Progress::Updated { kind, name } => write!(f, "updated {kind}/{name}"),
            Progress::Upgrading { from, to } => {
                write!(f, "upgrading the traffic manager from {from} to {to}")
            }
            Progress::UsingInstalled { version } => {
                write!(f, "using the installed traffic manager {version}")
            }
            Progress::Waiting { status } => write!(f, "waiting for the traffic manager: {status}"),
            Progress::Ready { pod, version } => {
                write!(f, "traffic manager {version} ready (pod {pod})")
            }
        }
    }
}

/// Shows progress on stderr: a spinner on a terminal, plain lines otherwise.
pub struct Renderer {
    mode: Mode,
}

enum Mode {
    Spinner(ProgressBar),
    Lines { last_waiting: Option<String> },
}

impl Renderer {
    /// A spinner when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Renderer {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            // The template is a constant that parses; a failure would be a typo caught by
            // the first run of any test that renders.
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .expect("a valid spinner template"),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            Renderer {
                mode: Mode::Spinner(bar),
            }
        } else {
            Renderer::lines()
        }
    }

    /// One line per step on stderr.
    pub fn lines() -> Renderer {
        Renderer {
            mode: Mode::Lines { last_waiting: None },
        }
    }

    /// Shows one event.
    pub fn show(&mut self, event: Progress) {
        match &mut self.mode {
            Mode::Spinner(bar) => match &event {
                // Steps that are done stay on screen; the spinner carries the current one.
                Progress::Waiting { .. } | Progress::Checking { .. } => {
                    bar.set_message(event.to_string())
                }
                _ => bar.println(format!("  {event}")),
            },
            Mode::Lines { last_waiting } => {
                // The wait reports its status on every change of any pod; plain output
                // repeats a status only when it changed.
                if let Progress::Waiting { status } = &event {
                    if last_waiting.as_ref() == Some(status) {
                        return;
                    }
                    *last_waiting = Some(status.clone());
                }
                eprintln!("{event}");
            }
        }
    }

    /// Removes the spinner; call when the install is over.
    pub fn finish(&mut self) {
        if let Mode::Spinner(bar) = &self.mode {
            bar.finish_and_clear();
        }
    }
}

impl Default for Renderer {
    fn default() -> Self {
        Renderer::new()
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.finish();
    }
}
