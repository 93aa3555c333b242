//! Sharing the work between instances on one database: each Spark job falls in one of
//! [`BUCKETS`] buckets by a hash of its id, buckets are leased whole (so a poll that brings no
//! news still writes nothing), and the once-per-cluster work is leased as `leader`. Claims
//! skip rows another instance is claiming at the same moment, and every claim raises the
//! lease's fencing token.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{jobwarden_instances as instances, jobwarden_leases as leases};
use sea_orm::sea_query::{Expr, LockBehavior, LockType, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

pub use migration::BUCKETS;

pub const LEADER: &str = "leader";

/// The bucket a job belongs to: FNV-1a over its id, the same on every instance and release.
pub fn bucket_of(execution_id: &str) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in execution_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(BUCKETS)) as u16
}

pub fn bucket_name(bucket: u16) -> String {
    format!("bucket:{bucket:02}")
}

fn bucket_number(name: &str) -> Option<u16> {
    name.strip_prefix("bucket:")?.parse().ok()
}

/// Why this database server cannot share work through leases (`None`: it can). Claims need
/// `FOR UPDATE SKIP LOCKED`: MySQL 8.0 and MariaDB 10.6 onward.
pub fn unsupported_server(version: &str) -> Option<String> {
    let numbers: Vec<u32> = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .take(2)
        .filter_map(|p| p.parse().ok())
        .collect();
    let (major, minor) = (*numbers.first()?, numbers.get(1).copied().unwrap_or(0));
    let (name, needed) = if version.to_ascii_lowercase().contains("mariadb") {
        ("MariaDB", (10, 6))
    } else {
        ("MySQL", (8, 0))
    };
    ((major, minor) < needed).then(|| {
        format!(
            "{name} {version} has no SELECT … FOR UPDATE SKIP LOCKED, which jobwarden's leases \
             need ({name} {}.{} or later); upgrade the server",
            needed.0, needed.1
        )
    })
}

/// Checks that the connected server can share work through leases.
pub async fn check_server(db: &DatabaseConnection) -> Result<(), String> {
    if db.get_database_backend() != DatabaseBackend::MySql {
        return Ok(());
    }
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            DatabaseBackend::MySql,
            "SELECT VERSION()",
        ))
        .await
        .map_err(|e| e.to_string())?;
    let version: String = row
        .and_then(|r| r.try_get_by_index(0).ok())
        .unwrap_or_default();
    match unsupported_server(&version) {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

/// One lease this instance holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub token: i64,
    pub until: DateTime<Utc>,
}

/// What this instance holds after a renewal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub buckets: BTreeMap<u16, Lease>,
    pub leader: Option<Lease>,
    /// Instances seen alive within one lease, this one included.
    pub live_instances: usize,
    /// Buckets beyond this instance's fair share: still its own in the database for one more
    /// round, but no longer polled, so polls in flight end before another instance claims
    /// them. Given back at the next renewal.
    pub retiring: Vec<String>,
}

impl Held {
    /// The lease of `bucket` if it still holds at `now`.
    pub fn bucket(&self, bucket: u16, now: DateTime<Utc>) -> Option<Lease> {
        self.buckets.get(&bucket).copied().filter(|l| l.until > now)
    }

    pub fn leads(&self, now: DateTime<Utc>) -> bool {
        self.leader.is_some_and(|l| l.until > now)
    }
}

