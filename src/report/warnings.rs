//! The warnings under a report: what its figures leave out, and what a run left undone.

use std::collections::BTreeSet;

use super::{Group, Options, usd};
use crate::store::{RunRow, Store};

/// A share of `max_tokens` stops at or above this is worth a warning.
const MAX_TOKENS_WARNING: f64 = 0.10;

/// Models without a price, whose results the costs leave out.
pub(super) fn unpriced(models: &BTreeSet<String>) -> Vec<String> {
    let mut warnings = Vec::new();
    for model in models {
        warnings.push(format!(
            "no price for model `{model}`: its results are left out of the costs, which are incomplete (give --prices)"
        ));
    }
    warnings
}

/// A group whose answers often stopped at `max_tokens`.
pub(super) fn truncated(group: &Group) -> Option<String> {
    let share = group
        .truncated_share()
        .filter(|s| *s >= MAX_TOKENS_WARNING)?;
    // Named by its run: side by side, several runs have a group of this name.
    let group_name = if group.key.is_empty() || group.key == group.run {
        format!("run {}", group.run)
    } else {
        format!("run {}, {}", group.run, group.key)
    };
    Some(format!(
        "{group_name}: {:.0}% of answers stopped at max_tokens and are truncated; raise max_tokens if that was not intended",
        share * 100.0
    ))
}

/// What a run's total leaves out or left undone: pending jobs, jobs never stored, batch
/// requests unanswered, judges that failed, and stored costs the table does not give.
pub(super) async fn of_run(
    store: &Store,
    runs: &[RunRow],
    total: &Group,
    options: &Options,
) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    if total.jobs.pending > 0 {
        warnings.push(format!(
            "run {} has {} pending jobs: this report covers what was finished",
            total.run, total.jobs.pending
        ));
    }
    if let Some(run) = runs.iter().find(|r| r.name == total.run) {
        if !run.loaded
            && let Some(expected) = run.input_jobs
        {
            warnings.push(format!(
                "run {} stopped before all the jobs of its file were stored ({} of {expected}): `msgbatch resume {}` stores and sends the rest",
                total.run,
                total.jobs.total - total.jobs.rejected,
                total.run
            ));
        }
        let unbilled = store.unbilled_batch_items(run.id).await?;
        if !unbilled.is_empty() {
            let kinds: Vec<String> = unbilled
                .iter()
                .map(|(kind, n)| format!("{n} {kind}"))
                .collect();
            let n: i64 = unbilled.iter().map(|(_, n)| n).sum();
            warnings.push(format!(
                "run {}: {n} batch requests ended without an answer ({}); none of them was billed, and `msgbatch resume {} --include-failed` sends them again",
                total.run,
                kinds.join(", "),
                total.run
            ));
        }
        let (failed, reason) = store.judge_failures(run.id).await?;
        if failed > 0 {
            warnings.push(format!(
                "run {}: {failed} judge verdicts are pending because their requests failed (the latest: {}); `msgbatch grade {}` asks again",
                total.run,
                reason.as_deref().unwrap_or("no reason recorded"),
                total.run
            ));
        }
    }
    let stored = total.cost.stored_pico_usd;
    if options.reprice.is_none() && stored != total.cost.total_pico_usd {
        warnings.push(format!(
            "run {}: the costs stored with its results add up to {}, the price table gives {}; prices changed since the run or --prices differs, and this report uses the table",
            total.run,
            usd(stored),
            usd(total.cost.total_pico_usd),
        ));
    }
    Ok(warnings)
}

/// A warning said twice (a model unpriced in each run) says nothing more.
pub(super) fn said_once(warnings: &mut Vec<String>) {
    let mut said = std::collections::HashSet::new();
    warnings.retain(|warning| said.insert(warning.clone()));
}
