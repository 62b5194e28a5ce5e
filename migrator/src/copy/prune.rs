//! `copy --prune`: deletes target rows whose key no longer exists in the source, after the tables
//! are copied, in reverse plan order (rows that reference others go first).
//!
//! Safety. A row only the target has is either one deleted in the source since it was copied, or
//! one the target wrote itself (it served a request as primary). The migrator cannot tell them
//! apart from the data, so pruning needs both:
//! - `--no-target-writes`: the operator confirms that nothing but `copy` and dual-write shadows has
//!   written the target (new has not served any request as primary); logged on stderr and recorded
//!   with each table's prune checkpoint (`acknowledged_by`). A dry run needs no confirmation (it
//!   deletes nothing).
//! - a plan without `target_has_taken_over = true` (the switch to set once the target is primary):
//!   with it, prune is refused even when confirmed.
//!
//! Shadow writes: a shadow repeats a source write after the source committed it, so a row it
//! created is in the source by the time the target holds it. Each batch reads the target's keys
//! first and only then asks the source which of them exist, so such a row is always found and
//! never a candidate. Rows written to the target after the run started are never deleted: the
//! run takes a snapshot of the target at its start (before any table is copied) and the delete
//! keeps every row whose `xmin` that snapshot does not see (see [`written_before`]), so a write
//! racing the prune, or the copy's own writes of this run, are left to the next run.
//!
//! Batches: `--batch-size` target keys in key order; each batch's deletes, the deleted keys
//! (`cutover_migrator.pruned_keys`, the run's report) and its checkpoint
//! (`cutover_migrator.prune_checkpoints`) commit together, so a resumed run continues after the
//! last committed batch.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};

use super::report::TableSummary;
use crate::cli::CopyArgs;
use crate::db::quote_ident;
use crate::error::{self, MigratorError};
use crate::plan::{Plan, ResolvedTable};

const PRUNE_DDL: &str = "
CREATE TABLE IF NOT EXISTS cutover_migrator.prune_checkpoints (
    run_id          bigint NOT NULL REFERENCES cutover_migrator.copy_runs (run_id),
    table_name      text NOT NULL,
    last_key        text,
    deleted         bigint NOT NULL DEFAULT 0,
    done            boolean NOT NULL DEFAULT false,
    acknowledged_by text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, table_name)
);
CREATE TABLE IF NOT EXISTS cutover_migrator.pruned_keys (
    run_id     bigint NOT NULL REFERENCES cutover_migrator.copy_runs (run_id),
    table_name text NOT NULL,
    key        text NOT NULL,
    pruned_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, table_name, key)
);
";

/// Whether a prune deletes, and which run records what it deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--dry-run`: count what would be deleted; delete nothing.
    DryRun,
    /// Delete, with checkpoints and the pruned keys recorded in run `run_id`.
    Write { run_id: i64 },
}

/// Refuses (exit 2, saying why) a `--prune` that may not run; checked before anything connects.
pub fn check_allowed(args: &CopyArgs, plan: &Plan) -> Result<(), MigratorError> {
    if !args.prune {
        return Ok(());
    }
    let origin = args.selection.plan.plan.as_ref().map_or_else(
        || "the shipped plan".to_string(),
        |p| format!("the plan {}", p.display()),
    );
    match refusal(plan, &origin, args.no_target_writes, args.dry_run) {
        Some(why) => Err(MigratorError::Usage(why)),
        None => Ok(()),
    }
}

/// Why `--prune` may not run. `None`: it may.
fn refusal(plan: &Plan, plan_origin: &str, confirmed: bool, dry_run: bool) -> Option<String> {
    if plan.target_has_taken_over {
        return Some(format!(
            "--prune refused: {plan_origin} says target_has_taken_over = true: the target has served \
             requests as primary, so a row only the target has may be its own write, which prune \
             must never delete; carry deletions over by other means"
        ));
    }
    if !confirmed && !dry_run {
        return Some(
            "--prune refused: it deletes target rows whose key is not in the source, and a row the \
             target wrote itself is such a row too; give --no-target-writes to confirm that nothing \
             but copy and dual-write shadows has written the target (it has not served any request \
             as primary), or --dry-run to see what would be deleted"
                .to_string(),
        );
    }
    None
}

/// The prune of one copy invocation: the target snapshot taken at its start, and who confirmed it.
pub struct Prune {
    /// `pg_current_snapshot()` at the start, as text: only rows it sees are deleted.
    snapshot: String,
    acknowledged_by: String,
}

/// Where a prune reads and deletes: the source (key lookups), the target, the tables, the mode.
pub type Deleting<'a> = (
    &'a mut PgConnection,
    &'a mut PgConnection,
    &'a [ResolvedTable],
    Mode,
);

