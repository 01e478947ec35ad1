//! Command-line arguments as typed by the user. Nothing here is resolved: see
//! [`crate::settings`] for how these combine with the environment and `msgbatch.toml`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::store::LAST_RUN;

/// Run batches of Anthropic Messages API requests, record every answer, and report what
/// they cost and how fast they came.
#[derive(Debug, Parser)]
#[command(name = "msgbatch", version, about, max_term_width = 100)]
pub struct Cli {
    /// The database holding runs: a SQLite file, or a `postgres://` URL for a database that
    /// several machines share.
    #[arg(
        long,
        global = true,
        env = "MSGBATCH_DB",
        default_value = "msgbatch.db",
        hide_env_values = true
    )]
    pub db: crate::store::Location,

    /// Gateway profiles and defaults [default: ./msgbatch.toml when it exists].
    #[arg(long, global = true, env = "MSGBATCH_CONFIG")]
    pub config: Option<PathBuf>,

    /// No progress bar; only the summary and errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send every job of a JSONL or CSV file and record the answers.
    Run(Box<RunArgs>),
    /// Continue a run after Ctrl-C, a crash or a reboot: sends only what is missing.
    Resume(ResumeArgs),
    /// Join a run on a PostgreSQL store as one more worker: any number of machines send one
    /// run together, each claiming jobs under a lease, sharing its limits and budget.
    Work(WorkArgs),
    /// Cancel the running batches of a run sent with `--via batches`, and record what they
    /// finished.
    Cancel(CancelArgs),
    /// Runs in the database with their progress and spend.
    Status(StatusArgs),
    /// Expected and worst-case cost of a job file, before sending anything.
    Estimate(Box<EstimateArgs>),
    /// Grade a finished run's answers again, without sending its jobs again.
    Grade(GradeArgs),
    /// Cost and latency report of one or more runs.
    Report(ReportArgs),
    /// Which answers changed: two runs job by job, or one run's models side by side.
    Diff(DiffArgs),
    /// Write a run's results as JSONL in the Message Batches results shape.
    Export(ExportArgs),
    /// Serve the mock Messages API gateway.
    Mock(MockServeArgs),
    /// The price table a gateway's reports use: every model's five rates and tiers.
    Prices(PricesArgs),
    /// Serve the store in a browser: runs (live while they run), reports, jobs, answers,
    /// grades and diffs, each page also as JSON under `/api/`. Read-only.
    View(ViewArgs),
}

#[derive(Debug, Args)]
pub struct ViewArgs {
    /// Port to listen on; 0 takes a free one (the URL printed says which).
    #[arg(long, default_value_t = 8640)]
    pub port: u16,

    /// Address to listen on. Anything but loopback needs a token: given with --token, or
    /// made up and printed in the URL.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,

    /// The token a browser or script must show (`?token=` once, then a cookie, or an
    /// `Authorization: Bearer` header): letters, digits and `- . _ ~ / =`.
    #[arg(long, env = "MSGBATCH_VIEW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct PricesArgs {
    /// Gateway profile from msgbatch.toml whose prices to show [default: anthropic].
    #[arg(long)]
    pub gateway: Option<String>,

    /// A price file to show instead of the gateway's.
    #[arg(long)]
    pub prices: Option<PathBuf>,

    /// Only these models (ids or aliases, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// What a command that prints one summary prints: text for a person, or one JSON value on
/// standard output for a script (warnings and progress stay on standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

/// The name `prices` has always used for [`OutputFormat`].
pub type PricesFormat = OutputFormat;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub jobs: JobArgs,

    /// Record bad lines as rejected jobs and run the rest, instead of refusing to start.
    #[arg(long, help_heading = "Input")]
    pub skip_invalid: bool,

    #[command(flatten)]
    pub gateway: GatewayArgs,

    #[command(flatten)]
    pub sending: SendArgs,

    /// Ask before sending when the estimated cost is above this many USD (never asks when
    /// standard input is not a terminal: the run is refused instead, unless --yes).
    #[arg(long, value_name = "USD", help_heading = "Budget")]
    pub confirm_above: Option<f64>,

    /// Do not ask for confirmation.
    #[arg(long, short, help_heading = "Budget")]
    pub yes: bool,

    #[command(flatten)]
    pub mock: MockArgs,

