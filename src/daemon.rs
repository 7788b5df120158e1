//! `ldbridge serve`: opening the store, starting ingest, the writer and the
//! scheduler, and stopping them in order.
//!
//! The only module that spawns long-lived tasks. Start-up order: database
//! (migrated, crashed `sending` batches made due) → writer → dispatcher and
//! scheduler → listener. Shutdown order: stop accepting and finish
//! in-flight requests (each answered only after its commit) → stop the
//! scheduler and let running dispatches finish within the deadline (an
//! abandoned batch stays `sending` and is due again at the next start) →
//! drain the writer → close the database.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
    sync::watch,
    task::JoinHandle,
};
use tokio_cron_scheduler::JobScheduler;

use crate::{
    admin::Admin,
    clock::{self, Clock},
    config::{Config, ConfigHandle, Synchronous},
    dispatch::{schedule, Dispatcher},
    domain::DeliveryStatus,
    ingest::Ingest,
    logging::LogControl,
    metrics::Metrics,
    notify::Notifier,
    space::{self, Space},
    store::{self, writer::Writer, Store, StoreOptions},
};

/// A running daemon.
pub struct App {
    pub ingest_addr: SocketAddr,
    /// Where the admin API listens, when `server.admin_listen` is set.
    pub admin_addr: Option<SocketAddr>,
    pub store: Store,
    pub dispatcher: Arc<Dispatcher>,
    pub config: ConfigHandle,
    pub metrics: Arc<Metrics>,
    pub writer: Writer,
    /// Room on the database's file system (the ingest watermark, the reserve).
    pub space: Arc<Space>,
    /// The config the daemon started with: restart-only settings are
    /// compared with it on reload.
    started: Arc<Config>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<bool>>,
    writer_task: JoinHandle<()>,
    scheduler: JobScheduler,
    shutdown_timeout: Duration,
    /// Readiness and the watchdog allow this long between scheduler ticks.
    pub tick_allowance: Duration,
}

/// Opens the database named by `config` with its durability settings.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let options = StoreOptions {
        synchronous_full: config.store.synchronous == Synchronous::Full,
        busy_timeout: config.store.busy_timeout,
        ingest_cap_bytes: config.store.max_database_bytes,
        refusal_log_rows: config.store.refusal_log_max_rows,
        node: config.store.node.clone(),
    };
    let location = config.store.location();
    Store::open_at(&location, &options)
        .await
        .with_context(|| format!("opening database {}", location.describe()))
}

/// Raises the soft open-files limit to the hard one (systemd's default soft
/// limit is 1024), so `server.max_connections`, not EMFILE, is what bounds
/// connections; warns when even the hard limit is too low.
fn raise_open_files_limit(max_connections: usize) {
    // Two listeners (ingest, admin) plus the database, its WAL, the outbound
    // pool and the log.
    let wanted = 2 * max_connections as u64 + 64;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            max_connections,
            "The open-files limit is below what server.max_connections needs; raise LimitNOFILE."
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "Could not raise the open-files limit."),
    }
}

/// Every other tick may be missed before the scheduler counts as stuck.
fn tick_allowance(schedule: &str) -> Duration {
    schedule::period(schedule).map_or(Duration::from_secs(3600), |period| {
        period * 2 + Duration::from_secs(5)
    })
}

/// Starts every part of the daemon, serving ingest on `listener` and the
/// admin API on `server.admin_listen` (bound here; port 0 works).
pub async fn start(config: Config, listener: TcpListener) -> anyhow::Result<App> {
    start_with_clock(config, listener, Clock::system()).await
}

