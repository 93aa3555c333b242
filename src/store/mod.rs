//! Persistence: connecting and migrating, the read queries, and the batched write that the
//! `JobStore` actor (the only writer) drives. What the store accepts is in `crate::store_api`.

pub mod actions_read;
pub mod analytics_read;
mod attempts;
pub mod batch;
mod bulk;
mod changes;
pub mod dashboard_read;
pub mod leases;
pub mod mapped;
pub(crate) mod ordering;
pub mod outbox;
pub mod read;
pub mod retention;
mod rows;
pub mod statistics;
pub mod warnings;

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DbErr,
    RuntimeErr,
};

use crate::config::DatabaseSettings;

pub use batch::{apply_batch, Committed, EndedRun, HistoryLine, Inserted, Rules, WriteContext};
/// The `job_kind` of a Spark execution's history lines.
pub const SPARK_KIND: &str = changes::SPARK;

const STATEMENT_CACHE: usize = 16;

/// Opens the pool. SQLite gets WAL (readers never wait for the writer) and a busy timeout.
pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(settings.url.expose().to_owned());
    options
        .max_connections(settings.pool_size())
        .connect_timeout(settings.connect_timeout)
        .acquire_timeout(settings.connect_timeout)
        .sqlx_logging(false)
        // Batches of different sizes are different statements; a small prepared-statement
        // cache keeps a big fleet from holding hundreds of large compiled statements.
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .statement_cache_capacity(STATEMENT_CACHE)
                // 1 MiB of page cache per connection; the operating system caches the file.
                .pragma("cache_size", "-1024")
        })
        .map_sqlx_postgres_opts(|opts| opts.statement_cache_capacity(STATEMENT_CACHE))
        .map_sqlx_mysql_opts(|opts| opts.statement_cache_capacity(STATEMENT_CACHE));
    Database::connect(options)
        .await
        .map_err(|e| mask_err(e, settings))
}

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A newer jobwarden migrated this database: this binary would misread rows it does not
    /// know the shape of, so it touches nothing.
    #[error("the database's schema is at {database} ({applied} migrations), newer than this jobwarden {binary_release} knows (schema {binary}, {known} migrations); run a jobwarden at least as new as the one that last migrated it")]
    Newer {
        database: String,
        applied: usize,
        binary: String,
        known: usize,
        binary_release: &'static str,
    },
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Where a database's schema stands against this binary's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStanding {
    /// Applied, oldest first (names as the migrations table records them).
    pub applied: Vec<String>,
    /// Known to this binary and not applied yet, in order.
    pub pending: Vec<String>,
    /// Applied, but unknown to this binary: a newer jobwarden migrated the database.
    pub unknown: Vec<String>,
}

/// Reads the migrations table without creating it (nothing recorded on a new database), so
/// a look changes nothing and says nothing to the server's log.
pub async fn schema_standing(db: &DatabaseConnection) -> Result<SchemaStanding, DbErr> {
    let known: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let table = Migrator::migration_table_name().to_string();
    let manager = migration::SchemaManager::new(db);
    let mut applied: Vec<String> = Vec::new();
    if manager.has_table(&table).await? {
        let rows = db
            .query_all_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                format!("SELECT version FROM {table} ORDER BY version"),
            ))
            .await?;
        for row in rows {
            applied.push(row.try_get_by_index::<String>(0)?);
        }
    }
    Ok(SchemaStanding {
        pending: known
            .iter()
            .filter(|k| !applied.contains(k))
            .cloned()
            .collect(),
        unknown: applied
            .iter()
            .filter(|a| !known.contains(a))
            .cloned()
            .collect(),
        applied,
    })
}

