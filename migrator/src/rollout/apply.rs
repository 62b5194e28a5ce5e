//! One change of the live file, as a transaction: validate with the filter's rules, check the
//! target (an Envoy admin endpoint that watches this file), write atomically, wait for Envoy's
//! confirmation, and put the previous file back when Envoy rejects it. Every applied (or
//! rejected) change is appended to the audit log.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::envoy::{self, Admin, Confirmation, Discovery};
use super::live_file::{self, Ecds, ServiceState};
use super::{exit, state, Result, RolloutArgs, RolloutError};
use crate::cutover_verify::http;

/// Where a change goes: the watched file and the admin endpoint of the Envoy watching it.
#[derive(Debug, Clone)]
pub struct Target {
    pub file: PathBuf,
    pub admin_url: String,
    pub client: http::Client,
    /// How long Envoy gets to confirm an update.
    pub confirm_timeout: Duration,
}

impl Target {
    pub fn from_args(args: &RolloutArgs) -> Result<Target> {
        let file = args.file.clone().ok_or_else(|| {
            RolloutError::usage(
                "--file (or CUTOVER_ECDS_FILE) is required: the ECDS file Envoy watches",
            )
        })?;
        let admin_url = args.admin.clone().ok_or_else(|| {
            RolloutError::usage(
                "--admin (or CUTOVER_ADMIN_URL) is required: Envoy's admin URL, e.g. http://127.0.0.1:9901",
            )
        })?;
        http::parse_url(&admin_url).map_err(|e| RolloutError::usage(format!("--admin: {e}")))?;
        let client = http::Client::new(http::ClientOptions {
            ca_cert: args.cacert.clone(),
            ..http::ClientOptions::with_timeout(args.http_timeout)
        })
        .map_err(|e| RolloutError::usage(e.to_string()))?;
        Ok(Target {
            file,
            admin_url,
            client,
            confirm_timeout: args.timeout,
        })
    }

    /// Connects to the admin endpoint and checks that it watches the file (exit 6 otherwise).
    pub async fn admin(&self) -> Result<Admin> {
        let admin = Admin::connect(self.client.clone(), &self.admin_url).await?;
        admin.check_watches(&self.file).await?;
        Ok(admin)
    }
}

/// `set SERVICE STEP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// `new_percentage` = N, kill switch off.
    Percentage(u8),
    /// Kill switch on, percentage kept.
    Legacy,
    /// Kill switch off, percentage kept.
    Resume,
}

impl Step {
    pub fn parse(text: &str) -> Result<Step> {
        match text {
            "legacy" => Ok(Step::Legacy),
            "resume" => Ok(Step::Resume),
            _ => {
                let n: i64 = text.parse().map_err(|_| {
                    RolloutError::usage(format!(
                        "new_percentage: {text:?} is not 0..100, 'legacy' or 'resume'"
                    ))
                })?;
                u8::try_from(n)
                    .ok()
                    .filter(|p| *p <= 100)
                    .map(Step::Percentage)
                    .ok_or_else(|| {
                        RolloutError::usage(format!("new_percentage: {n} is outside 0..100"))
                    })
            }
        }
    }
}

#[derive(Debug, Clone)]
pub enum Change {
    Step { service: String, step: Step },
    DualWrite { service: String, on: bool, force: bool },
    Install(PathBuf),
}

impl Change {
    fn describe(&self) -> String {
        match self {
            Change::Step { service, step } => match step {
                Step::Percentage(p) => format!("set {service} {p}"),
                Step::Legacy => format!("set {service} legacy"),
                Step::Resume => format!("set {service} resume"),
            },
            Change::DualWrite { service, on, force } => format!(
                "dual-write {service} {}{}",
                if *on { "on" } else { "off" },
                if *force { " --force" } else { "" }
            ),
            Change::Install(path) => format!("install {}", path.display()),
        }
    }
}

/// What an applied change did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub before: Vec<(String, ServiceState)>,
    pub after: Vec<(String, ServiceState)>,
    pub changed: bool,
}

/// The live file as read: validated document and its exact bytes (to put back).
type LiveFile = (Ecds, Vec<u8>);

/// The live document after `change`, validated; `None` for `before` when the live file does not
/// exist yet (only `install` accepts that).
fn proposed(target: &Target, change: &Change) -> Result<(Option<LiveFile>, Ecds)> {
    match change {
        Change::Install(ready) => {
            let ready_bytes = live_file::read(ready)?;
            let ready_ecds = Ecds::parse(&ready_bytes, &ready.display().to_string())?;
            if !target.file.exists() {
                return Ok((None, ready_ecds));
            }
            let (live, bytes) = live_file::load(&target.file)?;
            // The live file's plugin settings (.wasm path, failure_policy) stay.
            let document = live
                .document
                .with_filter_config(ready_ecds.document.filter_config_json());
            let config = ready_ecds.config;
            Ok((Some((live, bytes)), Ecds { document, config }))
        }
        Change::Step { service, step } => {
            let (live, bytes) = live_file::load(&target.file)?;
            let step = *step;
            let next = live.edit_service(service, |s| match step {
                Step::Percentage(p) => {
                    s.insert("new_percentage".into(), p.into());
                    s.insert("use_legacy".into(), false.into());
                }
                Step::Legacy => {
                    s.insert("use_legacy".into(), true.into());
                }
                Step::Resume => {
                    s.insert("use_legacy".into(), false.into());
                }
            })?;
            Ok((Some((live, bytes)), next))
        }
        Change::DualWrite { service, on, .. } => {
            let (live, bytes) = live_file::load(&target.file)?;
            let on = *on;
            let next = live.edit_service(service, |s| {
                let block = s
                    .entry("dual_write")
                    .or_insert_with(|| serde_json::json!({}));
                if !block.is_object() {
                    *block = serde_json::json!({});
                }
                if let Some(object) = block.as_object_mut() {
                    object.insert("enabled".into(), on.into());
                }
            })?;
            Ok((Some((live, bytes)), next))
        }
    }
}

