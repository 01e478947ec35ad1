//! `msgbatch estimate`: what a job file would cost, before anything is spent.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::{Global, plan};
use crate::cli::{EstimateArgs, OutputFormat};
use crate::estimate::{Estimate, Estimator, TokenSource, count_tokens_body};
use crate::jobs::{self, NewJobChunk};
use crate::limiter::Limiter;
use crate::output::Terminal;
use crate::pricing::format_usd;
use crate::send::budget::Budget;
use crate::send::direct::sender::{Metered, Reply};
use crate::send::direct::{Call, Kind, Request, RequestSender, SendError};
use crate::{ExitStatus, Shutdown};

pub async fn estimate(
    global: &Global,
    args: EstimateArgs,
    shutdown: Shutdown,
) -> anyhow::Result<ExitStatus> {
    if !(0.0..=1.0).contains(&args.output_fraction) {
        anyhow::bail!("--output-fraction must be between 0 and 1");
    }
    // Without token counts an estimate sends nothing, and so needs no key.
    let (settings, options, key) = plan::plan(
        global,
        &args.jobs,
        &args.gateway,
        &(&args.mock).into(),
        &(&args.sending).into(),
        !args.no_count_tokens,
    )?;
    // Held until the estimate ends: a mock estimate's gateway lives as long as this command.
    let (_mock, client) = plan::connect(&settings, key).await?;
    let prices = plan::prices_for(&settings.gateway)?;
    // Token counts take the same path as every request, with nothing to record them against:
    // an estimate writes no database.
    let sender = RequestSender {
        client,
        limiter: Limiter::new(settings.send.rpm),
        policy: settings.send.retry_policy(),
        budget: Arc::new(Budget::new(None, 0)),
        shutdown: shutdown.clone(),
        counters: Arc::default(),
        attempts: None,
        pace: None,
        forecast: Default::default(),
    };

    let (chunks, mut receiver) = tokio::sync::mpsc::channel::<NewJobChunk>(4);
    let reader = tokio::task::spawn_blocking(move || {
        jobs::load(&options, false, 1000, |chunk| {
            chunks.blocking_send(chunk).context("the estimator stopped")
        })
    });
    let mut estimator = Estimator::new(&prices);
    let mut counting = !args.no_count_tokens;
    let mut counted_jobs = 0_u64;
    let mut local_jobs = 0_u64;
    // The count of the last sample 0, which the samples after it share.
    let mut last_count = None;
    while let Some(chunk) = receiver.recv().await {
        let mut parsed = Vec::with_capacity(chunk.len());
        for job in chunk {
            let body: Map<String, Value> =
                serde_json::from_str(&job.request).context("a loaded job is not JSON")?;
            // The local view must see jobs in file order for the cache replay.
            let input = estimator.local(&body);
            parsed.push((job.model, body, input, job.sample));
        }
        let counts: Vec<Option<u64>> = if counting {
            // A repeated sample (`--repeat`) sends the request of its sample 0, just before it:
            // counted once.
            let firsts = parsed.iter().filter(|(.., sample)| *sample == 0);
            let results: Vec<Result<u64, SendError>> = futures_util::stream::iter(firsts)
                .map(|(model, body, ..)| count(&sender, model, body))
                .buffered(settings.send.concurrency)
                .collect()
                .await;
            if shutdown.stop.is_cancelled() {
                crate::errln!(
                    "{} after counting {counted_jobs} jobs: no estimate was made",
                    shutdown.stopped_by()
                );
                return Ok(ExitStatus::Interrupted);
            }
            if let Some(Err(SendError::Failed(error))) = results.iter().find(|r| r.is_err())
                && counted_jobs == 0
                && matches!(error.http_status(), Some(404 | 405 | 501))
            {
                warn(&format!(
                    "the gateway has no count_tokens endpoint ({error}); using the local estimate (about 4 bytes per token, 30% more tokens from Opus 4.7 on)"
                ));
                counting = false;
            }
            if counting {
                let mut results = results.into_iter().map(Result::ok);
                parsed
                    .iter()
                    .map(|(.., sample)| {
                        if *sample == 0 {
                            last_count = results.next().flatten();
                        }
                        last_count
                    })
                    .collect()
            } else {
                vec![None; parsed.len()]
            }
        } else {
            vec![None; parsed.len()]
        };
        for ((model, _, input, sample), count) in parsed.into_iter().zip(counts) {
            // Jobs, not samples: a job's later samples share its first one's count.
            match (sample, count) {
                (0, Some(_)) => counted_jobs += 1,
                (0, None) => local_jobs += 1,
                _ => {}
            }
            estimator.add(&model, input, count, sample);
        }
    }
    let summary = reader.await.context("the job reader panicked")??;
    if summary.bad_records > 0 {
        for error in summary.errors.iter().take(20) {
            warn(&error.to_string());
        }
        warn(&format!(
            "{} bad records left out of the estimate",
            summary.bad_records
        ));
    }
    let mean_output = plan::mean_output(&global.db).await?;
    let source = if counted_jobs > 0 {
        TokenSource::CountTokens
    } else {
        TokenSource::Local
    };
    let estimate = estimator.finish(source, &mean_output, args.output_fraction)?;
    for model in &estimate.unpriced {
        if let Some(known) = plan::closest_model(&prices, model) {
            warn(&format!(
                "unknown model `{model}`: did you mean `{known}`? (a gateway answers a model it does not serve with 404 not_found_error)"
            ));
        }
        warn(&format!(
            "no price for model `{model}` in {}: it is left out of the totals, and a run would report it as unpriced; give its rates with --prices FILE or `prices` in the gateway's msgbatch.toml profile",
            prices.describe()
        ));
    }
    let file = args.jobs.file.display().to_string();
    let batches = match settings.send.via {
        crate::settings::Via::Batches => true,
        crate::settings::Via::Direct => false,
        crate::settings::Via::Auto => {
            // Decided on the requests to send, as a run decides it.
            let (via, why) = crate::send::session::auto_via(
                settings.gateway.batches,
                &settings.gateway.name,
                estimate.models.iter().map(|m| m.samples).sum(),
            );
            crate::errln!("{why}");
            via == crate::settings::Via::Batches
        }
    };
    match args.format {
        OutputFormat::Table => print(&estimate, counted_jobs, local_jobs, &file, batches)?,
        OutputFormat::Json => print_json(&estimate, counted_jobs, local_jobs, &file, batches)?,
    }
    Ok(ExitStatus::Success)
}

