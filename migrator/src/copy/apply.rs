//! Writing one batch to the target (or, in a dry run, counting what it would write):
//! identical → only the checkpoint; target empty in the window → `COPY` straight into the table;
//! otherwise `COPY` into the staging table and the writes of [`write_staged`]. A rejected
//! batch is diagnosed ([`super::diagnose`]) to name the row.
//!
//! Two rules keep a copy that runs during dual-write from undoing a write dual-write made after
//! copy read the source (docs/dual-write.md): with a plan `version` column, the writes keep a
//! target row whose version is newer ([`super::sql::update_changed`]); and after a batch committed, the
//! rows it *inserted* are looked up in the source again ([`recheck_inserted`]): one the source no
//! longer holds was deleted meanwhile, and its shadow delete may have run before copy's insert, so
//! copy deletes it again.

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};

use super::diagnose::{self, diagnose};
use super::format::CopyFormat;
use super::pipeline::{Batch, Existing};
use super::ranges::{self, Lease};
use super::report::Counts;
use super::sql;
use crate::error::{self, MigratorError};
use crate::plan::{ResolvedTable, Window};

/// Whether a copy writes, and where its checkpoints go.
#[derive(Debug, Clone, Copy)]
pub enum Mode<'a> {
    /// `--dry-run`: count what would be inserted and updated; write nothing, no run, no checkpoints.
    DryRun,
    /// Write each batch together with the checkpoint of the claimed range (which also renews
    /// the lease, or stops the batch when the range was taken over).
    Write(&'a Lease),
}

async fn copy_in(conn: &mut PgConnection, sql: &str, data: &[u8]) -> sqlx::Result<u64> {
    let mut copy = conn.copy_in_raw(sql).await?;
    copy.send(data).await?;
    copy.finish().await
}

fn counts_of(row: &sqlx::postgres::PgRow, rows: u64) -> sqlx::Result<Counts> {
    let inserted = row.try_get::<i64, _>(0)? as u64;
    let updated = row.try_get::<i64, _>(1)? as u64;
    Ok(Counts {
        rows_read: rows,
        inserted,
        updated,
        unchanged: rows - inserted - updated,
    })
}

/// Target rows newer than the source are kept, never overwritten; say so loudly, because after
/// the target took over this is exactly the edit a copy must not touch (docs/runbook.md).
fn warn_target_newer(table: &ResolvedTable, newer: i64, dry_run: bool) {
    if newer > 0 {
        let version = table.version().map_or("?", |v| v.name.as_str());
        eprintln!(
            "copy: WARNING: table {}: {newer} target row(s) have a newer {version} than the source; {} — \
             the target holds writes the source lacks (see `migrator verify`, kind target_newer)",
            table.name(),
            if dry_run { "they would be kept" } else { "kept, not overwritten" }
        );
    }
}

/// After a batch committed: the keys it inserted that the source no longer holds were deleted
/// after copy read them; deletes them from the target again. Returns how many. The source keys
/// are read as the batch's key window (one index range scan), not looked up one by one: every
/// inserted key lies in that window, and a key only leaves it by leaving the source.
async fn recheck_inserted(
    source: &mut PgConnection,
    target: &mut PgConnection,
    table: &ResolvedTable,
    batch: &Batch,
    inserted: &[String],
) -> anyhow::Result<u64> {
    if inserted.is_empty() {
        return Ok(0);
    }
    let window = Window {
        after: batch.after.as_deref(),
        up_to: Some(&batch.last_key),
        ..Window::default()
    };
    let present: Vec<String> = sqlx::query_scalar(&table.source_keys_sql(&window))
        .fetch_all(&mut *source)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "table {}: re-checking inserted rows in the source: {}",
                table.name(),
                error::describe_db_error(&e)
            )
        })?;
    let present: std::collections::HashSet<&str> = present.iter().map(String::as_str).collect();
    let gone: Vec<&str> = inserted
        .iter()
        .map(String::as_str)
        .filter(|k| !present.contains(k))
        .collect();
    if gone.is_empty() {
        return Ok(0);
    }
    let deleted = sqlx::query(&sql::delete_target_keys(table))
        .bind(&gone)
        .execute(&mut *target)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "table {}: deleting {} row(s) deleted in the source while copy ran: {}",
                table.name(),
                gone.len(),
                error::describe_db_error(&e)
            )
        })?
        .rows_affected();
    eprintln!(
        "copy: table {}: {deleted} row(s) deleted in the source while the batch was written, deleted again in the target",
        table.name()
    );
    Ok(deleted)
}

/// What [`write_staged`] did.
pub(super) struct Written {
    pub inserted: u64,
    pub updated: u64,
    pub inserted_keys: Vec<String>,
    /// Staged keys that occur more than once (nothing is to be committed then).
    pub repeated_keys: i64,
}

