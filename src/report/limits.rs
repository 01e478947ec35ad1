//! How much of its rate limits each pool of models used over a run.

use std::collections::BTreeMap;

use super::PoolUse;
use crate::store::{RunRow, Store};

/// What each pool of a run used of the limits it was sent under (given or learnt, as the run
/// recorded them in its settings).
pub(super) async fn pool_uses(store: &Store, run: &RunRow) -> anyhow::Result<Vec<PoolUse>> {
    let settings = crate::settings::RunSettings::of(run)?;
    if settings.send.pool_limits.is_empty() {
        return Ok(Vec::new());
    }
    let pool_of = |model: &str| {
        if settings.gateway.limits_per == crate::settings::LimitsPer::Key {
            return crate::limiter::KEY_POOL.to_owned();
        }
        settings
            .gateway
            .pools
            .get(model)
            .cloned()
            .unwrap_or_else(|| model.to_owned())
    };
    let mut pools: BTreeMap<String, crate::store::LimitUse> = BTreeMap::new();
    for row in store.report_limit_use(run.id).await? {
        let pool = pools
            .entry(pool_of(&row.model))
            .or_insert(crate::store::LimitUse {
                first_ms: i64::MAX,
                ..Default::default()
            });
        super::cost::add(&mut pool.input_tokens, row.input_tokens)?;
        super::cost::add(&mut pool.output_tokens, row.output_tokens)?;
        pool.requests += row.requests;
        pool.refused += row.refused;
        pool.first_ms = pool.first_ms.min(row.first_ms);
        pool.last_ms = pool.last_ms.max(row.last_ms);
    }
    let mut uses = Vec::new();
    for (pool, sums) in pools {
        let Some(limits) = settings.send.pool_limits.get(&pool) else {
            continue;
        };
        #[expect(
            clippy::cast_precision_loss,
            reason = "a duration and rates for display"
        )]
        let minutes = (sums.last_ms - sums.first_ms).max(1) as f64 / 60_000.0;
        for (name, per_minute, used) in [
            ("RPM", limits.rpm, sums.requests),
            ("ITPM", limits.itpm, sums.input_tokens),
            ("OTPM", limits.otpm, sums.output_tokens),
        ] {
            let Some(per_minute) = per_minute.filter(|l| *l > 0) else {
                continue;
            };
            #[expect(clippy::cast_precision_loss, reason = "rates for display")]
            let share = (used as f64 - per_minute as f64).max(0.0) / (per_minute as f64 * minutes);
            uses.push(PoolUse {
                run: run.name.clone(),
                pool: pool.clone(),
                limit: name.to_owned(),
                per_minute,
                used,
                minutes,
                share,
                requests: sums.requests,
                refused: sums.refused,
            });
        }
    }
    Ok(uses)
}