/// Runs every pending migration; returns how many were applied. Refuses a database that a
/// newer jobwarden migrated, naming both schema versions.
pub async fn migrate(db: &DatabaseConnection) -> Result<usize, MigrateError> {
    let standing = schema_standing(db).await?;
    if !standing.unknown.is_empty() {
        let known = Migrator::migrations();
        return Err(MigrateError::Newer {
            database: standing.applied.last().cloned().unwrap_or_default(),
            applied: standing.applied.len(),
            binary: known
                .last()
                .map(|m| m.name().to_owned())
                .unwrap_or_default(),
            known: known.len(),
            binary_release: env!("CARGO_PKG_VERSION"),
        });
    }
    if standing.pending.is_empty() {
        return Ok(0);
    }
    Migrator::up(db, None).await?;
    Ok(standing.pending.len())
}

/// Like [`migrate`], holding a database-wide lock meanwhile, so instances starting together
/// migrate one after the other (the later ones find nothing left to do). The lock lives on
/// a connection of its own: the migrations need the pool's.
pub async fn migrate_exclusively(
    db: &DatabaseConnection,
    settings: &DatabaseSettings,
) -> Result<usize, MigrateError> {
    let (take, give_back) = match db.get_database_backend() {
        DatabaseBackend::Postgres => (
            "SELECT pg_advisory_lock(7310563425001)",
            "SELECT pg_advisory_unlock(7310563425001)",
        ),
        DatabaseBackend::MySql => (
            "SELECT GET_LOCK('jobwarden_migrations', 600)",
            "SELECT RELEASE_LOCK('jobwarden_migrations')",
        ),
        // One instance per SQLite file (see `startup`), and SQLite serialises writers anyway.
        _ => return migrate(db).await,
    };
    let mut single = settings.clone();
    single.max_connections = Some(1);
    let lock = connect(&single).await?;
    lock.execute_unprepared(take).await?;
    let applied = migrate(db).await;
    let released = lock.execute_unprepared(give_back).await;
    lock.close().await.ok();
    let applied = applied?;
    released?;
    Ok(applied)
}

/// Driver errors can echo the connection URL; never let its password through.
fn mask_err(err: DbErr, settings: &DatabaseSettings) -> DbErr {
    let raw = settings.url.expose();
    let text = err.to_string();
    if text.contains(raw) || url_password(raw).is_some_and(|p| text.contains(p.as_str())) {
        let mut masked = text.replace(raw, &settings.url.masked());
        if let Some(p) = url_password(raw) {
            masked = masked.replace(p.as_str(), "****");
        }
        return DbErr::Conn(RuntimeErr::Internal(masked));
    }
    err
}

fn url_password(raw: &str) -> Option<String> {
    url::Url::parse(raw)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
        .filter(|p| !p.is_empty())
}

/// Whether an error is two transactions colliding (a deadlock, a serialization failure, a
/// lock wait that timed out, a new row another writer inserted first): the database is fine,
/// the transaction just has to run again.
pub fn is_conflict(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    if matches!(err, DbErr::Custom(m) if m == batch::RACED_FOR_NEW_ROW) {
        return true;
    }
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return false;
    };
    let Sqlx::Database(db_err) = e.as_ref() else {
        return false;
    };
    let code = db_err.code().map(|c| c.into_owned()).unwrap_or_default();
    matches!(code.as_str(), "40001" | "40P01")
        || ["Deadlock found", "Lock wait timeout"]
            .iter()
            .any(|m| db_err.message().contains(m))
}