/// [`Prune::run`] when `--prune` was given (`prune` is `Some`).
pub async fn run_if(
    prune: Option<Prune>,
    (source, target, tables, mode): Deleting<'_>,
    summaries: &mut [TableSummary],
    batch_size: u64,
) -> anyhow::Result<()> {
    match prune {
        Some(prune) => {
            prune
                .run(source, target, tables, summaries, mode, batch_size)
                .await
        }
        None => Ok(()),
    }
}

impl Prune {
    /// [`Prune::start`] when `enabled` (`--prune`).
    pub async fn start_if(
        enabled: bool,
        target: &mut PgConnection,
        mode: Mode,
    ) -> anyhow::Result<Option<Prune>> {
        if !enabled {
            return Ok(None);
        }
        Ok(Some(Prune::start(target, mode).await?))
    }

    /// Takes the snapshot at the start of the run (before any table is copied); in a writing run,
    /// creates the prune bookkeeping tables and logs the confirmation.
    pub async fn start(target: &mut PgConnection, mode: Mode) -> anyhow::Result<Prune> {
        let (snapshot, user): (String, String) =
            sqlx::query_as("SELECT pg_current_snapshot()::text, current_user::text")
                .fetch_one(&mut *target)
                .await
                .context("reading the transaction snapshot of the target")?;
        let acknowledged_by = format!("{user} (--no-target-writes)");
        if let Mode::Write { run_id } = mode {
            sqlx::raw_sql(PRUNE_DDL)
                .execute(&mut *target)
                .await
                .context("creating the prune bookkeeping tables in cutover_migrator")?;
            eprintln!(
                "copy: --prune in run {run_id}: confirmed by {acknowledged_by} that nothing but copy and dual-write shadows has written the target"
            );
        }
        Ok(Prune {
            snapshot,
            acknowledged_by,
        })
    }

    /// Prunes `tables` in reverse plan order, adding each table's deleted rows to its summary.
    pub async fn run(
        &self,
        source: &mut PgConnection,
        target: &mut PgConnection,
        tables: &[ResolvedTable],
        summaries: &mut [TableSummary],
        mode: Mode,
        batch_size: u64,
    ) -> anyhow::Result<()> {
        let mut checkpoints = match mode {
            Mode::Write { run_id } => load_checkpoints(target, run_id).await?,
            Mode::DryRun => HashMap::new(),
        };
        for (table, summary) in tables.iter().zip(summaries.iter_mut()).rev() {
            let checkpoint = checkpoints.remove(table.name()).unwrap_or_default();
            summary.deleted = self
                .table(source, target, table, mode, checkpoint, batch_size)
                .await?;
        }
        Ok(())
    }

