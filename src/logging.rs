//! Tracing set-up: filter from `LDBRIDGE_LOG` (else `RUST_LOG`, else
//! `info`), plain text or JSON lines on stderr, ANSI colours only on a
//! terminal (journald keeps plain text well).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// INFO for ldbridge; the scheduler crate narrates every start at INFO, so
/// only its warnings.
const DEFAULT_FILTER: &str = "info,tokio_cron_scheduler=warn";

/// Installs the global subscriber. Calling it twice is harmless (the second
/// call does nothing), which keeps tests and the demo simple.
pub fn init(format: LogFormat) {
    let filter = std::env::var("LDBRIDGE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| DEFAULT_FILTER.to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
