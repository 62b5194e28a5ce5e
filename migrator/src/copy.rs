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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};
use tokio::sync::mpsc;

use crate::cli::CopyArgs;
use crate::db::{self, quote_ident, quote_literal};
use crate::error::{self, MigratorError};
pub use crate::lock::COPY_LOCK_KEY;
use crate::lock::{self, AdvisoryLock};
use crate::plan::{self, Plan, ResolvedTable, Source, Window};
use crate::progress::Progress;
use crate::schema;

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
ALTER TABLE cutover_migrator.copy_runs DROP CONSTRAINT IF EXISTS copy_runs_status_check;
ALTER TABLE cutover_migrator.copy_runs ADD CONSTRAINT copy_runs_status_check
    CHECK (status IN ('running', 'complete', 'abandoned', 'failed', 'lock_lost'));
";

/// Whether the bookkeeping tables exist with the current run statuses (then no DDL runs, so a
/// target user without CREATE on the database can copy once they exist).
const BOOKKEEPING_CURRENT: &str =
    "SELECT to_regclass('cutover_migrator.copy_checkpoints') IS NOT NULL \
    AND EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'copy_runs_status_check' \
                AND conrelid = to_regclass('cutover_migrator.copy_runs') \
                AND pg_get_constraintdef(oid) LIKE '%lock_lost%')";

/// Run statuses a new copy resumes (same plan and table selection).
const UNFINISHED: &str = "('running', 'failed', 'lock_lost')";

/// Row counts of a table (or batch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub rows_read: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.rows_read += other.rows_read;
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
    }
}

/// The checkpoint of one table in one run.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    pub last_key: Option<String>,
    pub counts: Counts,
    pub batches: u64,
    pub done: bool,
}

struct TableSummary {
    name: String,
    counts: Counts,
    elapsed: Duration,
}

pub async fn run(args: CopyArgs) -> anyhow::Result<u8> {
    let selection = &args.selection;
    let plan = Plan::load(selection.plan.plan.as_deref())?;
    let selected = plan.select(&selection.tables.tables)?;
    let target_url = &selection.target.target_url;
    let source_url = &selection.source.source_url;
    let mut target = db::connect("target", target_url).await?;
    let mut source = db::connect("source", source_url).await?;
    schema::check_migrated(&mut target).await?;
    let tables = plan::resolve(&mut source, &mut target, &selected).await?;
    let batch_size = u64::from(args.batch_size);
    let mut readers = Vec::with_capacity(SOURCE_READERS);
    for _ in 0..SOURCE_READERS {
        readers.push(Reader::connect(source_url, target_url).await?);
    }
    let mut sources = Sources {
        keys: source,
        readers,
    };

    if args.dry_run {
        let mut summaries = Vec::new();
        for table in &tables {
            summaries.push(
                copy_table(
                    &mut sources,
                    &mut target,
                    table,
                    None,
                    Checkpoint::default(),
                    batch_size,
                    true,
                )
                .await?,
            );
        }
        print_summary(&summaries, true);
        return Ok(0);
    }

    let database = db::database_name(target_url).unwrap_or_else(|| "the target database".into());
    let lock =
        AdvisoryLock::acquire(&mut target, COPY_LOCK_KEY, "copy", &database, args.no_wait).await?;
    let result = copy_locked(
        &mut sources,
        &mut target,
        &lock,
        target_url,
        &database,
        &plan,
        &tables,
        batch_size,
        args.restart,
    )
    .await;
    // Closing the connection releases the lock, whatever happened.
    db::close(target).await;
    result
}

