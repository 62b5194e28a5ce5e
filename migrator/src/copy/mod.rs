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
//!    `INSERT … SELECT …` the staged rows whose key the target lacks (`ON CONFLICT (key) DO UPDATE`
//!    for one dual-write inserted meanwhile; `RETURNING (xmax = 0)` tells inserted from updated),
//!    then `UPDATE … FROM` the staging table the target rows that differ
//!    (`WHERE (t.cols) IS DISTINCT FROM (s.cols)`, and with a version column only where the
//!    target's version is not newer).
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
//! Work units and workers: each table is cut into key ranges of `--range-rows` source rows
//! ([`ranges`]), stored in the target; `--jobs N` workers per process claim ranges (a child
//! table's ranges once its parents are done) and copy them as above, each with its own
//! connections; more processes join a run with `--join`. The run lock is taken exclusively to
//! begin or resume a run and then held shared by each process's first worker connection: one run
//! at a time, many workers per run. Every batch commit renews its range's lease in the same
//! transaction, so a range taken over after its holder's lease expired is never written twice.
//!
//! Modules: [`runs`] (bookkeeping tables, runs, checkpoints), [`ranges`] (work units, claims,
//! leases), [`pipeline`] (the readers),
//! [`format`] (COPY formats, the binary row counter), [`apply`] (writing a batch), [`sql`] (the
//! target-side SQL), [`diagnose`] (naming a rejected row), [`report`] (counts and the summary),
//! [`watch`] (the run's progress over every process, for the bars and the summary).
//! This file is the orchestration: the dry run, the run's start or join, the workers.

pub mod apply;
pub mod diagnose;
pub mod format;
pub mod pipeline;
pub mod prune;
pub mod ranges;
pub mod report;
pub mod runs;
pub mod sql;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::MultiProgress;
use sqlx::postgres::PgConnection;
use sqlx::Connection;
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
use ranges::{Claim, Lease};
pub use report::Counts;
use report::TableSummary;
pub use runs::{Checkpoint, BOOKKEEPING_SCHEMA};

/// How often a worker with nothing claimable looks again (other workers hold the remaining
/// ranges, or a table waits for its parents).
const CLAIM_POLL: Duration = Duration::from_millis(200);

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
    if args.dry_run {
        let mut sources = Sources::connect(source, source_url, target_url).await?;
        let mut recheck = db::connect("source", source_url).await?;
        return dry_run(
            &mut sources,
            &mut recheck,
            &mut target,
            &tables,
            batch_size,
            args.prune,
        )
        .await;
    }

    let names: Vec<String> = tables.iter().map(|t| t.name().to_string()).collect();
    let (run_id, lock) = match args.join {
        None => {
            let lock =
                AdvisoryLock::acquire(&mut target, COPY_LOCK_KEY, "copy", &database, args.no_wait)
                    .await?;
            runs::ensure_bookkeeping(&mut target, &database).await?;
            let run = runs::begin(&mut target, &plan.fingerprint, &names, args.restart).await?;
            let planned = async {
                plan_ranges(&mut source, &mut target, &tables, &run, args.range_rows).await?;
                // From here on the run lock is shared: other processes may join this run.
                lock.downgrade(&mut target).await?;
                anyhow::Ok(())
            }
            .await;
            if let Err(failure) = planned {
                let failure = runs::stop(&mut target, &lock, target_url, run.id, failure).await;
                db::close(target).await;
                return Err(failure);
            }
            (run.id, lock)
        }
        Some(_) if args.prune => {
            return Err(MigratorError::Usage(
                "--prune does not go with --join: the process that starts the run prunes once \
                 every range is done"
                    .into(),
            )
            .into());
        }
        Some(join) => {
            let wanted = (join > 0).then_some(join);
            let run_id =
                runs::find_for_join(&mut target, wanted, &plan.fingerprint, &names).await?;
            let lock = AdvisoryLock::acquire_shared(
                &mut target,
                COPY_LOCK_KEY,
                "copy",
                &database,
                args.no_wait,
            )
            .await?;
            eprintln!("copy: joining run {run_id}");
            (run_id, lock)
        }
    };
    let settings = Settings {
        run_id,
        batch_size,
        lease_secs: args.lease_secs,
        target_url,
    };
    let prune_mode = prune::Mode::Write { run_id };
    // The prune's snapshot is taken before any range is copied: see [`prune`].
    let pruning = match prune::Prune::start_if(args.prune, &mut target, prune_mode).await {
        Ok(pruning) => pruning,
        Err(failure) => {
            let failure = runs::stop(&mut target, &lock, target_url, run_id, failure).await;
            db::close(target).await;
            return Err(failure);
        }
    };
    let sources = Sources::connect(source, source_url, target_url).await?;
    let recheck = db::connect("source", source_url).await?;
    let mut workers = vec![Worker::new(target, sources, recheck, 0, &lock).await?];
    for n in 1..args.jobs as usize {
        let target = db::connect("target", target_url).await?;
        let source = db::connect("source", source_url).await?;
        let sources = Sources::connect(source, source_url, target_url).await?;
        let recheck = db::connect("source", source_url).await?;
        workers.push(Worker::new(target, sources, recheck, n, &lock).await?);
    }
    let result = async {
        let mut summaries = run_workers(&mut workers, &lock, &tables, &settings).await?;
        let first = &mut workers[0];
        let pruned = prune::run_if(
            pruning,
            (
                &mut first.sources.keys,
                &mut first.target,
                &tables[..],
                prune_mode,
            ),
            &mut summaries,
            batch_size,
        )
        .await;
        if let Err(failure) = pruned {
            return Err(runs::stop(&mut first.target, &lock, target_url, run_id, failure).await);
        }
        runs::complete(&mut first.target, run_id).await?;
        report::print_summary(&summaries, false);
        anyhow::Ok(0)
    }
    .await;
    // Closing the connections releases the lock and voids nothing committed, whatever happened.
    for worker in workers {
        db::close(worker.target).await;
    }
    result
}

