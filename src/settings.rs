//! Resolves what the user typed, the environment and `msgbatch.toml` into the settings the
//! rest of the program runs on. Precedence: command line, then environment, then the config
//! file, then built-in defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::cli::{AuthArg, GatewayArgs, SendArgs};
pub use crate::cli::{LimitsPer, Via};
pub use crate::client::ApiKey;
use crate::client::{AuthStyle, Endpoint};

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_MESSAGES_PATH: &str = "/v1/messages";
pub const DEFAULT_API_KEY_ENV: &str = "ANTHROPIC_API_KEY";
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
pub const DEFAULT_CONCURRENCY: usize = 16;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_RETRY_BASE_DELAY: Duration = Duration::from_millis(500);
pub const DEFAULT_RETRY_MAX_DELAY: Duration = Duration::from_secs(60);
/// Five minutes: the API's own `retry-after` stays within a minute or so, and an overnight run
/// can afford a few minutes' pause, but not a gateway's "come back in a year".
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a worker's claim on its jobs outlives its last heartbeat (PostgreSQL store).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The gateway name recorded for runs against the built-in mock.
pub const MOCK_GATEWAY: &str = "mock";

/// `msgbatch.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub gateways: BTreeMap<String, GatewayProfile>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayProfile {
    pub base_url: Option<String>,
    pub messages_path: Option<String>,
    pub auth: Option<AuthStyle>,
    pub api_key_env: Option<String>,
    pub anthropic_version: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Price file for this gateway's own rates, relative to the config file.
    pub prices: Option<PathBuf>,
    /// The gateway's rate limits, used when the command line gives none.
    #[serde(default)]
    pub rpm: Option<u32>,
    #[serde(default)]
    pub itpm: Option<u32>,
    #[serde(default)]
    pub otpm: Option<u32>,
    /// Models that share one set of limits: model id → pool name (by default each model is a
    /// pool of its own), as the gateway shares them.
    #[serde(default)]
    pub pools: BTreeMap<String, String>,
    /// Whether the gateway limits each model (pool) or the whole key [default: model].
    #[serde(default)]
    pub limits: Option<LimitsPer>,
    /// Whether the gateway serves the Message Batches endpoints [default: true].
    #[serde(default)]
    pub batches: Option<bool>,
}

impl ConfigFile {
    /// Reads `path`, or `./msgbatch.toml` when no path is given and that file exists.
    pub fn load(path: Option<&Path>) -> anyhow::Result<(Self, Option<PathBuf>)> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => {
                let default = PathBuf::from("msgbatch.toml");
                if !default.exists() {
                    return Ok((Self::default(), None));
                }
                default
            }
        };
        let text = crate::textfile::read(&path, crate::textfile::MAX_CONFIG_BYTES)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let config: Self = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "invalid config {}: {}",
                path.display(),
                config_error(&text, &e)
            )
        })?;
        Ok((config, Some(path)))
    }
}

/// What is wrong with a config file and where (`line 3, column 29: …`), without the line
/// itself nor the value the message would quote: the TOML parser's own text shows the line,
/// and a profile's header values there are secrets (`authorization = "Bearer …"`). The
/// names of fields and what was expected stay.
fn config_error(text: &str, error: &toml::de::Error) -> String {
    let place = error
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| {
            let line = before.matches('\n').count() + 1;
            let column = before
                .rsplit('\n')
                .next()
                .unwrap_or_default()
                .chars()
                .count()
                + 1;
            format!("line {line}, column {column}: ")
        })
        .unwrap_or_default();
    let message = error.message().trim();
    // serde says `<what was found>, expected <what is wanted>`: only what was found quotes
    // the file's values (`invalid type: string "…"`, `unknown variant `…``), a field's
    // name aside.
    let (found, expected) = match message.find(", expected") {
        Some(at) => message.split_at(at),
        None => (message, ""),
    };
    let names_a_field = [
        "unknown field",
        "missing field",
        "duplicate field",
        "duplicate key",
    ]
    .iter()
    .any(|start| found.starts_with(start));
    let found = if names_a_field {
        found.to_owned()
    } else {
        without_quoted(found)
    };
    let message: String = format!("{found}{expected}")
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    format!("{place}{message}")
}

