//! The command line: clap definitions, one small function per command, and
//! table/JSON printing. Exit codes live in [`Failure::exit_code`] and
//! nowhere else: 0 ok, 1 runtime error, 2 usage or config error, 3 nothing
//! matched.

use std::{io::IsTerminal, path::PathBuf};

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::{
    clock,
    config::{Config, ConfigError, StoreConfig},
    domain::BatchStatus,
    logging::LogFormat,
    ops,
    store::{delivery_log::BatchFilter, refusals::RefusalFilter, Store, StoreOptions},
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve,
    /// Run the real daemon against local stand-in receivers, send sample traffic, print what arrived.
    Demo {
        /// Print every payload each stand-in received, and the delivery log.
        #[arg(long)]
        verbose: bool,
    },
    /// Validate the config (and that its secrets resolve) without starting.
    CheckConfig {
        /// Also ask LaunchDarkly whether it knows each destination credential (where it offers a way).
        #[arg(long)]
        online: bool,
        /// With --online: the answers as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List batches, newest first.
    Log(LogArgs),
    /// One batch: its events and every attempt.
    Show {
        batch_id: i64,
        #[arg(long)]
        json: bool,
    },
    /// One event (id, Segment messageId or LaunchDarkly payload id): where it went on each route, and why.
    Explain {
        #[arg(value_name = "EVENT_ID|MESSAGE_ID")]
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// What each route of a source would send for one Segment call or one LaunchDarkly payload, or why nothing; no database or network needed.
    Map {
        /// The source whose mappings and destinations apply.
        #[arg(long)]
        source: String,
        /// The call or payload (JSON); `-` or none: standard input.
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Put batches back in the queue (their next attempt is `manual`).
    Resend(ResendArgs),
    /// Counts by route and status, oldest undelivered age, attempts in the last hour.
    Stats {
        /// Also what happened from T on (RFC 3339 or a duration ago, e.g. 1h): the Delivery Overview's numbers.
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// With --since: up to T (default now).
        #[arg(long, value_name = "T")]
        until: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The refusal log: messages and requests refused at ingest, newest first, and why.
    Refusals(RefusalsArgs),
    /// Reload the running daemon's config (SIGHUP) and wait until it has applied or rejected it.
    Reload {
        /// The daemon's process id (systemd: $MAINPID); default: the one its status file names.
        #[arg(long)]
        pid: Option<u32>,
        /// How long to wait for the daemon's answer.
        #[arg(long, default_value = "10s", value_name = "DURATION")]
        timeout: String,
    },
    /// The database itself.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Purge delivered and skipped data older than store.retain (what the retention job does).
    Purge {
        /// Instead of store.retain, e.g. 3d.
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// `ldbridge store …`.
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy the configured database, every table with its ids, dedupe keys and statuses, into
    /// another: a PostgreSQL URL (or env:VAR naming one) or a SQLite file path. Safe to rerun;
    /// stop the daemon first.
    Copy {
        /// postgres://user@host/db, env:VAR, or a path to a SQLite file (created if missing).
        #[arg(long, value_name = "TARGET")]
        to: String,
        #[arg(long)]
        json: bool,
    },
}

/// Which batches: the filters `log` and `resend` share.
#[derive(Debug, clap::Args)]
pub struct FilterArgs {
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
}

impl FilterArgs {
    /// The store filter, with `status` standing in when none was given.
    fn to_filter(
        &self,
        default_status: Option<&str>,
        limit: usize,
    ) -> Result<BatchFilter, Failure> {
        ops::filters::batch_filter(
            self.status.as_deref().or(default_status),
            self.route.as_deref(),
            self.source.as_deref(),
            self.since.as_deref(),
            self.until.as_deref(),
            limit,
            clock::now_ms(),
        )
        .map_err(Failure::Usage)
    }
}

#[derive(Debug, clap::Args)]
pub struct ResendArgs {
    /// Batch ids; without them, --status (or --all-failed) and the other filters select.
    pub batch_ids: Vec<i64>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Every failed batch (the same as --status failed).
    #[arg(long, conflicts_with = "status")]
    pub all_failed: bool,
    /// Do not ask before requeueing (asked only when stdin is a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Also resend delivered batches.
    #[arg(long)]
    pub force: bool,
    /// Show what would be requeued; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only batches with an id below this one (the next page).
    #[arg(long, value_name = "BATCH_ID")]
    pub before: Option<i64>,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RefusalsArgs {
    /// Refused at or after T (RFC 3339, or a duration ago such as 2h).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Source name; `unknown` for requests with no known key.
    #[arg(long)]
    pub source: Option<String>,
    /// Reason code, e.g. missing_event, invalid_json, invalid_write_key.
    #[arg(long, value_name = "CODE")]
    pub reason: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl RefusalsArgs {
    /// The store filter (shared with the admin API's query parameters).
    pub fn to_filter(&self) -> Result<RefusalFilter, Failure> {
        ops::filters::refusal_filter(
            self.since.as_deref(),
            self.source.as_deref(),
            self.reason.as_deref(),
            self.limit,
            clock::now_ms(),
        )
        .map_err(Failure::Usage)
    }
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

/// Runs the parsed command to completion. `log_control` changes the log filter
/// (the daemon applies the config's and reloads it on SIGHUP).
pub async fn run(cli: Cli, log_control: Option<crate::logging::LogControl>) -> Result<(), Failure> {
    let path = cli.config.as_deref();
    match cli.command {
        Command::Serve => {
            let config = Config::load(path)?;
            crate::daemon::serve(config, cli.config.clone(), log_control).await?;
            Ok(())
        }
        Command::CheckConfig { online, json } => {
            check_config(path, online && json)?;
            if online {
                check_online(path, json).await?;
            }
            Ok(())
        }
        Command::Demo { verbose } => {
            // The daemon's lifecycle lines would bury the summary; warnings
            // (the operator loop's retries) still show.
            if let (Some(log), false) = (&log_control, verbose) {
                log.apply(Some("warn"));
            }
            Ok(crate::demo::run(verbose).await?)
        }
        Command::Log(args) => log(path, &args).await,
        Command::Show { batch_id, json } => show(path, batch_id, json).await,
        Command::Explain { id, json } => explain(path, &id, json).await,
        Command::Map { source, file, json } => map(path, &source, file.as_deref(), json),
        Command::Resend(args) => resend(path, &args).await,
        Command::Stats { since, until, json } => {
            stats(path, since.as_deref(), until.as_deref(), json).await
        }
        Command::Refusals(args) => refusals(path, &args).await,
        Command::Reload { pid, timeout } => reload(path, pid, &timeout),
        Command::Purge { older_than, json } => purge(path, older_than.as_deref(), json).await,
        Command::Store {
            command: StoreCommand::Copy { to, json },
        } => store_copy(path, &to, json).await,
    }
}

/// Where `store copy --to` points: a PostgreSQL URL, `env:VAR` naming one,
/// or a SQLite file.
fn copy_target(to: &str) -> Result<crate::store::Location, Failure> {
    use crate::store::Location;
    let is_url = |text: &str| text.starts_with("postgres://") || text.starts_with("postgresql://");
    if is_url(to) {
        return Ok(Location::Postgres(to.to_owned()));
    }
    if let Some(name) = to.strip_prefix("env:") {
        return match std::env::var(name) {
            Ok(url) if is_url(&url) => Ok(Location::Postgres(url)),
            Ok(_) => Err(Failure::Usage(format!(
                "--to: ${name} is not a PostgreSQL URL (postgres://…)"
            ))),
            Err(_) => Err(Failure::Usage(format!("--to: ${name} is not set"))),
        };
    }
    Ok(Location::Sqlite(std::path::PathBuf::from(to)))
}

async fn store_copy(path: Option<&std::path::Path>, to: &str, json: bool) -> Result<(), Failure> {
    let target = copy_target(to)?;
    let config = StoreConfig::load(path)?;
    if config.location() == target {
        return Err(Failure::Usage(
            "--to names the configured database itself".to_owned(),
        ));
    }
    let from = open(path).await?;
    let options = StoreOptions {
        node: config.node.clone(),
        busy_timeout: config.busy_timeout,
        ..StoreOptions::default()
    };
    let into = Store::open_at(&target, &options).await.map_err(|error| {
        Failure::Runtime(
            anyhow::Error::new(error).context(format!("opening {}", target.describe())),
        )
    })?;
    let copied = crate::store::copy::copy(&from, &into)
        .await
        .map_err(runtime)?;
    from.close().await;
    into.close().await;
    if json {
        let tables: serde_json::Map<String, Value> = copied
            .iter()
            .map(|(table, rows)| ((*table).to_owned(), Value::from(*rows)))
            .collect();
        print_json(&serde_json::json!({ "to": target.describe(), "rows": tables }));
    } else {
        println!("Copied into {}:", target.describe());
        for (table, rows) in copied {
            println!("  {table:<13} {rows:>10} row(s)");
        }
    }
    Ok(())
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn runtime(error: crate::store::StoreError) -> Failure {
    Failure::Runtime(anyhow::Error::new(error))
}

async fn show(path: Option<&std::path::Path>, id: i64, json: bool) -> Result<(), Failure> {
    let store = open(path).await?;
    let detail = ops::show(&store, id).await.map_err(runtime)?;
    store.close().await;
    let detail = detail.ok_or_else(|| Failure::NothingMatched(format!("no batch {id}")))?;
    if json {
        print_json(&detail.json());
    } else {
        print!("{}", detail.text());
    }
    Ok(())
}

async fn explain(path: Option<&std::path::Path>, id: &str, json: bool) -> Result<(), Failure> {
    let store = open(path).await?;
    let found = ops::explain(&store, id).await.map_err(runtime)?;
    store.close().await;
    if found.is_empty() {
        return Err(Failure::NothingMatched(format!(
            "no event with id, messageId or payload id `{id}`, and no refusal of one"
        )));
    }
    if json {
        print_json(&found.json());
    } else {
        print!("{}", found.text());
    }
    Ok(())
}

async fn refusals(path: Option<&std::path::Path>, args: &RefusalsArgs) -> Result<(), Failure> {
    let filter = args.to_filter()?;
    let store = open(path).await?;
    let found = ops::refusals::list(&store, &filter)
        .await
        .map_err(runtime)?;
    store.close().await;
    if args.json {
        print_json(&Value::Array(
            found.iter().map(ops::refusals::json).collect(),
        ));
    } else {
        print!("{}", ops::refusals::table(&found));
    }
    Ok(())
}

async fn resend(path: Option<&std::path::Path>, args: &ResendArgs) -> Result<(), Failure> {
    // Without ids, a status must be named: a bare `resend` requeueing every
    // failed batch surprised people.
    let status = args.all_failed.then_some(BatchStatus::Failed.as_str());
    if args.batch_ids.is_empty() && status.is_none() && args.filter.status.is_none() {
        return Err(Failure::Usage(
            "resend needs batch ids, or a selection: --status failed (or --all-failed), \
             with --route, --source, --since, --until to narrow it"
                .to_owned(),
        ));
    }
    let mut request = ops::ResendRequest {
        ids: args.batch_ids.clone(),
        filter: args.filter.to_filter(status, 1_000_000)?,
        force: args.force,
        dry_run: args.dry_run,
    };
    let store = open(path).await?;
    if !args.dry_run && !args.yes && std::io::stdin().is_terminal() {
        // A person at a terminal sees how many before anything changes.
        let preview = ops::resend(
            &store,
            &ops::ResendRequest {
                dry_run: true,
                ..request.clone()
            },
            clock::now_ms(),
        )
        .await
        .map_err(runtime)?;
        if !confirm(&format!(
            "Requeue {} batch(es) of {} matched? [y/N] ",
            preview.requeued.len(),
            preview.matched
        )) {
            store.close().await;
            println!("Nothing was requeued.");
            return Ok(());
        }
        request.ids = preview.requeued;
    }
    let report = ops::resend(&store, &request, clock::now_ms())
        .await
        .map_err(runtime)?;
    store.close().await;
    if report.matched == 0 {
        return Err(Failure::NothingMatched(
            "no batch matched; nothing was requeued".to_owned(),
        ));
    }
    if args.json {
        print_json(&report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// `ldbridge reload`: exit 0 once the daemon applied the file, 1 when it
/// rejected it (or did not answer).
fn reload(path: Option<&std::path::Path>, pid: Option<u32>, timeout: &str) -> Result<(), Failure> {
    let timeout = humantime::parse_duration(timeout).map_err(|_| {
        Failure::Usage(format!(
            "--timeout: `{timeout}` is not a duration such as 10s"
        ))
    })?;
    let store = StoreConfig::load(path)?;
    match crate::reload::request(&store.path, pid, timeout) {
        Ok(answer) => {
            println!("{answer}");
            Ok(())
        }
        Err(why) => Err(Failure::Runtime(anyhow::anyhow!(why))),
    }
}

/// Asks `question` on the terminal; true for an answer starting with y.
fn confirm(question: &str) -> bool {
    use std::io::Write;
    print!("{question}");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok()
        && answer.trim_start().to_ascii_lowercase().starts_with('y')
}

async fn stats(
    path: Option<&std::path::Path>,
    since: Option<&str>,
    until: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let now = clock::now_ms();
    let window = match since {
        None if until.is_some() => {
            return Err(Failure::Usage("--until needs --since".to_owned()));
        }
        None => None,
        Some(since) => {
            let parse = |text: &str| ops::filters::parse_time(text, now).map_err(Failure::Usage);
            Some((parse(since)?, until.map(parse).transpose()?.unwrap_or(now)))
        }
    };
    let store = open(path).await?;
    let stats = ops::stats(&store, now, window).await.map_err(runtime)?;
    store.close().await;
    if json {
        print_json(&stats.json());
    } else {
        print!("{}", stats.text());
    }
    Ok(())
}

async fn purge(
    path: Option<&std::path::Path>,
    older_than: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let retain = match older_than {
        Some(text) => humantime::parse_duration(text).map_err(|_| {
            Failure::Usage(format!(
                "--older-than: `{text}` is not a duration such as 7d"
            ))
        })?,
        None => StoreConfig::load(path)?.retain,
    };
    let cutoff = clock::now_ms() - retain.as_millis() as i64;
    let store = open(path).await?;
    let purged = ops::purge(&store, cutoff).await.map_err(runtime)?;
    store.close().await;
    if json {
        print_json(&ops::purged_json(&purged, cutoff));
    } else if purged.elsewhere {
        println!(
            "Another node is purging now (retention runs on one node at a time); \
             purged {} refusal(s) here.",
            purged.refusals
        );
    } else {
        println!(
            "Purged {} event(s), {} batch(es), {} attempt(s), {} refusal(s) older than {}.",
            purged.events,
            purged.batches,
            purged.attempts,
            purged.refusals,
            clock::format_ms(cutoff)
        );
    }
    Ok(())
}

fn map(
    path: Option<&std::path::Path>,
    source: &str,
    file: Option<&std::path::Path>,
    json: bool,
) -> Result<(), Failure> {
    use crate::ops::preview::{self, PreviewError};
    let config = Config::load(path)?;
    let input = preview::read_input(file).map_err(|error| Failure::Usage(error.to_string()))?;
    match preview::preview(&config, source, &input, clock::now_ms()) {
        Ok(shown) if json => print_json(&shown.json()),
        Ok(shown) => println!("{}", shown.text()),
        Err(error @ (PreviewError::NoSource(_) | PreviewError::Input(_))) => {
            return Err(Failure::Usage(error.to_string()))
        }
        Err(error) => return Err(Failure::Runtime(anyhow::Error::new(error))),
    }
    Ok(())
}

/// `check-config --online`: every destination credential asked for,
/// exit 1 when one is rejected or could not be asked.
async fn check_online(path: Option<&std::path::Path>, json: bool) -> Result<(), Failure> {
    use crate::ops::online;
    let config = Config::load(path)?;
    let http = crate::deliver::HttpClient::new();
    let checks = online::check(&config, &http, config.dispatch.request_timeout).await;
    if json {
        print_json(&online::json(&checks));
    } else {
        print!("{}", online::text(&checks));
    }
    if online::all_good(&checks) {
        Ok(())
    } else {
        Err(Failure::Runtime(anyhow::anyhow!(
            "a credential was rejected, or could not be tested"
        )))
    }
}

/// Loads and checks the config, and says so (on standard error when
/// `quiet`: standard output is for JSON then).
fn check_config(path: Option<&std::path::Path>, quiet: bool) -> Result<(), Failure> {
    let config = Config::load(path)?;
    let origin = path.map_or("built-in defaults".to_owned(), |p| p.display().to_string());
    if config.segment_sources.is_empty() && config.launchdarkly_sources.is_empty() {
        // What `serve` warns at start, said before it is started.
        eprintln!("warning: no sources configured: every ingest request will be answered 401");
    }
    let summary = format!(
        "{origin}: ok ({} Segment source(s), {} LaunchDarkly source(s), database {})",
        config.segment_sources.len(),
        config.launchdarkly_sources.len(),
        config.store.location().describe()
    );
    if quiet {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(())
}

/// Opens the database for an operator command. Secrets are not resolved:
/// an operator's shell may not see the service's credentials.
async fn open(path: Option<&std::path::Path>) -> Result<Store, Failure> {
    let store = StoreConfig::load(path)?;
    if store.is_postgres() {
        return open_location(&store).await;
    }
    match std::fs::metadata(&store.path) {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "permission denied reading {}: operator commands need the service's access to its \
                 database (with the packaged unit, whose state directory only its own user can \
                 read, run them with sudo)",
                store.path.display()
            )));
        }
        Err(_) => {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "no database at {} (has ldbridge serve run with this config?)",
                store.path.display()
            )));
        }
    }
    open_location(&store).await
}

async fn open_location(store: &StoreConfig) -> Result<Store, Failure> {
    let options = StoreOptions {
        synchronous_full: true,
        busy_timeout: store.busy_timeout,
        node: store.node.clone(),
        ..StoreOptions::default()
    };
    let location = store.location();
    Store::open_at(&location, &options).await.map_err(|error| {
        Failure::Runtime(
            anyhow::Error::new(error).context(format!("opening {}", location.describe())),
        )
    })
}

async fn log(path: Option<&std::path::Path>, args: &LogArgs) -> Result<(), Failure> {
    let mut filter = args.filter.to_filter(None, args.limit)?;
    filter.before_id = args.before;
    let store = open(path).await?;
    let batches = ops::log(&store, &filter).await.map_err(runtime)?;
    store.close().await;
    if args.json {
        print_json(&Value::Array(batches.iter().map(ops::batch_json).collect()));
    } else {
        print!("{}", ops::batch_table(&batches));
    }
    Ok(())
}