/// `--dry-run`: every table as one range, counted and rolled back; no run, no lock, no checkpoints.
async fn dry_run(
    sources: &mut Sources,
    recheck: &mut PgConnection,
    target: &mut PgConnection,
    tables: &[ResolvedTable],
    batch_size: u64,
    prune: bool,
) -> anyhow::Result<u8> {
    let pruning = prune::Prune::start_if(prune, target, prune::Mode::DryRun).await?;
    let never = AtomicBool::new(false);
    let mut summaries = Vec::with_capacity(tables.len());
    for table in tables {
        let started = Instant::now();
        let total = source_rows(&mut sources.keys, table).await?;
        let mut progress = Progress::new(table.name(), total, 0);
        let mut staged = HashSet::new();
        let counts = copy_range(
            sources,
            recheck,
            target,
            &mut staged,
            table,
            Mode::DryRun,
            (None, None),
            batch_size,
            &never,
            &mut |rows| progress.advance(rows),
        )
        .await?;
        progress.finish();
        summaries.push(TableSummary {
            name: table.name().to_string(),
            counts,
            deleted: 0,
            elapsed: started.elapsed(),
            workers: 1,
            processes: 1,
        });
    }
    let deleting = (&mut sources.keys, target, tables, prune::Mode::DryRun);
    prune::run_if(pruning, deleting, &mut summaries, batch_size).await?;
    report::print_summary(&summaries, true);
    Ok(0)
}

/// Source rows of `table`; refuses rows with a NULL key, which would fall outside every range.
async fn source_rows(keys: &mut PgConnection, table: &ResolvedTable) -> anyhow::Result<u64> {
    let name = table.name();
    let (total, keyed): (i64, i64) = sqlx::query_as(&sql::source_row_counts(table))
        .fetch_one(&mut *keys)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "table {name}: counting source rows: {}",
                error::describe_db_error(&e)
            )
        })?;
    if keyed != total {
        return Err(MigratorError::DataRejected {
            table: name.to_string(),
            key: "NULL".into(),
            detail: format!(
                "the source key `{}` is NULL in {} row(s)",
                table.key().from,
                total - keyed
            ),
        }
        .into());
    }
    Ok(total.max(0) as u64)
}

