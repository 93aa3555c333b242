//! A Spark worker's web page (`/`): its Running Drivers and Finished Drivers tables, with each
//! driver's state. Its `/json/` has no driver lists, so this page is the only place a worker
//! says how a driver ended that the master has since forgotten (a restart, a failover,
//! eviction past `spark.deploy.retainedDrivers`).

/// One driver as a worker's page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerDriver {
    pub id: String,
    /// A `DriverState` name as shown (RUNNING, FINISHED, FAILED, KILLED, ERROR…).
    pub state: String,
    /// The Notes column (ERROR's exception), when not empty.
    pub notes: Option<String>,
}

fn text(node: &tl::Node<'_>, parser: &tl::Parser<'_>) -> String {
    let raw = node.inner_text(parser);
    let decoded = raw
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'");
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every driver in the page's driver tables (any table whose header has a DriverID column).
pub fn drivers_on_worker_page(html: &str) -> Vec<WorkerDriver> {
    let Ok(dom) = tl::parse(html, tl::ParserOptions::default()) else {
        return Vec::new();
    };
    let parser = dom.parser();
    let mut out = Vec::new();
    let Some(tables) = dom.query_selector("table") else {
        return out;
    };
    for table in tables {
        let Some(table) = table.get(parser).and_then(|n| n.as_tag()) else {
            continue;
        };
        let headers: Vec<String> = table
            .query_selector(parser, "th")
            .into_iter()
            .flatten()
            .filter_map(|h| h.get(parser))
            .map(|h| text(h, parser))
            .collect();
        let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
        let (Some(id_col), Some(state_col)) = (column("DriverID"), column("State")) else {
            continue;
        };
        let notes_col = column("Notes");
        for row in table.query_selector(parser, "tr").into_iter().flatten() {
            let Some(row) = row.get(parser).and_then(|n| n.as_tag()) else {
                continue;
            };
            let cells: Vec<String> = row
                .query_selector(parser, "td")
                .into_iter()
                .flatten()
                .filter_map(|c| c.get(parser))
                .map(|c| text(c, parser))
                .collect();
            let (Some(id), Some(state)) = (cells.get(id_col), cells.get(state_col)) else {
                continue;
            };
            if id.is_empty() {
                continue;
            }
            out.push(WorkerDriver {
                id: id.clone(),
                state: state.clone(),
                notes: notes_col
                    .and_then(|i| cells.get(i))
                    .filter(|n| !n.is_empty())
                    .cloned(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL_PAGE: &str = include_str!("../../../tests/fixtures/worker-page-4.3.0.html");

    #[test]
    fn a_real_workers_finished_drivers_are_read_with_their_states() {
        let drivers = drivers_on_worker_page(REAL_PAGE);
        assert_eq!(drivers.len(), 22, "the page says Finished Drivers (22)");
        let killed = drivers
            .iter()
            .find(|d| d.id == "driver-20261129043819-0021")
            .unwrap();
        assert_eq!(killed.state, "KILLED");
        assert!(drivers.iter().all(|d| d.id.starts_with("driver-")));
        assert!(drivers.iter().any(|d| d.state == "FINISHED"));
    }

    #[test]
    fn a_spark_3_5_workers_running_and_finished_drivers_are_read_with_their_states() {
        let page = include_str!("../../../tests/fixtures/worker-page-3.5.9.html");
        let drivers = drivers_on_worker_page(page);
        let state = |id: &str| {
            drivers
                .iter()
                .find(|d| d.id == id)
                .map(|d| d.state.as_str())
                .unwrap_or("missing")
        };
        assert_eq!(
            drivers.len(),
            6,
            "Running Drivers (1) and Finished Drivers (5)"
        );
        assert_eq!(state("driver-20261129104814-0003"), "RUNNING");
        assert_eq!(state("driver-20261129104814-0005"), "FINISHED");
        assert_eq!(state("driver-20261129104814-0004"), "ERROR");
        assert_eq!(state("driver-20261129104743-0002"), "KILLED");
        assert_eq!(state("driver-20261129104742-0000"), "FAILED");
        let error = drivers
            .iter()
            .find(|d| d.id == "driver-20261129104814-0004")
            .and_then(|d| d.notes.as_deref())
            .unwrap_or_default();
        assert!(error.contains("NoSuchFileException"), "{error}");
    }

    #[test]
    fn executor_tables_and_garbage_yield_no_drivers() {
        assert!(drivers_on_worker_page("<html><body>not a worker</body></html>").is_empty());
        assert!(drivers_on_worker_page("").is_empty());
    }
}
