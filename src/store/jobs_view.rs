//! Each job of a run as a comparison needs it: its outcome, its graders' verdicts, what it
//! cost and took, and the start of its prompt and answer.

use std::collections::HashMap;

use super::sql::{Dialect, Sql};
use super::{Store, StoreError};

/// Characters of a prompt or an answer kept for showing.
pub const EXCERPT_CHARS: i64 = 400;

/// Row ids bound in one statement at most.
const ID_CHUNK: usize = 1_000;

/// One job of a run, with its result's figures when it has one.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobView {
    pub id: i64,
    pub job_id: String,
    pub model: String,
    /// `pending`, `succeeded`, `failed` or `rejected`.
    pub state: String,
    pub error: Option<String>,
    pub stop_reason: Option<String>,
    pub cost_pico_usd: Option<i64>,
    pub latency_ms: Option<i64>,
    pub output_tokens: Option<i64>,
    /// The job's tags, as the JSON object stored.
    pub tags: Option<String>,
    /// The start of the last user turn's text (its text blocks, joined).
    pub prompt: Option<String>,
    /// The start of the answer's first text block.
    pub answer: Option<String>,
}

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
/// so that every job of a large run can be read one row at a time.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobScore {
    pub id: i64,
    pub job_id: String,
    pub model: String,
    /// `pending`, `succeeded`, `failed` or `rejected`.
    pub state: String,
    pub stop_reason: Option<String>,
    pub cost_pico_usd: Option<i64>,
    pub latency_ms: Option<i64>,
    /// The job's tags, as the JSON object stored; only when asked for.
    pub tags: Option<String>,
    /// Some grader passed it.
    pub passed: bool,
    /// Some grader failed it.
    pub failed: bool,
}

impl Store {
    /// Each row of a run in input order, as [`JobScore`], given to `sink` one at a time; the
    /// tags only `with_tags`. Rows of the same job (its models, their samples) are stored
    /// together, so they come one after another.
    pub async fn each_job_score<E: From<StoreError>>(
        &self,
        run_id: i64,
        with_tags: bool,
        sink: impl FnMut(JobScore) -> Result<(), E>,
    ) -> Result<u64, E> {
        let Some(span) = self.job_span(run_id).await? else {
            return Ok(0);
        };
        let tags = if with_tags {
            "j.tags"
        } else {
            "CAST(NULL AS TEXT)"
        };
        let sql = Sql::new(format!(
            "SELECT j.id, j.job_id, j.model, j.state, r.stop_reason, r.cost_pico_usd,
                    r.latency_ms, {tags} AS tags,
                    EXISTS (SELECT 1 FROM grades g WHERE g.job = j.id AND g.passed = TRUE)
                        AS passed,
                    EXISTS (SELECT 1 FROM grades g WHERE g.job = j.id AND g.passed = FALSE)
                        AS failed
             FROM jobs j NOT INDEXED LEFT JOIN results r ON r.job = j.id
             WHERE j.id BETWEEN $2 AND $3 AND j.run_id = $1 ORDER BY j.id"
        ))
        .bind(run_id)
        .bind(span.first)
        .bind(span.last);
        self.each(sql, sink).await
    }