    /// Name for the run [default: file name and start time]: not empty, not a number (a
    /// number names a run by its id), no control characters.
    #[arg(long, help_heading = "Output", value_parser = parse_run_name)]
    pub name: Option<String>,

    #[command(flatten)]
    pub summary: SummaryArgs,
}

/// How a run or resume ends: what it prints and when it fails a pipeline.
#[derive(Debug, Args, Clone, Copy, Default)]
#[command(next_help_heading = "Output")]
pub struct SummaryArgs {
    /// The summary as text (then the report table) or as one JSON object on standard output.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,

    /// Exit with 5 when the share of graded jobs whose every grader passed is below this
    /// rate: a fraction (`0.9`) or a percentage (`90%`). Jobs with a judge verdict still
    /// pending are left out; a run with no graded job fails the gate.
    #[arg(long, value_name = "RATE", value_parser = parse_pass_rate)]
    pub fail_under: Option<f64>,
}

/// A pass rate as a fraction from 0 to 1 (`0.9`) or a percentage (`90%`). A bare number above
/// 1 is refused rather than guessed at: `90` could be meant as either.
fn parse_pass_rate(text: &str) -> Result<f64, String> {
    let refuse = || {
        format!(
            "`{text}` is not a pass rate: give a fraction from 0 to 1 (`0.9`) or a percentage (`90%`)"
        )
    };
    let rate = match text.trim().strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map_err(|_| refuse())? / 100.0,
        None => text.trim().parse::<f64>().map_err(|_| refuse())?,
    };
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(refuse())
    }
}

/// A run name that `resume`, `report` and the others can find the run by.
fn parse_run_name(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("a run name must not be empty".to_owned());
    }
    if text.chars().any(char::is_control) {
        return Err("a run name must not hold control characters".to_owned());
    }
    if text.parse::<i64>().is_ok() {
        return Err(format!(
            "`{text}` is a number, and a number names a run by its id: give a name with a letter in it"
        ));
    }
    if text == LAST_RUN {
        return Err(format!(
            "`{LAST_RUN}` names the latest run, whichever it is: give the run another name"
        ));
    }
    Ok(text.to_owned())
}

/// The most samples `--repeat` takes of each job: more is a typo, not an evaluation.
pub const MAX_REPEAT: u32 = 1000;

/// A count of samples from 1 to [`MAX_REPEAT`].
pub fn parse_repeat(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1 (1 sends each job once)".to_owned()),
        Ok(k) if k <= u64::from(MAX_REPEAT) => Ok(u32::try_from(k).unwrap_or(MAX_REPEAT)),
        Ok(_) => Err(format!("at most {MAX_REPEAT} samples of each job")),
        Err(_) => Err(format!("`{text}` is not a whole number of samples")),
    }
}

/// One ASCII character, or `\t` / `tab` for a tab.
fn parse_delimiter(text: &str) -> Result<u8, String> {
    match text {
        "\\t" | "tab" | "\t" => Ok(b'\t'),
        _ => match text.as_bytes() {
            [byte] if byte.is_ascii() && !byte.is_ascii_alphanumeric() && *byte != b'"' => {
                Ok(*byte)
            }
            _ => Err(format!(
                "`{text}` is not a column separator: give one character such as `;` or `|`, or `\\t` for tab"
            )),
        },
    }
}

/// The job file and what fills in its records.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Input")]
pub struct JobArgs {
    /// Job file: `.jsonl` (Messages bodies or `{"custom_id","params"}` records), `.csv` or
    /// `.tsv`, each plain or compressed (`.gz`, `.zst`); `-` reads JSONL from standard input.
    pub file: PathBuf,

    /// Read the file as a table with this column separator (`;`, `|`, `\t` for tab),
    /// whatever its name.
    #[arg(long, value_name = "C", value_parser = parse_delimiter)]
    pub delimiter: Option<u8>,

    /// Model for records that name none.
    #[arg(long)]
    pub model: Option<String>,

    /// Send every job to each of these models, overriding the record's own: one value per
    /// flag, comma-separated (`--models a,b`) or repeated (`--models a --models b`).
    #[arg(long, value_name = "MODEL,…", value_delimiter = ',')]
    pub models: Vec<String>,

