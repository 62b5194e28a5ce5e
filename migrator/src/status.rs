//! `migrator status`: applied and pending migrations, and the copy runs with their checkpoints.

use sqlx::postgres::PgConnection;
use sqlx::Row;

use crate::cli::StatusArgs;
use crate::copy::load_checkpoints;
use crate::db;
use crate::error::MigratorError;
use crate::schema;

/// How many recent copy runs are listed.
const RUNS_SHOWN: i64 = 5;

pub async fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let mut target = db::connect("target", &args.target.target_url).await?;
    let result = report(&mut target).await;
    db::close(target).await;
    result
}

async fn report(target: &mut PgConnection) -> anyhow::Result<u8> {
    let applied = schema::applied(target).await?;
    println!("migrations:");
    for m in schema::embedded() {
        match applied.iter().find(|a| a.version == m.version) {
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
    for a in applied
        .iter()
        .filter(|a| !schema::embedded().any(|m| m.version == a.version))
    {
        println!(
            "  {:03}_{:<20} applied, but unknown to this migrator",
            a.version, a.description
        );
    }

    let has_runs: bool =
        sqlx::query_scalar("SELECT to_regclass('cutover_migrator.copy_runs') IS NOT NULL")
            .fetch_one(&mut *target)
            .await?;
    println!("copy runs:");
    if !has_runs {
        println!("  none (no copy has run against this database)");
    } else {
        let runs = sqlx::query(
            "SELECT run_id, status, tables, started_at, finished_at FROM cutover_migrator.copy_runs ORDER BY run_id DESC LIMIT $1",
        )
        .bind(RUNS_SHOWN)
        .fetch_all(&mut *target)
        .await?;
        if runs.is_empty() {
            println!("  none");
        }
        for run in runs.iter().rev() {
            let run_id: i64 = run.try_get("run_id")?;
            let status: String = run.try_get("status")?;
            let tables: Vec<String> = run.try_get("tables")?;
            let started: chrono::DateTime<chrono::Utc> = run.try_get("started_at")?;
            let finished: Option<chrono::DateTime<chrono::Utc>> = run.try_get("finished_at")?;
            let status_shown = match status.as_str() {
                "running" => "running, or interrupted (a copy with the same plan and --tables resumes it)",
                "failed" => "failed: stopped by an error (a copy with the same plan and --tables resumes it)",
                "lock_lost" => "lock_lost: stopped after losing its lock (a copy with the same plan and --tables resumes it)",
                other => other,
            };
            println!(
                "  run {run_id}: {status_shown}; started {}{}",
                started.format("%Y-%m-%d %H:%M:%S UTC"),
                finished
                    .map(|f| format!(", finished {}", f.format("%Y-%m-%d %H:%M:%S UTC")))
                    .unwrap_or_default()
            );
            let checkpoints = load_checkpoints(target, run_id).await?;
            println!(
                "    {:<20} {:>6} {:>10} {:>10} {:>10} {:>10}  last key",
                "table", "done", "rows", "inserted", "updated", "unchanged"
            );
            for table in &tables {
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
        }
    }
    // Status is informational, but a changed migration is worth a non-zero exit for scripts.
    if let Err(
        e @ (MigratorError::MigrationChanged { .. } | MigratorError::MigrationUnknown { .. }),
    ) = schema::pending(&applied)
    {
        return Err(e.into());
    }
    Ok(0)
}