    /// The models of a run's jobs, each once (a rejected job's empty model among them).
    pub async fn run_model_names(&self, run_id: i64) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = self
            .all(Sql::new("SELECT DISTINCT model FROM jobs WHERE run_id = $1").bind(run_id))
            .await?;
        Ok(rows.into_iter().map(|(m,)| m).collect())
    }

    /// The jobs of a run with these row ids, as [`Store::job_views`] shows them, in row
    /// order; the ids are read in chunks a statement can bind.
    pub async fn job_views_of(&self, run_id: i64, ids: &[i64]) -> Result<Vec<JobView>, StoreError> {
        let postgres = self.dialect() == Dialect::Postgres;
        // The excerpt's length is written in, not bound: a statement whose placeholders
        // each come once, in order, binds its thousand ids without looking up names (see
        // `Sql::sqlite`). `NOT INDEXED`: the ids are looked up by row id; by the index on
        // `run_id` SQLite would read the whole run for each chunk of them.
        let excerpts = if postgres {
            "j.request AS prompt, b.body AS answer".to_owned()
        } else {
            format!(
                "CASE WHEN json_valid(j.request) THEN substr(
                    CASE json_type(j.request, '$.messages[#-1].content')
                        WHEN 'text' THEN json_extract(j.request, '$.messages[#-1].content')
                        WHEN 'array' THEN (
                            SELECT group_concat(json_extract(e.value, '$.text'), ' ')
                            FROM json_each(j.request, '$.messages[#-1].content') e
                            WHERE json_extract(e.value, '$.type') = 'text')
                    END, 1, {EXCERPT_CHARS})
                 END AS prompt,
                 CASE WHEN json_valid(b.body)
                      THEN substr(json_extract(b.body, '$.content[0].text'), 1, {EXCERPT_CHARS})
                 END AS answer"
            )
        };
        let mut views = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ID_CHUNK) {
            let mut sql = Sql::new(format!(
                "SELECT j.id, j.job_id, j.model, j.state, j.error, r.stop_reason,
                        r.cost_pico_usd, r.latency_ms, r.output_tokens, j.tags, {excerpts}
                 FROM jobs j NOT INDEXED LEFT JOIN results r ON r.job = j.id
                 LEFT JOIN responses b ON b.job = j.id
                 WHERE j.run_id = $1 AND j.id IN ("
            ))
            .bind(run_id);
            sql.push_list(chunk).push(") ORDER BY j.id");
            let mut chunk: Vec<JobView> = self.all(sql.once()).await?;
            if postgres {
                for view in &mut chunk {
                    view.prompt = view.prompt.as_deref().and_then(prompt_excerpt);
                    view.answer = view.answer.as_deref().and_then(answer_excerpt);
                }
            }
            views.append(&mut chunk);
        }
        Ok(views)
    }

    /// The graders' verdicts on the jobs with these row ids, by job, each job's in grader
    /// order.
    pub async fn grade_views_of(
        &self,
        ids: &[i64],
    ) -> Result<HashMap<i64, Vec<GradeView>>, StoreError> {
        let mut by_job: HashMap<i64, Vec<GradeView>> = HashMap::new();
        for chunk in ids.chunks(ID_CHUNK) {
            let mut sql = Sql::new(
                "SELECT g.job, g.grader, g.kind, g.passed, g.reason FROM grades g WHERE g.job IN (",
            );
            sql.push_list(chunk).push(") ORDER BY g.job, g.grader");
            let rows: Vec<GradeView> = self.all(sql.once()).await?;
            for row in rows {
                by_job.entry(row.job).or_default().push(row);
            }
        }
        Ok(by_job)
    }

    /// Every job of a run, in input order.
    pub async fn job_views(&self, run_id: i64) -> Result<Vec<JobView>, StoreError> {
        if self.dialect() == Dialect::Postgres {
            return self.job_views_excerpted_here(run_id).await;
        }
        self.all(
            Sql::new(
                "SELECT j.id, j.job_id, j.model, j.state, j.error, r.stop_reason, r.cost_pico_usd,
                        r.latency_ms, r.output_tokens, j.tags,
                        CASE WHEN json_valid(j.request) THEN substr(
                            CASE json_type(j.request, '$.messages[#-1].content')
                                WHEN 'text' THEN json_extract(j.request, '$.messages[#-1].content')
                                WHEN 'array' THEN (
                                    SELECT group_concat(json_extract(e.value, '$.text'), ' ')
                                    FROM json_each(j.request, '$.messages[#-1].content') e
                                    WHERE json_extract(e.value, '$.type') = 'text')
                            END, 1, $2)
                        END AS prompt,
                        CASE WHEN json_valid(b.body)
                             THEN substr(json_extract(b.body, '$.content[0].text'), 1, $2)
                        END AS answer
                 FROM jobs j LEFT JOIN results r ON r.job = j.id
                 LEFT JOIN responses b ON b.job = j.id
                 WHERE j.run_id = $1 ORDER BY j.id",
            )
            .bind(run_id)
            .bind(EXCERPT_CHARS),
        )
        .await
    }

    /// [`Store::job_views`] on a database without SQLite's JSON functions: the excerpts are
    /// cut here, one row at a time, as SQLite cuts them.
    async fn job_views_excerpted_here(&self, run_id: i64) -> Result<Vec<JobView>, StoreError> {
        let mut views = Vec::new();
        self.each(
            Sql::new(
                "SELECT j.id, j.job_id, j.model, j.state, j.error, r.stop_reason,
                        r.cost_pico_usd, r.latency_ms, r.output_tokens, j.tags,
                        j.request AS prompt, b.body AS answer
                 FROM jobs j LEFT JOIN results r ON r.job = j.id
                 LEFT JOIN responses b ON b.job = j.id
                 WHERE j.run_id = $1 ORDER BY j.id",
            )
            .bind(run_id),
            |mut view: JobView| {
                view.prompt = view.prompt.as_deref().and_then(prompt_excerpt);
                view.answer = view.answer.as_deref().and_then(answer_excerpt);
                views.push(view);
                Ok::<_, StoreError>(())
            },
        )
        .await?;
        Ok(views)
    }

    pub async fn grade_views(
        &self,
        run_id: i64,
    ) -> Result<HashMap<i64, Vec<GradeView>>, StoreError> {
        let rows: Vec<GradeView> = self
            .all(
                Sql::new(
                    "SELECT g.job, g.grader, g.kind, g.passed, g.reason
                     FROM grades g JOIN jobs j ON j.id = g.job
                     WHERE j.run_id = $1 ORDER BY g.job, g.grader",
                )
                .bind(run_id),
            )
            .await?;
        let mut by_job: HashMap<i64, Vec<GradeView>> = HashMap::new();
        for row in rows {
            by_job.entry(row.job).or_default().push(row);
        }
        Ok(by_job)
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