/// The gateway's count of one job's input tokens.
async fn count(
    sender: &RequestSender,
    model: &str,
    body: &Map<String, Value>,
) -> Result<u64, SendError> {
    let body = Bytes::from(serde_json::to_vec(&count_tokens_body(body)).unwrap_or_default());
    let request = Request {
        kind: Kind::CountTokens,
        job: None,
        attempts_before: 0,
        call: Call::CountTokens { body },
        metered: Some(Metered::request_only(model)),
    };
    match sender.send(&request).await.result {
        Ok(Reply::Tokens(n)) => Ok(n),
        Ok(Reply::Message(_)) => Err(SendError::Stopped),
        Err(e) => Err(e),
    }
}

fn warn(message: &str) {
    crate::errln!("warning: {message}");
}

/// The estimate as one JSON object, money in pico-USD as in the JSON report. Its keys are
/// stable: `file`, `input_source` (`count_tokens`, `local` or `mixed`), `counted_jobs`,
/// `local_jobs` (jobs, each counted once whatever its samples), `models` [{`model`, `jobs`,
/// `samples` (requests: `jobs` × `--repeat`), `input_tokens`, `cache_write_5m`,
/// `cache_write_1h`, `cache_read`, `expected_output_tokens`, `max_output_tokens`,
/// `expected_pico_usd`, `worst_pico_usd` (null when unpriced), `output_basis`}],
/// `expected_pico_usd`, `worst_pico_usd`, `complete`, `unpriced_models`, and `batches`
/// {`expected_pico_usd`, `worst_pico_usd`} with `--via batches`.
fn print_json(
    estimate: &Estimate,
    counted: u64,
    local: u64,
    file: &str,
    batches: bool,
) -> anyhow::Result<()> {
    let source = match (counted, local) {
        (_, 0) => "count_tokens",
        (0, _) => "local",
        _ => "mixed",
    };
    let value = serde_json::json!({
        "file": file,
        "input_source": source,
        "counted_jobs": counted,
        "local_jobs": local,
        "models": estimate.models,
        "expected_pico_usd": estimate.expected_pico_usd,
        "worst_pico_usd": estimate.worst_pico_usd,
        "complete": estimate.unpriced.is_empty(),
        "unpriced_models": estimate.unpriced,
        "batches": batches.then(|| serde_json::json!({
            "expected_pico_usd": estimate.batch_expected_pico_usd,
            "worst_pico_usd": estimate.batch_worst_pico_usd,
        })),
    });
    // JSON escapes its own strings: it is printed as it is, never terminal-escaped.
    super::report::emit(&(serde_json::to_string_pretty(&value)? + "\n"), None)?;
    Ok(())
}

