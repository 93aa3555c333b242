//! The store's ceiling, measured with the database's own command-line client (`psql`,
//! `mariadb`/`mysql`) fed the same multi-row upserts jobwarden's store would write: a client
//! known to send without stalls, so a slow socket in jobwarden's driver cannot hide in the
//! ratio. SQLite has no socket; its ceiling runs in process.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

/// Which client measured a ceiling, for the table.
pub fn client_name(url: &str) -> Option<&'static str> {
    if url.starts_with("postgres") {
        Some("psql")
    } else if url.starts_with("mysql") || url.starts_with("mariadb") {
        Some("mariadb")
    } else {
        None
    }
}

/// Seconds the database's own client takes to apply one status change to each of `ids`, in
/// upserts of `batch` rows, one transaction each; `None` for a database without such a client
/// (SQLite).
pub fn upsert_seconds(url: &str, ids: &[String], batch: usize) -> anyhow::Result<Option<f64>> {
    let Some(client) = client_name(url) else {
        return Ok(None);
    };
    let postgres = client == "psql";
    let script = script(ids, batch.clamp(1, 500), Utc::now(), postgres);
    let mut command = if postgres {
        let mut c = Command::new("psql");
        // psql reads libpq URLs; sqlx's extra parameters are not libpq's.
        c.arg(url.split('?').next().unwrap_or(url))
            .args(["-q", "-X", "-v", "ON_ERROR_STOP=1"]);
        c
    } else {
        mysql_command(url)?
    };
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {client} (install the database's client)"))?;
    child
        .stdin
        .take()
        .context("client has no stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "{client} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Some(seconds))
}

/// `mariadb` (or `mysql`) with the URL's host, port, user, password and database.
fn mysql_command(url: &str) -> anyhow::Result<Command> {
    let parsed = url::Url::parse(url).with_context(|| format!("bad database URL {url:?}"))?;
    let program = if which("mariadb") { "mariadb" } else { "mysql" };
    let mut c = Command::new(program);
    c.args(["-h", parsed.host_str().unwrap_or("127.0.0.1")])
        .args(["-P", &parsed.port().unwrap_or(3306).to_string()])
        .args(["-u", parsed.username()]);
    if let Some(password) = parsed.password() {
        // Through the environment, not the command line other users can read.
        c.env("MYSQL_PWD", password);
    }
    c.arg(parsed.path().trim_start_matches('/'));
    Ok(c)
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// The statements: what the store writes for a status change, without its reads, rules or
/// history.
fn script(ids: &[String], batch: usize, now: DateTime<Utc>, postgres: bool) -> String {
    let stamp = if postgres {
        format!("'{}'", now.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    } else {
        format!("'{}'", now.format("%Y-%m-%d %H:%M:%S%.6f"))
    };
    let columns = [
        "status",
        "spark_state",
        "progress",
        "last_polled_at",
        "last_confirmed_at",
        "status_changed_at",
        "updated_at",
    ];
    let update = if postgres {
        let set: Vec<String> = columns
            .iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        format!(
            "ON CONFLICT (execution_id) DO UPDATE SET {}",
            set.join(", ")
        )
    } else {
        let set: Vec<String> = columns
            .iter()
            .map(|c| format!("{c} = VALUES({c})"))
            .collect();
        format!("ON DUPLICATE KEY UPDATE {}", set.join(", "))
    };
    let mut sql = String::new();
    for chunk in ids.chunks(batch) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|id| {
                format!(
                    "('{}', 'Succeeded', 'FINISHED', 100, {stamp}, {stamp}, {stamp}, {stamp})",
                    id.replace('\'', "''")
                )
            })
            .collect();
        sql.push_str(&format!(
            "BEGIN;\nINSERT INTO spark_job_executions (execution_id, {}) VALUES {} {};\nCOMMIT;\n",
            columns.join(", "),
            rows.join(", "),
            update
        ));
    }
    sql
}
