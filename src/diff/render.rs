//! A comparison as a terminal table, Markdown, CSV (every listed row, in full) and one
//! self-contained HTML page with a job viewer: each job's prompt, answers and graders'
//! verdicts, expandable in place and filterable by model, grader and outcome, with nothing
//! loaded from elsewhere.

use std::fmt::Write as _;

use super::{
    Change, Comparison, Diff, DiffRow, JobSide, Matrix, MatrixRow, Metric, PairedComparison,
};
use crate::output::{self, csv_text};
use crate::report::usd;

/// Rows of a matrix the HTML page shows in full beyond its disagreements and failures.
pub const HTML_AGREEING_ROWS: usize = 200;

/// Most disagreements and failures the HTML page shows in full.
pub const HTML_MAX_ROWS: usize = 2_000;

fn signed_money(pico: Option<i64>) -> String {
    match pico {
        Some(p) if p > 0 => format!("+{}", usd(p)),
        Some(p) => usd(p),
        None => "-".to_owned(),
    }
}

fn ms(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn signed_ms(value: Option<i64>) -> String {
    match value {
        Some(v) if v > 0 => format!("+{v}"),
        Some(v) => v.to_string(),
        None => "-".to_owned(),
    }
}

/// `pass`, `fail (contains#0)`, `error`, or `-` for a job not in the run.
fn outcome(side: Option<&JobSide>) -> String {
    match side {
        None => "-".to_owned(),
        Some(s) if s.failed_graders.is_empty() => s.outcome.as_str().to_owned(),
        Some(s) => format!("{} ({})", s.outcome.as_str(), s.failed_graders.join(", ")),
    }
}

fn stop(side: Option<&JobSide>) -> String {
    side.and_then(|s| s.stop_reason.clone())
        .unwrap_or_else(|| "-".to_owned())
}

fn rate(passed: usize, graded: usize) -> String {
    if graded == 0 {
        "-".to_owned()
    } else {
        #[expect(clippy::cast_precision_loss, reason = "a share for display")]
        let share = passed as f64 / graded as f64;
        format!("{:.1}% ({passed}/{graded})", share * 100.0)
    }
}

/// A terminal cell: control characters escaped (see [`output::terminal`]), then cut to `width`.
fn cut(text: &str, width: usize) -> String {
    let text = &*output::terminal(text);
    match text.char_indices().nth(width.saturating_sub(1)) {
        Some((end, _)) if text.chars().count() > width => format!("{}…", &text[..end]),
        _ => text.to_owned(),
    }
}

/// The comparison for a terminal.
pub fn table(comparison: &Comparison) -> String {
    match comparison {
        Comparison::Runs(diff) => diff_table(diff),
        Comparison::Models(matrix) => matrix_table(matrix),
    }
}

/// ` × 3 samples` for jobs sent several times (`--repeat`), else nothing.
fn times_samples(samples: usize) -> String {
    if samples > 1 {
        format!(" × {samples} samples")
    } else {
        String::new()
    }
}

/// `matched by id`, or `matched by id and model` when either run fanned out.
fn matched_by(diff: &Diff) -> &'static str {
    if diff.by_model {
        "matched by id and model"
    } else {
        "matched by id"
    }
}

/// Pass rate, cost and median latency, before and after.
fn measures(diff: &Diff) -> [(String, String); 3] {
    let t = &diff.totals;
    [
        (
            rate(t.passed_before, t.graded_before),
            rate(t.passed_after, t.graded_after),
        ),
        (usd(t.cost_before_pico_usd), usd(t.cost_after_pico_usd)),
        (ms(t.latency_p50_before_ms), ms(t.latency_p50_after_ms)),
    ]
}

