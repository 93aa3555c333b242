//! Column types that must read the same on SQLite, PostgreSQL and MySQL/MariaDB.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

/// A UTC instant with sub-second precision. MySQL's `timestamp` would stop at 2038 and drop
/// fractions, and SQLite's default text format would not sort beside the values jobwarden writes.
pub fn instant(backend: DatabaseBackend, name: impl IntoIden) -> ColumnDef {
    let mut col = ColumnDef::new(name);
    match backend {
        DatabaseBackend::MySql => col.custom("DATETIME(6)"),
        _ => col.timestamp_with_time_zone(),
    };
    col.null();
    col
}

/// An instant that defaults to the moment the row is inserted, for rows other programs insert.
pub fn instant_now(backend: DatabaseBackend, name: impl IntoIden) -> ColumnDef {
    let mut col = instant(backend, name);
    col.not_null();
    match backend {
        DatabaseBackend::MySql => col.default(Expr::cust("CURRENT_TIMESTAMP(6)")),
        DatabaseBackend::Sqlite => {
            col.default(Expr::cust("(strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))"))
        }
        _ => col.default(Expr::current_timestamp()),
    };
    col
}

/// Bytes kept exactly as received; MySQL's plain `blob` would stop at 64 KiB.
pub fn bytes(backend: DatabaseBackend, name: impl IntoIden) -> ColumnDef {
    let mut col = ColumnDef::new(name);
    match backend {
        DatabaseBackend::MySql => col.custom("LONGBLOB"),
        _ => col.blob(),
    };
    col
}

/// An identifier column: short enough for a MySQL index, long enough for any real id.
pub fn id_text(name: impl IntoIden) -> ColumnDef {
    let mut col = ColumnDef::new(name);
    col.string_len(191);
    col
}