/// `text` with the content of every `"…"` or `` `…` `` quote replaced by `…`.
fn without_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some(open) => match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, c) if c == open => {
                    quote = None;
                    out.push('…');
                    out.push(c);
                }
                _ => {}
            },
            None => {
                out.push(c);
                if matches!(c, '"' | '`') {
                    quote = Some(c);
                }
            }
        }
    }
    if quote.is_some() {
        out.push('…');
    }
    out
}

impl ConfigFile {
    #[cfg(test)]
    fn load_text(text: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("msgbatch.toml");
        std::fs::write(&path, text)?;
        Ok(Self::load(Some(&path))?.0)
    }
}

/// Where requests go and how they are authenticated. Holds header names and values but never
/// the key; only header names are ever stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Gateway {
    pub name: String,
    /// Stored without the credentials it may carry (`user:password@`), as header values are;
    /// `resume` takes the URL again from the profile or `--base-url`.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub base_url: String,
    /// Stored without the values of key-like query parameters (`?key=…`), as the base URL's
    /// credentials; `resume` takes the path again from the profile or `--messages-path`.
    #[serde(serialize_with = "serialize_redacted_path")]
    pub messages_path: String,
    pub auth: AuthStyle,
    pub api_key_env: String,
    pub anthropic_version: String,
    /// Extra headers. Values are skipped when settings are stored, as they may be secrets.
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub header_names: Vec<String>,
    pub prices: Option<PathBuf>,
    /// The profile's rate limits.
    #[serde(default)]
    pub limits: RateLimits,
    /// Models that share their limits: model → pool.
    #[serde(default)]
    pub pools: BTreeMap<String, String>,
    /// Whether the limits are the key's or each pool's.
    #[serde(default)]
    pub limits_per: LimitsPer,
    /// Whether the gateway serves the Message Batches endpoints.
    #[serde(default = "batches_by_default")]
    pub batches: bool,
}

fn serialize_redacted_url<S: serde::Serializer>(
    url: &str,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::output::redacted_url(url))
}

fn serialize_redacted_path<S: serde::Serializer>(
    path: &str,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::output::redacted_path(path))
}

fn batches_by_default() -> bool {
    true
}

impl Gateway {
    /// What the client needs of this gateway to send to it.
    pub fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            url: self.messages_url(),
            auth: self.auth,
            anthropic_version: &self.anthropic_version,
            headers: &self.headers,
        }
    }

    /// The Messages endpoint: the base URL with the messages path appended, as the SDKs do.
    pub fn messages_url(&self) -> String {
        join_url(&self.base_url, &self.messages_path)
    }

    pub fn mock(base_url: String) -> Self {
        Self {
            name: MOCK_GATEWAY.to_owned(),
            base_url,
            messages_path: DEFAULT_MESSAGES_PATH.to_owned(),
            auth: AuthStyle::XApiKey,
            api_key_env: String::new(),
            anthropic_version: DEFAULT_ANTHROPIC_VERSION.to_owned(),
            headers: Vec::new(),
            header_names: Vec::new(),
            prices: None,
            limits: RateLimits::default(),
            pools: BTreeMap::new(),
            limits_per: LimitsPer::default(),
            batches: true,
        }
    }

    /// Reads the key from the environment; `None` for the mock, which needs none.
    pub fn api_key(&self) -> anyhow::Result<Option<ApiKey>> {
        if self.name == MOCK_GATEWAY {
            return Ok(None);
        }
        match std::env::var(&self.api_key_env) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(ApiKey::new(key.trim().to_owned()))),
            _ => bail!(
                "no API key: set the environment variable {} for gateway `{}` (or pass --mock to try the built-in mock gateway)",
                self.api_key_env,
                self.name
            ),
        }
    }
}

