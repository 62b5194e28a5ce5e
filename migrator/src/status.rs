//! `migrator status`: applied and pending migrations, the copy runs with their checkpoints and
//! every range (work unit) with its holder, and whether the target has taken over. Read once into
//! a [`StatusReport`], printed as text for people or as JSON (schema `migrator-status/v1`,
//! docs/migrator.md) for scripts.

use serde::Serialize;
use sqlx::postgres::PgConnection;

use crate::cli::StatusArgs;
use crate::copy::ranges::{self, RangeRecord};
use crate::copy::runs;
use crate::db;
use crate::error::MigratorError;
use crate::migrations_dir::Migrations;
use crate::schema;
use crate::verify::OutputFormat;

/// How many recent copy runs are listed.
const RUNS_SHOWN: i64 = 5;

/// The JSON schema name: fields are only ever added within it.
pub const SCHEMA: &str = "migrator-status/v1";

const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S UTC";

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub schema: &'static str,
    /// Where the migrations come from (embedded, or `--migrations DIR`).
    pub migrations_origin: String,
    pub migrations: Vec<MigrationStatus>,
    /// `null` when no copy has run against this database (no bookkeeping tables).
    pub copy_runs: Option<Vec<RunStatus>>,
    pub takeover: TakeoverStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct MigrationStatus {
    pub version: i64,
    pub description: String,
    /// `applied`, `pending`, `changed` (applied, then its file changed) or `unknown` (applied,
    /// unknown to this migrator).
    pub state: &'static str,
    pub installed_on: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub run_id: i64,
    /// `running`, `complete`, `failed`, `lock_lost`, `abandoned`.
    pub status: String,
    pub tables: Vec<TableStatus>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub ranges: Vec<RangeStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    pub table: String,
    /// Whether the run has a checkpoint row for it (`false`: not started).
    pub started: bool,
    pub done: bool,
    pub planned_rows: u64,
    pub rows_read: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub last_key: Option<String>,
    /// With `--prune`: rows deleted so far and whether the prune is done.
    pub prune: Option<PruneStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneStatus {
    pub deleted: i64,
    pub done: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RangeStatus {
    pub table: String,
    pub range_no: i32,
    /// Key range (after, up_to]; `null` is open (start / end).
    pub after: Option<String>,
    pub up_to: Option<String>,
    pub last_key: Option<String>,
    pub done: bool,
    pub rows_read: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// The worker holding it (`pid P worker N (server process S, …)`), `null` when none.
    pub holder: Option<String>,
    /// Seconds left on the holder's lease; negative when it expired.
    pub lease_left_secs: Option<f64>,
    /// The lease expired: the next worker takes the range over.
    pub lease_expired: bool,
    pub claims: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct TakeoverStatus {
    /// `migrator takeover mark` recorded that the target has taken over.
    pub taken_over: bool,
    /// When it was recorded.
    pub since: Option<String>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let migrations = Migrations::load(args.migrations.migrations.as_deref())?;
    let mut target = db::connect("target", &args.target.target_url).await?;
    let result = read(&mut target, &migrations).await;
    db::close(target).await;
    let (report, refusal) = result?;
    match args.format {
        OutputFormat::Text => print!("{}", report.render_text()),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    // Status is informational, but a changed migration is worth a non-zero exit for scripts.
    match refusal {
        Some(e) => Err(e.into()),
        None => Ok(0),
    }
}

/// Reads everything `status` shows, and the refusal (exit 4) when an applied migration was
/// changed or is unknown to this binary.
pub async fn read(
    target: &mut PgConnection,
    migrations: &Migrations,
) -> anyhow::Result<(StatusReport, Option<MigratorError>)> {
    let applied = schema::applied(target).await?;
    let refusal = match schema::pending(&applied, migrations) {
        Err(
            e @ (MigratorError::MigrationChanged { .. } | MigratorError::MigrationUnknown { .. }),
        ) => Some(e),
        _ => None,
    };
    let mut listed = Vec::new();
    for m in &migrations.list {
        let found = Migrations::applied_as(m, &applied);
        listed.push(MigrationStatus {
            version: m.version,
            description: m.description.to_string(),
            state: match found {
                Some(a) if a.checksum != *m.checksum => "changed",
                Some(_) => "applied",
                None => "pending",
            },
            installed_on: found.map(|a| a.installed_on),
        });
    }
    for a in applied.iter().filter(|a| migrations.find(a).is_none()) {
        listed.push(MigrationStatus {
            version: a.version,
            description: a.description.clone(),
            state: "unknown",
            installed_on: Some(a.installed_on),
        });
    }
    let copy_runs = match runs::recent_runs(target, RUNS_SHOWN).await? {
        None => None,
        Some(recent) => {
            let mut out = Vec::with_capacity(recent.len());
            for run in recent {
                let checkpoints = runs::load_checkpoints(target, run.run_id).await?;
                let pruned = crate::copy::prune::recorded(target, run.run_id).await?;
                let tables =
                    run.tables
                        .iter()
                        .map(|table| {
                            let c = checkpoints.get(table);
                            let prune = pruned.iter().find(|(t, ..)| t == table).map(
                                |(_, deleted, done)| PruneStatus {
                                    deleted: *deleted,
                                    done: *done,
                                },
                            );
                            let c_or = c.cloned().unwrap_or_default();
                            TableStatus {
                                table: table.clone(),
                                started: c.is_some(),
                                done: c_or.done,
                                planned_rows: c_or.planned_rows,
                                rows_read: c_or.counts.rows_read,
                                inserted: c_or.counts.inserted,
                                updated: c_or.counts.updated,
                                unchanged: c_or.counts.unchanged,
                                last_key: c_or.last_key,
                                prune,
                            }
                        })
                        .collect();
                let ranges = ranges::list(target, run.run_id)
                    .await?
                    .into_iter()
                    .map(RangeStatus::from)
                    .collect();
                out.push(RunStatus {
                    run_id: run.run_id,
                    status: run.status,
                    tables,
                    started_at: run.started_at,
                    finished_at: run.finished_at,
                    ranges,
                });
            }
            Some(out)
        }
    };
    let since = crate::takeover::taken_over_since(target).await?;
    let report = StatusReport {
        schema: SCHEMA,
        migrations_origin: migrations.origin.clone(),
        migrations: listed,
        copy_runs,
        takeover: TakeoverStatus {
            taken_over: since.is_some(),
            since,
        },
    };
    Ok((report, refusal))
}

impl From<RangeRecord> for RangeStatus {
    fn from(r: RangeRecord) -> RangeStatus {
        RangeStatus {
            lease_expired: r.holder.is_some() && r.lease_left_secs.is_none_or(|left| left < 0.0),
            table: r.table,
            range_no: r.range_no,
            after: r.after,
            up_to: r.up_to,
            last_key: r.last_key,
            done: r.done,
            rows_read: r.counts.rows_read,
            inserted: r.counts.inserted,
            updated: r.counts.updated,
            unchanged: r.counts.unchanged,
            holder: r.holder,
            lease_left_secs: r.lease_left_secs,
            claims: r.claims,
        }
    }
}

impl StatusReport {
    /// The text form: one line per migration, per run, per table and per range.
    pub fn render_text(&self) -> String {
        let mut out = format!("migrations ({}):\n", self.migrations_origin);
        for m in &self.migrations {
            let at = |t: &Option<chrono::DateTime<chrono::Utc>>| {
                t.map(|t| t.format(TIME_FORMAT).to_string())
                    .unwrap_or_default()
            };
            let state = match m.state {
                "changed" => format!("CHANGED after it was applied on {}", at(&m.installed_on)),
                "applied" => format!("applied {}", at(&m.installed_on)),
                "unknown" => "applied, but unknown to this migrator".to_string(),
                _ => "pending".to_string(),
            };
            out.push_str(&format!(
                "  {:03}_{:<20} {state}\n",
                m.version, m.description
            ));
        }
        out.push_str("copy runs:\n");
        match &self.copy_runs {
            None => out.push_str("  none (no copy has run against this database)\n"),
            Some(runs) if runs.is_empty() => out.push_str("  none\n"),
            Some(runs) => runs.iter().for_each(|run| run.render_text(&mut out)),
        }
        match &self.takeover.since {
            Some(since) => out.push_str(&format!(
                "takeover: recorded {since} (copy refuses without --after-takeover)\n"
            )),
            None => out.push_str("takeover: not recorded\n"),
        }
        out
    }
}

impl RunStatus {
    fn render_text(&self, out: &mut String) {
        let status_shown = match self.status.as_str() {
            "running" => {
                "running, or interrupted (a copy with the same plan and --tables resumes it)"
            }
            "failed" => {
                "failed: stopped by an error (a copy with the same plan and --tables resumes it)"
            }
            "lock_lost" => "lock_lost: stopped after losing its lock (a copy with the same plan and --tables resumes it)",
            other => other,
        };
        out.push_str(&format!(
            "  run {}: {status_shown}; started {}{}\n",
            self.run_id,
            self.started_at.format(TIME_FORMAT),
            self.finished_at
                .map(|f| format!(", finished {}", f.format(TIME_FORMAT)))
                .unwrap_or_default()
        ));
        out.push_str(&format!(
            "    {:<20} {:>6} {:>10} {:>10} {:>10} {:>10}  last key\n",
            "table", "done", "rows", "inserted", "updated", "unchanged"
        ));
        for t in &self.tables {
            if !t.started {
                out.push_str(&format!("    {:<20} not started\n", t.table));
                continue;
            }
            out.push_str(&format!(
                "    {:<20} {:>6} {:>10} {:>10} {:>10} {:>10}  {}\n",
                t.table,
                if t.done { "yes" } else { "no" },
                t.rows_read,
                t.inserted,
                t.updated,
                t.unchanged,
                t.last_key.as_deref().unwrap_or("-")
            ));
        }
        for t in &self.tables {
            if let Some(p) = &t.prune {
                out.push_str(&format!(
                    "    {:<20} prune: {} deleted{}\n",
                    t.table,
                    p.deleted,
                    if p.done { ", done" } else { ", not done" }
                ));
            }
        }
        if !self.ranges.is_empty() {
            out.push_str(&format!(
                "    {:<26} {:>6} {:>10}  {:<40}  key range / last key\n",
                "range (table/number)", "done", "rows", "holder"
            ));
        }
        for r in &self.ranges {
            let holder = match (&r.holder, r.lease_left_secs) {
                (Some(h), Some(left)) if !r.lease_expired => {
                    format!("{h}, lease {left:.0}s left")
                }
                (Some(h), _) => format!("{h}, lease EXPIRED (the next worker takes it over)"),
                (None, _) => "-".to_string(),
            };
            out.push_str(&format!(
                "    range {:<20} {:>6} {:>10}  {:<40}  ({}, {}] / {}{}\n",
                format!("{}/{}", r.table, r.range_no),
                if r.done { "yes" } else { "no" },
                r.rows_read,
                holder,
                r.after.as_deref().unwrap_or("start"),
                r.up_to.as_deref().unwrap_or("end"),
                r.last_key.as_deref().unwrap_or("-"),
                if r.claims > 1 {
                    format!(" (claimed {} times)", r.claims)
                } else {
                    String::new()
                }
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(holder: Option<&str>, left: Option<f64>) -> RangeStatus {
        RangeStatus::from(RangeRecord {
            table: "tasks".into(),
            range_no: 2,
            after: Some("k1".into()),
            up_to: None,
            last_key: Some("k5".into()),
            counts: Default::default(),
            done: false,
            holder: holder.map(String::from),
            lease_left_secs: left,
            claims: 2,
        })
    }

    #[test]
    fn text_and_json_show_the_same_ranges_and_leases() {
        let report = StatusReport {
            schema: SCHEMA,
            migrations_origin: "embedded".into(),
            migrations: vec![MigrationStatus {
                version: 1,
                description: "init".into(),
                state: "pending",
                installed_on: None,
            }],
            copy_runs: Some(vec![RunStatus {
                run_id: 7,
                status: "running".into(),
                tables: vec![],
                started_at: chrono::DateTime::UNIX_EPOCH,
                finished_at: None,
                ranges: vec![
                    range(Some("pid 1 worker 0"), Some(30.0)),
                    range(Some("pid 2 worker 0"), Some(-3.0)),
                    range(None, None),
                ],
            }]),
            takeover: TakeoverStatus {
                taken_over: false,
                since: None,
            },
        };
        let text = report.render_text();
        assert!(text.contains("pid 1 worker 0, lease 30s left"), "{text}");
        assert!(text.contains("pid 2 worker 0, lease EXPIRED"), "{text}");
        assert!(text.contains("(k1, end] / k5 (claimed 2 times)"), "{text}");
        assert!(text.contains("001_init") && text.contains("takeover: not recorded"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["schema"], "migrator-status/v1");
        let ranges = &json["copy_runs"][0]["ranges"];
        assert_eq!(ranges[0]["lease_expired"], false);
        assert_eq!(ranges[1]["lease_expired"], true);
        assert_eq!(ranges[2]["holder"], serde_json::Value::Null);
        assert_eq!(ranges[2]["lease_expired"], false);
        assert_eq!(ranges[0]["up_to"], serde_json::Value::Null);
    }
}
