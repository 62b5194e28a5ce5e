//! The `migrator` library: everything the `migrator` binary does, one module per subcommand.
//!
//! Shared foundation (used by every subcommand):
//! - [`cli`]: clap types; shared option groups [`cli::SourceArgs`] (`--source-url`,
//!   env `LEGACY_DATABASE_URL`), [`cli::TargetArgs`] (`--target-url`, env `DATABASE_URL`),
//!   [`cli::PlanArgs`] (`--plan`, default the shipped plan), [`cli::TablesArgs`] (`--tables`).
//! - [`redact`] (a leaf module): [`redact::url`] renders a URL or connection string without its
//!   secrets, [`redact::scrub`] removes known secrets from any text, [`redact::SecretUrl`] holds a
//!   URL option whose `Debug`/`Display` are redacted.
//! - [`db`]: [`db::connect`] (fixed session settings, failures classified into
//!   [`error::ConnectFailure`]).
//! - [`error`]: [`error::MigratorError`] and the exit codes; [`error::render`] prints an error
//!   chain once per cause, [`error::describe_db_error`] a server error without row values.
//! - [`lock`]: [`lock::AdvisoryLock`], the run lock of `copy` and `schema` on their writing
//!   connection (lost connection → exit 8).
//! - [`plan`]: the plan file, [`plan::resolve`] against both databases, and the SQL of the source
//!   projection / target select ([`plan::ResolvedTable`]).
//! - [`schema::check_migrated`]: "is the target at the embedded schema version?" (exit 4 if not).
//! - [`migrations_dir`]: the migrations of `schema`/`status`: embedded, or `--migrations DIR`.

// As in the filter: no unwrap/expect/panic outside tests; errors are values with exit codes.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod cli;
pub mod copy;
pub mod cutover_verify;
pub mod db;
pub mod error;
pub mod fixture;
pub mod lock;
pub mod migrations_dir;
pub mod plan;
mod plan_cmd;
mod progress;
pub mod redact;
pub mod rollout;
pub mod schema;
pub mod status;
pub mod verify;

use std::process::ExitCode;

use cli::{Cli, Command};

/// Runs one command; errors are printed to stderr (secrets scrubbed) and mapped to exit codes.
pub async fn run(cli: Cli) -> ExitCode {
    let result: anyhow::Result<u8> = match cli.command {
        Command::Schema(args) => schema::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Copy(args) => copy::run(args).await,
        Command::Plan(args) => plan_cmd::run(args).await,
        Command::GenerateLegacy(args) => fixture::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::CutoverVerify(args) => cutover_verify::run(*args).await,
        Command::Rollout(args) => rollout::run(*args).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => error::report(&err),
    }
}