    /// Send every job (to each model) K times, as independent samples, each its own result
    /// graded on its own.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = parse_repeat)]
    pub repeat: u32,

    /// `max_tokens` for records that give none.
    #[arg(long)]
    pub max_tokens: Option<u64>,

    /// System prompt for records that give none.
    #[arg(long)]
    pub system: Option<String>,

    /// Temperature for records that give none.
    #[arg(long)]
    pub temperature: Option<f64>,

    /// Send every job as a streaming request.
    #[arg(long)]
    pub stream: bool,

    /// Template for the user turn of CSV rows, with `{{column}}` placeholders.
    #[arg(long)]
    pub prompt_template: Option<PathBuf>,

    /// How the CSV `expected` column grades an answer.
    #[arg(long, value_enum, default_value_t = ExpectMode::Equals)]
    pub expect_mode: ExpectMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectMode {
    /// The answer, trimmed, equals it.
    Equals,
    /// The answer contains it.
    Contains,
    /// The answer matches it as a regular expression.
    Regex,
}

#[derive(Debug, Args)]
// Streaming and grading change nothing an estimate counts: still accepted, so that a run's
// command line can be estimated as it is, but not listed.
#[command(
    mut_arg("stream", |arg| arg.hide(true)),
    mut_arg("expect_mode", |arg| arg.hide(true))
)]
pub struct EstimateArgs {
    #[command(flatten)]
    pub jobs: JobArgs,

    /// Estimate input tokens locally instead of asking the gateway's count_tokens endpoint.
    #[arg(long, help_heading = "Input")]
    pub no_count_tokens: bool,

    /// Expected output as a share of max_tokens, for models without earlier results.
    #[arg(long, default_value_t = 0.5, help_heading = "Input")]
    pub output_fraction: f64,

    #[command(flatten)]
    pub gateway: GatewayArgs,

    #[command(flatten)]
    pub sending: EstimateSendArgs,

    #[command(flatten)]
    pub mock: EstimateMockArgs,

    /// The estimate as a table or as one JSON object on standard output.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, help_heading = "Output")]
    pub format: OutputFormat,
}

/// What of [`SendArgs`] an estimate reads: its `count_tokens` requests go through the same
/// sender as a run's (concurrency, the request limit, retries, the time limit of an attempt),
/// and `--via` prices it. Budgets, token limits, warm-up and batch packing do nothing for it.
#[derive(Debug, Args, Clone, Default)]
pub struct EstimateSendArgs {
    /// `count_tokens` requests in flight at once [default: 16].
    #[arg(long, help_heading = "Limits")]
    pub concurrency: Option<usize>,

    /// `count_tokens` requests per minute [default: the gateway profile's, else no limit].
    #[arg(long, help_heading = "Limits")]
    pub rpm: Option<u32>,

    /// Attempts per request before it counts as failed, the first included [default: 8].
    #[arg(long, help_heading = "Limits")]
    pub max_attempts: Option<u32>,

    /// Time limit of one attempt, e.g. `90s` or `10m` [default: 10m].
    #[arg(long, value_parser = humantime::parse_duration, help_heading = "Limits")]
    pub timeout: Option<std::time::Duration>,

    /// Ceiling of the first backoff; each retry doubles it [default: 500ms].
    #[arg(long, value_parser = humantime::parse_duration, help_heading = "Limits")]
    pub retry_base_delay: Option<std::time::Duration>,

    /// Largest backoff ceiling [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration, help_heading = "Limits")]
    pub retry_max_delay: Option<std::time::Duration>,

    /// Also price the file at the Message Batches rates (`batches`) [default: direct].
    #[arg(long, value_enum, help_heading = "Batches")]
    pub via: Option<Via>,
}

impl From<&EstimateSendArgs> for SendArgs {
    fn from(args: &EstimateSendArgs) -> Self {
        Self {
            concurrency: args.concurrency,
            rpm: args.rpm,
            max_attempts: args.max_attempts,
            timeout: args.timeout,
            retry_base_delay: args.retry_base_delay,
            retry_max_delay: args.retry_max_delay,
            via: args.via,
            ..Self::default()
        }
    }
}

/// What of [`MockArgs`] an estimate's mock uses: it only counts tokens, so nothing streams.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Mock")]
pub struct EstimateMockArgs {
    /// Count tokens on an in-process mock gateway (no key, no network).
    #[arg(long)]
    pub mock: bool,

