//! The aggregate queries behind reports. Everything is summed, counted or ranked in SQL, so a
//! report over a million results reads a few hundred rows, not a million.

use sqlx::QueryBuilder;
use sqlx::Sqlite;

use super::{Store, StoreError};

/// How results are grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    Model,
    Run,
    Tag(String),
}

impl GroupBy {
    /// The SQL expression of the group key over `jobs j` and `runs ru`.
    fn key(&self, builder: &mut QueryBuilder<Sqlite>) {
        match self {
            Self::Model => {
                builder.push("CASE WHEN j.model = '' THEN '(rejected)' ELSE j.model END");
            }
            Self::Run => {
                builder.push("ru.name");
            }
            Self::Tag(name) => {
                builder.push("COALESCE(json_extract(j.tags, ");
                builder.push_bind(format!("$.\"{}\"", name.replace('"', "")));
                builder.push("), '(no tag)')");
            }
        }
    }
}

/// Token sums of one (run, group, model) slice, for pricing. Rows of requests whose total input
/// passes `long_context_above` are kept apart, one slice per distinct total, so that a
/// long-context premium can be applied request by request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenSlice {
    pub run: String,
    pub key: String,
    pub model: String,
    /// Total input of each request in this slice when above the threshold, else 0.
    pub long_total_input: i64,
    pub results: i64,
    pub input_tokens: i64,
    pub cache_write_5m: i64,
    pub cache_write_1h: i64,
    pub cache_read: i64,
    pub output_tokens: i64,
    /// Sum of the costs stored with the results (pico-USD), priced ones only.
    pub stored_cost_pico_usd: i64,
    pub stored_unpriced: i64,
}

/// Job counts and attempts of one (run, group).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GroupCounts {
    pub run: String,
    pub key: String,
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub rejected: i64,
    pub pending: i64,
    /// Attempts over the jobs that were sent at least once.
    pub attempts: i64,
    pub sent_jobs: i64,
    pub output_tokens: i64,
    /// Generation time: latency less TTFT where streamed (ms).
    pub generation_ms: i64,
}

