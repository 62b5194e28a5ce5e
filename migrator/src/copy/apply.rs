//! Writing one batch to the target (or, in a dry run, counting what it would write):
//! identical → only the checkpoint; target empty in the window → `COPY` straight into the table;
//! otherwise `COPY` into the staging table and the upsert of [`super::sql::upsert`]. A rejected
//! batch is diagnosed ([`super::diagnose`]) to name the row.

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};

use super::diagnose::diagnose;
use super::format::CopyFormat;
use super::pipeline::{Batch, Existing};
use super::ranges::{self, Lease};
use super::report::Counts;
use super::sql;
use crate::error::{self, MigratorError};
use crate::plan::ResolvedTable;

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

pub async fn apply_batch(
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
                ranges::checkpoint(&mut tx, lease, &batch.last_key, counts).await?;
                tx.commit().await?;
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
            tx.rollback().await?;
            return Ok(counts);
        }
        Mode::Write(lease) => lease,
    };
    sqlx::query("SAVEPOINT cutover_batch")
        .execute(&mut *tx)
        .await?;
    let upserted = sqlx::query(&sql::upsert(table, staging, None))
        .fetch_one(&mut *tx)
        .await;
    let row = match upserted {
        Ok(row) => row,
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
    let counts = counts_of(&row, batch.rows)?;
    ranges::checkpoint(&mut tx, lease, &batch.last_key, counts).await?;
    tx.commit().await?;
    Ok(counts)
}
