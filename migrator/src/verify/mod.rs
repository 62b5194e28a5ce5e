//! `migrator verify`: an exact comparison of the source projection (the same plan, expressions and
//! NULL defaults as `copy`) with the target tables.
//!
//! Per table, both databases compute — concurrently — a count and a sum of row fingerprints for
//! each bucket of the key space (buckets are ranges of a hash of the key, so they are even for any
//! key type); only buckets whose checksums differ are read row by row (key + fingerprint), and
//! only a sample of the changed rows is read column by column to name the differing columns.

pub mod compare;
pub mod job;
pub mod report;
pub mod sql;

use std::path::PathBuf;

use anyhow::{bail, Context};
use sqlx::Row;

use crate::db;
use crate::plan::Plan;
use crate::redact::SecretUrl;
pub use report::VerifyReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A readable table / checklist.
    Text,
    /// JSON with a stable schema (docs/migrator.md).
    Json,
}

/// Options shared by `verify` and `cutover-verify --verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifySharedArgs {
    /// Source database URL (the legacy database). Never printed with its password.
    #[arg(long, env = "LEGACY_DATABASE_URL", hide_env_values = true)]
    pub source_url: Option<SecretUrl>,

    /// Target database URL (the new system's database). Never printed with its password.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub target_url: Option<SecretUrl>,

    /// Plan file (TOML); default: the plan shipped in the binary (migrations/plan.toml).
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,

    /// Only these plan tables (comma-separated plan names).
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub tables: Vec<String>,

    /// Changed rows per table whose differing column names are looked up and shown (the JSON
    /// report lists every key in any case).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub sample: usize,

    /// Leave a column out of the comparison, TABLE.COLUMN (plan table name or target
    /// schema.table); repeatable. E.g. a column the new system rewrites.
    #[arg(long = "ignore-column", value_name = "TABLE.COLUMN")]
    pub ignore_columns: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub shared: VerifySharedArgs,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,

    /// Under live writes: when differences are found, wait DURATION (e.g. 2s, 500ms) and compare
    /// the differing tables again, up to --rechecks times; only differences found every time are
    /// reported, the others are shown as in flux.
    #[arg(long, value_name = "DURATION", value_parser = crate::rollout::parse_duration)]
    pub settle: Option<std::time::Duration>,

    /// Re-checks with --settle.
    #[arg(long, default_value_t = 3, value_name = "N", requires = "settle",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rechecks: u32,

    /// Connections per database computing a table's bucket checksums at once, each on its own key
    /// range of the table (all in one snapshot per side): same report, same exactness.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub jobs: u32,
}

/// `migrator verify`: prints the report; returns exit code 0 identical, 1 differences, 2 any error
/// (printed here, so that every error is 2 rather than the other commands' specific codes).
pub async fn run(args: VerifyArgs) -> anyhow::Result<u8> {
    let result = async {
        let report = verify_with(&args.shared, args.jobs as usize).await?;
        let report = settle(&args, report).await?;
        match args.format {
            OutputFormat::Json => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).context("serializing the report")?
                )
            }
            OutputFormat::Text => print!("{}", report.render_text(args.shared.sample)),
        }
        anyhow::Ok(if report.identical { 0 } else { 1 })
    }
    .await;
    Ok(result.unwrap_or_else(|e| error_exit(&e)))
}

/// `--settle`: re-checks the tables that differ after the delay, keeping only the keys that
/// differ every time (same kind); stops early once nothing persists.
async fn settle(args: &VerifyArgs, mut report: VerifyReport) -> anyhow::Result<VerifyReport> {
    let Some(delay) = args.settle else {
        return Ok(report);
    };
    for _ in 0..args.rechecks {
        let differing: Vec<String> = report
            .tables
            .iter()
            .filter(|t| !t.identical)
            .map(|t| t.table.clone())
            .collect();
        if differing.is_empty() {
            break;
        }
        tokio::time::sleep(delay).await;
        let mut shared = args.shared.clone();
        shared.tables = differing;
        let again = verify(&shared).await.context("--settle: re-checking")?;
        for table in &mut report.tables {
            if let Some(later) = again.tables.iter().find(|t| t.table == table.table) {
                table.keep_persistent(later);
            }
        }
        report = VerifyReport::new(report.tables);
    }
    Ok(report)
}

/// Prints the error (secrets scrubbed) and returns 2: verify and cutover-verify map every error to 2
/// so that pipelines can tell "differences" (1) from "could not check" (2).
pub fn error_exit(err: &anyhow::Error) -> u8 {
    eprintln!("error: {}", crate::error::render(err));
    2
}

