//! What a Spark master's and driver's answers mean, from the bytes received to typed values:
//! no I/O here, so each parser can be tested and fuzzed on its own, and whatever arrives is
//! either a value or a [`SparkError`] that says what was wrong with it.

use std::time::Duration;

use serde::Deserialize;

use super::driver_ui::{progress_of, UiJob};
use super::state::DriverState;

/// One driver's status as the master reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverStatus {
    pub submission_id: String,
    pub state: DriverState,
    /// Spark's `message`; only ERROR carries one.
    pub message: Option<String>,
    pub worker_id: Option<String>,
}

/// Why a call to Spark gave no usable answer. None of these says anything about the job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SparkError {
    #[error("Spark does not know submission {0}")]
    UnknownSubmission(String),
    #[error("Spark did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach Spark at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("Spark answered HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("Spark's answer is not a driver status: {0}")]
    Garbage(String),
    #[error("Spark reported driver state {0:?}, which this version does not know")]
    UnknownState(String),
    /// A standby or recovering master: it cannot say anything about any driver now.
    #[error("the Spark master is not the alive one (state {0}); asking again later")]
    MasterNotAlive(String),
    /// The master does not know the driver and no worker's page could be read: right after a
    /// master restart its workers have not registered again, so nobody can say yet.
    #[error("the master does not know {0} and none of its workers could be asked (after a master restart they register again within seconds to minutes); nothing is known about the driver yet")]
    NoWorkerToAsk(String),
}

