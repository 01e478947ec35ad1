//! Prices and cost arithmetic.
//!
//! Money is never a float here: prices are held as integer micro-USD per million tokens, so
//! `tokens × price` is an exact count of pico-USD (1e-12 USD) in a `u64`/`i64`. Dollars appear
//! only when a figure is displayed. Every product and sum is checked: a cost that would not
//! fit the store's `i64` (above about $9.2M) is a [`CostOverflow`], never a saturated or
//! wrapped figure.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::message::Usage;
use crate::tokens::Tokenizer;

/// The table compiled into the binary.
const BUILTIN: &str = include_str!("../prices.toml");

/// Pico-USD in one USD.
pub const PICO_PER_USD: u64 = 1_000_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("failed to read price file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid price file {path}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid price file {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The most pico-USD one figure may hold: what the store's `i64` columns hold (about $9.2M).
pub const MAX_PICO_USD: u64 = i64::MAX as u64;

/// A cost that cannot be counted: the tokens it prices are more than any request could use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a cost above $9.2M, beyond what msgbatch counts: usage no request could produce")]
pub struct CostOverflow;

/// `Σ tokens × rate`, exactly, or [`CostOverflow`] past [`MAX_PICO_USD`].
pub fn checked_cost(terms: &[(u64, u64)]) -> Result<u64, CostOverflow> {
    let mut total: u128 = 0;
    for &(tokens, rate) in terms {
        // A u64 by a u64 always fits a u128; five of them may not.
        let term = u128::from(tokens) * u128::from(rate);
        total = total.checked_add(term).ok_or(CostOverflow)?;
    }
    u64::try_from(total)
        .ok()
        .filter(|total| *total <= MAX_PICO_USD)
        .ok_or(CostOverflow)
}

/// `a + b` as a cost, or [`CostOverflow`] past [`MAX_PICO_USD`].
pub fn add_cost(a: u64, b: u64) -> Result<u64, CostOverflow> {
    a.checked_add(b)
        .filter(|total| *total <= MAX_PICO_USD)
        .ok_or(CostOverflow)
}

/// Five prices in micro-USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rates {
    pub input: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub cache_read: u64,
    pub output: u64,
}

/// What one usage costs, by kind of token, in pico-USD: the parts add up to `total` exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CostParts {
    pub input: u64,
    /// 5-minute and 1-hour cache writes.
    pub cache_write: u64,
    pub cache_read: u64,
    pub output: u64,
    pub total: u64,
}

impl Rates {
    /// The rates of the Message Batches API: half of every rate, input and output, cache
    /// writes and reads, base and long-context tier alike ("every token is billed at 50% of the
    /// standard price"), rounded up to a whole micro-USD per million tokens.
    ///
    /// This is the one place a batch is discounted, and its one rounding rule:
    /// - The rate is halved, not each cost. The API publishes the batch price as a rate (Opus
    ///   4.1 in batch is $7.50 input, $37.50 output per million tokens) and bills tokens at it,
    ///   so a cost stays `tokens × rate`: exact, and linear, so the costs stored with each
    ///   result add up to what the report gives for their summed tokens. Halving each cost
    ///   would round once per result but once per slice in a report, and the two would differ.
    /// - Every published rate is a whole number of micro-USD per million tokens that is even,
    ///   so its half is exact and nothing is rounded. Only a price file with a sixth decimal
    ///   that is odd (say $0.000003) has a half-micro rate; it is rounded up, so a batch figure
    ///   is never below what the API bills, and a worst case at these rates still bounds what a
    ///   request can cost against `--max-cost`.
    #[must_use]
    pub fn batch(&self) -> Self {
        Self {
            input: self.input.div_ceil(2),
            cache_write_5m: self.cache_write_5m.div_ceil(2),
            cache_write_1h: self.cache_write_1h.div_ceil(2),
            cache_read: self.cache_read.div_ceil(2),
            output: self.output.div_ceil(2),
        }
    }