/// Used by `cutover-verify --verify`.
pub async fn run_for_cutover(args: &VerifySharedArgs) -> anyhow::Result<VerifyReport> {
    verify(args).await.context("--verify")
}

fn required<'a>(value: &'a Option<SecretUrl>, what: &str) -> anyhow::Result<&'a str> {
    match value.as_deref() {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => bail!("{what} is required"),
    }
}

pub async fn verify(args: &VerifySharedArgs) -> anyhow::Result<VerifyReport> {
    verify_with(args, 1).await
}

/// The planner's row estimate of a table (0 when it has none).
async fn row_estimate(conn: &mut sqlx::PgConnection, table_sql: &str) -> anyhow::Result<f64> {
    let estimate: Option<f64> = sqlx::query(sql::TARGET_ROW_ESTIMATE)
        .bind(table_sql)
        .fetch_optional(conn)
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
    Ok(estimate.unwrap_or(0.0))
}

/// `--jobs`: the table cut into `jobs` key ranges of about equal source rows, with copy's range
/// computation ([`crate::copy::ranges::cut`]), sized by the larger of both sides' row estimates
/// (a wrong estimate only makes the last range bigger); one connection pair computes each.
async fn key_shares(
    source: &mut sqlx::PgConnection,
    table: &crate::plan::ResolvedTable,
    jobs: usize,
    target_estimate: f64,
) -> anyhow::Result<Vec<compare::Share>> {
    if jobs <= 1 {
        return Ok(Vec::new());
    }
    let source_estimate = match &table.plan.source {
        crate::plan::Source::Table(name) => row_estimate(source, &name.sql()).await?,
        crate::plan::Source::Query(_) => 0.0,
    };
    let rows = source_estimate.max(target_estimate).max(1.0);
    let range_rows = (rows / jobs as f64).ceil() as u64;
    let bounds = crate::copy::ranges::cut(source, table, None, range_rows, jobs).await?;
    Ok(bounds
        .iter()
        .map(|(after, up_to)| {
            let window = crate::plan::Window {
                after: after.as_deref(),
                up_to: up_to.as_deref(),
                ..Default::default()
            };
            compare::Share {
                source_from: sql::from_clause(&table.source_select_sql(&window, None), true),
                target_from: sql::from_clause(&table.target_window_sql(&window), true),
            }
        })
        .collect())
}

/// [`verify`] with `jobs` connections per side for the bucket checksums.
pub async fn verify_with(args: &VerifySharedArgs, jobs: usize) -> anyhow::Result<VerifyReport> {
    let source_url = required(&args.source_url, "--source-url (or LEGACY_DATABASE_URL)")?;
    let target_url = required(&args.target_url, "--target-url (or DATABASE_URL)")?;
    let plan = Plan::load(args.plan.as_deref())?;
    let tables = plan.select(&args.tables)?;
    let (source, target) = tokio::join!(
        db::connect("source", source_url),
        db::connect("target", target_url)
    );
    let (mut source, mut target) = (source?, target?);
    let database = db::database_name(target_url).unwrap_or_else(|| "the target database".into());
    crate::takeover::check_not_swapped(&mut source, &mut target, &plan, &database).await?;
    let resolved = crate::plan::resolve(&mut source, &mut target, &tables).await?;
    let jobs_of_tables = job::build_jobs(&resolved, &args.ignore_columns)?;
    // Further connection pairs for the checksums (the first pair also drills down).
    let mut helpers = Vec::with_capacity(jobs.saturating_sub(1));
    for _ in 1..jobs {
        let (source, target) = tokio::join!(
            db::connect("source", source_url),
            db::connect("target", target_url)
        );
        helpers.push((source?, target?));
    }
    let jobs = jobs_of_tables;

    let mut reports = Vec::with_capacity(jobs.len());
    for (job, table) in jobs.iter().zip(&resolved) {
        let estimate = row_estimate(&mut target, &job.target_sql)
            .await
            .with_context(|| format!("table {}: reading the target's row estimate", job.name))?;
        let mask = compare::bucket_mask(estimate);
        let shares = key_shares(&mut source, table, helpers.len() + 1, estimate).await?;
        reports.push(
            compare::compare_table(
                &mut source,
                &mut target,
                &mut helpers,
                job,
                &shares,
                mask,
                args.sample,
            )
            .await?,
        );
    }
    db::close(source).await;
    db::close(target).await;
    for (source, target) in helpers {
        db::close(source).await;
        db::close(target).await;
    }
    Ok(VerifyReport::new(reports))
}
