//! The cost of one status check: jobwarden's client against `spark-submit --status`, the
//! usual tool (a JVM start per check), on the same submission of a real cluster.

use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;

use crate::config::Settings;
use crate::spark::SparkClient;

use super::median;

pub async fn run(
    mut settings: Settings,
    rest_url: String,
    submission_id: String,
    spark_home: Option<String>,
    client_checks: usize,
    tool_checks: usize,
) -> anyhow::Result<()> {
    settings.spark.rest_url = rest_url.clone();
    let client = SparkClient::new(&settings.spark).map_err(anyhow::Error::msg)?;
    // One call first so the connection exists, as it does in a running service.
    let state = client
        .status(&submission_id)
        .await
        .with_context(|| format!("status of {submission_id} at {rest_url}"))?
        .state;
    let mut ours = Vec::with_capacity(client_checks);
    for _ in 0..client_checks {
        let started = Instant::now();
        client.status(&submission_id).await?;
        ours.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let ours_ms = median(ours);
    println!("status of {submission_id} ({state}) at {rest_url}");
    println!("{:<28} {:>12} {:>8}", "how", "median ms", "checks");
    println!(
        "{:<28} {:>12.3} {:>8}",
        "jobwarden client", ours_ms, client_checks
    );

    let Some(home) = spark_home else {
        println!("(no --spark-home: spark-submit --status not measured)");
        return Ok(());
    };
    let submit = std::path::Path::new(&home).join("bin/spark-submit");
    let master = rest_url.replacen("http://", "spark://", 1);
    let mut tool = Vec::with_capacity(tool_checks);
    for _ in 0..tool_checks {
        let started = Instant::now();
        let out = Command::new(&submit)
            .args(["--status", &submission_id, "--master", &master])
            .output()
            .with_context(|| format!("failed to run {}", submit.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "spark-submit --status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tool.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let tool_ms = median(tool);
    println!(
        "{:<28} {:>12.3} {:>8}",
        "spark-submit --status", tool_ms, tool_checks
    );
    println!(
        "ratio: one spark-submit check costs {:.0} jobwarden checks",
        tool_ms / ours_ms
    );
    Ok(())
}
