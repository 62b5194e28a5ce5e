//! Work units of a copy run: each table's key space cut into ranges of about `--range-rows` source
//! rows (from the source's key distribution: the key every `--range-rows` rows), stored in
//! `cutover_migrator.copy_ranges` in the target so that any number of worker processes share them.
//!
//! A worker claims the next range with `SELECT … FOR UPDATE SKIP LOCKED` and holds it under a
//! lease (`lease_until`) that every batch commit renews, in the batch's own transaction: a batch
//! commits only while its worker still holds the range. A range whose lease expired (its holder
//! died or hung) is claimed by the next worker, which continues after the range's checkpoint; the
//! old holder's next commit finds the range gone and stops it ([`MigratorError::LeaseLost`]).
//! A table's ranges become claimable when the tables it references by a foreign key (earlier in
//! plan order) are done.

use std::collections::HashMap;

use sqlx::postgres::PgConnection;
use sqlx::Row;

use super::report::Counts;
use crate::error::{self, MigratorError};
use crate::plan::ResolvedTable;

/// A claimed range, with what the worker needs to process and checkpoint it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub run_id: i64,
    pub table: String,
    pub range_no: i32,
    /// Range bounds: (after, up_to]; `None` is unbounded.
    pub after: Option<String>,
    pub up_to: Option<String>,
    /// The range's checkpoint: the last key committed (by any holder).
    pub last_key: Option<String>,
    /// This worker.
    pub holder: String,
    pub lease_secs: u32,
    /// The worker whose expired lease this claim took over.
    pub taken_from: Option<String>,
}

/// One range of a run, for `status`.
#[derive(Debug, Clone)]
pub struct RangeRecord {
    pub table: String,
    pub range_no: i32,
    pub after: Option<String>,
    pub up_to: Option<String>,
    pub last_key: Option<String>,
    pub counts: Counts,
    pub done: bool,
    pub holder: Option<String>,
    /// Seconds until the lease expires (negative: expired).
    pub lease_left_secs: Option<f64>,
    pub claims: i32,
}

/// The planned ranges of one table: boundaries, and source rows counted at planning.
#[derive(Debug, Clone)]
pub struct TableRanges {
    pub bounds: Vec<(Option<String>, Option<String>)>,
    pub rows: u64,
}

/// Cuts `table` (after `start`, e.g. an older run's checkpoint) into ranges of `range_rows` rows:
/// (start, k1], (k1, k2], …, (kn, unbounded). The last range is open so that rows added to the
/// source later are still copied. A table of at most `range_rows` rows (`total_rows`, counted
/// just before) is one open range, without walking its keys.
pub async fn plan_table(
    keys: &mut PgConnection,
    table: &ResolvedTable,
    start: Option<String>,
    range_rows: u64,
    total_rows: u64,
) -> anyhow::Result<TableRanges> {
    let bounds = if total_rows <= range_rows {
        vec![(start, None)]
    } else {
        cut(keys, table, start, range_rows, usize::MAX).await?
    };
    Ok(TableRanges {
        bounds,
        rows: total_rows,
    })
}

/// The key ranges (after, up_to] of about `range_rows` source rows each, in key order from the
/// source's key distribution (the key every `range_rows` rows: an index-only scan when the key is
/// an indexed column), at most `max_ranges` of them: together they cover every key after
/// `start`, the last one open-ended. `copy` plans its work units with it, `verify --jobs` its
/// shares.
pub async fn cut(
    keys: &mut PgConnection,
    table: &ResolvedTable,
    start: Option<String>,
    range_rows: u64,
    max_ranges: usize,
) -> anyhow::Result<Vec<(Option<String>, Option<String>)>> {
    let mut bounds = Vec::new();
    let mut after = start;
    while bounds.len() + 1 < max_ranges.max(1) {
        let next: Option<String> = sqlx::query_scalar(&table.source_key_at_sql(
            after.as_deref(),
            None,
            range_rows.max(1) - 1,
        ))
        .fetch_optional(&mut *keys)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "table {}: cutting the source into key ranges: {}",
                table.name(),
                error::describe_db_error(&e)
            )
        })?
        .flatten();
        let Some(key) = next else { break };
        bounds.push((after.take(), Some(key.clone())));
        after = Some(key);
    }
    bounds.push((after, None));
    Ok(bounds)
}

