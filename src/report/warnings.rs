//! The warnings under a report: what its figures leave out, and what a run left undone.

use std::collections::BTreeSet;

use super::{Group, Options, usd};
use crate::store::{BatchKind, RunRow, Store};

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
        warnings.extend(unbilled(store, run).await?);
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

/// What a run's batches were asked and ended without recording: requests that ended
/// without an answer (not billed), jobs' and judges' alike, and judges' verdicts that came
/// back for a grader spec since replaced (billed).
async fn unbilled(store: &Store, run: &RunRow) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    let name = &run.name;
    let unbilled = store.unbilled_batch_items(run.id).await?;
    if !unbilled.is_empty() {
        // By how they ended, jobs' and judges' together.
        let mut how: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for (_, kind, n) in &unbilled {
            *how.entry(kind.as_str()).or_default() += n;
        }
        let kinds: Vec<String> = how.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
        let of = |wanted: BatchKind| -> i64 {
            unbilled
                .iter()
                .filter(|(kind, _, _)| *kind == wanted)
                .map(|(_, _, n)| n)
                .sum()
        };
        let (answers, judges) = (of(BatchKind::Answer), of(BatchKind::Judge));
        let n = answers + judges;
        let again = match (answers, judges) {
            (_, 0) => format!("`msgbatch resume {name} --include-failed` sends them again"),
            (0, _) => format!("`msgbatch grade {name}` asks those still pending again"),
            _ => format!(
                "`msgbatch resume {name} --include-failed` sends the jobs' again and `msgbatch grade {name}` asks the judges' still pending again"
            ),
        };
        let of_judges = match judges {
            0 => String::new(),
            j => format!("; {j} of them judge requests"),
        };
        warnings.push(format!(
            "run {name}: {n} batch requests ended without an answer ({}{of_judges}); none of them was billed, and {again}",
            kinds.join(", "),
        ));
    }
    let (replaced, cost) = store.replaced_judge_verdicts(run.id).await?;
    if replaced > 0 {
        warnings.push(format!(
            "run {name}: {replaced} judge verdicts came back from a batch for grader specs that `msgbatch grade --expect` replaced while it was open: billed ({}, in the judging cost) and not recorded; each of their grades is asked again with its own spec",
            usd(cost)
        ));
    }
    Ok(warnings)
}

/// A warning said twice (a model unpriced in each run) says nothing more.
pub(super) fn said_once(warnings: &mut Vec<String>) {
    let mut said = std::collections::HashSet::new();
    warnings.retain(|warning| said.insert(warning.clone()));
}
