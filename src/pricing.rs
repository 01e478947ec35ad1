//! Prices and cost arithmetic.
//!
//! Money is never a float here: prices are held as integer micro-USD per million tokens, so
//! `tokens × price` is an exact count of pico-USD (1e-12 USD) in a `u64`/`i64`. Dollars appear
//! only when a figure is displayed.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::message::Usage;

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

/// Five prices in micro-USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    pub input: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub cache_read: u64,
    pub output: u64,
}

impl Rates {
    /// Exact cost of `usage` at these rates, in pico-USD.
    pub fn cost_pico_usd(&self, usage: &Usage) -> u64 {
        usage.input_tokens * self.input
            + usage.cache_write_5m_tokens * self.cache_write_5m
            + usage.cache_write_1h_tokens * self.cache_write_1h
            + usage.cache_read_input_tokens * self.cache_read
            + usage.output_tokens * self.output
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    pub rates: Rates,
    /// Rates for every token of a request whose total input passes the threshold.
    pub long_context: Option<(u64, Rates)>,
}

impl ModelPrice {
    pub fn rates_for(&self, usage: &Usage) -> &Rates {
        match &self.long_context {
            Some((above, rates)) if usage.total_input_tokens() > *above => rates,
            _ => &self.rates,
        }
    }

    pub fn cost_pico_usd(&self, usage: &Usage) -> u64 {
        self.rates_for(usage).cost_pico_usd(usage)
    }

    /// An upper bound on the cost of a request body of `request_bytes` bytes answered with
    /// `max_tokens` tokens: at most one input token per three bytes, every one at the dearest
    /// input-side rate (a 1-hour cache write), and the output at the dearest output rate.
    pub fn worst_case_pico_usd(&self, request_bytes: u64, max_tokens: u64) -> u64 {
        let tiers = std::iter::once(&self.rates).chain(self.long_context.as_ref().map(|(_, r)| r));
        let input = tiers
            .clone()
            .map(|r| r.input.max(r.cache_write_5m).max(r.cache_write_1h))
            .max()
            .unwrap_or(0);
        let output = tiers.map(|r| r.output).max().unwrap_or(0);
        request_bytes.div_ceil(3) * input + max_tokens * output
    }
}

#[derive(Debug, Clone)]
pub struct PriceTable {
    pub source: String,
    models: HashMap<String, ModelPrice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTable {
    #[serde(default)]
    source: Option<String>,
    models: HashMap<String, FileModel>,
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
        let text = std::fs::read_to_string(path).map_err(|source| PriceError::Read {
            path: display.clone(),
            source,
        })?;
        Self::parse(&text, &display)
    }

    fn parse(text: &str, path: &str) -> Result<Self, PriceError> {
        let file: FileTable = toml::from_str(text).map_err(|source| PriceError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let mut models = HashMap::new();
        for (name, model) in file.models {
            let invalid = |message: String| PriceError::Invalid {
                path: path.to_owned(),
                message,
            };
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
            for alias in &model.aliases {
                models.insert(alias.clone(), price.clone());
            }
            models.insert(name, price);
        }
        Ok(Self {
            source: file.source.unwrap_or_else(|| path.to_owned()),
            models,
        })
    }

    /// Finds a model's price by exact id, then alias, then with a trailing `-YYYYMMDD` date
    /// removed, so that a dated snapshot id resolves to its family's price.
    pub fn lookup(&self, model: &str) -> Option<&ModelPrice> {
        self.models
            .get(model)
            .or_else(|| strip_date(model).and_then(|family| self.models.get(family)))
    }

    /// Every long-context threshold in the table.
    pub fn long_context_thresholds(&self) -> impl Iterator<Item = u64> + '_ {
        self.models
            .values()
            .filter_map(|p| p.long_context.as_ref().map(|(above, _)| *above))
    }

    /// Cost of a result in pico-USD, or `None` for a model without a price.
    pub fn cost_pico_usd(&self, model: &str, usage: &Usage) -> Option<u64> {
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
            .cost_pico_usd("claude-sonnet-4-6", &usage(1000, 2000, 3000, 4000, 500))
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
        assert!(
            table
                .cost_pico_usd("gpt-unknown", &Usage::default())
                .is_none()
        );
    }

    #[test]
    fn long_context_premium_applies_to_every_token() {
        let table = PriceTable::builtin();
        let big = usage(150_000, 0, 0, 60_000, 1_000);
        // 210K input in total: every token at 6.00 / 0.60 / 22.50.
        let expected = 150_000 * 6_000_000 + 60_000 * 600_000 + 1_000 * 22_500_000;
        assert_eq!(
            table.cost_pico_usd("claude-sonnet-4-5", &big),
            Some(expected)
        );
        // Sonnet 4.6 has no premium.
        let plain = 150_000 * 3_000_000 + 60_000 * 300_000 + 1_000 * 15_000_000;
        assert_eq!(table.cost_pico_usd("claude-sonnet-4-6", &big), Some(plain));
    }
}
