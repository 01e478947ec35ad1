//! A worker's hold on the jobs it claimed from a PostgreSQL store shared with other workers:
//! each job's fencing token from the claim until its outcome is written, and the heartbeat
//! that renews their leases and tells how many workers share the run's limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::limiter::Share;
use crate::store::{PendingJob, Store, StoreError};

#[derive(Debug)]
pub struct Claims {
    pub worker: i64,
    pub lease: Duration,
    /// Job → the fencing token it was claimed with, while it is in this worker's hand.
    tokens: Mutex<HashMap<i64, i64>>,
}

impl Claims {
    pub fn new(worker: i64, lease: Duration) -> Self {
        Self {
            worker,
            lease,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Claims up to `limit` jobs of a run, keeping their tokens. A job this worker still
    /// holds whose lease ran out before a heartbeat renewed it may come back: it stays where
    /// it is, under its new token, and is not handed out twice.
    pub async fn claim(
        &self,
        store: &Store,
        run_id: i64,
        limit: usize,
    ) -> Result<Vec<PendingJob>, StoreError> {
        let mut jobs = store
            .claim_jobs(
                run_id,
                self.worker,
                i64::try_from(limit).unwrap_or(i64::MAX),
            )
            .await?;
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        jobs.retain(|job| {
            job.lease
                .is_none_or(|token| tokens.insert(job.id, token).is_none())
        });
        Ok(jobs)
    }

    /// The token of a job whose outcome is being written; it leaves this worker's hand.
    /// `None` when it is no longer there: its outcome must not be recorded.
    pub fn take(&self, job: i64) -> Option<i64> {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job)
    }

    /// How long to wait before looking again for jobs to claim: leases of others that may
    /// expire, rows still being stored.
    pub fn poll(&self) -> Duration {
        (self.lease / 4).clamp(Duration::from_millis(50), Duration::from_secs(2))
    }

    /// Renews this worker's leases every third of a lease, and gives the limiter this
    /// worker's share of the run's limits (one over the live workers), until `done`. A worker
    /// that cannot renew its leases for a whole lease has lost them: it stops starting
    /// requests (`stop`) rather than send jobs another worker may be sending too.
    pub async fn heartbeat(
        self: Arc<Self>,
        store: Store,
        share: Arc<Share>,
        stop: CancellationToken,
        done: CancellationToken,
    ) -> Option<String> {
        let every = self.lease / 3;
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = done.cancelled() => return None,
                () = tokio::time::sleep(every) => {}
            }
            match store.heartbeat(self.worker).await {
                Ok(alive) => {
                    last_ok = tokio::time::Instant::now();
                    share.set(alive);
                }
                Err(e) if last_ok.elapsed() >= self.lease => {
                    stop.cancel();
                    return Some(format!(
                        "this worker could not renew its leases for {} (last error: {e}); its jobs go to the other workers",
                        humantime::format_duration(self.lease)
                    ));
                }
                Err(_) => {}
            }
        }
    }
}
