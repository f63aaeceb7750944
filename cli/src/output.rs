//! The one place that writes for the user. Results are [`Event`]s on stdout: text for
//! people, one JSON object per line or one YAML document each (as kubectl prints them) for
//! scripts. Errors go to stderr in the same format. Progress goes to stderr through
//! [`Progress`]: a spinner on a terminal, plain lines otherwise, never mixed into stdout.
//! Logs go through tracing and never mix with any of this.
//!
//! - [`event`]: the typed events, one shape each (documented in `docs/events.md`).
//! - [`text`]: how each event reads for people.
//! - [`progress`]: steps of long operations.

pub mod event;
pub mod progress;
pub mod text;

use std::cell::Cell;
use std::io::Write;

pub use event::Event;
pub use progress::Progress;

/// How results are written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OutputFormat {
    Text,
    Json,
    Yaml,
}

pub struct Printer {
    format: OutputFormat,
    /// Nothing but errors (`tether run --quiet`: the command's output is all there is).
    quiet: bool,
    // YAML documents after the first are preceded by `---`, on each stream.
    stdout_documents: Cell<usize>,
    stderr_documents: Cell<usize>,
}

impl Printer {
    pub fn new(format: OutputFormat) -> Self {
        Printer {
            format,
            quiet: false,
            stdout_documents: Cell::new(0),
            stderr_documents: Cell::new(0),
        }
    }

    pub fn output_format(&self) -> OutputFormat {
        self.format
    }

    /// A printer that prints errors only.
    pub fn quiet(format: OutputFormat) -> Self {
        Printer {
            quiet: true,
            ..Printer::new(format)
        }
    }

    /// Prints one result on stdout.
    pub fn event(&self, event: &Event) {
        if self.quiet {
            return;
        }
        let out = self.format(event, &self.stdout_documents);
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (`tether status | head -0`) is not tether's failure.
        let _ = stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush());
    }

    /// Prints an error on stderr: text, or an `error` event for scripts.
    pub fn error(&self, message: &str, exit_code: u8) {
        let out = match self.format {
            OutputFormat::Text => format!("tether: {message}\n"),
            _ => self.format(
                &Event::Error {
                    error: message.to_owned(),
                    exit_code,
                },
                &self.stderr_documents,
            ),
        };
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }

    /// A line for the user on stderr that is neither a result nor an error ("asking sudo").
    pub fn notice(&self, message: &str) {
        if self.quiet {
            return;
        }
        let _ = writeln!(std::io::stderr().lock(), "{message}");
    }

    /// Progress of a long operation, on stderr.
    pub fn progress(&self) -> Progress {
        if self.quiet {
            Progress::silent()
        } else {
            Progress::new()
        }
    }

    fn format(&self, event: &Event, documents: &Cell<usize>) -> String {
        match self.format {
            OutputFormat::Text => format!("{}\n", text::render(event)),
            OutputFormat::Json => {
                // Events are plain data: strings, numbers, addresses and paths.
                let mut line = serde_json::to_string(event).expect("events serialize to JSON");
                line.push('\n');
                line
            }
            OutputFormat::Yaml => {
                let n = documents.get();
                documents.set(n + 1);
                // As above: plain data.
                let doc = serde_saphyr::to_string(event).expect("events serialize to YAML");
                let separator = if n == 0 { "" } else { "---\n" };
                let newline = if doc.ends_with('\n') { "" } else { "\n" };
                format!("{separator}{doc}{newline}")
            }
        }
    }
}
