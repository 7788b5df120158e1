//! Wires the dispatcher to tokio-cron-scheduler: every tick of
//! `dispatch.schedule` calls [`Dispatcher::tick`], which starts a drain of
//! each route not already running; and the hourly retention job, which
//! purges what `store.retain` lets go (`ops::purge`).

use std::sync::Arc;

use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use super::Dispatcher;

/// Starts a scheduler that ticks `dispatcher` on `schedule` (6-field cron,
/// with seconds). Fails if the expression does not parse.
pub async fn start(
    dispatcher: Arc<Dispatcher>,
    schedule: &str,
) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    let job = Job::new_async(schedule, move |_id, _scheduler| {
        let dispatcher = Arc::clone(&dispatcher);
        Box::pin(async move { dispatcher.tick() })
    })?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    Ok(scheduler)
}

/// When the retention job runs: minute 7 of every hour.
pub const RETENTION_SCHEDULE: &str = "0 7 * * * *";

/// Adds the retention job: purges delivered and skipped data older than
/// `store.retain` (read at each run, so a reload applies), in small
/// transactions, then tidies the file. Failed and open data is kept.
pub async fn add_retention(
    scheduler: &JobScheduler,
    store: crate::store::Store,
    config: crate::config::ConfigHandle,
) -> Result<(), JobSchedulerError> {
    let job = Job::new_async(RETENTION_SCHEDULE, move |_id, _scheduler| {
        let (store, config) = (store.clone(), config.clone());
        Box::pin(async move {
            let retain = config.get().store.retain;
            let cutoff = crate::clock::now_ms() - retain.as_millis() as i64;
            match crate::ops::purge(&store, cutoff).await {
                Ok(purged) if purged.elsewhere => {
                    tracing::info!("Retention: another node is purging this hour; skipped here.")
                }
                Ok(purged) => tracing::info!(
                    events = purged.events, batches = purged.batches, attempts = purged.attempts,
                    cutoff = %crate::clock::format_ms(cutoff), "Retention purge done."
                ),
                Err(error) => {
                    tracing::warn!(%error, "Retention purge failed; will retry next hour.")
                }
            }
        })
    })?;
    scheduler.add(job).await?;
    Ok(())
}

/// Adds the minute job that samples each route's oldest undelivered
/// event's age into the per-minute counts (the overview's age chart).
pub async fn add_age_samples(
    scheduler: &JobScheduler,
    store: crate::store::Store,
) -> Result<(), JobSchedulerError> {
    let job = Job::new_async("0 * * * * *", move |_id, _scheduler| {
        let store = store.clone();
        Box::pin(async move {
            let now = crate::clock::now_ms();
            let mut ages = Vec::new();
            for route in crate::domain::Route::ALL {
                match crate::store::delivery_log::oldest_undelivered(&store, route.as_str()).await {
                    Ok(Some(at)) => ages.push((route, (now - at).max(0))),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::debug!(%error, "Sampling the oldest waiting event failed.")
                    }
                }
            }
            if let Err(error) = crate::store::counts::record_oldest(&store, now, &ages).await {
                tracing::debug!(%error, "Recording the oldest waiting event's age failed.");
            }
        })
    })?;
    scheduler.add(job).await?;
    Ok(())
}

/// The interval between the schedule's next two firings (for readiness:
/// "is the scheduler still ticking?"). `None` if it never fires twice.
pub fn period(schedule: &str) -> Option<std::time::Duration> {
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(schedule)
        .ok()?;
    let first = cron.find_next_occurrence(&chrono::Utc::now(), false).ok()?;
    let second = cron.find_next_occurrence(&first, false).ok()?;
    (second - first).to_std().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn period_of_common_schedules() {
        assert_eq!(
            super::period("*/1 * * * * *"),
            Some(std::time::Duration::from_secs(1))
        );
        assert_eq!(
            super::period("*/5 * * * * *"),
            Some(std::time::Duration::from_secs(5))
        );
        assert_eq!(
            super::period("0 * * * * *"),
            Some(std::time::Duration::from_secs(60))
        );
        assert_eq!(super::period("not cron"), None);
    }
}