/// Creates (or brings up to date) the bookkeeping schema, saying so when the target user may not.
async fn ensure_bookkeeping(target: &mut PgConnection, database: &str) -> anyhow::Result<()> {
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
async fn stop_run(
    target: &mut PgConnection,
    lock: &AdvisoryLock,
    target_url: &str,
    run_id: i64,
    failure: anyhow::Error,
) -> anyhow::Error {
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

#[allow(clippy::too_many_arguments)]
async fn copy_locked(
    sources: &mut Sources,
    target: &mut PgConnection,
    lock: &AdvisoryLock,
    target_url: &str,
    database: &str,
    plan: &Plan,
    tables: &[ResolvedTable],
    batch_size: u64,
    restart: bool,
) -> anyhow::Result<u8> {
    ensure_bookkeeping(target, database).await?;
    // Batch commits need not wait for the WAL flush: a batch and its checkpoint commit together,
    // so a server crash can only lose the last few batches *with* their checkpoints, and the next
    // run redoes them. The run's completion below is committed synchronously.
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut *target)
        .await?;
    let names: Vec<String> = tables.iter().map(|t| t.name().to_string()).collect();
    if restart {
        let abandoned = sqlx::query(&format!(
            "UPDATE cutover_migrator.copy_runs SET status = 'abandoned', finished_at = now() \
             WHERE status IN {UNFINISHED} AND plan_fingerprint = $1 AND tables = $2"
        ))
        .bind(&plan.fingerprint)
        .bind(&names)
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
    .bind(&plan.fingerprint)
    .bind(&names)
    .fetch_optional(&mut *target)
    .await?;
    let mut checkpoints: HashMap<String, Checkpoint> = HashMap::new();
    let run_id = match interrupted {
        Some((run_id, status)) => {
            checkpoints = load_checkpoints(target, run_id).await?;
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
            run_id
        }
        None => {
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
            .bind(&plan.fingerprint)
            .bind(&names)
            .fetch_one(&mut *target)
            .await?;
            run_id
        }
    };
    let copied = async {
        let mut summaries = Vec::new();
        for table in tables {
            let checkpoint = checkpoints.remove(table.name()).unwrap_or_default();
            if !checkpoint.done {
                sqlx::query(
                    "INSERT INTO cutover_migrator.copy_checkpoints (run_id, table_name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(run_id)
                .bind(table.name())
                .execute(&mut *target)
                .await?;
            }
            summaries.push(
                copy_table(
                    sources,
                    target,
                    table,
                    Some(run_id),
                    checkpoint,
                    batch_size,
                    false,
                )
                .await?,
            );
        }
        anyhow::Ok(summaries)
    }
    .await;
    let summaries = match copied {
        Ok(summaries) => summaries,
        Err(failure) => return Err(stop_run(target, lock, target_url, run_id, failure).await),
    };
    sqlx::query("SET synchronous_commit = on")
        .execute(&mut *target)
        .await?;
    sqlx::query("UPDATE cutover_migrator.copy_runs SET status = 'complete', finished_at = now() WHERE run_id = $1")
        .bind(run_id)
        .execute(&mut *target)
        .await?;
    print_summary(&summaries, false);
    Ok(0)
}

/// Checkpoints of one run, by table name.
pub async fn load_checkpoints(
    target: &mut PgConnection,
    run_id: i64,
) -> sqlx::Result<HashMap<String, Checkpoint>> {
    let rows = sqlx::query(
        "SELECT table_name, last_key, rows_read, inserted, updated, unchanged, batches, done \
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
                done: r.try_get("done")?,
            },
        );
    }
    Ok(out)
}

/// The reading side of a copy: `keys` (source) cuts the key windows, `readers` read them.
struct Sources {
    keys: PgConnection,
    readers: Vec<Reader>,
}

/// A key window is a narrow key range read in key order, which an index scan on the key returns
/// in order. On row estimates alone the planner often prefers a sequential or bitmap scan plus
/// a sort, which reads every page of the table for every window when the table is not clustered
/// by key. Only the window-reading sessions get these settings.
const WINDOW_PLANNER_SETTINGS: &str = "SET enable_seqscan = off; SET enable_bitmapscan = off";

/// Reads one key window from the source and from the target at the same time.
struct Reader {
    source: PgConnection,
    target: PgConnection,
}

impl Reader {
    async fn connect(source_url: &str, target_url: &str) -> anyhow::Result<Reader> {
        let mut reader = Reader {
            source: db::connect("source", source_url).await?,
            target: db::connect("target", target_url).await?,
        };
        sqlx::raw_sql(WINDOW_PLANNER_SETTINGS)
            .execute(&mut reader.target)
            .await?;
        Ok(reader)
    }

    /// Planner settings of the source session for `table`: a plain source table is read like the
    /// target; a source query keeps the default planner (its joins may need other plans).
    async fn prepare_for(&mut self, table: &ResolvedTable) -> sqlx::Result<()> {
        let settings = match table.plan.source {
            Source::Table(_) => WINDOW_PLANNER_SETTINGS,
            Source::Query(_) => "RESET enable_seqscan; RESET enable_bitmapscan",
        };
        sqlx::raw_sql(settings).execute(&mut self.source).await?;
        Ok(())
    }
}

/// What the target holds in a batch's key window, compared with the source rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// Byte-identical: nothing to write.
    Identical,
    /// No target rows in the window.
    Empty,
    Differs,
}

