//! `migrator schema`: applies the migrations embedded from `migrations/` at build time, or those
//! of `--migrations DIR` ([`crate::migrations_dir`]), with the same checks either way.
//!
//! Locking ([`crate::lock`]): a session advisory lock on the connection that applies the
//! migrations, closed at the end in every case (closing a connection releases its advisory locks,
//! so an error or a kill cannot leave the lock behind). A second runner waits for the lock, then
//! finds nothing pending. Losing the connection mid-run loses the lock: the run stops with exit 8,
//! the migrations committed before are kept (each migration commits with its record). sqlx's own
//! lock is disabled because it is not released when a migration fails.

use std::time::Instant;

use sqlx::migrate::{Migration, Migrator};
use sqlx::postgres::PgConnection;
use sqlx::Row;

use crate::cli::SchemaArgs;
use crate::db;
use crate::error::MigratorError;
use crate::lock::AdvisoryLock;
pub use crate::lock::SCHEMA_LOCK_KEY;
use crate::migrations_dir::Migrations;

/// The migrations of `migrations/` (files `NNN_name.sql`), embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// A migration recorded in the target's `_sqlx_migrations`.
#[derive(Debug, Clone)]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
    pub checksum: Vec<u8>,
    pub success: bool,
    pub installed_on: chrono::DateTime<chrono::Utc>,
}

/// Embedded (up) migrations.
pub fn embedded() -> impl Iterator<Item = &'static Migration> {
    MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
}

/// What `_sqlx_migrations` of the target records (empty when the table does not exist).
pub async fn applied(conn: &mut PgConnection) -> sqlx::Result<Vec<AppliedMigration>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT version, description, checksum, success, installed_on FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AppliedMigration {
                version: r.try_get("version")?,
                description: r.try_get("description")?,
                checksum: r.try_get("checksum")?,
                success: r.try_get("success")?,
                installed_on: r.try_get("installed_on")?,
            })
        })
        .collect()
}

/// Compares the target's record with `migrations`: refuses a changed, unknown or failed
/// migration, and returns the pending ones.
pub fn pending<'m>(
    applied: &[AppliedMigration],
    migrations: &'m Migrations,
) -> Result<Vec<&'m Migration>, MigratorError> {
    for a in applied {
        let Some(m) = migrations.find(a) else {
            return Err(MigratorError::MigrationUnknown {
                version: a.version,
                description: a.description.clone(),
                origin: migrations.origin.clone(),
            });
        };
        if !a.success {
            return Err(MigratorError::NotMigrated {
                detail: format!(
                    "migration {} ({}) is recorded as failed",
                    a.version, a.description
                ),
            });
        }
        if a.checksum != *m.checksum {
            return Err(MigratorError::MigrationChanged {
                version: a.version,
                description: m.description.to_string(),
            });
        }
    }
    Ok(migrations
        .list
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .collect())
}

/// Fails with exit code 4 unless every embedded migration is applied unchanged.
pub async fn check_migrated(target: &mut PgConnection) -> anyhow::Result<()> {
    let applied = applied(target).await?;
    let embedded = Migrations::embedded();
    let pending = pending(&applied, &embedded)?;
    if !pending.is_empty() {
        let names: Vec<String> = pending
            .iter()
            .map(|m| format!("{:03}_{}", m.version, m.description))
            .collect();
        return Err(MigratorError::NotMigrated {
            detail: format!("pending migrations: {}", names.join(", ")),
        }
        .into());
    }
    Ok(())
}

/// What `copy` requires of the target's schema: the shipped plan targets this repository's schema,
/// so it needs the embedded migrations applied (exit 4 otherwise); any other plan targets a schema
/// made by anyone, which [`crate::plan::resolve`] checks table by table and column by column.
pub async fn check_for_plan(
    target: &mut PgConnection,
    plan: &crate::plan::Plan,
) -> anyhow::Result<()> {
    if plan.is_shipped() {
        check_migrated(target).await?;
    }
    Ok(())
}

pub async fn run(args: SchemaArgs) -> anyhow::Result<u8> {
    let migrations = Migrations::load(args.migrations.migrations.as_deref())?;
    let url = &args.target.target_url;
    let mut conn = db::connect("target", url).await?;
    let result = apply(&mut conn, url, &migrations, args.dry_run).await;
    // Closing the connection releases the advisory lock whatever happened above.
    db::close(conn).await;
    result
}

async fn apply(
    conn: &mut PgConnection,
    url: &str,
    migrations: &Migrations,
    dry_run: bool,
) -> anyhow::Result<u8> {
    let name = db::database_name(url).unwrap_or_else(|| "the target database".into());
    let lock = if dry_run {
        None
    } else {
        Some(AdvisoryLock::acquire(conn, SCHEMA_LOCK_KEY, "schema", &name, false).await?)
    };
    let applied = applied(conn).await?;
    let pending = pending(&applied, migrations)?;
    if pending.is_empty() {
        println!(
            "schema: nothing to apply; {} migrations already applied to {name}",
            applied.len()
        );
        return Ok(0);
    }
    if dry_run {
        println!(
            "schema: would apply {} migration(s) to {name}:",
            pending.len()
        );
        for m in &pending {
            println!("  {:03}_{}", m.version, m.description);
        }
        return Ok(0);
    }
    // Our own lock (above) replaces sqlx's, which is not released when a migration fails.
    let migrator = Migrator {
        migrations: std::borrow::Cow::Owned(migrations.list.clone()),
        locking: false,
        ..Migrator::DEFAULT
    };
    let started = Instant::now();
    if let Err(e) = migrator.run(&mut *conn).await {
        let during = match &e {
            sqlx::migrate::MigrateError::ExecuteMigration(_, version) => {
                format!("applying migration {version:03} to {name}")
            }
            _ => format!("applying migrations to {name}"),
        };
        let failure = anyhow::Error::from(e);
        if let Some(lock) = &lock {
            let kept = || {
                "Migrations committed before the one in progress are kept; run `migrator schema` again to apply the rest.".to_string()
            };
            if let Some(lost) = lock.lost(conn, &failure, || during.clone(), kept).await {
                return Err(lost.into());
            }
        }
        return Err(failure.context(during));
    }
    for m in &pending {
        println!("schema: applied {:03}_{}", m.version, m.description);
    }
    println!(
        "schema: {} migration(s) applied to {name} in {:.2}s",
        pending.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(lock) = lock {
        lock.release(conn).await?;
    }
    Ok(0)
}