/// [`start`], with delivery reading the time from `clock` (tests move a
/// manual one instead of sleeping through retry delays).
///
/// Long on purpose: the start order (store, room, writer, dispatcher,
/// scheduler, background tasks, admin, ingest) is read whole; shutdown
/// undoes it in reverse.
pub async fn start_with_clock(
    config: Config,
    listener: TcpListener,
    clock: Clock,
) -> anyhow::Result<App> {
    raise_open_files_limit(config.server.max_connections);
    let store = open_and_recover(&config).await?;
    // On PostgreSQL there is no local database file to keep room for.
    let space = Arc::new(if config.store.is_postgres() {
        Space::new(&config.store.path, 0, 0)
    } else {
        Space::new(
            &config.store.path,
            config.store.min_free_bytes,
            config.store.reserve_bytes,
        )
    });
    for change in space.check() {
        report_room(change);
    }
    let metrics = Arc::new(Metrics::new());
    let (writer, writer_task) = start_writer(&store, &config, &metrics).await?;
    let shutdown_timeout = config.server.shutdown_timeout;
    let limits = crate::server::Limits::from_config(&config.server);
    let tick_allowance = tick_allowance(&config.dispatch.schedule);
    let schedule_text = config.dispatch.schedule.clone();
    let admin_listen = config.server.admin_listen;
    let started = Arc::new(config.clone());
    let handle = ConfigHandle::new(config);
    let dispatcher = Dispatcher::new(store.clone(), handle.clone(), Arc::clone(&metrics), clock);
    let scheduler = schedule::start(Arc::clone(&dispatcher), &schedule_text)
        .await
        .context("starting the dispatch scheduler")?;
    schedule::add_retention(&scheduler, store.clone(), handle.clone())
        .await
        .context("starting the retention job")?;
    schedule::add_age_samples(&scheduler, store.clone())
        .await
        .context("starting the age sampling job")?;
    let (stop, stopped) = watch::channel(false);
    let mut servers = Vec::new();
    tokio::spawn(checkpoints(store.clone(), writer.clone(), stopped.clone()));
    tokio::spawn(watch_room(
        Arc::clone(&space),
        store.clone(),
        handle.clone(),
        stopped.clone(),
    ));
    let admin_addr = match admin_listen {
        Some(address) => {
            let admin = Admin {
                store: store.clone(),
                config: handle.clone(),
                metrics: Arc::clone(&metrics),
                dispatcher: Arc::clone(&dispatcher),
                writer: writer.clone(),
                tick_allowance,
                space: Arc::clone(&space),
                ui: Default::default(),
            };
            let (admin_addr, server) = serve_admin(address, admin, stopped.clone(), limits).await?;
            servers.push(server);
            Some(admin_addr)
        }
        None => None,
    };
    let ingest = Ingest::new(
        handle.clone(),
        writer.clone(),
        Arc::clone(&metrics),
        Arc::clone(&space),
    );
    let ingest_addr = listener.local_addr()?;
    servers.push(tokio::spawn(crate::server::serve(
        listener,
        move |request| Arc::clone(&ingest).handle(request),
        stopped,
        limits,
    )));
    let admin_text = admin_addr.map_or("disabled".to_owned(), |a| a.to_string());
    tracing::info!(listen = %ingest_addr, admin = %admin_text, "ldbridge is ready.");
    Ok(App {
        ingest_addr,
        admin_addr,
        store,
        dispatcher,
        config: handle,
        metrics,
        writer,
        space,
        started,
        stop,
        servers,
        writer_task,
        scheduler,
        shutdown_timeout,
        tick_allowance,
    })
}

/// Opens the store and makes batches a stop interrupted mid-send due again.
async fn open_and_recover(config: &Config) -> anyhow::Result<Store> {
    let store = open_store(config).await?;
    let recovered = store::batches::recover_sending(&store, clock::now_ms()).await?;
    if recovered > 0 {
        tracing::warn!(
            batches = recovered,
            "Batches interrupted mid-send by the last stop are due again."
        );
    }
    if config.segment_sources.is_empty() && config.launchdarkly_sources.is_empty() {
        tracing::warn!("No sources configured: every ingest request will be answered 401.");
    }
    Ok(store)
}

/// The ingest writer, reporting each commit to `metrics`.
async fn start_writer(
    store: &Store,
    config: &Config,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Writer, JoinHandle<()>)> {
    let metrics = Arc::clone(metrics);
    let started = Writer::start(store, config.dispatch.writer_queue, move |stats| {
        metrics.commit(
            stats.duration.as_secs_f64(),
            stats.events as u64,
            stats.requests as u64,
            stats.ok,
        );
        metrics.refusals_unrecorded("evicted", stats.refusals_evicted);
    })
    .await?;
    Ok(started)
}