fn diff_table(diff: &Diff) -> String {
    let mut out = String::new();
    let t = &diff.totals;
    let _ = writeln!(
        out,
        "diff {} → {}: {} jobs{} {}",
        diff.before,
        diff.after,
        t.matched,
        times_samples(diff.samples),
        matched_by(diff)
    );
    for (label, (before, after)) in ["pass rate", "cost", "p50 ms"].iter().zip(measures(diff)) {
        let _ = writeln!(out, "  {label:<10} {before} → {after}");
    }
    let counts: Vec<String> = t
        .counts
        .iter()
        .map(|(k, n)| format!("{n} {}", k.as_str()))
        .collect();
    let _ = writeln!(
        out,
        "  changes    {}",
        if counts.is_empty() {
            "none".to_owned()
        } else {
            counts.join(" · ")
        }
    );
    out.push_str(&verdicts(&diff.comparisons));
    if diff.rows.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<19} {:<30} {:<14} {:<14} {:>11} {:>7}",
        "CHANGE", "JOB", "BEFORE", "AFTER", "COST Δ", "MS Δ"
    );
    for row in &diff.rows {
        let job = if diff.by_model {
            format!("{} {}", row.job_id, row.model)
        } else {
            row.job_id.clone()
        };
        let (before, after) = if matches!(
            row.change,
            Change::NewlyTruncated | Change::StopReasonChanged
        ) {
            (stop(row.before.as_ref()), stop(row.after.as_ref()))
        } else {
            (outcome(row.before.as_ref()), outcome(row.after.as_ref()))
        };
        let _ = writeln!(
            out,
            "{:<19} {:<30} {:<14} {:<14} {:>11} {:>7}",
            row.change.as_str(),
            cut(&job, 30),
            cut(&before, 14),
            cut(&after, 14),
            signed_money(row.cost_delta()),
            signed_ms(row.latency_delta()),
        );
    }
    for (kind, n) in &diff.left_out {
        let _ = writeln!(
            out,
            "… and {n} more {} (--limit to list more)",
            kind.as_str()
        );
    }
    out
}

fn matrix_table(matrix: &Matrix) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {}: {} jobs{} × {} models; the models disagree on {}, some model failed {}",
        matrix.run,
        matrix.jobs,
        times_samples(matrix.samples),
        matrix.models.len(),
        matrix.disagreements,
        matrix.failures
    );
    let _ = writeln!(
        out,
        "\n{:<28} {:>20} {:>9} {:>7} {:>12}",
        "MODEL", "pass rate", "answered", "errors", "cost"
    );
    for m in &matrix.per_model {
        let _ = writeln!(
            out,
            "{:<28} {:>20} {:>9} {:>7} {:>12}",
            cut(&m.model, 28),
            rate(m.passed, m.graded),
            m.answered,
            m.errors,
            usd(m.cost_pico_usd)
        );
    }
    if !matrix.comparisons.is_empty() {
        out.push('\n');
        out.push_str(&verdicts(&matrix.comparisons));
    }
    let listed: Vec<&MatrixRow> = matrix
        .rows
        .iter()
        .filter(|r| r.disagree || r.failed)
        .take(super::DEFAULT_LIMIT)
        .collect();
    if listed.is_empty() {
        return out;
    }
    let _ = write!(out, "\n{:<24}", "JOB");
    for model in &matrix.models {
        let _ = write!(out, " {:<20}", cut(model, 20));
    }
    out.push('\n');
    for row in listed.iter().take(super::DEFAULT_LIMIT) {
        let _ = write!(out, "{:<24}", cut(&row.job_id, 24));
        for cell in &row.cells {
            let _ = write!(out, " {:<20}", cut(&outcome(cell.as_ref()), 20));
        }
        out.push('\n');
    }
    // The rows held may be the first few only: the count is the matrix's.
    let all = matrix.listed.max(listed.len());
    if all > super::DEFAULT_LIMIT {
        let _ = writeln!(
            out,
            "… and {} more jobs where the models disagree or fail (csv, json and html list all)",
            all - super::DEFAULT_LIMIT
        );
    }
    out
}

/// The paired comparisons, one sentence each.
fn verdicts(comparisons: &[PairedComparison]) -> String {
    let mut out = String::new();
    if comparisons.is_empty() {
        return out;
    }
    out.push_str("  paired comparison over the jobs both answered:\n");
    for c in comparisons {
        out.push_str(&wrap(&output::terminal(&c.verdict), 4, 100));
    }
    out
}