fn print(
    estimate: &Estimate,
    counted: u64,
    local: u64,
    file: &str,
    batches: bool,
) -> std::io::Result<()> {
    let source = match (counted, local) {
        (_, 0) => "input counted by the gateway's count_tokens".to_owned(),
        (0, _) => {
            "input estimated locally (about 4 bytes per token, 30% more tokens from Opus 4.7 on)"
                .to_owned()
        }
        (c, l) => format!("input counted by count_tokens for {c} jobs, estimated locally for {l}"),
    };
    crate::outln!("estimate for {file}: {source}")?;
    // With `--repeat`, the samples (requests) are counted beside the jobs.
    let repeated = estimate.models.iter().any(|m| m.samples != m.jobs);
    let samples = |n: u64| {
        if repeated {
            format!(" {n:>8}")
        } else {
            String::new()
        }
    };
    crate::outln!(
        "\n{:<26} {:>7}{} {:>10} {:>9} {:>9} {:>10} {:>10} {:>11} {:>11}",
        "model",
        "jobs",
        if repeated { "  samples" } else { "" },
        "input",
        "cache wr",
        "cache rd",
        "out exp",
        "out max",
        "expected",
        "worst case"
    )?;
    let money = |pico: Option<u64>| pico.map_or_else(|| "unpriced".to_owned(), format_usd);
    for m in &estimate.models {
        crate::outln!(
            "{:<26} {:>7}{} {:>10} {:>9} {:>9} {:>10} {:>10} {:>11} {:>11}",
            Terminal(&m.model),
            m.jobs,
            samples(m.samples),
            m.input_tokens,
            m.cache_write_5m + m.cache_write_1h,
            m.cache_read,
            m.expected_output_tokens,
            m.max_output_tokens,
            money(m.expected_pico_usd),
            money(m.worst_pico_usd),
        )?;
    }
    let incomplete = if estimate.unpriced.is_empty() {
        ""
    } else {
        "+"
    };
    crate::outln!(
        "{:<26} {:>7}{} {:>10} {:>9} {:>9} {:>10} {:>10} {:>11} {:>11}",
        "total",
        estimate.models.iter().map(|m| m.jobs).sum::<u64>(),
        samples(estimate.models.iter().map(|m| m.samples).sum::<u64>()),
        "",
        "",
        "",
        "",
        "",
        format!("{}{incomplete}", format_usd(estimate.expected_pico_usd)),
        format!("{}{incomplete}", format_usd(estimate.worst_pico_usd)),
    )?;
    crate::outln!()?;
    for m in &estimate.models {
        crate::outln!("expected output of {}: {}", m.model, m.output_basis)?;
    }
    crate::outln!(
        "worst case: every answer runs to max_tokens and nothing is read from the cache"
    )?;
    if batches {
        crate::outln!(
            "through the Message Batches API (--via batches), at half of every price: expected {}, worst case {}",
            format_usd(estimate.batch_expected_pico_usd),
            format_usd(estimate.batch_worst_pico_usd),
        )?;
    }
    if !estimate.unpriced.is_empty() {
        crate::outln!(
            "+ no price for {}: left out of the totals (give --prices)",
            estimate.unpriced.join(", ")
        )?;
    }
    Ok(())
}
