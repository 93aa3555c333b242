//! `[tables]`: which existing application tables jobwarden keeps true instead of its own, the
//! column for each field, and how statuses are spelled there (names or integers).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::validate::{Problems, Validate};
use crate::domain::{JobStatus, QueueStatus};

/// Absent sections mean jobwarden's own tables (`spark_job_executions`,
/// `transformation_job_queue`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TablesSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executions: Option<MappedTable<ExecutionColumns>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<MappedTable<QueueColumns>>,
}

impl TablesSettings {
    pub fn is_empty(&self) -> bool {
        self.executions.is_none() && self.queue.is_none()
    }
}

/// One application table: where it is, its columns, its status vocabulary.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MappedTable<C> {
    /// The table's name exactly as created (quoted identifiers keep their case).
    pub table: String,
    /// The schema (PostgreSQL) or database (MySQL/MariaDB) holding it; default: the connection's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    pub columns: C,
    /// How each status is stored: `Running = 2` or `Running = "InProgress"`. Empty: the status
    /// names themselves, as text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub statuses: BTreeMap<String, StatusValue>,
}

/// A stored status: an integer (an ORM's default for enums) or a name.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(untagged)]
pub enum StatusValue {
    Integer(i64),
    Name(String),
}

impl std::fmt::Display for StatusValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusValue::Integer(n) => write!(f, "{n}"),
            StatusValue::Name(s) => write!(f, "{s:?}"),
        }
    }
}

/// Columns of a Spark executions table. The first three are required; a field left out is
/// neither read nor written.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExecutionColumns {
    pub execution_id: String,
    pub submission_id: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The Spark cluster (a `[spark.clusters.<name>]`; NULL is the default one). Read only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

/// Columns of a transformation queue table. The first two are required.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QueueColumns {
    pub job_id: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_fields: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

