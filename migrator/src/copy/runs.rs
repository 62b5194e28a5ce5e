//! The bookkeeping of `copy` in the target: the schema `cutover_migrator` (created on first use),
//! its runs (`copy_runs`), their per-table totals (`copy_checkpoints`) and their work units
//! (`copy_ranges`, see [`super::ranges`]). Every read and write of those tables goes through here
//! and [`super::ranges`]; `status` reads them with [`recent_runs`], [`load_checkpoints`] and
//! [`super::ranges::list`].
//!
//! A run is `running` until every selected table is done, then `complete`; `failed` when stopped
//! by an error, `lock_lost` when it lost its lock, `abandoned` after `--restart`. A new copy
//! resumes the latest unfinished (`running`: killed; `failed`; `lock_lost`) run with the same plan
//! and table selection.

use std::collections::HashMap;

use anyhow::Context;
use sqlx::postgres::PgConnection;
use sqlx::Row;

use super::report::Counts;
use crate::db;
use crate::error::{self, MigratorError};
use crate::lock::{self, AdvisoryLock};

/// Schema of the bookkeeping tables in the target.
pub const BOOKKEEPING_SCHEMA: &str = "cutover_migrator";

const BOOKKEEPING_DDL: &str = "
CREATE SCHEMA IF NOT EXISTS cutover_migrator;
CREATE TABLE IF NOT EXISTS cutover_migrator.copy_runs (
    run_id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plan_fingerprint text NOT NULL,
    tables           text[] NOT NULL,
    status           text NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE TABLE IF NOT EXISTS cutover_migrator.copy_checkpoints (
    run_id     bigint NOT NULL REFERENCES cutover_migrator.copy_runs (run_id),
    table_name text NOT NULL,
    last_key   text,
    rows_read  bigint NOT NULL DEFAULT 0,
    inserted   bigint NOT NULL DEFAULT 0,
    updated    bigint NOT NULL DEFAULT 0,
    unchanged  bigint NOT NULL DEFAULT 0,
    batches    bigint NOT NULL DEFAULT 0,
    done       boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, table_name)
);
ALTER TABLE cutover_migrator.copy_checkpoints ADD COLUMN IF NOT EXISTS planned_rows bigint NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS cutover_migrator.copy_ranges (
    run_id       bigint NOT NULL REFERENCES cutover_migrator.copy_runs (run_id),
    table_name   text NOT NULL,
    range_no     integer NOT NULL,
    table_order  integer NOT NULL,
    depends_on   text[] NOT NULL DEFAULT '{}',
    after_key    text,
    up_to_key    text,
    planned_rows bigint NOT NULL DEFAULT 0,
    last_key     text,
    rows_read    bigint NOT NULL DEFAULT 0,
    inserted     bigint NOT NULL DEFAULT 0,
    updated      bigint NOT NULL DEFAULT 0,
    unchanged    bigint NOT NULL DEFAULT 0,
    batches      bigint NOT NULL DEFAULT 0,
    done         boolean NOT NULL DEFAULT false,
    holder       text,
    lease_until  timestamptz,
    claims       integer NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, table_name, range_no)
);
ALTER TABLE cutover_migrator.copy_ranges ADD COLUMN IF NOT EXISTS claimed_at timestamptz;
ALTER TABLE cutover_migrator.copy_ranges ADD COLUMN IF NOT EXISTS done_at timestamptz;
ALTER TABLE cutover_migrator.copy_ranges ADD COLUMN IF NOT EXISTS done_by text;
ALTER TABLE cutover_migrator.copy_runs DROP CONSTRAINT IF EXISTS copy_runs_status_check;
ALTER TABLE cutover_migrator.copy_runs ADD CONSTRAINT copy_runs_status_check
    CHECK (status IN ('running', 'complete', 'abandoned', 'failed', 'lock_lost'));
";

