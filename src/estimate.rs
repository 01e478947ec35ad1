//! Cost before spending: expected and worst-case cost of a job file, per model.
//!
//! Input tokens come from the gateway's `count_tokens` endpoint when it has one, else from the
//! local token model in [`crate::tokens`]. Cache writes and reads are predicted by replaying the
//! file's `cache_control` prefixes in order: the first job with a prefix writes it, later jobs
//! read it. Expected output is the mean output of earlier results of the same model in the
//! database, else a stated fraction of `max_tokens`; the worst case takes every job to
//! `max_tokens` and every cached token as a write.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::message::Usage;
use crate::pricing::PriceTable;
use crate::tokens::{self, PromptUsage};

/// Where the input token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    CountTokens,
    Local,
}

/// Per-model figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelEstimate {
    pub model: String,
    pub jobs: u64,
    pub input_tokens: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub cache_read: u64,
    pub expected_output_tokens: u64,
    pub max_output_tokens: u64,
    /// `None` for a model without a price.
    pub expected_pico_usd: Option<u64>,
    pub worst_pico_usd: Option<u64>,
    /// How the expected output was found.
    pub output_basis: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub source: TokenSource,
    pub models: Vec<ModelEstimate>,
    pub expected_pico_usd: u64,
    pub worst_pico_usd: u64,
    /// Models whose cost is unknown: the totals leave them out.
    pub unpriced: Vec<String>,
}

/// The counted (or locally estimated) input of one job.
#[derive(Debug, Clone, Copy)]
pub struct JobInput {
    pub usage: PromptUsage,
    pub max_tokens: u64,
}

/// Accumulates jobs in file order.
pub struct Estimator {
    cache: HashSet<u64>,
    models: BTreeMap<String, (ModelEstimate, Vec<u64>)>,
}

impl Default for Estimator {
    fn default() -> Self {
        Self::new()
    }
}

impl Estimator {
    pub fn new() -> Self {
        Self {
            cache: HashSet::new(),
            models: BTreeMap::new(),
        }
    }

    /// The local view of a job: its input split by the prompt cache so far.
    pub fn local(&mut self, body: &Map<String, Value>) -> JobInput {
        JobInput {
            usage: tokens::input_usage(body, &mut self.cache),
            max_tokens: body.get("max_tokens").and_then(Value::as_u64).unwrap_or(0),
        }
    }

    /// Adds a job; `counted` is the gateway's total input count when there is one, which
    /// replaces the local total (the difference is taken as uncached input).
    pub fn add(&mut self, model: &str, input: JobInput, counted: Option<u64>) {
        let (entry, max_tokens) = self.models.entry(model.to_owned()).or_insert_with(|| {
            (
                ModelEstimate {
                    model: model.to_owned(),
                    ..ModelEstimate::default()
                },
                Vec::new(),
            )
        });
        let cached =
            input.usage.cache_write_5m + input.usage.cache_write_1h + input.usage.cache_read;
        let uncached = match counted {
            Some(total) => total.saturating_sub(cached),
            None => input.usage.input_tokens,
        };
        entry.jobs += 1;
        entry.input_tokens += uncached;
        entry.cache_write_5m += input.usage.cache_write_5m;
        entry.cache_write_1h += input.usage.cache_write_1h;
        entry.cache_read += input.usage.cache_read;
        entry.max_output_tokens += input.max_tokens;
        max_tokens.push(input.max_tokens);
    }

