//! The Grafana dashboard in deploy/grafana: a dashboard model Grafana imports, whose every
//! PromQL expression names only metrics the running binary exports and parses as PromQL.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jobwarden::metrics::Metrics;
use serde_json::Value;

use crate::helpers::require_all_backends;

const BIN: &str = env!("CARGO_BIN_EXE_jobwarden");

fn dashboard_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/jobwarden.json")
}

fn dashboard() -> Value {
    let path = dashboard_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, those inside a collapsed row too.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn collect<'a>(list: &'a Value, into: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            into.push(panel);
            collect(&panel["panels"], into);
        }
    }
    let mut all = Vec::new();
    collect(&dashboard["panels"], &mut all);
    all
}

/// Each query as (panel title, PromQL).
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |target| {
                    let expr = target["expr"]
                        .as_str()
                        .unwrap_or_else(|| panic!("a target of {title:?} has no expr"));
                    (title.clone(), expr.to_owned())
                })
        })
        .collect()
}

/// The series selector of each `label_values(selector, label)` variable query.
fn variable_selectors(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|var| var["type"] == "query")
        .map(|var| {
            let name = var["name"].as_str().unwrap_or("?");
            let query = var["query"]["query"].as_str().or(var["query"].as_str());
            let selector = query
                .and_then(|q| q.trim().strip_prefix("label_values("))
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .map(|(selector, _label)| selector.to_owned())
                .unwrap_or_else(|| panic!("variable {name}: not label_values(selector, label)"));
            (format!("variable {name}"), selector)
        })
        .collect()
}

