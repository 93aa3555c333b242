//! Charts for the analytics page, drawn on the server as inline SVG: no script, no library,
//! nothing fetched. Colours come from the stylesheet's classes (the pages' CSP allows no
//! inline style), and every bar and point carries its figures in `data-` attributes and a
//! `<title>` (the browser's tooltip, and what a screen reader reads), so a chart is never the
//! only place a number is.

use std::time::Duration;

use maud::{html, Markup};

use crate::analytics::{Day, Quantiles};

use super::layout::duration;

const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 30.0;
/// Date labels under the axis at most; the others are left out (each bar has its title).
const MAX_DATE_LABELS: usize = 7;

fn plot_width() -> f64 {
    WIDTH - LEFT - RIGHT
}

fn plot_height() -> f64 {
    HEIGHT - TOP - BOTTOM
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `value` (at least 1): a round top for an axis.
fn round_up(value: f64) -> f64 {
    if value <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|top| *top >= value)
        .unwrap_or(10.0 * magnitude)
}

/// `y` for `value` on an axis from 0 to `top`.
fn y_of(value: f64, top: f64) -> f64 {
    TOP + plot_height() * (1.0 - value / top)
}

fn px(value: f64) -> String {
    format!("{value:.1}")
}

/// The axes, three grid lines with their labels, and the date labels of `days`.
fn frame(days: &[Day], top: f64, label: impl Fn(f64) -> String) -> Markup {
    let band = plot_width() / days.len().max(1) as f64;
    let every = days.len().div_ceil(MAX_DATE_LABELS).max(1);
    html! {
        @for fraction in [0.0, 0.5, 1.0] {
            @let y = y_of(top * fraction, top);
            line.grid x1=(px(LEFT)) x2=(px(WIDTH - RIGHT)) y1=(px(y)) y2=(px(y)) {}
            text.axis x=(px(LEFT - 6.0)) y=(px(y + 4.0)) text-anchor="end" { (label(top * fraction)) }
        }
        @for (i, day) in days.iter().enumerate() {
            @if (days.len() - 1 - i).is_multiple_of(every) {
                text.axis x=(px(LEFT + band * (i as f64 + 0.5))) y=(px(HEIGHT - 10.0)) text-anchor="middle" {
                    (day.date.format("%m-%d"))
                }
            }
        }
    }
}

/// Each outcome's part of a day's bar, from the axis up: (class, low, high); an outcome with
/// no run has no part.
fn stacked(f: &crate::analytics::Figures) -> Vec<(&'static str, f64, f64)> {
    let mut base = 0.0;
    [
        ("ok", f.succeeded),
        ("failed", f.failed),
        ("cancelled", f.cancelled),
    ]
    .into_iter()
    .filter(|(_, count)| *count > 0)
    .map(|(class, count)| {
        let low = base;
        base += count as f64;
        (class, low, base)
    })
    .collect()
}

/// Runs per day as stacked bars: succeeded, failed, cancelled.
pub fn runs_per_day(id: &str, title: &str, days: &[Day]) -> Markup {
    let most = days.iter().map(|d| d.figures.runs).max().unwrap_or(0);
    let top = round_up(most as f64);
    let band = plot_width() / days.len().max(1) as f64;
    let bar = (band * 0.7).max(1.0);
    html! {
        figure.chart id=(id) {
            figcaption { (title) }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(title) {
                (frame(days, top, |v| format!("{v:.0}")))
                @for (i, day) in days.iter().enumerate() {
                    @let f = &day.figures;
                    @let x = LEFT + band * i as f64 + (band - bar) / 2.0;
                    g.day data-date=(day.date) data-runs=(f.runs) data-succeeded=(f.succeeded)
                        data-failed=(f.failed) data-cancelled=(f.cancelled) {
                        title {
                            (day.date) ": " (f.runs) " run" @if f.runs != 1 { "s" } " — "
                            (f.succeeded) " succeeded, " (f.failed) " failed, " (f.cancelled) " cancelled"
                        }
                        @for (class, low, high) in stacked(f) {
                            rect class=(class) x=(px(x)) width=(px(bar))
                                y=(px(y_of(high, top))) height=(px(y_of(low, top) - y_of(high, top))) {}
                        }
                    }
                }
            }
            p.legend {
                span.key.ok { "succeeded" } span.key.failed { "failed" } span.key.cancelled { "cancelled" }
            }
        }
    }
}