/// Words wrapped to `width` columns, each line indented by `indent` and the lines after the
/// first by two more.
fn wrap(text: &str, indent: usize, width: usize) -> String {
    let mut out = String::new();
    let mut line = " ".repeat(indent);
    let mut empty = true;
    for word in text.split(' ') {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = " ".repeat(indent + 2);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

fn markdown_verdicts(out: &mut String, comparisons: &[PairedComparison]) {
    if comparisons.is_empty() {
        return;
    }
    out.push_str(
        "\n## Paired comparison\n\nOver the jobs both sides answered (95% intervals).\n\n",
    );
    for c in comparisons {
        let _ = writeln!(out, "- {}", md_cell(&c.verdict));
    }
}

/// A comparison's difference and interval in the units its forest plot draws: points of
/// score, or per cent of A's mean for cost and latency.
fn plotted(c: &PairedComparison) -> Option<(f64, Option<[f64; 2]>)> {
    let scale = match c.metric {
        Metric::Score => 100.0,
        Metric::CostUsd | Metric::LatencyMs if c.figures.mean_a > 0.0 => 100.0 / c.figures.mean_a,
        Metric::CostUsd | Metric::LatencyMs => return None,
    };
    Some((
        c.figures.diff * scale,
        c.figures.ci95.map(|[lo, hi]| [lo * scale, hi * scale]),
    ))
}

/// The comparisons as forest plots, one per metric: each comparison's difference and its 95%
/// interval against zero.
fn forest_plots(comparisons: &[PairedComparison]) -> String {
    const WIDTH: f64 = 720.0;
    const LABEL: f64 = 300.0;
    const ROW: f64 = 26.0;
    let mut out = String::new();
    for (metric, unit) in [
        (Metric::Score, "difference of mean score, points"),
        (
            Metric::CostUsd,
            "difference of cost per job, % of the first",
        ),
        (Metric::LatencyMs, "difference of latency, % of the first"),
    ] {
        let rows: Vec<(&PairedComparison, f64, Option<[f64; 2]>)> = comparisons
            .iter()
            .filter(|c| c.metric == metric)
            .filter_map(|c| plotted(c).map(|(d, ci)| (c, d, ci)))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let reach = rows
            .iter()
            .flat_map(|(_, d, ci)| [d.abs(), ci.map_or(0.0, |[lo, hi]| lo.abs().max(hi.abs()))])
            .fold(1.0_f64, f64::max)
            * 1.1;
        let plot = WIDTH - LABEL - 20.0;
        let x = |v: f64| LABEL + plot / 2.0 + v / reach * plot / 2.0;
        #[expect(clippy::cast_precision_loss, reason = "a row count for drawing")]
        let height = ROW * rows.len() as f64 + 40.0;
        let _ = write!(
            out,
            "<figure><svg width=\"{WIDTH}\" height=\"{height}\" role=\"img\" aria-label=\"{unit}\" font-family=\"system-ui,sans-serif\" font-size=\"12\">"
        );
        let zero = x(0.0);
        let bottom = height - 28.0;
        let _ = write!(
            out,
            "<line x1=\"{zero:.1}\" y1=\"4\" x2=\"{zero:.1}\" y2=\"{bottom:.1}\" stroke=\"#999\" stroke-dasharray=\"3 3\"/>"
        );
        for (i, (c, d, ci)) in rows.iter().enumerate() {
            #[expect(clippy::cast_precision_loss, reason = "a row index for drawing")]
            let y = ROW * i as f64 + ROW / 2.0 + 4.0;
            let colour = if c.figures.significant() {
                "#b42318"
            } else {
                "#444"
            };
            let label = cut(&format!("{} − {}", c.b, c.a), 44);
            let _ = write!(
                out,
                "<text x=\"4\" y=\"{:.1}\">{}</text>",
                y + 4.0,
                escape(&label)
            );
            if let Some([lo, hi]) = ci {
                let _ = write!(
                    out,
                    "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/>",
                    x(*lo),
                    x(*hi)
                );
            }
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{colour}\"><title>{}</title></circle>",
                x(*d),
                escape(&c.verdict)
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">0</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">−{reach:.1}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">+{reach:.1}</text></svg><figcaption>{unit}; a line is the 95% interval, red where it excludes zero</figcaption></figure>",
            zero,
            bottom + 16.0,
            x(-reach),
            bottom + 16.0,
            x(reach),
            bottom + 16.0,
        );
    }
    if !out.is_empty() {
        out.insert_str(0, "<h2>Paired comparison</h2>\n<ul>");
        let list: String = comparisons
            .iter()
            .map(|c| format!("<li>{}</li>", escape(&c.verdict)))
            .collect();
        let at = "<h2>Paired comparison</h2>\n<ul>".len();
        out.insert_str(at, &format!("{list}</ul>\n"));
    }
    out
}

/// The comparison as Markdown.
pub fn markdown(comparison: &Comparison) -> String {
    let mut out = String::new();
    match comparison {
        Comparison::Runs(diff) => {
            let t = &diff.totals;
            let _ = writeln!(
                out,
                "# diff {} → {}\n\n{} jobs {}.\n\n| | {} | {} |\n|---|---:|---:|",
                md_cell(&diff.before),
                md_cell(&diff.after),
                t.matched,
                matched_by(diff),
                md_cell(&diff.before),
                md_cell(&diff.after)
            );
            let labels = ["pass rate", "cost", "p50 latency ms"];
            for (label, (before, after)) in labels.iter().zip(measures(diff)) {
                let _ = writeln!(out, "| {label} | {before} | {after} |");
            }
            out.push('\n');
            for (kind, n) in &t.counts {
                let _ = writeln!(out, "- {n} {}", kind.as_str());
            }
            let _ = writeln!(
                out,
                "\n| change | job | model | before | after | cost Δ | ms Δ |\n|---|---|---|---|---|---:|---:|"
            );
            for row in &diff.rows {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    row.change.as_str(),
                    md_cell(&row.job_id),
                    md_cell(&row.model),
                    md_cell(&side_summary(row.before.as_ref())),
                    md_cell(&side_summary(row.after.as_ref())),
                    signed_money(row.cost_delta()),
                    signed_ms(row.latency_delta())
                );
            }
            for (kind, n) in &diff.left_out {
                let _ = writeln!(out, "\n… and {n} more {}.", kind.as_str());
            }
            markdown_verdicts(&mut out, &diff.comparisons);
        }
        Comparison::Models(matrix) => {
            out.push_str(&markdown_models_head(matrix));
            for row in matrix.rows.iter().filter(|r| r.disagree || r.failed) {
                out.push_str(&markdown_models_row(row));
            }
            out.push_str(&markdown_models_tail(matrix));
        }
    }
    out
}

/// The Markdown of a run's models up to its rows (which are those where the models
/// disagree or one failed, [`markdown_models_row`] each), for writing as they are read.
pub fn markdown_models_head(matrix: &Matrix) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# run {}: jobs × models\n\n{} jobs; the models disagree on {}, some model failed {}.\n",
        md_cell(&matrix.run),
        matrix.jobs,
        matrix.disagreements,
        matrix.failures
    );
    let _ = write!(out, "| job |");
    for model in &matrix.models {
        let _ = write!(out, " {} |", md_cell(model));
    }
    let _ = write!(out, "\n|---|");
    for _ in &matrix.models {
        out.push_str("---|");
    }
    out.push('\n');
    out
}