/// Stores the ranges of `table` for run `run_id` (plan order `order`, claimable once the
/// `depends_on` tables are done).
pub async fn store(
    conn: &mut PgConnection,
    run_id: i64,
    table: &str,
    order: i32,
    depends_on: &[String],
    ranges: &TableRanges,
    range_rows: u64,
) -> sqlx::Result<()> {
    let last = ranges.bounds.len().saturating_sub(1);
    for (no, (after, up_to)) in ranges.bounds.iter().enumerate() {
        let planned = if no < last {
            range_rows
        } else {
            ranges.rows.saturating_sub(range_rows * last as u64)
        };
        sqlx::query(
            "INSERT INTO cutover_migrator.copy_ranges (run_id, table_name, range_no, table_order, depends_on, after_key, up_to_key, planned_rows) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(run_id)
        .bind(table)
        .bind(no as i32)
        .bind(order)
        .bind(depends_on)
        .bind(after)
        .bind(up_to)
        .bind(planned as i64)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "UPDATE cutover_migrator.copy_checkpoints SET planned_rows = $3 WHERE run_id = $1 AND table_name = $2",
    )
    .bind(run_id)
    .bind(table)
    .bind(ranges.rows as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Tables of run `run_id` that already have ranges.
pub async fn planned_tables(conn: &mut PgConnection, run_id: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT DISTINCT table_name FROM cutover_migrator.copy_ranges WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await
}

/// Releases every range of the run (the caller holds the run lock exclusively, so no worker of
/// the run is alive).
pub async fn release_all(conn: &mut PgConnection, run_id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE cutover_migrator.copy_ranges SET holder = NULL, lease_until = NULL WHERE run_id = $1 AND holder IS NOT NULL",
    )
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What a worker found when it asked for work.
#[derive(Debug)]
pub enum Claim {
    Range(Lease),
    /// Nothing claimable now: other workers hold the remaining ranges, or their tables wait for
    /// the tables they reference.
    Wait,
    /// Every range is done.
    Finished,
}

const CLAIM: &str = "
UPDATE cutover_migrator.copy_ranges r
   SET holder = $2, lease_until = clock_timestamp() + make_interval(secs => $3), claims = r.claims + 1, updated_at = now(),
       claimed_at = coalesce(r.claimed_at, clock_timestamp())
  FROM (SELECT c.run_id, c.table_name, c.range_no, c.holder AS previous
          FROM cutover_migrator.copy_ranges c
         WHERE c.run_id = $1 AND NOT c.done
           AND (c.holder IS NULL OR c.lease_until < clock_timestamp())
           AND NOT EXISTS (SELECT 1 FROM cutover_migrator.copy_checkpoints p
                            WHERE p.run_id = c.run_id AND p.table_name = ANY (c.depends_on) AND NOT p.done)
         ORDER BY c.table_order, c.range_no
         LIMIT 1
           FOR UPDATE OF c SKIP LOCKED) AS pick
 WHERE r.run_id = pick.run_id AND r.table_name = pick.table_name AND r.range_no = pick.range_no
RETURNING r.table_name, r.range_no, r.after_key, r.up_to_key, r.last_key, pick.previous";

/// Claims the next range of run `run_id` for `holder`, taking over an expired lease if need be.
pub async fn claim(
    conn: &mut PgConnection,
    run_id: i64,
    holder: &str,
    lease_secs: u32,
) -> anyhow::Result<Claim> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM cutover_migrator.copy_runs WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(&mut *conn)
            .await?;
    match status.as_deref() {
        Some("running") => {}
        // Finished by other workers meanwhile (e.g. while this one was joining).
        Some("complete") => return Ok(Claim::Finished),
        other => {
            return Err(MigratorError::RunStopped {
                run_id,
                status: other.unwrap_or("deleted").to_string(),
            }
            .into())
        }
    }
    let row = sqlx::query(CLAIM)
        .bind(run_id)
        .bind(holder)
        .bind(f64::from(lease_secs))
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(row) = row {
        return Ok(Claim::Range(Lease {
            run_id,
            table: row.try_get(0)?,
            range_no: row.try_get(1)?,
            after: row.try_get(2)?,
            up_to: row.try_get(3)?,
            last_key: row.try_get(4)?,
            holder: holder.to_string(),
            lease_secs,
            taken_from: row.try_get(5)?,
        }));
    }
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cutover_migrator.copy_ranges WHERE run_id = $1 AND NOT done",
    )
    .bind(run_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(if open == 0 {
        Claim::Finished
    } else {
        Claim::Wait
    })
}

/// After a range update matched no row: the run ended, or another worker holds the range.
async fn why_lost(conn: &mut PgConnection, lease: &Lease) -> anyhow::Error {
    let found: sqlx::Result<Option<(String, Option<String>)>> = sqlx::query_as(
        "SELECT u.status, r.holder FROM cutover_migrator.copy_runs u \
           LEFT JOIN cutover_migrator.copy_ranges r ON r.run_id = u.run_id AND r.table_name = $2 AND r.range_no = $3 \
          WHERE u.run_id = $1",
    )
    .bind(lease.run_id)
    .bind(&lease.table)
    .bind(lease.range_no)
    .fetch_optional(&mut *conn)
    .await;
    match found {
        Ok(Some((status, _))) if status != "running" => MigratorError::RunStopped {
            run_id: lease.run_id,
            status,
        }
        .into(),
        Ok(Some((_, holder))) => MigratorError::LeaseLost {
            run_id: lease.run_id,
            table: lease.table.clone(),
            range: lease.range_no,
            holder: holder.unwrap_or_else(|| "nobody".into()),
        }
        .into(),
        Ok(None) => MigratorError::RunStopped {
            run_id: lease.run_id,
            status: "deleted".into(),
        }
        .into(),
        Err(e) => e.into(),
    }
}

const CHECKPOINT: &str = "
WITH range AS (
    UPDATE cutover_migrator.copy_ranges r
       SET last_key = $4, rows_read = r.rows_read + $5, inserted = r.inserted + $6, updated = r.updated + $7,
           unchanged = r.unchanged + $8, batches = r.batches + 1,
           lease_until = clock_timestamp() + make_interval(secs => $9), updated_at = now()
     WHERE r.run_id = $1 AND r.table_name = $2 AND r.range_no = $3 AND r.holder = $10 AND NOT r.done
       AND EXISTS (SELECT 1 FROM cutover_migrator.copy_runs u WHERE u.run_id = r.run_id AND u.status = 'running')
    RETURNING 1)
UPDATE cutover_migrator.copy_checkpoints c
   SET last_key = $4, rows_read = c.rows_read + $5, inserted = c.inserted + $6, updated = c.updated + $7,
       unchanged = c.unchanged + $8, batches = c.batches + 1, updated_at = now()
 WHERE c.run_id = $1 AND c.table_name = $2 AND EXISTS (SELECT 1 FROM range)";

/// Advances the range's checkpoint (and its table's totals) past a batch ending at `last_key` and
/// renews the lease; runs in the batch's transaction, so the batch commits only if this worker
/// still holds the range of a running run (otherwise [`MigratorError::LeaseLost`] /
/// [`MigratorError::RunStopped`], and the caller rolls back).
pub async fn checkpoint(
    conn: &mut PgConnection,
    lease: &Lease,
    last_key: &str,
    counts: Counts,
) -> anyhow::Result<()> {
    let updated = sqlx::query(CHECKPOINT)
        .bind(lease.run_id)
        .bind(&lease.table)
        .bind(lease.range_no)
        .bind(last_key)
        .bind(counts.rows_read as i64)
        .bind(counts.inserted as i64)
        .bind(counts.updated as i64)
        .bind(counts.unchanged as i64)
        .bind(f64::from(lease.lease_secs))
        .bind(&lease.holder)
        .execute(&mut *conn)
        .await?;
    if updated.rows_affected() == 1 {
        Ok(())
    } else {
        Err(why_lost(conn, lease).await)
    }
}

/// Records the range as done (in one transaction) and its table as done when it was the table's
/// last open range.
pub async fn finish(conn: &mut PgConnection, lease: &Lease) -> anyhow::Result<()> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let done = sqlx::query(
        "UPDATE cutover_migrator.copy_ranges r SET done = true, holder = NULL, lease_until = NULL, updated_at = now(), \
                done_at = clock_timestamp(), done_by = $4 \
          WHERE r.run_id = $1 AND r.table_name = $2 AND r.range_no = $3 AND r.holder = $4 AND NOT r.done \
            AND EXISTS (SELECT 1 FROM cutover_migrator.copy_runs u WHERE u.run_id = r.run_id AND u.status = 'running')",
    )
    .bind(lease.run_id)
    .bind(&lease.table)
    .bind(lease.range_no)
    .bind(&lease.holder)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        tx.rollback().await?;
        return Err(why_lost(conn, lease).await);
    }
    // Lock the table's row first, then look at its ranges in a new statement (a new snapshot):
    // two workers finishing a table's last two ranges at once then see each other's.
    sqlx::query("SELECT 1 FROM cutover_migrator.copy_checkpoints WHERE run_id = $1 AND table_name = $2 FOR UPDATE")
        .bind(lease.run_id)
        .bind(&lease.table)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE cutover_migrator.copy_checkpoints c SET updated_at = now(), done = NOT EXISTS \
           (SELECT 1 FROM cutover_migrator.copy_ranges r WHERE r.run_id = c.run_id AND r.table_name = c.table_name AND NOT r.done) \
          WHERE c.run_id = $1 AND c.table_name = $2",
    )
    .bind(lease.run_id)
    .bind(&lease.table)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Every range of a run, in plan order, for `status`.