/// Cuts every table of the run that has no ranges yet (a new run; a run of an older migrator,
/// after its table checkpoints) into ranges, one transaction per table.
async fn plan_ranges(
    keys: &mut PgConnection,
    target: &mut PgConnection,
    tables: &[ResolvedTable],
    run: &runs::Run,
    range_rows: u64,
) -> anyhow::Result<()> {
    let planned = ranges::planned_tables(target, run.id).await?;
    let dependencies = ranges::dependencies(target, tables).await?;
    for (order, table) in tables.iter().enumerate() {
        let name = table.name();
        let checkpoint = run.checkpoints.get(name).cloned().unwrap_or_default();
        if checkpoint.done {
            eprintln!("copy: {name}: already done in this run");
            continue;
        }
        if planned.iter().any(|p| p == name) {
            continue;
        }
        let total = source_rows(keys, table).await?;
        let cut =
            ranges::plan_table(keys, table, checkpoint.last_key.clone(), range_rows, total).await?;
        let mut tx = target.begin().await?;
        runs::start_table(&mut tx, run.id, name).await?;
        ranges::store(
            &mut tx,
            run.id,
            name,
            order as i32,
            dependencies
                .get(name)
                .map(Vec::as_slice)
                .unwrap_or_default(),
            &cut,
            range_rows,
        )
        .await
        .with_context(|| format!("table {name}: storing its ranges"))?;
        tx.commit().await?;
        if cut.bounds.len() > 1 {
            eprintln!(
                "copy: {name}: {} ranges of about {range_rows} rows",
                cut.bounds.len()
            );
        }
    }
    Ok(())
}

/// What every worker of the run shares.
struct Settings<'a> {
    run_id: i64,
    batch_size: u64,
    lease_secs: u32,
    target_url: &'a str,
}

/// One worker: a writing target connection (the first worker's also holds the run lock), its
/// readers, and the staging tables it created.
struct Worker {
    target: PgConnection,
    sources: Sources,
    /// Its own source connection: re-checks the rows each batch inserted.
    recheck: PgConnection,
    holder: String,
    staged: HashSet<String>,
    /// The table the readers are prepared for.
    prepared: Option<String>,
}

impl Worker {
    async fn new(
        mut target: PgConnection,
        sources: Sources,
        recheck: PgConnection,
        n: usize,
        lock: &AdvisoryLock,
    ) -> anyhow::Result<Worker> {
        // Batch commits need not wait for the WAL flush: a batch and its checkpoint commit
        // together, so a server crash can only lose the last few batches *with* their
        // checkpoints, and the run redoes them. The run's completion is committed synchronously.
        sqlx::query("SET synchronous_commit = off")
            .execute(&mut target)
            .await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut target)
            .await?;
        Ok(Worker {
            target,
            sources,
            recheck,
            // Unique among live workers: the server process of its writing connection.
            holder: format!(
                "pid {} worker {n} (server process {pid}, run lock on {})",
                std::process::id(),
                lock.pid()
            ),
            staged: HashSet::new(),
            prepared: None,
        })
    }
}