pub fn join_url(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    if path.is_empty() {
        return base.to_owned();
    }
    if path.starts_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    }
}

/// Parses `NAME: VALUE` (or `NAME=VALUE`). The name ends at the first `:` or `=`, which no
/// header name holds, so a value may hold either (`x-token=a:b`, `x-url: http://…`). A value
/// may be a secret: no error here quotes it.
pub fn parse_header(text: &str) -> anyhow::Result<(String, String)> {
    let Some((name, value)) = text.split_once([':', '=']) else {
        bail!("a header is not `NAME: VALUE` (it has no `:` or `=`)");
    };
    let name = name.trim();
    if name.is_empty() {
        bail!("a header has no name before its `:`: give `NAME: VALUE`");
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// Resolves the gateway from the command line, the config file and the built-in default.
pub fn resolve_gateway(
    args: &GatewayArgs,
    config: &ConfigFile,
    config_path: Option<&Path>,
) -> anyhow::Result<Gateway> {
    let (name, profile) = match &args.gateway {
        Some(name) => {
            let profile = config.gateways.get(name).cloned();
            match (name.as_str(), profile) {
                (_, Some(profile)) => (name.clone(), profile),
                ("anthropic", None) => (name.clone(), GatewayProfile::default()),
                (_, None) => {
                    let known: Vec<&str> = std::iter::once("anthropic")
                        .chain(config.gateways.keys().map(String::as_str))
                        .collect();
                    bail!(
                        "no gateway `{name}` in {} (known: {})",
                        config_path.map_or_else(
                            || "msgbatch.toml".to_owned(),
                            |p| p.display().to_string()
                        ),
                        known.join(", ")
                    );
                }
            }
        }
        None if args.base_url.is_some() => ("custom".to_owned(), GatewayProfile::default()),
        None => (
            "anthropic".to_owned(),
            config
                .gateways
                .get("anthropic")
                .cloned()
                .unwrap_or_default(),
        ),
    };
    let mut headers: Vec<(String, String)> = profile.headers.into_iter().collect();
    for header in &args.headers {
        headers.push(parse_header(header)?);
    }
    let base_url = args
        .base_url
        .clone()
        .or(profile.base_url)
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        bail!(
            "base URL `{}` must start with http:// or https://",
            crate::output::redacted_url(&base_url)
        );
    }
    let prices = args.prices.clone().or_else(|| {
        profile
            .prices
            .map(|p| match config_path.and_then(Path::parent) {
                Some(dir) if p.is_relative() => dir.join(p),
                _ => p,
            })
    });
    Ok(Gateway {
        name,
        base_url,
        messages_path: args
            .messages_path
            .clone()
            .or(profile.messages_path)
            .unwrap_or_else(|| DEFAULT_MESSAGES_PATH.to_owned()),
        auth: args
            .auth
            .map(|auth| match auth {
                AuthArg::XApiKey => AuthStyle::XApiKey,
                AuthArg::Bearer => AuthStyle::Bearer,
            })
            .or(profile.auth)
            .unwrap_or(AuthStyle::XApiKey),
        api_key_env: args
            .api_key_env
            .clone()
            .or(profile.api_key_env)
            .unwrap_or_else(|| DEFAULT_API_KEY_ENV.to_owned()),
        anthropic_version: args
            .anthropic_version
            .clone()
            .or(profile.anthropic_version)
            .unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_owned()),
        header_names: headers.iter().map(|(n, _)| n.clone()).collect(),
        headers,
        prices,
        limits: RateLimits {
            rpm: profile.rpm,
            itpm: profile.itpm,
            otpm: profile.otpm,
        },
        pools: profile.pools,
        limits_per: args.limits.or(profile.limits).unwrap_or_default(),
        batches: profile.batches.unwrap_or(true),
    })
}

