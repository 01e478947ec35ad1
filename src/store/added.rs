//! What the jobs an insert adds make of their run's tallies on SQLite: counted once per
//! insert, in its transaction, rather than upserted by a trigger once per row (see
//! migrations/0019_run_tallies_per_insert.sql). PostgreSQL counts them with a trigger once
//! per statement (migrations/postgres/0008_run_tallies.sql).

use std::collections::HashMap;

use super::sql::Sql;
use super::{JobState, StoreError, Tx};

/// The jobs of one model added to a run, as `run_tallies` counts them.
#[derive(Debug)]
struct Added {
    model: String,
    jobs: i64,
    pending: i64,
    succeeded: i64,
    failed: i64,
    rejected: i64,
    first_job: i64,
    last_job: i64,
}

/// The jobs an insert of a run's rows adds, by model, counted statement by statement.
#[derive(Debug, Default)]
pub(super) struct AddedJobs {
    models: Vec<Added>,
    /// Where each model is in `models`.
    index: HashMap<String, usize>,
    /// The model last looked up, which the next row nearly always shares.
    last: Option<usize>,
    /// The rows of the statement being written, in order: their model and state.
    statement: Vec<(usize, JobState)>,
}

impl AddedJobs {
    /// A row of the statement being written.
    pub(super) fn row(&mut self, model: &str, state: JobState) {
        let at = match self.last {
            Some(at) if self.models[at].model == model => at,
            _ => {
                let at = match self.index.get(model) {
                    Some(&at) => at,
                    None => {
                        self.models.push(Added {
                            model: model.to_owned(),
                            jobs: 0,
                            pending: 0,
                            succeeded: 0,
                            failed: 0,
                            rejected: 0,
                            first_job: i64::MAX,
                            last_job: i64::MIN,
                        });
                        self.index.insert(model.to_owned(), self.models.len() - 1);
                        self.models.len() - 1
                    }
                };
                self.last = Some(at);
                at
            }
        };
        self.statement.push((at, state));
    }

    /// The statement's rows were written, the last of them as row `last`: SQLite gives each
    /// new row the id after the greatest in the table, so they are the ids up to `last`, in
    /// order, as long as no row has the greatest id there is ([`AddedJobs::write`] makes
    /// sure of that before counting them so).
    pub(super) fn written(&mut self, last: i64) {
        let rows = i64::try_from(self.statement.len()).unwrap_or(i64::MAX);
        let first = last.saturating_sub(rows - 1);
        for (id, (at, state)) in (first..).zip(self.statement.drain(..)) {
            let added = &mut self.models[at];
            added.jobs += 1;
            *match state {
                JobState::Pending => &mut added.pending,
                JobState::Succeeded => &mut added.succeeded,
                JobState::Failed => &mut added.failed,
                JobState::Rejected => &mut added.rejected,
            } += 1;
            added.first_job = added.first_job.min(id);
            added.last_job = added.last_job.max(id);
        }
    }

    /// Adds the jobs to `run_id`'s tallies, in the transaction that wrote them. Once a row
    /// has the greatest id there is, SQLite gives new rows ids at random, which may not be
    /// those counted: the run's tallies are then counted again from its rows.
    pub(super) async fn write(self, tx: &mut Tx, run_id: i64) -> Result<(), StoreError> {
        if self.models.is_empty() {
            return Ok(());
        }
        let (greatest,): (Option<i64>,) = tx.one(Sql::new("SELECT MAX(id) FROM jobs")).await?;
        if greatest == Some(i64::MAX) {
            return recount(tx, run_id).await;
        }
        for added in self.models {
            tx.execute(
                Sql::new(
                    "INSERT INTO run_tallies (run_id, model, jobs, pending, succeeded, failed,
                                              rejected, first_job, last_job)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (run_id, model) DO UPDATE SET
                         jobs = jobs + excluded.jobs,
                         pending = pending + excluded.pending,
                         succeeded = succeeded + excluded.succeeded,
                         failed = failed + excluded.failed,
                         rejected = rejected + excluded.rejected,
                         first_job = min(coalesce(first_job, excluded.first_job),
                                         excluded.first_job),
                         last_job = max(coalesce(last_job, excluded.last_job),
                                        excluded.last_job)",
                )
                .bind(run_id)
                .bind(added.model)
                .bind(added.jobs)
                .bind(added.pending)
                .bind(added.succeeded)
                .bind(added.failed)
                .bind(added.rejected)
                .bind(added.first_job)
                .bind(added.last_job),
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
impl super::Store {
    /// Counts a run's tallies again from its rows: for tests that write jobs as SQL, which
    /// no trigger counts on SQLite.
    pub(crate) async fn recount_tallies(&self, run_id: i64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        recount(&mut tx, run_id).await?;
        tx.commit().await
    }
}

/// Counts a run's tallies again from its rows, as migration 0015 counted every run's.
async fn recount(tx: &mut Tx, run_id: i64) -> Result<(), StoreError> {
    tx.execute(Sql::new("DELETE FROM run_tallies WHERE run_id = $1").bind(run_id))
        .await?;
    tx.execute(
        Sql::new(
            "INSERT INTO run_tallies (run_id, model, jobs, pending, succeeded, failed, rejected,
                                      results, cost_pico_usd, unpriced, input_tokens,
                                      output_tokens, cache_creation_input_tokens,
                                      cache_read_input_tokens, first_job, last_job)
             SELECT j.run_id, j.model, COUNT(*), COUNT(*) FILTER (WHERE j.state = 'pending'),
                    COUNT(*) FILTER (WHERE j.state = 'succeeded'),
                    COUNT(*) FILTER (WHERE j.state = 'failed'),
                    COUNT(*) FILTER (WHERE j.state = 'rejected'), COUNT(r.job),
                    COALESCE(SUM(r.cost_pico_usd >> 32), 0) * 4294967296
                        + COALESCE(SUM(r.cost_pico_usd & 4294967295), 0),
                    COUNT(r.job) - COUNT(r.cost_pico_usd),
                    COALESCE(SUM(r.input_tokens >> 32), 0) * 4294967296
                        + COALESCE(SUM(r.input_tokens & 4294967295), 0),
                    COALESCE(SUM(r.output_tokens >> 32), 0) * 4294967296
                        + COALESCE(SUM(r.output_tokens & 4294967295), 0),
                    COALESCE(SUM(r.cache_creation_input_tokens >> 32), 0) * 4294967296
                        + COALESCE(SUM(r.cache_creation_input_tokens & 4294967295), 0),
                    COALESCE(SUM(r.cache_read_input_tokens >> 32), 0) * 4294967296
                        + COALESCE(SUM(r.cache_read_input_tokens & 4294967295), 0),
                    MIN(j.id), MAX(j.id)
             FROM jobs j LEFT JOIN results r ON r.job = j.id
             WHERE j.run_id = $1
             GROUP BY j.run_id, j.model",
        )
        .bind(run_id)
        .once(),
    )
    .await?;
    Ok(())
}