/// One row of [`markdown_models_head`]'s table.
pub fn markdown_models_row(row: &MatrixRow) -> String {
    let mut out = String::new();
    let _ = write!(out, "| {} |", md_cell(&row.job_id));
    for cell in &row.cells {
        let _ = write!(out, " {} |", md_cell(&side_summary(cell.as_ref())));
    }
    out.push('\n');
    out
}

/// The Markdown of a run's models after its rows.
pub fn markdown_models_tail(matrix: &Matrix) -> String {
    let mut out = String::new();
    markdown_verdicts(&mut out, &matrix.comparisons);
    out
}

/// The JSON of a run's models (as `serde_json::to_string_pretty` of its
/// [`Comparison::Models`] writes it) up to its first row: the rows follow, each by
/// [`json_models_row`], then [`json_models_tail`]. The whole is the same text to the byte.
pub fn json_models_head(matrix: &Matrix) -> serde_json::Result<String> {
    let mut out = String::from("{");
    json_field(&mut out, "kind", &"models")?;
    json_field(&mut out, "run", &matrix.run)?;
    json_field(&mut out, "models", &matrix.models)?;
    json_field(&mut out, "baseline", &matrix.baseline)?;
    json_field(&mut out, "jobs", &matrix.jobs)?;
    json_field(&mut out, "samples", &matrix.samples)?;
    json_field(&mut out, "disagreements", &matrix.disagreements)?;
    json_field(&mut out, "failures", &matrix.failures)?;
    json_field(&mut out, "per_model", &matrix.per_model)?;
    out.push_str(",\n  \"rows\": [");
    Ok(out)
}

/// One row of the array [`json_models_head`] opens, written to `out`; `first` for the
/// first. It is serialized straight into `out`, two levels in, as pretty-printing the whole
/// matrix lays it out.
pub fn json_models_row(
    out: &mut impl std::io::Write,
    row: &MatrixRow,
    first: bool,
) -> serde_json::Result<()> {
    out.write_all(if first { b"\n    " } else { b",\n    " })
        .map_err(serde_json::Error::io)?;
    let mut serializer = serde_json::Serializer::with_formatter(out, Indented::new(2));
    serde::Serialize::serialize(row, &mut serializer)
}

