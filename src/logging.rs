//! Tracing set-up: plain text or JSON lines on stderr, ANSI colours only on
//! a terminal (journald keeps plain text well), and a filter that SIGHUP can
//! change.
//!
//! The filter is the first of: `LDBRIDGE_LOG`, the config's
//! `server.log_filter`, `RUST_LOG`, then `info,tokio_cron_scheduler=warn`.
//! Only the config's value can change at run time (a process's environment
//! cannot), so a reload re-applies that order with the new config.

use std::io::IsTerminal;

use tracing_subscriber::{
    layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter, Registry,
};

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one line each, colour on a terminal.
    Text,
    /// One JSON object per line, for journald or a log shipper.
    Json,
}

/// INFO for ldbridge; the scheduler crate narrates every start at INFO, so
/// only its warnings.
const DEFAULT_FILTER: &str = "info,tokio_cron_scheduler=warn";

/// Changes the running filter.
#[derive(Clone, Debug)]
pub struct LogControl(reload::Handle<EnvFilter, Registry>);

/// The filter text to use, given the config's `server.log_filter`.
pub fn filter_text(config_filter: Option<&str>) -> String {
    std::env::var("LDBRIDGE_LOG")
        .ok()
        .or_else(|| config_filter.map(str::to_owned))
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| DEFAULT_FILTER.to_owned())
}

impl LogControl {
    /// Applies the filter for `config_filter` (see [`filter_text`]). An
    /// invalid filter is reported and the current one kept.
    pub fn apply(&self, config_filter: Option<&str>) {
        let text = filter_text(config_filter);
        match EnvFilter::try_new(&text) {
            Ok(filter) => {
                if let Err(error) = self.0.reload(filter) {
                    tracing::warn!(%error, "Could not change the log filter.");
                }
            }
            Err(error) => {
                tracing::warn!(%error, filter = %text, "Invalid log filter; keeping the current one.")
            }
        }
    }
}

/// Installs the global subscriber and returns its filter control. A second
/// call installs nothing and returns `None` (tests and the demo may call it
/// more than once).
pub fn init(format: LogFormat) -> Option<LogControl> {
    let filter =
        EnvFilter::try_new(filter_text(None)).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(ansi),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    installed.ok().map(|()| LogControl(handle))
}