/// Whether the bookkeeping tables exist with the current run statuses (then no DDL runs, so a
/// target user without CREATE on the database can copy once they exist).
const BOOKKEEPING_CURRENT: &str =
    "SELECT to_regclass('cutover_migrator.copy_checkpoints') IS NOT NULL \
    AND to_regclass('cutover_migrator.copy_ranges') IS NOT NULL \
    AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('cutover_migrator.copy_ranges') \
                AND attname = 'done_by' AND NOT attisdropped) \
    AND EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'copy_runs_status_check' \
                AND conrelid = to_regclass('cutover_migrator.copy_runs') \
                AND pg_get_constraintdef(oid) LIKE '%lock_lost%')";

/// Run statuses a new copy resumes (same plan and table selection).
const UNFINISHED: &str = "('running', 'failed', 'lock_lost')";

/// The checkpoint of one table in one run.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    pub last_key: Option<String>,
    pub counts: Counts,
    /// Source rows counted when the table's ranges were planned.
    pub planned_rows: u64,
    pub batches: u64,
    pub done: bool,
}

/// A run this copy works on: new, or resumed with the checkpoints it had reached.
#[derive(Debug)]
pub struct Run {
    pub id: i64,
    pub checkpoints: HashMap<String, Checkpoint>,
}

/// One row of `copy_runs`, for `status`.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run_id: i64,
    pub status: String,
    pub tables: Vec<String>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Creates (or brings up to date) the bookkeeping schema, saying so when the target user may not.
pub async fn ensure_bookkeeping(target: &mut PgConnection, database: &str) -> anyhow::Result<()> {
    let current: bool = sqlx::query_scalar(BOOKKEEPING_CURRENT)
        .fetch_one(&mut *target)
        .await
        .context("reading the bookkeeping tables of the target")?;
    if current {
        return Ok(());
    }
    sqlx::raw_sql(BOOKKEEPING_DDL)
        .execute(&mut *target)
        .await
        .map_err(|e| {
            let hint = if error::sqlstate(&e).as_deref() == Some("42501") {
                "; the target user needs the CREATE privilege on the database once, to create that schema (or run the first `migrator copy` as a user who has it)"
            } else {
                ""
            };
            anyhow::anyhow!(
                "creating the bookkeeping schema {BOOKKEEPING_SCHEMA} (copy runs and checkpoints) in {database}: {}{hint}",
                error::describe_db_error(&e)
            )
        })?;
    Ok(())
}

/// Resumes the latest unfinished run of this plan and table selection (after abandoning it when
/// `restart`), or starts a new one. Says on stderr which.
pub async fn begin(
    target: &mut PgConnection,
    fingerprint: &str,
    tables: &[String],
    restart: bool,
) -> anyhow::Result<Run> {
    if restart {
        let abandoned = sqlx::query(&format!(
            "UPDATE cutover_migrator.copy_runs SET status = 'abandoned', finished_at = now() \
             WHERE status IN {UNFINISHED} AND plan_fingerprint = $1 AND tables = $2"
        ))
        .bind(fingerprint)
        .bind(tables)
        .execute(&mut *target)
        .await?;
        if abandoned.rows_affected() > 0 {
            eprintln!(
                "copy: --restart: abandoned the interrupted run; starting from the beginning"
            );
        }
    }
    let interrupted: Option<(i64, String)> = sqlx::query_as(
        &format!("SELECT run_id, status FROM cutover_migrator.copy_runs WHERE status IN {UNFINISHED} AND plan_fingerprint = $1 AND tables = $2 \
         ORDER BY run_id DESC LIMIT 1"),
    )
    .bind(fingerprint)
    .bind(tables)
    .fetch_optional(&mut *target)
    .await?;
    if let Some((run_id, status)) = interrupted {
        // Under the exclusive run lock no worker of the run is alive: every lease is void.
        super::ranges::release_all(target, run_id).await?;
        let checkpoints = load_checkpoints(target, run_id).await?;
        sqlx::query("UPDATE cutover_migrator.copy_runs SET status = 'running', finished_at = NULL WHERE run_id = $1")
            .bind(run_id)
            .execute(&mut *target)
            .await?;
        let how = match status.as_str() {
            "failed" => "stopped by an error",
            "lock_lost" => "stopped after losing its lock",
            _ => "interrupted",
        };
        eprintln!("copy: resuming run {run_id} ({how}) after its last checkpoints");
        return Ok(Run {
            id: run_id,
            checkpoints,
        });
    }
    let others: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM cutover_migrator.copy_runs WHERE status IN {UNFINISHED}"
    ))
    .fetch_one(&mut *target)
    .await?;
    if others > 0 {
        eprintln!(
            "copy: note: {others} interrupted run(s) with another plan or table selection exist; \
             starting a new run (run with the same plan and --tables to resume one)"
        );
    }
    let run_id: i64 = sqlx::query_scalar(
        "INSERT INTO cutover_migrator.copy_runs (plan_fingerprint, tables, status) VALUES ($1, $2, 'running') RETURNING run_id",
    )
    .bind(fingerprint)
    .bind(tables)
    .fetch_one(&mut *target)
    .await?;
    Ok(Run {
        id: run_id,
        checkpoints: HashMap::new(),
    })
}

