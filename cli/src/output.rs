//! The one place that writes results for the user: text for people, JSON lines for scripts.
//! Logs go to stderr through tracing and never mix with this.

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
}
