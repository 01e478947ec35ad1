//! Each job of a run as a comparison needs it: its outcome, its graders' verdicts, what it
//! cost and took, and the start of its prompt and answer.

use std::borrow::Cow;

use serde::Deserialize as _;

use super::sql::{Dialect, Sql};
use super::{JobSpan, RunShape, Store, StoreError};

/// Characters of a prompt or an answer kept for showing.
pub const EXCERPT_CHARS: i64 = 400;

/// One grader's verdict on a job (`passed` is `None` while a judge is pending).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct GradeView {
    #[serde(skip)]
    pub job: i64,
    pub grader: i64,
    pub kind: String,
    pub passed: Option<bool>,
    pub reason: Option<String>,
}

/// What a comparison counts of one job of a run (one sample of one model): the figures only,
/// read from a chunk of rows' JSON (see [`Store::each_job_score`]), its texts borrowed from it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct JobScore<'a> {
    pub id: i64,
    #[serde(borrow)]
    pub job_id: Cow<'a, str>,
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    /// Which of the job's repeated samples on its model it is, from 0.
    pub sample: i64,
    /// `pending`, `succeeded`, `failed` or `rejected`.
    #[serde(borrow)]
    pub state: Cow<'a, str>,
    #[serde(borrow)]
    pub stop_reason: Option<Cow<'a, str>>,
    pub cost_pico_usd: Option<i64>,
    pub latency_ms: Option<i64>,
    /// The job's tags, as the JSON object stored; only when asked for.
    #[serde(borrow)]
    pub tags: Option<Cow<'a, str>>,
    /// Some grader passed it.
    #[serde(deserialize_with = "flag")]
    pub passed: bool,
    /// Some grader failed it.
    #[serde(deserialize_with = "flag")]
    pub failed: bool,
}

/// One listed job of a run, as a comparison shows it: its figures, the start of its prompt
/// and answer, and its graders' verdicts, read by row id (see [`Store::each_listed_job`]), its
/// texts borrowed from the chunk's JSON.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ListedJob<'a> {
    pub id: i64,
    #[serde(borrow)]
    pub job_id: Cow<'a, str>,
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    /// `pending`, `succeeded`, `failed` or `rejected`.
    #[serde(borrow)]
    pub state: Cow<'a, str>,
    #[serde(borrow)]
    pub error: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub stop_reason: Option<Cow<'a, str>>,
    pub cost_pico_usd: Option<i64>,
    pub latency_ms: Option<i64>,
    pub output_tokens: Option<i64>,
    /// The start of the last user turn's text (its text blocks, joined), at most
    /// [`EXCERPT_CHARS`] characters.
    #[serde(borrow)]
    pub prompt: Option<Cow<'a, str>>,
    /// The start of the answer's first text block, at most [`EXCERPT_CHARS`] characters.
    #[serde(borrow)]
    pub answer: Option<Cow<'a, str>>,
    /// Its graders' verdicts, in grader order.
    #[serde(borrow)]
    pub grades: Vec<ListedGrade<'a>>,
}

/// One grader's verdict on a [`ListedJob`] (`passed` is `None` while a judge is pending).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ListedGrade<'a> {
    pub grader: i64,
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    #[serde(deserialize_with = "optional_flag")]
    pub passed: Option<bool>,
    #[serde(borrow)]
    pub reason: Option<Cow<'a, str>>,
}

/// A flag as either database puts it in JSON: SQLite's 0 or 1, PostgreSQL's `false` or `true`.
fn flag<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    struct Flag;
    impl serde::de::Visitor<'_> for Flag {
        type Value = bool;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a flag: true, false, 1 or 0")
        }

        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<bool, E> {
            Ok(v != 0)
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<bool, E> {
            Ok(v != 0)
        }
    }
    deserializer.deserialize_any(Flag)
}

/// A flag that may be NULL (see [`flag`]).
fn optional_flag<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<bool>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Flag(#[serde(deserialize_with = "flag")] bool);
    Ok(Option::<Flag>::deserialize(deserializer)?.map(|f| f.0))
}

