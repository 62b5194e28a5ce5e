//! `migrator rollout`: changes of the cutover filter's configuration on a running Envoy that
//! loads it through ECDS from a watched file — one step at a time (`set`, `dual-write`,
//! `install`), the comparison of file and live gauges (`show`), and the automated, gated
//! rollout of one service (`run`, steered from another process with `status`/`pause`/`resume`/
//! `abort`). Exit codes: [`exit`]; docs/rollout.md.

mod apply;
mod envoy;
mod gate;
mod live_file;
mod prometheus;
mod run;
mod show;
mod state;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

pub use apply::Change;

/// Exit codes of `migrator rollout`.
pub mod exit {
    /// Applied and confirmed by Envoy; `show`: file and Envoy agree; `run`: last step held.
    pub const OK: u8 = 0;
    /// `show`: file and Envoy differ. `run`: a gate failed and the service was rolled back.
    pub const DIFFERS_OR_ROLLED_BACK: u8 = 1;
    /// Usage or invalid value (the message names the field); nothing written.
    pub const USAGE: u8 = 2;
    /// The file is missing or not an ECDS file of the cutover filter. `run`: paused (too many
    /// inconclusive intervals, or `pause`).
    pub const FILE_OR_PAUSED: u8 = 3;
    /// Envoy rejected the update; the previous file was put back.
    pub const REJECTED: u8 = 4;
    /// Envoy did not confirm the update in time.
    pub const NOT_CONFIRMED: u8 = 5;
    /// Wrong or unreachable target: the admin URL does not answer or is not an Envoy admin
    /// endpoint, or that Envoy does not watch the file. Nothing written.
    pub const TARGET: u8 = 6;
    /// `run`: another `run` holds the lock of this file.
    pub const LOCKED: u8 = 7;
}

/// A failure with the exit code it maps to; the message names what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RolloutError {
    pub code: u8,
    pub message: String,
}

impl RolloutError {
    pub fn new(code: u8, message: impl Into<String>) -> RolloutError {
        RolloutError {
            code,
            message: message.into(),
        }
    }
    pub fn usage(message: impl Into<String>) -> RolloutError {
        RolloutError::new(exit::USAGE, message)
    }
    pub fn file(message: impl Into<String>) -> RolloutError {
        RolloutError::new(exit::FILE_OR_PAUSED, message)
    }
    pub fn target(message: impl Into<String>) -> RolloutError {
        RolloutError::new(exit::TARGET, message)
    }
}

pub type Result<T> = std::result::Result<T, RolloutError>;

/// Options of `migrator rollout`.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// The ECDS file Envoy watches (it holds the filter's configuration).
    #[arg(long, env = "CUTOVER_ECDS_FILE", value_name = "PATH", global = true)]
    pub file: Option<PathBuf>,

    /// Envoy's admin base URL, e.g. http://127.0.0.1:9901 (https:// with --cacert).
    #[arg(
        long,
        env = "CUTOVER_ADMIN_URL",
        value_name = "URL",
        global = true,
        hide_env_values = true
    )]
    pub admin: Option<String>,

    /// One Envoy of a fleet, admin=URL,file=PATH (repeatable; instead of --file/--admin): a step is
    /// applied to and confirmed on every target, and gates judge the sum over the fleet.
    #[arg(long = "target", value_name = "admin=URL,file=PATH", global = true)]
    pub targets: Vec<String>,

    /// PEM file with the CA certificate of an https:// admin endpoint.
    #[arg(long, value_name = "FILE", global = true)]
    pub cacert: Option<PathBuf>,

    /// How long to wait for Envoy to confirm an update (durations: 500ms, 10s, 5m, 1h).
    #[arg(long, default_value = "10s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,

    /// Timeout of each HTTP request to Envoy.
    #[arg(long, default_value = "5s", value_parser = parse_duration, global = true)]
    pub http_timeout: Duration,

    /// Output format (json: one JSON document, or for `run` one JSON event per line).
    #[arg(long, value_enum, default_value_t = crate::verify::OutputFormat::Text, global = true)]
    pub format: crate::verify::OutputFormat,

    #[command(subcommand)]
    pub command: RolloutCommand,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Per service: percentage, kill switch and dual-write as the file says and as Envoy reports
    /// them live. Exit 1 when they differ.
    Show,
    /// Set a service's step: 0..100 (kill switch off), legacy (kill switch on), resume (kill
    /// switch off, percentage unchanged).
    Set { service: String, step: String },
    /// Turn a service's dual-write on or off. Off is refused unless the service is at 100 % with
    /// the kill switch off and its last gate passed, or --force (logged).
    DualWrite {
        service: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
        #[arg(long)]
        force: bool,
    },
    /// Install the filter configuration of a ready ECDS file (e.g. envoy/ecds/step-50.json),
    /// keeping the live file's Wasm plugin settings.
    Install { ready_file: PathBuf },
    /// The automated, gated rollout of one service through --steps.
    Run(Box<run::RunArgs>),
    /// The state of the `run` of this file.
    Status,
    /// Ask the running `run` to pause (it keeps the current step and exits 3).
    Pause,
    /// Clear a pause; `run` started again continues from the recorded step.
    Resume,
    /// Roll the service back to legacy (kill switch on) and stop the `run`.
    Abort,
}

/// Parses `500ms`, `30s`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration like 30s, 5m, 1h or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ))
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 7.0 * 24.0 * 3600.0 {
        return Err(format!("{text:?}: must be positive and at most a week"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Runs `migrator rollout …`; returns the exit code (errors printed here).
pub async fn run(args: RolloutArgs) -> anyhow::Result<u8> {
    let result = dispatch(&args).await;
    Ok(match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rollout: {}", crate::redact::scrub(&e.message));
            e.code
        }
    })
}

async fn dispatch(args: &RolloutArgs) -> Result<u8> {
    let target = apply::Fleet::from_args(args)?;
    match &args.command {
        RolloutCommand::Show => show::run(&target, args.format).await,
        RolloutCommand::Set { service, step } => {
            let step = apply::Step::parse(step)?;
            apply::apply(
                &target,
                Change::Step {
                    service: service.clone(),
                    step,
                },
            )
            .await?;
            Ok(exit::OK)
        }
        RolloutCommand::DualWrite {
            service,
            state,
            force,
        } => {
            let on = state == "on";
            apply::apply(
                &target,
                Change::DualWrite {
                    service: service.clone(),
                    on,
                    force: *force,
                },
            )
            .await?;
            Ok(exit::OK)
        }
        RolloutCommand::Install { ready_file } => {
            apply::apply(&target, Change::Install(ready_file.clone())).await?;
            Ok(exit::OK)
        }
        RolloutCommand::Run(run_args) => run::run(&target, run_args, args.format).await,
        RolloutCommand::Status => state::status(&target, args.format),
        RolloutCommand::Pause => state::request(&target, state::Request::Pause).await,
        RolloutCommand::Resume => state::request(&target, state::Request::Resume).await,
        RolloutCommand::Abort => state::request(&target, state::Request::Abort).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("").is_err());
    }
}