/// The run a `copy --join` attaches to: `run_id`, or the latest running one of this plan and
/// table selection. Refused ([`MigratorError::Usage`], exit 2) when there is none, when it is not
/// running (finished, failed: a plain `copy` resumes those), or when it copies another plan or
/// table selection.
pub async fn find_for_join(
    target: &mut PgConnection,
    run_id: Option<i64>,
    fingerprint: &str,
    tables: &[String],
) -> anyhow::Result<i64> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('cutover_migrator.copy_runs') IS NOT NULL")
            .fetch_one(&mut *target)
            .await?;
    let found: Option<(i64, String, String, Vec<String>)> = if !exists {
        None
    } else if let Some(id) = run_id {
        sqlx::query_as("SELECT run_id, status, plan_fingerprint, tables FROM cutover_migrator.copy_runs WHERE run_id = $1")
            .bind(id)
            .fetch_optional(&mut *target)
            .await?
    } else {
        sqlx::query_as("SELECT run_id, status, plan_fingerprint, tables FROM cutover_migrator.copy_runs \
                        WHERE status = 'running' AND plan_fingerprint = $1 AND tables = $2 ORDER BY run_id DESC LIMIT 1")
            .bind(fingerprint)
            .bind(tables)
            .fetch_optional(&mut *target)
            .await?
    };
    let which = run_id.map_or_else(
        || "no running copy run of this plan and --tables".to_string(),
        |id| format!("run {id}"),
    );
    let Some((id, status, run_fingerprint, run_tables)) = found else {
        return Err(MigratorError::Usage(format!("copy --join: {which} exists in the target; start one with `migrator copy` (without --join)")).into());
    };
    if status != "running" {
        return Err(MigratorError::Usage(format!(
            "copy --join: run {id} is {status}, not running; nothing to join{}",
            if matches!(status.as_str(), "failed" | "lock_lost") {
                " (`migrator copy` without --join resumes it)"
            } else {
                ""
            }
        ))
        .into());
    }
    if run_fingerprint != fingerprint || run_tables != tables {
        return Err(MigratorError::Usage(format!(
            "copy --join: run {id} copies another plan or table selection ({}); join it with the same --plan and --tables",
            run_tables.join(",")
        ))
        .into());
    }
    Ok(id)
}