    /// Prices the totals. `mean_output` gives earlier runs' mean output per model.
    pub fn finish(
        self,
        source: TokenSource,
        prices: &PriceTable,
        mean_output: &HashMap<String, (f64, i64)>,
        output_fraction: f64,
    ) -> Estimate {
        let mut estimate = Estimate {
            source,
            models: Vec::new(),
            expected_pico_usd: 0,
            worst_pico_usd: 0,
            unpriced: Vec::new(),
        };
        for (model, (mut entry, max_tokens)) in self.models {
            let expected_output: u64 = match mean_output.get(&model) {
                Some((mean, results)) => {
                    entry.output_basis =
                        format!("mean of {results} earlier results ({mean:.0} tokens)");
                    max_tokens.iter().map(|m| (*m).min(to_tokens(*mean))).sum()
                }
                None => {
                    entry.output_basis = format!("{:.0}% of max_tokens", output_fraction * 100.0);
                    max_tokens
                        .iter()
                        .map(|m| to_tokens(*m as f64 * output_fraction))
                        .sum()
                }
            };
            entry.expected_output_tokens = expected_output;
            if let Some(price) = prices.lookup(&model) {
                let expected = Usage {
                    input_tokens: entry.input_tokens,
                    output_tokens: expected_output,
                    cache_creation_input_tokens: entry.cache_write_5m + entry.cache_write_1h,
                    cache_write_5m_tokens: entry.cache_write_5m,
                    cache_write_1h_tokens: entry.cache_write_1h,
                    cache_read_input_tokens: entry.cache_read,
                };
                // Worst case: nothing is read from the cache (every cached token is written
                // again) and every answer runs to max_tokens.
                let worst = Usage {
                    output_tokens: entry.max_output_tokens,
                    cache_creation_input_tokens: entry.cache_write_5m
                        + entry.cache_write_1h
                        + entry.cache_read,
                    cache_write_5m_tokens: entry.cache_write_5m + entry.cache_read,
                    cache_read_input_tokens: 0,
                    ..expected
                };
                let expected = price.cost_pico_usd(&expected);
                let worst = price.cost_pico_usd(&worst).max(expected);
                entry.expected_pico_usd = Some(expected);
                entry.worst_pico_usd = Some(worst);
                estimate.expected_pico_usd += expected;
                estimate.worst_pico_usd += worst;
            } else {
                estimate.unpriced.push(model.clone());
            }
            estimate.models.push(entry);
        }
        estimate
    }
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "token counts are small and non-negative"
)]
fn to_tokens(value: f64) -> u64 {
    value.max(0.0).round() as u64
}

/// A local estimate of a job file (no request sent), as `run --confirm-above` uses.
pub fn local_estimate(
    options: &crate::jobs::LoadOptions,
    prices: &PriceTable,
    mean_output: &HashMap<String, (f64, i64)>,
    output_fraction: f64,
) -> anyhow::Result<Estimate> {
    let mut estimator = Estimator::new();
    crate::jobs::load(options, false, 1000, |chunk| {
        for job in chunk {
            let body: Map<String, Value> = serde_json::from_str(&job.request)?;
            let input = estimator.local(&body);
            estimator.add(&job.model, input, None);
        }
        Ok(())
    })?;
    Ok(estimator.finish(TokenSource::Local, prices, mean_output, output_fraction))
}

/// The body `count_tokens` takes: the Messages body without the fields it refuses.
pub fn count_tokens_body(body: &Map<String, Value>) -> Map<String, Value> {
    const KEPT: [&str; 7] = [
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "cache_control",
    ];
    body.iter()
        .filter(|(k, _)| KEPT.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shared_prefixes_are_written_once_and_the_worst_case_bounds_the_expected() {
        let system = "s".repeat(8000); // 2000 tokens
        let mut estimator = Estimator::new();
        for question in ["first?", "second?", "third?"] {
            let body = json!({"model": "claude-haiku-4-5", "max_tokens": 100,
                "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": question}]});
            let input = estimator.local(body.as_object().unwrap());
            estimator.add("claude-haiku-4-5", input, None);
        }
        let estimate = estimator.finish(
            TokenSource::Local,
            &PriceTable::builtin(),
            &HashMap::new(),
            0.5,
        );
        let haiku = &estimate.models[0];
        assert_eq!((haiku.cache_write_5m, haiku.cache_read), (2000, 4000));
        assert_eq!(
            (haiku.expected_output_tokens, haiku.max_output_tokens),
            (150, 300)
        );
        // Haiku 4.5: writes 2000·1.25 + reads 4000·0.1 + input 6·1 + output 150·5.
        assert_eq!(
            haiku.expected_pico_usd,
            Some(2_500_000_000 + 400_000_000 + 6_000_000 + 750_000_000)
        );
        assert!(estimate.worst_pico_usd > estimate.expected_pico_usd);
    }
}
