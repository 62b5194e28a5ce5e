//! The progress of a run over every worker of every process sharing it (`--jobs`, `--join`):
//! read from the ranges' checkpoints in the target ([`read`], on a slow timer) and added up per
//! table ([`aggregate`]), for the progress bars and the summary at the end. Every batch commit
//! advances its range's `rows_read`, so the figures are the committed work of the whole run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::Row;

/// How often the progress is read from the target: one small query per process per interval.
pub const POLL: Duration = Duration::from_secs(1);

/// One range as the progress sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RangeProgress {
    pub table: String,
    pub planned_rows: u64,
    pub rows_read: u64,
    pub done: bool,
    /// The worker holding it now.
    pub holder: Option<String>,
    /// The worker that finished it.
    pub done_by: Option<String>,
    /// Seconds since the epoch: its first claim, and when it was done.
    pub claimed_at: Option<f64>,
    pub done_at: Option<f64>,
}

/// One table of the run, over all its ranges and workers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableProgress {
    /// Rows read (committed) over all ranges.
    pub rows_done: u64,
    /// Source rows counted when the ranges were planned (at least `rows_done`).
    pub rows_planned: u64,
    pub ranges: usize,
    pub ranges_done: usize,
    /// Workers (and their processes) holding one of its ranges now.
    pub workers_now: usize,
    pub processes_now: usize,
    /// Workers (and processes) that finished at least one of its ranges.
    pub workers_done: usize,
    pub processes_done: usize,
    /// From the first claim of a range to the last range done, once every range is done.
    pub elapsed: Option<Duration>,
}

impl TableProgress {
    pub fn finished(&self) -> bool {
        self.ranges > 0 && self.ranges_done == self.ranges
    }

    /// Whether any worker has worked on the table yet.
    pub fn started(&self) -> bool {
        self.rows_done > 0 || self.workers_now > 0 || self.ranges_done > 0
    }

    /// "3 workers in 2 processes" (those holding a range now, or those that did the work).
    pub fn workers_note(&self) -> String {
        let (workers, processes) = if self.finished() {
            (self.workers_done, self.processes_done)
        } else {
            (self.workers_now, self.processes_now)
        };
        format!(
            "{workers} worker{} in {processes} process{}",
            if workers == 1 { "" } else { "s" },
            if processes == 1 { "" } else { "es" }
        )
    }
}

/// The process a worker belongs to. A holder is `pid P worker N (server process S, run lock on
/// L)`: `L`, the server process of that migrator process's lock connection, is unique among the
/// live processes on every machine (a client pid need not be).
pub fn process_of(holder: &str) -> &str {
    holder
        .split_once("run lock on ")
        .and_then(|(_, rest)| rest.split(')').next())
        .unwrap_or(holder)
}

/// Adds up the ranges per table.
pub fn aggregate(ranges: &[RangeProgress]) -> BTreeMap<String, TableProgress> {
    struct Acc<'a> {
        progress: TableProgress,
        now: BTreeSet<&'a str>,
        by: BTreeSet<&'a str>,
        first_claim: Option<f64>,
        last_done: Option<f64>,
    }
    let mut acc: BTreeMap<&str, Acc<'_>> = BTreeMap::new();
    for r in ranges {
        let a = acc.entry(r.table.as_str()).or_insert_with(|| Acc {
            progress: TableProgress::default(),
            now: BTreeSet::new(),
            by: BTreeSet::new(),
            first_claim: None,
            last_done: None,
        });
        let p = &mut a.progress;
        p.rows_done += r.rows_read;
        p.rows_planned += r.planned_rows;
        p.ranges += 1;
        if r.done {
            p.ranges_done += 1;
        }
        if let Some(h) = r.holder.as_deref().filter(|_| !r.done) {
            a.now.insert(h);
        }
        if let Some(h) = r.done_by.as_deref().filter(|_| r.done) {
            a.by.insert(h);
        }
        a.first_claim = min_of(a.first_claim, r.claimed_at);
        a.last_done = max_of(a.last_done, r.done_at.filter(|_| r.done));
    }
    acc.into_iter()
        .map(|(table, a)| {
            let mut p = a.progress;
            p.rows_planned = p.rows_planned.max(p.rows_done);
            p.workers_now = a.now.len();
            p.processes_now = distinct_processes(&a.now);
            p.workers_done = a.by.len();
            p.processes_done = distinct_processes(&a.by);
            if p.finished() {
                if let (Some(first), Some(last)) = (a.first_claim, a.last_done) {
                    p.elapsed = Some(Duration::from_secs_f64((last - first).max(0.0)));
                }
            }
            (table.to_string(), p)
        })
        .collect()
}

