//! Typed errors of the library and their exit codes.
//!
//! Commands return `anyhow::Result`, adding context with `anyhow::Context`; [`exit_code_of`] finds
//! the first [`MigratorError`] in the chain to pick the exit code (2 when there is none).
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | differences found / a check failed (`verify`, `cutover-verify`) |
//! | 2 | usage or any other error |
//! | 3 | cannot connect: server unreachable, authentication failed, database missing |
//! | 4 | target not migrated, or an applied migration was changed (checksum mismatch) |
//! | 5 | plan invalid (against the databases or in itself); the message names the table/column |
//! | 6 | another run holds the lock and `--no-wait` was given |
//! | 7 | a batch was rejected by the target (constraint violation); names the table and key |

use std::process::ExitCode;

/// Exit codes, documented in docs/migrator.md.
pub mod exit {
    pub const SUCCESS: u8 = 0;
    pub const DIFFERENCES: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const CONNECT: u8 = 3;
    pub const NOT_MIGRATED: u8 = 4;
    pub const PLAN_INVALID: u8 = 5;
    pub const LOCKED: u8 = 6;
    pub const DATA_REJECTED: u8 = 7;
}

/// Why a connection could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    Unreachable,
    Authentication,
    MissingDatabase,
    Other,
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnectFailure::Unreachable => "server unreachable",
            ConnectFailure::Authentication => "authentication failed",
            ConnectFailure::MissingDatabase => "database does not exist",
            ConnectFailure::Other => "connection failed",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigratorError {
    /// `url` is always redacted (see [`crate::db::redact`]).
    #[error("cannot connect to the {role} database {url}: {failure}: {detail}")]
    Connect {
        role: &'static str,
        url: String,
        failure: ConnectFailure,
        detail: String,
    },

    #[error("invalid database URL for the {role} database: {detail}")]
    BadUrl { role: &'static str, detail: String },

    #[error("the target database is not migrated: {detail}; run `migrator schema` first")]
    NotMigrated { detail: String },

    #[error("migration {version} ({description}) was changed after it was applied: its checksum differs from the one recorded in the target; refusing to continue")]
    MigrationChanged { version: i64, description: String },

    #[error("the target has migration {version} applied, which this migrator does not know; refusing to continue")]
    MigrationUnknown { version: i64 },

    #[error("invalid plan: {0}")]
    PlanInvalid(String),

    #[error("{0}")]
    Locked(String),

    #[error("table {table}: the target rejected the row with key {key}: {detail}; batches committed before it are kept, this batch was rolled back")]
    DataRejected {
        table: String,
        key: String,
        detail: String,
    },

    #[error("{0}")]
    Usage(String),
}

impl MigratorError {
    pub fn exit_code(&self) -> u8 {
        match self {
            MigratorError::Connect { .. } => exit::CONNECT,
            MigratorError::BadUrl { .. } | MigratorError::Usage(_) => exit::USAGE,
            MigratorError::NotMigrated { .. }
            | MigratorError::MigrationChanged { .. }
            | MigratorError::MigrationUnknown { .. } => exit::NOT_MIGRATED,
            MigratorError::PlanInvalid(_) => exit::PLAN_INVALID,
            MigratorError::Locked(_) => exit::LOCKED,
            MigratorError::DataRejected { .. } => exit::DATA_REJECTED,
        }
    }
}

/// The exit code for an error chain: the first [`MigratorError`] decides, anything else is 2.
pub fn exit_code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<MigratorError>())
        .map(MigratorError::exit_code)
        .unwrap_or(exit::USAGE)
}

/// Prints `err` (with its context chain, secrets scrubbed) to stderr and returns its exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", crate::db::scrub_secrets(&format!("{err:#}")));
    ExitCode::from(exit_code_of(err))
}