/// Rows of one chunk's JSON, or a decoding error as the store's.
fn rows_of<'a, T: serde::Deserialize<'a>>(json: &'a str) -> Result<Vec<T>, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::from(sqlx::Error::Decode(Box::new(e))))
}

/// Row ids of a run read in one statement by [`Store::each_job_score`].
const SCORE_CHUNK: i64 = 4_096;

/// Statements read ahead of their reader, at most.
const AHEAD: usize = 2;

/// Which rows of a range of a run's row ids a statement of [`Store::each_score_chunk`] reads.
enum ScoreRows {
    /// The range's rows.
    All,
    /// The rows of run `other` of the same job (and model, `by_model`) as a row of the range.
    PartnersIn { other: i64, by_model: bool },
    /// The range's rows whose job (and model, `by_model`) run `other` does not have.
    WithoutPartner { other: i64, by_model: bool },
}

impl ScoreRows {
    fn other(&self) -> Option<i64> {
        match self {
            Self::All => None,
            Self::PartnersIn { other, .. } | Self::WithoutPartner { other, .. } => Some(*other),
        }
    }
}

/// The statement of `read` over the row ids `$2` to `$3` of run `$1` (`$4`: the other run),
/// one JSON array of [`JobScore`]s. A job and model is found in the other run by the index
/// on (run, job, model, sample).
fn score_sql(dialect: Dialect, read: &ScoreRows, with_tags: bool) -> String {
    let postgres = dialect == Dialect::Postgres;
    let tags = if with_tags {
        "j.tags"
    } else {
        "CAST(NULL AS TEXT)"
    };
    let columns = format!(
        "j.id, j.job_id, j.model, j.sample, j.state, r.stop_reason, r.cost_pico_usd, r.latency_ms,
         {tags},
         EXISTS (SELECT 1 FROM grades g WHERE g.job = j.id AND g.passed = TRUE),
         EXISTS (SELECT 1 FROM grades g WHERE g.job = j.id AND g.passed = FALSE)"
    );
    let aggregate = if postgres {
        format!("CAST(json_agg(json_build_array({columns}) ORDER BY j.id) AS TEXT)")
    } else {
        format!("json_group_array(json_array({columns}))")
    };
    // SQLite reads a range of row ids by the table itself, not by an index on the run.
    let range = |alias: &str| {
        if postgres {
            format!("jobs {alias}")
        } else {
            format!("jobs {alias} NOT INDEXED")
        }
    };
    let (range_j, range_k) = (range("j"), range("k"));
    let same_model = |by_model: bool, a: &str, b: &str| {
        if by_model {
            format!(" AND {a}.model = {b}.model")
        } else {
            String::new()
        }
    };
    match read {
        ScoreRows::All => format!(
            "SELECT {aggregate}
             FROM {range_j} LEFT JOIN results r ON r.job = j.id
             WHERE j.id BETWEEN $2 AND $3 AND j.run_id = $1"
        ),
        ScoreRows::PartnersIn { by_model, .. } => {
            let keys = if *by_model { "job_id, model" } else { "job_id" };
            // CROSS JOIN: SQLite takes the tables in the order written, so that each job of
            // the range is looked up in the other run by the index rather than the other
            // run read whole for each range (PostgreSQL is sent a plain JOIN).
            format!(
                "SELECT {aggregate}
                 FROM (SELECT DISTINCT {keys} FROM {range_k}
                       WHERE k.id BETWEEN $2 AND $3 AND k.run_id = $1) k
                 CROSS JOIN jobs j ON j.run_id = $4 AND j.job_id = k.job_id{}
                 LEFT JOIN results r ON r.job = j.id",
                same_model(*by_model, "j", "k")
            )
        }
        ScoreRows::WithoutPartner { by_model, .. } => format!(
            "SELECT {aggregate}
             FROM {range_j} LEFT JOIN results r ON r.job = j.id
             WHERE j.id BETWEEN $2 AND $3 AND j.run_id = $1
               AND NOT EXISTS (SELECT 1 FROM jobs o
                               WHERE o.run_id = $4 AND o.job_id = j.job_id{})",
            same_model(*by_model, "o", "j")
        ),
    }
}

