//! Steps of a long operation, on stderr: a spinner with the current step on a terminal
//! (indicatif), where finished steps stay on screen above it; one plain line per step
//! otherwise, so that logs and CI output stay readable. Both the daemon's start-up steps and
//! the manager install's events are shown through this.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::cluster::progress::Progress as InstallProgress;

pub struct Progress {
    mode: Mode,
}

enum Mode {
    Spinner(ProgressBar),
    Silent,
    Lines {
        // The install wait reports its status on every change of any pod; plain output
        // repeats a status only when it changed.
        last_waiting: Option<String>,
    },
}

impl Progress {
    /// A spinner when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress {
                mode: Mode::Lines { last_waiting: None },
            };
        }
        let bar = ProgressBar::new_spinner();
        // The template is a constant that parses; a typo would fail the first run that
        // shows a spinner.
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .expect("a valid spinner template"),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Progress {
            mode: Mode::Spinner(bar),
        }
    }

    /// Progress that shows nothing.
    pub fn silent() -> Progress {
        Progress { mode: Mode::Silent }
    }

    /// The step now under way.
    pub fn step(&mut self, message: &str) {
        match &self.mode {
            Mode::Spinner(bar) => bar.set_message(message.to_owned()),
            Mode::Lines { .. } => {
                let _ = writeln!(std::io::stderr(), "{message}...");
            }
            Mode::Silent => {}
        }
    }

    /// One event of a manager install or uninstall.
    pub fn install(&mut self, event: InstallProgress) {
        match &mut self.mode {
            Mode::Spinner(bar) => match &event {
                InstallProgress::Waiting { .. } | InstallProgress::Checking { .. } => {
                    bar.set_message(event.to_string())
                }
                // Steps that are done stay on screen; the spinner carries the current one.
                _ => bar.println(format!("  {event}")),
            },
            Mode::Lines { last_waiting } => {
                if let InstallProgress::Waiting { status } = &event {
                    if last_waiting.as_ref() == Some(status) {
                        return;
                    }
                    *last_waiting = Some(status.clone());
                }
                let _ = writeln!(std::io::stderr(), "{event}");
            }
            Mode::Silent => {}
        }
    }

    /// Removes the spinner; results may be printed after this.
    pub fn finish(&mut self) {
        if let Mode::Spinner(bar) = &self.mode {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