pub async fn list(conn: &mut PgConnection, run_id: i64) -> sqlx::Result<Vec<RangeRecord>> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('cutover_migrator.copy_ranges') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT table_name, range_no, after_key, up_to_key, last_key, rows_read, inserted, updated, unchanged, done, holder, \
                extract(epoch FROM lease_until - clock_timestamp())::float8 AS lease_left, claims \
           FROM cutover_migrator.copy_ranges WHERE run_id = $1 ORDER BY table_order, range_no",
    )
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let n = |c: &str| -> sqlx::Result<u64> { Ok(r.try_get::<i64, _>(c)?.max(0) as u64) };
            Ok(RangeRecord {
                table: r.try_get("table_name")?,
                range_no: r.try_get("range_no")?,
                after: r.try_get("after_key")?,
                up_to: r.try_get("up_to_key")?,
                last_key: r.try_get("last_key")?,
                counts: Counts {
                    rows_read: n("rows_read")?,
                    inserted: n("inserted")?,
                    updated: n("updated")?,
                    unchanged: n("unchanged")?,
                },
                done: r.try_get("done")?,
                holder: r.try_get("holder")?,
                lease_left_secs: r.try_get("lease_left")?,
                claims: r.try_get("claims")?,
            })
        })
        .collect()
}

/// For each table, the tables earlier in `tables` (plan order) that its target table references
/// by a foreign key, less those the plan lets it overlap (`may_overlap`): its ranges wait for
/// those to be done.
pub async fn dependencies(
    target: &mut PgConnection,
    tables: &[ResolvedTable],
) -> sqlx::Result<HashMap<String, Vec<String>>> {
    let mut oids = Vec::with_capacity(tables.len());
    for t in tables {
        let oid: Option<i64> = sqlx::query_scalar("SELECT to_regclass($1)::oid::int8")
            .bind(t.plan.target.sql())
            .fetch_one(&mut *target)
            .await?;
        oids.push(oid);
    }
    let mut out = HashMap::new();
    for (i, t) in tables.iter().enumerate() {
        let parents: Vec<i64> = match oids[i] {
            Some(oid) => sqlx::query_scalar(
                "SELECT DISTINCT confrelid::int8 FROM pg_constraint WHERE contype = 'f' AND conrelid = $1::int8::oid AND confrelid <> conrelid",
            )
            .bind(oid)
            .fetch_all(&mut *target)
            .await?,
            None => Vec::new(),
        };
        let earlier: Vec<(&str, Option<i64>)> = tables[..i]
            .iter()
            .zip(&oids)
            .map(|(p, oid)| (p.name(), *oid))
            .collect();
        out.insert(
            t.name().to_string(),
            waits_for(&earlier, &parents, &t.plan.may_overlap),
        );
    }
    Ok(out)
}