/// Per-minute rate limits: requests, input tokens, output tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    pub rpm: Option<u32>,
    pub itpm: Option<u32>,
    pub otpm: Option<u32>,
}

/// How a run sends its requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SendSettings {
    pub concurrency: usize,
    pub rpm: Option<u32>,
    /// Input tokens per minute (uncached input and cache writes).
    #[serde(default)]
    pub itpm: Option<u32>,
    /// Output tokens per minute.
    #[serde(default)]
    pub otpm: Option<u32>,
    pub max_attempts: u32,
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    #[serde(with = "duration_ms")]
    pub retry_base_delay: Duration,
    #[serde(with = "duration_ms")]
    pub retry_max_delay: Duration,
    /// The longest `retry-after` (or rate-limit reset) a request waits for; a gateway asking
    /// for longer stops the run, to be resumed later.
    #[serde(with = "duration_ms", default = "default_max_retry_after")]
    pub max_retry_after: Duration,
    /// The bound of one answer, streamed or not, and of one line of batch results.
    #[serde(default = "default_max_answer_bytes")]
    pub max_answer_bytes: u64,
    #[serde(with = "duration_ms", default = "default_stream_idle")]
    pub stream_idle_timeout: Duration,
    /// The run's budget in pico-USD.
    #[serde(default)]
    pub max_cost_pico_usd: Option<u64>,
    /// Warm each shared cache prefix once before its group fans out.
    #[serde(default = "warmup_by_default")]
    pub warmup: bool,
    /// The limits each pool of models was sent under, given or learnt from the gateway,
    /// recorded when a session ends so that reports can show the share used.
    #[serde(default)]
    pub pool_limits: BTreeMap<String, crate::limiter::PoolLimits>,
    /// Direct, or through the Message Batches API.
    #[serde(default)]
    pub via: Via,
    #[serde(default)]
    pub batches: BatchSettings,
    /// When the answers must be in (`--deadline`), and whether the run gave up on batches
    /// to meet it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<crate::send::deadline::Deadline>,
    /// How long a worker's claim on its jobs lasts past its last heartbeat, on a PostgreSQL
    /// store: how soon the others take over the jobs of a worker that died.
    #[serde(with = "duration_ms", default = "default_lease")]
    pub lease: Duration,
}

fn default_max_retry_after() -> Duration {
    DEFAULT_MAX_RETRY_AFTER
}

fn default_max_answer_bytes() -> u64 {
    crate::client::DEFAULT_MAX_ANSWER_BYTES
}

fn default_lease() -> Duration {
    DEFAULT_LEASE
}

fn warmup_by_default() -> bool {
    true
}

/// The API's own bounds on one batch.
pub const BATCH_MAX_REQUESTS: usize = 100_000;
pub const BATCH_MAX_BYTES: usize = 256 * 1024 * 1024;

/// How jobs are packed into batches, and how often a running batch is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSettings {
    pub max_requests: usize,
    pub max_bytes: usize,
    #[serde(with = "duration_ms")]
    pub poll_interval: Duration,
    /// Requests a minute to the Message Batches endpoints, all of them together (`--batch-rpm`);
    /// `None`: [`BATCH_DEFAULT_RPM`] until the gateway's headers say otherwise.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// The most bytes of one create body the gateway took, once it refused a larger one (a
    /// 413, or a connection closed while the body was sent): kept for `resume`, under
    /// `max_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learnt_max_bytes: Option<usize>,
    /// Most requests in the run's open batches at once (`--batch-queue`): the Batches API's
    /// cap on requests waiting in its processing queue.
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
}

/// Requests the Batches API holds in its processing queue at the lowest standard tier (Start;
/// 300,000 for Build, 500,000 for Scale): past it, a create is refused with a 429.
pub const BATCH_MAX_QUEUED: usize = 200_000;

fn default_max_queued() -> usize {
    BATCH_MAX_QUEUED
}

