//! `migrator copy`: legacy → target, per table in plan order, in keyset-paginated batches.
//!
//! Per batch of `--batch-size` source rows in key order:
//! 1. One source connection cuts the key space into windows (after, up_to] of `--batch-size` keys
//!    ("the key batch_size - 1 rows after the previous window": an index-only scan).
//! 2. Two readers each read a window from the source (the plan's projection) and from the target
//!    (same key window) at the same time, with `COPY (SELECT … ORDER BY key) TO STDOUT`: binary
//!    format when every column type's binary form is portable between databases, text otherwise.
//!    Windows are read ahead of the writer, so the servers work in parallel; batches are applied
//!    strictly in key order.
//! 3. Source and target bytes identical → the batch is unchanged; only the checkpoint is written.
//!    (Both sides produce the same types with the same session settings; any difference in
//!    representation only sends the batch down path 5, it never skips a change.)
//! 4. No target rows in the window → `COPY` straight into the target table (fresh data). Should
//!    that be rejected (e.g. the new system inserted one of the keys meanwhile), fall back to 5.
//! 5. Otherwise `COPY` into a temporary staging table, then
//!    `INSERT … SELECT … ON CONFLICT (key) DO UPDATE SET … WHERE (t.cols) IS DISTINCT FROM (excluded.cols)`
//!    for the rows that are missing or differ; `RETURNING (xmax = 0)` tells inserted from updated.
//!
//! Each batch commits together with its checkpoint row in `cutover_migrator.copy_checkpoints`.
//! Runs (`cutover_migrator.copy_runs`): a run is `running` until every selected table is done,
//! then `complete`; `failed` when stopped by an error, `lock_lost` when it lost its lock. A new
//! `copy` resumes the latest unfinished (`running`: killed; `failed`; `lock_lost`) run with the same
//! plan and table selection after each table's last checkpointed key; otherwise it starts a new run
//! from the beginning, so a finished run never stops a later one from picking up legacy changes.
//! `--restart` abandons an unfinished run.
//!
//! A session advisory lock ([`crate::lock`]) on the writing target connection — the one that
//! commits every batch with its checkpoint — keeps two copies out of one target database: the
//! second waits (or, with `--no-wait`, exits 6). Losing that connection loses the lock and makes
//! the next commit fail, so a copy whose lock is gone stops (exit 8) before writing anything more.

//!
//! `--prune` ([`prune`]) then deletes target rows whose key left the source, when it is safe.
//!
//! Modules: [`runs`] (bookkeeping tables, runs, checkpoints), [`pipeline`] (the readers),
//! [`format`] (COPY formats, the binary row counter), [`apply`] (writing a batch), [`sql`] (the
//! target-side SQL), [`diagnose`] (naming a rejected row), [`report`] (counts and the summary).
//! This file is the orchestration: tables in plan order, one batch after another.

pub mod apply;
pub mod diagnose;
pub mod format;
pub mod pipeline;
pub mod prune;
pub mod report;
pub mod runs;
pub mod sql;

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use sqlx::postgres::PgConnection;
use tokio::sync::mpsc;

use crate::cli::CopyArgs;
use crate::db;
use crate::error::{self, MigratorError};
use crate::lock::AdvisoryLock;
pub use crate::lock::COPY_LOCK_KEY;
use crate::plan::{self, Plan, ResolvedTable};
use crate::progress::Progress;
use crate::schema;
use crate::takeover;
use apply::Mode;
pub use format::CopyFormat;
pub use pipeline::SOURCE_READERS;
use pipeline::{Batch, Sources};
pub use report::Counts;
use report::TableSummary;
pub use runs::{Checkpoint, BOOKKEEPING_SCHEMA};

