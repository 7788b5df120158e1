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

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_cron_scheduler::JobScheduler;

use crate::{
    admin::Admin,
    clock,
    config::{Config, ConfigHandle, Synchronous},
    dispatch::{schedule, Dispatcher},
    ingest::Ingest,
    metrics::Metrics,
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
    };
    Store::open(&config.store.path, &options)
        .await
        .with_context(|| format!("opening database {}", config.store.path.display()))
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
    let store = open_store(&config).await?;
    let recovered = store::dispatch::recover_sending(&store, clock::now_ms()).await?;
    if recovered > 0 {
        tracing::warn!(
            batches = recovered,
            "Batches interrupted mid-send by the last stop are due again."
        );
    }
    if config.segment_sources.is_empty() && config.launchdarkly_sources.is_empty() {
        tracing::warn!("No sources configured: every ingest request will be answered 401.");
    }
    let metrics = Arc::new(Metrics::new());
    let commit_metrics = Arc::clone(&metrics);
    let (writer, writer_task) = Writer::start(&store, config.dispatch.writer_queue, move |stats| {
        commit_metrics.commit(
            stats.duration.as_secs_f64(),
            stats.events as u64,
            stats.requests as u64,
            stats.ok,
        );
    })
    .await?;
    let shutdown_timeout = config.server.shutdown_timeout;
    let tick_allowance = tick_allowance(&config.dispatch.schedule);
    let schedule_text = config.dispatch.schedule.clone();
    let admin_listen = config.server.admin_listen;
    let handle = ConfigHandle::new(config);
    let dispatcher = Dispatcher::new(store.clone(), handle.clone(), Arc::clone(&metrics));
    let scheduler = schedule::start(Arc::clone(&dispatcher), &schedule_text)
        .await
        .context("starting the dispatch scheduler")?;
    schedule::add_retention(&scheduler, store.clone(), handle.clone())
        .await
        .context("starting the retention job")?;
    let (stop, stopped) = watch::channel(false);
    let mut servers = Vec::new();
    let admin_addr = match admin_listen {
        Some(address) => {
            let admin_listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("binding server.admin_listen {address}"))?;
            let admin_addr = admin_listener.local_addr()?;
            let admin = Arc::new(Admin {
                store: store.clone(),
                config: handle.clone(),
                metrics: Arc::clone(&metrics),
                dispatcher: Arc::clone(&dispatcher),
                tick_allowance,
            });
            servers.push(tokio::spawn(crate::server::serve(
                admin_listener,
                move |request| Arc::clone(&admin).handle(request),
                stopped.clone(),
                shutdown_timeout,
            )));
            Some(admin_addr)
        }
        None => None,
    };
    let ingest = Ingest::new(handle.clone(), writer.clone(), Arc::clone(&metrics));
    let ingest_addr = listener.local_addr()?;
    servers.push(tokio::spawn(crate::server::serve(
        listener,
        move |request| Arc::clone(&ingest).handle(request),
        stopped,
        shutdown_timeout,
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
        stop,
        servers,
        writer_task,
        scheduler,
        shutdown_timeout,
        tick_allowance,
    })
}

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
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding server.listen {}", config.server.listen))?;
    let app = start(config, listener).await?;
    shutdown_signal().await;
    app.shutdown().await
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "Cannot listen for SIGTERM; only Ctrl-C will stop ldbridge.");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
