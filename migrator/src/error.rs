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
//! | 7 | a batch was rejected by the target (constraint violation), or a source value does not convert to its target column's type; names the table, key (and column) |
//! | 8 | the connection holding the run's advisory lock was lost; the run stopped, committed work kept |
//!
//! Server errors are rendered by [`describe_db_error`]: message and the names PostgreSQL gives
//! (schema, table, column, constraint), never DETAIL, CONTEXT or any value from a row.

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
    pub const LOCK_LOST: u8 = 8;
    pub const TAKEN_OVER: u8 = 9;
    pub const RUN_STOPPED: u8 = 10;
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
    /// `url` is always redacted (see [`crate::redact::url`]).
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

    /// `origin`: where the known migrations come from ("the embedded migrations", a directory).
    #[error("the target has migration {version} ({description}) applied, which {origin} does not have; refusing to continue")]
    MigrationUnknown {
        version: i64,
        description: String,
        origin: String,
    },

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

    #[error("table {table}: the source row with key {key}: column {column}: {detail}; batches committed before it are kept")]
    ConversionFailed {
        table: String,
        key: String,
        column: String,
        detail: String,
    },

    #[error("{0}")]
    Usage(String),

    /// `copy` into a target that has taken over (`migrator takeover mark`).
    #[error("{0}")]
    TakenOver(String),

    /// The connection that held the advisory lock of `command` is gone (terminated, timed out,
    /// network), so another run may already hold the lock: this run stops at once.
    #[error("{command}: {during}: the target connection holding the {command} lock was lost ({cause}); stopped so that no other run works beside this one. {kept}")]
    LockLost {
        command: &'static str,
        during: String,
        cause: String,
        kept: String,
    },

    /// A copy worker's lease on a range expired and another worker took the range over: this
    /// worker's uncommitted batch is rolled back and it stops; the new holder redoes the range from
    /// its checkpoint.
    #[error("copy: table {table}: range {range} of run {run_id}: this worker's lease expired and {holder} took the range over; stopped (the range continues from its checkpoint with its new holder)")]
    LeaseLost {
        run_id: i64,
        table: String,
        range: i32,
        holder: String,
    },

    /// The run a worker works for was ended by another process (failed, lock lost, abandoned).
    #[error("copy: run {run_id} was ended by another process (status {status}); this worker stopped. Batches committed before are kept with their checkpoints")]
    RunStopped { run_id: i64, status: String },
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
            MigratorError::DataRejected { .. } | MigratorError::ConversionFailed { .. } => {
                exit::DATA_REJECTED
            }
            MigratorError::LockLost { .. } | MigratorError::LeaseLost { .. } => exit::LOCK_LOST,
            MigratorError::TakenOver(_) => exit::TAKEN_OVER,
            MigratorError::RunStopped { .. } => exit::RUN_STOPPED,
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

/// Prints `err` ([`render`]) to stderr and returns its exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", render(err));
    ExitCode::from(exit_code_of(err))
}

/// One line for an error chain: each context and cause once, database errors through
/// [`describe_db_error`], known secrets scrubbed. A cause whose text its parent already shows
/// (thiserror's `"…: {0}"` over a `#[source]`, as sqlx's errors do) is not repeated.
pub fn render(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let (text, last) = match cause.downcast_ref::<sqlx::Error>() {
            // describe_db_error already covers what sqlx's error wraps.
            Some(e) => (describe_db_error(e), true),
            None => match cause.downcast_ref::<sqlx::migrate::MigrateError>() {
                Some(sqlx::migrate::MigrateError::Execute(e))
                | Some(sqlx::migrate::MigrateError::ExecuteMigration(e, _)) => {
                    (describe_db_error(e), true)
                }
                _ => (cause.to_string(), false),
            },
        };
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        if last {
            break;
        }
    }
    crate::redact::scrub(&parts.join(": "))
}

/// The SQLSTATE of a database error, if `err` is one.
pub fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.to_string()),
        _ => None,
    }
}

/// Whether the connection `err` came from is gone: I/O and protocol errors, and the server's
/// connection-exception (08) and operator-intervention (57P: terminated, shut down, session timeout)
/// classes.
pub fn is_connection_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(_) => sqlstate(err).is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P") || code == "25P03"
        }),
        _ => false,
    }
}