/// Writes the staged rows (those with keys up to `up_to`, if given) into the target: inserts
/// the missing ones ([`sql::insert_missing`]), then updates those that differ
/// ([`sql::update_changed`]); the rows it just inserted are identical to their staged row, so the
/// update does not touch them again.
pub(super) async fn write_staged(
    tx: &mut PgConnection,
    table: &ResolvedTable,
    staging: &str,
    up_to: Option<&str>,
) -> sqlx::Result<Written> {
    let row = sqlx::query(&sql::insert_missing(table, staging, up_to))
        .fetch_one(&mut *tx)
        .await?;
    let mut written = Written {
        inserted: row.try_get::<i64, _>(0)?.max(0) as u64,
        updated: row.try_get::<i64, _>(1)?.max(0) as u64,
        inserted_keys: row.try_get(2)?,
        repeated_keys: row.try_get(3)?,
    };
    if written.repeated_keys > 0 {
        return Ok(written);
    }
    if let Some(update) = sql::update_changed(table, staging, up_to) {
        written.updated += sqlx::query(&update)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    Ok(written)
}

/// Writes `batch`; `source` is the connection the inserted rows are re-checked on.
pub async fn apply_batch(
    source: &mut PgConnection,
    target: &mut PgConnection,
    table: &ResolvedTable,
    format: CopyFormat,
    staging: &str,
    batch: &Batch,
    mode: Mode<'_>,
) -> anyhow::Result<Counts> {
    let name = table.name();
    if batch.existing == Existing::Identical {
        let counts = Counts {
            rows_read: batch.rows,
            unchanged: batch.rows,
            ..Counts::default()
        };
        if let Mode::Write(lease) = mode {
            ranges::checkpoint(target, lease, &batch.last_key, counts).await?;
        }
        return Ok(counts);
    }

    if batch.existing == Existing::Empty {
        let counts = Counts {
            rows_read: batch.rows,
            inserted: batch.rows,
            ..Counts::default()
        };
        let Mode::Write(lease) = mode else {
            return Ok(counts); // all of them would be inserted
        };
        let mut tx = target.begin().await?;
        let direct = copy_in(&mut tx, &sql::copy_into_target(table, format), &batch.data).await;
        match direct {
            Ok(_) => {
                // The window was empty: every target row in it now is one this batch inserted.
                let window = Window {
                    after: batch.after.as_deref(),
                    up_to: Some(&batch.last_key),
                    ..Window::default()
                };
                let inserted: Vec<String> = sqlx::query_scalar(&table.target_keys_sql(&window))
                    .fetch_all(&mut *tx)
                    .await?;
                ranges::checkpoint(&mut tx, lease, &batch.last_key, counts).await?;
                tx.commit().await?;
                recheck_inserted(source, target, table, batch, &inserted).await?;
                return Ok(counts);
            }
            // Rejected (a key appeared meanwhile, a constraint): the staging path decides and explains.
            Err(e) if error::is_statement_error(&e) => tx.rollback().await?,
            Err(e) => return Err(e.into()),
        }
    }

    let range = batch.range();
    let mut tx = target.begin().await?;
    copy_in(
        &mut tx,
        &sql::copy_into_staging(table, staging, format),
        &batch.data,
    )
    .await
    .map_err(|e| -> anyhow::Error {
        if error::is_statement_error(&e) {
            MigratorError::DataRejected {
                table: name.to_string(),
                key: format!("(batch {range})"),
                detail: error::describe_db_error(&e),
            }
            .into()
        } else {
            e.into()
        }
    })?;
    let lease = match mode {
        Mode::DryRun => {
            let row = sqlx::query(&sql::dry_run_counts(table, staging))
                .fetch_one(&mut *tx)
                .await?;
            let counts = counts_of(&row, batch.rows)?;
            warn_target_newer(table, row.try_get(2)?, true);
            tx.rollback().await?;
            return Ok(counts);
        }
        Mode::Write(lease) => lease,
    };
    sqlx::query("SAVEPOINT cutover_batch")
        .execute(&mut *tx)
        .await?;
    let written = match write_staged(&mut tx, table, staging, None).await {
        Ok(written) => written,
        Err(e) if error::is_statement_error(&e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT cutover_batch")
                .execute(&mut *tx)
                .await?;
            let rejected = diagnose(&mut tx, table, staging, &e, &range).await?;
            tx.rollback().await?;
            return Err(rejected.into());
        }
        Err(e) => return Err(e.into()),
    };
    if written.repeated_keys > 0 {
        let rejected = diagnose::repeated_key(&mut tx, table, staging).await?;
        tx.rollback().await?;
        return Err(rejected.into());
    }
    let counts = Counts {
        rows_read: batch.rows,
        inserted: written.inserted,
        updated: written.updated,
        unchanged: batch
            .rows
            .saturating_sub(written.inserted + written.updated),
    };
    // Only a staged row that was not written can be one the target holds a newer version of.
    if counts.unchanged > 0 && table.version().is_some() {
        let newer: i64 = sqlx::query_scalar(&sql::target_newer(table, staging))
            .fetch_one(&mut *tx)
            .await?;
        warn_target_newer(table, newer, false);
    }
    let inserted = written.inserted_keys;
    ranges::checkpoint(&mut tx, lease, &batch.last_key, counts).await?;
    tx.commit().await?;
    recheck_inserted(source, target, table, batch, &inserted).await?;
    Ok(counts)
}