    /// Mock: delay before each answer, in milliseconds.
    #[arg(long, requires = "mock")]
    pub mock_latency_ms: Option<u64>,

    /// Mock: share of requests that fail with 500, 529 or a dropped connection.
    #[arg(long, requires = "mock")]
    pub mock_fail_rate: Option<f64>,

    /// Mock: requests per minute, enforced as the API does (429 with `retry-after`).
    #[arg(long, requires = "mock")]
    pub mock_rate_limit_rpm: Option<u32>,
}

impl From<&EstimateMockArgs> for MockArgs {
    fn from(args: &EstimateMockArgs) -> Self {
        Self {
            mock: args.mock,
            mock_latency_ms: args.mock_latency_ms,
            mock_fail_rate: args.mock_fail_rate,
            mock_rate_limit_rpm: args.mock_rate_limit_rpm,
            ..Self::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Run id or name (see `msgbatch status`), or `last` for the latest run.
    pub run: String,

    /// Also send again the jobs that failed after all their attempts.
    #[arg(long)]
    pub include_failed: bool,

    /// The run's samples of each job, when given: must be the K it was started with.
    #[arg(long, value_name = "K", value_parser = parse_repeat)]
    pub repeat: Option<u32>,

    #[command(flatten)]
    pub sending: SendArgs,

    /// Extra header for every request, `NAME: VALUE` (header values are never stored, so
    /// give them again when resuming).
    #[arg(long = "header", value_name = "NAME: VALUE", help_heading = "Gateway")]
    pub headers: Vec<String>,

    /// The run's base URL again, when it carried credentials (`https://user:password@…`):
    /// they are never stored, so give them again when resuming.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// The run's messages path again, when its query carried a key (`/v1/messages?key=…`):
    /// keys are never stored, so give it again when resuming.
    #[arg(long, value_name = "PATH")]
    pub messages_path: Option<String>,

    #[command(flatten)]
    pub summary: SummaryArgs,
}

#[derive(Debug, Args)]
pub struct WorkArgs {
    /// Run id or name (see `msgbatch status`), or `last` for the latest run.
    pub run: String,

    #[command(flatten)]
    pub sending: SendArgs,

    /// Extra header for every request, `NAME: VALUE` (header values are never stored, so
    /// give them to every worker).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// The run's base URL again, when it carried credentials (`https://user:password@…`):
    /// they are never stored, so give them again when resuming.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// The run's messages path again, when its query carried a key (`/v1/messages?key=…`):
    /// keys are never stored, so give it to every worker.
    #[arg(long, value_name = "PATH")]
    pub messages_path: Option<String>,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Run id or name (see `msgbatch status`), or `last` for the latest run.
    pub run: String,

    /// Extra header for every request, `NAME: VALUE` (header values are never stored).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// The run's base URL again, when it carried credentials (`https://user:password@…`):
    /// they are never stored.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// The run's messages path again, when its query carried a key (`/v1/messages?key=…`):
    /// keys are never stored.
    #[arg(long, value_name = "PATH")]
    pub messages_path: Option<String>,
}

/// How requests are sent; on `resume` these override the run's own settings.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Limits")]
pub struct SendArgs {
    /// Requests in flight at once [default: 16].
    #[arg(long)]
    pub concurrency: Option<usize>,

    /// Send every job as it comes, instead of warming each shared cache prefix with one
    /// request before the rest of its group (which then reads the prefix instead of writing
    /// it again).
    #[arg(long)]
    pub no_warmup: bool,

    /// Requests per minute, per pool of models: a bucket of the limit, full at the start and
    /// refilled continuously, as the API keeps it [default: the gateway profile's, else no
    /// limit].
    #[arg(long)]
    pub rpm: Option<u32>,

    /// Input tokens per minute (uncached input and cache writes, as the API counts ITPM);
    /// each request is charged its local estimate and settled with its usage [default: the
    /// gateway profile's, else no limit].
    #[arg(long)]
    pub itpm: Option<u32>,

    /// Output tokens per minute (as produced), charged with the output the run has seen
    /// from each model and settled with the usage [default: the gateway profile's, else no
    /// limit].
    #[arg(long)]
    pub otpm: Option<u32>,

    /// Attempts per job before it counts as failed, the first included [default: 8].
    #[arg(long)]
    pub max_attempts: Option<u32>,

    /// Time limit of one attempt, e.g. `90s` or `10m` [default: 10m].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,

    /// Ceiling of the first backoff; each retry doubles it, and each wait is a random time
    /// under the ceiling [default: 500ms].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retry_base_delay: Option<std::time::Duration>,

    /// Largest backoff ceiling [default: 60s]. A server's `retry-after` may ask for longer,
    /// up to --max-retry-after.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retry_max_delay: Option<std::time::Duration>,

    /// Longest wait a gateway may ask for (`retry-after`, `retry-after-ms`, a rate-limit
    /// reset) before a retry; asked for longer, the run stops to be resumed later
    /// [default: 5m].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_retry_after: Option<std::time::Duration>,

    /// Largest answer read, in MB, streamed or not (and largest line of batch results);
    /// past it the attempt fails and is not retried [default: 64].
    #[arg(long, value_name = "MB")]
    pub max_answer_mb: Option<u64>,

    /// Budget for the whole run in USD: no job starts once the committed spend plus the worst
    /// case of every job in flight would pass it.
    #[arg(long, value_name = "USD", help_heading = "Budget")]
    pub max_cost: Option<f64>,

    /// Longest silence inside a streamed answer before the attempt fails and is retried
    /// [default: 2m].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub stream_idle_timeout: Option<std::time::Duration>,

    /// How jobs go: `direct` (one Messages call each), `batches` (through the Message
    /// Batches API, at half the price, answered within 24 hours) or `auto` (batches when the
    /// gateway's profile allows them and the run has at least 100 jobs) [default: the run's
    /// own, else direct].
    #[arg(long, value_enum, help_heading = "Batches")]
    pub via: Option<Via>,

    /// When the answers must be in: a local clock time (`07:00`, the next one to come) or a
    /// duration from now (`8h`, `90m`). Jobs go through batches for the price until sending
    /// the rest directly would only just finish in time; then the open batches are canceled,
    /// what they finished is kept, and the rest goes directly.
    #[arg(long, value_name = "TIME", value_parser = crate::send::deadline::parse_arg, help_heading = "Batches")]
    pub deadline: Option<crate::send::deadline::DeadlineArg>,

    /// On a PostgreSQL store, how long this worker's claim on its jobs lasts past its last
    /// heartbeat (renewed every third of it): how soon other workers take over the jobs of
    /// one that died [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lease: Option<std::time::Duration>,

    /// Most requests in one batch [default and most: 100000].
    #[arg(long, value_name = "N", help_heading = "Batches")]
    pub batch_max_requests: Option<usize>,

    /// Most bytes of requests in one batch, in MB [default and most: 256].
    #[arg(long, value_name = "MB", help_heading = "Batches")]
    pub batch_max_mb: Option<usize>,

    /// First wait between two looks at a running batch; each look doubles it, up to a
    /// minute [default: 5s].
    #[arg(long, value_parser = humantime::parse_duration, help_heading = "Batches")]
    pub poll_interval: Option<std::time::Duration>,

    /// Most calls a minute to the Message Batches endpoints, all together (create, look,
    /// list, results, cancel) [default: 1000, the Start tier's, or what the gateway's
    /// rate-limit headers say].
    #[arg(long, value_name = "N", help_heading = "Batches")]
    pub batch_rpm: Option<u32>,

    /// Most requests in the run's open batches at once: the Batches API's cap on requests
    /// waiting in its processing queue. More wait until open batches end [default: 200000,
    /// the Start tier's].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Batches")]
    pub batch_queue: Option<u32>,
}

#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Gateway")]
pub struct GatewayArgs {
    /// Gateway profile from msgbatch.toml [default: anthropic].
    #[arg(long)]
    pub gateway: Option<String>,

    /// Base URL as the official SDKs take it, e.g. `https://api.anthropic.com`.
    #[arg(long)]
    pub base_url: Option<String>,

    /// Path of the Messages endpoint under the base URL [default: /v1/messages].
    #[arg(long)]
    pub messages_path: Option<String>,

    /// How the key is sent.
    #[arg(long, value_enum)]
    pub auth: Option<AuthArg>,

    /// Environment variable holding the key [default: ANTHROPIC_API_KEY].
    #[arg(long)]
    pub api_key_env: Option<String>,

    /// `anthropic-version` header [default: 2023-06-01].
    #[arg(long)]
    pub anthropic_version: Option<String>,

    /// Extra header for every request, `NAME: VALUE` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// Price table for this gateway's own rates, in the shape of prices.toml
    /// [default: the profile's `prices`, else the built-in table].
    #[arg(long)]
    pub prices: Option<PathBuf>,

    /// Whether the gateway's rate limits are each model's (each pool of models keeps the
    /// limits given and learns its own, as Anthropic's API does) or the whole key's (every
    /// model shares them, as many gateways do) [default: the profile's `limits`, else model].
    #[arg(long, value_enum)]
    pub limits: Option<LimitsPer>,
}

/// How the key is sent, as typed; [`crate::client::AuthStyle`] is what the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthArg {
    /// `x-api-key: KEY`
    XApiKey,
    /// `Authorization: Bearer KEY`
    Bearer,
}

/// `run --mock`: answer from the built-in mock gateway instead of a real one.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Mock")]
pub struct MockArgs {
    /// Send to an in-process mock gateway (no key, no network).
    #[arg(long)]
    pub mock: bool,