/// Records that the run works on `table` (its checkpoint row, if not there yet).
pub async fn start_table(conn: &mut PgConnection, run_id: i64, table: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO cutover_migrator.copy_checkpoints (run_id, table_name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(run_id)
    .bind(table)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records the run as complete once every range is done (any worker may be the one to see it),
/// committed synchronously (batches may commit asynchronously: see [`super::Worker::connect`]).
pub async fn complete(conn: &mut PgConnection, run_id: i64) -> sqlx::Result<()> {
    sqlx::query("SET synchronous_commit = on")
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE cutover_migrator.copy_runs SET status = 'complete', finished_at = now() WHERE run_id = $1 AND status = 'running' \
                 AND NOT EXISTS (SELECT 1 FROM cutover_migrator.copy_ranges r WHERE r.run_id = $1 AND NOT r.done)")
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records how a run ended (`failed`, `lock_lost`), unless it already ended otherwise.
async fn mark_run(conn: &mut PgConnection, run_id: i64, status: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE cutover_migrator.copy_runs SET status = $2, finished_at = now() WHERE run_id = $1 AND status = 'running'",
    )
    .bind(run_id)
    .bind(status)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// After the run `run_id` failed with `failure`: records it as `failed`, or — when the writing
/// connection and the lock with it are gone — as `lock_lost` from a new connection, but only while
/// no other copy holds the lock (one that does owns the run now). Returns the error to report.
pub async fn stop(
    target: &mut PgConnection,
    lock: &AdvisoryLock,
    target_url: &str,
    run_id: i64,
    failure: anyhow::Error,
) -> anyhow::Error {
    // A lost lease or a run ended elsewhere: the run goes on (or ended) without this worker.
    if let Some(MigratorError::LeaseLost { .. } | MigratorError::RunStopped { .. }) = failure
        .chain()
        .find_map(|e| e.downcast_ref::<MigratorError>())
    {
        return failure;
    }
    let kept = || {
        format!("Batches committed before are kept with their checkpoints; `migrator copy` resumes run {run_id} after them.")
    };
    let Some(lost) = lock
        .lost(target, &failure, || format!("run {run_id}"), kept)
        .await
    else {
        if let Err(e) = mark_run(target, run_id, "failed").await {
            eprintln!(
                "copy: could not record run {run_id} as failed: {}",
                error::describe_db_error(&e)
            );
        }
        return failure;
    };
    let marked = async {
        let mut conn = db::connect("target", target_url).await?;
        let marked = lock::with_transaction_lock(&mut conn, lock.key(), async |c| {
            mark_run(c, run_id, "lock_lost").await
        })
        .await;
        db::close(conn).await;
        anyhow::Ok(marked?)
    }
    .await;
    match marked {
        Ok(Some(())) => {}
        Ok(None) => eprintln!(
            "copy: another copy holds the lock now; run {run_id} is left to it (not marked)"
        ),
        Err(e) => eprintln!(
            "copy: could not record run {run_id} as lock_lost: {}",
            error::render(&e)
        ),
    }
    lost.into()
}

/// Checkpoints of one run, by table name.
pub async fn load_checkpoints(
    target: &mut PgConnection,
    run_id: i64,
) -> sqlx::Result<HashMap<String, Checkpoint>> {
    let rows = sqlx::query(
        "SELECT table_name, last_key, rows_read, inserted, updated, unchanged, batches, done, planned_rows \
         FROM cutover_migrator.copy_checkpoints WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_all(&mut *target)
    .await?;
    let mut out = HashMap::new();
    for r in rows {
        let n = |c: &str| -> sqlx::Result<u64> { Ok(r.try_get::<i64, _>(c)?.max(0) as u64) };
        out.insert(
            r.try_get::<String, _>("table_name")?,
            Checkpoint {
                last_key: r.try_get("last_key")?,
                counts: Counts {
                    rows_read: n("rows_read")?,
                    inserted: n("inserted")?,
                    updated: n("updated")?,
                    unchanged: n("unchanged")?,
                },
                batches: n("batches")?,
                planned_rows: n("planned_rows")?,
                done: r.try_get("done")?,
            },
        );
    }
    Ok(out)
}

/// The latest `limit` runs, oldest first; `None` when no copy has run against this database
/// (no bookkeeping tables).
pub async fn recent_runs(
    target: &mut PgConnection,
    limit: i64,
) -> sqlx::Result<Option<Vec<RunRecord>>> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('cutover_migrator.copy_runs') IS NOT NULL")
            .fetch_one(&mut *target)
            .await?;
    if !exists {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT run_id, status, tables, started_at, finished_at FROM cutover_migrator.copy_runs ORDER BY run_id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *target)
    .await?;
    let mut runs = rows
        .iter()
        .map(|run| {
            Ok(RunRecord {
                run_id: run.try_get("run_id")?,
                status: run.try_get("status")?,
                tables: run.try_get("tables")?,
                started_at: run.try_get("started_at")?,
                finished_at: run.try_get("finished_at")?,
            })
        })
        .collect::<sqlx::Result<Vec<_>>>()?;
    runs.reverse();
    Ok(Some(runs))
}
