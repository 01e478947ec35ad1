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
use crate::pricing::{CostOverflow, PriceTable, add_cost};
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
    /// Jobs: a record sent to this model, however many samples (`--repeat`) it has.
    pub jobs: u64,
    /// Requests: every sample of every job.
    pub samples: u64,
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
    /// The same two through the Message Batches API, at its rates ([`Rates::batch`]).
    ///
    /// [`Rates::batch`]: crate::pricing::Rates::batch
    pub batch_expected_pico_usd: u64,
    pub batch_worst_pico_usd: u64,
    /// Models whose cost is unknown: the totals leave them out.
    pub unpriced: Vec<String>,
}

/// The counted (or locally estimated) input of one job.
#[derive(Debug, Clone, Copy)]
pub struct JobInput {
    pub usage: PromptUsage,
    pub max_tokens: u64,
}

/// One model's jobs billed at one price tier.
#[derive(Debug, Default)]
struct TierSums {
    usage: Usage,
    /// `max_tokens` of each job, for the expected output.
    max_tokens: Vec<u64>,
}

/// Accumulates jobs in file order.
///
/// A price tier is chosen per request from that request's own total input (as the API bills
/// it), so jobs are summed per (model, tier) and each sum is priced at its tier's rates.
pub struct Estimator {
    prices: PriceTable,
    cache: HashSet<u64>,
    models: BTreeMap<String, (ModelEstimate, BTreeMap<Option<u64>, TierSums>)>,
}