/// serde_json's pretty layout (two spaces a level, as [`serde_json::to_string_pretty`])
/// started some levels in: a value written with it is the text of the value pretty-printed
/// where it stands in a larger one, without printing it apart and moving it in after.
struct Indented {
    level: usize,
    has_value: bool,
}

impl Indented {
    fn new(level: usize) -> Self {
        Self {
            level,
            has_value: false,
        }
    }

    fn indent<W: ?Sized + std::io::Write>(&self, out: &mut W) -> std::io::Result<()> {
        const SPACES: &[u8] = &[b' '; 64];
        let mut n = self.level * 2;
        while n > 0 {
            let step = n.min(SPACES.len());
            out.write_all(&SPACES[..step])?;
            n -= step;
        }
        Ok(())
    }

    fn open<W: ?Sized + std::io::Write>(
        &mut self,
        out: &mut W,
        bracket: &[u8],
    ) -> std::io::Result<()> {
        self.level += 1;
        self.has_value = false;
        out.write_all(bracket)
    }

    fn close<W: ?Sized + std::io::Write>(
        &mut self,
        out: &mut W,
        bracket: &[u8],
    ) -> std::io::Result<()> {
        self.level -= 1;
        if self.has_value {
            out.write_all(b"\n")?;
            self.indent(out)?;
        }
        out.write_all(bracket)
    }

    fn item<W: ?Sized + std::io::Write>(&self, out: &mut W, first: bool) -> std::io::Result<()> {
        out.write_all(if first { b"\n" } else { b",\n" })?;
        self.indent(out)
    }
}