    /// Exact cost of `usage` at these rates, in pico-USD, by kind of token: each token count
    /// times its rate (micro-USD per million tokens, so the product is pico-USD).
    pub fn cost_parts(&self, usage: &Usage) -> Result<CostParts, CostOverflow> {
        let input = checked_cost(&[(usage.input_tokens, self.input)])?;
        let cache_write = checked_cost(&[
            (usage.cache_write_5m_tokens, self.cache_write_5m),
            (usage.cache_write_1h_tokens, self.cache_write_1h),
        ])?;
        let cache_read = checked_cost(&[(usage.cache_read_input_tokens, self.cache_read)])?;
        let output = checked_cost(&[(usage.output_tokens, self.output)])?;
        let total = add_cost(add_cost(add_cost(input, cache_write)?, cache_read)?, output)?;
        Ok(CostParts {
            input,
            cache_write,
            cache_read,
            output,
            total,
        })
    }

    /// Exact cost of `usage` at these rates, in pico-USD.
    pub fn cost_pico_usd(&self, usage: &Usage) -> Result<u64, CostOverflow> {
        self.cost_parts(usage).map(|parts| parts.total)
    }

    /// What the prompt cache saved on `usage`: its cache writes and reads at the plain input
    /// rate, less what they cost as writes and reads. Negative when the writes cost more than
    /// the reads saved.
    pub fn caching_saved_pico_usd(&self, usage: &Usage) -> Result<i64, CostOverflow> {
        let parts = self.cost_parts(usage)?;
        let cached = checked_cost(&[
            (usage.cache_write_5m_tokens, self.input),
            (usage.cache_write_1h_tokens, self.input),
            (usage.cache_read_input_tokens, self.input),
        ])?;
        Ok(signed(cached) - signed(parts.cache_write) - signed(parts.cache_read))
    }

    /// What reading `read_tokens` from the cache saved over writing them again: those tokens
    /// at the 5-minute write rate, less what they cost as reads.
    pub fn warmup_saved_pico_usd(&self, read_tokens: u64) -> Result<i64, CostOverflow> {
        let as_writes = checked_cost(&[(read_tokens, self.cache_write_5m)])?;
        let as_reads = checked_cost(&[(read_tokens, self.cache_read)])?;
        Ok(signed(as_writes) - signed(as_reads))
    }
}

