//! `migrator takeover mark|clear|status`: the switch that says the target has taken over — the new
//! system is the primary and dual-write is off, so the target holds writes the source never saw.
//! It is recorded in the target database itself (`cutover_migrator.takeover`), so every operator
//! and pipeline sees it; from then on `migrator copy` refuses (exit 9) unless `--after-takeover`
//! is given (docs/runbook.md). Also here: recognising swapped `--source-url`/`--target-url`.

use anyhow::Context;
use sqlx::postgres::PgConnection;

use crate::cli::TargetArgs;
use crate::copy::BOOKKEEPING_SCHEMA;
use crate::db;
use crate::error::MigratorError;
use crate::plan::{Plan, Source};

#[derive(Debug, clap::Args)]
pub struct TakeoverArgs {
    /// mark: record that the target has taken over (after the final cutover, dual-write off);
    /// clear: remove the record (legacy is the primary again); status: print it.
    #[arg(value_enum)]
    pub action: TakeoverAction,

    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TakeoverAction {
    Mark,
    Clear,
    Status,
}

fn table() -> String {
    format!("{}.takeover", db::quote_ident(BOOKKEEPING_SCHEMA))
}

/// Since when the target has taken over (as text), if it has.
pub async fn taken_over_since(target: &mut PgConnection) -> anyhow::Result<Option<String>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{BOOKKEEPING_SCHEMA}.takeover"))
        .fetch_one(&mut *target)
        .await?;
    if !exists {
        return Ok(None);
    }
    Ok(
        sqlx::query_scalar(&format!("SELECT CAST(at AS text) FROM {}", table()))
            .fetch_optional(&mut *target)
            .await?,
    )
}

/// Refuses a copy into a target that has taken over, unless `allowed` (`--after-takeover`).
pub async fn check_copy_allowed(
    target: &mut PgConnection,
    allowed: bool,
    database: &str,
) -> anyhow::Result<()> {
    let Some(since) = taken_over_since(target).await? else {
        return Ok(());
    };
    if allowed {
        eprintln!(
            "copy: WARNING: {database} has taken over since {since} (migrator takeover status): \
             copying anyway (--after-takeover); target rows newer than the source are kept only in \
             tables with a plan version column"
        );
        return Ok(());
    }
    Err(MigratorError::TakenOver(format!(
        "{database} has taken over from the source since {since} (recorded by `migrator takeover mark`): \
         it holds writes the source never saw, and a copy would overwrite them; refusing. \
         Pass --after-takeover to copy anyway, or `migrator takeover clear` if the source is the primary again"
    ))
    .into())
}

/// Refuses `copy --prune` (exit 2) into a target that has taken over, even with
/// `--after-takeover`: a row only the target has may be its own write, which prune must never
/// delete.
pub async fn check_prune_allowed(target: &mut PgConnection, database: &str) -> anyhow::Result<()> {
    match taken_over_since(target).await? {
        None => Ok(()),
        Some(since) => Err(MigratorError::Usage(format!(
            "--prune refused: {database} has taken over from the source since {since} (recorded by \
             `migrator takeover mark`): a row only the target has may be its own write, which prune \
             must never delete"
        ))
        .into()),
    }
}

/// Recognises the legacy database given as the target: the target holds the plan's source tables
/// (and is not the source database itself, which the plan allows). Names the database and tables.
pub async fn check_not_swapped(
    source: &mut PgConnection,
    target: &mut PgConnection,
    plan: &Plan,
    target_database: &str,
) -> anyhow::Result<()> {
    const WHERE_AM_I: &str = "SELECT current_database()::text || '@' || coalesce(host(inet_server_addr()), 'local') || ':' || current_setting('port')";
    let here: String = sqlx::query_scalar(WHERE_AM_I)
        .fetch_one(&mut *source)
        .await?;
    let there: String = sqlx::query_scalar(WHERE_AM_I)
        .fetch_one(&mut *target)
        .await?;
    if here == there {
        return Ok(());
    }
    let mut found = Vec::new();
    for t in &plan.tables {
        if let Source::Table(name) = &t.source {
            let in_target: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(name.sql())
                .fetch_one(&mut *target)
                .await?;
            if in_target {
                found.push(name.to_string());
            }
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    Err(MigratorError::Usage(format!(
        "--target-url names {target_database}, which holds the plan's source tables ({}): it looks like \
         the legacy database — are --source-url and --target-url swapped? --source-url is the legacy \
         database, --target-url the new system's (do not run `migrator schema` on the legacy database)",
        found.join(", ")
    ))
    .into())
}

pub async fn run(args: TakeoverArgs) -> anyhow::Result<u8> {
    let url = &args.target.target_url;
    let database = db::database_name(url).unwrap_or_else(|| "the target database".into());
    let mut conn = db::connect("target", url).await?;
    let result = async {
        match args.action {
            TakeoverAction::Mark => {
                sqlx::raw_sql(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {schema}; \
                     CREATE TABLE IF NOT EXISTS {t} (one boolean PRIMARY KEY DEFAULT true CHECK (one), at timestamptz NOT NULL DEFAULT now()); \
                     INSERT INTO {t} DEFAULT VALUES ON CONFLICT DO NOTHING",
                    schema = db::quote_ident(BOOKKEEPING_SCHEMA),
                    t = table()
                ))
                .execute(&mut conn)
                .await
                .with_context(|| format!("recording the takeover in {database}"))?;
            }
            TakeoverAction::Clear => {
                if taken_over_since(&mut conn).await?.is_some() {
                    sqlx::query(&format!("DELETE FROM {}", table()))
                        .execute(&mut conn)
                        .await
                        .with_context(|| format!("clearing the takeover in {database}"))?;
                }
            }
            TakeoverAction::Status => {}
        }
        match taken_over_since(&mut conn).await? {
            Some(since) => println!("takeover: {database} has taken over since {since}"),
            None => println!("takeover: {database} has not taken over (copy is allowed)"),
        }
        anyhow::Ok(0)
    }
    .await;
    db::close(conn).await;
    result
}