impl Estimator {
    pub fn new(prices: &PriceTable) -> Self {
        Self {
            prices: prices.clone(),
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

    /// Adds one sample of a job (`sample` 0 is the job's first); `counted` is the gateway's
    /// total input count when there is one, which replaces the local total (the difference is
    /// taken as uncached input).
    pub fn add(&mut self, model: &str, input: JobInput, counted: Option<u64>, sample: u32) {
        let (entry, tiers) = self.models.entry(model.to_owned()).or_insert_with(|| {
            (
                ModelEstimate {
                    model: model.to_owned(),
                    ..ModelEstimate::default()
                },
                BTreeMap::new(),
            )
        });
        let cached =
            input.usage.cache_write_5m + input.usage.cache_write_1h + input.usage.cache_read;
        let uncached = match counted {
            Some(total) => total.saturating_sub(cached),
            None => input.usage.input_tokens,
        };
        entry.jobs += u64::from(sample == 0);
        entry.samples += 1;
        entry.input_tokens += uncached;
        entry.cache_write_5m += input.usage.cache_write_5m;
        entry.cache_write_1h += input.usage.cache_write_1h;
        entry.cache_read += input.usage.cache_read;
        entry.max_output_tokens += input.max_tokens;
        let tier = self
            .prices
            .lookup(model)
            .and_then(|price| price.tier(uncached + cached).0);
        let sums = tiers.entry(tier).or_default();
        let u = &mut sums.usage;
        u.input_tokens += uncached;
        u.cache_write_5m_tokens += input.usage.cache_write_5m;
        u.cache_write_1h_tokens += input.usage.cache_write_1h;
        u.cache_creation_input_tokens += input.usage.cache_write_5m + input.usage.cache_write_1h;
        u.cache_read_input_tokens += input.usage.cache_read;
        sums.max_tokens.push(input.max_tokens);
    }

    /// Prices the totals. `mean_output` gives earlier runs' mean output per model.
    pub fn finish(
        self,
        source: TokenSource,
        mean_output: &HashMap<String, (f64, i64)>,
        output_fraction: f64,
    ) -> Result<Estimate, CostOverflow> {
        let mut estimate = Estimate {
            source,
            models: Vec::new(),
            expected_pico_usd: 0,
            worst_pico_usd: 0,
            batch_expected_pico_usd: 0,
            batch_worst_pico_usd: 0,
            unpriced: Vec::new(),
        };
        for (model, (mut entry, tiers)) in self.models {
            let mean = mean_output.get(&model);
            entry.output_basis = match mean {
                Some((mean, results)) => {
                    format!("mean of {results} earlier results ({mean:.0} tokens)")
                }
                None => format!("{:.0}% of max_tokens", output_fraction * 100.0),
            };
            let expected_output = |max_tokens: &[u64]| -> u64 {
                match mean {
                    Some((mean, _)) => max_tokens.iter().map(|m| (*m).min(to_tokens(*mean))).sum(),
                    None => max_tokens
                        .iter()
                        .map(|m| to_tokens(*m as f64 * output_fraction))
                        .sum(),
                }
            };
            let price = self.prices.lookup(&model);
            let (mut expected_cost, mut worst_cost) = (0, 0);
            let (mut batch_expected, mut batch_worst) = (0, 0);
            for (tier, sums) in tiers {
                let output = expected_output(&sums.max_tokens);
                entry.expected_output_tokens += output;
                let Some(price) = price else { continue };
                let rates = match (tier, &price.long_context) {
                    (Some(_), Some((_, rates))) => rates,
                    _ => &price.rates,
                };
                let expected = Usage {
                    output_tokens: output,
                    ..sums.usage
                };
                // Worst case: nothing is read from the cache (every cached token is written
                // again) and every answer runs to max_tokens.
                let cached = sums.usage.cache_read_input_tokens;
                let worst = Usage {
                    output_tokens: sums.max_tokens.iter().sum(),
                    cache_creation_input_tokens: sums.usage.cache_creation_input_tokens + cached,
                    cache_write_5m_tokens: sums.usage.cache_write_5m_tokens + cached,
                    cache_read_input_tokens: 0,
                    ..sums.usage
                };
                for (rates, expected_sum, worst_sum) in [
                    (*rates, &mut expected_cost, &mut worst_cost),
                    (rates.batch(), &mut batch_expected, &mut batch_worst),
                ] {
                    let expected = rates.cost_pico_usd(&expected)?;
                    *expected_sum = add_cost(*expected_sum, expected)?;
                    *worst_sum = add_cost(*worst_sum, rates.cost_pico_usd(&worst)?.max(expected))?;
                }
            }
            if price.is_some() {
                entry.expected_pico_usd = Some(expected_cost);
                entry.worst_pico_usd = Some(worst_cost);
                estimate.expected_pico_usd = add_cost(estimate.expected_pico_usd, expected_cost)?;
                estimate.worst_pico_usd = add_cost(estimate.worst_pico_usd, worst_cost)?;
                estimate.batch_expected_pico_usd =
                    add_cost(estimate.batch_expected_pico_usd, batch_expected)?;
                estimate.batch_worst_pico_usd =
                    add_cost(estimate.batch_worst_pico_usd, batch_worst)?;
            } else {
                estimate.unpriced.push(model.clone());
            }
            estimate.models.push(entry);
        }
        Ok(estimate)
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
    let mut estimator = Estimator::new(prices);
    crate::jobs::load(options, false, 1000, |chunk| {
        for job in chunk {
            let body: Map<String, Value> = serde_json::from_str(&job.request)?;
            let input = estimator.local(&body);
            estimator.add(&job.model, input, None, job.sample);
        }
        Ok(())
    })?;
    Ok(estimator.finish(TokenSource::Local, mean_output, output_fraction)?)
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
        // 5,000 tokens: above Haiku 4.5's minimum cacheable prefix of 4,096.
        let system = "s".repeat(20_000);
        let mut estimator = Estimator::new(&PriceTable::builtin());
        for question in ["first?", "second?", "third?"] {
            let body = json!({"model": "claude-haiku-4-5", "max_tokens": 100,
                "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": question}]});
            let input = estimator.local(body.as_object().unwrap());
            estimator.add("claude-haiku-4-5", input, None, 0);
        }
        let estimate = estimator
            .finish(TokenSource::Local, &HashMap::new(), 0.5)
            .unwrap();
        let haiku = &estimate.models[0];
        assert_eq!((haiku.cache_write_5m, haiku.cache_read), (5000, 10_000));
        assert_eq!(
            (haiku.expected_output_tokens, haiku.max_output_tokens),
            (150, 300)
        );
        // Haiku 4.5: writes 5000·1.25 + reads 10000·0.1 + input 6·1 + output 150·5.
        assert_eq!(
            haiku.expected_pico_usd,
            Some(6_250_000_000 + 1_000_000_000 + 6_000_000 + 750_000_000)
        );
        assert!(estimate.worst_pico_usd > estimate.expected_pico_usd);
    }

    #[test]
    fn each_job_is_priced_at_its_own_tier() {
        // Three Haiku 5.5 jobs: two small prompts and one over 100K tokens. Summed, the three
        // pass 100K, but only the long one is billed at 5x.
        let mut estimator = Estimator::new(&PriceTable::builtin());
        for bytes in [4_000, 4_000, 400_000] {
            let body = json!({"model": "claude-haiku-5-5", "max_tokens": 10,
                "messages": [{"role": "user", "content": "q".repeat(bytes)}]});
            let input = estimator.local(body.as_object().unwrap());
            estimator.add("claude-haiku-5-5", input, None, 0);
        }
        let estimate = estimator
            .finish(TokenSource::Local, &HashMap::new(), 1.0)
            .unwrap();
        let haiku = &estimate.models[0];
        // The newer tokenizer: 4,000 bytes are 1,300 tokens, 400,000 bytes 130,000.
        assert_eq!(haiku.input_tokens, 1_300 + 1_300 + 130_000);
        let base = 2 * (1_300 * 100_000 + 10 * 500_000);
        let long = 130_000 * 500_000 + 10 * 2_500_000;
        assert_eq!(haiku.expected_pico_usd, Some(base + long));
    }
}