/// Whether an error is the database being away or busy (retry) rather than a refusal (don't).
pub fn is_transient(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    if unwritable(err).is_some() {
        return true;
    }
    let runtime = match err {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(e) | DbErr::Exec(e) | DbErr::Query(e) => e,
        _ => return false,
    };
    let sqlx = match runtime {
        RuntimeErr::SqlxError(e) => e,
        RuntimeErr::Internal(_) => return matches!(err, DbErr::Conn(_)),
        #[allow(unreachable_patterns)]
        _ => return false,
    };
    match sqlx.as_ref() {
        Sqlx::Io(_)
        | Sqlx::Tls(_)
        | Sqlx::Protocol(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed => true,
        Sqlx::Database(db_err) => {
            let code = db_err.code().map(|c| c.into_owned()).unwrap_or_default();
            matches!(
                code.as_str(),
                // SQLite: busy, locked.
                "5" | "6" | "261" | "262" | "517"
                // PostgreSQL: serialization failure, deadlock, admin shutdown, cannot connect now,
                // too many connections, connection exceptions.
                | "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300"
                | "08000" | "08003" | "08006" | "08001" | "08004"
                // MySQL/MariaDB (SQLSTATE): communication link failure.
                | "08S01"
            ) || [
                "server has gone away",
                "Lock wait timeout",
                "Deadlock found",
            ]
            .iter()
            .any(|m| db_err.message().contains(m))
        }
        _ => false,
    }
}

/// The database's own error code and message, when it is the database that answered.
fn database_error(err: &DbErr) -> Option<(String, String)> {
    use sea_orm::sqlx::Error as Sqlx;
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return None;
    };
    match e.as_ref() {
        Sqlx::Database(db_err) => Some((
            db_err.code().map(|c| c.into_owned()).unwrap_or_default(),
            db_err.message().to_owned(),
        )),
        _ => None,
    }
}

/// A database that answers but takes no writes now, and says why: an operator's to fix, and
/// held through like an outage (nothing accepted is dropped).
pub fn unwritable(err: &DbErr) -> Option<&'static str> {
    let (code, message) = database_error(err)?;
    let read_only = matches!(
        code.as_str(),
        // PostgreSQL: read_only_sql_transaction; SQLite: SQLITE_READONLY and its variants.
        "25006" | "8" | "264" | "520" | "776" | "1032" | "1288" | "1544"
    ) || message.contains("--read-only")
        || message.contains("read-only mode")
        || message.contains("READ ONLY");
    let full = matches!(
        code.as_str(),
        // PostgreSQL: disk_full; SQLite: SQLITE_FULL.
        "53100" | "13"
    ) || message.contains("Disk full")
        || message.contains("is full")
        || message.contains("No space left on device");
    if read_only {
        Some("the database is read-only")
    } else if full {
        Some("the database's disk is full")
    } else {
        None
    }
}