pub async fn run(args: CopyArgs) -> anyhow::Result<u8> {
    let selection = &args.selection;
    let plan = Plan::load(selection.plan.plan.as_deref())?;
    let selected = plan.select(&selection.tables.tables)?;
    prune::check_allowed(&args, &plan)?;
    let target_url = &selection.target.target_url;
    let source_url = &selection.source.source_url;
    let mut target = db::connect("target", target_url).await?;
    let mut source = db::connect("source", source_url).await?;
    let database = db::database_name(target_url).unwrap_or_else(|| "the target database".into());
    takeover::check_not_swapped(&mut source, &mut target, &plan, &database).await?;
    schema::check_for_plan(&mut target, &plan).await?;
    takeover::check_copy_allowed(&mut target, args.after_takeover, &database).await?;
    if args.prune {
        // The recorded takeover means the same as the plan's `target_has_taken_over`.
        takeover::check_prune_allowed(&mut target, &database).await?;
    }
    let tables = plan::resolve(&mut source, &mut target, &selected).await?;
    let batch_size = u64::from(args.batch_size);
    let mut sources = Sources::connect(source, source_url, target_url).await?;
    // The writer's own source connection: it re-checks the rows each batch inserted.
    let mut recheck = db::connect("source", source_url).await?;

    if args.dry_run {
        let prune = prune::Prune::start_if(args.prune, &mut target, Mode::DryRun).await?;
        let mut summaries = copy_tables(
            &mut sources,
            &mut recheck,
            &mut target,
            &tables,
            Mode::DryRun,
            HashMap::new(),
            batch_size,
        )
        .await?;
        let deleting = (&mut sources.keys, &mut target, &tables[..], Mode::DryRun);
        prune::run_if(prune, deleting, &mut summaries, batch_size).await?;
        report::print_summary(&summaries, true);
        return Ok(0);
    }

    let lock =
        AdvisoryLock::acquire(&mut target, COPY_LOCK_KEY, "copy", &database, args.no_wait).await?;
    let result = copy_locked(
        &mut sources,
        &mut recheck,
        &mut target,
        &lock,
        Destination {
            url: target_url,
            database: &database,
        },
        &plan,
        &tables,
        batch_size,
        args.restart,
        args.prune,
    )
    .await;
    // Closing the connection releases the lock, whatever happened.
    db::close(target).await;
    result
}

/// The target database of a run, for messages and for recording a run whose connection is lost.
struct Destination<'a> {
    url: &'a str,
    database: &'a str,
}

/// The writing copy, under the lock: a run begun or resumed, its tables copied, the run completed
/// (or recorded as failed / lock_lost).
#[allow(clippy::too_many_arguments)]
async fn copy_locked(
    sources: &mut Sources,
    recheck: &mut PgConnection,
    target: &mut PgConnection,
    lock: &AdvisoryLock,
    destination: Destination<'_>,
    plan: &Plan,
    tables: &[ResolvedTable],
    batch_size: u64,
    restart: bool,
    prune: bool,
) -> anyhow::Result<u8> {
    runs::ensure_bookkeeping(target, destination.database).await?;
    // Batch commits need not wait for the WAL flush: a batch and its checkpoint commit together,
    // so a server crash can only lose the last few batches *with* their checkpoints, and the next
    // run redoes them. The run's completion ([`runs::complete`]) is committed synchronously.
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut *target)
        .await?;
    let names: Vec<String> = tables.iter().map(|t| t.name().to_string()).collect();
    let run = runs::begin(target, &plan.fingerprint, &names, restart).await?;
    let mode = Mode::Write { run_id: run.id };
    let copied = async {
        // The prune's snapshot is taken before any table is copied: see [`prune`].
        let prune = prune::Prune::start_if(prune, target, mode).await?;
        let mut summaries = copy_tables(
            sources,
            recheck,
            target,
            tables,
            mode,
            run.checkpoints,
            batch_size,
        )
        .await?;
        prune::run_if(
            prune,
            (&mut sources.keys, target, tables, mode),
            &mut summaries,
            batch_size,
        )
        .await?;
        anyhow::Ok(summaries)
    }
    .await;
    let summaries = match copied {
        Ok(summaries) => summaries,
        Err(failure) => {
            return Err(runs::stop(target, lock, destination.url, run.id, failure).await)
        }
    };
    runs::complete(target, run.id).await?;
    report::print_summary(&summaries, false);
    Ok(0)
}