    async fn table(
        &self,
        source: &mut PgConnection,
        target: &mut PgConnection,
        table: &ResolvedTable,
        mode: Mode,
        checkpoint: PruneCheckpoint,
        batch_size: u64,
    ) -> anyhow::Result<u64> {
        let name = table.name();
        let mut deleted = checkpoint.deleted;
        if checkpoint.done {
            eprintln!("copy: {name}: prune already done in this run");
            return Ok(deleted);
        }
        if let Mode::Write { run_id } = mode {
            sqlx::query(
                "INSERT INTO cutover_migrator.prune_checkpoints (run_id, table_name, acknowledged_by) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(run_id)
            .bind(name)
            .bind(&self.acknowledged_by)
            .execute(&mut *target)
            .await?;
        }
        let mut after = checkpoint.last_key;
        loop {
            let keys: Vec<String> = sqlx::query_scalar(&target_keys_sql(table, after.is_some()))
                .bind(after.as_deref())
                .bind(batch_size as i64)
                .fetch_all(&mut *target)
                .await
                .with_context(|| format!("table {name}: reading the target keys to prune"))?;
            let Some(last) = keys.last().cloned() else {
                break;
            };
            // Read after the target keys: a row a shadow created is in the source by now.
            let present: HashSet<String> = sqlx::query_scalar(&source_present_sql(table))
                .bind(&keys)
                .fetch_all(&mut *source)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "table {name}: looking up target keys in the source: {}",
                        error::describe_db_error(&e)
                    )
                })?
                .into_iter()
                .collect();
            let candidates: Vec<String> =
                keys.into_iter().filter(|k| !present.contains(k)).collect();
            let gone = self
                .delete_batch(target, table, mode, &candidates, &last, after.as_deref())
                .await?;
            let verb = if mode == Mode::DryRun {
                "would prune"
            } else {
                "pruned"
            };
            for key in &gone {
                eprintln!("copy: {name}: {verb} key {key}");
            }
            deleted += gone.len() as u64;
            after = Some(last);
        }
        if let Mode::Write { run_id } = mode {
            sqlx::query(
                "UPDATE cutover_migrator.prune_checkpoints SET done = true, updated_at = now() \
                 WHERE run_id = $1 AND table_name = $2",
            )
            .bind(run_id)
            .bind(name)
            .execute(&mut *target)
            .await?;
        }
        Ok(deleted)
    }

    /// Deletes (or, in a dry run, finds) the candidates written before the start, records them
    /// and the checkpoint `last`, in one transaction. Returns the keys.
    async fn delete_batch(
        &self,
        target: &mut PgConnection,
        table: &ResolvedTable,
        mode: Mode,
        candidates: &[String],
        last: &str,
        after: Option<&str>,
    ) -> anyhow::Result<Vec<String>> {
        let Mode::Write { run_id } = mode else {
            if candidates.is_empty() {
                return Ok(Vec::new());
            }
            return Ok(sqlx::query_scalar(&prunable_sql(table, false))
                .bind(candidates)
                .bind(&self.snapshot)
                .fetch_all(&mut *target)
                .await?);
        };
        let mut tx = target.begin().await?;
        let gone: Vec<String> = if candidates.is_empty() {
            Vec::new()
        } else {
            sqlx::query_scalar(&prunable_sql(table, true))
                .bind(candidates)
                .bind(&self.snapshot)
                .bind(run_id)
                .bind(table.name())
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| -> anyhow::Error {
                    if error::is_statement_error(&e) {
                        MigratorError::DataRejected {
                            table: table.name().to_string(),
                            key: format!(
                                "(prune batch after {} up to {last})",
                                after.unwrap_or("the first key")
                            ),
                            detail: error::describe_db_error(&e),
                        }
                        .into()
                    } else {
                        e.into()
                    }
                })?
        };
        sqlx::query(
            "UPDATE cutover_migrator.prune_checkpoints SET last_key = $3, deleted = deleted + $4, updated_at = now() \
             WHERE run_id = $1 AND table_name = $2",
        )
        .bind(run_id)
        .bind(table.name())
        .bind(last)
        .bind(gone.len() as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(gone)
    }
}

/// The checkpoint of one table's prune in one run.
#[derive(Debug, Default)]
struct PruneCheckpoint {
    last_key: Option<String>,
    deleted: u64,
    done: bool,
}

async fn load_checkpoints(
    target: &mut PgConnection,
    run_id: i64,
) -> sqlx::Result<HashMap<String, PruneCheckpoint>> {
    let rows = sqlx::query(
        "SELECT table_name, last_key, deleted, done FROM cutover_migrator.prune_checkpoints WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_all(&mut *target)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("table_name")?,
                PruneCheckpoint {
                    last_key: r.try_get("last_key")?,
                    deleted: r.try_get::<i64, _>("deleted")?.max(0) as u64,
                    done: r.try_get("done")?,
                },
            ))
        })
        .collect()
}

/// Per table of run `run_id`, what its prune did: (table, deleted, done); empty when no prune
/// has run against this target. For `status`.
pub async fn recorded(
    target: &mut PgConnection,
    run_id: i64,
) -> sqlx::Result<Vec<(String, i64, bool)>> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('cutover_migrator.prune_checkpoints') IS NOT NULL")
            .fetch_one(&mut *target)
            .await?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT table_name, deleted, done FROM cutover_migrator.prune_checkpoints WHERE run_id = $1 ORDER BY table_name",
    )
    .bind(run_id)
    .fetch_all(&mut *target)
    .await
}

/// The next `$2` target keys (as text) in key order, after `$1` when `after`. Ordered by the
/// qualified column: an unqualified name would order by the text output column of that name.
fn target_keys_sql(table: &ResolvedTable, after: bool) -> String {
    let key = quote_ident(&table.key().name);
    let filter = if after {
        format!(
            " WHERE t.{key} > CAST($1::text AS {})",
            table.key().sql_type
        )
    } else {
        " WHERE $1::text IS NULL".to_string()
    };
    format!(
        "SELECT CAST(t.{key} AS text) AS key FROM {} AS t{filter} ORDER BY t.{key} LIMIT $2",
        table.plan.target.sql()
    )
}

/// Which of the keys `$1` (text[]) the source has, by the plan's key expression.
fn source_present_sql(table: &ResolvedTable) -> String {
    let key_sql = table.source_key_sql();
    format!(
        "SELECT CAST({key_sql} AS text) FROM {} WHERE {key_sql} = ANY(CAST($1::text[] AS {}[]))",
        table.source_from_sql(),
        table.key().sql_type
    )
}