/// One batch: the source rows of a key window (COPY data, key order) and how the target compares.
struct Batch {
    data: Vec<u8>,
    rows: u64,
    /// Key window: (after, last_key].
    after: Option<String>,
    last_key: String,
    existing: Existing,
}

impl Batch {
    /// The key window, for messages.
    fn range(&self) -> String {
        format!(
            "after {} up to {}",
            self.after.as_deref().unwrap_or("the first key"),
            self.last_key
        )
    }
}

async fn copy_table(
    sources: &mut Sources,
    target: &mut PgConnection,
    table: &ResolvedTable,
    run_id: Option<i64>,
    checkpoint: Checkpoint,
    batch_size: u64,
    dry_run: bool,
) -> anyhow::Result<TableSummary> {
    let started = Instant::now();
    let name = table.name().to_string();
    if checkpoint.done {
        eprintln!("copy: {name}: already done in this run");
        return Ok(TableSummary {
            name,
            counts: checkpoint.counts,
            elapsed: started.elapsed(),
        });
    }
    // Rows with a NULL key would fall outside every key window: refuse them instead of skipping.
    let (total, keyed): (i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*), count({}) FROM {}",
        table.source_key_sql(),
        table.source_from_sql()
    ))
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
    for reader in &mut sources.readers {
        reader
            .prepare_for(table)
            .await
            .with_context(|| format!("table {name}: preparing a source reader"))?;
    }
    if let Some(key) = &checkpoint.last_key {
        eprintln!(
            "copy: {name}: resuming after key {key} ({} rows already done)",
            checkpoint.counts.rows_read
        );
    }
    let mut progress = Progress::new(&name, total.max(0) as u64, checkpoint.counts.rows_read);
    let staging = format!(
        "cutover_staging_{}",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS pg_temp.{s}; CREATE TEMP TABLE {s} ON COMMIT DELETE ROWS AS SELECT {cols} FROM {t} WITH NO DATA",
        s = quote_ident(&staging),
        cols = table.target_column_list(),
        t = table.plan.target.sql()
    ))
    .execute(&mut *target)
    .await
    .with_context(|| format!("table {name}: creating the staging table in the target"))?;

    let (tx, rx) = mpsc::channel::<Batch>(1);
    let producer = produce(
        &mut sources.keys,
        std::mem::take(&mut sources.readers),
        table,
        format,
        checkpoint.last_key.clone(),
        batch_size,
        tx,
    );
    let mut counts = checkpoint.counts;
    let consumer = async {
        // Owned here: when the consumer stops, the producer's next send fails and it stops too.
        let mut rx = rx;
        while let Some(batch) = rx.recv().await {
            let batch_counts =
                apply_batch(target, table, format, &staging, &batch, run_id, dry_run)
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
    sources.readers = produced?;
    progress.finish();
    if let Some(run_id) = run_id {
        sqlx::query("UPDATE cutover_migrator.copy_checkpoints SET done = true, updated_at = now() WHERE run_id = $1 AND table_name = $2")
            .bind(run_id)
            .bind(&name)
            .execute(&mut *target)
            .await
            .with_context(|| format!("table {name}: recording the table as done"))?;
    }
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS pg_temp.{}",
        quote_ident(&staging)
    ))
    .execute(&mut *target)
    .await
    .with_context(|| format!("table {name}: dropping the staging table"))?;
    Ok(TableSummary {
        name,
        counts,
        elapsed: started.elapsed(),
    })
}