/// Which percentile a line draws.
#[derive(Clone, Copy)]
pub enum Series {
    Duration,
    QueueWait,
}

impl Series {
    fn of(self, day: &Day) -> Quantiles {
        match self {
            Series::Duration => day.figures.duration,
            Series::QueueWait => day.figures.queue_wait,
        }
    }
}

/// p50 and p95 per day as two lines, broken where a day has no run to measure.
pub fn percentiles_per_day(id: &str, title: &str, days: &[Day], series: Series) -> Markup {
    let highest = days
        .iter()
        .flat_map(|d| {
            let q = series.of(d);
            [q.p50, q.p95]
        })
        .flatten()
        .max()
        .unwrap_or_default();
    let top = round_up(highest.as_secs_f64());
    let band = plot_width() / days.len().max(1) as f64;
    let x_of = |i: usize| LEFT + band * (i as f64 + 0.5);
    let line = |pick: fn(Quantiles) -> Option<Duration>| {
        // Runs of consecutive days with a value, each one polyline.
        let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (i, day) in days.iter().enumerate() {
            match pick(series.of(day)) {
                Some(d) => segments
                    .last_mut()
                    .expect("one segment at least")
                    .push((x_of(i), y_of(d.as_secs_f64(), top))),
                None => segments.push(Vec::new()),
            }
        }
        segments
            .into_iter()
            .filter(|s| s.len() > 1)
            .map(|s| {
                s.iter()
                    .map(|(x, y)| format!("{},{}", px(*x), px(*y)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
    };
    let p50_lines = line(|q| q.p50);
    let p95_lines = line(|q| q.p95);
    html! {
        figure.chart id=(id) {
            figcaption { (title) }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(title) {
                (frame(days, top, |v| duration(Duration::from_secs_f64(v))))
                @for points in &p95_lines { polyline.p95 points=(points) {} }
                @for points in &p50_lines { polyline.p50 points=(points) {} }
                @for (i, day) in days.iter().enumerate() {
                    @let q = series.of(day);
                    @for (class, value) in [("p50", q.p50), ("p95", q.p95)] {
                        @if let Some(d) = value {
                            circle class=(class) cx=(px(x_of(i))) cy=(px(y_of(d.as_secs_f64(), top))) r="3.5"
                                data-date=(day.date) data-series=(class) data-seconds=(format!("{:.3}", d.as_secs_f64())) {
                                title { (day.date) " " (class) ": " (duration(d)) }
                            }
                        }
                    }
                }
            }
            p.legend { span.key.p50 { "p50" } span.key.p95 { "p95" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::Figures;

    fn day(d: u32, runs: u64, p50: Option<u64>) -> Day {
        Day {
            date: chrono::NaiveDate::from_ymd_opt(2026, 3, d).unwrap(),
            figures: Figures {
                runs,
                succeeded: runs,
                duration: Quantiles {
                    p50: p50.map(Duration::from_secs),
                    p95: p50.map(|s| Duration::from_secs(s * 2)),
                },
                ..Figures::default()
            },
        }
    }

    #[test]
    fn axes_end_on_a_round_figure() {
        assert_eq!(round_up(0.0), 1.0);
        assert_eq!(round_up(3.0), 5.0);
        assert_eq!(round_up(10.0), 10.0);
        assert_eq!(round_up(101.0), 200.0);
        assert_eq!(round_up(600.0), 1000.0);
    }

    #[test]
    fn each_bar_carries_its_figures() {
        let svg = runs_per_day("runs", "Runs", &[day(1, 3, None), day(2, 0, None)]).into_string();
        assert!(
            svg.contains(r#"data-date="2026-03-01" data-runs="3" data-succeeded="3""#),
            "{svg}"
        );
        assert_eq!(
            svg.matches("<rect").count(),
            1,
            "an empty day draws no bar: {svg}"
        );
    }

    #[test]
    fn a_day_without_a_duration_breaks_the_line() {
        let days = [
            day(1, 1, Some(10)),
            day(2, 1, Some(20)),
            day(3, 0, None),
            day(4, 1, Some(5)),
        ];
        let svg = percentiles_per_day("d", "Durations", &days, Series::Duration).into_string();
        assert_eq!(svg.matches("<polyline class=\"p50\"").count(), 1, "{svg}");
        assert_eq!(svg.matches("<circle class=\"p50\"").count(), 3, "{svg}");
        assert!(
            svg.contains(r#"data-series="p95" data-seconds="40.000""#),
            "{svg}"
        );
    }
}