/// Why the database refused a change as such, as a short label for a metric and the logs:
/// `decode` (a value of a type jobwarden cannot read back), `data` (a value the column does
/// not take), `constraint`, `schema` (a missing table or column), `permission`, or `other`.
pub fn refusal_cause(err: &DbErr) -> &'static str {
    use sea_orm::sqlx::Error as Sqlx;
    let text = err.to_string();
    if let DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) = err {
        if matches!(e.as_ref(), Sqlx::ColumnDecode { .. } | Sqlx::Decode(_)) {
            return "decode";
        }
    }
    if matches!(err, DbErr::Type(_) | DbErr::TryIntoErr { .. })
        || text.contains("error occurred while decoding")
        || text.contains("mismatched types")
    {
        return "decode";
    }
    let Some((code, message)) = database_error(err) else {
        return "other";
    };
    let lower = message.to_lowercase();
    match code.as_str() {
        c if c.starts_with("22") => "data",
        c if c.starts_with("23") => "constraint",
        "42501" | "42000" if lower.contains("denied") || lower.contains("permission") => {
            "permission"
        }
        "42501" => "permission",
        "42703" | "42P01" | "42S02" | "42S22" => "schema",
        // SQLite: SQLITE_CONSTRAINT and its variants.
        "19" | "275" | "531" | "787" | "1043" | "1299" | "1555" | "2067" | "2323" => "constraint",
        _ if lower.contains("no such column") || lower.contains("no such table") => "schema",
        _ if lower.contains("denied") => "permission",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use sea_orm::sqlx::error::{DatabaseError, ErrorKind};
    use sea_orm::sqlx::Error as Sqlx;

    use super::*;

    /// A database's own error, as a driver reports it: a code and a message.
    #[derive(Debug)]
    struct Refusal {
        code: &'static str,
        message: &'static str,
    }

    impl std::fmt::Display for Refusal {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.message)
        }
    }

    impl std::error::Error for Refusal {}

    impl DatabaseError for Refusal {
        fn message(&self) -> &str {
            self.message
        }

        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.code))
        }

        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }

        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }

        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }

        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn database(code: &'static str, message: &'static str) -> DbErr {
        let sqlx = Sqlx::Database(Box::new(Refusal { code, message }));
        DbErr::Exec(RuntimeErr::SqlxError(Arc::new(sqlx)))
    }

    fn sqlx(error: Sqlx) -> DbErr {
        DbErr::Query(RuntimeErr::SqlxError(Arc::new(error)))
    }

    #[test]
    fn a_database_that_is_away_or_busy_is_transient() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for err in [
            sqlx(Sqlx::Io(io)),
            sqlx(Sqlx::PoolTimedOut),
            sqlx(Sqlx::PoolClosed),
            database("5", "database is locked"),
            database("40001", "could not serialize access"),
            database("40P01", "deadlock detected"),
            database(
                "57P01",
                "terminating connection due to administrator command",
            ),
            database("08006", "connection failure"),
            database("08S01", "communication link failure"),
            database(
                "HY000",
                "Lock wait timeout exceeded; try restarting transaction",
            ),
            DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout),
        ] {
            assert!(is_transient(&err), "{err}");
        }
    }

    #[test]
    fn colliding_transactions_are_conflicts_not_outages() {
        for err in [
            database("40P01", "deadlock detected"),
            database("40001", "could not serialize access"),
            database(
                "40001",
                "Deadlock found when trying to get lock; try restarting transaction",
            ),
        ] {
            assert!(is_conflict(&err) && is_transient(&err), "{err}");
        }
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!is_conflict(&sqlx(Sqlx::Io(io))));
        assert!(!is_conflict(&database("57P01", "terminating connection")));
    }

    #[test]
    fn a_refusal_by_the_database_is_not_transient() {
        for err in [
            database("23505", "duplicate key value violates unique constraint"),
            database("42P01", "relation does not exist"),
            database("1406", "Data too long for column"),
            database("28P01", "password authentication failed"),
            DbErr::Custom("bad row".into()),
            DbErr::Exec(RuntimeErr::Internal("bad statement".into())),
        ] {
            assert!(!is_transient(&err), "{err}");
        }
    }

    #[test]
    fn a_read_only_or_full_database_is_held_through_and_says_why() {
        for (err, why) in [
            (database("25006", "cannot execute INSERT in a read-only transaction"), "read-only"),
            (database("HY000", "The MariaDB server is running with the --read-only option so it cannot execute this statement"), "read-only"),
            (database("8", "attempt to write a readonly database"), "read-only"),
            (database("53100", "could not extend file: No space left on device"), "full"),
            (database("13", "database or disk is full"), "full"),
        ] {
            let said = unwritable(&err).unwrap_or_else(|| panic!("{err}"));
            assert!(said.contains(why), "{err}: {said}");
            assert!(is_transient(&err), "{err}");
        }
    }

    #[test]
    fn a_refusal_is_named_by_its_cause() {
        for (err, cause) in [
            (
                database("23505", "duplicate key value violates unique constraint"),
                "constraint",
            ),
            (database("2067", "UNIQUE constraint failed"), "constraint"),
            (database("22003", "numeric field overflow"), "data"),
            (
                database("42703", "column \"progres\" does not exist"),
                "schema",
            ),
            (database("1", "no such column: progres"), "schema"),
            (
                database("42501", "permission denied for table spark_job_executions"),
                "permission",
            ),
            (
                DbErr::Query(RuntimeErr::Internal(
                    "error occurred while decoding column 4: mismatched types".into(),
                )),
                "decode",
            ),
            (database("XX000", "something else"), "other"),
        ] {
            assert_eq!(refusal_cause(&err), cause, "{err}");
        }
    }
}
