//! `msgbatch prices`: the price table in force for a gateway, as reports will use it.

use std::fmt::Write as _;

use anyhow::bail;
use serde::Serialize;

use super::{Global, plan};
use crate::ExitStatus;
use crate::cli::{GatewayArgs, PricesArgs, PricesFormat};
use crate::pricing::{PriceEntry, PriceTable, Rates};
use crate::settings::{ConfigFile, resolve_gateway};

pub fn prices(global: &Global, args: &PricesArgs) -> anyhow::Result<ExitStatus> {
    let (config, config_path) = ConfigFile::load(global.config.as_deref())?;
    let gateway = resolve_gateway(
        &GatewayArgs {
            gateway: args.gateway.clone(),
            prices: args.prices.clone(),
            ..GatewayArgs::default()
        },
        &config,
        config_path.as_deref(),
    )?;
    let table = plan::prices_for(&gateway)?;
    let mut entries: Vec<&PriceEntry> = Vec::new();
    for model in &args.models {
        let Some(entry) = table.entry(model) else {
            bail!(
                "no price for model `{model}` in {} (give --prices FILE, or `prices` in the gateway's profile)",
                table.describe()
            );
        };
        if !entries.iter().any(|e| e.model == entry.model) {
            entries.push(entry);
        }
    }
    if args.models.is_empty() {
        entries = table.entries().iter().collect();
    }
    let out = match args.format {
        PricesFormat::Table => render(&gateway.name, &table, &entries),
        PricesFormat::Json => {
            #[derive(Serialize)]
            struct Listing<'a> {
                gateway: &'a str,
                source: &'a str,
                read_on: Option<&'a str>,
                unit: &'static str,
                models: Vec<&'a PriceEntry>,
            }
            let mut text = serde_json::to_string_pretty(&Listing {
                gateway: &gateway.name,
                source: &table.source,
                read_on: table.read_on.as_deref(),
                unit: "micro-USD per million tokens",
                models: entries,
            })?;
            text.push('\n');
            text
        }
    };
    super::report::emit(&out, None)?;
    Ok(ExitStatus::Success)
}

/// Micro-USD per million tokens as dollars, with no more decimals than the price has.
fn dollars(micro: u64) -> String {
    let cents = format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000);
    let trimmed = cents.trim_end_matches('0');
    // Keep at least two decimals: $0.10, $12.50, $5.00.
    let decimals = trimmed.split_once('.').map_or(0, |(_, d)| d.len());
    let padded = format!("{trimmed}{}", "0".repeat(2_usize.saturating_sub(decimals)));
    format!("${padded}")
}

fn rate_cells(r: &Rates) -> [String; 5] {
    [
        dollars(r.input),
        dollars(r.cache_write_5m),
        dollars(r.cache_write_1h),
        dollars(r.cache_read),
        dollars(r.output),
    ]
}

fn render(gateway: &str, table: &PriceTable, entries: &[&PriceEntry]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "prices for gateway {gateway}: {}", table.describe());
    let _ = writeln!(
        out,
        "USD per million tokens; a dated id (`MODEL-YYYYMMDD`) resolves to its model's row\n"
    );
    let _ = writeln!(
        out,
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>9}  tier",
        "model", "input", "write 5m", "write 1h", "read", "output"
    );
    for entry in entries {
        let [i, w5, w1, r, o] = rate_cells(&entry.rates);
        let tier = match &entry.above {
            Some(t) => format!(
                "prompts up to {} input tokens",
                crate::report::count(i64::try_from(t.above_input_tokens).unwrap_or(i64::MAX))
            ),
            None => "every prompt".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<28} {i:>9} {w5:>9} {w1:>9} {r:>9} {o:>9}  {tier}",
            entry.model
        );
        if let Some(t) = &entry.above {
            let [i, w5, w1, r, o] = rate_cells(&t.rates);
            let _ = writeln!(
                out,
                "{:<28} {i:>9} {w5:>9} {w1:>9} {r:>9} {o:>9}  prompts over {} input tokens, on every token",
                "",
                crate::report::count(i64::try_from(t.above_input_tokens).unwrap_or(i64::MAX))
            );
        }
        if !entry.aliases.is_empty() {
            let _ = writeln!(out, "{:<29}also: {}", "", entry.aliases.join(", "));
        }
    }
    let _ = writeln!(
        out,
        "\nA prompt is input + cache writes + cache reads of one request; its tier prices every token of that request.\nThe Message Batches API bills half of every rate."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_keep_the_published_precision() {
        assert_eq!(dollars(10_000), "$0.01");
        assert_eq!(dollars(125_000), "$0.125");
        assert_eq!(dollars(12_500_000), "$12.50");
        assert_eq!(dollars(5_000_000), "$5.00");
        assert_eq!(dollars(250_000), "$0.25");
    }
}