async fn copy_out(conn: &mut PgConnection, sql: &str) -> sqlx::Result<Vec<u8>> {
    let mut stream = conn.copy_out_raw(sql).await?;
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        data.extend_from_slice(&chunk?);
    }
    Ok(data)
}

async fn copy_in(conn: &mut PgConnection, sql: &str, data: &[u8]) -> sqlx::Result<u64> {
    let mut copy = conn.copy_in_raw(sql).await?;
    copy.send(data).await?;
    copy.finish().await
}

/// Source connections reading batches concurrently (plus one that cuts the windows).
pub const SOURCE_READERS: usize = 2;

/// The COPY format of a table's data: binary when every column's binary form is portable between
/// databases (see [`crate::plan::ResolvedColumn::binary_portable`]), text otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Binary,
}

impl CopyFormat {
    pub fn for_table(table: &ResolvedTable) -> CopyFormat {
        if table.columns.iter().all(|c| c.binary_portable) {
            CopyFormat::Binary
        } else {
            CopyFormat::Text
        }
    }

    fn option(self) -> &'static str {
        match self {
            CopyFormat::Text => "",
            CopyFormat::Binary => " (FORMAT binary)",
        }
    }

    /// Number of rows in COPY output of this format.
    fn count_rows(self, data: &[u8]) -> anyhow::Result<u64> {
        match self {
            // Text COPY escapes newlines inside values, so every raw newline ends a row.
            CopyFormat::Text => Ok(data.iter().filter(|b| **b == b'\n').count() as u64),
            CopyFormat::Binary => {
                binary_row_count(data).ok_or_else(|| anyhow::anyhow!("malformed binary COPY data"))
            }
        }
    }
}

