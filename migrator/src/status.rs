//! `migrator status`: applied and pending migrations, and the copy runs with their checkpoints and
//! every range (work unit) with its holder.

use sqlx::postgres::PgConnection;

use crate::cli::StatusArgs;
use crate::copy::ranges;
use crate::copy::runs::{self, RunRecord};
use crate::db;
use crate::error::MigratorError;
use crate::migrations_dir::Migrations;
use crate::schema;

/// How many recent copy runs are listed.
const RUNS_SHOWN: i64 = 5;

pub async fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let migrations = Migrations::load(args.migrations.migrations.as_deref())?;
    let mut target = db::connect("target", &args.target.target_url).await?;
    let result = report(&mut target, &migrations).await;
    db::close(target).await;
    result
}

async fn report(target: &mut PgConnection, migrations: &Migrations) -> anyhow::Result<u8> {
    let applied = schema::applied(target).await?;
    println!("migrations ({}):", migrations.origin);
    for m in &migrations.list {
        match Migrations::applied_as(m, &applied) {
            Some(a) if a.checksum != *m.checksum => {
                println!(
                    "  {:03}_{:<20} CHANGED after it was applied on {}",
                    m.version,
                    m.description,
                    a.installed_on.format("%Y-%m-%d %H:%M:%S UTC")
                )
            }
            Some(a) => println!(
                "  {:03}_{:<20} applied {}",
                m.version,
                m.description,
                a.installed_on.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            None => println!("  {:03}_{:<20} pending", m.version, m.description),
        }
    }
    for a in applied.iter().filter(|a| migrations.find(a).is_none()) {
        println!(
            "  {:03}_{:<20} applied, but unknown to this migrator",
            a.version, a.description
        );
    }

    println!("copy runs:");
    match runs::recent_runs(target, RUNS_SHOWN).await? {
        None => println!("  none (no copy has run against this database)"),
        Some(recent) if recent.is_empty() => println!("  none"),
        Some(recent) => {
            for run in &recent {
                print_run(target, run).await?;
            }
        }
    }
    // Status is informational, but a changed migration is worth a non-zero exit for scripts.
    if let Err(
        e @ (MigratorError::MigrationChanged { .. } | MigratorError::MigrationUnknown { .. }),
    ) = schema::pending(&applied, migrations)
    {
        return Err(e.into());
    }
    Ok(0)
}

async fn print_run(target: &mut PgConnection, run: &RunRecord) -> anyhow::Result<()> {
    let status_shown = match run.status.as_str() {
        "running" => "running, or interrupted (a copy with the same plan and --tables resumes it)",
        "failed" => "failed: stopped by an error (a copy with the same plan and --tables resumes it)",
        "lock_lost" => "lock_lost: stopped after losing its lock (a copy with the same plan and --tables resumes it)",
        other => other,
    };
    println!(
        "  run {}: {status_shown}; started {}{}",
        run.run_id,
        run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        run.finished_at
            .map(|f| format!(", finished {}", f.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default()
    );
    let checkpoints = runs::load_checkpoints(target, run.run_id).await?;
    println!(
        "    {:<20} {:>6} {:>10} {:>10} {:>10} {:>10}  last key",
        "table", "done", "rows", "inserted", "updated", "unchanged"
    );
    for table in &run.tables {
        match checkpoints.get(table) {
            Some(c) => println!(
                "    {:<20} {:>6} {:>10} {:>10} {:>10} {:>10}  {}",
                table,
                if c.done { "yes" } else { "no" },
                c.counts.rows_read,
                c.counts.inserted,
                c.counts.updated,
                c.counts.unchanged,
                c.last_key.as_deref().unwrap_or("-")
            ),
            None => println!("    {table:<20} not started"),
        }
    }
    for (table, deleted, done) in crate::copy::prune::recorded(target, run.run_id).await? {
        println!(
            "    {table:<20} prune: {deleted} deleted{}",
            if done { ", done" } else { ", not done" }
        );
    }
    let ranges = ranges::list(target, run.run_id).await?;
    if !ranges.is_empty() {
        println!(
            "    {:<26} {:>6} {:>10}  {:<40}  key range / last key",
            "range (table/number)", "done", "rows", "holder"
        );
    }
    for r in &ranges {
        let holder = match (&r.holder, r.lease_left_secs) {
            (Some(h), Some(left)) if left >= 0.0 => format!("{h}, lease {left:.0}s left"),
            (Some(h), _) => format!("{h}, lease EXPIRED (the next worker takes it over)"),
            (None, _) => "-".to_string(),
        };
        println!(
            "    range {:<20} {:>6} {:>10}  {:<40}  ({}, {}] / {}{}",
            format!("{}/{}", r.table, r.range_no),
            if r.done { "yes" } else { "no" },
            r.counts.rows_read,
            holder,
            r.after.as_deref().unwrap_or("start"),
            r.up_to.as_deref().unwrap_or("end"),
            r.last_key.as_deref().unwrap_or("-"),
            if r.claims > 1 {
                format!(" (claimed {} times)", r.claims)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
