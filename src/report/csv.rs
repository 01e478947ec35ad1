//! CSV renderings: one row per group, and one row per job that did not succeed.
//!
//! Text cells from outside (run names, groups, job ids, models, reasons) go through
//! [`csv_text`] so that none starts a formula; the figures are written as numbers.

use super::Report;
use crate::output::csv_text;
use crate::store::Failure;

/// One row per (run, group) and per run total, every figure in its own column.
pub fn groups_csv(report: &Report) -> anyhow::Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record([
        "run",
        "group",
        "jobs",
        "succeeded",
        "failed",
        "rejected",
        "pending",
        "input_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "cache_read_tokens",
        "output_tokens",
        "cost_usd",
        "cost_complete",
        "input_cost_usd",
        "cache_write_cost_usd",
        "cache_read_cost_usd",
        "output_cost_usd",
        "batch_api_cost_usd",
        "direct_cost_usd",
        "caching_saved_usd",
        "reprice_cost_usd",
        "cache_hit_ratio",
        "latency_n",
        "latency_p50_ms",
        "latency_p90_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "latency_max_ms",
        "ttft_p50_ms",
        "ttft_p95_ms",
        "output_tokens_per_second",
        "attempts_per_job",
        "retries",
        "graded",
        "passed",
        "pass_rate",
        "pass_rate_ci95_low",
        "pass_rate_ci95_high",
        "cost_per_pass_usd",
        "judge_cost_usd",
        "above_base_tier",
        "cache_prefixes",
        "cache_prefix_writes",
        "warmup_avoided_writes",
        "warmup_saved_usd",
    ])?;
    let usd = |pico: i64| format!("{:.6}", pico as f64 / 1e12);
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let optf = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
    let totals = report.totals.iter().map(|t| (t, "(all)".to_owned()));
    let groups = report.groups.iter().map(|g| (g, g.key.clone()));
    for (g, key) in groups.chain(totals) {
        writer.write_record([
            csv_text(&g.run).into_owned(),
            csv_text(&key).into_owned(),
            g.jobs.total.to_string(),
            g.jobs.succeeded.to_string(),
            g.jobs.failed.to_string(),
            g.jobs.rejected.to_string(),
            g.jobs.pending.to_string(),
            g.tokens.input.to_string(),
            g.tokens.cache_write_5m.to_string(),
            g.tokens.cache_write_1h.to_string(),
            g.tokens.cache_read.to_string(),
            g.tokens.output.to_string(),
            usd(g.cost.total_pico_usd),
            g.cost.complete.to_string(),
            usd(g.cost.input_pico_usd),
            usd(g.cost.cache_write_pico_usd),
            usd(g.cost.cache_read_pico_usd),
            usd(g.cost.output_pico_usd),
            usd(g.cost.batch_api_pico_usd),
            usd(g.cost.direct_pico_usd),
            usd(g.cost.caching_saved_pico_usd),
            g.cost.reprice_pico_usd.map(usd).unwrap_or_default(),
            optf(g.cache_hit_ratio),
            opt(g.latency_ms.map(|l| l.count)),
            opt(g.latency_ms.map(|l| l.p50)),
            opt(g.latency_ms.map(|l| l.p90)),
            opt(g.latency_ms.map(|l| l.p95)),
            opt(g.latency_ms.map(|l| l.p99)),
            opt(g.latency_ms.map(|l| l.max)),
            opt(g.ttft_ms.map(|l| l.p50)),
            opt(g.ttft_ms.map(|l| l.p95)),
            optf(g.output_tokens_per_second),
            optf(g.attempts_per_job),
            g.retries.to_string(),
            opt(g.grading.as_ref().map(|x| x.graded)),
            opt(g.grading.as_ref().map(|x| x.passed)),
            optf(g.grading.as_ref().and_then(|x| x.pass_rate)),
            optf(
                g.grading
                    .as_ref()
                    .and_then(|x| x.pass_rate_ci95)
                    .map(|c| c.0),
            ),
            optf(
                g.grading
                    .as_ref()
                    .and_then(|x| x.pass_rate_ci95)
                    .map(|c| c.1),
            ),
            g.grading
                .as_ref()
                .and_then(|x| x.cost_per_pass_pico_usd)
                .map(usd)
                .unwrap_or_default(),
            g.grading
                .as_ref()
                .map(|x| usd(x.judge_cost_pico_usd))
                .unwrap_or_default(),
            // `model>THRESHOLD:RESULTS`, `;`-separated: results billed above the base tier.
            csv_text(
                &g.cost
                    .above_base
                    .iter()
                    .map(|t| format!("{}>{}:{}", t.model, t.above_input_tokens, t.results))
                    .collect::<Vec<_>>()
                    .join(";"),
            )
            .into_owned(),
            opt(g.cache.as_ref().map(|c| c.prefixes)),
            opt(g.cache.as_ref().map(|c| c.writes)),
            opt(g.cache.as_ref().map(|c| c.writes_avoided)),
            g.cache
                .as_ref()
                .map(|c| usd(c.warmup_saved_pico_usd))
                .unwrap_or_default(),
        ])?;
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

/// Every job that failed or was rejected, with the reason.
pub fn failures_csv(failures: &[Failure]) -> anyhow::Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["run", "job_id", "model", "line", "state", "reason"])?;
    for f in failures {
        writer.write_record([
            &*csv_text(&f.run),
            &*csv_text(&f.job_id),
            &*csv_text(&f.model),
            &f.line.to_string(),
            &*csv_text(&f.state),
            &*csv_text(f.error.as_deref().unwrap_or("")),
        ])?;
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}