    /// Mock: delay before each answer, in milliseconds.
    #[arg(long, requires = "mock")]
    pub mock_latency_ms: Option<u64>,

    /// Mock: share of requests that fail with 500, 529 or a dropped connection.
    #[arg(long, requires = "mock")]
    pub mock_fail_rate: Option<f64>,

    /// Mock: requests per minute, enforced as the API does (429 with `retry-after`).
    #[arg(long, requires = "mock")]
    pub mock_rate_limit_rpm: Option<u32>,

    /// Mock: input tokens per minute, enforced as the API does.
    #[arg(long, requires = "mock")]
    pub mock_rate_limit_itpm: Option<u32>,

    /// Mock: output tokens per minute, enforced as the API does.
    #[arg(long, requires = "mock")]
    pub mock_rate_limit_otpm: Option<u32>,

    /// Mock: delay before the first token of a streamed answer, in milliseconds.
    #[arg(long, requires = "mock")]
    pub mock_first_token_ms: Option<u64>,

    /// Mock: delay between the chunks of a streamed answer, in milliseconds.
    #[arg(long, requires = "mock")]
    pub mock_token_ms: Option<u64>,

    /// Mock: answer every request with this error status and type, e.g.
    /// `400:no_db_connection` (as a gateway refusing a key does).
    #[arg(long, requires = "mock", value_name = "STATUS[:TYPE]", value_parser = crate::mock::parse_rejection)]
    pub mock_reject: Option<String>,

