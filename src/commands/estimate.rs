//! `msgbatch estimate`: what a job file would cost, before anything is spent.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::{Global, plan};
use crate::ExitStatus;
use crate::cli::EstimateArgs;
use crate::client::{AttemptError, Client};
use crate::estimate::{Estimate, Estimator, TokenSource, count_tokens_body};
use crate::jobs::{self, NewJobChunk};
use crate::limiter::Limiter;
use crate::pricing::format_usd;

/// Attempts per count_tokens request.
const COUNT_ATTEMPTS: u32 = 4;

pub async fn estimate(global: &Global, args: EstimateArgs) -> anyhow::Result<ExitStatus> {
    if !(0.0..=1.0).contains(&args.output_fraction) {
        anyhow::bail!("--output-fraction must be between 0 and 1");
    }
    let (settings, options, key) =
        plan::plan(global, &args.jobs, &args.gateway, &args.mock, &args.sending)?;
    // Held until the estimate ends: a mock estimate's gateway lives as long as this command.
    let (_mock, client) = plan::connect(&settings, key).await?;
    let limiter = Limiter::new(settings.send.rpm);
    let prices = plan::prices_for(&settings.gateway)?;

    let (sender, mut receiver) = tokio::sync::mpsc::channel::<NewJobChunk>(4);
    let reader = tokio::task::spawn_blocking(move || {
        jobs::load(&options, false, 1000, |chunk| {
            sender.blocking_send(chunk).context("the estimator stopped")
        })
    });
    let mut estimator = Estimator::new(&prices);
    let mut counting = !args.no_count_tokens;
    let mut counted_jobs = 0_u64;
    let mut local_jobs = 0_u64;
    while let Some(chunk) = receiver.recv().await {
        let mut parsed = Vec::with_capacity(chunk.len());
        for job in chunk {
            let body: Map<String, Value> =
                serde_json::from_str(&job.request).context("a loaded job is not JSON")?;
            // The local view must see jobs in file order for the cache replay.
            let input = estimator.local(&body);
            parsed.push((job.model, body, input));
        }
        let counts: Vec<Option<u64>> = if counting {
            let results: Vec<Result<u64, AttemptError>> = futures_util::stream::iter(parsed.iter())
                .map(|(_, body, _)| count_with_retries(&client, &limiter, body))
                .buffered(settings.send.concurrency)
                .collect()
                .await;
            if let Some(Err(error)) = results.iter().find(|r| r.is_err())
                && counted_jobs == 0
                && matches!(error.http_status(), Some(404 | 405 | 501))
            {
                warn(&format!(
                    "the gateway has no count_tokens endpoint ({error}); using the local estimate (about 4 bytes per token, 30% more tokens from Opus 4.7 on)"
                ));
                counting = false;
            }
            if counting {
                results.into_iter().map(Result::ok).collect()
            } else {
                vec![None; parsed.len()]
            }
        } else {
            vec![None; parsed.len()]
        };
        for ((model, _, input), count) in parsed.into_iter().zip(counts) {
            if count.is_some() {
                counted_jobs += 1;
            } else {
                local_jobs += 1;
            }
            estimator.add(&model, input, count);
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
    let estimate = estimator.finish(source, &mean_output, args.output_fraction);
    for model in &estimate.unpriced {
        warn(&format!(
            "no price for model `{model}` in {}: it is left out of the totals, and a run would report it as unpriced; give its rates with --prices FILE or `prices` in the gateway's msgbatch.toml profile",
            prices.describe()
        ));
    }
    print(
        &estimate,
        counted_jobs,
        local_jobs,
        &args.jobs.file.display().to_string(),
    );
    Ok(ExitStatus::Success)
}

async fn count_with_retries(
    client: &Client,
    limiter: &Limiter,
    body: &Map<String, Value>,
) -> Result<u64, AttemptError> {
    let bytes = Bytes::from(serde_json::to_vec(&count_tokens_body(body)).unwrap_or_default());
    let mut attempt = 0;
    loop {
        limiter.until_ready().await;
        match client.count_tokens(bytes.clone()).await {
            Ok(n) => return Ok(n),
            Err(e) if e.is_retryable() && attempt + 1 < COUNT_ATTEMPTS => {
                let backoff = Duration::from_millis(250 << attempt);
                tokio::time::sleep(e.retry_after().map_or(backoff, |r| r.max(backoff))).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[expect(clippy::print_stderr, reason = "warnings go to stderr")]
fn warn(message: &str) {
    eprintln!("warning: {message}");
}

#[expect(clippy::print_stdout, reason = "the estimate is the command's output")]
fn print(estimate: &Estimate, counted: u64, local: u64, file: &str) {
    let source = match (counted, local) {
        (_, 0) => "input counted by the gateway's count_tokens".to_owned(),
        (0, _) => {
            "input estimated locally (about 4 bytes per token, 30% more tokens from Opus 4.7 on)"
                .to_owned()
        }
        (c, l) => format!("input counted by count_tokens for {c} jobs, estimated locally for {l}"),
    };
    println!("estimate for {file}: {source}");
    println!(
        "\n{:<26} {:>7} {:>10} {:>9} {:>9} {:>10} {:>10} {:>11} {:>11}",
        "model",
        "jobs",
        "input",
        "cache wr",
        "cache rd",
        "out exp",
        "out max",
        "expected",
        "worst case"
    );
    let money = |pico: Option<u64>| pico.map_or_else(|| "unpriced".to_owned(), format_usd);
    for m in &estimate.models {
        println!(
            "{:<26} {:>7} {:>10} {:>9} {:>9} {:>10} {:>10} {:>11} {:>11}",
            m.model,
            m.jobs,
            m.input_tokens,
            m.cache_write_5m + m.cache_write_1h,
            m.cache_read,
            m.expected_output_tokens,
            m.max_output_tokens,
            money(m.expected_pico_usd),
            money(m.worst_pico_usd),
        );
    }
    let incomplete = if estimate.unpriced.is_empty() {
        ""
    } else {
        "+"
    };
    println!(
        "{:<26} {:>7} {:>10} {:>9} {:>9} {:>10} {:>10} {:>11} {:>11}",
        "total",
        estimate.models.iter().map(|m| m.jobs).sum::<u64>(),
        "",
        "",
        "",
        "",
        "",
        format!("{}{incomplete}", format_usd(estimate.expected_pico_usd)),
        format!("{}{incomplete}", format_usd(estimate.worst_pico_usd)),
    );
    println!();
    for m in &estimate.models {
        println!("expected output of {}: {}", m.model, m.output_basis);
    }
    println!("worst case: every answer runs to max_tokens and nothing is read from the cache");
    if !estimate.unpriced.is_empty() {
        println!(
            "+ no price for {}: left out of the totals (give --prices)",
            estimate.unpriced.join(", ")
        );
    }
}
