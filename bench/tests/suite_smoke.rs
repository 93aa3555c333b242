//! A smoke run of the benchmark harness through the real `jobwarden-bench` binary: every
//! scenario of the quick suite runs in its own process and prints its row. Speed is for people
//! to read, not for this test to judge.

use std::path::Path;
use std::process::Command;

#[test]
fn quick_suite_prints_a_row_per_scenario_with_its_peak_rss() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml");
    std::fs::copy(shipped, dir.path().join("config.toml")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jobwarden-bench"));
    cmd.current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("JOBWARDEN_CONFIG")
        .env("NO_COLOR", "1")
        .arg("suite");
    for (key, _) in std::env::vars() {
        if key.starts_with("JOBWARDEN__") {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().unwrap();
    let table = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{table}");
    for scenario in [
        "| poll throughput, 2k jobs, pool 5 |",
        "| poll throughput, 2k jobs, pool 64 |",
        "| full refresh cycle, 2k jobs, pool 64 |",
        "| CPU per check, 2k jobs, pool 64 (by thread:",
        "| poll throughput, 2k jobs, pool 64, third cycle (no change) |",
        "| poll throughput, 2k jobs, pool 64, mimalloc |",
        "| service process over 2k jobs, two cycles, as built (glibc malloc) |",
        "| service process over 2k jobs, two cycles, JOBWARDEN_ALLOCATOR=mimalloc |",
        "| freshness,",
        "| kafka ingest, 20k events (mock cluster), SQLite |",
        "| store writes, 5k changes, SQLite |",
        "| steady state, 2k running jobs, no change, 3 cycles |",
        "| service over 2k jobs, first cycle |",
        "| submissions decided, 200 in one look, 2k waiting (SQLite) |",
        "| children released, 200 in one look, 2k waiting (SQLite) |",
        "| parent's end to child's submission, 50 pairs,",
        "| idle service (no jobs) |",
    ] {
        assert!(table.contains(scenario), "{scenario} missing:\n{table}");
    }
    assert!(table.contains(" MB |"), "peak RSS column missing:\n{table}");
    assert!(
        table.contains("MB anonymous,") && table.contains("MB held at the end"),
        "the service's memory is not broken down:\n{table}"
    );
}

#[test]
fn retention_prints_poll_latency_idle_and_while_pruning_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml");
    std::fs::copy(shipped, dir.path().join("config.toml")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jobwarden-bench"))
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("JOBWARDEN_CONFIG")
        .env_remove("JOBWARDEN__DATABASE__URL")
        .args(["retention", "--rows", "5000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("deleted 5000 aged history rows"), "{text}");
    assert!(text.contains("| p99 |"), "{text}");
}