/// A figure of at most [`MAX_PICO_USD`] as the store's signed type, which holds every one.
pub fn signed(pico: u64) -> i64 {
    i64::try_from(pico).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelPrice {
    pub rates: Rates,
    /// Rates for every token of a request whose total input (uncached input, cache writes and
    /// cache reads) is above the threshold: a long-context premium, or a price set by prompt
    /// length such as Haiku 5.5's.
    pub long_context: Option<(u64, Rates)>,
}

impl ModelPrice {
    /// The tier a request of `total_input` tokens is billed at: `Some(threshold)` above the
    /// base one, with its rates.
    pub fn tier(&self, total_input: u64) -> (Option<u64>, &Rates) {
        match &self.long_context {
            Some((above, rates)) if total_input > *above => (Some(*above), rates),
            _ => (None, &self.rates),
        }
    }

    pub fn rates_for(&self, usage: &Usage) -> &Rates {
        self.tier(usage.total_input_tokens()).1
    }

    pub fn cost_pico_usd(&self, usage: &Usage) -> Result<u64, CostOverflow> {
        self.rates_for(usage).cost_pico_usd(usage)
    }

    /// The same model through the Message Batches API: every tier at [`Rates::batch`], with
    /// the same thresholds.
    #[must_use]
    pub fn batch(&self) -> Self {
        Self {
            rates: self.rates.batch(),
            long_context: self
                .long_context
                .map(|(above, rates)| (above, rates.batch())),
        }
    }

    /// An upper bound on the cost of a request of at most `input_tokens` input tokens answered
    /// with `max_tokens` tokens: every input token at the dearest input-side rate of any tier
    /// (a 1-hour cache write), and the output at the dearest output rate.
    pub fn worst_case_pico_usd(
        &self,
        input_tokens: u64,
        max_tokens: u64,
    ) -> Result<u64, CostOverflow> {
        let tiers = std::iter::once(&self.rates).chain(self.long_context.as_ref().map(|(_, r)| r));
        let input = tiers
            .clone()
            .map(|r| r.input.max(r.cache_write_5m).max(r.cache_write_1h))
            .max()
            .unwrap_or(0);
        let output = tiers.map(|r| r.output).max().unwrap_or(0);
        checked_cost(&[(input_tokens, input), (max_tokens, output)])
    }
}

/// A model of the table as the file gives it, for listing.
#[derive(Debug, Clone, Serialize)]
pub struct PriceEntry {
    pub model: String,
    pub aliases: Vec<String>,
    pub rates: Rates,
    /// Rates for requests whose total input is above `above_input_tokens`.
    pub above: Option<TierRates>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TierRates {
    pub above_input_tokens: u64,
    pub rates: Rates,
}

#[derive(Debug, Clone)]
pub struct PriceTable {
    pub source: String,
    /// The day the source was read, as the file gives it.
    pub read_on: Option<String>,
    /// Every id and alias, to its place in `prices` and `entries`.
    index: HashMap<String, usize>,
    prices: Vec<ModelPrice>,
    entries: Vec<PriceEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTable {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    read_on: Option<String>,
    models: BTreeMap<String, FileModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    #[serde(default)]
    aliases: Vec<String>,
    input: f64,
    cache_write_5m: f64,
    cache_write_1h: f64,
    cache_read: f64,
    output: f64,
    #[serde(default)]
    long_context: Option<FileLongContext>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLongContext {
    above_input_tokens: u64,
    input: f64,
    cache_write_5m: f64,
    cache_write_1h: f64,
    cache_read: f64,
    output: f64,
}

impl PriceTable {
    pub fn builtin() -> Self {
        Self::parse(BUILTIN, "built-in prices.toml").expect("the built-in price table is valid")
    }

    pub fn from_file(path: &Path) -> Result<Self, PriceError> {
        let display = path.display().to_string();
        let text =
            crate::textfile::read(path, crate::textfile::MAX_PRICES_BYTES).map_err(|source| {
                PriceError::Read {
                    path: display.clone(),
                    source,
                }
            })?;
        Self::parse(&text, &display)
    }

    /// A table from the text of a price file; `path` names it in errors.
    pub fn from_text(text: &str, path: &str) -> Result<Self, PriceError> {
        Self::parse(text, path)
    }

    fn parse(text: &str, path: &str) -> Result<Self, PriceError> {
        let file: FileTable = toml::from_str(text).map_err(|source| PriceError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let mut index = HashMap::new();
        let mut prices = Vec::with_capacity(file.models.len());
        let mut entries = Vec::with_capacity(file.models.len());
        let invalid = |message: String| PriceError::Invalid {
            path: path.to_owned(),
            message,
        };
        for (name, model) in file.models {
            let rates = to_rates([
                model.input,
                model.cache_write_5m,
                model.cache_write_1h,
                model.cache_read,
                model.output,
            ])
            .map_err(|m| invalid(format!("model {name}: {m}")))?;
            let long_context = match &model.long_context {
                Some(lc) => Some((
                    lc.above_input_tokens,
                    to_rates([
                        lc.input,
                        lc.cache_write_5m,
                        lc.cache_write_1h,
                        lc.cache_read,
                        lc.output,
                    ])
                    .map_err(|m| invalid(format!("model {name} long_context: {m}")))?,
                )),
                None => None,
            };
            let price = ModelPrice {
                rates,
                long_context,
            };
            for id in std::iter::once(&name).chain(&model.aliases) {
                if index.insert(id.clone(), prices.len()).is_some() {
                    return Err(invalid(format!(
                        "model {name}: `{id}` names another model of the table too"
                    )));
                }
            }
            prices.push(price);
            entries.push(PriceEntry {
                model: name,
                aliases: model.aliases,
                rates,
                above: long_context.map(|(above_input_tokens, rates)| TierRates {
                    above_input_tokens,
                    rates,
                }),
            });
        }
        Ok(Self {
            source: file.source.unwrap_or_else(|| path.to_owned()),
            read_on: file.read_on,
            index,
            prices,
            entries,
        })
    }

    /// The same table at the rates of the Message Batches API ([`Rates::batch`]): what a
    /// batch session prices its results and worst cases with.
    #[must_use]
    pub fn batch(&self) -> Self {
        Self {
            source: self.source.clone(),
            read_on: self.read_on.clone(),
            index: self.index.clone(),
            prices: self.prices.iter().map(ModelPrice::batch).collect(),
            entries: self
                .entries
                .iter()
                .map(|entry| PriceEntry {
                    rates: entry.rates.batch(),
                    above: entry.above.as_ref().map(|tier| TierRates {
                        above_input_tokens: tier.above_input_tokens,
                        rates: tier.rates.batch(),
                    }),
                    ..entry.clone()
                })
                .collect(),
        }
    }

    /// Every model of the table with its aliases, in model-id order.
    pub fn entries(&self) -> &[PriceEntry] {
        &self.entries
    }

    /// The source, with the day it was read when the file gives it.
    pub fn describe(&self) -> String {
        match &self.read_on {
            Some(day) => format!("{}, read {day}", self.source),
            None => self.source.clone(),
        }
    }

    /// The most a request to `model` of `request_bytes` bytes with `max_tokens` can cost:
    /// input tokens bounded from the bytes by the model's tokenizer. `None` without a price.
    pub fn worst_case_pico_usd(
        &self,
        model: &str,
        request_bytes: u64,
        max_tokens: u64,
    ) -> Option<Result<u64, CostOverflow>> {
        let input = Tokenizer::of(model).most_tokens_in(request_bytes);
        self.lookup(model)
            .map(|price| price.worst_case_pico_usd(input, max_tokens))
    }

    /// Finds a model's price by exact id, then alias, then with a trailing `-YYYYMMDD` date
    /// removed, so that a dated snapshot id resolves to its family's price.
    pub fn lookup(&self, model: &str) -> Option<&ModelPrice> {
        self.find(model).map(|i| &self.prices[i])
    }

    /// The table's row for a model id, alias or dated id, as the file gives it.
    pub fn entry(&self, model: &str) -> Option<&PriceEntry> {
        self.find(model).map(|i| &self.entries[i])
    }

    fn find(&self, model: &str) -> Option<usize> {
        self.index
            .get(model)
            .or_else(|| strip_date(model).and_then(|family| self.index.get(family)))
            .copied()
    }

    /// Every long-context threshold in the table.
    pub fn long_context_thresholds(&self) -> impl Iterator<Item = u64> + '_ {
        self.prices
            .iter()
            .filter_map(|p| p.long_context.as_ref().map(|(above, _)| *above))
    }

    /// Cost of a result in pico-USD, or `None` for a model without a price.
    pub fn cost_pico_usd(&self, model: &str, usage: &Usage) -> Option<Result<u64, CostOverflow>> {
        self.lookup(model).map(|price| price.cost_pico_usd(usage))
    }
}

fn strip_date(model: &str) -> Option<&str> {
    let (family, date) = model.rsplit_once('-')?;
    (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit())).then_some(family)
}

/// Converts `[input, cache_write_5m, cache_write_1h, cache_read, output]` in USD.
fn to_rates(usd: [f64; 5]) -> Result<Rates, String> {
    let [input, cache_write_5m, cache_write_1h, cache_read, output] = usd;
    let micro = |name: &str, usd: f64| -> Result<u64, String> {
        if !usd.is_finite() || !(0.0..=1_000_000.0).contains(&usd) {
            return Err(format!(
                "{name} = {usd} is not a price in USD per million tokens"
            ));
        }
        // Prices have at most six decimals, so rounding recovers them exactly.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked above: finite, non-negative and bounded"
        )]
        Ok((usd * 1e6).round() as u64)
    };
    Ok(Rates {
        input: micro("input", input)?,
        cache_write_5m: micro("cache_write_5m", cache_write_5m)?,
        cache_write_1h: micro("cache_write_1h", cache_write_1h)?,
        cache_read: micro("cache_read", cache_read)?,
        output: micro("output", output)?,
    })
}

/// Formats pico-USD as dollars with enough decimals to show sub-cent costs.
pub fn format_usd(pico: u64) -> String {
    let micro = pico / 1_000_000;
    format!("${}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's figures, every one of which fits in these tests.
    trait Counted {
        fn cost_ok(&self, model: &str, usage: &Usage) -> Option<u64>;
        fn worst_ok(&self, model: &str, bytes: u64, max_tokens: u64) -> Option<u64>;
    }

    impl Counted for PriceTable {
        fn cost_ok(&self, model: &str, usage: &Usage) -> Option<u64> {
            self.cost_pico_usd(model, usage).map(Result::unwrap)
        }
        fn worst_ok(&self, model: &str, bytes: u64, max_tokens: u64) -> Option<u64> {
            self.worst_case_pico_usd(model, bytes, max_tokens)
                .map(Result::unwrap)
        }
    }

    #[test]
    fn a_cost_beyond_what_the_store_holds_is_an_error_never_a_saturated_figure() {
        let table = PriceTable::builtin();
        // 2^52 input tokens at $15 per million: $67 billion.
        let huge = usage(1 << 52, 0, 0, 0, 0);
        assert_eq!(
            table.cost_pico_usd("claude-opus-4-1-20250805", &huge),
            Some(Err(CostOverflow))
        );
        // Each term fits a u64, their sum does not.
        let rates = table.lookup("claude-opus-4-1-20250805").unwrap().rates;
        let wide = usage(1 << 40, 1 << 40, 1 << 40, 1 << 40, 1 << 40);
        assert_eq!(rates.cost_pico_usd(&wide), Err(CostOverflow));
        // Just below the bound is exact; one more pico-USD is not held.
        assert_eq!(checked_cost(&[(MAX_PICO_USD, 1)]), Ok(MAX_PICO_USD));
        assert_eq!(
            checked_cost(&[(MAX_PICO_USD, 1), (1, 1)]),
            Err(CostOverflow)
        );
        assert_eq!(add_cost(MAX_PICO_USD, 1), Err(CostOverflow));
        assert_eq!(
            table.worst_case_pico_usd("claude-opus-4-1-20250805", u64::MAX, u64::MAX),
            Some(Err(CostOverflow))
        );
    }

    fn usage(input: u64, w5: u64, w1: u64, read: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_creation_input_tokens: w5 + w1,
            cache_write_5m_tokens: w5,
            cache_write_1h_tokens: w1,
            cache_read_input_tokens: read,
        }
    }

    #[test]
    fn cost_is_cache_aware_and_exact() {
        let table = PriceTable::builtin();
        // Sonnet 4.6: 3.00 in, 3.75 5m write, 6.00 1h write, 0.30 read, 15.00 out.
        // 1000·3 + 2000·3.75 + 3000·6 + 4000·0.30 + 500·15 = 3000+7500+18000+1200+7500 = 37200 µUSD·MTok⁻¹·tok
        // = $0.0372.
        let cost = table
            .cost_ok("claude-sonnet-4-6", &usage(1000, 2000, 3000, 4000, 500))
            .unwrap();
        assert_eq!(cost, 37_200_000_000);
        assert_eq!(format_usd(cost), "$0.037200");
    }

    #[test]
    fn dated_ids_and_aliases_resolve_and_unknown_models_are_unpriced() {
        let table = PriceTable::builtin();
        let dated = table.lookup("claude-haiku-4-5-20251001").unwrap();
        assert_eq!(table.lookup("claude-haiku-4-5").unwrap(), dated);
        assert_eq!(
            table
                .lookup("claude-opus-4-7-20261201")
                .unwrap()
                .rates
                .input,
            5_000_000
        );
        assert!(table.cost_ok("gpt-unknown", &Usage::default()).is_none());
    }

    #[test]
    fn long_context_premium_applies_to_every_token() {
        let table = PriceTable::builtin();
        let big = usage(150_000, 0, 0, 60_000, 1_000);
        // 210K input in total: every token at 6.00 / 0.60 / 22.50.
        let expected = 150_000 * 6_000_000 + 60_000 * 600_000 + 1_000 * 22_500_000;
        assert_eq!(table.cost_ok("claude-sonnet-4-5", &big), Some(expected));
        // Sonnet 4.6 has no premium.
        let plain = 150_000 * 3_000_000 + 60_000 * 300_000 + 1_000 * 15_000_000;
        assert_eq!(table.cost_ok("claude-sonnet-4-6", &big), Some(plain));
    }

    /// Hand-computed from the published rates, in pico-USD: tokens × micro-USD per MTok.
    #[test]
    fn every_current_family_costs_exactly_its_published_rates() {
        let table = PriceTable::builtin();
        // (model, input, 5m write, 1h write, read, output) in micro-USD per million tokens.
        let cases = [
            (
                "claude-fable-5-1",
                10_000_000,
                12_500_000,
                20_000_000,
                250_000,
                50_000_000,
            ),
            (
                "claude-mythos-5-1",
                10_000_000,
                12_500_000,
                20_000_000,
                250_000,
                50_000_000,
            ),
            (
                "claude-fable-5",
                10_000_000,
                12_500_000,
                20_000_000,
                1_000_000,
                50_000_000,
            ),
            (
                "claude-mythos-5",
                10_000_000,
                12_500_000,
                20_000_000,
                1_000_000,
                50_000_000,
            ),
            (
                "claude-opus-5-5",
                4_000_000,
                5_000_000,
                8_000_000,
                200_000,
                20_000_000,
            ),
            (
                "claude-opus-5",
                5_000_000,
                6_250_000,
                10_000_000,
                500_000,
                25_000_000,
            ),
            (
                "claude-opus-4-8",
                5_000_000,
                6_250_000,
                10_000_000,
                500_000,
                25_000_000,
            ),
            (
                "claude-sonnet-5-5",
                2_000_000,
                2_500_000,
                4_000_000,
                100_000,
                10_000_000,
            ),
            (
                "claude-sonnet-5",
                2_000_000,
                2_500_000,
                4_000_000,
                200_000,
                10_000_000,
            ),
            (
                "claude-haiku-5-5",
                100_000,
                125_000,
                200_000,
                10_000,
                500_000,
            ),
        ];
        for (model, input, w5, w1, read, output) in cases {
            // Plain input and output.
            assert_eq!(
                table.cost_ok(model, &usage(1_000, 0, 0, 0, 200)),
                Some(1_000 * input + 200 * output),
                "{model} plain"
            );
            // 5-minute and 1-hour writes, and reads at the model's own read rate.
            assert_eq!(
                table.cost_ok(model, &usage(10, 3_000, 2_000, 40_000, 7)),
                Some(10 * input + 3_000 * w5 + 2_000 * w1 + 40_000 * read + 7 * output),
                "{model} cached"
            );
        }
        // Opus 5.5 reads at 0.05x and Fable 5.1 at 0.025x of input: 1M read tokens cost
        // $0.20 and $0.25.
        let million_read = usage(0, 0, 0, 1_000_000, 0);
        assert_eq!(
            format_usd(table.cost_ok("claude-opus-5-5", &million_read).unwrap()),
            "$0.200000"
        );
        assert_eq!(
            format_usd(table.cost_ok("claude-fable-5-1", &million_read).unwrap()),
            "$0.250000"
        );
    }

    #[test]
    fn haiku_5_5_bills_a_prompt_over_100k_tokens_at_five_times_on_every_token() {
        let table = PriceTable::builtin();
        // 100,000 tokens of prompt exactly: the base tier.
        let at = usage(40_000, 10_000, 0, 50_000, 1_000);
        assert_eq!(
            table.cost_ok("claude-haiku-5-5", &at),
            Some(40_000 * 100_000 + 10_000 * 125_000 + 50_000 * 10_000 + 1_000 * 500_000)
        );
        // One token more: every token, output included, at 0.50 / 0.625 / 1.00 / 0.05 / 2.50.
        let over = usage(40_001, 10_000, 0, 50_000, 1_000);
        assert_eq!(
            table.cost_ok("claude-haiku-5-5", &over),
            Some(40_001 * 500_000 + 10_000 * 625_000 + 50_000 * 50_000 + 1_000 * 2_500_000)
        );
        let over_1h = usage(60_000, 0, 50_000, 0, 0);
        assert_eq!(
            table.cost_ok("claude-haiku-5-5", &over_1h),
            Some(60_000 * 500_000 + 50_000 * 1_000_000)
        );
        let price = table.lookup("claude-haiku-5-5").unwrap();
        assert_eq!(price.tier(100_000).0, None);
        assert_eq!(price.tier(100_001).0, Some(100_000));
    }

    /// Guards a refresh of `prices.toml`: every row keeps the published multipliers of its
    /// input price, unless it is one of the exceptions the pricing page lists.
    #[test]
    fn the_builtin_table_keeps_the_published_ratios() {
        let table = PriceTable::builtin();
        // Haiku 3 was priced before the multipliers: writes $0.30, reads $0.03 on $0.25 input.
        let legacy = ["claude-3-haiku-20240307"];
        // Cache reads below 0.1x input, as the page lists them.
        let cheap_reads: &[(&str, u64, u64)] = &[
            ("claude-fable-5-1", 1, 40),
            ("claude-mythos-5-1", 1, 40),
            ("claude-opus-5-5", 1, 20),
            ("claude-sonnet-5-5", 1, 20),
        ];
        assert!(table.entries().len() >= 24);
        for entry in table.entries() {
            let tiers = std::iter::once(entry.rates).chain(entry.above.as_ref().map(|t| t.rates));
            for r in tiers {
                let m = &entry.model;
                assert!(r.output >= r.input, "{m}: output below input");
                if legacy.contains(&m.as_str()) {
                    continue;
                }
                assert_eq!(r.cache_write_5m * 4, r.input * 5, "{m}: 5m write is 1.25x");
                assert_eq!(r.cache_write_1h, r.input * 2, "{m}: 1h write is 2x");
                let (num, den) = cheap_reads
                    .iter()
                    .find(|(name, _, _)| name == m)
                    .map_or((1, 10), |(_, n, d)| (*n, *d));
                assert_eq!(
                    r.cache_read * den,
                    r.input * num,
                    "{m}: read is {num}/{den}x"
                );
            }
        }
        for model in [
            "claude-fable-5-1",
            "claude-mythos-5-1",
            "claude-fable-5",
            "claude-mythos-5",
            "claude-opus-5-5",
            "claude-opus-5",
            "claude-opus-4-8",
            "claude-sonnet-5-5",
            "claude-sonnet-5",
            "claude-haiku-5-5",
            "claude-opus-5-5-20261001",
        ] {
            assert!(table.lookup(model).is_some(), "{model} has no price");
        }
        assert_eq!(
            table.describe(),
            "https://platform.claude.com/docs/en/about-claude/pricing, read 2026-11-28"
        );
    }

    #[test]
    fn a_batch_bills_exactly_half_of_every_published_rate() {
        let table = PriceTable::builtin();
        let batch = table.batch();
        let usage = usage(1_234, 567, 89, 10_111, 213);
        for entry in table.entries() {
            let m = &entry.model;
            let half = batch.entry(m).unwrap();
            let tiers = std::iter::once((entry.rates, half.rates)).chain(
                entry
                    .above
                    .as_ref()
                    .zip(half.above.as_ref())
                    .map(|(full, half)| (full.rates, half.rates)),
            );
            for (full, half) in tiers {
                // Every published rate is even in micro-USD: its half is exact.
                for (f, h) in [
                    (full.input, half.input),
                    (full.cache_write_5m, half.cache_write_5m),
                    (full.cache_write_1h, half.cache_write_1h),
                    (full.cache_read, half.cache_read),
                    (full.output, half.output),
                ] {
                    assert_eq!(h * 2, f, "{m}");
                }
                assert_eq!(
                    half.cost_pico_usd(&usage).unwrap() * 2,
                    full.cost_pico_usd(&usage).unwrap(),
                    "{m}"
                );
            }
            // Aliases and dated ids find the batch rates too.
            for id in entry.aliases.iter().chain([&format!("{m}-20990101")]) {
                assert_eq!(batch.entry(id).unwrap().rates, half.rates, "{id}");
            }
        }
    }

    #[test]
    fn an_odd_micro_usd_rate_is_halved_up_and_batch_costs_stay_linear_in_tokens() {
        let text = r#"
            [models.odd]
            input = 0.000003
            cache_write_5m = 0.000005
            cache_write_1h = 0.000007
            cache_read = 0.000001
            output = 0.000009
        "#;
        let table = PriceTable::parse(text, "odd.toml").unwrap();
        let batch = table.batch();
        let rates = batch.lookup("odd").unwrap().rates;
        assert_eq!(
            rates,
            Rates {
                input: 2,
                cache_write_5m: 3,
                cache_write_1h: 4,
                cache_read: 1,
                output: 5,
            }
        );
        // Two results priced one by one add up to their summed tokens priced at once, which
        // is what a report does.
        let (a, b) = (usage(3, 1, 0, 5, 7), usage(1, 0, 1, 2, 1));
        let sum = usage(4, 1, 1, 7, 8);
        let cost = |u: &Usage| batch.cost_ok("odd", u).unwrap();
        assert_eq!(cost(&a) + cost(&b), cost(&sum));
        assert_eq!(cost(&a), 3 * 2 + 3 + 5 + 7 * 5);
        // Never below the exact half, and a worst case at these rates still bounds one.
        for u in [a, b, sum] {
            assert!(cost(&u) * 2 >= table.cost_ok("odd", &u).unwrap());
        }
        assert!(
            batch.worst_ok("odd", 300, 10).unwrap() * 2 >= table.worst_ok("odd", 300, 10).unwrap()
        );
    }

    #[test]
    fn the_parts_of_a_cost_add_up_and_savings_are_priced_from_the_same_rates() {
        let rates = PriceTable::builtin()
            .lookup("claude-sonnet-4-6")
            .unwrap()
            .rates;
        let u = usage(1000, 2000, 3000, 4000, 500);
        let parts = rates.cost_parts(&u).unwrap();
        assert_eq!(
            parts,
            CostParts {
                input: 3_000_000_000,
                cache_write: 25_500_000_000,
                cache_read: 1_200_000_000,
                output: 7_500_000_000,
                total: 37_200_000_000,
            }
        );
        // 9,000 cached tokens at $3 input, less $0.0255 of writes and $0.0012 of reads.
        assert_eq!(
            rates.caching_saved_pico_usd(&u),
            Ok(27_000_000_000 - 25_500_000_000 - 1_200_000_000)
        );
        // 4,000 tokens read rather than written: at $3.75 less $0.30.
        assert_eq!(
            rates.warmup_saved_pico_usd(4000),
            Ok(4000 * (3_750_000 - 300_000))
        );
    }

    #[test]
    fn a_name_given_twice_is_refused() {
        let text = r#"
            [models.a]
            aliases = ["b"]
            input = 1.0
            cache_write_5m = 1.25
            cache_write_1h = 2.0
            cache_read = 0.1
            output = 5.0
            [models.b]
            input = 1.0
            cache_write_5m = 1.25
            cache_write_1h = 2.0
            cache_read = 0.1
            output = 5.0
        "#;
        let error = PriceTable::parse(text, "gw.toml").unwrap_err().to_string();
        assert!(
            error.contains("gw.toml") && error.contains("`b`"),
            "{error}"
        );
    }

    #[test]
    fn the_worst_case_bounds_input_by_the_model_tokenizer() {
        let table = PriceTable::builtin();
        // Haiku 4.5: 3,000 bytes are at most 1,000 tokens at the 1h write rate ($2), 10 out ($5).
        assert_eq!(
            table.worst_ok("claude-haiku-4-5", 3_000, 10),
            Some(1_000 * 2_000_000 + 10 * 5_000_000)
        );
        // Haiku 5.5: 1,300 tokens, at its dearest tier (1h write $1.00, output $2.50).
        assert_eq!(
            table.worst_ok("claude-haiku-5-5", 3_000, 10),
            Some(1_300 * 1_000_000 + 10 * 2_500_000)
        );
        assert_eq!(table.worst_ok("nobody-knows", 3_000, 10), None);
    }
}
