//! The cost of one status check: jobwarden's client against `spark-submit --status`, the
//! usual tool (a JVM start per check), on the same submission of a real cluster.

use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;

use jobwarden::backend::spark::SparkClient;
use jobwarden::config::Settings;

use crate::median;

/// Median milliseconds of one check through jobwarden's client and, with a Spark home, of one
/// `spark-submit --status`.
pub async fn measure(
    mut settings: Settings,
    rest_url: String,
    submission_id: String,
    spark_home: Option<String>,
    client_checks: usize,
    tool_checks: usize,
) -> anyhow::Result<(f64, Option<f64>)> {
    settings.spark.rest_url = rest_url.clone();
    let client = SparkClient::new(&settings.spark)?;
    client
        .status(&submission_id)
        .await
        .with_context(|| format!("status of {submission_id} at {rest_url}"))?;
    let mut ours = Vec::with_capacity(client_checks);
    for _ in 0..client_checks.max(1) {
        let started = Instant::now();
        client.status(&submission_id).await?;
        ours.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let Some(home) = spark_home else {
        return Ok((median(ours), None));
    };
    let submit = std::path::Path::new(&home).join("bin/spark-submit");
    let master = rest_url.replacen("http://", "spark://", 1);
    let mut tool = Vec::with_capacity(tool_checks);
    for _ in 0..tool_checks.max(1) {
        let started = Instant::now();
        let out = Command::new(&submit)
            .args(["--status", &submission_id, "--master", &master])
            .output()
            .with_context(|| format!("failed to run {}", submit.display()))?;
        anyhow::ensure!(out.status.success(), "spark-submit --status failed");
        tool.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((median(ours), Some(median(tool))))
}

pub async fn run(
    settings: Settings,
    rest_url: String,
    submission_id: String,
    spark_home: Option<String>,
    client_checks: usize,
    tool_checks: usize,
) -> anyhow::Result<()> {
    let measured_tool = spark_home.is_some();
    let (ours_ms, tool_ms) = measure(
        settings,
        rest_url.clone(),
        submission_id.clone(),
        spark_home,
        client_checks,
        tool_checks,
    )
    .await?;
    println!("status of {submission_id} at {rest_url}");
    println!("{:<28} {:>12} {:>8}", "how", "median ms", "checks");
    println!(
        "{:<28} {:>12.3} {:>8}",
        "jobwarden client", ours_ms, client_checks
    );
    match tool_ms {
        Some(tool_ms) => {
            println!(
                "{:<28} {:>12.3} {:>8}",
                "spark-submit --status", tool_ms, tool_checks
            );
            println!(
                "ratio: one spark-submit check costs {:.0} jobwarden checks",
                tool_ms / ours_ms
            );
        }
        None if !measured_tool => println!("(no --spark-home: spark-submit --status not measured)"),
        None => {}
    }
    Ok(())
}