/// Walks binary COPY data (header, tuples, trailer) and counts the tuples.
fn binary_row_count(data: &[u8]) -> Option<u64> {
    const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
    let be32 = |at: usize| -> Option<i32> {
        Some(i32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
    };
    if data.get(..SIGNATURE.len())? != SIGNATURE {
        return None;
    }
    let extension = usize::try_from(be32(15)?).ok()?;
    let mut pos = 19 + extension;
    let mut rows = 0u64;
    loop {
        let fields = i16::from_be_bytes(data.get(pos..pos + 2)?.try_into().ok()?);
        pos += 2;
        if fields == -1 {
            return (pos == data.len()).then_some(rows);
        }
        for _ in 0..fields {
            let len = be32(pos)?;
            pos += 4;
            if len > 0 {
                pos += usize::try_from(len).ok()?;
            }
        }
        rows += 1;
    }
}

/// Reads the source in key order, batch after batch, into `tx`. One connection (`keys`) cuts
/// the key space into windows of `batch_size` rows (index-only scans when the key is an indexed
/// column); the `readers` read the windows concurrently; batches reach `tx` in key order.
/// Returns the readers for reuse.
async fn produce(
    keys: &mut PgConnection,
    mut readers: Vec<Reader>,
    table: &ResolvedTable,
    format: CopyFormat,
    mut after: Option<String>,
    batch_size: u64,
    tx: mpsc::Sender<Batch>,
) -> anyhow::Result<Vec<Reader>> {
    let mut in_flight = FuturesOrdered::new();
    let mut cut_all = false;
    let key_error = |e: sqlx::Error| {
        anyhow::anyhow!(
            "table {}: reading the source keys: {}",
            table.name(),
            error::describe_db_error(&e)
        )
    };
    loop {
        while !cut_all && !readers.is_empty() {
            let mut end: Option<String> =
                sqlx::query_scalar(&table.source_key_at_sql(after.as_deref(), batch_size - 1))
                    .fetch_optional(&mut *keys)
                    .await
                    .map_err(key_error)?
                    .flatten();
            if end.is_none() {
                // Fewer than batch_size rows left: the last window ends at the greatest key.
                cut_all = true;
                end = sqlx::query_scalar(&table.source_last_key_sql(after.as_deref()))
                    .fetch_optional(&mut *keys)
                    .await
                    .map_err(key_error)?
                    .flatten();
            }
            let Some(end) = end else { break };
            let Some(reader) = readers.pop() else { break };
            in_flight.push_back(read_window(
                reader,
                table,
                format,
                after.replace(end.clone()),
                end,
            ));
        }
        let Some((reader, batch)) = in_flight.next().await else {
            return Ok(readers);
        };
        readers.push(reader);
        if let Some(batch) = batch? {
            if tx.send(batch).await.is_err() {
                return Ok(readers); // the consumer stopped (its error is reported)
            }
        }
    }
}

/// Reads the key window (after, up_to] from the source and the target concurrently.
async fn read_window(
    mut reader: Reader,
    table: &ResolvedTable,
    format: CopyFormat,
    after: Option<String>,
    up_to: String,
) -> (Reader, anyhow::Result<Option<Batch>>) {
    let window = Window {
        after: after.as_deref(),
        up_to: Some(&up_to),
        ordered: true,
        limit: None,
    };
    let source_sql = format!(
        "COPY ({}) TO STDOUT{}",
        table.source_select_sql(&window, None),
        format.option()
    );
    let target_sql = format!(
        "COPY ({}) TO STDOUT{}",
        table.target_select_sql(&window, None),
        format.option()
    );
    let (source, target) = tokio::join!(
        copy_out(&mut reader.source, &source_sql),
        copy_out(&mut reader.target, &target_sql)
    );
    // A value that does not convert to its target column's type: name the column and the row.
    if let Err(e) = &source {
        if error::sqlstate(e).is_some_and(|code| code.starts_with("22")) {
            if let Some(found) = locate_conversion_failure(&mut reader.source, table, &window).await
            {
                return (reader, Err(found.into()));
            }
        }
    }
    let reading = |side: &'static str| {
        move |e: sqlx::Error| {
            anyhow::anyhow!(
                "table {}: reading the {side}: {}",
                table.name(),
                error::describe_db_error(&e)
            )
        }
    };
    let result = (|| {
        let data = source.map_err(reading("source"))?;
        let existing = target.map_err(reading("target"))?;
        let rows = format.count_rows(&data)?;
        if rows == 0 {
            return Ok(None);
        }
        let existing = if existing == data {
            Existing::Identical
        } else if format.count_rows(&existing)? == 0 {
            Existing::Empty
        } else {
            Existing::Differs
        };
        // Identical rows are not needed any more.
        let data = if existing == Existing::Identical {
            Vec::new()
        } else {
            data
        };
        Ok(Some(Batch {
            data,
            rows,
            after,
            last_key: up_to,
            existing,
        }))
    })();
    (reader, result)
}

