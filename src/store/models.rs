//! Rows going into and coming out of the store.

use serde::Serialize;

/// Where a job stands. A job is `succeeded` only once its result row is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Succeeded,
    Failed,
    Rejected,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Loading,
    Running,
    Interrupted,
    Completed,
    BudgetExhausted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Running => "running",
            Self::Interrupted => "interrupted",
            Self::Completed => "completed",
            Self::BudgetExhausted => "budget_exhausted",
        }
    }

    /// Whether a run with this status has ended its session (it may be resumed).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Interrupted | Self::BudgetExhausted
        )
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for RunStatus {
    type Error = String;

    /// The status as the `runs` table keeps it (its CHECK constraint allows only these).
    fn try_from(text: String) -> Result<Self, Self::Error> {
        [
            Self::Loading,
            Self::Running,
            Self::Interrupted,
            Self::Completed,
            Self::BudgetExhausted,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
        .ok_or_else(|| format!("unknown run status `{text}`"))
    }
}

/// Where a run stands, as `status` and `report` show it: its stored status, unless the
/// store's other rows say more. A run still marked running while no process sends it (no
/// process holds a SQLite store, none of its workers is alive on a PostgreSQL one) died
/// without a word (kill -9, a crash, a reboot); a run with batches left on the server while
/// no process collects them is submitted, whatever it was doing when its last session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Stored(RunStatus),
    Died,
    /// Batches submitted and not yet collected: how many.
    Submitted(usize),
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stored(status) => f.write_str(status.as_str()),
            Self::Died => f.write_str("died"),
            Self::Submitted(batches) => write!(f, "submitted ({batches})"),
        }
    }
}

impl Serialize for RunState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub name: String,
    pub input_path: String,
    pub gateway_name: String,
    pub base_url: String,
    pub messages_path: String,
    /// The run's settings as JSON, written by `RunSettings::stored`.
    pub settings_json: String,
    /// `direct` or `batches`.
    pub via: &'static str,
    /// Of a file checked before loading: its sha256, format and the jobs it makes.
    pub checked: Option<CheckedInput>,
}

/// Where a run's job rows lie.
#[derive(Debug, Clone, Copy)]
pub struct JobSpan {
    pub first: i64,
    pub last: i64,
    /// Every row from `first` to `last` is a job of the run.
    pub contiguous: bool,
}

/// A run's job rows as a read of all of them goes by them: where they lie, how many, and the
/// most samples of a job on one model.
#[derive(Debug, Clone, Copy)]
pub struct RunShape {
    pub run: i64,
    pub span: JobSpan,
    pub rows: i64,
    pub samples: i64,
}

/// What a check of the whole input found, recorded with a run before its rows are stored.
#[derive(Debug, Clone)]
pub struct CheckedInput {
    pub sha256: String,
    pub format: String,
    pub jobs: u64,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub job_id: String,
    pub model: String,
    /// Which of the job's repeated samples (`--repeat`) this row is, from 0.
    pub sample: u32,
    pub line: u64,
    pub request: String,
    pub request_sha256: String,
    pub tags: Option<String>,
    pub expect: Option<String>,
    pub state: JobState,
    pub error: Option<String>,
    /// Set when `request` is its batch params as sent, byte for byte (no `stream` to drop, and
    /// written as msgbatch writes JSON): its `max_tokens` as worst cases read it. Packing a
    /// batch then needs nothing more of the request.
    pub params_max_tokens: Option<u64>,
}

/// A job waiting to be sent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingJob {
    pub id: i64,
    pub job_id: String,
    pub model: String,
    pub request: String,
    pub attempts: i64,
    pub expect: Option<String>,
    /// [`NewJob::params_max_tokens`], as stored (NULL for a request packing must read, and
    /// where a query does not ask for it).
    #[sqlx(default)]
    pub params_max_tokens: Option<i64>,
    /// The fencing token of the lease it was claimed under, by a worker of a PostgreSQL store.
    #[sqlx(default)]
    pub lease: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct AttemptRecord {
    pub job: i64,
    /// What the attempt was for: `job`, `judge` or `count_tokens`.
    pub kind: &'static str,
    pub attempt: i64,
    pub started_at_ms: i64,
    pub queue_wait_ms: i64,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub http_status: Option<i64>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub error_body: Option<String>,
    pub retry_after_ms: Option<i64>,
    pub request_id: Option<String>,
    /// The batch row whose result the attempt is, when it is one.
    pub batch: Option<i64>,
    /// What the attempt was billed when no result or grade holds its cost (a judge's verdict
    /// that came back for a spec since replaced).
    pub cost_pico_usd: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct ResultRecord {
    pub job: i64,
    pub response: String,
    /// What rebuilding a streamed answer could not apply cleanly.
    pub note: Option<String>,
    pub message_id: Option<String>,
    pub response_model: Option<String>,
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
    pub usage: crate::message::Usage,
    pub service_tier: Option<String>,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub streamed: bool,
    pub cost_pico_usd: Option<u64>,
    pub completed_at_ms: i64,
    /// Outcomes of the job's graders (judges pending).
    pub grades: Vec<GradeRecord>,
    /// The longest cache prefix the request would write (a hash), when it has one.
    pub cache_prefix: Option<i64>,
    /// The job waited for another job to warm that prefix.
    pub held_for_warmup: bool,
    /// Answered through a batch (half price; latency is the turnaround).
    pub batch: bool,
}

/// One grader's outcome for a job.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct GradeRecord {
    pub job: i64,
    pub grader: i64,
    pub kind: String,
    /// `None` while a judge's verdict is pending.
    pub passed: Option<bool>,
    pub reason: Option<String>,
    pub spec: String,
    pub judge_model: Option<String>,
    pub judge_input_tokens: Option<i64>,
    pub judge_output_tokens: Option<i64>,
    pub judge_cost_pico_usd: Option<i64>,
}