/// Binds `server.admin_listen` and serves the admin API there until `stopped`.
async fn serve_admin(
    address: SocketAddr,
    admin: Admin,
    stopped: watch::Receiver<bool>,
    limits: crate::server::Limits,
) -> anyhow::Result<(SocketAddr, JoinHandle<bool>)> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding server.admin_listen {address}"))?;
    let bound = listener.local_addr()?;
    let admin = Arc::new(admin);
    let server = tokio::spawn(crate::server::serve(
        listener,
        move |request| Arc::clone(&admin).handle(request),
        stopped,
        limits,
    ));
    Ok((bound, server))
}

/// Checkpoints the WAL every `CHECKPOINT_EVERY` until shutdown (no
/// connection checkpoints inside its own commits), and truncates it once
/// ingest has been idle.
async fn checkpoints(store: Store, writer: Writer, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
            _ = crate::server::stop_requested(&mut stopped) => return,
        }
        if let Err(error) = store.checkpoint().await {
            tracing::debug!(%error, "WAL checkpoint failed; retrying shortly.");
            continue;
        }
        // A WAL grown by a burst keeps its size (SQLite reuses it from the
        // start); once ingest has been quiet a while, give the space back.
        let idle = clock::now_ms() - writer.last_commit_ms() >= WAL_TRUNCATE_IDLE_MS;
        if idle && store.wal_bytes() > WAL_KEEP_BYTES {
            match store.truncate_wal().await {
                Ok(()) => tracing::debug!("WAL truncated while ingest was idle."),
                Err(error) => tracing::debug!(%error, "WAL truncation failed; retrying later."),
            }
        }
    }
}

/// Looks at the room on the database's file system every
/// [`space::CHECK_EVERY`] until shutdown, logging each change once. When
/// ingest stops for lack of room, retention runs at once: delivered events
/// older than `store.retain` are what can be freed.
async fn watch_room(
    space: Arc<Space>,
    store: Store,
    config: ConfigHandle,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(space::CHECK_EVERY) => {}
            _ = crate::server::stop_requested(&mut stopped) => return,
        }
        // Writing the reserve back takes a moment: off the async threads.
        let looking = Arc::clone(&space);
        let Ok(changes) = tokio::task::spawn_blocking(move || looking.check()).await else {
            continue;
        };
        for change in changes {
            report_room(change);
            if matches!(change, space::Change::IngestStopped { .. }) {
                tokio::spawn(purge_for_room(store.clone(), config.clone()));
            }
        }
    }
}

/// Retention, run because ingest stopped for room; logs what it freed.
async fn purge_for_room(store: Store, config: ConfigHandle) {
    let cutoff = clock::now_ms() - config.get().store.retain.as_millis() as i64;
    let free_before = space::free_bytes(&config.get().store.path).unwrap_or(0);
    match crate::ops::purge(&store, cutoff).await {
        Ok(purged) => {
            let free_after = space::free_bytes(&config.get().store.path).unwrap_or(0);
            tracing::info!(
                events = purged.events, batches = purged.batches, attempts = purged.attempts,
                freed_bytes = free_after.saturating_sub(free_before),
                cutoff = %clock::format_ms(cutoff),
                "Retention purge for room done (delivered events older than store.retain)."
            );
        }
        Err(error) => tracing::warn!(%error, "Retention purge for room failed."),
    }
}

/// One log line per change of room: said once, not per request.
fn report_room(change: space::Change) {
    match change {
        space::Change::IngestStopped { free } => tracing::warn!(
            free_bytes = free,
            "Disk full: ingest refused (503) until free space is back above store.min_free_bytes; delivery goes on."
        ),
        space::Change::IngestResumed { free } => {
            tracing::info!(free_bytes = free, "Disk space is back: ingest resumed.")
        }
        space::Change::ReserveReleased { free } => tracing::warn!(
            free_bytes = free,
            "Free space below half of store.min_free_bytes: the reserve file was released to keep delivery going."
        ),
        space::Change::ReserveRestored { free } => {
            tracing::info!(free_bytes = free, "Reserve file written (store.reserve_bytes).")
        }
    }
}

/// How often the WAL is checkpointed (PASSIVE). Often, so each checkpoint's
/// fsync of the database file is small: a large one delays the fsync of an
/// ingest commit that lands at the same time.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// The WAL may stay this large without being truncated.
const WAL_KEEP_BYTES: u64 = 64 * 1024 * 1024;
/// How long ingest must have been quiet before the WAL is truncated.
const WAL_TRUNCATE_IDLE_MS: i64 = 2_000;

