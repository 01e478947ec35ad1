//! What a run's failures came to, for the summary that ends a session: the commonest error
//! kinds of its failed jobs and a few of their ids, each a bounded read whatever the number of
//! failures.

use super::sql::Sql;
use super::{Store, StoreError};

/// Failed jobs of a run sharing one final error: its kind (the API's `error.type` or a
/// transport class), the HTTP status it came with, and how many.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FailureKind {
    pub error_type: String,
    pub http_status: Option<i64>,
    pub count: i64,
}

impl Store {
    /// The `limit` commonest final errors of a run's failed jobs, commonest first.
    pub async fn failure_kinds(
        &self,
        run_id: i64,
        limit: i64,
    ) -> Result<Vec<FailureKind>, StoreError> {
        self.all(
            Sql::new(concat!(
                "SELECT COALESCE(a.error_type, 'unknown') AS error_type, a.http_status,
                        COUNT(*) AS count
                 FROM jobs j
                 LEFT JOIN attempts a ON a.id =
                     (SELECT MAX(id) FROM attempts WHERE job = j.id AND ",
                answering!(""),
                ")
                 WHERE j.run_id = $1 AND j.state = 'failed'
                 GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT $2"
            ))
            .bind(run_id)
            .bind(limit),
        )
        .await
    }

    /// The ids of the first `limit` failed jobs of a run, with their model, in input order.
    pub async fn failed_job_ids(
        &self,
        run_id: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.all(
            Sql::new(
                "SELECT job_id, model FROM jobs WHERE run_id = $1 AND state = 'failed'
                 ORDER BY id LIMIT $2",
            )
            .bind(run_id)
            .bind(limit),
        )
        .await
    }
}
