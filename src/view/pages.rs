//! The pages, as maud templates: every value spliced into one is escaped by maud, and no
//! page holds an inline script or style (the Content-Security-Policy forbids them); the one
//! stylesheet and script are `/assets/`.

use std::collections::HashMap;

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::data::{DiffPage, JobPage, JobsPage, ModelsPage, RunPage, RunSummary, Status};
use crate::diff::{JobSide, PairedComparison};
use crate::pricing::format_usd;
use crate::report::{Group, Report, latency_cells, usd};
use crate::store::RunRow;
use crate::store::view::{JobFilter, JobSort, Outcome};

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · msgbatch view" }
                link rel="stylesheet" href="/assets/view.css";
            }
            body {
                nav { a href="/" { "msgbatch view" } " · " a href="/" { "runs" } }
                main { (body) }
                script src="/assets/view.js" {}
            }
        }
    }
}

pub fn error(status: axum::http::StatusCode, message: &str) -> Markup {
    layout(
        status.canonical_reason().unwrap_or("error"),
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p.error { (message) }
        },
    )
}

fn pico(value: Option<i64>) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |p| format_usd(u64::try_from(p).unwrap_or(0)),
    )
}

fn ms(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"))
}

fn done_of(run: &RunSummary) -> String {
    format!("{} of {}", run.done, run.jobs.total)
}

fn spend_of(run: &RunSummary) -> String {
    match &run.budget {
        Some(budget) => format!("{} of {budget}", run.spend),
        None => run.spend.clone(),
    }
}