impl Store {
    /// Each row of a run in input order, as [`JobScore`], given to `sink` one at a time; the
    /// tags only `with_tags`. Rows of the same job (its models, their samples) are stored
    /// together, so they come one after another.
    ///
    /// The rows are read a range of row ids at a time, each range as one JSON array made by
    /// the database, on a task of their own a range or two ahead of `sink`: a row handed over
    /// from the database's driver costs more than its figures (200,000 rows one at a time took
    /// about 2 s; in ranges, a few tenths).
    pub async fn each_job_score<E: From<StoreError>>(
        &self,
        run_id: i64,
        with_tags: bool,
        mut sink: impl FnMut(JobScore<'_>) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut count = 0;
        let Some(span) = self.job_span(run_id).await? else {
            return Ok(0);
        };
        self.each_score_chunk::<E>(
            run_id,
            span,
            with_tags,
            &[ScoreRows::All],
            SCORE_CHUNK,
            |chunks| {
                for row in chunks.into_iter().flatten() {
                    sink(row)?;
                    count += 1;
                }
                Ok(())
            },
        )
        .await?;
        Ok(count)
    }

    /// Each row of a run in input order, with its partners in run `other`: a chunk at a time,
    /// `sink` is given the rows of `other` whose job (and model, `by_model`) is that of a row
    /// of the chunk, in row order, then the chunk's rows. A job split between two chunks has
    /// its partners in both. As [`Store::each_job_score`], a range of row ids at a time; what
    /// is held is a chunk and its partners, whatever the size of the runs. Where `other` has
    /// more samples of each job (`other_samples`) than the run (`--repeat 1000` against one),
    /// the chunks are smaller by as much (down to 16 rows), so that the partners of one come
    /// to about [`SCORE_CHUNK`] rows, not a thousand times that.
    pub async fn each_job_score_with_partners<E: From<StoreError>>(
        &self,
        run: &RunShape,
        (other, other_samples): (i64, i64),
        by_model: bool,
        with_tags: bool,
        mut sink: impl FnMut(Vec<JobScore<'_>>, Vec<JobScore<'_>>) -> Result<(), E>,
    ) -> Result<(), E> {
        let reads = [ScoreRows::PartnersIn { other, by_model }, ScoreRows::All];
        // At least 16 rows: sixteen jobs of `--repeat 1000` are 16,000 partners.
        let rows = SCORE_CHUNK
            .saturating_mul(run.samples)
            .checked_div(other_samples.max(1))
            .unwrap_or(SCORE_CHUNK)
            .clamp(16, SCORE_CHUNK);
        // A run with gaps in its row ids (a load resumed after another run's) takes ranges
        // as much wider as it is sparse, up to 16 times: the ranges across a gap are fewer,
        // and no range holds more than 16 times the rows.
        let ids_per_row = (run.span.last - run.span.first + 1) / run.rows.max(1);
        let chunk = rows
            .saturating_mul(ids_per_row.clamp(1, 16))
            .min(SCORE_CHUNK);
        self.each_score_chunk::<E>(run.run, run.span, with_tags, &reads, chunk, |mut chunks| {
            let rows = chunks.pop().unwrap_or_default();
            let partners = chunks.pop().unwrap_or_default();
            sink(partners, rows)
        })
        .await
    }

    /// Each row of a run in input order whose job (and model, `by_model`) run `other` does
    /// not have, given to `sink` one at a time, as [`Store::each_job_score`] gives them.
    pub async fn each_job_score_without_partner<E: From<StoreError>>(
        &self,
        run: &RunShape,
        other: i64,
        by_model: bool,
        with_tags: bool,
        mut sink: impl FnMut(JobScore<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let reads = [ScoreRows::WithoutPartner { other, by_model }];
        self.each_score_chunk::<E>(
            run.run,
            run.span,
            with_tags,
            &reads,
            SCORE_CHUNK,
            |chunks| {
                for row in chunks.into_iter().flatten() {
                    sink(row)?;
                }
                Ok(())
            },
        )
        .await
    }

    /// The rows `reads` say of each range of `chunk` row ids of a run's span, one statement
    /// each, given to `sink` together per range, each in row order.
    async fn each_score_chunk<E: From<StoreError>>(
        &self,
        run_id: i64,
        span: JobSpan,
        with_tags: bool,
        reads: &[ScoreRows],
        chunk: i64,
        mut sink: impl FnMut(Vec<Vec<JobScore<'_>>>) -> Result<(), E>,
    ) -> Result<(), E> {
        let texts: Vec<String> = reads
            .iter()
            .map(|read| score_sql(self.dialect(), read, with_tags))
            .collect();
        let binds: Vec<Option<i64>> = reads.iter().map(ScoreRows::other).collect();
        // Past the greatest row id there is, no range starts again.
        let ranges = (0..)
            .map_while(move |i: i64| span.first.checked_add(i.checked_mul(chunk)?))
            .take_while(move |&start| start <= span.last)
            .map(move |start| (start, start.saturating_add(chunk - 1).min(span.last)));
        let statements = ranges.flat_map(move |(first, last)| {
            texts
                .iter()
                .zip(&binds)
                .map(|(text, other)| {
                    let sql = Sql::new(text.clone()).bind(run_id).bind(first).bind(last);
                    match other {
                        Some(other) => sql.bind(*other),
                        None => sql,
                    }
                })
                .collect::<Vec<_>>()
        });
        let mut chunks = self.texts_ahead(statements);
        loop {
            let mut texts = Vec::with_capacity(reads.len());
            for _ in reads {
                match chunks.recv().await {
                    Some(text) => texts.push(text?),
                    None => return Ok(()),
                }
            }
            let mut parsed = Vec::with_capacity(texts.len());
            for text in &texts {
                let mut rows = match text {
                    Some(text) => rows_of::<JobScore<'_>>(text)?,
                    None => Vec::new(),
                };
                // In row order. SQLite aggregates them in the order its scan meets them, which
                // is that order already, and a sort of sorted rows is one pass over them (an
                // aggregate's ORDER BY had SQLite sort them again, into a table of its own).
                rows.sort_by_key(|row| row.id);
                parsed.push(rows);
            }
            sink(parsed)?;
        }
    }

    /// The jobs of a run with these row ids (in order), a chunk of ids at a time: each
    /// chunk's jobs as [`ListedJob`], in row order, given to `sink` together. The chunks
    /// are read on a task of their own, a chunk or two ahead of `sink` (see
    /// [`Store::each_job_score`]); a row id not of the run is left out.
    pub async fn each_listed_job<E: From<StoreError>>(
        &self,
        run_id: i64,
        chunks: impl IntoIterator<Item = Vec<i64>, IntoIter: Send + 'static>,
        mut sink: impl FnMut(Vec<ListedJob<'_>>) -> Result<(), E>,
    ) -> Result<(), E> {
        let store = self.clone();
        let statements = chunks
            .into_iter()
            .map(move |ids| store.listed_jobs_sql(run_id, &ids));
        let mut chunks = self.texts_ahead(statements);
        while let Some(chunk) = chunks.recv().await {
            let Some(chunk) = chunk? else { continue };
            let mut rows = rows_of::<ListedJob<'_>>(&chunk)?;
            // In row order (see `each_job_score`).
            rows.sort_by_key(|row| row.id);
            if self.dialect() == Dialect::Postgres {
                for row in &mut rows {
                    // The whole request and answer were read: cut them as SQLite does.
                    row.prompt = row
                        .prompt
                        .as_deref()
                        .and_then(prompt_excerpt)
                        .map(Cow::Owned);
                    row.answer = row
                        .answer
                        .as_deref()
                        .and_then(answer_excerpt)
                        .map(Cow::Owned);
                }
            }
            sink(rows)?;
        }
        Ok(())
    }

    /// The statement of one chunk of [`Store::each_listed_job`]: its rows as one JSON array.
    fn listed_jobs_sql(&self, run_id: i64, ids: &[i64]) -> Sql {
        let mut sql = if self.dialect() == Dialect::Postgres {
            Sql::new(
                "SELECT CAST(json_agg(json_build_array(
                        j.id, j.job_id, j.model, j.state, j.error, r.stop_reason,
                        r.cost_pico_usd, r.latency_ms, r.output_tokens, j.request, b.body,
                        COALESCE((SELECT json_agg(json_build_array(g.grader, g.kind, g.passed,
                                                                   g.reason) ORDER BY g.grader)
                                  FROM grades g WHERE g.job = j.id), CAST('[]' AS JSON)))
                        ORDER BY j.id) AS TEXT)
                 FROM jobs j LEFT JOIN results r ON r.job = j.id
                 LEFT JOIN responses b ON b.job = j.id
                 WHERE j.run_id = $1 AND j.id IN (",
            )
        } else {
            // The excerpt's length is written in, not bound: a statement whose placeholders
            // each come once, in order, binds its thousand ids without looking up names (see
            // `Sql::sqlite`). `NOT INDEXED`: the ids are looked up by row id; by the index on
            // `run_id` SQLite would read the whole run for each chunk of them.
            Sql::new(format!(
                "SELECT json_group_array(json_array(
                        j.id, j.job_id, j.model, j.state, j.error, r.stop_reason,
                        r.cost_pico_usd, r.latency_ms, r.output_tokens,
                        CASE WHEN json_valid(j.request) THEN substr(
                            CASE json_type(j.request, '$.messages[#-1].content')
                                WHEN 'text' THEN json_extract(j.request, '$.messages[#-1].content')
                                WHEN 'array' THEN (
                                    SELECT group_concat(json_extract(e.value, '$.text'), ' ')
                                    FROM json_each(j.request, '$.messages[#-1].content') e
                                    WHERE json_extract(e.value, '$.type') = 'text')
                            END, 1, {EXCERPT_CHARS})
                        END,
                        CASE WHEN json_valid(b.body)
                             THEN substr(json_extract(b.body, '$.content[0].text'), 1,
                                         {EXCERPT_CHARS})
                        END,
                        json((SELECT json_group_array(json_array(g.grader, g.kind, g.passed,
                                                                 g.reason) ORDER BY g.grader)
                              FROM grades g WHERE g.job = j.id))))
                 FROM jobs j NOT INDEXED LEFT JOIN results r ON r.job = j.id
                 LEFT JOIN responses b ON b.job = j.id
                 WHERE j.run_id = $1 AND j.id IN ("
            ))
        };
        sql = sql.bind(run_id);
        sql.push_list(ids).push(")");
        sql.once()
    }

    /// The one text value of each statement, run one after another on a task of their own
    /// while the receiver reads the ones before: at most [`AHEAD`] wait to be read. The task
    /// stops at the first error (sent as the last value), or once the receiver is dropped.
    fn texts_ahead(
        &self,
        statements: impl Iterator<Item = Sql> + Send + 'static,
    ) -> tokio::sync::mpsc::Receiver<Result<Option<String>, StoreError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
        let store = self.clone();
        tokio::spawn(async move {
            for sql in statements {
                let text = store.value::<Option<String>>(sql).await;
                let failed = text.is_err();
                if tx.send(text).await.is_err() || failed {
                    break;
                }
            }
        });
        rx
    }

