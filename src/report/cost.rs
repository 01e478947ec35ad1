//! What the results of a report cost: each slice of summed tokens priced at its model's tier,
//! at the batch rates where a batch answered it, by the formulas of [`crate::pricing`].

use std::collections::BTreeSet;

use super::{Cost, Options, TierUse};
use crate::message::Usage;
use crate::pricing::{CostOverflow, ModelPrice, PriceTable, Rates, signed};
use crate::store::ReportRow;

/// A sum of a report's figures that an `i64` does not hold: said, never saturated or wrapped.
/// The same words as the store's when the database's own sum overflows, for the halves of
/// the rows are summed in SQL and added up here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "figures beyond what msgbatch can add up (over $9.2M or 2^63 tokens): a result holds \
     usage no request could produce"
)]
pub(super) struct SumOverflow;

impl From<CostOverflow> for SumOverflow {
    fn from(_: CostOverflow) -> Self {
        Self
    }
}

/// `*sum += more`, or [`SumOverflow`].
pub(super) fn add(sum: &mut i64, more: i64) -> Result<(), SumOverflow> {
    *sum = sum.checked_add(more).ok_or(SumOverflow)?;
    Ok(())
}

/// The smallest long-context threshold of either table: requests above it are priced one by
/// one. `i64::MAX` when no model has a premium.
pub(super) fn long_context_threshold(prices: &PriceTable, reprice: Option<&PriceTable>) -> i64 {
    [Some(prices), reprice]
        .into_iter()
        .flatten()
        .flat_map(PriceTable::long_context_thresholds)
        .min()
        .and_then(|t| i64::try_from(t).ok())
        .unwrap_or(i64::MAX)
}

/// The tier a slice is billed at: each slice holds requests of one total input when that is
/// above the smallest threshold of the tables, else requests at every model's base tier.
fn tier_of<'a>(price: &'a ModelPrice, slice: &ReportRow) -> (Option<u64>, &'a Rates) {
    price.tier(u64::try_from(slice.long_total_input).unwrap_or(0))
}

/// Adds what a slice of results costs to a group's cost; its models without a price go into
/// `unpriced`.
pub(super) fn add_slice(
    cost: &mut Cost,
    slice: &ReportRow,
    options: &Options,
    unpriced: &mut BTreeSet<String>,
) -> Result<(), SumOverflow> {
    add(&mut cost.stored_pico_usd, slice.stored_cost_pico_usd)?;
    let Some(price) = options.prices.lookup(&slice.model) else {
        cost.unpriced_results += slice.results;
        if !cost.unpriced_models.contains(&slice.model) {
            cost.unpriced_models.push(slice.model.clone());
        }
        unpriced.insert(slice.model.clone());
        return Ok(());
    };
    let usage = slice_usage(slice);
    let (tier, standard) = tier_of(price, slice);
    let batch = standard.batch();
    let direct = standard.cost_parts(&usage)?;
    let through_batches = batch.cost_parts(&usage)?;
    let (rates, billed) = if slice.batch {
        (&batch, through_batches)
    } else {
        (standard, direct)
    };
    let total = signed(billed.total);
    add(&mut cost.direct_pico_usd, signed(direct.total))?;
    add(&mut cost.batch_api_pico_usd, signed(through_batches.total))?;
    if slice.batch {
        cost.batch_results += slice.results;
    }
    add(&mut cost.input_pico_usd, signed(billed.input))?;
    add(&mut cost.cache_write_pico_usd, signed(billed.cache_write))?;
    add(&mut cost.cache_read_pico_usd, signed(billed.cache_read))?;
    add(&mut cost.output_pico_usd, signed(billed.output))?;
    add(&mut cost.total_pico_usd, total)?;
    if let Some(above) = tier {
        match cost
            .above_base
            .iter_mut()
            .find(|t| t.model == slice.model && t.above_input_tokens == above)
        {
            Some(use_) => {
                use_.results += slice.results;
                add(&mut use_.cost_pico_usd, total)?;
            }
            None => cost.above_base.push(TierUse {
                model: slice.model.clone(),
                above_input_tokens: above,
                results: slice.results,
                cost_pico_usd: total,
            }),
        }
    }
    add(
        &mut cost.caching_saved_pico_usd,
        rates.caching_saved_pico_usd(&usage)?,
    )?;
    if let Some(reprice) = &options.reprice
        && let Some(other) = reprice.lookup(&slice.model)
    {
        let other = tier_of(other, slice).1.cost_pico_usd(&usage)?;
        add(cost.reprice_pico_usd.get_or_insert(0), signed(other))?;
    }
    Ok(())
}

/// The tokens of a slice as one usage, to price.
fn slice_usage(slice: &ReportRow) -> Usage {
    let tokens = |n: i64| u64::try_from(n).unwrap_or(0);
    let cache_write_5m_tokens = tokens(slice.cache_write_5m);
    let cache_write_1h_tokens = tokens(slice.cache_write_1h);
    Usage {
        input_tokens: tokens(slice.input_tokens),
        output_tokens: tokens(slice.output_tokens),
        cache_creation_input_tokens: cache_write_5m_tokens + cache_write_1h_tokens,
        cache_write_5m_tokens,
        cache_write_1h_tokens,
        cache_read_input_tokens: tokens(slice.cache_read),
    }
}
