//! Command-line surface (clap derive). Doc comments are the help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Applies the new system's schema, copies legacy data idempotently and resumably, and verifies
/// the result. Exit codes: docs/migrator.md.
#[derive(Debug, Parser)]
#[command(name = "migrator", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the embedded migrations (migrations/NNN_*.sql), or those of --migrations DIR, to the
    /// target database.
    Schema(SchemaArgs),
    /// Show applied and pending migrations and the copy checkpoints of the target database.
    Status(StatusArgs),
    /// Copy legacy data into the target, table by table in plan order: insert what is missing,
    /// update what changed, leave the rest untouched; resumable after an interruption.
    Copy(CopyArgs),
    /// Check the plan against both databases and print the source projection of each table.
    Plan(PlanCommandArgs),
    /// Test/demo tool: create the legacy fixture schema in the source database and fill it with
    /// generated rows.
    GenerateLegacy(GenerateLegacyArgs),
    /// Compare the source projection (same plan as copy) with the target, exactly: keys missing in
    /// the target, extra in the target, and changed rows with the differing columns.
    /// Exit 0 identical, 1 differences, 2 error.
    Verify(crate::verify::VerifyArgs),
    /// The cutover checklist from Envoy's live stats (split, 5xx rate, latency, dual-write),
    /// health requests through Envoy, and optionally verify. Exit 0 all pass, 1 a check fails or
    /// lacks data, 2 error.
    CutoverVerify(Box<crate::cutover_verify::CutoverVerifyArgs>),
    /// Rollout steps on a running Envoy through its watched ECDS file: show, set, dual-write,
    /// install, and the automated gated `run` (with status/pause/resume/abort). Exit codes:
    /// docs/rollout.md.
    Rollout(Box<crate::rollout::RolloutArgs>),
    /// Record (mark), remove (clear) or show (status) that the target has taken over from the
    /// source; once marked, `copy` refuses (exit 9) unless --after-takeover.
    Takeover(crate::takeover::TakeoverArgs),
}

/// The target (new system) database.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Target database URL (the new system's database). Never printed with its password.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub target_url: crate::redact::SecretUrl,
}

/// The source (legacy) database.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Source database URL (the legacy database). May be the same database or server as the target.
    #[arg(long, env = "LEGACY_DATABASE_URL", hide_env_values = true)]
    pub source_url: crate::redact::SecretUrl,
}

/// The copy plan.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Plan file (TOML, format in docs/migrator.md); default: the plan shipped in the binary
    /// (migrations/plan.toml).
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
}

/// `--tables`: a subset of the plan's tables.
#[derive(Debug, Clone, Args)]
pub struct TablesArgs {
    /// Only these plan tables (comma-separated plan names); they still run in plan order.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub tables: Vec<String>,
}

/// `--migrations DIR`: whose migrations `schema` applies and `status` reports.
#[derive(Debug, Clone, Args)]
pub struct MigrationsArgs {
    /// A directory of sqlx-style migrations (NNN_name.sql) to use instead of the embedded ones
    /// (this repository's migrations/).
    #[arg(long, env = "MIGRATIONS_DIR", value_name = "DIR")]
    pub migrations: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub migrations: MigrationsArgs,
    /// List the migrations that would be applied; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub migrations: MigrationsArgs,
    /// Output format: text, or JSON with a stable schema (`migrator-status/v1`, docs/migrator.md).
    #[arg(long, value_enum, default_value_t = crate::verify::OutputFormat::Text)]
    pub format: crate::verify::OutputFormat,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    #[command(flatten)]
    pub selection: PlanCommandArgs,
    /// Rows per batch; each batch commits together with its checkpoint.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_size: u32,
    /// Report what would be inserted and updated; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Ignore the checkpoints of an interrupted run and start from the beginning.
    #[arg(long)]
    pub restart: bool,
    /// Fail (exit 6) instead of waiting when another copy into the same target holds the lock.
    #[arg(long)]
    pub no_wait: bool,
    /// After copying, delete target rows whose key is no longer in the source (batched,
    /// checkpointed, each key recorded). Needs --no-target-writes (not for --dry-run); refused when
    /// the plan says target_has_taken_over = true.
    #[arg(long)]
    pub prune: bool,
    /// Confirms, for --prune, that nothing but copy and dual-write shadows has written the target
    /// (it has not served any request as primary). Logged and recorded with the prune.
    #[arg(long, requires = "prune")]
    pub no_target_writes: bool,
    /// Copy even though the target has taken over (`migrator takeover mark`); rows with a newer
    /// plan version on the target are still kept.
    #[arg(long)]
    pub after_takeover: bool,
    /// Key ranges (work units) processed at once by this process, each with its own connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub jobs: u32,
    /// Source rows per key range (work unit); a table with fewer rows is one range. Used when a
    /// run starts; a resumed or joined run keeps its ranges.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub range_rows: u64,
    /// Attach to a running copy run (by default the latest running run of this plan and
    /// --tables) and work on its ranges beside the processes already on it.
    #[arg(long, value_name = "RUN", num_args = 0..=1, default_missing_value = "0")]
    pub join: Option<i64>,
    /// Seconds a worker holds a claimed range without committing a batch before another worker
    /// may take the range over (every batch commit renews it).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub lease_secs: u32,
}

/// Both databases and the plan tables to work on: `plan`'s options, which `copy` shares.
#[derive(Debug, Args)]
pub struct PlanCommandArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub tables: TablesArgs,
}

#[derive(Debug, Args)]
pub struct GenerateLegacyArgs {
    // The legacy database to fill (the copy's source).
    #[command(flatten)]
    pub source: SourceArgs,
    /// Rows per table.
    #[arg(long, default_value_t = 1000)]
    pub rows: u64,
    /// Only these legacy tables (users, conversations, messages, tasks, task_executions).
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub tables: Vec<String>,
    /// Drop the legacy schema first (otherwise it must not hold rows in the tables to generate).
    #[arg(long)]
    pub reset: bool,
}