impl SparkError {
    /// Spark itself is down or failing (as opposed to an answer about one submission).
    pub fn is_outage(&self) -> bool {
        match self {
            SparkError::Timeout(_)
            | SparkError::Unreachable { .. }
            | SparkError::MasterNotAlive(_)
            | SparkError::NoWorkerToAsk(_) => true,
            SparkError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusWire {
    action: Option<String>,
    driver_state: Option<String>,
    message: Option<String>,
    success: Option<bool>,
    worker_id: Option<String>,
}

#[derive(Deserialize)]
struct MasterWire {
    #[serde(default)]
    workers: Vec<ListedWorker>,
}

/// The driver lists of a master's `/json/`.
#[derive(Deserialize)]
struct ListingWire {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    activedrivers: Vec<ListedWire>,
    #[serde(default)]
    completeddrivers: Vec<ListedWire>,
}

#[derive(Deserialize)]
struct ListedWire {
    id: String,
    state: String,
    #[serde(default)]
    worker: Option<String>,
    #[serde(default)]
    mainclass: Option<String>,
    /// Milliseconds, written as a JSON string by Spark.
    #[serde(default)]
    starttime: Option<serde_json::Value>,
}

/// Every driver an alive master knows, from one request.
#[derive(Debug, Clone, Default)]
pub struct MasterListing {
    pub drivers: std::collections::HashMap<String, DriverStatus>,
    /// Main class and start time (ms) of each listed driver: what a relaunched driver's new id
    /// is recognised by (nothing in Spark's answers links the two ids).
    pub origins: std::collections::HashMap<String, (String, i64)>,
}

impl MasterListing {
    /// The drivers that may be `old` relaunched: waiting or running (a relaunch starts a new
    /// driver), of the same main class, started after it.
    pub fn successors_of(&self, old: &str) -> Vec<String> {
        let Some((class, started)) = self.origins.get(old) else {
            return Vec::new();
        };
        let mut found: Vec<String> = self
            .origins
            .iter()
            .filter(|(id, (c, s))| {
                id.as_str() != old
                    && c == class
                    && s > started
                    && self.drivers.get(id.as_str()).is_some_and(|d| {
                        matches!(d.state, DriverState::Submitted | DriverState::Running)
                    })
            })
            .map(|(id, _)| id.clone())
            .collect();
        found.sort();
        found
    }
}

/// A worker as the master's `/json/` lists it: its id and its web UI's address.
#[derive(Debug, Clone, Deserialize)]
pub struct ListedWorker {
    pub id: String,
    pub webuiaddress: String,
}

/// The recovery state a standby or recovering master names when it refuses a status request
/// ("Current state is not alive: STANDBY. …", the prefix Spark's own client checks for).
pub fn not_alive_state(message: &str) -> Option<String> {
    let rest = message.split("Current state is not alive:").nth(1)?;
    let state: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    Some(if state.is_empty() {
        "unknown".into()
    } else {
        state
    })
}

#[derive(Deserialize)]
struct MasterStatusWire {
    #[serde(default)]
    status: Option<String>,
}

/// A `GET /v1/submissions/status/{id}` answer about `submission_id`.
pub fn driver_status(body: &[u8], submission_id: &str) -> Result<DriverStatus, SparkError> {
    let wire: StatusWire = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(body);
        SparkError::Garbage(format!("{e}; body starts {:?}", preview(&text)))
    })?;
    if wire.action.as_deref() == Some("ErrorResponse") {
        return Err(SparkError::Garbage(
            wire.message
                .unwrap_or_else(|| "ErrorResponse without a message".into()),
        ));
    }
    let Some(raw_state) = wire.driver_state else {
        if let Some(state) = wire.message.as_deref().and_then(not_alive_state) {
            return Err(SparkError::MasterNotAlive(state));
        }
        if wire.success == Some(false) {
            return Err(SparkError::UnknownSubmission(submission_id.to_owned()));
        }
        return Err(SparkError::Garbage(format!(
            "no driverState; body starts {:?}",
            preview(&String::from_utf8_lossy(body))
        )));
    };
    let state =
        DriverState::parse(&raw_state).ok_or(SparkError::UnknownState(raw_state.clone()))?;
    Ok(DriverStatus {
        submission_id: submission_id.to_owned(),
        state,
        message: wire.message.filter(|m| !m.trim().is_empty()),
        worker_id: wire.worker_id,
    })
}

/// A `POST /v1/submissions/kill/{id}` answer: whether Spark accepted the kill.
pub fn kill_accepted(body: &str) -> Result<bool, SparkError> {
    let wire: StatusWire = serde_json::from_str(body)
        .map_err(|e| SparkError::Garbage(format!("{e}; body starts {:?}", preview(body))))?;
    Ok(wire.success == Some(true))
}

/// The recovery status a master's `/json/` gives (`ALIVE`, `STANDBY`, …), if it is readable.
pub fn master_status(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<MasterStatusWire>(body)
        .ok()
        .and_then(|w| w.status)
}

/// Every driver a master's `/json/` lists; a master that is not the alive one lists nothing
/// authoritative.
pub fn master_listing(body: &[u8]) -> Result<MasterListing, SparkError> {
    let wire: ListingWire = serde_json::from_slice(body)
        .map_err(|e| SparkError::Garbage(format!("master /json/: {e}")))?;
    if let Some(status) = wire.status.as_deref().filter(|s| *s != "ALIVE") {
        return Err(SparkError::MasterNotAlive(status.to_owned()));
    }
    let mut drivers = std::collections::HashMap::new();
    let mut origins = std::collections::HashMap::new();
    // Completed entries last: a relaunched id is listed in both, and its end wins.
    for listed in wire.activedrivers.into_iter().chain(wire.completeddrivers) {
        let Some(state) = DriverState::parse(&listed.state) else {
            continue;
        };
        let started = match &listed.starttime {
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            Some(serde_json::Value::Number(n)) => n.as_i64(),
            _ => None,
        };
        if let (Some(class), Some(started)) = (listed.mainclass.clone(), started) {
            origins.insert(listed.id.clone(), (class, started));
        }
        drivers.insert(
            listed.id.clone(),
            DriverStatus {
                submission_id: listed.id,
                state,
                message: None,
                worker_id: listed.worker.filter(|w| w != "None"),
            },
        );
    }
    Ok(MasterListing { drivers, origins })
}

/// The workers a master's `/json/` lists.
pub fn master_workers(body: &[u8]) -> Result<Vec<ListedWorker>, SparkError> {
    let master: MasterWire = serde_json::from_slice(body)
        .map_err(|e| SparkError::Garbage(format!("master /json/: {e}")))?;
    Ok(master.workers)
}

/// A driver UI's `/api/v1/applications/{app}/jobs`: the share of finished tasks.
pub fn ui_progress(body: &str) -> Result<Option<u8>, SparkError> {
    let jobs: Vec<UiJob> = serde_json::from_str(body)
        .map_err(|e| SparkError::Garbage(format!("driver UI jobs: {e}")))?;
    Ok(progress_of(&jobs))
}

/// The start of a body, for an error message.
pub fn preview(body: &str) -> &str {
    let end = body
        .char_indices()
        .nth(200)
        .map(|(i, _)| i)
        .unwrap_or(body.len());
    &body[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The driver entries of a real Spark 3.5.8 master with REST off (its `starttime` a string,
    /// `resources` an object), as its `/json/` lists them while the driver runs and after.
    #[test]
    fn a_spark_3_5_listing_is_read() {
        let observed: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/master-json-3.5.8-drivers.json"
        ))
        .unwrap();
        for (key, state) in [
            ("activedrivers_while_running", DriverState::Running),
            ("completeddrivers_after_exit", DriverState::Finished),
        ] {
            let list = if state == DriverState::Running {
                "activedrivers"
            } else {
                "completeddrivers"
            };
            let body = serde_json::json!({ "status": "ALIVE", list: observed[key] }).to_string();
            let wire: ListingWire = serde_json::from_str(&body).unwrap();
            let listed = wire
                .activedrivers
                .iter()
                .chain(&wire.completeddrivers)
                .next()
                .unwrap();
            assert_eq!(listed.id, "driver-20261129044149-0000");
            assert_eq!(DriverState::parse(&listed.state), Some(state));
            assert_eq!(
                listed.worker.as_deref(),
                Some("worker-20261129044145-127.0.0.1-45435")
            );
        }
    }

    #[test]
    fn a_standby_masters_refusal_names_its_state() {
        let body: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/status-STANDBY-master.json"
        ))
        .unwrap();
        let message = body["message"].as_str().unwrap();
        assert_eq!(not_alive_state(message).as_deref(), Some("STANDBY"));
        assert_eq!(
            not_alive_state(
                "java.lang.Exception: Current state is not alive: RECOVERING. Can only…"
            )
            .as_deref(),
            Some("RECOVERING")
        );
        assert_eq!(not_alive_state("Spark does not know driver-1"), None);
        assert!(SparkError::MasterNotAlive("STANDBY".into()).is_outage());
    }

    #[test]
    fn a_status_answer_without_a_driver_state_is_an_unknown_id_or_garbage() {
        let unknown = include_bytes!("../../../tests/fixtures/status-unknown-id.json");
        assert_eq!(
            driver_status(unknown, "driver-x"),
            Err(SparkError::UnknownSubmission("driver-x".into()))
        );
        assert!(matches!(
            driver_status(b"<html>", "driver-x"),
            Err(SparkError::Garbage(_))
        ));
        let running = include_bytes!("../../../tests/fixtures/status-RUNNING.json");
        assert_eq!(
            driver_status(running, "driver-x").unwrap().state,
            DriverState::Running
        );
    }
}
