//! The terminal table and the Markdown rendering of a report.

use std::fmt::Write as _;

use super::{Group, Percentiles, Report, latency_cells, usd};
use crate::output;

/// Text from outside in Markdown (see [`output::markdown`]).
fn md(text: &str) -> String {
    output::markdown(text)
}

/// An integer with thousands separators.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A terminal cell: control characters escaped (see [`output::terminal`]), then cut to `width`.
fn cut(text: &str, width: usize) -> String {
    let text = &*output::terminal(text);
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let kept: String = text.chars().take(width - 1).collect();
    format!("{kept}…")
}

fn pct(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

fn ci(interval: Option<(f64, f64)>) -> String {
    interval.map_or_else(
        || "-".to_owned(),
        |(low, high)| format!("{:.1}–{:.1}%", low * 100.0, high * 100.0),
    )
}

/// A table whose columns are as wide as their widest cell (so that no group name is cut):
/// the first column left-aligned, the figures right-aligned, two spaces between columns.
fn aligned(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = head.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&head).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(line, "{cell:<width$}");
            } else {
                let _ = write!(line, "  {cell:>width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Wraps text at `width` columns on spaces, indenting continuation lines.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = String::from("  ");
        } else if !line.is_empty() && line != "  " {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out
}

fn opt_ms(p: Option<Percentiles>, pick: fn(&Percentiles) -> i64) -> String {
    p.map_or_else(|| "-".to_owned(), |p| count(pick(&p)))
}

fn cost_cell(group: &Group) -> String {
    group.cost.display("+")
}

fn stop_line(group: &Group) -> String {
    let total: i64 = group.stop_reasons.iter().map(|(_, n)| n).sum();
    group
        .stop_reasons
        .iter()
        .map(|(reason, n)| {
            #[expect(clippy::cast_precision_loss, reason = "a share for display")]
            let share = *n as f64 * 100.0 / total.max(1) as f64;
            format!("{reason} {share:.0}%")
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

fn error_line(group: &Group) -> String {
    group
        .errors
        .iter()
        .map(|e| match e.http_status {
            Some(status) => format!("{} ({status}) ×{}", e.error_type, e.attempts),
            None => format!("{} ×{}", e.error_type, e.attempts),
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

fn header(report: &Report, out: &mut String) {
    let runs: Vec<String> = report
        .runs
        .iter()
        .map(|r| format!("{} ({})", r.name, r.status))
        .collect();
    let _ = writeln!(out, "runs: {}", runs.join(", "));
    let _ = writeln!(out, "by {} · prices: {}", report.group_by, report.prices);
}

/// The terminal table, at most 100 columns wide.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    header(report, &mut out);
    let rows = report.rows();
    let cost_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(label, g)| {
            vec![
                label.clone(),
                count(g.jobs.succeeded),
                count(g.jobs.failed),
                count(g.tokens.input),
                count(g.tokens.cache_write_5m + g.tokens.cache_write_1h),
                count(g.tokens.cache_read),
                count(g.tokens.output),
                cost_cell(g),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&aligned(
        &[
            "COST", "ok", "failed", "input", "cache wr", "cache rd", "output", "cost",
        ],
        &cost_rows,
    ));
    if !report.limits.is_empty() {
        let _ = writeln!(out, "\nRATE LIMITS (how much of each limit the run used)");
        for pool in &report.limits {
            let _ = writeln!(out, "{}", wrap(&pool.describe(), 100));
        }
    }
    let cache = report.cache_lines();
    if !cache.is_empty() {
        let _ = writeln!(out, "\nCACHE PREFIXES (answers that wrote a shared prefix)");
        for line in &cache {
            let _ = writeln!(out, "{}", wrap(line, 100));
        }
    }
    let tiers = report.tier_lines();
    if !tiers.is_empty() {
        let _ = writeln!(
            out,
            "\nPRICE TIERS (results billed above their model's base rate)"
        );
        for line in &tiers {
            let _ = writeln!(out, "{}", wrap(line, 100));
        }
    }
    let _ = writeln!(
        out,
        "\n{:<26} {:>12} {:>12} {:>12} {:>10} {:>8} {:>12}",
        "SAVINGS", "batch API", "batch saved", "cache saved", "cache hit", "retries", "reprice"
    );
    for (label, g) in &rows {
        let _ = writeln!(
            out,
            "{:<26} {:>12} {:>12} {:>12} {:>10} {:>8} {:>12}",
            cut(label, 26),
            usd(g.cost.batch_api_pico_usd),
            batch_saved(g),
            usd(g.cost.caching_saved_pico_usd),
            g.cache_hit_ratio
                .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
            count(g.retries),
            g.cost.reprice_pico_usd.map_or_else(|| "-".to_owned(), usd),
        );
    }
    // A batch's answers have no latency of their own: theirs is the batch's turnaround.
    let batched = rows.iter().any(|(_, g)| g.cost.batch_results > 0);
    let _ = writeln!(
        out,
        "\n{:<26} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>6}",
        if batched {
            "LATENCY ms (batch: turn.)"
        } else {
            "LATENCY ms"
        },
        "n",
        "p50",
        "p90",
        "p95",
        "p99",
        "max",
        "ttft p50",
        "ttft p95",
        "tok/s"
    );
    for (label, g) in &rows {
        let c = latency_cells(g);
        let _ = writeln!(
            out,
            "{:<26} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>6}",
            cut(label, 26),
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            c[6],
            c[7],
            c[8],
        );
    }
    let _ = writeln!(
        out,
        "{}",
        wrap(
            "tok/s: output tokens over generation time (for a streamed answer, the time after its first token when that is 50 ms or more, else its whole latency)",
            100
        )
    );
    if rows.iter().any(|(_, g)| g.grading.is_some()) {
        let _ = writeln!(
            out,
            "\n{:<26} {:>7} {:>7} {:>7} {:>15} {:>12} {:>9} {:>9}",
            "GRADES", "graded", "passed", "rate", "95% CI", "cost/pass", "pass p50", "judge $"
        );
        for (label, g) in &rows {
            let Some(grading) = &g.grading else { continue };
            let _ = writeln!(
                out,
                "{:<26} {:>7} {:>7} {:>7} {:>15} {:>12} {:>9} {:>9}",
                cut(label, 26),
                grading.graded,
                grading.passed,
                pct(grading.pass_rate),
                ci(grading.pass_rate_ci95),
                grading
                    .cost_per_pass_pico_usd
                    .map_or_else(|| "-".to_owned(), usd),
                opt_ms(grading.passing_latency_ms, |p| p.p50),
                usd(grading.judge_cost_pico_usd)
                    .trim_start_matches('$')
                    .to_owned(),
            );
        }
        for (label, g) in &rows {
            let Some(grading) = &g.grading else { continue };
            let line = grading.by_grader_line(" · ");
            let pending = if grading.pending > 0 {
                format!(" ({} judge verdicts pending)", grading.pending)
            } else {
                String::new()
            };
            let _ = writeln!(out, "{:<26} {line}{pending}", cut(label, 26));
        }
        if rows
            .iter()
            .any(|(_, g)| g.grading.as_ref().is_some_and(repeated_or_clustered))
        {
            let _ = writeln!(
                out,
                "\nSCORE (mean over jobs of each job's share of passing samples)"
            );
            for (label, g) in &rows {
                let Some(score) = g.grading.as_ref().and_then(|g| g.score.as_ref()) else {
                    continue;
                };
                let _ = writeln!(out, "{:<26} {}", cut(label, 26), score.describe());
            }
        }
    }
    let _ = writeln!(out, "\nSTOP REASONS");
    for (label, g) in &rows {
        let _ = writeln!(out, "{:<26} {}", cut(label, 26), stop_line(g));
    }
    if rows.iter().any(|(_, g)| !g.errors.is_empty()) {
        let _ = writeln!(out, "\nERRORS (failed attempts)");
        for (label, g) in rows.iter().filter(|(_, g)| !g.errors.is_empty()) {
            let _ = writeln!(out, "{:<26} {}", cut(label, 26), error_line(g));
        }
    }
    differences(report, &mut out, false);
    for warning in &report.warnings {
        let _ = writeln!(out, "\n{}", wrap(&format!("warning: {warning}"), 100));
    }
    if rows.iter().any(|(_, g)| !g.cost.complete) {
        let _ = writeln!(
            out,
            "\n+ incomplete: some results are of models without a price"
        );
    }
    out
}

/// A compared figure as its metric reads: token counts and milliseconds as whole numbers with
/// separators, dollars to the micro-dollar, ratios to four places.
fn figure(metric: &str, value: f64) -> String {
    if metric.ends_with("_tokens") || metric.ends_with("_ms") {
        #[expect(clippy::cast_possible_truncation, reason = "whole counts for display")]
        let whole = value.round() as i64;
        count(whole)
    } else if metric.ends_with("_usd") {
        format!("{value:.6}")
    } else {
        format!("{value:.4}")
    }
}

fn differences(report: &Report, out: &mut String, markdown: bool) {
    if report.differences.is_empty() {
        return;
    }
    if markdown {
        let _ = writeln!(
            out,
            "\n## Differences\n\n| run | against | metric | base | value | change |\n|---|---|---|---:|---:|---:|"
        );
    } else {
        let _ = writeln!(out, "\nDIFFERENCES");
    }
    for d in &report.differences {
        let pct = d
            .change_pct
            .map_or_else(String::new, |p| format!(" ({p:+.1}%)"));
        let (base, value) = (figure(&d.metric, d.base), figure(&d.metric, d.value));
        let change = figure(&d.metric, d.change);
        let change = if d.change > 0.0 {
            format!("+{change}")
        } else {
            change
        };
        if markdown {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {base} | {value} | {change}{pct} |",
                md(&d.run),
                md(&d.against),
                d.metric
            );
        } else {
            let _ = writeln!(
                out,
                "{:<26} {:<18} {base:>12} → {value:>12}  {change}{pct}",
                cut(&d.run, 26),
                d.metric,
            );
        }
    }
}

/// The report as Markdown tables.
pub fn markdown(report: &Report) -> String {
    let mut out = String::from("# msgbatch report\n\n");
    for run in &report.runs {
        let _ = writeln!(
            out,
            "- run **{}** (id {}, {}), input {}, gateway {}",
            md(&run.name),
            run.id,
            run.status,
            md(&run.input_path),
            md(&run.gateway)
        );
    }
    let _ = writeln!(
        out,
        "- grouped by {}; prices: {}",
        report.group_by, report.prices
    );
    let rows = report.rows();
    let _ = writeln!(
        out,
        "\n## Cost\n\n| group | succeeded | failed | input | cache write 5m | cache write 1h | cache read | output | cost | batch API | cache saved | cache hit |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (label, g) in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            md(label),
            g.jobs.succeeded,
            g.jobs.failed,
            g.tokens.input,
            g.tokens.cache_write_5m,
            g.tokens.cache_write_1h,
            g.tokens.cache_read,
            g.tokens.output,
            cost_cell(g),
            usd(g.cost.batch_api_pico_usd),
            usd(g.cost.caching_saved_pico_usd),
            g.cache_hit_ratio
                .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
        );
    }
    if !report.limits.is_empty() {
        let _ = writeln!(
            out,
            "\n## Rate limits\n\nHow much of each limit the run used:\n"
        );
        for pool in &report.limits {
            let _ = writeln!(out, "- {}", md(&pool.describe()));
        }
    }
    let cache = report.cache_lines();
    if !cache.is_empty() {
        let _ = writeln!(
            out,
            "\n## Cache prefixes\n\nAnswers that wrote a shared prefix, and what warm-up saved:\n"
        );
        for line in &cache {
            let _ = writeln!(out, "- {}", md(line));
        }
    }
    let tiers = report.tier_lines();
    if !tiers.is_empty() {
        let _ = writeln!(
            out,
            "\n## Price tiers\n\nResults billed above their model's base rate:\n"
        );
        for line in &tiers {
            let _ = writeln!(out, "- {}", md(line));
        }
    }
    let _ = writeln!(
        out,
        "\n## Latency (ms)\n\n| group | n | p50 | p90 | p95 | p99 | max | TTFT p50 | TTFT p95 | output tok/s | attempts/job |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (label, g) in &rows {
        let _ = writeln!(out, "| {} | {} |", md(label), latency_cells(g).join(" | "));
    }
    if rows.iter().any(|(_, g)| g.grading.is_some()) {
        let _ = writeln!(
            out,
            "\n## Grades\n\n| group | graded | passed | pass rate | 95% CI | cost per pass | passing p50 ms | judge cost | by grader |\n|---|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for (label, g) in &rows {
            let Some(grading) = &g.grading else { continue };
            let by_grader = md(&grading.by_grader_line(", "));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {by_grader} |",
                md(label),
                grading.graded,
                grading.passed,
                pct(grading.pass_rate),
                ci(grading.pass_rate_ci95),
                grading
                    .cost_per_pass_pico_usd
                    .map_or_else(|| "-".to_owned(), usd),
                opt_ms(grading.passing_latency_ms, |p| p.p50),
                usd(grading.judge_cost_pico_usd),
            );
        }
    }
    let _ = writeln!(
        out,
        "\n## Stop reasons and errors\n\n| group | stop reasons | errors (failed attempts) |\n|---|---|---|"
    );
    for (label, g) in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            md(label),
            md(&stop_line(g)),
            md(&error_line(g))
        );
    }
    differences(report, &mut out, true);
    if !report.warnings.is_empty() {
        let _ = writeln!(out, "\n## Warnings\n");
        for warning in &report.warnings {
            let _ = writeln!(out, "- {}", md(warning));
        }
    }
    out
}

/// What answering through batches saved against sending directly, where any result was.
pub fn batch_saved(g: &Group) -> String {
    if g.cost.batch_results == 0 {
        "-".to_owned()
    } else {
        usd(g.cost.direct_pico_usd - g.cost.total_pico_usd)
    }
}

/// Whether a group's score says more than its pass rate: its jobs have repeated samples, or
/// its error is clustered.
fn repeated_or_clustered(grading: &crate::report::Grading) -> bool {
    grading
        .score
        .as_ref()
        .is_some_and(|s| s.samples_per_job > 1 || s.clusters.is_some())
}
