//! Wires the dispatcher to tokio-cron-scheduler: every tick of
//! `dispatch.schedule` calls [`Dispatcher::tick`], which starts a drain of
//! each route not already running. No logic lives here.

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