/// Requests a minute to the Message Batches endpoints when none is given and the gateway's
/// headers have not said: the Batches API has a request limit of its own, shared by all its
/// endpoints, 1,000 a minute at the lowest standard tier (Start; 2,000 for Build, 4,000 for
/// Scale), besides its limit on requests waiting in the processing queue (docs' rate-limits
/// page, "Message Batches API").
pub const BATCH_DEFAULT_RPM: u32 = 1_000;

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_requests: BATCH_MAX_REQUESTS,
            max_bytes: BATCH_MAX_BYTES,
            poll_interval: Duration::from_secs(5),
            rpm: None,
            learnt_max_bytes: None,
            max_queued: BATCH_MAX_QUEUED,
        }
    }
}

impl SendSettings {
    /// The retry policy these settings give every request.
    pub fn retry_policy(&self) -> crate::client::RetryPolicy {
        crate::client::RetryPolicy {
            max_attempts: self.max_attempts,
            base_delay: self.retry_base_delay,
            max_delay: self.retry_max_delay,
            max_retry_after: self.max_retry_after,
        }
    }
}

fn default_stream_idle() -> Duration {
    DEFAULT_STREAM_IDLE_TIMEOUT
}

impl SendSettings {
    pub fn from_args(args: &SendArgs) -> anyhow::Result<Self> {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            rpm: None,
            itpm: None,
            otpm: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeout: DEFAULT_TIMEOUT,
            retry_base_delay: DEFAULT_RETRY_BASE_DELAY,
            retry_max_delay: DEFAULT_RETRY_MAX_DELAY,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            max_answer_bytes: crate::client::DEFAULT_MAX_ANSWER_BYTES,
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
            max_cost_pico_usd: None,
            warmup: true,
            pool_limits: BTreeMap::new(),
            via: Via::Direct,
            batches: BatchSettings::default(),
            deadline: None,
            lease: DEFAULT_LEASE,
        }
        .overridden(args)
    }

    /// These settings with whatever `args` gives replacing them.
    pub fn overridden(&self, args: &SendArgs) -> anyhow::Result<Self> {
        let settings = Self {
            concurrency: args.concurrency.unwrap_or(self.concurrency),
            rpm: args.rpm.or(self.rpm),
            itpm: args.itpm.or(self.itpm),
            otpm: args.otpm.or(self.otpm),
            max_attempts: args.max_attempts.unwrap_or(self.max_attempts),
            timeout: args.timeout.unwrap_or(self.timeout),
            retry_base_delay: args.retry_base_delay.unwrap_or(self.retry_base_delay),
            retry_max_delay: args.retry_max_delay.unwrap_or(self.retry_max_delay),
            max_retry_after: args.max_retry_after.unwrap_or(self.max_retry_after),
            max_answer_bytes: args
                .max_answer_mb
                .map_or(self.max_answer_bytes, |mb| mb.saturating_mul(1024 * 1024)),
            stream_idle_timeout: args.stream_idle_timeout.unwrap_or(self.stream_idle_timeout),
            max_cost_pico_usd: match args.max_cost {
                Some(usd) => {
                    Some(usd_to_pico(usd).context("--max-cost must be a positive number of USD")?)
                }
                None => self.max_cost_pico_usd,
            },
            warmup: self.warmup && !args.no_warmup,
            pool_limits: self.pool_limits.clone(),
            via: args.via.unwrap_or(self.via),
            batches: BatchSettings {
                max_requests: args.batch_max_requests.unwrap_or(self.batches.max_requests),
                max_bytes: args
                    .batch_max_mb
                    .map_or(self.batches.max_bytes, |mb| mb.saturating_mul(1024 * 1024)),
                poll_interval: args.poll_interval.unwrap_or(self.batches.poll_interval),
                rpm: args.batch_rpm.or(self.batches.rpm),
                learnt_max_bytes: self.batches.learnt_max_bytes,
                max_queued: args
                    .batch_queue
                    .map_or(self.batches.max_queued, |n| n as usize),
            },
            deadline: match args.deadline {
                Some(arg) => Some(crate::send::deadline::Deadline {
                    at_ms: arg.resolve(std::time::SystemTime::now()),
                    switched_at_ms: None,
                }),
                None => self.deadline,
            },
            lease: args.lease.unwrap_or(self.lease),
        };
        if !(1..=BATCH_MAX_REQUESTS).contains(&settings.batches.max_requests) {
            bail!("--batch-max-requests must be between 1 and {BATCH_MAX_REQUESTS}");
        }
        if !(1..=BATCH_MAX_BYTES).contains(&settings.batches.max_bytes) {
            bail!("--batch-max-mb must be between 1 and 256");
        }
        if settings.batches.rpm == Some(0) {
            bail!("--batch-rpm must be at least 1");
        }
        if settings.batches.poll_interval.is_zero() {
            bail!("--poll-interval must be longer than zero");
        }
        if settings.lease < Duration::from_secs(1) {
            bail!("--lease must be at least 1s");
        }
        if settings.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if settings.max_attempts == 0 {
            bail!("--max-attempts must be at least 1");
        }
        if settings.itpm == Some(0) || settings.otpm == Some(0) {
            bail!("--itpm and --otpm must be at least 1");
        }
        if settings.rpm == Some(0) {
            bail!("--rpm must be at least 1");
        }
        if settings.max_answer_bytes == 0 {
            bail!("--max-answer-mb must be at least 1");
        }
        if settings.timeout.is_zero() {
            bail!("--timeout must be longer than zero");
        }
        Ok(settings)
    }
}

