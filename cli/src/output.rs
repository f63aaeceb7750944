//! The one place that writes for the user: results on stdout (text for people, JSON lines
//! for scripts), progress on stderr (a spinner on a terminal, plain lines otherwise). Logs go
//! through tracing and never mix with this.

use std::io::IsTerminal;
use std::time::Duration;

use serde_json::Value;

use crate::args::OutputFormat;

#[derive(Clone, Copy)]
pub struct Printer {
    format: OutputFormat,
}

impl Printer {
    pub fn new(format: OutputFormat) -> Self {
        Printer { format }
    }

    /// Prints one result: `text` for people, `json` (one line) for scripts.
    pub fn emit(&self, text: &str, json: Value) {
        match self.format {
            OutputFormat::Text => println!("{text}"),
            OutputFormat::Json => println!("{json}"),
        }
    }

    /// Prints an error on stderr: text, or a JSON object with `error` for scripts.
    pub fn error(&self, message: &str) {
        match self.format {
            OutputFormat::Text => eprintln!("tether: {message}"),
            OutputFormat::Json => eprintln!("{}", serde_json::json!({ "error": message })),
        }
    }

    /// Progress of a long step, shown on stderr.
    pub fn progress(&self) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress { bar }
    }
}

/// Steps of a long operation: a spinner on a terminal, one line per step otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub fn step(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(message.to_owned()),
            None => eprintln!("{message}..."),
        }
    }

    /// Removes the spinner before results are printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