    /// The models of a run's jobs, each once (a rejected job's empty model among them).
    pub async fn run_model_names(&self, run_id: i64) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = self
            .all(Sql::new("SELECT DISTINCT model FROM jobs WHERE run_id = $1").bind(run_id))
            .await?;
        Ok(rows.into_iter().map(|(m,)| m).collect())
    }
}

/// The text of a request's last message, its text blocks joined by spaces, cut to
/// [`EXCERPT_CHARS`] characters.
pub(super) fn prompt_excerpt(request: &str) -> Option<String> {
    let request: serde_json::Value = serde_json::from_str(request).ok()?;
    let content = request
        .get("messages")?
        .as_array()?
        .last()?
        .get("content")?;
    let text = match content {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(blocks) => {
            let texts: Vec<&str> = blocks
                .iter()
                .filter(|b| b.get("type").and_then(|t| t.as_str()) == Some("text"))
                .filter_map(|b| b.get("text").and_then(|t| t.as_str()))
                .collect();
            if texts.is_empty() {
                return None;
            }
            texts.join(" ")
        }
        _ => return None,
    };
    Some(cut(&text))
}

/// The text of an answer's first content block, cut to [`EXCERPT_CHARS`] characters.
pub(super) fn answer_excerpt(body: &str) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(body).ok()?;
    let text = body.get("content")?.get(0)?.get("text")?.as_str()?;
    Some(cut(text))
}