/// The tables in plan order, each resumed after its checkpoint (none in a dry run).
async fn copy_tables(
    sources: &mut Sources,
    recheck: &mut PgConnection,
    target: &mut PgConnection,
    tables: &[ResolvedTable],
    mode: Mode,
    mut checkpoints: HashMap<String, Checkpoint>,
    batch_size: u64,
) -> anyhow::Result<Vec<TableSummary>> {
    let mut summaries = Vec::with_capacity(tables.len());
    for table in tables {
        let checkpoint = checkpoints.remove(table.name()).unwrap_or_default();
        if let Mode::Write { run_id } = mode {
            if !checkpoint.done {
                runs::start_table(target, run_id, table.name()).await?;
            }
        }
        summaries.push(copy_table(sources, recheck, target, table, mode, checkpoint, batch_size).await?);
    }
    Ok(summaries)
}

async fn copy_table(
    sources: &mut Sources,
    recheck: &mut PgConnection,
    target: &mut PgConnection,
    table: &ResolvedTable,
    mode: Mode,
    checkpoint: Checkpoint,
    batch_size: u64,
) -> anyhow::Result<TableSummary> {
    let started = Instant::now();
    let name = table.name().to_string();
    if checkpoint.done {
        eprintln!("copy: {name}: already done in this run");
        return Ok(TableSummary {
            name,
            counts: checkpoint.counts,
            deleted: 0,
            elapsed: started.elapsed(),
        });
    }
    // Rows with a NULL key would fall outside every key window: refuse them instead of skipping.
    let (total, keyed): (i64, i64) = sqlx::query_as(&sql::source_row_counts(table))
        .fetch_one(&mut sources.keys)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "table {name}: counting source rows: {}",
                error::describe_db_error(&e)
            )
        })?;
    if keyed != total {
        return Err(MigratorError::DataRejected {
            table: name,
            key: "NULL".into(),
            detail: format!(
                "the source key `{}` is NULL in {} row(s)",
                table.key().from,
                total - keyed
            ),
        }
        .into());
    }
    let format = CopyFormat::for_table(table);
    sources
        .prepare_for(table)
        .await
        .with_context(|| format!("table {name}: preparing a source reader"))?;
    if let Some(key) = &checkpoint.last_key {
        eprintln!(
            "copy: {name}: resuming after key {key} ({} rows already done)",
            checkpoint.counts.rows_read
        );
    }
    let mut progress = Progress::new(&name, total.max(0) as u64, checkpoint.counts.rows_read);
    let staging = sql::staging_name(table);
    sqlx::raw_sql(&sql::create_staging(table, &staging))
        .execute(&mut *target)
        .await
        .with_context(|| format!("table {name}: creating the staging table in the target"))?;

    let (tx, rx) = mpsc::channel::<Batch>(1);
    let producer = sources.read_table(table, format, checkpoint.last_key.clone(), batch_size, tx);
    let mut counts = checkpoint.counts;
    let consumer = async {
        // Owned here: when the consumer stops, the producer's next send fails and it stops too.
        let mut rx = rx;
        while let Some(batch) = rx.recv().await {
            let batch_counts = apply::apply_batch(recheck, target, table, format, &staging, &batch, mode)
                .await
                .map_err(|e| {
                    // A rejected row names table and key itself; anything else gets both here.
                    if e.is::<MigratorError>() {
                        e
                    } else {
                        e.context(format!(
                            "table {}: writing the batch {} to the target",
                            table.name(),
                            batch.range()
                        ))
                    }
                })?;
            counts.add(batch_counts);
            progress.advance(batch.rows);
        }
        anyhow::Ok(())
    };
    // Not try_join: when reading fails, the batches read before it are still written (the
    // producer's end closes the channel), so the checkpoint stands right before the failure.
    let (produced, consumed) = tokio::join!(producer, consumer);
    consumed?;
    produced?;
    progress.finish();
    if let Mode::Write { run_id } = mode {
        runs::finish_table(target, run_id, &name)
            .await
            .with_context(|| format!("table {name}: recording the table as done"))?;
    }
    sqlx::raw_sql(&sql::drop_staging(&staging))
        .execute(&mut *target)
        .await
        .with_context(|| format!("table {name}: dropping the staging table"))?;
    Ok(TableSummary {
        name,
        counts,
        deleted: 0,
        elapsed: started.elapsed(),
    })
}