/// Runs the workers until every range of the run is done (or one fails: the others stop at their
/// next batch), showing the progress of the whole run meanwhile; the run's summary, over every
/// process that shared it. The caller prunes, completes the run and prints it.
async fn run_workers(
    workers: &mut [Worker],
    lock: &AdvisoryLock,
    tables: &[ResolvedTable],
    settings: &Settings<'_>,
) -> anyhow::Result<Vec<TableSummary>> {
    let run_id = settings.run_id;
    let at_start = runs::load_checkpoints(&mut workers[0].target, run_id).await?;
    for table in tables {
        if let Some(c) = at_start.get(table.name()).filter(|c| !c.done) {
            if let Some(key) = &c.last_key {
                eprintln!(
                    "copy: {}: resuming after its checkpoints (last key {key}, {} rows already done)",
                    table.name(),
                    c.counts.rows_read
                );
            }
        }
    }
    // Its own connection: the workers' are busy with their batches.
    let mut watcher = db::connect("target", settings.target_url).await?;
    let stop = AtomicBool::new(false);
    let ended = tokio::sync::Notify::new();
    let first_failure = Mutex::new(None::<usize>);
    let all_workers = async {
        let results =
            futures_util::future::join_all(workers.iter_mut().enumerate().map(|(n, worker)| {
                let (stop, first_failure) = (&stop, &first_failure);
                async move {
                    let result = work(worker, tables, settings, stop).await;
                    if result.is_err() {
                        stop.store(true, Ordering::SeqCst);
                        if let Ok(mut first) = first_failure.lock() {
                            first.get_or_insert(n);
                        }
                    }
                    result
                }
            }))
            .await;
        ended.notify_one();
        results
    };
    let (results, ()) = tokio::join!(
        all_workers,
        show_progress(&mut watcher, tables, run_id, &ended)
    );
    let failed = first_failure.lock().ok().and_then(|f| *f);
    if let Some(n) = failed {
        db::close(watcher).await;
        let mut results = results;
        let failure = match results.swap_remove(n) {
            Err(e) => e,
            Ok(()) => anyhow::anyhow!("copy: worker {n} stopped"),
        };
        // Another worker's connection lost: this process stops (exit 8); the run goes on with
        // other processes, or the next `copy` resumes it. The lock's own connection: runs::stop.
        if n > 0 && workers[n].target.ping().await.is_err() {
            return Err(MigratorError::LockLost {
                command: "copy",
                during: format!("run {run_id}, worker {n}"),
                cause: format!("the connection holding its range's lease: {}", error::render(&failure)),
                kept: format!("Batches committed before are kept with their checkpoints; the range is taken over by another worker after its lease of {}s, or redone by the next `migrator copy`.", settings.lease_secs),
            }
            .into());
        }
        return Err(runs::stop(
            &mut workers[0].target,
            lock,
            settings.target_url,
            run_id,
            failure,
        )
        .await);
    }
    let totals = runs::load_checkpoints(&mut watcher, run_id).await;
    let progress = watch::read(&mut watcher, run_id).await;
    db::close(watcher).await;
    let (totals, progress) = (totals?, watch::aggregate(&progress?));
    let summaries: Vec<TableSummary> = tables
        .iter()
        .map(|t| {
            let p = progress.get(t.name()).cloned().unwrap_or_default();
            TableSummary {
                name: t.name().to_string(),
                counts: totals.get(t.name()).map(|c| c.counts).unwrap_or_default(),
                deleted: 0,
                elapsed: p.elapsed.unwrap_or_default(),
                workers: p.workers_done,
                processes: p.processes_done,
            }
        })
        .collect();
    Ok(summaries)
}

/// The progress bars (or lines) of the run's tables, every worker of every process added up,
/// read from the target every [`watch::POLL`] until `ended`. Informational: a failed read only
/// ends the display.
async fn show_progress(
    conn: &mut PgConnection,
    tables: &[ResolvedTable],
    run_id: i64,
    ended: &tokio::sync::Notify,
) {
    let group = MultiProgress::new();
    let mut bars: HashMap<String, Progress> = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut reading = true;
    loop {
        if reading {
            match watch::read(conn, run_id).await {
                Ok(ranges) => {
                    let all = watch::aggregate(&ranges);
                    for table in tables {
                        let name = table.name();
                        let Some(p) = all.get(name) else { continue };
                        if finished.contains(name) || !p.started() {
                            continue;
                        }
                        let bar = bars.entry(name.to_string()).or_insert_with(|| {
                            Progress::in_group(name, p.rows_planned, p.rows_done, &group)
                        });
                        bar.set(p.rows_done, p.rows_planned, &p.workers_note());
                        if p.finished() {
                            if let Some(mut bar) = bars.remove(name) {
                                bar.finish();
                            }
                            finished.insert(name.to_string());
                        }
                    }
                }
                Err(e) => {
                    eprintln!(
                        "copy: reading the run's progress: {}; progress is no longer shown",
                        error::describe_db_error(&e)
                    );
                    reading = false;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(watch::POLL) => {}
            () = ended.notified() => break,
        }
    }
    for bar in bars.values_mut() {
        bar.finish();
    }
}

/// One worker's loop: claim a range, copy it, until the run has no open range.
async fn work(
    worker: &mut Worker,
    tables: &[ResolvedTable],
    settings: &Settings<'_>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let claim = ranges::claim(
            &mut worker.target,
            settings.run_id,
            &worker.holder,
            settings.lease_secs,
        )
        .await?;
        let lease = match claim {
            Claim::Finished => return Ok(()),
            Claim::Wait => {
                tokio::time::sleep(CLAIM_POLL).await;
                continue;
            }
            Claim::Range(lease) => lease,
        };
        let Some(table) = tables.iter().find(|t| t.name() == lease.table) else {
            anyhow::bail!(
                "run {}: range of table {} which is not in this copy's plan",
                settings.run_id,
                lease.table
            );
        };
        if let Some(previous) = &lease.taken_from {
            eprintln!(
                "copy: {}: range {}: taking over from {previous} (lease expired); continuing after its checkpoint",
                lease.table, lease.range_no
            );
        }
        copy_claimed(worker, table, &lease, settings, stop).await?;
    }
}