fn cut(text: &str) -> String {
    text.chars()
        .take(usize::try_from(EXCERPT_CHARS).unwrap_or(usize::MAX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query plan of `read` over a range of run 1's rows, one step a line.
    async fn plan(store: &Store, read: &ScoreRows) -> String {
        let sql = Sql::new(score_sql(store.dialect(), read, true))
            .bind(1)
            .bind(1)
            .bind(4_096)
            .bind(2);
        store.query_plan(sql).await
    }

    /// A run of one sample per job compared with one of fifty: each chunk's partners are
    /// about a chunk's worth of rows, not fifty times that, and every partner comes.
    #[tokio::test]
    async fn partners_with_more_samples_come_in_smaller_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.db")).await.unwrap();
        for sql in [
            "INSERT INTO runs (id, name, created_at_ms, status, input_path, input_sha256,
                               gateway_name, base_url, messages_path, settings)
             VALUES (1, 'once', 0, 'completed', 'a.jsonl', '', 'mock', 'http://m', '/v1', '{}'),
                    (2, 'fifty', 0, 'completed', 'a.jsonl', '', 'mock', 'http://m', '/v1', '{}')",
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 199)
             INSERT INTO jobs (run_id, job_id, model, line, request, request_sha256, state)
             SELECT 1, 'q' || i, 'm', i + 1, '{}', '', 'succeeded' FROM n",
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999)
             INSERT INTO jobs (run_id, job_id, model, line, request, request_sha256, state,
                               sample)
             SELECT 2, 'q' || (i / 50), 'm', i / 50 + 1, '{}', '', 'succeeded', i % 50 FROM n",
        ] {
            store.execute(Sql::new(sql)).await.unwrap();
        }
        let (mut most, mut partners, mut rows) = (0, 0, 0);
        let shapes = store.run_shapes(&[1, 2]).await.unwrap();
        store
            .each_job_score_with_partners::<StoreError>(
                &shapes[0],
                (2, shapes[1].samples),
                false,
                false,
                |found, chunk| {
                    most = most.max(found.len());
                    partners += found.len();
                    rows += chunk.len();
                    Ok(())
                },
            )
            .await
            .unwrap();
        assert_eq!((partners, rows), (10_000, 200));
        assert!(most <= SCORE_CHUNK as usize, "{most} partners in one chunk");
        store.close().await;
    }

    /// A range of the first run's rows finds its jobs in the second by the index, whatever
    /// the size of the second: neither read scans a run.
    #[tokio::test]
    async fn a_range_s_partners_are_looked_up_by_the_index_not_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.db")).await.unwrap();
        for by_model in [true, false] {
            for read in [
                ScoreRows::PartnersIn { other: 2, by_model },
                ScoreRows::WithoutPartner { other: 2, by_model },
            ] {
                let plan = plan(&store, &read).await;
                assert!(
                    plan.contains("USING INDEX sqlite_autoindex_jobs_1 (run_id=? AND job_id=?")
                        || plan.contains(
                            "USING COVERING INDEX sqlite_autoindex_jobs_1 (run_id=? AND job_id=?"
                        ),
                    "{plan}"
                );
                assert!(
                    !plan.lines().any(|step| step.starts_with("SCAN")
                        && !step.starts_with("SCAN k")
                        || step.contains("(run_id=?)")),
                    "{plan}"
                );
            }
        }
        store.close().await;
    }
}