/// After reading the source window failed with a data exception: finds the first
/// column (plan order, key first) whose cast to the target type fails in the window, and the first
/// key in the window whose row fails, by bisecting on key prefixes. `None` when no single column
/// fails (the error then is reported as it came).
async fn locate_conversion_failure(
    conn: &mut PgConnection,
    table: &ResolvedTable,
    window: &Window<'_>,
) -> Option<MigratorError> {
    let fails = async |conn: &mut PgConnection, column: &plan::ResolvedColumn, w: &Window<'_>| {
        match sqlx::query(&table.source_column_check_sql(column, w))
            .fetch_one(&mut *conn)
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if error::is_statement_error(&e) => Ok(Some(e)),
            Err(e) => Err(e),
        }
    };
    for column in &table.columns {
        let Ok(Some(mut err)) = fails(conn, column, window).await else {
            continue;
        };
        let keys: Vec<String> = sqlx::query_scalar(&table.source_keys_sql(window))
            .fetch_all(&mut *conn)
            .await
            .ok()?;
        // Smallest prefix (after, keys[i]] that fails: keys[i] is the first failing row.
        let (mut lo, mut hi) = (0usize, keys.len().checked_sub(1)?);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let prefix = Window {
                up_to: Some(&keys[mid]),
                ..window.clone()
            };
            match fails(conn, column, &prefix).await.ok()? {
                Some(e) => {
                    err = e;
                    hi = mid;
                }
                None => lo = mid + 1,
            }
        }
        return Some(MigratorError::ConversionFailed {
            table: table.name().to_string(),
            key: keys[lo].clone(),
            column: column.name.clone(),
            detail: format!(
                "the source expression `{}` does not convert to the target type {}: {}",
                column.from,
                column.sql_type,
                error::describe_db_error(&err)
            ),
        });
    }
    None
}

