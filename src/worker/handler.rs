//! The seam between the runtime and the sync code: [`JobHandler`].
//!
//! The worker claims a job, then hands it to a handler with a [`JobContext`].
//! The handler succeeds only by returning the [`Done`] a fenced completion
//! gives ([`Job::complete_in`] inside its last transaction, or
//! [`Job::complete`]); any [`JobError`] goes to the queue, whose variant
//! decides between retry, snooze and dead.
//!
//! [`SyncJobs`] is the production handler. It dispatches on the job's kind;
//! each arm is one line into its sync module.

use std::future::Future;
use std::sync::Arc;

pub use crate::queue::JobContext;
use crate::queue::{Done, Job, JobError, JobKind};
use crate::sync::SyncDeps;

/// Runs claimed jobs. Implementations hold their own dependencies (Google
/// client, settings); tests plug in their own handlers.
pub trait JobHandler: Send + Sync + 'static {
    fn run(
        &self,
        ctx: &JobContext,
        job: &Job,
    ) -> impl Future<Output = Result<Done, JobError>> + Send;
}

/// The production handler: one arm per job kind.
#[derive(Debug, Clone)]
pub struct SyncJobs {
    pub deps: Arc<SyncDeps>,
}

impl SyncJobs {
    pub fn new(deps: SyncDeps) -> Self {
        SyncJobs {
            deps: Arc::new(deps),
        }
    }
}

impl JobHandler for SyncJobs {
    async fn run(&self, ctx: &JobContext, job: &Job) -> Result<Done, JobError> {
        match job.kind {
            JobKind::Pull | JobKind::FullResync => {
                crate::sync::pull::run(&self.deps, ctx, job).await
            }
            JobKind::Push => crate::sync::push::run(&self.deps, ctx, job).await,
            JobKind::Watch => crate::sync::watch::run(&self.deps, ctx, job).await,
        }
    }
}