/// PromQL words that are never a metric name when they stand without a following `(`.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Modifiers whose parenthesised list holds label names, not series.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names `expr` selects, in order: every identifier that is not a function or
/// aggregation, a keyword, a label (in `{…}` or a `by (…)`-style list), a string, a range,
/// a number, or a Grafana variable.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    // Index just past the bracket closing the one at `open`, skipping quoted strings.
    let past_closing = |open: usize, close: char| -> usize {
        let mut j = open + 1;
        let mut depth = 1;
        while j < chars.len() {
            match chars[j] {
                '"' | '\'' | '`' => j = past_string(&chars, j) - 1,
                c if c == chars[open] => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        panic!("unbalanced {:?} in {expr:?}", chars[open]);
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = past_string(&chars, i),
            '{' => i = past_closing(i, '}'),
            '[' => i = past_closing(i, ']'),
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = past_closing(i, '}');
                } else {
                    while chars
                        .get(i)
                        .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                    {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '.')
                {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while chars.get(next).is_some_and(|c| c.is_whitespace()) {
                    next += 1;
                }
                let called = chars.get(next) == Some(&'(');
                if called && LABEL_LISTS.contains(&word.as_str()) {
                    i = past_closing(next, ')');
                } else if !called && !KEYWORDS.contains(&word.as_str()) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Index just past the string literal opening at `open`.
fn past_string(chars: &[char], open: usize) -> usize {
    let quote = chars[open];
    let mut j = open + 1;
    while j < chars.len() {
        match chars[j] {
            '\\' if quote != '`' => j += 2,
            c if c == quote => return j + 1,
            _ => j += 1,
        }
    }
    panic!(
        "unterminated string in {:?}",
        chars.iter().collect::<String>()
    );
}

/// Family name to type, from the `# TYPE` lines of a Prometheus text scrape.
fn families(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

/// Where `name` is a series of one of `families`: the family itself, or a histogram's
/// `_bucket`, `_sum` or `_count` (a summary's `_sum` or `_count`). A histogram's bare name
/// selects nothing in Prometheus.
fn series_of(name: &str, families: &BTreeMap<String, String>) -> Result<(), String> {
    if let Some(kind) = families.get(name) {
        return match kind.as_str() {
            "histogram" | "summary" => Err(format!(
                "{name} is a {kind}: Prometheus stores only its _bucket/_sum/_count series"
            )),
            _ => Ok(()),
        };
    }
    let parent = [
        ("_bucket", &["histogram"][..]),
        ("_sum", &["histogram", "summary"][..]),
        ("_count", &["histogram", "summary"][..]),
    ]
    .into_iter()
    .find_map(|(suffix, kinds)| {
        let family = name.strip_suffix(suffix)?;
        families
            .get(family)
            .filter(|kind| kinds.contains(&kind.as_str()))
            .map(|_| ())
    });
    parent.ok_or_else(|| format!("{name} is not exported"))
}

/// What a fresh application registers, `# HELP`/`# TYPE` lines and all. The registry leaves a
/// labelled family out of a scrape until it has a child, so each one is given a child here;
/// a labelled family added to `Metrics` must be added here to count as registered.
fn registered_families() -> String {
    let m = Metrics::new();
    for vec in [
        &m.polls,
        &m.transitions,
        &m.kafka_events,
        &m.actor_restarts,
        &m.store_refused,
        &m.pruned_rows,
    ] {
        vec.with_label_values(&["-"]).inc();
    }
    m.notifications.with_label_values(&["-", "-"]).inc();
    for vec in [
        &m.jobs,
        &m.spark_up,
        &m.instance_info,
        &m.notification_channel_failing,
        &m.kafka_brokers_up,
    ] {
        vec.with_label_values(&["-"]).set(1.0);
    }
    m.poll_cycle_seconds.with_label_values(&["-"]).observe(1.0);
    m.job_duration.with_label_values(&["-", "-"]).observe(1.0);
    m.render()
}

/// `/metrics` of the real binary on its embedded defaults (SQLite, no Kafka, no Spark jobs).
async fn scrape_of_the_binary() -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut service = jobwarden_testkit::process::Jobwarden::new(BIN)
        .current_dir(dir.path())
        .start();
    service.wait_for_line("jobwarden running", Duration::from_secs(60));
    let url = format!("{}/metrics", service.http_url());
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let scrape = response.text().await.unwrap();
    service.signal("TERM");
    let (status, log) = service.wait(Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}:\n{log}");
    scrape
}

/// Grafana's variables as Prometheus would see them once Grafana substituted them.
fn as_prometheus_sees_it(expr: &str) -> String {
    let expr = ["$__rate_interval", "$__interval", "$__range"]
        .iter()
        .fold(expr.to_owned(), |e, var| e.replace(var, "5m"));
    let expr = expr.replace("${job}", ".*").replace("${instance}", ".*");
    let expr = expr.replace("$job", ".*").replace("$instance", ".*");
    assert!(
        !expr.contains('$'),
        "a Grafana variable left unsubstituted in {expr:?}"
    );
    expr
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

#[test]
fn metric_names_are_read_past_functions_labels_ranges_and_modifiers() {
    let expr = r#"histogram_quantile(0.95, sum by (le, kind) (rate(a_seconds_bucket{job=~"$job", x="}[b"}[$__rate_interval] offset 1h)))
        / on (instance) group_left (exported_instance) b_info or vector(0) > bool 2e3"#;
    assert_eq!(metric_names(expr), ["a_seconds_bucket", "b_info"]);
}

#[test]
fn dashboard_is_a_grafana_model_with_a_prometheus_datasource_variable() {
    let dashboard = dashboard();
    assert_eq!(dashboard["title"], "jobwarden");
    assert!(dashboard["uid"]
        .as_str()
        .is_some_and(|uid| !uid.is_empty() && uid.len() <= 40));
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    assert!(
        dashboard["id"].is_null(),
        "an id belongs to one Grafana instance; import assigns it"
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["query"], "prometheus");
    assert_eq!(datasource["name"], "datasource");
    assert!(!panels(&dashboard).is_empty());
}

#[test]
fn every_panel_and_variable_queries_the_chosen_datasource() {
    let dashboard = dashboard();
    let chosen = |what: &str, datasource: &Value| {
        assert_eq!(datasource["type"], "prometheus", "{what}");
        assert_eq!(datasource["uid"], "${datasource}", "{what}");
    };
    for panel in panels(&dashboard)
        .into_iter()
        .filter(|p| p["type"] != "row")
    {
        let title = panel["title"].as_str().expect("every panel has a title");
        chosen(title, &panel["datasource"]);
        let targets = panel["targets"]
            .as_array()
            .expect("every panel has targets");
        assert!(!targets.is_empty(), "{title} queries nothing");
        let ref_ids: BTreeSet<_> = targets.iter().map(|t| t["refId"].as_str()).collect();
        assert_eq!(ref_ids.len(), targets.len(), "{title}: refIds repeat");
        for target in targets {
            chosen(title, &target["datasource"]);
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            chosen(var["name"].as_str().unwrap(), &var["datasource"]);
        }
    }
}

#[test]
fn panels_fit_the_24_column_grid_without_overlapping() {
    let dashboard = dashboard();
    let placed: Vec<(String, [u64; 4])> = panels(&dashboard)
        .into_iter()
        .map(|p| {
            let g = &p["gridPos"];
            let at = ["x", "y", "w", "h"]
                .map(|k| g[k].as_u64().unwrap_or_else(|| panic!("{p}: gridPos.{k}")));
            (p["title"].as_str().unwrap_or("?").to_owned(), at)
        })
        .collect();
    for (title, [x, _, w, h]) in &placed {
        assert!(
            *w > 0 && *h > 0 && x + w <= 24,
            "{title} does not fit the grid"
        );
    }
    for (i, (a, [ax, ay, aw, ah])) in placed.iter().enumerate() {
        for (b, [bx, by, bw, bh]) in &placed[i + 1..] {
            let apart = ax + aw <= *bx || bx + bw <= *ax || ay + ah <= *by || by + bh <= *ay;
            assert!(apart, "{a:?} and {b:?} overlap");
        }
    }
}

#[actix_rt::test]
async fn every_expression_names_only_metrics_the_binary_exports() {
    let dashboard = dashboard();
    let scraped = families(&scrape_of_the_binary().await);
    assert!(
        scraped.contains_key("jobwarden_database_up"),
        "an empty scrape: {scraped:?}"
    );
    let registered = families(&registered_families());
    let queries: Vec<_> = expressions(&dashboard)
        .into_iter()
        .chain(variable_selectors(&dashboard))
        .collect();
    let mut wrong = Vec::new();
    for (title, expr) in &queries {
        let names = metric_names(expr);
        if names.is_empty() {
            wrong.push(format!("{title}: no metric in {expr:?}"));
        }
        for name in names {
            // A labelled family has no line in a scrape until its first child: such a name
            // counts when the same code registers it (and never as a bare histogram).
            let found = series_of(&name, &scraped).or_else(|not_scraped| {
                if scraped.contains_key(&name) {
                    Err(not_scraped)
                } else {
                    series_of(&name, &registered)
                        .map_err(|e| format!("{e} (neither scraped nor registered)"))
                }
            });
            if let Err(e) = found {
                wrong.push(format!("{title}: {e}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_expression_parses_with_promtool() {
    let Some(promtool) = on_path("promtool") else {
        assert!(
            !require_all_backends(),
            "CI must check the dashboard's PromQL: install promtool with `bash .ci/promtool.sh`"
        );
        eprintln!("SKIPPED parsing the dashboard's PromQL: promtool is not installed (run `bash .ci/promtool.sh`)");
        return;
    };
    // promtool parses offline only as part of a rules file: each expression becomes a
    // recording rule (a JSON string is a YAML double-quoted scalar).
    let expressions = expressions(&dashboard());
    let mut rules = String::from("groups:\n  - name: jobwarden_dashboard\n    rules:\n");
    for (n, (title, expr)) in expressions.iter().enumerate() {
        rules.push_str(&format!(
            "      # {title}\n      - record: jobwarden_dashboard:expr_{n}\n        expr: {}\n",
            serde_json::to_string(&as_prometheus_sees_it(expr)).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check rules:\n{said}\n{rules}"
    );
    assert!(
        said.contains(&format!("SUCCESS: {} rules found", expressions.len())),
        "{said}"
    );
}
