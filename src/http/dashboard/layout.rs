//! The page shell every dashboard page shares (head, navigation, live regions) and the small
//! pieces of markup and wording the pages have in common: status badges, times, durations.

use std::time::Duration;

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::assets;

/// Which page the navigation marks as the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Jobs,
    Health,
    DeadLetters,
    Analytics,
}

/// A rendered page: its title and its regions. Each region is also what the live endpoint
/// sends back, so a page and its updates are drawn by the same code.
pub struct Page {
    pub title: String,
    pub nav: Nav,
    /// Markup above the regions that live updates leave alone (forms being filled in).
    pub fixed: Option<Markup>,
    pub regions: Vec<(&'static str, Markup)>,
}

impl Page {
    pub fn render(&self) -> Markup {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="referrer" content="no-referrer";
                    title { (self.title) " · jobwarden" }
                    link rel="stylesheet" href=(assets::CSS_PATH);
                    script src=(assets::JS_PATH) defer {}
                }
                body data-live {
                    header.top {
                        a.brand href="/" { "jobwarden" }
                        nav {
                            (nav_link("/", "Jobs", self.nav == Nav::Jobs))
                            (nav_link("/health", "Health", self.nav == Nav::Health))
                            (nav_link("/dead-letters", "Dead letters", self.nav == Nav::DeadLetters))
                            (nav_link("/analytics", "Analytics", self.nav == Nav::Analytics))
                        }
                        span #live-status .live-status role="status" {
                            noscript { "Reload the page for news (live updates need JavaScript)." }
                        }
                    }
                    main {
                        h1 { (self.title) }
                        @if let Some(fixed) = &self.fixed { (fixed) }
                        @for (name, markup) in &self.regions {
                            div data-live=(name) { (markup) }
                        }
                    }
                }
            }
        }
    }
}

fn nav_link(href: &str, label: &str, current: bool) -> Markup {
    html! {
        @if current {
            a href=(href) aria-current="page" { (label) }
        } @else {
            a href=(href) { (label) }
        }
    }
}

/// A status as text on a colour: never colour alone.
pub fn status_badge(status: &str) -> Markup {
    let class = match status {
        // Retrying waits too: for its next attempt's time, with no driver running.
        "Queued" | "Pending" | "Retrying" => "st st-waiting",
        "Submitting" => "st st-starting",
        "Running" | "Processing" => "st st-running",
        "Succeeded" | "Completed" => "st st-ok",
        "Failed" => "st st-failed",
        "Cancelled" => "st st-cancelled",
        _ => "st",
    };
    html! { span class=(class) { (status) } }
}

/// A progress bar with its figure as text beside it.
pub fn progress(percent: i16) -> Markup {
    let percent = percent.clamp(0, 100);
    html! {
        span.progress {
            progress max="100" value=(percent) aria-label="progress" { (percent) "%" }
            span.figure { (percent) "%" }
        }
    }
}

/// A time in UTC, to the second, in a `<time>` element.
pub fn time(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        None => html! { span.none { "—" } },
        Some(at) => html! {
            time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S")) }
        },
    }
}

/// `45s`, `3m 12s`, `1h 05m`, `2d 03h`: precise where it matters, short where it does not.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m {:02}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h {:02}m", s / 3_600, (s % 3_600) / 60),
        _ => format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3_600),
    }
}

/// The time between two instants, or none when either is missing or they are reversed.
pub fn between(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Option<Duration> {
    (to? - from?).to_std().ok()
}

/// The first line of a text, cut to `max` characters.
pub fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut out: String = line.trim().chars().take(max).collect();
    if line.trim().chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_short_at_every_scale() {
        assert_eq!(duration(Duration::from_secs(45)), "45s");
        assert_eq!(duration(Duration::from_secs(192)), "3m 12s");
        assert_eq!(duration(Duration::from_secs(3_900)), "1h 05m");
        assert_eq!(
            duration(Duration::from_secs(2 * 86_400 + 3 * 3_600)),
            "2d 03h"
        );
    }

    #[test]
    fn the_first_line_skips_blank_lines_and_is_cut() {
        assert_eq!(
            first_line("\n  boom: it broke\nat x", 100),
            "boom: it broke"
        );
        assert_eq!(first_line("abcdef", 3), "abc…");
    }

    #[test]
    fn a_retrying_job_has_a_colour_like_the_other_waiting_ones() {
        let html = status_badge("Retrying").into_string();
        assert!(html.contains("st st-waiting"), "{html}");
        assert!(html.contains(">Retrying<"), "{html}");
    }

    #[test]
    fn untrusted_text_in_a_badge_is_escaped() {
        let html = status_badge("<script>x</script>").into_string();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
    }
}