/// Everything about a run that `resume` needs, stored as JSON on the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunSettings {
    pub gateway: Gateway,
    pub send: SendSettings,
    /// The options of the in-process mock a `run --mock` sends to.
    pub mock: Option<crate::mock::MockOptions>,
    pub models: Vec<String>,
    /// Samples of each job and model (`--repeat`).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub repeat: u32,
    pub defaults: crate::jobs::Defaults,
    /// How the job file is read, for a run that must load the rest of it on `resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputSettings>,
}

impl RunSettings {
    /// The settings `run` was made with (as its last session kept them): the one place a
    /// run's stored settings are read.
    pub fn of(run: &crate::store::RunRow) -> anyhow::Result<Self> {
        serde_json::from_str(&run.settings_json)
            .with_context(|| format!("run {} has unreadable settings", run.name))
    }

    /// These settings as a run keeps them (`RunRow::settings_json`): the one place they
    /// are written from.
    pub fn stored(&self) -> anyhow::Result<String> {
        serde_json::to_string(self).context("failed to write a run's settings as JSON")
    }
}

fn one() -> u32 {
    1
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if"
)]
fn is_one(repeat: &u32) -> bool {
    *repeat == 1
}

/// How a run's job file is read: with the models and defaults above, enough to read it again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputSettings {
    /// The file's absolute path.
    pub path: std::path::PathBuf,
    pub format: crate::jobs::InputFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template: Option<String>,
    /// `equals`, `contains` or `regex`.
    pub expect_kind: String,
}

impl InputSettings {
    /// How `options` read the file, with its path made absolute.
    pub fn of(options: &crate::jobs::LoadOptions) -> anyhow::Result<Self> {
        Ok(Self {
            path: std::path::absolute(&options.path)?,
            format: options.format,
            prompt_template: options.prompt_template.clone(),
            expect_kind: options.expect_kind.to_owned(),
        })
    }

    /// The options that read the file again as the run first read it.
    pub fn load_options(&self, run: &RunSettings) -> crate::jobs::LoadOptions {
        crate::jobs::LoadOptions {
            path: self.path.clone(),
            format: self.format,
            defaults: run.defaults.clone(),
            models: run.models.clone(),
            repeat: run.repeat,
            prompt_template: self.prompt_template.clone(),
            expect_kind: match self.expect_kind.as_str() {
                "contains" => "contains",
                "regex" => "regex",
                _ => "equals",
            },
            skip_invalid: false,
        }
    }
}