impl serde_json::ser::Formatter for Indented {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.open(out, b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.close(out, b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        out: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(out, first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _out: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.open(out, b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.close(out, b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        out: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(out, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        out: &mut W,
    ) -> std::io::Result<()> {
        out.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        _out: &mut W,
    ) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

/// The JSON after the rows, `rows` of them written; no newline at the end.
pub fn json_models_tail(matrix: &Matrix, rows: usize) -> serde_json::Result<String> {
    let mut out = String::from(if rows > 0 { "\n  ]" } else { "]" });
    json_field(&mut out, "comparisons", &matrix.comparisons)?;
    out.push_str("\n}");
    Ok(out)
}

/// `,\n  "key": value` (the first without its comma), the value pretty-printed one level in.
fn json_field(
    out: &mut String,
    key: &str,
    value: &impl serde::Serialize,
) -> serde_json::Result<()> {
    if !out.ends_with('{') {
        out.push(',');
    }
    out.push_str("\n  ");
    out.push_str(&serde_json::to_string(key)?);
    out.push_str(": ");
    indent(out, &serde_json::to_string_pretty(value)?, "\n  ");
    Ok(())
}

/// `text` with each of its line breaks followed by `break_with`'s indentation: pretty JSON
/// moved in a level (a string in it holds no raw line break, so each one is between tokens).
fn indent(out: &mut String, text: &str, break_with: &str) {
    let mut lines = text.split('\n');
    if let Some(first) = lines.next() {
        out.push_str(first);
    }
    for line in lines {
        out.push_str(break_with);
        out.push_str(line);
    }
}

/// A Markdown cell: text from outside cannot end the cell, break the row or open raw HTML.
fn md_cell(text: &str) -> String {
    output::markdown(text)
}

/// `pass · end_turn · $0.000120 · 840 ms`.
fn side_summary(side: Option<&JobSide>) -> String {
    let Some(s) = side else {
        return "-".to_owned();
    };
    let mut parts = vec![outcome(Some(s))];
    if let Some(stop) = &s.stop_reason {
        parts.push(stop.clone());
    }
    if let Some(cost) = s.cost_pico_usd {
        parts.push(usd(cost));
    }
    if let Some(latency) = s.latency_ms {
        parts.push(format!("{latency} ms"));
    }
    parts.join(" · ")
}

/// Every listed row in full, one line per job (and model).
pub fn csv(comparison: &Comparison) -> anyhow::Result<String> {
    let mut writer = ::csv::Writer::from_writer(Vec::new());
    match comparison {
        Comparison::Runs(diff) => {
            writer.write_record([
                "change",
                "job_id",
                "model",
                "before_outcome",
                "after_outcome",
                "before_failed_graders",
                "after_failed_graders",
                "before_stop_reason",
                "after_stop_reason",
                "before_cost_usd",
                "after_cost_usd",
                "before_latency_ms",
                "after_latency_ms",
                "before_answer",
                "after_answer",
                "prompt",
            ])?;
            for row in &diff.rows {
                let side = |s: Option<&JobSide>| -> [String; 5] {
                    match s {
                        None => Default::default(),
                        Some(s) => [
                            s.outcome.as_str().to_owned(),
                            csv_text(&s.failed_graders.join(" ")).into_owned(),
                            csv_text(s.stop_reason.as_deref().unwrap_or_default()).into_owned(),
                            s.cost_pico_usd.map(usd).unwrap_or_default(),
                            s.latency_ms.map(|v| v.to_string()).unwrap_or_default(),
                        ],
                    }
                };
                let (a, b) = (side(row.before.as_ref()), side(row.after.as_ref()));
                let answer = |s: Option<&JobSide>| {
                    s.and_then(|s| s.answer.as_deref())
                        .map(|a| csv_text(a).into_owned())
                };
                writer.write_record([
                    row.change.as_str(),
                    &csv_text(&row.job_id),
                    &csv_text(&row.model),
                    &a[0],
                    &b[0],
                    &a[1],
                    &b[1],
                    &a[2],
                    &b[2],
                    &a[3],
                    &b[3],
                    &a[4],
                    &b[4],
                    &answer(row.before.as_ref()).unwrap_or_default(),
                    &answer(row.after.as_ref()).unwrap_or_default(),
                    &csv_text(row.prompt.as_deref().unwrap_or_default()),
                ])?;
            }
        }
        Comparison::Models(matrix) => {
            csv_models_header(&mut writer)?;
            for row in &matrix.rows {
                csv_models_row(&mut writer, &matrix.models, row)?;
            }
        }
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

/// The header of the CSV of a run's models: its rows follow, [`csv_models_row`] each.
pub fn csv_models_header<W: std::io::Write>(writer: &mut ::csv::Writer<W>) -> ::csv::Result<()> {
    writer.write_record([
        "job_id",
        "model",
        "disagree",
        "outcome",
        "failed_graders",
        "stop_reason",
        "cost_usd",
        "latency_ms",
        "answer",
        "error",
    ])
}

/// One job of a run's models in CSV: a line per model it went to.
pub fn csv_models_row<W: std::io::Write>(
    writer: &mut ::csv::Writer<W>,
    models: &[String],
    row: &MatrixRow,
) -> ::csv::Result<()> {
    for (model, cell) in models.iter().zip(&row.cells) {
        let Some(c) = cell else { continue };
        writer.write_record([
            &*csv_text(&row.job_id),
            &*csv_text(model),
            if row.disagree { "yes" } else { "no" },
            c.outcome.as_str(),
            &csv_text(&c.failed_graders.join(" ")),
            &csv_text(c.stop_reason.as_deref().unwrap_or_default()),
            &c.cost_pico_usd.map(usd).unwrap_or_default(),
            &c.latency_ms.map(|v| v.to_string()).unwrap_or_default(),
            &csv_text(c.answer.as_deref().unwrap_or_default()),
            &csv_text(c.error.as_deref().unwrap_or_default()),
        ])?;
    }
    Ok(())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}\n\
table{border-collapse:collapse;margin:1rem 0;font-size:.85rem;width:100%;table-layout:fixed}\n\
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}\n\
thead th{background:#f3f3f3;position:sticky;top:0}\n\
.pass{color:#1a7f37}.fail,.error{color:#b42318}.answered{color:#555}\n\
details summary{cursor:pointer}\n\
pre{white-space:pre-wrap;margin:.3rem 0;font-size:.8rem;background:#f7f7f7;padding:.3rem}\n\
.filters label{margin-right:1rem}\n";

/// Filters rows by the `data-*` of each `tr.job`; the URL's fragment
/// (`#model=…&grader=…&outcome=…&change=…`) sets them on load, so that a page can be opened
/// already filtered.
const SCRIPT: &str = r"
const keys = ['model', 'grader', 'outcome', 'change'];
function apply() {
  const want = {};
  for (const k of keys) { const s = document.getElementById('f-' + k); if (s) want[k] = s.value; }
  let shown = 0, total = 0;
  for (const row of document.querySelectorAll('tr.job')) {
    total++;
    const ok = keys.every(k => !want[k] || (row.dataset[k] || '').split(' ').includes(want[k]));
    row.style.display = ok ? '' : 'none';
    if (ok) shown++;
  }
  document.getElementById('shown').textContent = shown + ' of ' + total + ' jobs shown';
}
for (const pair of location.hash.slice(1).split('&')) {
  const [k, v] = pair.split('=');
  const s = document.getElementById('f-' + k);
  if (s && v !== undefined) s.value = decodeURIComponent(v);
}
for (const k of keys) { const s = document.getElementById('f-' + k); if (s) s.addEventListener('change', apply); }
apply();
";

fn select(out: &mut String, key: &str, label: &str, values: &std::collections::BTreeSet<String>) {
    let _ = write!(
        out,
        "<label>{label} <select id=\"f-{key}\"><option value=\"\">any</option>"
    );
    for value in values {
        let v = escape(value);
        let _ = write!(out, "<option value=\"{v}\">{v}</option>");
    }
    out.push_str("</select></label>");
}

/// A job's side as an expandable cell: outcome, figures, answer, graders' verdicts.
fn side_cell(side: Option<&JobSide>) -> String {
    let Some(s) = side else {
        return "<td>-</td>".to_owned();
    };
    let mut cell = format!(
        "<td><details><summary class=\"{}\">{}</summary>",
        s.outcome.as_str(),
        escape(&side_summary(Some(s)))
    );
    if let Some(answer) = &s.answer {
        let _ = write!(cell, "<pre>{}</pre>", escape(answer));
    }
    if let Some(error) = &s.error {
        let _ = write!(cell, "<pre>{}</pre>", escape(error));
    }
    if !s.grades.is_empty() {
        cell.push_str("<ul>");
        for g in &s.grades {
            let verdict = match g.passed {
                Some(true) => "pass",
                Some(false) => "fail",
                None => "pending",
            };
            let _ = write!(
                cell,
                "<li class=\"{verdict}\">{}#{}: {verdict}{}</li>",
                escape(&g.kind),
                g.grader,
                g.reason
                    .as_deref()
                    .map(|r| format!(": {}", escape(r)))
                    .unwrap_or_default()
            );
        }
        cell.push_str("</ul>");
    }
    cell.push_str("</details></td>");
    cell
}

fn data_of(sides: &[Option<&JobSide>]) -> (String, String) {
    let mut outcomes = std::collections::BTreeSet::new();
    let mut graders = std::collections::BTreeSet::new();
    for side in sides.iter().flatten() {
        outcomes.insert(side.outcome.as_str().to_owned());
        for g in &side.failed_graders {
            graders.insert(g.split('#').next().unwrap_or(g).to_owned());
        }
    }
    if sides.iter().any(Option::is_none) {
        outcomes.insert("missing".to_owned());
    }
    (
        outcomes.into_iter().collect::<Vec<_>>().join(" "),
        graders.into_iter().collect::<Vec<_>>().join(" "),
    )
}

/// The head of a terminal table up to `end`, without its comparison sentences (the page
/// lists and draws those apart).
fn summary_block<'a>(table: &'a str, end: &str) -> &'a str {
    let head = table.split(end).next().unwrap_or_default();
    head.split("\n\n  paired comparison")
        .next()
        .unwrap_or_default()
        .split("  paired comparison")
        .next()
        .unwrap_or_default()
}

/// The comparison as one self-contained page.
pub fn html(comparison: &Comparison) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>msgbatch diff</title>\n<style>\n{STYLE}</style></head><body>\n"
    );
    let mut models = std::collections::BTreeSet::new();
    let mut graders = std::collections::BTreeSet::new();
    let mut changes = std::collections::BTreeSet::new();
    let mut rows = String::new();
    let mut note = String::new();
    match comparison {
        Comparison::Runs(diff) => {
            let _ = writeln!(
                out,
                "<h1>diff {} → {}</h1>\n<pre>{}</pre>",
                escape(&diff.before),
                escape(&diff.after),
                escape(summary_block(&diff_table(diff), "\n\n"))
            );
            out.push_str(&forest_plots(&diff.comparisons));
            let _ = writeln!(
                rows,
                "<table><thead><tr><th>change</th><th>job</th><th>model</th><th>prompt</th><th>{}</th><th>{}</th></tr></thead><tbody>",
                escape(&diff.before),
                escape(&diff.after)
            );
            for row in &diff.rows {
                diff_row(&mut rows, row, &mut models, &mut graders);
                changes.insert(row.change.as_str().to_owned());
            }
            rows.push_str("</tbody></table>\n");
            for (kind, n) in &diff.left_out {
                let _ = writeln!(
                    note,
                    "<p>{n} more {} left out (<code>--limit</code> lists more).</p>",
                    escape(kind.as_str())
                );
            }
        }
        Comparison::Models(matrix) => {
            let _ = writeln!(
                out,
                "<h1>run {}: jobs × models</h1>\n<pre>{}</pre>",
                escape(&matrix.run),
                escape(summary_block(&matrix_table(matrix), "\n\nJOB"))
            );
            out.push_str(&forest_plots(&matrix.comparisons));
            let _ = writeln!(
                rows,
                "<table><thead><tr><th>job</th><th>prompt</th>{}</tr></thead><tbody>",
                matrix
                    .models
                    .iter()
                    .map(|m| format!("<th>{}</th>", escape(m)))
                    .collect::<String>()
            );
            models.extend(matrix.models.iter().cloned());
            // Disagreements and failures in full; of the rest, the first few, and a count.
            let listed = matrix
                .rows
                .iter()
                .filter(|r| r.disagree || r.failed)
                .take(HTML_MAX_ROWS);
            let agreeing = matrix
                .rows
                .iter()
                .filter(|r| !r.disagree && !r.failed)
                .take(HTML_AGREEING_ROWS);
            let mut shown = 0;
            for row in listed.chain(agreeing) {
                matrix_row(&mut rows, row, &matrix.models, &mut graders);
                shown += 1;
            }
            rows.push_str("</tbody></table>\n");
            // The rows held may be those shown only: the count is the matrix's.
            let jobs = matrix.jobs.max(matrix.rows.len());
            if shown < jobs {
                let _ = writeln!(
                    note,
                    "<p>{shown} of {jobs} jobs shown: every job where the models disagree or one fails (up to {HTML_MAX_ROWS}), and the first {HTML_AGREEING_ROWS} where all agree. The csv and json formats hold every job.</p>",
                );
            }
        }
    }
    out.push_str("<div class=\"filters\">");
    select(&mut out, "model", "model", &models);
    select(&mut out, "grader", "failed grader", &graders);
    let outcomes = [
        "pass", "fail", "answered", "error", "pending", "rejected", "missing",
    ]
    .map(str::to_owned)
    .into_iter()
    .collect();
    select(&mut out, "outcome", "outcome", &outcomes);
    if !changes.is_empty() {
        select(&mut out, "change", "change", &changes);
    }
    out.push_str("</div>\n<p id=\"shown\"></p>\n");
    out.push_str(&rows);
    out.push_str(&note);
    let _ = write!(out, "<script>{SCRIPT}</script>\n</body></html>\n");
    out
}

fn diff_row(
    out: &mut String,
    row: &DiffRow,
    models: &mut std::collections::BTreeSet<String>,
    graders: &mut std::collections::BTreeSet<String>,
) {
    models.insert(row.model.clone());
    let (outcomes, failed) = data_of(&[row.before.as_ref(), row.after.as_ref()]);
    graders.extend(
        failed
            .split(' ')
            .filter(|g| !g.is_empty())
            .map(str::to_owned),
    );
    let change = row.change.as_str();
    let _ = writeln!(
        out,
        "<tr class=\"job\" data-model=\"{}\" data-outcome=\"{outcomes}\" data-grader=\"{}\" data-change=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}{}</tr>",
        escape(&row.model),
        escape(&failed),
        escape(change),
        escape(change),
        escape(&row.job_id),
        escape(&row.model),
        escape(row.prompt.as_deref().unwrap_or("")),
        side_cell(row.before.as_ref()),
        side_cell(row.after.as_ref()),
    );
}

fn matrix_row(
    out: &mut String,
    row: &MatrixRow,
    models: &[String],
    graders: &mut std::collections::BTreeSet<String>,
) {
    let sides: Vec<Option<&JobSide>> = row.cells.iter().map(Option::as_ref).collect();
    let (outcomes, failed) = data_of(&sides);
    graders.extend(
        failed
            .split(' ')
            .filter(|g| !g.is_empty())
            .map(str::to_owned),
    );
    let present: Vec<&str> = models
        .iter()
        .zip(&row.cells)
        .filter(|(_, c)| c.is_some())
        .map(|(m, _)| m.as_str())
        .collect();
    let _ = writeln!(
        out,
        "<tr class=\"job\" data-model=\"{}\" data-outcome=\"{outcomes}\" data-grader=\"{}\"><td>{}</td><td>{}</td>{}</tr>",
        escape(&present.join(" ")),
        escape(&failed),
        escape(&row.job_id),
        escape(row.prompt.as_deref().unwrap_or("")),
        sides.iter().map(|s| side_cell(*s)).collect::<String>(),
    );
}