async fn copy_claimed(
    worker: &mut Worker,
    table: &ResolvedTable,
    lease: &Lease,
    settings: &Settings<'_>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let name = table.name();
    if worker.prepared.as_deref() != Some(name) {
        worker
            .sources
            .prepare_for(table)
            .await
            .with_context(|| format!("table {name}: preparing a source reader"))?;
        worker.prepared = Some(name.to_string());
    }
    let after = lease.last_key.clone().or_else(|| lease.after.clone());
    // The progress is read from the range checkpoints, over every process: see show_progress.
    let mut advance = |_rows: u64| {};
    copy_range(
        &mut worker.sources,
        &mut worker.recheck,
        &mut worker.target,
        &mut worker.staged,
        table,
        Mode::Write(lease),
        (after, lease.up_to.as_deref()),
        settings.batch_size,
        stop,
        &mut advance,
    )
    .await?;
    if stop.load(Ordering::SeqCst) {
        return Ok(()); // stopped before the range's end: it stays open
    }
    ranges::finish(&mut worker.target, lease)
        .await
        .with_context(|| format!("table {name}: recording range {} as done", lease.range_no))?;
    Ok(())
}

/// Copies the key range (after, up_to] of `table` batch by batch (stopping early, between
/// batches, when `stop` is set); returns what it did.
#[allow(clippy::too_many_arguments)]
async fn copy_range(
    sources: &mut Sources,
    recheck: &mut PgConnection,
    target: &mut PgConnection,
    staged: &mut HashSet<String>,
    table: &ResolvedTable,
    mode: Mode<'_>,
    (after, up_to): (Option<String>, Option<&str>),
    batch_size: u64,
    stop: &AtomicBool,
    advance: &mut dyn FnMut(u64),
) -> anyhow::Result<Counts> {
    let name = table.name();
    let format = CopyFormat::for_table(table);
    let staging = sql::staging_name(table);
    if !staged.contains(&staging) {
        sqlx::raw_sql(&sql::create_staging(table, &staging))
            .execute(&mut *target)
            .await
            .with_context(|| format!("table {name}: creating the staging table in the target"))?;
        staged.insert(staging.clone());
    }
    if matches!(mode, Mode::DryRun) {
        sources
            .prepare_for(table)
            .await
            .with_context(|| format!("table {name}: preparing a source reader"))?;
    }
    let (tx, rx) = mpsc::channel::<Batch>(pipeline::BATCHES_AHEAD);
    let producer = sources.read_range(table, format, after, up_to, batch_size, tx);
    let mut counts = Counts::default();
    let consumer = async {
        // Owned here: when the consumer stops, the producer's next send fails and it stops too.
        let mut rx = rx;
        while let Some(batch) = rx.recv().await {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let batch_counts =
                apply::apply_batch(recheck, target, table, format, &staging, &batch, mode)
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
            advance(batch.rows);
        }
        anyhow::Ok(())
    };
    // Not try_join: when reading fails, the batches read before it are still written (the
    // producer's end closes the channel), so the checkpoint stands right before the failure.
    let (produced, consumed) = tokio::join!(producer, consumer);
    consumed?;
    produced?;
    Ok(counts)
}