/// The earlier tables (name, target oid) a table waits for: those whose target it references
/// (`parents`: referenced oids), unless the plan lets it overlap them.
fn waits_for(
    earlier: &[(&str, Option<i64>)],
    parents: &[i64],
    may_overlap: &[String],
) -> Vec<String> {
    earlier
        .iter()
        .filter(|(_, oid)| oid.is_some_and(|o| parents.contains(&o)))
        .filter(|(name, _)| !may_overlap.iter().any(|m| m == name))
        .map(|(name, _)| name.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_waits_for_referenced_parents_unless_it_may_overlap_them() {
        let earlier = [
            ("users", Some(1)),
            ("conversations", Some(2)),
            ("tasks", Some(3)),
        ];
        // messages references conversations (and, say, users); tasks is unrelated.
        let parents = [1, 2];
        assert_eq!(
            waits_for(&earlier, &parents, &[]),
            ["users", "conversations"]
        );
        assert_eq!(
            waits_for(&earlier, &parents, &["conversations".to_string()]),
            ["users"]
        );
        let all = ["users".to_string(), "conversations".to_string()];
        assert!(waits_for(&earlier, &parents, &all).is_empty());
        // A table whose target does not exist yet is never waited for by oid.
        assert!(waits_for(&[("users", None)], &parents, &[]).is_empty());
    }
}