/// A judge grade waiting for its verdict, with what the judge must see.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingJudge {
    pub job: i64,
    pub grader: i64,
    pub spec: String,
    pub request: String,
    pub response: String,
}

/// A succeeded job, for re-grading.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Gradable {
    pub job: i64,
    pub job_id: String,
    pub expect: Option<String>,
    pub response: String,
    pub latency_ms: i64,
}

/// A job's new state after its outcome is known.
#[derive(Debug, Clone)]
pub struct JobUpdate {
    pub job: i64,
    pub state: JobState,
    pub attempts: i64,
    pub error: Option<String>,
    /// The fencing token the job was claimed with: the update (and the job's result) is
    /// committed only while the job's lease is still this one.
    pub lease: Option<i64>,
}

/// Everything one writer transaction commits.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// The worker committing it, whose counts of jobs done and spend it adds to.
    pub worker: Option<i64>,
    pub attempts: Vec<AttemptRecord>,
    pub results: Vec<ResultRecord>,
    pub updates: Vec<JobUpdate>,
    /// Judge verdicts, or judges left pending with their reason.
    pub grades: Vec<GradeRecord>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty()
            && self.results.is_empty()
            && self.updates.is_empty()
            && self.grades.is_empty()
    }
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub name: String,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// As last written; [`crate::store::Store::run_state`] tells where the run stands now.
    #[sqlx(try_from = "String")]
    pub status: RunStatus,
    pub stop_reason: Option<String>,
    pub input_path: String,
    pub input_sha256: String,
    /// How the file was read: format and compression; empty for runs made before it was kept.
    pub input_format: String,
    pub gateway_name: String,
    pub base_url: String,
    pub messages_path: String,
    /// The run's settings as JSON, read only through `RunSettings::of` (the store keeps them
    /// without knowing their shape).
    #[sqlx(rename = "settings")]
    #[serde(skip)]
    pub settings_json: String,
    /// `direct`, or `batches` for a run sent through the Message Batches API.
    pub via: String,
    /// Every row of its input is stored (a run stopped while loading has only part of them).
    pub loaded: bool,
    /// The jobs its whole input makes, bad records left out, when it was checked first.
    pub input_jobs: Option<i64>,
}

impl RunRow {
    /// The run's messages URL as it may be shown: through [`crate::output::redacted_url`],
    /// which hides credentials and key-like query values (a store written before they were
    /// hidden may hold them).
    pub fn shown_url(&self) -> String {
        crate::output::redacted_url(&crate::settings::join_url(
            &self.base_url,
            &self.messages_path,
        ))
        .into_owned()
    }
}

/// Job counts by state, and spend, for one run.
#[derive(Debug, Clone, Default, sqlx::FromRow, Serialize)]
pub struct RunCounts {
    pub total: i64,
    pub pending: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub rejected: i64,
    /// Spend of the priced results, in pico-USD.
    pub cost_pico_usd: i64,
    /// Results whose model had no price.
    pub unpriced: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_creation_input_tokens: i64,
    pub cache_read_input_tokens: i64,
}

/// One (job, model, sample) as `export` writes it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExportRow {
    pub job_id: String,
    pub model: String,
    /// Which of the job's repeated samples, from 0.
    pub sample: i64,
    /// Every grader passed; `None` when ungraded (no graders, no answer, a verdict pending).
    pub passed: Option<bool>,
    pub state: String,
    pub error: Option<String>,
    pub response: Option<String>,
    /// What rebuilding a streamed answer could not apply cleanly.
    pub note: Option<String>,
    pub last_error_type: Option<String>,
    pub last_error_message: Option<String>,
    pub last_error_body: Option<String>,
    pub last_http_status: Option<i64>,
    /// What the last attempt was: `job` (a Messages call) or `batch` (a batch item).
    pub last_kind: Option<String>,
}