impl App {
    /// Stops in order (see the module doc), each step within the shutdown
    /// deadline. Errors only if a step could not finish cleanly.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        tracing::info!("Shutting down.");
        let _ = self.stop.send(true);
        let _ = self.scheduler.shutdown().await;
        self.dispatcher.stop();
        for server in self.servers.drain(..) {
            if !server.await.unwrap_or(false) {
                tracing::warn!(
                    "Some connections were still open at the shutdown deadline and were closed."
                );
            }
        }
        if !self.dispatcher.wait_idle(self.shutdown_timeout).await {
            tracing::warn!("A dispatch run was still going at the deadline; its batches will be resent after restart.");
        }
        // The writer ends once every handle is gone and its queue is drained.
        drop(self.writer);
        if tokio::time::timeout(self.shutdown_timeout, &mut self.writer_task)
            .await
            .is_err()
        {
            tracing::warn!("The ingest writer did not finish in time.");
            self.writer_task.abort();
        }
        self.store.close().await;
        tracing::info!("Stopped.");
        Ok(())
    }
}

/// `ldbridge serve`: runs until SIGTERM or SIGINT, then shuts down.
/// Speaks sd_notify (READY, WATCHDOG, STATUS, STOPPING) when systemd asks,
/// and reloads `config_path` on SIGHUP.
///
/// Long on purpose: the signal loop (SIGTERM, SIGINT, SIGHUP, the
/// watchdog) reads best as one `select!`.
pub async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    log: Option<LogControl>,
) -> anyhow::Result<()> {
    if let Some(log) = &log {
        log.apply(config.server.log_filter.as_deref());
    }
    // Handlers first: a signal during start-up is then held until the loop
    // below, instead of taking its default action (SIGHUP would kill us).
    let mut hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding server.listen {}", config.server.listen))?;
    let notifier = Arc::new(Notifier::from_env());
    // Opening the database applies pending migrations, which on a large
    // database can outlast systemd's start timeout (90 s by default): keep
    // extending it while start-up runs, so a long migration is not killed
    // (and rolled back) halfway.
    const STARTING: &str =
        "EXTEND_TIMEOUT_USEC=30000000\nSTATUS=Starting: opening (and migrating) the database";
    let extender = notifier.enabled().then(|| {
        notifier.notify(STARTING);
        let notifier = Arc::clone(&notifier);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                notifier.notify(STARTING);
            }
        })
    });
    let started = start(config, listener).await;
    if let Some(extender) = extender {
        extender.abort();
    }
    let app = started?;
    // Migrated, recovered, listening: only now is the service ready.
    notifier.notify("READY=1\nSTATUS=Serving");
    // `ldbridge reload` finds the daemon, and its answers, here.
    let mut generation = 0;
    report_reload(&app, generation, true, "started".to_owned());
    let (stop_watchdog, watchdog_stopped) = watch::channel(false);
    let watchdog = tokio::spawn(watchdog(
        Arc::clone(&notifier),
        app.probe(),
        watchdog_stopped,
    ));
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                generation += 1;
                let (ok, message) = match reload(&app, config_path.as_deref(), log.as_ref()) {
                    Ok(changed) => (true, changed),
                    Err(error) => (false, error),
                };
                report_reload(&app, generation, ok, message);
            }
        }
    }
    notifier.notify("STOPPING=1\nSTATUS=Stopping");
    let _ = stop_watchdog.send(true);
    let _ = watchdog.await;
    app.shutdown().await
}

/// Writes the reload status file (see `crate::reload`); a failure is only
/// logged: reloading works without it, `ldbridge reload` does not.
fn report_reload(app: &App, generation: u64, ok: bool, message: String) {
    let status = crate::reload::Status {
        pid: std::process::id(),
        generation,
        ok,
        message,
    };
    let database = &app.started.store.path;
    if let Err(error) = crate::reload::write(database, &status) {
        tracing::warn!(%error, "Could not write the reload status file; `ldbridge reload` cannot wait for answers.");
    }
}

/// What the watchdog checks, detached from `App` so it can run beside it.
#[derive(Clone)]
struct Probe {
    writer: Writer,
    dispatcher: Arc<Dispatcher>,
    store: Store,
    space: Arc<Space>,
    tick_allowance: Duration,
}