    /// Mock: per model, the probability that an answer passes a grader looking for the
    /// prompt's text (the answer repeats the prompt; otherwise it does not), e.g.
    /// `claude-haiku-4-5=0.7,claude-sonnet-4-6=0.8`. Each request draws on its own.
    #[arg(long, requires = "mock", value_name = "MODEL=P,…", value_delimiter = ',', value_parser = crate::mock::parse_pass)]
    pub mock_pass: Vec<(String, f64)>,
}

impl MockArgs {
    /// The mock's options these flags give, for a run with `--mock`.
    pub fn options(&self) -> Option<crate::mock::MockOptions> {
        self.mock.then(|| crate::mock::MockOptions {
            latency_ms: self.mock_latency_ms.unwrap_or(0),
            fail_rate: self.mock_fail_rate.unwrap_or(0.0),
            rate_limit_rpm: self.mock_rate_limit_rpm,
            rate_limit_itpm: self.mock_rate_limit_itpm,
            rate_limit_otpm: self.mock_rate_limit_otpm,
            first_token_ms: self.mock_first_token_ms.unwrap_or(0),
            token_ms: self.mock_token_ms.unwrap_or(0),
            reject: self.mock_reject.clone(),
            pass: self.mock_pass.clone(),
            ..crate::mock::MockOptions::default()
        })
    }
}

/// The flags of [`MockArgs`] are the mock's own, with this before their names.
pub const MOCK_FLAGS: &str = "--mock-";

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Run id or name, or `last` for the latest run [default: every run].
    pub run: Option<String>,