/// Dual-write off loses the legacy copy of new writes: only at 100 % with the kill switch off
/// and the last gate of `rollout run` passing at 100 % (or `--force`, which is logged).
fn dual_write_interlock(target: &Target, live: &Ecds, service: &str) -> Result<()> {
    let config = live.service(service)?;
    let mut reasons = Vec::new();
    if config.new_percentage != 100 {
        reasons.push(format!("new_percentage is {}, not 100", config.new_percentage));
    }
    if config.use_legacy {
        reasons.push("the kill switch is on".to_string());
    }
    match state::last_gate(&target.file, service) {
        Some(gate) if gate.passed && gate.percentage == 100 => {}
        Some(gate) => reasons.push(format!(
            "the last gate ({} at {} %) did not pass",
            gate.at, gate.percentage
        )),
        None => reasons.push("no gate at 100 % on record (run `migrator rollout run` to 100 first)".to_string()),
    }
    if reasons.is_empty() {
        return Ok(());
    }
    Err(RolloutError::usage(format!(
        "dual-write {service} off refused: {}; nothing was written (--force overrides, and is logged)",
        reasons.join("; ")
    )))
}

/// Applies `change` and waits for Envoy; the error carries the exit code.
pub async fn apply(target: &Target, change: Change) -> Result<Applied> {
    apply_with(target, change, true).await
}

/// `verbose`: print what was written to stderr (the one-step commands do; `run` prints its own
/// decision lines).
pub async fn apply_with(target: &Target, change: Change, verbose: bool) -> Result<Applied> {
    let (live, next) = proposed(target, &change)?;
    if let (Change::DualWrite { service, on: false, force: false }, Some((live, _))) =
        (&change, &live)
    {
        dual_write_interlock(target, live, service)?;
    }
    let directory = live_file::parent_dir(&target.file);
    if !directory.is_dir() {
        return Err(RolloutError::file(format!(
            "{}: the watched directory does not exist",
            directory.display()
        )));
    }
    let admin = target.admin().await?;
    let before_services = live.as_ref().map(|(l, _)| l.services()).unwrap_or_default();
    let after_services = next.services();
    let new_bytes = next.document.to_bytes();
    let unchanged = live
        .as_ref()
        .is_some_and(|(l, _)| l.document.filter_config_json() == next.document.filter_config_json());

    let discovery_before = Discovery::read(&admin.stats().await?);
    if !unchanged {
        live_file::write_atomically(&target.file, &new_bytes).map_err(|e| {
            RolloutError::file(format!("{}: cannot write: {e}", target.file.display()))
        })?;
        if verbose {
            eprintln!(
                "wrote {}:\n{}",
                target.file.display(),
                summary(&after_services)
            );
        }
    }
    let confirmation = envoy::confirm(
        &admin,
        discovery_before,
        &after_services,
        unchanged,
        target.confirm_timeout,
    )
    .await?;
    let outcome = match &confirmation {
        Confirmation::Live => "applied",
        Confirmation::Rejected(_) => "rejected",
        Confirmation::NotConfirmed(_) => "not_confirmed",
    };
    state::audit(
        &target.file,
        &change.describe(),
        &before_services,
        &after_services,
        outcome,
        unchanged,
    );
    match confirmation {
        Confirmation::Live => {
            if verbose {
                if unchanged {
                    eprintln!("unchanged: Envoy already serves this configuration.");
                } else {
                    eprintln!("Envoy accepted the update and reports it live.");
                }
            }
            Ok(Applied {
                before: before_services,
                after: after_services,
                changed: !unchanged,
            })
        }
        Confirmation::Rejected(reason) => {
            // The live file must always hold what Envoy serves.
            let restored = match &live {
                Some((_, previous)) => live_file::write_atomically(&target.file, previous)
                    .map(|()| "the previous file was put back".to_string())
                    .unwrap_or_else(|e| format!("putting the previous file back FAILED: {e}")),
                None => std::fs::remove_file(&target.file)
                    .map(|()| "the new file was removed".to_string())
                    .unwrap_or_else(|e| format!("removing the new file FAILED: {e}")),
            };
            Err(RolloutError::new(
                exit::REJECTED,
                format!("Envoy REJECTED the update ({reason}); the previous configuration keeps serving; {restored}"),
            ))
        }
        Confirmation::NotConfirmed(reason) => Err(RolloutError::new(
            exit::NOT_CONFIRMED,
            format!(
                "Envoy did not confirm the update within {:?} ({reason}); {} holds the new configuration",
                target.confirm_timeout,
                target.file.display()
            ),
        )),
    }
}

pub fn summary(services: &[(String, ServiceState)]) -> String {
    services
        .iter()
        .map(|(name, s)| format!("  {name}: {}", s.describe()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        assert_eq!(Step::parse("50").unwrap(), Step::Percentage(50));
        assert_eq!(Step::parse("0").unwrap(), Step::Percentage(0));
        assert_eq!(Step::parse("legacy").unwrap(), Step::Legacy);
        assert_eq!(Step::parse("resume").unwrap(), Step::Resume);
        for bad in ["150", "-1", "x", "50.5"] {
            let e = Step::parse(bad).unwrap_err();
            assert_eq!(e.code, exit::USAGE);
            assert!(e.message.starts_with("new_percentage"));
        }
    }
}
