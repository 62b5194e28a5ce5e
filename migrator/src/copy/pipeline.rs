//! The reading side of a copy: one source connection cuts the key space into windows of
//! `--batch-size` keys; [`SOURCE_READERS`] readers each read a window from the source (the plan's
//! projection) and from the target at the same time, ahead of the writer; batches reach the writer
//! strictly in key order, each with how the target compares ([`Existing`]).
//!
//! How far the readers run ahead of the writer: at most [`WRITES_AHEAD`] batches with rows to
//! write wait for (or are being written by) the writer, each holding its source rows; windows found
//! identical hold no rows, and up to [`BATCHES_AHEAD`] of them may wait. So while the writer
//! upserts changed windows, the readers go on comparing the next ones, and memory stays bounded
//! by the batches with rows (about 4 × `--batch-size` rows with the two readers).

use std::sync::Arc;

use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use sqlx::postgres::PgConnection;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::diagnose::locate_conversion_failure;
use super::format::CopyFormat;
use super::sql;
use crate::db;
use crate::error;
use crate::plan::{ResolvedTable, Source, Window};

/// Source connections reading batches concurrently (plus one that cuts the windows).
pub const SOURCE_READERS: usize = 2;

/// Batches with rows to write that may wait for the writer, the one it is writing included.
const WRITES_AHEAD: usize = 2;

/// Batches of any kind that may wait for the writer: the capacity of the channel to it (see the
/// module docs). Identical windows carry no rows, so this costs little memory.
pub const BATCHES_AHEAD: usize = 64;

/// A key window is a narrow key range read in key order, which an index scan on the key returns
/// in order. On row estimates alone the planner often prefers a sequential or bitmap scan plus
/// a sort, which reads every page of the table for every window when the table is not clustered
/// by key. Only the window-reading sessions get these settings.
const WINDOW_PLANNER_SETTINGS: &str = "SET enable_seqscan = off; SET enable_bitmapscan = off";

/// The reading side of a copy: `keys` (source) cuts the key windows, `readers` read them.
pub struct Sources {
    pub keys: PgConnection,
    readers: Vec<Reader>,
}

impl Sources {
    pub async fn connect(
        keys: PgConnection,
        source_url: &str,
        target_url: &str,
    ) -> anyhow::Result<Sources> {
        let mut readers = Vec::with_capacity(SOURCE_READERS);
        for _ in 0..SOURCE_READERS {
            readers.push(Reader::connect(source_url, target_url).await?);
        }
        Ok(Sources { keys, readers })
    }

    /// Planner settings of the source readers for `table` (see [`Reader::prepare_for`]).
    pub async fn prepare_for(&mut self, table: &ResolvedTable) -> sqlx::Result<()> {
        for reader in &mut self.readers {
            reader.prepare_for(table).await?;
        }
        Ok(())
    }

    /// Reads the key range (after, up_to] of `table` (unbounded where `None`) in key order, batch
    /// after batch, into `tx` (see [`produce`]); the readers come back for the next range unless
    /// reading failed.
    pub async fn read_range(
        &mut self,
        table: &ResolvedTable,
        format: CopyFormat,
        after: Option<String>,
        up_to: Option<&str>,
        batch_size: u64,
        tx: mpsc::Sender<Batch>,
    ) -> anyhow::Result<()> {
        let readers = std::mem::take(&mut self.readers);
        self.readers = produce(
            &mut self.keys,
            readers,
            table,
            format,
            (after, up_to),
            batch_size,
            tx,
        )
        .await?;
        Ok(())
    }
}

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
pub enum Existing {
    /// Byte-identical: nothing to write.
    Identical,
    /// No target rows in the window.
    Empty,
    Differs,
}

/// One batch: the source rows of a key window (COPY data, key order) and how the target compares.
pub struct Batch {
    pub data: Vec<u8>,
    pub rows: u64,
    /// Key window: (after, last_key].
    pub after: Option<String>,
    pub last_key: String,
    pub existing: Existing,
    /// Held while a batch with rows to write waits for the writer or is written (see [`WRITES_AHEAD`]).
    _writing: Option<OwnedSemaphorePermit>,
}

impl Batch {
    /// The key window, for messages.
    pub fn range(&self) -> String {
        format!(
            "after {} up to {}",
            self.after.as_deref().unwrap_or("the first key"),
            self.last_key
        )
    }
}

async fn copy_out(conn: &mut PgConnection, sql: &str) -> sqlx::Result<Vec<u8>> {
    let mut stream = conn.copy_out_raw(sql).await?;
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        data.extend_from_slice(&chunk?);
    }
    Ok(data)
}

/// Reads the source range (after, up_to] in key order, batch after batch, into `tx`. One
/// connection (`keys`) cuts the range into windows of `batch_size` rows (index-only scans when the key is an indexed
/// column); the `readers` read the windows concurrently; batches reach `tx` in key order.
/// Returns the readers for reuse.
async fn produce(
    keys: &mut PgConnection,
    mut readers: Vec<Reader>,
    table: &ResolvedTable,
    format: CopyFormat,
    (mut after, up_to): (Option<String>, Option<&str>),
    batch_size: u64,
    tx: mpsc::Sender<Batch>,
) -> anyhow::Result<Vec<Reader>> {
    let mut in_flight = FuturesOrdered::new();
    let mut cut_all = false;
    let writes = Arc::new(Semaphore::new(WRITES_AHEAD));
    let key_error = |e: sqlx::Error| {
        anyhow::anyhow!(
            "table {}: reading the source keys: {}",
            table.name(),
            error::describe_db_error(&e)
        )
    };
    loop {
        while !cut_all && !readers.is_empty() {
            let mut end: Option<String> = sqlx::query_scalar(&table.source_key_at_sql(
                after.as_deref(),
                up_to,
                batch_size - 1,
            ))
            .fetch_optional(&mut *keys)
            .await
            .map_err(key_error)?
            .flatten();
            if end.is_none() {
                // Fewer than batch_size rows left: the last window ends at the greatest key.
                cut_all = true;
                end = sqlx::query_scalar(&table.source_last_key_sql(after.as_deref(), up_to))
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
        if let Some(mut batch) = batch? {
            if batch.existing != Existing::Identical {
                // Never closed, so acquiring cannot fail.
                batch._writing = writes.clone().acquire_owned().await.ok();
            }
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
    let source_sql = sql::copy_out(&table.source_select_sql(&window, None), format);
    let target_sql = sql::copy_out(&table.target_select_sql(&window, None), format);
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
            _writing: None,
        }))
    })();
    (reader, result)
}