    /// A table, or one JSON object on standard output.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct GradeArgs {
    /// Run id or name, or `last` for the latest run.
    pub run: String,

    /// New graders: JSONL of `{"custom_id": …, "expect": {…}}`, replacing those jobs' own.
    #[arg(long)]
    pub expect: Option<PathBuf>,

    /// The run's budget in USD for judge requests, replacing the run's own --max-cost.
    #[arg(long, value_name = "USD")]
    pub max_cost: Option<f64>,

    /// Extra header for every judge request, `NAME: VALUE` (header values are never stored,
    /// so give them again).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// The run's base URL again, when it carried credentials (`https://user:password@…`):
    /// they are never stored, so give them again for judge requests.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// The run's messages path again, when its query carried a key (`/v1/messages?key=…`):
    /// keys are never stored, so give it again for judge requests.
    #[arg(long, value_name = "PATH")]
    pub messages_path: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run ids or names (`last` for the latest run); several are shown side by side with
    /// their differences.
    #[arg(default_value = LAST_RUN)]
    pub runs: Vec<String>,

    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,

    /// Group by `model`, `run` or `tag:NAME`.
    #[arg(long, default_value = "model")]
    pub by: String,

    /// Directory for md, csv, json and html reports (`-` writes to standard output).
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,

    /// Price table to report with [default: the run's gateway prices, else the built-in table].
    #[arg(long)]
    pub prices: Option<PathBuf>,

    /// Also price the run at this table, e.g. another gateway's rates.
    #[arg(long)]
    pub reprice: Option<PathBuf>,

    /// Cluster the standard errors of the mean scores on a tag (`tag:NAME`), for jobs that
    /// share a passage or a source and so are not independent.
    #[arg(long, value_name = "tag:NAME")]
    pub cluster: Option<String>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Two runs (before, after) to compare job by job, or one run to see its jobs against its
    /// models (side by side when it fanned out over several); `last` is the latest run.
    #[arg(required = true, num_args = 1..=2)]
    pub runs: Vec<String>,

    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,

    /// Directory for md, csv, json and html (`-` writes to standard output).
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,

    /// Jobs listed of each kind of change (regressions, improvements, …) [default: 50].
    #[arg(long)]
    pub limit: Option<usize>,

    /// Exit with 4 when a job passed its graders in the first run and fails them in the
    /// second (for CI pipelines).
    #[arg(long)]
    pub fail_on_regression: bool,

    /// Exit with 4 when the mean score of the second run (or of a model, against the
    /// baseline) is significantly lower, at 95%.
    #[arg(long)]
    pub fail_on_significant_drop: bool,

    /// In a one-run diff, the model every other model is compared with [default: the first
    /// of the run's models].
    #[arg(long, value_name = "MODEL")]
    pub baseline: Option<String>,

    /// Cluster the standard errors on a tag (`tag:NAME`), for jobs that share a passage or a
    /// source and so are not independent.
    #[arg(long, value_name = "tag:NAME")]
    pub cluster: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Md,
    Csv,
    Json,
    Html,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Run id or name, or `last` for the latest run.
    #[arg(default_value = LAST_RUN)]
    pub run: String,

    /// Output file; `-` writes to standard output.
    #[arg(long, short)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct MockServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,

    #[command(flatten)]
    pub options: crate::mock::MockOptions,

    /// Accept only this key (as `x-api-key` or a Bearer token) [default: any].
    #[arg(long, env = "MSGBATCH_MOCK_KEY", hide_env_values = true)]
    pub require_key: Option<String>,

    /// Seed for the fault injection.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// What a gateway's rate limits apply to.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LimitsPer {
    /// Each pool of models has limits of its own, as Anthropic's API keeps them (per model
    /// class and organisation): the given limits apply to each pool, and each learns its own.
    #[default]
    Model,
    /// One set of limits for the whole key, whatever the model, as many gateways keep them:
    /// every model shares one pool.
    Key,
}

/// How a run's jobs go to the gateway.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// One Messages call per job.
    #[default]
    Direct,
    /// Through the Message Batches API.
    Batches,
    /// Through batches when the gateway serves them and the run has enough jobs, else
    /// directly (see `send::session::AUTO_MIN_JOBS`).
    Auto,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Batches => "batches",
            Self::Auto => "auto",
        }
    }
}
