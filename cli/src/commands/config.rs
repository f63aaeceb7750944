//! `tether config view`: every setting in effect without flags, and where it comes from
//! (a `TETHER_*` variable, the config file, or the default), so that a surprise has an
//! answer.

use crate::config::file;
use crate::error::CliError;
use crate::output::{Event, Printer};

pub fn run(printer: &Printer) -> Result<(), CliError> {
    let (config, path) = file::load().map_err(|e| CliError::Config(Box::new(e)))?;
    printer.event(&Event::Config {
        file: path.or_else(|| file::path().map(|(p, _)| p)),
        settings: file::view(&config),
    });
    Ok(())
}
