//! One self-contained HTML page: the report's tables and four SVG charts drawn with plotters
//! (latency distribution, cost by component, stop reasons, spend over time). Nothing is loaded
//! from elsewhere.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::{Report, latency_cells, usd};

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

type Chart = Result<String, Box<dyn std::error::Error>>;

/// The latency distribution of each group as a CDF on a log scale, so that groups of very
/// different speeds compare on one chart; a dot marks each group's p50 and p95.
#[expect(clippy::cast_precision_loss, reason = "chart coordinates")]
fn latency_chart(report: &Report) -> Chart {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (820, 360)).into_drawing_area();
        root.fill(&WHITE)?;
        let values = report.histogram.cdf.values().flatten().map(|(v, _)| *v);
        let low = values.clone().min().unwrap_or(1).max(1) as f64;
        let high = (values.max().unwrap_or(1).max(1) as f64).max(low * 2.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Latency: share of results at most this long (dots: p50, p95)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d((low * 0.9..high * 1.1).log_scale(), 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
            .draw()?;
        for (i, ((run, key), points)) in report.histogram.cdf.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            // A step function: the share holds until the next latency.
            let mut steps: Vec<(f64, f64)> = Vec::with_capacity(points.len() * 2);
            let mut share = 0.0;
            for (value, next) in points {
                let x = (*value).max(1) as f64;
                steps.push((x, share));
                steps.push((x, *next));
                share = *next;
            }
            let label = if report.multi_run() {
                format!("{run} / {key}")
            } else {
                key.clone()
            };
            chart
                .draw_series(LineSeries::new(steps, color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            let marks = report
                .groups
                .iter()
                .chain(&report.totals)
                .find(|g| &g.run == run && &g.key == key)
                .and_then(|g| g.latency_ms.as_ref())
                .map(|p| vec![(p.p50, 0.5), (p.p95, 0.95)])
                .unwrap_or_default();
            chart.draw_series(
                marks
                    .into_iter()
                    .map(|(v, y)| Circle::new((v.max(1) as f64, y), 4, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Each run's cumulative spend against the minutes since its first result.
#[expect(clippy::cast_precision_loss, reason = "chart coordinates")]
fn spend_chart(report: &Report) -> Chart {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (820, 300)).into_drawing_area();
        root.fill(&WHITE)?;
        let minutes = report
            .spend_over_time
            .values()
            .flatten()
            .map(|(m, _)| *m)
            .fold(0.0_f64, f64::max)
            .max(1.0 / 60.0);
        let dollars = report
            .spend_over_time
            .values()
            .filter_map(|line| line.last())
            .map(|(_, spent)| *spent as f64 / 1e12)
            .fold(0.0_f64, f64::max)
            .max(1e-6);
        let mut chart = ChartBuilder::on(&root)
            .caption("Spend over time", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..minutes * 1.02, 0f64..dollars * 1.05)?;
        chart
            .configure_mesh()
            .x_desc("minutes since the run's first result")
            .y_label_formatter(&|y| format!("${y:.4}"))
            .draw()?;
        for (i, (run, line)) in report.spend_over_time.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> = std::iter::once((0.0, 0.0))
                .chain(line.iter().map(|(m, s)| (*m, *s as f64 / 1e12)))
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(run.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Stacked bars, one per group; `parts` gives each bar's segments and their names.
#[expect(clippy::cast_precision_loss, reason = "chart coordinates")]
fn stacked_chart(
    caption: &str,
    y_desc: &str,
    names: &[String],
    bars: &[(String, Vec<f64>)],
    y_format: &dyn Fn(&f64) -> String,
) -> Chart {
    let mut svg = String::new();
    {
        let height = 380;
        let root = SVGBackend::with_string(&mut svg, (820, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let top = bars
            .iter()
            .map(|(_, parts)| parts.iter().sum::<f64>())
            .fold(0.0, f64::max)
            .max(f64::MIN_POSITIVE)
            * 1.1;
        let labels: Vec<String> = bars.iter().map(|(label, _)| label.clone()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..bars.len().max(1) as f64, 0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(bars.len().max(1) * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor();
                if (x - i - 0.5).abs() < 0.01 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(y_desc)
            .y_label_formatter(y_format)
            .draw()?;
        for (part, name) in names.iter().enumerate() {
            let color = PALETTE[part % PALETTE.len()];
            let rects = bars.iter().enumerate().map(|(i, (_, parts))| {
                let bottom: f64 = parts[..part].iter().sum();
                let x = i as f64;
                Rectangle::new(
                    [(x + 0.2, bottom), (x + 0.8, bottom + parts[part])],
                    color.filled(),
                )
            });
            chart
                .draw_series(rects)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

#[expect(clippy::cast_precision_loss, reason = "chart coordinates")]
fn cost_chart(report: &Report) -> Chart {
    let names = ["input", "cache write", "cache read", "output"].map(str::to_owned);
    let bars: Vec<(String, Vec<f64>)> = report
        .groups
        .iter()
        .map(|g| {
            let c = &g.cost;
            (
                report.label(g),
                [
                    c.input_pico_usd,
                    c.cache_write_pico_usd,
                    c.cache_read_pico_usd,
                    c.output_pico_usd,
                ]
                .iter()
                .map(|p| *p as f64 / 1e12)
                .collect(),
            )
        })
        .collect();
    stacked_chart("Cost by group and component", "USD", &names, &bars, &|y| {
        format!("${y:.4}")
    })
}

#[expect(clippy::cast_precision_loss, reason = "chart coordinates")]
fn stop_chart(report: &Report) -> Chart {
    let mut names: Vec<String> = Vec::new();
    for g in &report.groups {
        for (reason, _) in &g.stop_reasons {
            if !names.contains(reason) {
                names.push(reason.clone());
            }
        }
    }
    let bars: Vec<(String, Vec<f64>)> = report
        .groups
        .iter()
        .map(|g| {
            let total: i64 = g.stop_reasons.iter().map(|(_, n)| n).sum();
            let parts = names
                .iter()
                .map(|name| {
                    let n = g
                        .stop_reasons
                        .iter()
                        .find(|(r, _)| r == name)
                        .map_or(0, |(_, n)| *n);
                    n as f64 / total.max(1) as f64
                })
                .collect();
            (report.label(g), parts)
        })
        .collect();
    stacked_chart("Share of stop reasons", "share", &names, &bars, &|y| {
        format!("{:.0}%", y * 100.0)
    })
}

fn row(cells: &[String]) -> String {
    let mut out = String::from("<tr>");
    for (i, cell) in cells.iter().enumerate() {
        let tag = if i == 0 { "th" } else { "td" };
        let _ = write!(out, "<{tag}>{}</{tag}>", escape(cell));
    }
    out.push_str("</tr>");
    out
}

/// The whole page.
pub fn html(report: &Report) -> anyhow::Result<String> {
    let charts = [
        latency_chart(report),
        cost_chart(report),
        stop_chart(report),
        spend_chart(report),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| anyhow::anyhow!("failed to draw a chart: {e}"))?;
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>msgbatch report</title>\n<style>\n\
         body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}\n\
         table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}\n\
         th,td{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}\n\
         th:first-child,td:first-child{text-align:left}\n\
         thead th{background:#f3f3f3}\n .warn{color:#a15c00}\n figure{margin:1.5rem 0}\n\
         </style></head><body>\n<h1>msgbatch report</h1>\n<ul>\n",
    );
    for run in &report.runs {
        let _ = writeln!(
            out,
            "<li>run <b>{}</b> (id {}, {}), input <code>{}</code>, gateway <code>{}</code></li>",
            escape(&run.name),
            run.id,
            escape(&run.status),
            escape(&run.input_path),
            escape(&run.gateway)
        );
    }
    let _ = writeln!(
        out,
        "<li>grouped by {}; prices: {}; generated {}</li></ul>",
        escape(&report.group_by),
        escape(&report.prices),
        escape(&report.generated_at)
    );
    for warning in &report.warnings {
        let _ = writeln!(out, "<p class=\"warn\">warning: {}</p>", escape(warning));
    }
    let rows = report.rows();
    out.push_str("<h2>Cost</h2>\n<table><thead>");
    out.push_str(&row(&[
        "group",
        "succeeded",
        "failed",
        "input",
        "cache write",
        "cache read",
        "output",
        "cost",
        "batch API",
        "cache saved",
        "cache hit",
    ]
    .map(str::to_owned)));
    out.push_str("</thead><tbody>");
    for (label, g) in &rows {
        let cost = g.cost.display(" (incomplete)");
        out.push_str(&row(&[
            label.clone(),
            g.jobs.succeeded.to_string(),
            g.jobs.failed.to_string(),
            g.tokens.input.to_string(),
            (g.tokens.cache_write_5m + g.tokens.cache_write_1h).to_string(),
            g.tokens.cache_read.to_string(),
            g.tokens.output.to_string(),
            cost,
            usd(g.cost.batch_api_pico_usd),
            usd(g.cost.caching_saved_pico_usd),
            g.cache_hit_ratio
                .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
        ]));
    }
    out.push_str("</tbody></table>\n");
    if !report.limits.is_empty() {
        out.push_str("<p>Rate limits: how much of each limit the run used:</p>\n<ul>");
        for pool in &report.limits {
            let _ = writeln!(out, "<li>{}</li>", escape(&pool.describe()));
        }
        out.push_str("</ul>\n");
    }
    let cache = report.cache_lines();
    if !cache.is_empty() {
        out.push_str(
            "<p>Answers that wrote a shared cache prefix, and what warm-up saved:</p>\n<ul>",
        );
        for line in &cache {
            let _ = writeln!(out, "<li>{}</li>", escape(line));
        }
        out.push_str("</ul>\n");
    }
    let tiers = report.tier_lines();
    if !tiers.is_empty() {
        out.push_str("<p>Results billed above their model's base rate:</p>\n<ul>");
        for line in &tiers {
            let _ = writeln!(out, "<li>{}</li>", escape(line));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h2>Latency (ms)</h2>\n<table><thead>");
    out.push_str(&row(&[
        "group",
        "n",
        "p50",
        "p90",
        "p95",
        "p99",
        "max",
        "TTFT p50",
        "TTFT p95",
        "output tok/s",
        "attempts/job",
    ]
    .map(str::to_owned)));
    out.push_str("</thead><tbody>");
    for (label, g) in &rows {
        let mut cells = vec![label.clone()];
        cells.extend(latency_cells(g));
        out.push_str(&row(&cells));
    }
    out.push_str("</tbody></table>\n");
    if rows.iter().any(|(_, g)| g.grading.is_some()) {
        out.push_str("<h2>Grades</h2>\n<table><thead>");
        out.push_str(&row(&[
            "group",
            "graded",
            "passed",
            "pass rate",
            "95% CI",
            "cost per pass",
            "judge cost",
            "by grader",
        ]
        .map(str::to_owned)));
        out.push_str("</thead><tbody>");
        for (label, g) in &rows {
            let Some(grading) = &g.grading else { continue };
            out.push_str(&row(&[
                label.clone(),
                grading.graded.to_string(),
                grading.passed.to_string(),
                grading
                    .pass_rate
                    .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
                grading.pass_rate_ci95.map_or_else(
                    || "-".to_owned(),
                    |(l, h)| format!("{:.1}–{:.1}%", l * 100.0, h * 100.0),
                ),
                grading
                    .cost_per_pass_pico_usd
                    .map_or_else(|| "-".to_owned(), usd),
                usd(grading.judge_cost_pico_usd),
                grading.by_grader_line(", "),
            ]));
        }
        out.push_str("</tbody></table>\n");
    }
    for chart in charts {
        let _ = writeln!(out, "<figure>{chart}</figure>");
    }
    out.push_str("</body></html>\n");
    Ok(out)
}