/// One renewal round in one transaction: say this instance is alive, keep what it holds
/// (down to its fair share of the buckets when more instances are alive), claim free or
/// expired buckets up to that share, and the leader lease if nobody holds it. Without `claim`
/// (shutting down), only keep what it holds.
pub async fn renew(
    db: &DatabaseConnection,
    me: &str,
    started_at: DateTime<Utc>,
    now: DateTime<Utc>,
    lease: Duration,
    retiring: &[String],
    claim: bool,
) -> Result<Held, DbErr> {
    let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30));
    let until = now + lease;
    let txn = db.begin().await?;
    if claim {
        instances::Entity::insert(instances::ActiveModel {
            instance_id: Set(me.to_owned()),
            started_at: Set(started_at),
            last_seen: Set(now),
        })
        .on_conflict(
            OnConflict::column(instances::Column::InstanceId)
                .update_column(instances::Column::LastSeen)
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
    } else {
        // A stopping instance is still counted while it keeps its record, but never records
        // itself again once it gave its leases back (and with them its record): counted then,
        // it would make the others leave it a share it will never claim or poll.
        instances::Entity::update_many()
            .col_expr(instances::Column::LastSeen, Expr::value(now))
            .filter(instances::Column::InstanceId.eq(me))
            .exec(&txn)
            .await?;
    }
    // Long-gone instances leave no trace; recently gone ones still show who held what.
    instances::Entity::delete_many()
        .filter(instances::Column::LastSeen.lt(now - lease * 20))
        .exec(&txn)
        .await?;
    let live = instances::Entity::find()
        .filter(instances::Column::LastSeen.gt(now - lease))
        .count(&txn)
        .await?
        .max(1) as usize;
    let fair = usize::from(BUCKETS).div_ceil(live);
    // Extend what is ours first: a row another instance is taking over right now makes this
    // wait for that claim, after which the row is no longer ours and is left alone. Ours even
    // if it ran out while we were away, as long as nobody claimed it since (the token is
    // unchanged), so no newer truth can have been written under it.
    leases::Entity::update_many()
        .col_expr(leases::Column::LeaseUntil, Expr::value(until))
        .filter(leases::Column::Owner.eq(me))
        .exec(&txn)
        .await?;
    let mine = leases::Entity::find()
        .filter(leases::Column::Owner.eq(me))
        .order_by_asc(leases::Column::Name)
        .all(&txn)
        .await?;
    let mut kept: Vec<&leases::Model> = Vec::new();
    let mut release: Vec<String> = Vec::new();
    let mut retire: Vec<String> = Vec::new();
    for row in &mine {
        let is_bucket = bucket_number(&row.name).is_some();
        let buckets_kept = kept
            .iter()
            .filter(|r| bucket_number(&r.name).is_some())
            .count();
        if retiring.contains(&row.name) {
            // Retired last round and no longer polled since: polls in flight have ended.
            release.push(row.name.clone());
        } else if is_bucket && buckets_kept >= fair {
            // More instances are alive than when this was claimed: stop polling the excess
            // now, hand it back next round.
            retire.push(row.name.clone());
        } else {
            kept.push(row);
        }
    }
    if !release.is_empty() {
        leases::Entity::update_many()
            .col_expr(leases::Column::Owner, Expr::value(Option::<String>::None))
            .col_expr(
                leases::Column::LeaseUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(leases::Column::Name.is_in(release))
            .filter(leases::Column::Owner.eq(me))
            .exec(&txn)
            .await?;
    }
    let buckets_kept = kept
        .iter()
        .filter(|r| bucket_number(&r.name).is_some())
        .count();
    let leads = kept.iter().any(|r| r.name == LEADER);
    let mut wanted: Vec<leases::Model> = Vec::new();
    let lock = txn.get_database_backend() != DatabaseBackend::Sqlite;
    let free = || {
        let mut query = leases::Entity::find()
            .filter(
                sea_orm::Condition::any()
                    .add(leases::Column::Owner.is_null())
                    .add(leases::Column::LeaseUntil.is_null())
                    .add(leases::Column::LeaseUntil.lte(now)),
            )
            .order_by_asc(leases::Column::Name);
        if lock {
            // A row another instance is claiming at this moment is left to it.
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        query
    };
    if claim && fair > buckets_kept {
        wanted.extend(
            free()
                .filter(leases::Column::Name.starts_with("bucket:"))
                .limit((fair - buckets_kept) as u64)
                .all(&txn)
                .await?,
        );
    }
    if claim && !leads {
        wanted.extend(
            free()
                .filter(leases::Column::Name.eq(LEADER))
                .all(&txn)
                .await?,
        );
    }
    for row in &wanted {
        leases::Entity::update_many()
            .col_expr(leases::Column::Owner, Expr::value(me))
            .col_expr(leases::Column::Token, Expr::value(row.token + 1))
            .col_expr(leases::Column::LeaseUntil, Expr::value(until))
            .filter(leases::Column::Name.eq(row.name.as_str()))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    let mut held = Held {
        live_instances: live,
        retiring: retire,
        ..Held::default()
    };
    let tokens = kept
        .iter()
        .map(|r| (r.name.as_str(), r.token))
        .chain(wanted.iter().map(|r| (r.name.as_str(), r.token + 1)));
    for (name, token) in tokens {
        let lease = Lease { token, until };
        match bucket_number(name) {
            Some(bucket) => {
                held.buckets.insert(bucket, lease);
            }
            None if name == LEADER => held.leader = Some(lease),
            None => {}
        }
    }
    Ok(held)
}

/// Every instance recorded on this database, alive or lately gone.
pub async fn recorded_instances(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    instances::Entity::find()
        .select_only()
        .column(instances::Column::InstanceId)
        .into_tuple()
        .all(db)
        .await
}

/// Gives every lease of this instance back and removes it from the live instances, so the
/// others take its share at their next renewal instead of after the lease runs out.
pub async fn release_all(db: &DatabaseConnection, me: &str) -> Result<(), DbErr> {
    let txn = db.begin().await?;
    leases::Entity::update_many()
        .col_expr(leases::Column::Owner, Expr::value(Option::<String>::None))
        .col_expr(
            leases::Column::LeaseUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(leases::Column::Owner.eq(me))
        .exec(&txn)
        .await?;
    instances::Entity::delete_by_id(me.to_owned())
        .exec(&txn)
        .await?;
    txn.commit().await
}

/// Who holds each named lease now, read inside a write transaction; on servers with row
/// locks the rows are share-locked, so a takeover waits until the write has committed.
pub async fn current_holders(
    txn: &impl ConnectionTrait,
    names: Vec<String>,
) -> Result<HashMap<String, (Option<String>, i64)>, DbErr> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let mut query = leases::Entity::find().filter(leases::Column::Name.is_in(names));
    if txn.get_database_backend() != DatabaseBackend::Sqlite {
        query = query.lock_shared();
    }
    Ok(query
        .all(txn)
        .await?
        .into_iter()
        .map(|r| (r.name, (r.owner, r.token)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket_of("e1"), bucket_of("e1"));
        let mut counts = [0usize; BUCKETS as usize];
        for i in 0..10_000 {
            counts[usize::from(bucket_of(&format!("job-{i}")))] += 1;
        }
        let (least, most) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        assert!(least > 100 && most < 220, "{least}..{most}");
    }

    #[test]
    fn servers_without_skip_locked_are_named() {
        assert_eq!(unsupported_server("10.11.19-MariaDB-0+deb12u1"), None);
        assert_eq!(unsupported_server("8.0.36"), None);
        assert_eq!(unsupported_server("15.19"), None);
        let old = unsupported_server("10.5.23-MariaDB").unwrap();
        assert!(old.contains("MariaDB 10.6 or later"), "{old}");
        assert!(unsupported_server("5.7.44-log")
            .unwrap()
            .contains("MySQL 8.0"));
    }

    #[test]
    fn bucket_names_read_back() {
        assert_eq!(bucket_number(&bucket_name(7)), Some(7));
        assert_eq!(bucket_number(LEADER), None);
    }
}