async fn write_checkpoint(
    conn: &mut PgConnection,
    run_id: i64,
    table: &str,
    last_key: &str,
    counts: Counts,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE cutover_migrator.copy_checkpoints SET last_key = $3, rows_read = rows_read + $4, inserted = inserted + $5, \
                updated = updated + $6, unchanged = unchanged + $7, batches = batches + 1, updated_at = now() \
         WHERE run_id = $1 AND table_name = $2",
    )
    .bind(run_id)
    .bind(table)
    .bind(last_key)
    .bind(counts.rows_read as i64)
    .bind(counts.inserted as i64)
    .bind(counts.updated as i64)
    .bind(counts.unchanged as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn apply_batch(
    target: &mut PgConnection,
    table: &ResolvedTable,
    format: CopyFormat,
    staging: &str,
    batch: &Batch,
    run_id: Option<i64>,
    dry_run: bool,
) -> anyhow::Result<Counts> {
    let name = table.name();
    if batch.existing == Existing::Identical {
        let counts = Counts {
            rows_read: batch.rows,
            unchanged: batch.rows,
            ..Counts::default()
        };
        if let Some(run_id) = run_id {
            write_checkpoint(target, run_id, name, &batch.last_key, counts).await?;
        }
        return Ok(counts);
    }

    let columns = table.target_column_list();
    if batch.existing == Existing::Empty {
        let counts = Counts {
            rows_read: batch.rows,
            inserted: batch.rows,
            ..Counts::default()
        };
        let Some(run_id) = run_id else {
            return Ok(counts);
        }; // dry run: all of them would be inserted
        let mut tx = target.begin().await?;
        let direct = copy_in(
            &mut tx,
            &format!(
                "COPY {} ({columns}) FROM STDIN{}",
                table.plan.target.sql(),
                format.option()
            ),
            &batch.data,
        )
        .await;
        match direct {
            Ok(_) => {
                write_checkpoint(&mut tx, run_id, name, &batch.last_key, counts).await?;
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
        &format!(
            "COPY pg_temp.{} ({columns}) FROM STDIN{}",
            quote_ident(staging),
            format.option()
        ),
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
    if dry_run {
        let row = sqlx::query(&dry_run_sql(table, staging))
            .fetch_one(&mut *tx)
            .await?;
        let inserted = row.try_get::<i64, _>(0)? as u64;
        let updated = row.try_get::<i64, _>(1)? as u64;
        tx.rollback().await?;
        return Ok(Counts {
            rows_read: batch.rows,
            inserted,
            updated,
            unchanged: batch.rows - inserted - updated,
        });
    }
    sqlx::query("SAVEPOINT cutover_batch")
        .execute(&mut *tx)
        .await?;
    let upserted = sqlx::query(&upsert_sql(table, staging, None))
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
    let inserted = row.try_get::<i64, _>(0)? as u64;
    let updated = row.try_get::<i64, _>(1)? as u64;
    let counts = Counts {
        rows_read: batch.rows,
        inserted,
        updated,
        unchanged: batch.rows - inserted - updated,
    };
    if let Some(run_id) = run_id {
        write_checkpoint(&mut tx, run_id, name, &batch.last_key, counts).await?;
    }
    tx.commit().await?;
    Ok(counts)
}

fn non_key_columns(table: &ResolvedTable) -> Vec<String> {
    table.columns[1..]
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect()
}

/// `(cur.a, cur.b) IS DISTINCT FROM (s.a, s.b)` over the non-key columns; `None` when there are none.
fn rows_differ(left: &str, right: &str, rest: &[String]) -> Option<String> {
    (!rest.is_empty()).then(|| {
        format!(
            "{} IS DISTINCT FROM {}",
            row_of(left, rest),
            row_of(right, rest)
        )
    })
}

fn row_of(alias: &str, cols: &[String]) -> String {
    format!(
        "({})",
        cols.iter()
            .map(|c| format!("{alias}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Counts what an upsert of the staged rows would insert and update.
fn dry_run_sql(table: &ResolvedTable, staging: &str) -> String {
    let key = quote_ident(&table.key().name);
    let rest = non_key_columns(table);
    let changed = rows_differ("cur", "s", &rest).unwrap_or_else(|| "false".into());
    format!(
        "SELECT count(*) FILTER (WHERE cur.{key} IS NULL), count(*) FILTER (WHERE cur.{key} IS NOT NULL AND {changed}) \
         FROM pg_temp.{staging} AS s LEFT JOIN {target} AS cur ON cur.{key} = s.{key}",
        staging = quote_ident(staging),
        target = table.plan.target.sql()
    )
}

/// Inserts the staged rows that are missing, updates those that differ, and returns
/// (inserted, updated). `up_to`: only staged keys up to this one (used to find a rejected row).
fn upsert_sql(table: &ResolvedTable, staging: &str, up_to: Option<&str>) -> String {
    let key = quote_ident(&table.key().name);
    let rest = non_key_columns(table);
    let all: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let target = table.plan.target.sql();
    let staging = quote_ident(staging);
    let limit = up_to
        .map(|k| {
            format!(
                " AND s.{key} <= CAST({} AS {})",
                quote_literal(k),
                table.key().sql_type
            )
        })
        .unwrap_or_default();
    let select_cols = all
        .iter()
        .map(|c| format!("s.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let (filter, conflict) = match rows_differ("cur", "s", &rest) {
        None => (format!("cur.{key} IS NULL"), "DO NOTHING".to_string()),
        Some(changed) => (
            format!("(cur.{key} IS NULL OR {changed})"),
            format!(
                "DO UPDATE SET {} WHERE {}",
                rest.iter()
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                rows_differ("t", "excluded", &rest).unwrap_or_default()
            ),
        ),
    };
    format!(
        "WITH upserted AS ( \
           INSERT INTO {target} AS t ({cols}) \
           SELECT {select_cols} FROM pg_temp.{staging} AS s LEFT JOIN {target} AS cur ON cur.{key} = s.{key} \
           WHERE {filter}{limit} \
           ON CONFLICT ({key}) {conflict} \
           RETURNING (t.xmax = 0) AS inserted) \
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted",
        cols = all.join(", ")
    )
}

/// After the upsert of a batch failed: finds the first staged row (in key order) that the
/// target rejects, by bisecting on key prefixes inside savepoints, and names it.
async fn diagnose(
    conn: &mut PgConnection,
    table: &ResolvedTable,
    staging: &str,
    original: &sqlx::Error,
    range: &str,
) -> anyhow::Result<MigratorError> {
    let name = table.name().to_string();
    let key = quote_ident(&table.key().name);
    if error::sqlstate(original).as_deref() == Some("21000") {
        // "ON CONFLICT DO UPDATE command cannot affect row a second time": a key repeats.
        let dup: Option<String> = sqlx::query_scalar(&format!(
            "SELECT s.{key}::text FROM pg_temp.{} AS s GROUP BY s.{key} HAVING count(*) > 1 ORDER BY s.{key} LIMIT 1",
            quote_ident(staging)
        ))
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(dup) = dup {
            return Ok(MigratorError::DataRejected {
                table: name,
                key: dup,
                detail: "the source has this key more than once".into(),
            });
        }
    }
    let keys: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT s.{key}::text FROM pg_temp.{} AS s ORDER BY s.{key}",
        quote_ident(staging)
    ))
    .fetch_all(&mut *conn)
    .await?;
    let probe =
        async |conn: &mut PgConnection, up_to: &str| -> anyhow::Result<Option<sqlx::Error>> {
            sqlx::query("SAVEPOINT cutover_probe")
                .execute(&mut *conn)
                .await?;
            let outcome = sqlx::query(&upsert_sql(table, staging, Some(up_to)))
                .fetch_one(&mut *conn)
                .await;
            sqlx::query("ROLLBACK TO SAVEPOINT cutover_probe")
                .execute(&mut *conn)
                .await?;
            match outcome {
                Ok(_) => Ok(None),
                Err(e) if error::is_statement_error(&e) => Ok(Some(e)),
                Err(e) => Err(e.into()),
            }
        };
    let (mut lo, mut hi) = (0usize, keys.len().saturating_sub(1));
    let mut error = match keys.last() {
        Some(last) => probe(conn, last).await?,
        None => None,
    };
    if error.is_none() {
        return Ok(MigratorError::DataRejected {
            table: name,
            key: format!("(batch {range})"),
            detail: error::describe_db_error(original),
        });
    }
    // Smallest prefix that fails: its last key is the rejected row.
    while lo < hi {
        let mid = (lo + hi) / 2;
        match probe(conn, &keys[mid]).await? {
            Some(e) => {
                error = Some(e);
                hi = mid;
            }
            None => lo = mid + 1,
        }
    }
    let detail = error
        .as_ref()
        .map(error::describe_db_error)
        .unwrap_or_else(|| error::describe_db_error(original));
    Ok(MigratorError::DataRejected {
        table: name,
        key: keys[lo].clone(),
        detail,
    })
}

fn print_summary(summaries: &[TableSummary], dry_run: bool) {
    let (ins, upd) = if dry_run {
        ("would insert", "would update")
    } else {
        ("inserted", "updated")
    };
    println!(
        "{:<20} {:>12} {:>12} {:>12} {:>10}",
        "table", ins, upd, "unchanged", "elapsed"
    );
    for s in summaries {
        println!(
            "{:<20} {:>12} {:>12} {:>12} {:>9.2}s",
            s.name,
            s.counts.inserted,
            s.counts.updated,
            s.counts.unchanged,
            s.elapsed.as_secs_f64()
        );
    }
    if dry_run {
        println!("dry run: nothing was written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_rows_are_counted_and_malformed_data_refused() {
        let mut data = b"PGCOPY\n\xff\r\n\0".to_vec();
        data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // flags, extension length
        for value in [&b"ab"[..], &b""[..]] {
            data.extend_from_slice(&2i16.to_be_bytes());
            data.extend_from_slice(&(value.len() as i32).to_be_bytes());
            data.extend_from_slice(value);
            data.extend_from_slice(&(-1i32).to_be_bytes()); // NULL
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(binary_row_count(&data), Some(2));
        assert_eq!(binary_row_count(&data[..data.len() - 3]), None);
        assert_eq!(CopyFormat::Text.count_rows(b"a\tb\nc\\nd\te\n").unwrap(), 2);
    }
}
