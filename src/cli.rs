//! The command line: clap definitions, one small function per command, and
//! table/JSON printing. Exit codes live in [`Failure::exit_code`] and
//! nowhere else: 0 ok, 1 runtime error, 2 usage or config error, 3 nothing
//! matched.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::{
    clock,
    config::{Config, ConfigError, StoreConfig},
    store::{
        log::{self as queries, BatchFilter, BatchSummary},
        Route, Store, StoreOptions,
    },
};

/// ldbridge: a durable bridge between Segment and LaunchDarkly.
#[derive(Debug, Parser)]
#[command(name = "ldbridge", version, about, long_about = None)]
pub struct Cli {
    /// Config file (TOML). Without one, defaults apply (see README).
    #[arg(long, global = true, env = "LDBRIDGE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve,
    /// Run the real daemon against local stand-in receivers, send sample traffic, print what arrived.
    Demo,
    /// Validate the config (and that its secrets resolve) without starting.
    CheckConfig,
    /// List batches, newest first.
    Log(LogArgs),
}

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// pending, sending, delivered, retrying, failed or split.
    #[arg(long)]
    pub status: Option<String>,
    /// segment-to-launchdarkly, launchdarkly-to-segment, launchdarkly-relay or segment-relay.
    #[arg(long)]
    pub route: Option<String>,
    /// Source name.
    #[arg(long)]
    pub source: Option<String>,
    /// Created at or after T (RFC 3339, or a duration ago such as 2h).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Created before T (RFC 3339, or a duration ago such as 30m).
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
    /// Only batches with an id below this one (the next page).
    #[arg(long, value_name = "BATCH_ID")]
    pub before: Option<i64>,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Why a command failed, and so its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Usage(String),
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    NothingMatched(String),
    #[error("{0:#}")]
    Runtime(#[from] anyhow::Error),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Runtime(_) => 1,
            Failure::Usage(_) | Failure::Config(_) => 2,
            Failure::NothingMatched(_) => 3,
        }
    }
}

/// Runs the parsed command to completion.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let path = cli.config.as_deref();
    match cli.command {
        Command::Serve => {
            let config = Config::load(path)?;
            crate::daemon::serve(config).await?;
            Ok(())
        }
        Command::CheckConfig => check_config(path),
        Command::Demo => Ok(crate::demo::run().await?),
        Command::Log(args) => log(path, &args).await,
    }
}

fn check_config(path: Option<&std::path::Path>) -> Result<(), Failure> {
    let config = Config::load(path)?;
    let origin = path.map_or("built-in defaults".to_owned(), |p| p.display().to_string());
    println!(
        "{origin}: ok ({} Segment source(s), {} LaunchDarkly source(s), database {})",
        config.segment_sources.len(),
        config.launchdarkly_sources.len(),
        config.store.path.display()
    );
    Ok(())
}

/// Opens the database for an operator command. Secrets are not resolved:
/// an operator's shell may not see the service's credentials.
async fn open(path: Option<&std::path::Path>) -> Result<Store, Failure> {
    let store = StoreConfig::load(path)?;
    if !store.path.exists() {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "no database at {} (has ldbridge serve run with this config?)",
            store.path.display()
        )));
    }
    let options = StoreOptions {
        synchronous_full: true,
        busy_timeout: store.busy_timeout,
    };
    Store::open(&store.path, &options).await.map_err(|error| {
        Failure::Runtime(
            anyhow::Error::new(error).context(format!("opening {}", store.path.display())),
        )
    })
}

async fn log(path: Option<&std::path::Path>, args: &LogArgs) -> Result<(), Failure> {
    let now = clock::now_ms();
    if let Some(route) = &args.route {
        route.parse::<Route>().map_err(Failure::Usage)?;
    }
    const STATUSES: [&str; 6] = [
        "pending",
        "sending",
        "delivered",
        "retrying",
        "failed",
        "split",
    ];
    if let Some(status) = &args.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(Failure::Usage(format!(
                "unknown status `{status}` (expected one of {})",
                STATUSES.join(", ")
            )));
        }
    }
    let filter = BatchFilter {
        status: args.status.clone(),
        route: args.route.clone(),
        source: args.source.clone(),
        since: args
            .since
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()?,
        before_id: args.before,
        limit: args.limit.max(1),
    };
    let store = open(path).await?;
    let batches = queries::list_batches(&store, &filter)
        .await
        .map_err(anyhow::Error::new)?;
    store.close().await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(batches.iter().map(batch_json).collect()))
                .unwrap_or_default()
        );
    } else {
        print!("{}", batch_table(&batches));
    }
    Ok(())
}

/// `T` of `--since`/`--until`: RFC 3339, or a duration ago (`2h`, `15m`, `7d`).
pub fn parse_time(text: &str, now: i64) -> Result<i64, Failure> {
    if let Some(at) = clock::parse_ms(text) {
        return Ok(at);
    }
    humantime::parse_duration(text)
        .map(|ago| now - ago.as_millis() as i64)
        .map_err(|_| {
            Failure::Usage(format!(
                "`{text}` is neither an RFC 3339 time nor a duration such as 2h"
            ))
        })
}

/// A batch as `--json` shows it (architecture.md §4 field names).
pub fn batch_json(batch: &BatchSummary) -> Value {
    json!({
        "id": batch.id,
        "route": batch.route,
        "source": batch.source,
        "status": batch.status,
        "payload_id": batch.payload_id,
        "event_count": batch.event_count,
        "attempts": batch.attempts,
        "created_at": clock::format_ms(batch.created_at),
        "updated_at": clock::format_ms(batch.updated_at),
        "next_attempt_at": batch.next_attempt_at.map(clock::format_ms),
        "last_error": batch.last_error,
        "parent_id": batch.parent_id,
    })
}

/// The delivery log as an aligned table that fits 100 columns.
pub fn batch_table(batches: &[BatchSummary]) -> String {
    let mut out = format!(
        "{:>7}  {:<9}  {:<23}  {:<12}  {:>6}  {:>5}  {:<24}\n",
        "BATCH", "STATUS", "ROUTE", "SOURCE", "EVENTS", "TRIES", "CREATED"
    );
    for batch in batches {
        out.push_str(&format!(
            "{:>7}  {:<9}  {:<23}  {:<12}  {:>6}  {:>5}  {:<24}\n",
            batch.id,
            batch.status,
            batch.route,
            truncate(&batch.source, 12),
            batch.event_count,
            batch.attempts,
            clock::format_ms(batch.created_at),
        ));
        if let Some(error) = batch
            .last_error
            .as_deref()
            .filter(|_| batch.status != "delivered")
        {
            out.push_str(&format!("{:>7}  └ {}\n", "", truncate(error, 89)));
        }
    }
    if batches.is_empty() {
        out.push_str("(no batches)\n");
    }
    out
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let kept: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{kept}…")
    }
}