impl App {
    fn probe(&self) -> Probe {
        Probe {
            writer: self.writer.clone(),
            dispatcher: Arc::clone(&self.dispatcher),
            store: self.store.clone(),
            space: Arc::clone(&self.space),
            tick_allowance: self.tick_allowance,
        }
    }
}

/// Every half watchdog period (or every 10 s, for STATUS only): pets the
/// watchdog only when the writer commits a transaction and the scheduler has
/// ticked recently, so a wedged daemon is restarted, not kept alive by a
/// bare timer. STATUS carries the queue depth.
async fn watchdog(notifier: Arc<Notifier>, probe: Probe, mut stopped: watch::Receiver<bool>) {
    if !notifier.enabled() {
        return;
    }
    let watchdog = crate::notify::watchdog_interval();
    let interval = watchdog.unwrap_or(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = crate::server::stop_requested(&mut stopped) => return,
        }
        let writer_ok = matches!(
            tokio::time::timeout(interval, probe.writer.ping()).await,
            Ok(Ok(()))
        );
        let since_tick = probe.dispatcher.since_last_tick(clock::now_ms());
        let ticking = since_tick <= probe.tick_allowance.as_millis() as i64;
        let status = status_line(&probe.store, &probe.space).await;
        match (watchdog.is_some(), writer_ok && ticking) {
            (true, true) => notifier.notify(&format!("WATCHDOG=1\nSTATUS={status}")),
            (false, _) => notifier.notify(&format!("STATUS={status}")),
            (true, false) => tracing::warn!(
                writer_ok,
                since_tick_ms = since_tick,
                "Health check failed; not petting the systemd watchdog."
            ),
        }
    }
}

/// `Serving; 12 waiting, 0 failed` (open deliveries, all routes), or
/// `Disk full: ingest refused; …` while there is no room.
async fn status_line(store: &Store, space: &Space) -> String {
    let state = if space.ingest_refused() {
        "Disk full: ingest refused"
    } else {
        "Serving"
    };
    match store::delivery_log::open_deliveries(store).await {
        Ok(counts) => {
            let sum = |status: DeliveryStatus| {
                counts
                    .iter()
                    .filter(|(_, s, _)| *s == status)
                    .map(|(_, _, n)| n)
                    .sum::<i64>()
            };
            format!(
                "{state}; {} waiting, {} failed",
                sum(DeliveryStatus::Pending) + sum(DeliveryStatus::Batched),
                sum(DeliveryStatus::Failed)
            )
        }
        Err(_) => format!("{state}; queue depth unavailable"),
    }
}

/// SIGHUP: re-reads the config. Sources and their credentials, dispatch
/// settings (batch limits, retry schedule, give-up, in-flight, request
/// timeout), retention and the log filter apply at once; listeners, the
/// store, the schedule and the writer queue keep their start-up values (a
/// warning names any that changed). An invalid file changes nothing.
fn reload(app: &App, path: Option<&Path>, log: Option<&LogControl>) -> Result<String, String> {
    let fresh = match Config::load(path) {
        Ok(fresh) => fresh,
        Err(error) => {
            tracing::error!(%error, "Config reload failed; the running config is unchanged.");
            return Err(format!(
                "rejected, the running config is unchanged: {error}"
            ));
        }
    };
    let running = app.config.get();
    let restart_needed = crate::config::diff::restart_only(&app.started, &fresh);
    if !restart_needed.is_empty() {
        tracing::warn!(keys = %restart_needed.join(", "), "Changed settings that take effect only after a restart.");
    }
    let applied = crate::config::diff::applied(&running, &fresh);
    if let Some(log) = log {
        log.apply(fresh.server.log_filter.as_deref());
    }
    let sources = fresh.segment_sources.len() + fresh.launchdarkly_sources.len();
    app.config.replace(fresh);
    let changed = if applied.is_empty() {
        "nothing".to_owned()
    } else {
        applied.join("; ")
    };
    tracing::info!(sources, %changed, "Config reloaded.");
    let mut answer = format!("reloaded; changed: {changed}");
    if !restart_needed.is_empty() {
        answer.push_str(&format!(
            "; take effect only after a restart: {}",
            restart_needed.join(", ")
        ));
    }
    Ok(answer)
}