/// The fields a columns section names, as `(field, column)`, required ones first.
pub trait ColumnList {
    fn named(&self) -> Vec<(&'static str, Option<&str>)>;
}

impl ColumnList for ExecutionColumns {
    fn named(&self) -> Vec<(&'static str, Option<&str>)> {
        vec![
            ("execution_id", Some(self.execution_id.as_str())),
            ("submission_id", Some(self.submission_id.as_str())),
            ("status", Some(self.status.as_str())),
            ("job_name", self.job_name.as_deref()),
            ("cluster", self.cluster.as_deref()),
            ("progress", self.progress.as_deref()),
            ("error_message", self.error_message.as_deref()),
            ("submitted_at", self.submitted_at.as_deref()),
            ("started_at", self.started_at.as_deref()),
            ("completed_at", self.completed_at.as_deref()),
        ]
    }
}

impl ColumnList for QueueColumns {
    fn named(&self) -> Vec<(&'static str, Option<&str>)> {
        vec![
            ("job_id", Some(self.job_id.as_str())),
            ("status", Some(self.status.as_str())),
            ("error_message", self.error_message.as_deref()),
            ("generated_fields", self.generated_fields.as_deref()),
            ("completed_at", self.completed_at.as_deref()),
        ]
    }
}

impl<C: ColumnList> MappedTable<C> {
    fn check(&self, section: &str, status_names: &[&'static str], problems: &mut Problems) {
        if self.table.trim().is_empty() {
            problems.refuse(
                &format!("{section}.table"),
                "\"\"",
                "name the application's table",
            );
        }
        if let Some(schema) = &self.schema {
            if schema.trim().is_empty() {
                problems.refuse(
                    &format!("{section}.schema"),
                    "\"\"",
                    "name a schema or leave the key out",
                );
            }
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (field, column) in self.columns.named() {
            let Some(column) = column else { continue };
            let key = format!("{section}.columns.{field}");
            if column.trim().is_empty() {
                problems.refuse(&key, "\"\"", "name a column or leave the key out");
            } else if let Some(other) = seen.insert(column, field) {
                problems.refuse(
                    &key,
                    format!("{column:?}"),
                    &format!("column already mapped to {other}; each field needs its own column"),
                );
            }
        }
        self.check_statuses(section, status_names, problems);
    }

    fn check_statuses(&self, section: &str, names: &[&'static str], problems: &mut Problems) {
        if self.statuses.is_empty() {
            return;
        }
        let key = format!("{section}.statuses");
        for given in self.statuses.keys() {
            if !names.iter().any(|n| n == given) {
                problems.refuse(
                    &format!("{key}.{given}"),
                    "…",
                    &format!("not a status; expected one of {}", names.join(", ")),
                );
            }
        }
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !self.statuses.contains_key(*n))
            .collect();
        let integers = self
            .statuses
            .values()
            .filter(|v| matches!(v, StatusValue::Integer(_)))
            .count();
        if integers > 0 && integers < self.statuses.len() {
            problems.refuse(
                &key,
                "mixed",
                "give every status an integer or every status a name, not both",
            );
        }
        if integers > 0 && !missing.is_empty() {
            problems.refuse(
                &key,
                "incomplete",
                &format!(
                    "integer statuses need a value for every status; missing {}",
                    missing.join(", ")
                ),
            );
        }
        let mut values: BTreeMap<StatusValue, &str> = BTreeMap::new();
        for (name, value) in effective_statuses(&self.statuses, names) {
            if matches!(&value, StatusValue::Name(s) if s.trim().is_empty()) {
                problems.refuse(&format!("{key}.{name}"), "\"\"", "must not be empty");
            }
            if let Some(other) = values.insert(value.clone(), name) {
                problems.refuse(
                    &format!("{key}.{name}"),
                    value.to_string(),
                    &format!("the same value as {other}; each status needs its own"),
                );
            }
        }
    }
}

/// Every status's stored value: the configured one, else (for names) the status's own name.
pub fn effective_statuses<'a>(
    configured: &'a BTreeMap<String, StatusValue>,
    names: &'a [&'static str],
) -> impl Iterator<Item = (&'static str, StatusValue)> + 'a {
    names
        .iter()
        .filter_map(move |name| match configured.get(*name) {
            Some(value) => Some((*name, value.clone())),
            None if configured
                .values()
                .any(|v| matches!(v, StatusValue::Integer(_))) =>
            {
                None
            }
            None => Some((*name, StatusValue::Name((*name).to_owned()))),
        })
}

impl Validate for TablesSettings {
    fn validate(&self, problems: &mut Problems) {
        let job_names: Vec<&'static str> = JobStatus::WATCHED.iter().map(|s| s.as_str()).collect();
        let queue_names: Vec<&'static str> = QueueStatus::ALL.iter().map(|s| s.as_str()).collect();
        if let Some(t) = &self.executions {
            t.check("tables.executions", &job_names, problems);
        }
        if let Some(t) = &self.queue {
            t.check("tables.queue", &queue_names, problems);
        }
        if let (Some(a), Some(b)) = (&self.executions, &self.queue) {
            if a.table == b.table && a.schema == b.schema {
                problems.refuse(
                    "tables.queue.table",
                    format!("{:?}", b.table),
                    "the same table as tables.executions; map each to its own table",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> TablesSettings {
        toml::from_str(body).expect("parses")
    }

    fn problems(settings: &TablesSettings) -> Vec<String> {
        let mut problems = Problems::default();
        settings.validate(&mut problems);
        problems
            .into_vec()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const ORM_EXECUTIONS: &str = r#"
        [executions]
        table = "SparkJobExecutions"
        schema = "app"
        [executions.columns]
        execution_id = "ExecutionId"
        submission_id = "SparkJobId"
        status = "Status"
        progress = "Progress"
        [executions.statuses]
        Queued = 0
        Submitting = 1
        Running = 2
        Succeeded = 3
        Failed = 4
        Cancelled = 5
    "#;

    #[test]
    fn an_orm_mapping_with_integer_statuses_is_accepted() {
        let settings = parse(ORM_EXECUTIONS);
        assert_eq!(problems(&settings), Vec::<String>::new());
        let executions = settings.executions.unwrap();
        assert_eq!(executions.columns.progress.as_deref(), Some("Progress"));
        assert_eq!(executions.statuses["Running"], StatusValue::Integer(2));
    }

    #[test]
    fn integer_statuses_must_cover_every_status() {
        let settings = parse(&ORM_EXECUTIONS.replace("Cancelled = 5", ""));
        let found = problems(&settings).join("\n");
        assert!(found.contains("tables.executions.statuses"), "{found}");
        assert!(found.contains("missing Cancelled"), "{found}");
    }

    #[test]
    fn two_statuses_stored_alike_are_refused() {
        let settings = parse(&ORM_EXECUTIONS.replace("Cancelled = 5", "Cancelled = 4"));
        let found = problems(&settings).join("\n");
        assert!(found.contains("the same value as Failed"), "{found}");
    }

    #[test]
    fn an_unknown_status_name_is_refused_naming_the_known_ones() {
        let settings = parse(&ORM_EXECUTIONS.replace("Cancelled = 5", "Canceled = 5"));
        let found = problems(&settings).join("\n");
        assert!(
            found.contains("tables.executions.statuses.Canceled"),
            "{found}"
        );
        assert!(found.contains("Queued, Submitting"), "{found}");
    }

    #[test]
    fn one_column_for_two_fields_is_refused() {
        let settings =
            parse(&ORM_EXECUTIONS.replace("progress = \"Progress\"", "progress = \"Status\""));
        let found = problems(&settings).join("\n");
        assert!(
            found.contains("tables.executions.columns.progress"),
            "{found}"
        );
    }

    #[test]
    fn a_rename_onto_another_status_name_is_refused() {
        let settings = parse(
            r#"
            [queue]
            table = "TransformationJobQueue"
            [queue.columns]
            job_id = "JobId"
            status = "Status"
            [queue.statuses]
            Pending = "Completed"
            "#,
        );
        let found = problems(&settings).join("\n");
        assert!(found.contains("the same value as Pending"), "{found}");
    }

    #[test]
    fn renamed_statuses_may_leave_some_names_as_they_are() {
        let settings = parse(
            r#"
            [queue]
            table = "TransformationJobQueue"
            [queue.columns]
            job_id = "JobId"
            status = "Status"
            [queue.statuses]
            Processing = "InProgress"
            "#,
        );
        assert_eq!(problems(&settings), Vec::<String>::new());
    }
}