/// Whether the server rejected one statement (a constraint, a cast, …) on a connection that is
/// still usable.
pub fn is_statement_error(err: &sqlx::Error) -> bool {
    sqlstate(err).is_some() && !is_connection_lost(err)
}

/// A database error in one line without any row value: PostgreSQL's message (for data exceptions
/// and errors raised by functions, whose messages quote values, without the quoted parts) and the
/// objects it names. DETAIL (`Failing row contains (…)`, `Key (email)=(…)`) and CONTEXT are never
/// shown; only the column names of a `Key (…)=` detail are taken from it.
pub fn describe_db_error(err: &sqlx::Error) -> String {
    let text = match err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let mut text = safe_message(&code, db.message());
            let mut named = Vec::new();
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(table) = pg.table() {
                    named.push(match pg.schema() {
                        Some(schema) => format!("table {schema}.{table}"),
                        None => format!("table {table}"),
                    });
                }
                if let Some(column) = pg.column() {
                    named.push(format!("column {column}"));
                }
                if let Some(columns) = pg.detail().and_then(key_columns) {
                    named.push(format!("key columns ({columns})"));
                }
                if let Some(constraint) = pg.constraint() {
                    named.push(format!("constraint {constraint}"));
                }
                if let Some(data_type) = pg.data_type() {
                    named.push(format!("type {data_type}"));
                }
            }
            if !named.is_empty() {
                text.push_str(&format!(" [{}]", named.join(", ")));
            }
            if !code.is_empty() {
                text.push_str(&format!(" (SQLSTATE {code})"));
            }
            text
        }
        sqlx::Error::Io(e) => format!("the connection to the database was lost ({e})"),
        other => other.to_string(),
    };
    crate::redact::scrub(&text)
}

/// The server message without values: data exceptions (class 22) quote the offending value
/// (`invalid input syntax for type boolean: "…"`), messages raised by functions and triggers
/// (class P0) may hold anything.
fn safe_message(code: &str, message: &str) -> String {
    if code.starts_with("P0") {
        return "raised by a function or trigger (message not shown: it may hold row values; see the server log)".into();
    }
    if !code.starts_with("22") {
        return message.to_string();
    }
    let mut out = String::new();
    let mut rest = message;
    while let Some(start) = rest.find('"') {
        out.push_str(&rest[..start]);
        match rest[start + 1..].find('"') {
            Some(end) => {
                out.push_str("(value not shown)");
                rest = &rest[start + 1 + end + 1..];
            }
            None => {
                rest = "";
                out.push_str("(value not shown)");
            }
        }
    }
    out.push_str(rest);
    // Unquoted values: `value 1e40 is out of range …` style messages keep only their shape.
    out
}

/// `a, b` from a detail `Key (a, b)=(…) …` (unique, exclusion and foreign-key violations).
fn key_columns(detail: &str) -> Option<&str> {
    let rest = detail.strip_prefix("Key (")?;
    let end = rest.find(")=(")?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_cut_from_data_exception_messages() {
        assert_eq!(
            safe_message(
                "22P02",
                r#"invalid input syntax for type boolean: "user_19520""#
            ),
            "invalid input syntax for type boolean: (value not shown)"
        );
        assert_eq!(
            safe_message(
                "23505",
                r#"duplicate key value violates unique constraint "users_email_key""#
            ),
            r#"duplicate key value violates unique constraint "users_email_key""#
        );
        assert!(!safe_message("P0001", "bad email a@b.c").contains("a@b.c"));
        assert_eq!(
            key_columns("Key (email)=(a@b.c) already exists."),
            Some("email")
        );
        assert_eq!(key_columns("Failing row contains (1, a@b.c)."), None);
    }

    #[test]
    fn a_cause_already_shown_is_not_repeated() {
        let io = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "expected to read 5 bytes",
        );
        let err = anyhow::Error::from(sqlx::Error::Io(io)).context("table users: writing a batch");
        let text = render(&err);
        assert_eq!(
            text.matches("expected to read 5 bytes").count(),
            1,
            "{text}"
        );
        assert!(text.starts_with("table users: writing a batch: "), "{text}");
    }
}