fn distinct_processes(workers: &BTreeSet<&str>) -> usize {
    workers
        .iter()
        .map(|w| process_of(w))
        .collect::<BTreeSet<_>>()
        .len()
}

fn min_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Every range of run `run_id`, as the progress sees it.
pub async fn read(conn: &mut PgConnection, run_id: i64) -> sqlx::Result<Vec<RangeProgress>> {
    let rows = sqlx::query(
        "SELECT table_name, planned_rows, rows_read, done, holder, done_by, \
                extract(epoch FROM claimed_at)::float8, extract(epoch FROM done_at)::float8 \
           FROM cutover_migrator.copy_ranges WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let n = |i: usize| -> sqlx::Result<u64> { Ok(r.try_get::<i64, _>(i)?.max(0) as u64) };
            Ok(RangeProgress {
                table: r.try_get(0)?,
                planned_rows: n(1)?,
                rows_read: n(2)?,
                done: r.try_get(3)?,
                holder: r.try_get(4)?,
                done_by: r.try_get(5)?,
                claimed_at: r.try_get(6)?,
                done_at: r.try_get(7)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(pid: u32, worker: u32, lock: u32) -> String {
        format!(
            "pid {pid} worker {worker} (server process {}, run lock on {lock})",
            lock + worker
        )
    }

    fn range(table: &str, planned: u64, read: u64) -> RangeProgress {
        RangeProgress {
            table: table.into(),
            planned_rows: planned,
            rows_read: read,
            ..RangeProgress::default()
        }
    }

    #[test]
    fn adds_up_the_work_of_every_worker_of_every_process() {
        // Two processes (lock connections 100 and 200; the same client pid on two machines).
        let a0 = holder(7, 0, 100);
        let a1 = holder(7, 1, 100);
        let b0 = holder(7, 0, 200);
        let ranges = vec![
            RangeProgress {
                done: true,
                done_by: Some(a0.clone()),
                claimed_at: Some(10.0),
                done_at: Some(14.0),
                ..range("tasks", 1000, 1000)
            },
            RangeProgress {
                holder: Some(a1.clone()),
                claimed_at: Some(11.0),
                ..range("tasks", 1000, 400)
            },
            RangeProgress {
                holder: Some(b0.clone()),
                claimed_at: Some(12.0),
                ..range("tasks", 1000, 250)
            },
            range("tasks", 500, 0),
            RangeProgress {
                holder: Some(a0.clone()),
                ..range("users", 10, 0)
            },
        ];
        let all = aggregate(&ranges);
        let tasks = &all["tasks"];
        assert_eq!(tasks.rows_done, 1650);
        assert_eq!(tasks.rows_planned, 3500);
        assert_eq!((tasks.ranges, tasks.ranges_done), (4, 1));
        assert_eq!((tasks.workers_now, tasks.processes_now), (2, 2));
        assert_eq!((tasks.workers_done, tasks.processes_done), (1, 1));
        assert_eq!(tasks.elapsed, None, "not finished");
        assert_eq!(tasks.workers_note(), "2 workers in 2 processes");
        assert!(tasks.started() && !tasks.finished());
        let users = &all["users"];
        assert!(users.started() && users.rows_done == 0);
        assert_eq!(users.workers_note(), "1 worker in 1 process");

        // Everything done, by three workers of two processes; the table grew past its plan.
        let finished: Vec<RangeProgress> =
            [(&a0, 10.0, 14.0), (&a1, 11.0, 19.5), (&b0, 12.0, 18.0)]
                .iter()
                .map(|(by, claimed, done)| RangeProgress {
                    done: true,
                    done_by: Some(by.to_string()),
                    claimed_at: Some(*claimed),
                    done_at: Some(*done),
                    ..range("tasks", 100, 150)
                })
                .collect();
        let tasks = &aggregate(&finished)["tasks"];
        assert!(tasks.finished());
        assert_eq!((tasks.rows_done, tasks.rows_planned), (450, 450));
        assert_eq!((tasks.workers_done, tasks.processes_done), (3, 2));
        assert_eq!(tasks.workers_now, 0);
        assert_eq!(tasks.elapsed, Some(Duration::from_secs_f64(9.5)));
        assert_eq!(tasks.workers_note(), "3 workers in 2 processes");
    }

    #[test]
    fn a_process_is_named_by_its_lock_connection() {
        assert_eq!(process_of(&holder(1, 3, 4242)), "4242");
        assert_eq!(process_of("someone else"), "someone else");
    }
}