/// Converts USD to pico-USD; `None` for a negative or non-finite amount.
pub fn usd_to_pico(usd: f64) -> Option<u64> {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked finite, non-negative and below 9 million USD"
    )]
    (usd.is_finite() && (0.0..9.0e6).contains(&usd)).then(|| (usd * 1e12).round() as u64)
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// The price table a run was costed with: its gateway's file, else the built-in table.
pub fn run_prices(run: &crate::store::RunRow) -> anyhow::Result<crate::pricing::PriceTable> {
    match RunSettings::of(run)?.gateway.prices {
        Some(path) => Ok(crate::pricing::PriceTable::from_file(&path)?),
        None => Ok(crate::pricing::PriceTable::builtin()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_error_says_where_and_quotes_no_header_value() {
        const SECRET: &str = "sk-SECRET-in-config";
        for (text, at) in [
            (
                "[gateways.gw]\nbase_url = \"https://gw\"\nheaders = { authorization = \"Bearer sk-SECRET-in-config\", x = 1 2 }\n",
                "line 3, column 63: ",
            ),
            (
                "[gateways.gw]\nheaders = \"x-api-key: sk-SECRET-in-config\"\n",
                "line 2, column 11: ",
            ),
            (
                "[gateways.gw]\nauth = \"sk-SECRET-in-config\\\"x\"\n",
                "line 2, column 8: ",
            ),
        ] {
            let error = format!("{:#}", ConfigFile::load_text(text).unwrap_err());
            assert!(error.contains("msgbatch.toml: "), "{error}");
            assert!(error.contains(at), "{error}");
            assert!(!error.contains(SECRET) && !error.contains('\n'), "{error}");
        }
        let error = format!(
            "{:#}",
            ConfigFile::load_text("[gateways.gw]\nbase_urll = \"x\"\n").unwrap_err()
        );
        assert!(error.contains("unknown field `base_urll`"), "{error}");
    }

    #[test]
    fn the_key_never_prints() {
        let key = ApiKey::new("sk-ant-secret".to_owned());
        assert!(!format!("{key:?} {key}").contains("secret"));
    }

    #[test]
    fn limits_are_per_model_unless_the_profile_or_the_flag_says_key() {
        let config: ConfigFile = toml::from_str(
            r#"
            [gateways.proxy]
            base_url = "https://proxy.example"
            limits = "key"
            "#,
        )
        .unwrap();
        let resolve = |gateway: Option<&str>, limits: Option<LimitsPer>| {
            let args = GatewayArgs {
                gateway: gateway.map(str::to_owned),
                limits,
                ..GatewayArgs::default()
            };
            resolve_gateway(&args, &config, None).unwrap().limits_per
        };
        assert_eq!(resolve(None, None), LimitsPer::Model);
        assert_eq!(resolve(Some("proxy"), None), LimitsPer::Key);
        assert_eq!(
            resolve(Some("proxy"), Some(LimitsPer::Model)),
            LimitsPer::Model
        );
        assert_eq!(resolve(None, Some(LimitsPer::Key)), LimitsPer::Key);
        assert!(
            toml::from_str::<ConfigFile>("[gateways.x]\nlimits = \"org\"\n").is_err(),
            "an unknown scope is refused"
        );
    }

    #[test]
    fn gateway_resolution_prefers_cli_then_profile_then_default() {
        let config: ConfigFile = toml::from_str(
            r#"
            [gateways.aisa]
            base_url = "https://api.aisa.one/"
            auth = "bearer"
            api_key_env = "AISA_API_KEY"
            headers = { "x-team" = "evals" }
            "#,
        )
        .unwrap();
        let args = GatewayArgs {
            gateway: Some("aisa".into()),
            messages_path: Some("/messages".into()),
            ..GatewayArgs::default()
        };
        let gateway = resolve_gateway(&args, &config, None).unwrap();
        assert_eq!(gateway.messages_url(), "https://api.aisa.one/messages");
        assert_eq!(gateway.auth, AuthStyle::Bearer);
        assert_eq!(gateway.api_key_env, "AISA_API_KEY");
        assert_eq!(gateway.headers, [("x-team".to_owned(), "evals".to_owned())]);

        let default = resolve_gateway(&GatewayArgs::default(), &config, None).unwrap();
        assert_eq!(
            default.messages_url(),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(default.api_key_env, "ANTHROPIC_API_KEY");

        let unknown = GatewayArgs {
            gateway: Some("nope".into()),
            ..GatewayArgs::default()
        };
        let err = resolve_gateway(&unknown, &config, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("known: anthropic, aisa"), "{err}");
    }

    #[test]
    fn a_runs_settings_read_back_as_written_and_unreadable_ones_name_the_run() {
        let settings = RunSettings {
            gateway: Gateway::mock("http://127.0.0.1:1".into()),
            send: SendSettings::from_args(&SendArgs::default()).unwrap(),
            mock: Some(crate::mock::MockOptions::default()),
            models: vec!["claude-haiku-4-5".into()],
            repeat: 1,
            defaults: crate::jobs::Defaults::default(),
            input: None,
        };
        let mut run = crate::store::RunRow {
            id: 7,
            name: "evals".into(),
            created_at_ms: 0,
            finished_at_ms: None,
            status: crate::store::RunStatus::Completed,
            stop_reason: None,
            input_path: "jobs.jsonl".into(),
            input_sha256: String::new(),
            input_format: String::new(),
            gateway_name: MOCK_GATEWAY.into(),
            base_url: "http://127.0.0.1:1".into(),
            messages_path: DEFAULT_MESSAGES_PATH.into(),
            settings_json: settings.stored().unwrap(),
            via: "direct".into(),
            loaded: true,
            input_jobs: None,
        };
        assert_eq!(RunSettings::of(&run).unwrap(), settings);
        run.settings_json = "{\"gateway\": 1}".into();
        let err = format!("{:#}", RunSettings::of(&run).unwrap_err());
        assert!(
            err.starts_with("run evals has unreadable settings: "),
            "{err}"
        );
    }

    #[test]
    fn a_header_is_cut_at_its_first_separator_and_no_error_quotes_its_value() {
        for (text, name, value) in [
            ("x-team: evals", "x-team", "evals"),
            ("x-token=a:b", "x-token", "a:b"),
            (
                "x-url: http://gw.example/a=b",
                "x-url",
                "http://gw.example/a=b",
            ),
            ("Authorization:Bearer k=", "Authorization", "Bearer k="),
        ] {
            let parsed = parse_header(text).unwrap();
            assert_eq!(parsed, (name.to_owned(), value.to_owned()), "{text}");
        }
        for text in ["sk-secret-77", ": sk-secret-77", " =sk-secret-77"] {
            let error = parse_header(text).unwrap_err().to_string();
            assert!(!error.contains("sk-secret-77"), "{error}");
        }
    }

    #[test]
    fn a_refused_base_url_shows_no_credentials() {
        let args = GatewayArgs {
            base_url: Some("ftp://user:sk-secret-77@gw.example".to_owned()),
            ..GatewayArgs::default()
        };
        let error = resolve_gateway(&args, &ConfigFile::default(), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("must start with http://"), "{error}");
        assert!(!error.contains("sk-secret-77"), "{error}");
    }

    #[test]
    fn stored_settings_keep_header_names_but_not_values() {
        let mut gateway = Gateway::mock("http://127.0.0.1:1".into());
        gateway.headers = vec![("x-secret".into(), "value-123".into())];
        gateway.header_names = vec!["x-secret".into()];
        let json = serde_json::to_string(&gateway).unwrap();
        assert!(json.contains("x-secret"));
        assert!(!json.contains("value-123"));
    }
}