fn workers_of(run: &RunSummary) -> String {
    run.workers
        .iter()
        .map(|w| {
            format!(
                "{} pid {}: {} ({:.0}%){}",
                w.host,
                w.pid,
                w.done,
                w.share * 100.0,
                if w.alive { "" } else { " gone" }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `/`: every run; the script refreshes the cells marked `data-field` from `/api/runs`.
pub fn runs(runs: &[RunSummary]) -> Markup {
    layout(
        "runs",
        html! {
            h1 { "Runs" }
            @if runs.is_empty() {
                p { "No runs in this store yet." }
            } @else {
                table.runs data-live="runs" {
                    thead { tr {
                        th { "id" } th { "name" } th { "status" } th { "jobs done" }
                        th { "succeeded" } th { "failed" } th { "rejected" }
                        th { "spend" } th { "models" } th { "started" } th { "finished" }
                        th { "workers" }
                    } }
                    tbody {
                        @for run in runs {
                            tr data-run=(run.id) {
                                td { (run.id) }
                                td { a href={ "/runs/" (run.id) } { (run.name) } }
                                td data-field="status" { (run.status) }
                                @if let Some(problem) = &run.problem {
                                    // No counter cells: the refresh leaves the row as it is.
                                    td.fail colspan="5" data-problem { (problem) }
                                } @else {
                                    td data-field="done" data-first=(run.done) { (done_of(run)) }
                                    td data-field="succeeded" { (run.jobs.succeeded) }
                                    td data-field="failed" { (run.jobs.failed) }
                                    td data-field="rejected" { (run.jobs.rejected) }
                                    td data-field="spend" { (spend_of(run)) }
                                }
                                td { (run.models.join(", ")) }
                                td { (run.created_at) }
                                td data-field="finished" { (run.finished_at.as_deref().unwrap_or("-")) }
                                td data-field="workers" { (workers_of(run)) }
                            }
                        }
                    }
                }
                p.note #live { "Counters refresh every 2 seconds." }
            }
        },
    )
}

/// The job-list filter of a row of a run's page: its model, or none for the run's total row
/// (whose key is the run's name, not a model).
fn group_filter<'a>(report: &Report, group: &'a Group) -> Vec<(&'static str, &'a str)> {
    if report.groups.iter().any(|g| std::ptr::eq(g, group)) {
        vec![("model", group.key.as_str())]
    } else {
        Vec::new()
    }
}

fn jobs_link(run: i64, pairs: &[(&str, &str)]) -> String {
    let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
    if query.is_empty() {
        format!("/runs/{run}/jobs")
    } else {
        format!("/runs/{run}/jobs?{query}")
    }
}

/// `/runs/{run}`: what `report` shows, with links into the jobs.
pub fn run(page: &RunPage) -> Markup {
    let run = &page.run;
    layout(
        &run.name,
        html! {
            h1 { "Run " (run.name) }
            ul.facts {
                li { "status " b { (run.status) }
                    @if let Some(reason) = &run.stop_reason { " (" (reason) ")" } }
                li { "jobs " (done_of(run)) " done: " (run.jobs.succeeded) " succeeded, "
                    (run.jobs.failed) " failed, " (run.jobs.rejected) " rejected, "
                    (run.jobs.pending) " pending" }
                li { "spend " (spend_of(run)) }
                li { "models " (run.models.join(", ")) }
                li { "started " (run.created_at) ", finished " (run.finished_at.as_deref().unwrap_or("-")) }
                li { "input " code { (run.input) } ", gateway " code { (run.gateway) } ", via " (run.via) }
                @if !run.workers.is_empty() { li { "workers " (workers_of(run)) } }
            }
            p.links {
                a href=(jobs_link(run.id, &[])) { "all jobs" } " · "
                a href=(jobs_link(run.id, &[("outcome", "failed")])) { "failed a grader" } " · "
                a href=(jobs_link(run.id, &[("outcome", "no_answer")])) { "no answer" } " · "
                a href=(jobs_link(run.id, &[("sort", "cost_desc")])) { "most expensive" } " · "
                a href=(jobs_link(run.id, &[("sort", "latency_desc")])) { "slowest" }
                @if run.models.len() > 1 {
                    " · " a href={ "/runs/" (run.id) "/models" } { "compare its models" }
                }
            }
            @if !page.others.is_empty() {
                p.compare {
                    "Compare with: "
                    @for (id, name) in page.others.iter().take(20) {
                        a href={ "/diff/" (run.id) "/" (id) } { (name) } " "
                    }
                }
            }
            @match (&page.report, page.report_status) {
                (Some(report), Status::Ready) => { (report_sections(run, report)) }
                (Some(report), Status::Computing) => {
                    p.computing data-report="computing" data-poll={ "/api/runs/" (run.id) } data-field="report_status" {
                        "The report below is of a moment ago: the run's report is being computed \
                         again, and this page reloads once it is."
                    }
                    (report_sections(run, report))
                }
                (None, _) => {
                    p.computing data-report="computing" data-poll={ "/api/runs/" (run.id) } data-field="report_status" {
                        "The run's report is being computed (a run of many results takes a \
                         while, as `msgbatch report` does): this page reloads once it is ready. \
                         Its jobs can be listed meanwhile."
                    }
                }
            }
        },
    )
}

/// What `report` shows of a run: its tables, with links into the jobs, and its charts.
fn report_sections(run: &RunSummary, report: &Report) -> Markup {
    let rows = report.rows();
    html! {
            @for warning in &report.warnings { p.warn { "warning: " (warning) } }
            h2 { "Cost" }
            table {
                thead { tr { th { "group" } th { "succeeded" } th { "failed" } th { "input" }
                    th { "cache write" } th { "cache read" } th { "output" } th { "cost" } } }
                tbody {
                    @for (label, g) in &rows {
                        tr {
                            td { a href=(jobs_link(run.id, &group_filter(report, g))) { (label) } }
                            td { (g.jobs.succeeded) }
                            td { (g.jobs.failed) }
                            td { (g.tokens.input) }
                            td { (g.tokens.cache_write_5m + g.tokens.cache_write_1h) }
                            td { (g.tokens.cache_read) }
                            td { (g.tokens.output) }
                            td { (g.cost.display(" (incomplete)")) }
                        }
                    }
                }
            }
            h2 { "Latency (ms)" }
            table {
                thead { tr { th { "group" } th { "n" } th { "p50" } th { "p90" } th { "p95" }
                    th { "p99" } th { "max" } th { "TTFT p50" } th { "TTFT p95" }
                    th { "out tok/s" } th { "attempts/job" } } }
                tbody {
                    @for (label, g) in &rows {
                        tr { td { (label) } @for cell in latency_cells(g) { td { (cell) } } }
                    }
                }
            }
            @if rows.iter().any(|(_, g)| g.grading.is_some()) {
                h2 { "Grades" }
                table {
                    thead { tr { th { "group" } th { "graded" } th { "passed" } th { "pass rate" }
                        th { "by grader" } th { "judge cost" } } }
                    tbody {
                        @for (label, g) in &rows {
                            @if let Some(grading) = &g.grading {
                                tr {
                                    td { (label) }
                                    td { (grading.graded) }
                                    td { a href=(jobs_link(run.id, &[group_filter(report, g), vec![("outcome", "passed")]].concat())) { (grading.passed) } }
                                    td { (grading.pass_rate.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))) }
                                    td {
                                        @for (kind, graded, passed) in &grading.by_grader {
                                            a href=(jobs_link(run.id, &[group_filter(report, g), vec![("grader", kind.as_str()), ("outcome", "failed")]].concat())) {
                                                (kind) " " (passed) "/" (graded)
                                            } " "
                                        }
                                    }
                                    td { (usd(grading.judge_cost_pico_usd)) }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Stop reasons and errors" }
            table {
                thead { tr { th { "group" } th { "stop reasons" } th { "errors" } } }
                tbody {
                    @for (label, g) in &rows {
                        tr {
                            td { (label) }
                            td {
                                @for (reason, n) in &g.stop_reasons {
                                    a href=(jobs_link(run.id, &[group_filter(report, g), vec![("stop_reason", reason.as_str())]].concat())) { (reason) " " (n) } " "
                                }
                            }
                            td {
                                @for e in &g.errors {
                                    (e.error_type) @if let Some(s) = e.http_status { " (" (s) ")" } " " (e.attempts) " "
                                }
                            }
                        }
                    }
                }
            }
            @if !report.limits.is_empty() {
                h2 { "Limits used" }
                ul { @for pool in &report.limits { li { (pool.describe()) } } }
            }
            @let cache = report.cache_lines();
            @if !cache.is_empty() {
                h2 { "Cache" }
                ul { @for line in &cache { li { (line) } } }
            }
            h2 { "Charts" }
            @for (name, alt) in [("latency", "latency distribution"), ("cost", "cost by component"), ("stop", "stop reasons"), ("spend", "spend over time")] {
                figure { img src={ "/runs/" (run.id) "/charts/" (name) ".svg" } alt=(alt); }
            }
    }
}

fn selected(current: Option<&str>, value: &str) -> bool {
    current == Some(value)
}

fn filter_pairs(filter: &JobFilter) -> Vec<(&'static str, String)> {
    let mut pairs = Vec::new();
    let mut add = |name: &'static str, value: Option<&str>| {
        if let Some(v) = value {
            pairs.push((name, v.to_owned()));
        }
    };
    add("model", filter.model.as_deref());
    add("outcome", filter.outcome.map(Outcome::as_str));
    add("grader", filter.grader.as_deref());
    add("stop_reason", filter.stop_reason.as_deref());
    add("tag", filter.tag.as_deref());
    add("q", filter.text.as_deref());
    add("job_id", filter.job_id.as_deref());
    if filter.sort != JobSort::Input {
        add("sort", Some(filter.sort.as_str()));
    }
    pairs
}

/// Where a link of the job list's pager goes.
enum To<'a> {
    /// The first page.
    First,
    /// The jobs after (or `before`) this cursor, page `page` if this page's number is known.
    Past {
        cursor: &'a str,
        before: bool,
        page: Option<i64>,
    },
    /// A text search's next stretch of rows.
    Further,
}

fn page_link(page: &JobsPage, to: To<'_>) -> String {
    let mut pairs = filter_pairs(&page.filter);
    match to {
        To::First => {}
        To::Past {
            cursor,
            before,
            page: number,
        } => {
            pairs.push((if before { "before" } else { "after" }, cursor.to_owned()));
            if let Some(number) = number {
                pairs.push(("page", number.to_string()));
            }
        }
        To::Further => {
            let from = page.search.as_ref().and_then(|s| s.next_from).unwrap_or(0);
            pairs.push(("from", from.to_string()));
        }
    }
    if page.per_page != super::data::PAGE {
        pairs.push(("per_page", page.per_page.to_string()));
    }
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    jobs_link(page.run.id, &refs)
}

/// `/runs/{run}/jobs`: one page of the jobs, the filters in a form.
pub fn jobs(page: &JobsPage) -> Markup {
    let f = &page.filter;
    // Where the page starts in the list, when its number is known.
    let first = page
        .page
        .map(|p| (p - 1).saturating_mul(page.per_page).saturating_add(1));
    let shown = i64::try_from(page.jobs.len()).unwrap_or(0);
    let matched = match page.matched {
        Some(n) if n > page.matched_cap => format!("more than {}", page.matched_cap),
        Some(n) => n.to_string(),
        None if page.has_next => "more".to_owned(),
        None => first.map_or_else(|| "more".to_owned(), |f| (f - 1 + shown).to_string()),
    };
    let prev = match (&page.prev, page.page) {
        (_, Some(2)) => Some(page_link(page, To::First)),
        (Some(cursor), number) => Some(page_link(
            page,
            To::Past {
                cursor,
                before: true,
                page: number.map(|n| n - 1),
            },
        )),
        (None, _) => None,
    };
    let next = page.next.as_deref().map(|cursor| {
        page_link(
            page,
            To::Past {
                cursor,
                before: false,
                page: page.page.map(|n| n + 1),
            },
        )
    });
    layout(
        &format!("{} jobs", page.run.name),
        html! {
            h1 { "Jobs of " a href={ "/runs/" (page.run.id) } { (page.run.name) } }
            form.filters method="get" action={ "/runs/" (page.run.id) "/jobs" } {
                label { "model " select name="model" {
                    option value="" { "any" }
                    @for m in &page.models { option value=(m) selected[selected(f.model.as_deref(), m)] { (m) } }
                } }
                label { "outcome " select name="outcome" {
                    option value="" { "any" }
                    @for o in Outcome::ALL { option value=(o.as_str()) selected[f.outcome == Some(o)] { (o.as_str().replace('_', " ")) } }
                } }
                label { "grader " select name="grader" {
                    option value="" { "any" }
                    @for g in &page.graders { option value=(g) selected[selected(f.grader.as_deref(), g)] { (g) } }
                    @if let Some(g) = &f.grader {
                        @if !page.graders.contains(g) { option value=(g) selected { (g) } }
                    }
                } }
                label { "stop reason " select name="stop_reason" {
                    option value="" { "any" }
                    @for r in &page.stop_reasons { option value=(r) selected[selected(f.stop_reason.as_deref(), r)] { (r) } }
                    @if let Some(r) = &f.stop_reason {
                        @if !page.stop_reasons.contains(r) { option value=(r) selected { (r) } }
                    }
                } }
                label { "tag " input type="text" name="tag" placeholder="name=value" value=(f.tag.as_deref().unwrap_or("")); }
                label { "text " input type="search" name="q" placeholder="in prompts and answers" value=(f.text.as_deref().unwrap_or("")); }
                label { "sort " select name="sort" {
                    @for s in JobSort::ALL { option value=(s.as_str()) selected[f.sort == s] { (s.as_str().replace('_', " ")) } }
                } }
                @if let Some(id) = &f.job_id { input type="hidden" name="job_id" value=(id); }
                button type="submit" { "filter" }
                " " a href=(jobs_link(page.run.id, &[])) { "clear" }
            }
            p #matched {
                @if let Some(search) = &page.search {
                    (shown) " matching among jobs " (search.first_read) "–" (search.last_read)
                    " of " (search.rows) " searched"
                } @else if shown == 0 { "no jobs match" @if page.has_prev { " past this point" } }
                @else if let Some(first) = first { "jobs " (first) "–" (first + shown - 1) " of " (matched) " matching" }
                @else { (shown) " jobs of " (matched) " matching, past the one its link names" }
            }
            @if page.search.is_some() {
                p.note #search-rule {
                    "A text search reads the jobs in input order, at most "
                    (super::data::SEARCH_WINDOW) " a page, and stops sooner once the page is \
                     full; “search further” goes on from where it stopped. It looks in each \
                     whole request and answer, case-insensitive for ASCII letters."
                }
            }
            table.jobs {
                thead { tr { th { "job" } th { "model" } th { "outcome" } th { "grades" }
                    th { "stop" } th { "cost" } th { "latency" } th { "prompt" } th { "answer" } } }
                tbody {
                    @for job in &page.jobs {
                        tr.job data-outcome=(job.outcome.as_str()) {
                            td { a href={ "/runs/" (page.run.id) "/jobs/" (job.row.id) } { (job.row.job_id) } }
                            td { (job.row.model) }
                            td.outcome { (job.outcome.as_str().replace('_', " ")) }
                            td {
                                @for g in &job.grades {
                                    span class=(match g.passed { Some(true) => "pass", Some(false) => "fail", None => "pending" }) title=(g.reason.as_deref().unwrap_or("")) {
                                        (g.kind) "#" (g.grader)
                                    } " "
                                }
                            }
                            td { (job.row.stop_reason.as_deref().unwrap_or("-")) }
                            td { (pico(job.row.cost_pico_usd)) }
                            td { (ms(job.row.latency_ms)) }
                            td.text { (job.row.prompt.as_deref().map(crate::diff::excerpt).unwrap_or_default()) }
                            td.text {
                                @if let Some(answer) = &job.row.answer { (crate::diff::excerpt(answer)) }
                                @else if let Some(error) = &job.row.error { span.fail { (crate::diff::excerpt(error)) } }
                            }
                        }
                    }
                }
            }
            p.pages {
                @if page.search.is_some() {
                    @if page.has_next { a rel="next" href=(page_link(page, To::Further)) { "search further →" } }
                } @else {
                    @if page.has_prev { a rel="first" href=(page_link(page, To::First)) { "first" } " " }
                    @if let Some(prev) = &prev { a rel="prev" href=(prev) { "← previous" } " " }
                    @if let Some(number) = page.page { "page " (number) }
                    @if let Some(next) = &next { " " a rel="next" href=(next) { "next →" } }
                }
            }
        },
    )
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A message's content: a string, or blocks.
fn content(value: &Value) -> Markup {
    match value {
        Value::String(text) => html! { div.text { (text) } },
        Value::Array(blocks) => html! { @for block in blocks { (content_block(block)) } },
        other => html! { pre { (pretty(other)) } },
    }
}

/// One content block, readably: text with its citations, a tool call with its input,
/// thinking folded away; anything else as JSON.
fn content_block(block: &Value) -> Markup {
    let kind = block["type"].as_str().unwrap_or("");
    match kind {
        "text" => html! {
            div.block.text { (block["text"].as_str().unwrap_or("")) }
            @if let Some(citations) = block["citations"].as_array() {
                @if !citations.is_empty() {
                    ul.citations {
                        @for c in citations {
                            li {
                                "cited: "
                                q { (c["cited_text"].as_str().unwrap_or("")) }
                                @if let Some(title) = c["document_title"].as_str().or(c["title"].as_str()) { " (" (title) ")" }
                                @if let Some(url) = c["url"].as_str() { " " code { (url) } }
                            }
                        }
                    }
                }
            }
        },
        "tool_use" | "server_tool_use" => html! {
            div.block.tool {
                div.label { "tool call " b { (block["name"].as_str().unwrap_or("")) } " " code { (block["id"].as_str().unwrap_or("")) } }
                pre { (pretty(&block["input"])) }
            }
        },
        "tool_result" => html! {
            div.block.tool {
                div.label { "tool result for " code { (block["tool_use_id"].as_str().unwrap_or("")) }
                    @if block["is_error"].as_bool() == Some(true) { " (error)" } }
                (content(&block["content"]))
            }
        },
        "thinking" => html! {
            details.block.thinking {
                summary { "thinking" }
                div.text { (block["thinking"].as_str().unwrap_or("")) }
            }
        },
        "redacted_thinking" => html! { div.block.thinking { "redacted thinking" } },
        "image" | "document" => html! {
            div.block { (kind) " " code { (block["source"]["type"].as_str().unwrap_or("")) }
                @if let Some(title) = block["title"].as_str() { " " (title) } }
        },
        _ => html! { details.block { summary { (kind) } pre { (pretty(block)) } } },
    }
}

/// `/runs/{run}/jobs/{job}`: the request as sent, the answer, its grades and attempts.
pub fn job(page: &JobPage) -> Markup {
    let d = &page.detail;
    let request: Value = serde_json::from_str(&d.job.request).unwrap_or(Value::Null);
    let answer: Option<Value> = d
        .response
        .as_deref()
        .map(|b| serde_json::from_str(b).unwrap_or_else(|_| Value::String(b.to_owned())));
    let mut parameters = request.as_object().cloned().unwrap_or_default();
    for key in ["system", "messages", "tools"] {
        parameters.remove(key);
    }
    layout(
        &format!("{} {}", d.job.job_id, d.job.model),
        html! {
            h1 { "Job " (d.job.job_id) }
            ul.facts {
                li { "run " a href={ "/runs/" (page.run.id) } { (page.run.name) } ", line " (d.job.line) }
                li { "model " (d.job.model) ", state " (d.job.state) ", outcome " b { (page.outcome.as_str().replace('_', " ")) } }
                @if let Some(e) = &d.job.error { li.fail { "error: " (e) } }
                @if let Some(tags) = &d.job.tags { li { "tags " code { (tags) } } }
            }
            @if let Some(r) = &d.result {
                h2 { "Figures" }
                table.facts { tbody {
                    tr { th { "tokens" } td { "input " (r.input_tokens) ", cache write " (r.cache_creation_input_tokens) ", cache read " (r.cache_read_input_tokens) ", output " (r.output_tokens) } }
                    tr { th { "cost" } td { (pico(r.cost_pico_usd)) @if r.batch { " (batch)" } } }
                    tr { th { "latency" } td { (r.latency_ms) " ms" @if let Some(t) = r.ttft_ms { ", first token " (t) " ms" } @if r.streamed { ", streamed" } } }
                    tr { th { "stop" } td { (r.stop_reason.as_deref().unwrap_or("-")) @if let Some(s) = &r.stop_sequence { " " code { (s) } } } }
                    tr { th { "answered by" } td { (r.response_model.as_deref().unwrap_or("-")) " " code { (r.message_id.as_deref().unwrap_or("")) } @if let Some(t) = &r.service_tier { ", tier " (t) } } }
                } }
            }
            h2 { "Request" }
            @if !request["system"].is_null() {
                section.turn { h3 { "system" } (content(&request["system"])) }
            }
            @if let Some(messages) = request["messages"].as_array() {
                @for m in messages {
                    section.turn { h3 { (m["role"].as_str().unwrap_or("")) } (content(&m["content"])) }
                }
            }
            @if let Some(tools) = request["tools"].as_array() {
                h3 { "tools" }
                @for t in tools {
                    details.block { summary { (t["name"].as_str().unwrap_or("")) " " (t["description"].as_str().unwrap_or("")) } pre { (pretty(t)) } }
                }
            }
            h3 { "parameters" }
            pre { (pretty(&Value::Object(parameters))) }
            h2 { "Answer" }
            @match &answer {
                Some(body) => {
                    section.turn.answer { (content(&body["content"])) }
                    @if let Some(note) = &d.response_note { p.warn { "note: " (note) } }
                    details { summary { "as received" } pre { (pretty(body)) } }
                }
                None => p { "no answer" }
            }
            @if !d.grades.is_empty() {
                h2 { "Grades" }
                table {
                    thead { tr { th { "grader" } th { "verdict" } th { "reason" } th { "spec" } th { "judge" } } }
                    tbody { @for g in &d.grades {
                        tr {
                            td { (g.kind) "#" (g.grader) }
                            td class=(match g.passed { Some(true) => "pass", Some(false) => "fail", None => "pending" }) {
                                (match g.passed { Some(true) => "passed", Some(false) => "failed", None => "pending" })
                            }
                            td.text { (g.reason.as_deref().unwrap_or("")) }
                            td { code { (g.spec) } }
                            td { (g.judge_model.as_deref().unwrap_or("")) @if g.judge_cost_pico_usd.is_some() { " " (pico(g.judge_cost_pico_usd)) } }
                        }
                    } }
                }
            }
            h2 { "Attempts" }
            @if d.attempts.is_empty() { p { "none" } }
            @else {
                table {
                    thead { tr { th { "#" } th { "for" } th { "status" } th { "queue wait" } th { "latency" } th { "retry wait" } th { "error" } th { "request id" } } }
                    tbody { @for a in &d.attempts {
                        tr {
                            td { (a.attempt) }
                            td { (a.kind) }
                            td { (a.http_status.map_or_else(|| "-".to_owned(), |s| s.to_string())) }
                            td { (a.queue_wait_ms) " ms" }
                            td { (a.latency_ms) " ms" }
                            td { (ms(a.retry_after_ms)) }
                            td.text {
                                @if let Some(t) = &a.error_type { b { (t) } " " }
                                (a.error_message.as_deref().unwrap_or(""))
                                @if let Some(body) = &a.error_body { details { summary { "body" } pre { (body) } } }
                            }
                            td { code { (a.request_id.as_deref().unwrap_or("")) } }
                        }
                    } }
                }
                @if d.more_attempts > 0 { p { "and " (d.more_attempts) " more attempts" } }
            }
        },
    )
}

fn comparisons(list: &[PairedComparison]) -> Markup {
    html! {
        @if !list.is_empty() {
            table {
                thead { tr { th { "metric" } th { "A" } th { "B" } th { "n" } th { "mean A" } th { "mean B" }
                    th { "B − A" } th { "95% interval" } th { "p" } th { "verdict" } } }
                tbody { @for c in list {
                    tr {
                        td { (serde_json::to_value(c.metric).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) }
                        td { (c.a) } td { (c.b) } td { (c.figures.n) }
                        td { (format!("{:.4}", c.figures.mean_a)) }
                        td { (format!("{:.4}", c.figures.mean_b)) }
                        td { (format!("{:+.4}", c.figures.diff)) }
                        td { (c.figures.ci95.map_or_else(|| "-".to_owned(), |[lo, hi]| format!("[{lo:+.4}, {hi:+.4}]"))) }
                        td { (c.figures.p_value.map_or_else(|| "-".to_owned(), |p| format!("{p:.3}"))) }
                        td.text { (c.verdict) }
                    }
                } }
            }
        }
    }
}

fn side(run: i64, model: &str, job_id: &str, side: Option<&JobSide>) -> Markup {
    html! {
        @match side {
            Some(s) => {
                a href=(jobs_link(run, &[("job_id", job_id), ("model", model)])) { (s.outcome.as_str()) }
                @if !s.failed_graders.is_empty() { " " span.fail { (s.failed_graders.join(" ")) } }
                " " (pico(s.cost_pico_usd)) " " (ms(s.latency_ms))
                @if let Some(a) = &s.answer { div.text { (a) } }
                @else if let Some(e) = &s.error { div.text.fail { (e) } }
            }
            None => "-",
        }
    }
}

/// `/diff/{a}/{b}`: the per-job changes and the paired statistics of `diff`.
pub fn diff(
    page: &DiffPage,
    before: &RunRow,
    after: &RunRow,
    query: &HashMap<String, String>,
) -> Markup {
    let title = format!("{} vs {}", before.name, after.name);
    let heading = html! {
        h1 { "Diff " a href={ "/runs/" (before.id) } { (before.name) } " → " a href={ "/runs/" (after.id) } { (after.name) } }
    };
    let api = format!("/api/diff/{}/{}", before.id, after.id);
    let Some(diff) = &page.diff else {
        return layout(
            &title,
            html! { (heading) (computing(&api, "The two runs are being compared (runs of many results take a while, as `msgbatch diff` does)")) },
        );
    };
    let t = &diff.totals;
    let (first, shown, matched) =
        page_span(page.page, page.per_page, diff.rows.len(), page.matched);
    let link = |to: i64| page_link_of(query, &["change", "model", "outcome"], to, page.per_page);
    let current = |name: &str| query.get(name).map(String::as_str).unwrap_or("");
    layout(
        &title,
        html! {
            (heading)
            @if page.status == Status::Computing {
                (computing(&api, "What follows is of a moment ago: the runs are being compared again"))
            }
            ul.facts {
                li { (t.matched) " jobs matched" @if diff.by_model { " by id and model" } }
                li { "passed " (t.passed_before) "/" (t.graded_before) " → " (t.passed_after) "/" (t.graded_after) }
                li { "cost " (usd(t.cost_before_pico_usd)) " → " (usd(t.cost_after_pico_usd)) }
                li { "latency p50 " (ms(t.latency_p50_before_ms)) " → " (ms(t.latency_p50_after_ms)) }
                li { @for (change, n) in &t.counts {
                    a href={ "?change=" (serde_json::to_value(change).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) } { (n) " " (change.as_str()) } " · "
                } }
            }
            (comparisons(&diff.comparisons))
            form.filters method="get" {
                label { "change " input type="text" name="change" value=(current("change")); }
                label { "model " input type="text" name="model" value=(current("model")); }
                label { "outcome " input type="text" name="outcome" placeholder="pass, fail, error…" value=(current("outcome")); }
                button type="submit" { "filter" }
            }
            p { @if shown > 0 { "changed jobs " (first + 1) "–" (first + shown) " of " } @else { "no changed jobs on this page, of " } (matched) }
            table.jobs {
                thead { tr { th { "change" } th { "job" } th { "model" } th { "prompt" } th { (before.name) } th { (after.name) } } }
                tbody { @for row in &diff.rows {
                    tr.job {
                        td { (row.change.as_str()) }
                        td { (row.job_id) }
                        td { (row.model) }
                        td.text { (row.prompt.as_deref().unwrap_or("")) }
                        td { (side(before.id, &row.model, &row.job_id, row.before.as_ref())) }
                        td { (side(after.id, &row.model, &row.job_id, row.after.as_ref())) }
                    }
                } }
            }
            (pager(page.page, first, shown, matched, link))
        },
    )
}

/// `/runs/{run}/models`: a run's models side by side, each against the baseline, and one
/// page of its jobs (disagreements first) under the query's filter.
pub fn models(page: &ModelsPage, run: &RunRow, query: &HashMap<String, String>) -> Markup {
    let title = format!("{} models", run.name);
    let heading = html! { h1 { "Models of " a href={ "/runs/" (run.id) } { (run.name) } } };
    let api = format!("/api/runs/{}/models", run.id);
    let Some(matrix) = &page.matrix else {
        return layout(
            &title,
            html! { (heading) (computing(&api, "The run's models are being compared (a run of many results takes a while, as `msgbatch diff` does)")) },
        );
    };
    let (first, shown, matched) =
        page_span(page.page, page.per_page, matrix.rows.len(), page.matched);
    let link = |to: i64| page_link_of(query, &["disagree", "outcome"], to, page.per_page);
    layout(
        &title,
        html! {
            (heading)
            @if page.status == Status::Computing {
                (computing(&api, "What follows is of a moment ago: the run's models are being compared again"))
            }
            p { (matrix.jobs) " jobs, " (matrix.disagreements) " where the models disagree, " (matrix.failures) " with a failure"
                @if let Some(b) = &matrix.baseline { "; baseline " (b) } }
            table {
                thead { tr { th { "model" } th { "passed" } th { "graded" } th { "answered" } th { "errors" } th { "cost" } } }
                tbody { @for m in &matrix.per_model {
                    tr { td { a href=(jobs_link(run.id, &[("model", m.model.as_str())])) { (m.model) } }
                        td { (m.passed) } td { (m.graded) } td { (m.answered) } td { (m.errors) } td { (usd(m.cost_pico_usd)) } }
                } }
            }
            (comparisons(&matrix.comparisons))
            p.links { a href="?disagree=1" { "disagreements only" } " · " a href="?outcome=fail" { "a model failed" } " · " a href="?" { "all" } }
            p { @if shown > 0 { "jobs " (first + 1) "–" (first + shown) " of " } @else { "no jobs on this page, of " } (matched) }
            table.jobs {
                thead { tr { th { "job" } th { "prompt" } @for m in &matrix.models { th { (m) } } } }
                tbody { @for row in &matrix.rows {
                    tr.job {
                        td { (row.job_id) }
                        td.text { (row.prompt.as_deref().unwrap_or("")) }
                        @for (i, cell) in row.cells.iter().enumerate() {
                            td { (side(run.id, matrix.models.get(i).map_or("", String::as_str), &row.job_id, cell.as_ref())) }
                        }
                    }
                } }
            }
            (pager(page.page, first, shown, matched, link))
        },
    )
}

/// Says that what the page shows is being computed, for the script to look at `api` until
/// its `status` is `ready` and then reload the page.
fn computing(api: &str, what: &str) -> Markup {
    html! {
        p.computing data-report="computing" data-poll=(api) data-field="status" {
            (what) ": this page reloads once it is ready."
        }
    }
}

/// Where a page of `per_page` rows starts (the rows before it), how many it shows, and how
/// many there are in all.
fn page_span(page: i64, per_page: i64, shown: usize, matched: usize) -> (i64, i64, i64) {
    (
        (page - 1).saturating_mul(per_page),
        i64::try_from(shown).unwrap_or(i64::MAX),
        i64::try_from(matched).unwrap_or(i64::MAX),
    )
}

/// The query of page `to`, with the filters named in `keys` kept from `query`.
fn page_link_of(query: &HashMap<String, String>, keys: &[&str], to: i64, per_page: i64) -> String {
    let mut pairs: Vec<(&str, String)> = keys
        .iter()
        .filter_map(|k| query.get(*k).map(|v| (*k, v.clone())))
        .collect();
    pairs.push(("page", to.to_string()));
    if per_page != super::data::PAGE {
        pairs.push(("per_page", per_page.to_string()));
    }
    format!(
        "?{}",
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    )
}

/// Links to the previous and next pages of a list.
fn pager(page: i64, first: i64, shown: i64, matched: i64, link: impl Fn(i64) -> String) -> Markup {
    html! {
        p.pages {
            @if page > 1 { a rel="prev" href=(link(page - 1)) { "← previous" } " " }
            "page " (page)
            @if first.saturating_add(shown) < matched { " " a rel="next" href=(link(page + 1)) { "next →" } }
        }
    }
}
