//! One self-contained HTML page: the report's tables and four SVG charts drawn with plotters
//! (latency distribution, cost by component, stop reasons, spend over time). Nothing is loaded
//! from elsewhere.

use std::fmt::Write as _;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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

/// Width of every chart, in pixels.
const WIDTH: u32 = 820;
/// Room for one legend entry (swatch and label) and for one row of entries.
const LEGEND_ENTRY: u32 = 200;
const LEGEND_ROW: u32 = 20;

/// The height of the band under a plot that holds `entries` legend entries: legends sit
/// outside the plot, where they cannot cover its data.
fn legend_band(entries: usize) -> u32 {
    let per_row = (WIDTH - 24) / LEGEND_ENTRY;
    let rows = u32::try_from(entries)
        .unwrap_or(u32::MAX)
        .div_ceil(per_row)
        .max(1);
    rows * LEGEND_ROW + 8
}

/// Draws legend entries (a swatch and a name each) in rows across `area`.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    entries: &[(String, RGBColor)],
) -> Result<(), Box<dyn std::error::Error>> {
    let per_row = ((WIDTH - 24) / LEGEND_ENTRY).max(1) as usize;
    for (i, (name, color)) in entries.iter().enumerate() {
        let x = 24 + i32::try_from((i % per_row) as u32 * LEGEND_ENTRY)?;
        let y = 4 + i32::try_from((i / per_row) as u32 * LEGEND_ROW)? + 10;
        area.draw(&Rectangle::new(
            [(x, y - 5), (x + 12, y + 5)],
            color.filled(),
        ))?;
        let name: String = if name.chars().count() > 28 {
            name.chars().take(27).chain(std::iter::once('…')).collect()
        } else {
            name.clone()
        };
        area.draw(&Text::new(
            name,
            (x + 18, y - 7),
            ("sans-serif", 13).into_font(),
        ))?;
    }
    Ok(())
}

/// The latency distribution of each group as a CDF on a log scale, so that groups of very
/// different speeds compare on one chart; a dot marks each group's p50 and p95.
#[expect(clippy::cast_precision_loss, reason = "chart coordinates")]
fn latency_chart(report: &Report) -> Chart {
    let mut svg = String::new();
    {
        let mut legend = Vec::new();
        let band = legend_band(report.histogram.cdf.len());
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 360 + band)).into_drawing_area();
        root.fill(&WHITE)?;
        let (root, legend_area) = root.split_vertically(360);
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
            chart.draw_series(LineSeries::new(steps, color.stroke_width(2)))?;
            legend.push((label, color));
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
        draw_legend(&legend_area, &legend)?;
        root.present()?;
    }
    Ok(svg)
}

/// Each run's cumulative spend against the time since its first result, in minutes, or in
/// seconds for runs shorter than two minutes; the axis spans the longest run, so that a short
/// run is not squashed into the start of a fixed axis.
#[expect(clippy::cast_precision_loss, reason = "chart coordinates")]
fn spend_chart(report: &Report) -> Chart {
    let mut svg = String::new();
    {
        let band = legend_band(report.spend_over_time.len());
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 300 + band)).into_drawing_area();
        root.fill(&WHITE)?;
        let (root, legend_area) = root.split_vertically(300);
        let span_minutes = report
            .spend_over_time
            .values()
            .flatten()
            .map(|(m, _)| *m)
            .fold(0.0_f64, f64::max);
        let (scale, unit) = if span_minutes < 2.0 {
            (60.0, "seconds")
        } else {
            (1.0, "minutes")
        };
        // At least a millisecond, so that a run answered at once still has an axis.
        let span = (span_minutes * scale).max(0.001 * scale / 60.0);
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
            .build_cartesian_2d(0f64..span * 1.02, 0f64..dollars * 1.05)?;
        chart
            .configure_mesh()
            .x_desc(format!("{unit} since the run's first result"))
            .y_label_formatter(&|y| format!("${y:.4}"))
            .draw()?;
        let mut legend = Vec::new();
        for (i, (run, line)) in report.spend_over_time.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> = std::iter::once((0.0, 0.0))
                .chain(line.iter().map(|(m, s)| (*m * scale, *s as f64 / 1e12)))
                .collect();
            chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
            legend.push((run.clone(), color));
        }
        draw_legend(&legend_area, &legend)?;
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
        let band = legend_band(names.len());
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height + band)).into_drawing_area();
        root.fill(&WHITE)?;
        let (root, legend_area) = root.split_vertically(height);
        let top = bars
            .iter()
            .map(|(_, parts)| parts.iter().sum::<f64>())
            .fold(0.0, f64::max)
            .max(f64::MIN_POSITIVE)
            * 1.1;
        let labels: Vec<String> = bars
            .iter()
            .map(|(label, _)| {
                if label.chars().count() > 24 {
                    label.chars().take(23).chain(std::iter::once('…')).collect()
                } else {
                    label.clone()
                }
            })
            .collect();
        // Labels wider than their bar's share of the axis would run into each other: they
        // are turned to run downwards, with room made for the longest.
        let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        let per_bar = (WIDTH - 96) as usize / bars.len().max(1);
        let turned = longest * 7 > per_bar;
        let label_area = if turned {
            u32::try_from(longest * 6 + 16).unwrap_or(180).min(180)
        } else {
            40
        };
        // Drawn by hand under each bar: plotters centres a turned axis label on its tick,
        // which would put half of it over the bars.
        let label_style = if turned {
            TextStyle::from(
                ("sans-serif", 12)
                    .into_font()
                    .transform(FontTransform::Rotate90),
            )
            .pos(Pos::new(HPos::Left, VPos::Center))
        } else {
            TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top))
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(label_area)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..bars.len().max(1) as f64, 0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|_| String::new())
            .y_desc(y_desc)
            .y_label_formatter(y_format)
            .draw()?;
        for (i, label) in labels.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            root.draw(&Text::new(label.clone(), (x, y + 6), label_style.clone()))?;
        }
        for part in 0..names.len() {
            let color = PALETTE[part % PALETTE.len()];
            let rects = bars.iter().enumerate().map(|(i, (_, parts))| {
                let bottom: f64 = parts[..part].iter().sum();
                let x = i as f64;
                Rectangle::new(
                    [(x + 0.2, bottom), (x + 0.8, bottom + parts[part])],
                    color.filled(),
                )
            });
            chart.draw_series(rects)?;
        }
        let legend: Vec<(String, RGBColor)> = names
            .iter()
            .enumerate()
            .map(|(part, name)| (name.clone(), PALETTE[part % PALETTE.len()]))
            .collect();
        draw_legend(&legend_area, &legend)?;
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

/// The report's four charts as SVG documents, in the page's order: latency, cost, stop
/// reasons, spend over time.
pub fn charts(report: &Report) -> anyhow::Result<Vec<String>> {
    [
        latency_chart(report),
        cost_chart(report),
        stop_chart(report),
        spend_chart(report),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| anyhow::anyhow!("failed to draw a chart: {e}"))
}

/// The whole page.
pub fn html(report: &Report) -> anyhow::Result<String> {
    let charts = charts(report)?;
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