/// Whether the row version with `xmin` (a 32-bit xid) was committed before the snapshot `$2`
/// (text) was taken, i.e. the snapshot sees it. `xmin` is widened to the snapshot's 64-bit xid
/// space by its distance behind the snapshot's `xmax` (xids in use span less than 2^31); a row
/// at or ahead of `xmax` began after the snapshot. Frozen and bootstrap xids (< 3) are old.
fn written_before(xmin: &str) -> String {
    let snapshot = "CAST($2::text AS pg_snapshot)";
    let xmax = format!("pg_snapshot_xmax({snapshot})::text::bigint");
    let row = format!("{xmin}::text::bigint");
    let behind = format!("((({xmax}) % 4294967296) - {row} + 4294967296) % 4294967296");
    format!(
        "({row} < 3 OR ({behind} BETWEEN 1 AND 2147483647 \
         AND pg_visible_in_snapshot(CAST(CAST(({xmax}) - ({behind}) AS text) AS xid8), {snapshot})))"
    )
}

/// The target rows with keys `$1` (text[]) written before the snapshot `$2` ([`written_before`]):
/// deleted and recorded in `pruned_keys` for run `$3`, table `$4` when `delete`, else only listed.
fn prunable_sql(table: &ResolvedTable, delete: bool) -> String {
    let key = quote_ident(&table.key().name);
    let target = table.plan.target.sql();
    let filter = format!(
        "t.{key} = ANY(CAST($1::text[] AS {}[])) AND {}",
        table.key().sql_type,
        written_before("t.xmin")
    );
    if !delete {
        return format!(
            "SELECT CAST(t.{key} AS text) AS key FROM {target} AS t WHERE {filter} ORDER BY t.{key}"
        );
    }
    format!(
        "WITH gone AS (DELETE FROM {target} AS t WHERE {filter} RETURNING t.{key} AS sort_key, CAST(t.{key} AS text) AS key), \
         logged AS (INSERT INTO cutover_migrator.pruned_keys (run_id, table_name, key) SELECT $3, $4, key FROM gone) \
         SELECT key FROM gone ORDER BY sort_key"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ResolvedColumn;

    const PLAN: &str = "[[table]]\nname = \"accounts\"\nsource = \"public.pgbench_accounts\"\ntarget = \"bank.accounts\"\nkey = \"account_id\"\ncolumns = [{ name = \"account_id\", from = \"aid\" }]\n";

    fn table() -> ResolvedTable {
        let plan = Plan::parse(PLAN, "test.toml").unwrap();
        let t = plan.tables[0].clone();
        ResolvedTable {
            columns: vec![ResolvedColumn {
                name: "account_id".into(),
                sql_type: "integer".into(),
                binary_portable: true,
                from: "aid".into(),
                default: None,
            }],
            plan: t,
        }
    }

    #[test]
    fn keys_are_ordered_by_the_column_not_by_their_text() {
        let sql = target_keys_sql(&table(), true);
        assert_eq!(
            sql,
            r#"SELECT CAST(t."account_id" AS text) AS key FROM "bank"."accounts" AS t WHERE t."account_id" > CAST($1::text AS integer) ORDER BY t."account_id" LIMIT $2"#
        );
        assert!(prunable_sql(&table(), true).ends_with("ORDER BY sort_key"));
    }

    #[test]
    fn only_rows_the_start_snapshot_sees_are_deleted() {
        let sql = prunable_sql(&table(), true);
        assert!(
            sql.contains(r#"t."account_id" = ANY(CAST($1::text[] AS integer[])) AND (t.xmin::text::bigint < 3 OR"#),
            "{sql}"
        );
        assert!(sql.contains("pg_visible_in_snapshot("), "{sql}");
        assert!(source_present_sql(&table()).contains("CAST((aid) AS integer) = ANY"));
    }

    #[test]
    fn refusals_say_why() {
        let plan = Plan::parse(PLAN, "p").unwrap();
        assert!(refusal(&plan, "the plan p", true, false).is_none());
        assert!(refusal(&plan, "the plan p", false, true).is_none());
        assert!(refusal(&plan, "the plan p", false, false)
            .unwrap()
            .contains("--no-target-writes"));
        let taken = Plan::parse(&format!("target_has_taken_over = true\n{PLAN}"), "p").unwrap();
        for (confirmed, dry_run) in [(true, false), (false, true)] {
            assert!(refusal(&taken, "the plan p", confirmed, dry_run)
                .unwrap()
                .contains("target_has_taken_over = true"));
        }
    }
}