/// One order statistic of a (run, group): the value at 1-based `rank` of `n` sorted values.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RankedValue {
    pub run: String,
    pub key: String,
    pub rank: i64,
    pub n: i64,
    pub value: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyedCount {
    pub run: String,
    pub key: String,
    pub label: Option<String>,
    pub status: Option<i64>,
    pub count: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Failure {
    pub run: String,
    pub job_id: String,
    pub model: String,
    pub line: i64,
    pub state: String,
    pub error: Option<String>,
}

/// Which latency column to rank.
#[derive(Debug, Clone, Copy)]
pub enum Measure {
    Latency,
    Ttft,
}

impl Store {
    fn scoped(
        builder: &mut QueryBuilder<Sqlite>,
        select: &str,
        by: &GroupBy,
        from: &str,
        runs: &[i64],
    ) {
        builder.push("SELECT ru.name AS run, ");
        by.key(builder);
        builder.push(" AS key, ");
        builder.push(select);
        builder.push(" FROM ");
        builder.push(from);
        builder.push(" JOIN runs ru ON ru.id = j.run_id WHERE j.run_id IN (");
        let mut ids = builder.separated(", ");
        for id in runs {
            ids.push_bind(*id);
        }
        builder.push(")");
    }

    pub async fn report_slices(
        &self,
        runs: &[i64],
        by: &GroupBy,
        long_context_above: i64,
    ) -> Result<Vec<TokenSlice>, StoreError> {
        let mut b = QueryBuilder::new("");
        b.push("WITH s AS (");
        Self::scoped(
            &mut b,
            "j.model AS model, r.*, (r.input_tokens + r.cache_creation_input_tokens + r.cache_read_input_tokens) AS total_input",
            by,
            "results r JOIN jobs j ON j.id = r.job",
            runs,
        );
        b.push(") SELECT run, key, model, CASE WHEN total_input > ");
        b.push_bind(long_context_above);
        b.push(
            " THEN total_input ELSE 0 END AS long_total_input,
              COUNT(*) AS results,
              SUM(input_tokens) AS input_tokens,
              SUM(cache_write_5m_tokens) AS cache_write_5m,
              SUM(cache_write_1h_tokens) AS cache_write_1h,
              SUM(cache_read_input_tokens) AS cache_read,
              SUM(output_tokens) AS output_tokens,
              COALESCE(SUM(cost_pico_usd), 0) AS stored_cost_pico_usd,
              SUM(cost_pico_usd IS NULL) AS stored_unpriced
             FROM s GROUP BY run, key, model, long_total_input ORDER BY run, key, model",
        );
        Ok(b.build_query_as().fetch_all(&self.pool).await?)
    }

    pub async fn report_counts(
        &self,
        runs: &[i64],
        by: &GroupBy,
    ) -> Result<Vec<GroupCounts>, StoreError> {
        let mut b = QueryBuilder::new("");
        Self::scoped(
            &mut b,
            "COUNT(*) AS total,
             SUM(j.state = 'succeeded') AS succeeded,
             SUM(j.state = 'failed') AS failed,
             SUM(j.state = 'rejected') AS rejected,
             SUM(j.state = 'pending') AS pending,
             SUM(j.attempts) AS attempts,
             SUM(j.attempts > 0) AS sent_jobs,
             COALESCE(SUM(r.output_tokens), 0) AS output_tokens,
             COALESCE(SUM(r.latency_ms - COALESCE(r.ttft_ms, 0)), 0) AS generation_ms",
            by,
            "jobs j LEFT JOIN results r ON r.job = j.id",
            runs,
        );
        b.push(" GROUP BY run, key ORDER BY run, key");
        Ok(b.build_query_as().fetch_all(&self.pool).await?)
    }

    /// The values at the nearest ranks `ceil(p/100 · n)` for each `p` in `percentiles`, and the
    /// maximum, per (run, group). SQL sorts; only those rows come back.
    pub async fn report_ranks(
        &self,
        runs: &[i64],
        by: &GroupBy,
        measure: Measure,
        percentiles: &[i64],
    ) -> Result<Vec<RankedValue>, StoreError> {
        let column = match measure {
            Measure::Latency => "r.latency_ms",
            Measure::Ttft => "r.ttft_ms",
        };
        let mut b = QueryBuilder::new("WITH v AS (");
        Self::scoped(
            &mut b,
            &format!("{column} AS value"),
            by,
            "results r JOIN jobs j ON j.id = r.job",
            runs,
        );
        b.push(format!(
            " AND {column} IS NOT NULL), ranked AS (
            SELECT run, key, value,
                   ROW_NUMBER() OVER (PARTITION BY run, key ORDER BY value) AS rank,
                   COUNT(*) OVER (PARTITION BY run, key) AS n
            FROM v)
            SELECT run, key, rank, n, value FROM ranked WHERE rank = n"
        ));
        for p in percentiles {
            // Nearest rank: ceil(p · n / 100) in integers.
            b.push(format!(" OR rank = ({p} * n + 99) / 100"));
        }
        b.push(" ORDER BY run, key, rank");
        Ok(b.build_query_as().fetch_all(&self.pool).await?)
    }

    /// Failed attempts per (run, group, error type, HTTP status).
    pub async fn report_errors(
        &self,
        runs: &[i64],
        by: &GroupBy,
    ) -> Result<Vec<KeyedCount>, StoreError> {
        let mut b = QueryBuilder::new("");
        Self::scoped(
            &mut b,
            "a.error_type AS label, a.http_status AS status, COUNT(*) AS count",
            by,
            "attempts a JOIN jobs j ON j.id = a.job",
            runs,
        );
        // Grouped by the columns, not the aliases: `status` would name runs.status.
        b.push(
            " AND a.error_type IS NOT NULL GROUP BY run, key, a.error_type, a.http_status
              ORDER BY run, key, count DESC",
        );
        Ok(b.build_query_as().fetch_all(&self.pool).await?)
    }

    pub async fn report_stop_reasons(
        &self,
        runs: &[i64],
        by: &GroupBy,
    ) -> Result<Vec<KeyedCount>, StoreError> {
        let mut b = QueryBuilder::new("");
        Self::scoped(
            &mut b,
            "r.stop_reason AS label, NULL AS status, COUNT(*) AS count",
            by,
            "results r JOIN jobs j ON j.id = r.job",
            runs,
        );
        b.push(" GROUP BY run, key, r.stop_reason ORDER BY run, key, count DESC");
        Ok(b.build_query_as().fetch_all(&self.pool).await?)
    }

    /// A histogram of latency per (run, group) in bins `bucket_ms` wide.
    pub async fn report_latency_histogram(
        &self,
        runs: &[i64],
        by: &GroupBy,
        bucket_ms: i64,
    ) -> Result<Vec<KeyedCount>, StoreError> {
        let mut b = QueryBuilder::new("");
        let bucket = format!("r.latency_ms / {}", bucket_ms.max(1));
        // `status` carries the bucket index.
        Self::scoped(
            &mut b,
            &format!("NULL AS label, {bucket} AS status, COUNT(*) AS count"),
            by,
            "results r JOIN jobs j ON j.id = r.job",
            runs,
        );
        b.push(format!(
            " GROUP BY run, key, {bucket} ORDER BY run, key, {bucket}"
        ));
        Ok(b.build_query_as().fetch_all(&self.pool).await?)
    }

    /// Every job that did not succeed, for reading the failures.
    pub async fn report_failures(&self, runs: &[i64]) -> Result<Vec<Failure>, StoreError> {
        let mut b = QueryBuilder::new(
            "SELECT ru.name AS run, j.job_id, j.model, j.line, j.state, j.error
             FROM jobs j JOIN runs ru ON ru.id = j.run_id
             WHERE j.state IN ('failed', 'rejected') AND j.run_id IN (",
        );
        let mut ids = b.separated(", ");
        for id in runs {
            ids.push_bind(*id);
        }
        b.push(") ORDER BY j.run_id, j.id");
        Ok(b.build_query_as().fetch_all(&self.pool).await?)
    }
}
