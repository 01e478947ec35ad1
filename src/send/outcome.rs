//! What an answer comes to: its result row, priced, for the direct and the batch way alike,
//! and the most a job can cost before it is sent.

use std::time::Duration;

use crate::client::Answer;
use crate::pricing::{CostOverflow, PriceTable};
use crate::store::{PendingJob, ResultRecord, now_ms};

/// How a job stands to the prompt cache, for its result.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheUse {
    /// The longest prefix it would write, when it has one.
    pub prefix: Option<u64>,
    /// It waited for another job to warm that prefix.
    pub held: bool,
}

/// The result row of an answer, or [`CostOverflow`] when its usage prices beyond what can be
/// counted (and so summed): such an answer is refused rather than recorded with a wrong cost.
pub(crate) fn result_record(
    prices: &PriceTable,
    job: i64,
    model: &str,
    expect: Option<&str>,
    answer: Answer,
    cache: CacheUse,
) -> Result<ResultRecord, CostOverflow> {
    let response = String::from_utf8_lossy(&answer.body).into_owned();
    let grades = match expect {
        Some(expect) => crate::eval::grade_job(job, expect, &response, millis(answer.latency)),
        None => Vec::new(),
    };
    let usage = answer.summary.usage();
    // Price by the model asked for; a gateway may answer with a dated id of the same model.
    let cost = prices
        .cost_pico_usd(model, &usage)
        .or_else(|| {
            answer
                .summary
                .model
                .as_deref()
                .and_then(|m| prices.cost_pico_usd(m, &usage))
        })
        .transpose()?;
    Ok(ResultRecord {
        job,
        response,
        note: answer.note,
        message_id: answer.summary.id,
        response_model: answer.summary.model,
        stop_reason: answer.summary.stop_reason,
        stop_sequence: answer.summary.stop_sequence,
        service_tier: answer.summary.usage.and_then(|u| u.service_tier),
        usage,
        latency_ms: millis(answer.latency),
        ttft_ms: answer.ttft.map(millis),
        streamed: answer.streamed,
        cost_pico_usd: cost,
        completed_at_ms: now_ms(),
        grades,
        cache_prefix: cache
            .prefix
            .map(|hash| i64::from_ne_bytes(hash.to_ne_bytes())),
        held_for_warmup: cache.held,
        batch: false,
    })
}

/// The most a job can cost, or `None` when its model has no price.
pub fn worst_case(prices: &PriceTable, job: &PendingJob) -> Result<Option<u64>, CostOverflow> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        max_tokens: u64,
    }
    let max_tokens = serde_json::from_str::<Probe>(&job.request).map_or(0, |p| p.max_tokens);
    worst_case_of(prices, job, max_tokens)
}

/// [`worst_case`] of a job whose request's `max_tokens` was read already (0 when it is not
/// an integer of 0 or more).
pub fn worst_case_of(
    prices: &PriceTable,
    job: &PendingJob,
    max_tokens: u64,
) -> Result<Option<u64>, CostOverflow> {
    prices
        .worst_case_pico_usd(&job.model, job.request.len() as u64, max_tokens)
        .transpose()
}

pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
