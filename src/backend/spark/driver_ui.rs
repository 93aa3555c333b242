//! Real progress for a running driver: find its web UI and application id in the head of its
//! stderr (the status answer names neither), then count finished tasks in the UI's job list.

use serde::Deserialize;

/// Where a running driver serves its UI, and the application it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverUi {
    /// `http://host:port`
    pub base: String,
    pub app_id: String,
}

/// Reads the UI address and application id from a driver's stderr head, once both are there.
/// `worker_host` stands in when Spark logs only the port.
pub fn parse_driver_ui(stderr_head: &str, worker_host: &str) -> Option<DriverUi> {
    let mut address = None;
    let mut app_id = None;
    for line in stderr_head.lines() {
        if let Some(rest) = line.split("Start Jetty ").nth(1) {
            if let Some(host_port) = rest
                .split(" for SparkUI")
                .next()
                .filter(|_| rest.contains(" for SparkUI"))
            {
                address = Some(host_port.trim().to_owned());
            }
        } else if let Some(rest) = line
            .split("Successfully started service 'SparkUI' on port ")
            .nth(1)
        {
            let port = rest.trim_end_matches('.').trim();
            if address.is_none() && port.chars().all(|c| c.is_ascii_digit()) && !port.is_empty() {
                address = Some(format!("{worker_host}:{port}"));
            }
        } else if let Some(rest) = line.split("with app ID ").nth(1) {
            app_id = Some(rest.trim().to_owned());
        }
    }
    Some(DriverUi {
        base: format!("http://{}", address?),
        app_id: app_id.filter(|id| !id.is_empty())?,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UiJob {
    pub num_tasks: u64,
    #[serde(default)]
    pub num_completed_tasks: u64,
    #[serde(default)]
    pub num_skipped_tasks: u64,
}

/// Finished share of the tasks the driver has scheduled so far (skipped tasks count as done;
/// jobs appear one at a time, so this is an estimate). `None` before any task exists.
pub fn progress_of(jobs: &[UiJob]) -> Option<u8> {
    // Counts are the driver's word: wide sums, so absurd ones cannot overflow.
    let total: u128 = jobs.iter().map(|j| u128::from(j.num_tasks)).sum();
    if total == 0 {
        return None;
    }
    let done: u128 = jobs
        .iter()
        .map(|j| {
            (u128::from(j.num_completed_tasks) + u128::from(j.num_skipped_tasks))
                .min(u128::from(j.num_tasks))
        })
        .sum();
    Some(((done * 100) / total).min(99) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "\
==== Bytes 0-16384 of 9730 of /work/driver-1/stderr ====
Launch Command: \"java\" \"-cp\" ...
26/11/29 00:20:35 INFO JettyUtils: Start Jetty 127.0.0.1:4040 for SparkUI
26/11/29 00:20:35 INFO Utils: Successfully started service 'SparkUI' on port 4040.
26/11/29 00:20:35 INFO StandaloneSchedulerBackend: Connected to Spark cluster with app ID app-20261129002035-0000
";

    #[test]
    fn ui_and_app_id_come_from_the_driver_log() {
        assert_eq!(
            parse_driver_ui(HEAD, "10.0.0.9"),
            Some(DriverUi {
                base: "http://127.0.0.1:4040".into(),
                app_id: "app-20261129002035-0000".into()
            })
        );
    }

    #[test]
    fn port_only_log_uses_the_worker_host() {
        let head = "INFO Utils: Successfully started service 'SparkUI' on port 4041.\nINFO X: Connected to Spark cluster with app ID app-1\n";
        assert_eq!(
            parse_driver_ui(head, "worker7").unwrap().base,
            "http://worker7:4041"
        );
    }

    #[test]
    fn nothing_until_both_lines_are_logged() {
        assert_eq!(parse_driver_ui("Launch Command: java\n", "h"), None);
        let ui_only = "INFO JettyUtils: Start Jetty 127.0.0.1:4040 for SparkUI\n";
        assert_eq!(parse_driver_ui(ui_only, "h"), None);
    }

    #[test]
    fn progress_counts_completed_and_skipped_tasks() {
        let jobs: Vec<UiJob> = serde_json::from_str(include_str!(
            "../../../tests/fixtures/driver-ui-api-v1-jobs.json"
        ))
        .unwrap();
        assert_eq!(progress_of(&jobs), Some(55));
        let skipped = vec![UiJob {
            num_tasks: 32,
            num_completed_tasks: 16,
            num_skipped_tasks: 16,
        }];
        assert_eq!(progress_of(&skipped), Some(99));
        assert_eq!(progress_of(&[]), None);
    }
}
