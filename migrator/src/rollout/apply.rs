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

/// One Envoy: the watched file and the admin endpoint of the Envoy watching it.
#[derive(Debug, Clone)]
pub struct Target {
    pub file: PathBuf,
    pub admin_url: String,
    pub client: http::Client,
    /// How long Envoy gets to confirm an update.
    pub confirm_timeout: Duration,
}

impl Target {
    /// Connects to the admin endpoint and checks that it watches the file (exit 6 otherwise).
    pub async fn admin(&self) -> Result<Admin> {
        let admin = Admin::connect(self.client.clone(), &self.admin_url).await?;
        admin.check_watches(&self.file).await?;
        Ok(admin)
    }

    /// `admin URL (file)` for messages, without credentials.
    pub fn name(&self) -> String {
        format!(
            "{} ({})",
            crate::redact::url(&self.admin_url),
            self.file.display()
        )
    }
}

/// Where a change goes: one Envoy (`--file`/`--admin`) or several (`--target`, repeatable). The
/// rollout's state lives beside the first target's file.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The first target's file: `state.json`, the lock and the requests live beside it.
    pub file: PathBuf,
    pub targets: Vec<Target>,
}

/// Parses `admin=URL,file=PATH` (either order; a comma inside the URL is kept).
fn parse_target(arg: &str) -> Result<(String, PathBuf)> {
    let bad = || {
        RolloutError::usage(format!(
            "--target {}: expected admin=URL,file=PATH",
            crate::redact::url(arg)
        ))
    };
    let mut admin: Option<String> = None;
    let mut file: Option<String> = None;
    let mut last: Option<&str> = None;
    for part in arg.split(',') {
        if let Some(v) = part.strip_prefix("admin=") {
            admin = Some(v.to_string());
            last = Some("admin");
        } else if let Some(v) = part.strip_prefix("file=") {
            file = Some(v.to_string());
            last = Some("file");
        } else {
            let slot = match last {
                Some("admin") => admin.as_mut(),
                Some(_) => file.as_mut(),
                None => None,
            };
            let slot = slot.ok_or_else(bad)?;
            slot.push(',');
            slot.push_str(part);
        }
    }
    match (admin, file) {
        (Some(a), Some(f)) if !a.is_empty() && !f.is_empty() => Ok((a, PathBuf::from(f))),
        _ => Err(bad()),
    }
}

impl Fleet {
    pub fn from_args(args: &RolloutArgs) -> Result<Fleet> {
        let pairs: Vec<(String, PathBuf)> = if args.targets.is_empty() {
            let file = args.file.clone().ok_or_else(|| {
                RolloutError::usage(
                    "--file (or CUTOVER_ECDS_FILE) is required: the ECDS file Envoy watches (or --target admin=URL,file=PATH)",
                )
            })?;
            let admin = args.admin.clone().ok_or_else(|| {
                RolloutError::usage(
                    "--admin (or CUTOVER_ADMIN_URL) is required: Envoy's admin URL, e.g. http://127.0.0.1:9901",
                )
            })?;
            vec![(admin, file)]
        } else {
            if args.file.is_some() || args.admin.is_some() {
                return Err(RolloutError::usage(
                    "--target cannot be combined with --file/--admin (or CUTOVER_ECDS_FILE/CUTOVER_ADMIN_URL)",
                ));
            }
            args.targets
                .iter()
                .map(|t| parse_target(t))
                .collect::<Result<_>>()?
        };
        let client = http::Client::new(http::ClientOptions {
            ca_cert: args.cacert.clone(),
            ..http::ClientOptions::with_timeout(args.http_timeout)
        })
        .map_err(|e| RolloutError::usage(e.to_string()))?;
        let mut targets = Vec::new();
        for (admin_url, file) in pairs {
            http::parse_url(&admin_url)
                .map_err(|e| RolloutError::usage(format!("--admin: {e}")))?;
            if targets.iter().any(|t: &Target| t.file == file) {
                return Err(RolloutError::usage(format!(
                    "{}: given for two targets",
                    file.display()
                )));
            }
            targets.push(Target {
                file,
                admin_url,
                client: client.clone(),
                confirm_timeout: args.timeout,
            });
        }
        let file = targets
            .first()
            .map(|t| t.file.clone())
            .ok_or_else(|| RolloutError::usage("no target"))?;
        Ok(Fleet { file, targets })
    }

    /// Every target's admin endpoint, checked (exit 6 naming the target otherwise).
    pub async fn admins(&self) -> Result<Vec<Admin>> {
        let mut admins = Vec::new();
        for target in &self.targets {
            admins.push(target.admin().await?);
        }
        Ok(admins)
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
    Step {
        service: String,
        step: Step,
    },
    DualWrite {
        service: String,
        on: bool,
        force: bool,
    },
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
fn dual_write_interlock(fleet: &Fleet, live: &Ecds, service: &str) -> Result<()> {
    let config = live.service(service)?;
    let mut reasons = Vec::new();
    if config.new_percentage != 100 {
        reasons.push(format!(
            "new_percentage is {}, not 100",
            config.new_percentage
        ));
    }
    if config.use_legacy {
        reasons.push("the kill switch is on".to_string());
    }
    match state::last_gate(&fleet.file, service) {
        Some(gate) if gate.passed && gate.percentage == 100 => {}
        Some(gate) => reasons.push(format!(
            "the last gate ({} at {} %) did not pass",
            gate.at, gate.percentage
        )),
        None => reasons.push(
            "no gate at 100 % on record (run `migrator rollout run` to 100 first)".to_string(),
        ),
    }
    if reasons.is_empty() {
        return Ok(());
    }
    Err(RolloutError::usage(format!(
        "dual-write {service} off refused: {}; nothing was written (--force overrides, and is logged)",
        reasons.join("; ")
    )))
}

/// Applies `change` to every target and waits for each Envoy; the error carries the exit code.
pub async fn apply(fleet: &Fleet, change: Change) -> Result<Applied> {
    apply_with(fleet, change, true).await
}

/// What Envoy serves, as far as it can be known: its config dump when its stats confirm the
/// dump's entry was accepted, else the last document this tool saw it confirm, while Envoy has
/// accepted nothing since. The text says where it came from.
pub async fn serving(target: &Target, admin: &Admin) -> Result<Option<(Ecds, &'static str)>> {
    if let Some(served) = admin.served().await? {
        if let Ok(config) = served.config {
            let ecds = Ecds {
                document: served.document,
                config,
            };
            return Ok(Some((
                ecds,
                "the configuration Envoy serves (its config dump)",
            )));
        }
    }
    let now = Discovery::read(&admin.stats().await?);
    Ok(state::load_accepted(&target.file)
        .filter(|a| a.update_time == now.update_time)
        .and_then(|a| Ecds::parse(a.document.to_string().as_bytes(), "accepted.json").ok())
        .map(|ecds| {
            (
                ecds,
                "the last configuration Envoy confirmed (accepted.json)",
            )
        }))
}

/// The kill switch of `service`, built from what Envoy serves when the file is not that (a hand
/// edit Envoy refused, a file that does not parse): traffic must reach legacy in every state.
/// The returned "live" document is what Envoy serves, so a rejection puts that back.
async fn kill_switch(
    target: &Target,
    admin: &Admin,
    service: &str,
) -> Result<(Option<LiveFile>, Ecds)> {
    let from_file = proposed(
        target,
        &Change::Step {
            service: service.to_string(),
            step: Step::Legacy,
        },
    );
    let serving = serving(target, admin).await?;
    let (base, source) = match (serving, &from_file) {
        (Some((serving, _)), Ok((Some((live, _)), _)))
            if same_document(live.document.as_json(), &serving.document) =>
        {
            return from_file
        }
        (Some(serving), _) => serving,
        // Nothing known about what Envoy serves: the file, else the last document Envoy
        // confirmed to this tool (it served it once, so its plugin settings work).
        (None, Ok(_)) => return from_file,
        (None, Err(_)) => match state::load_accepted(&target.file)
            .and_then(|a| Ecds::parse(a.document.to_string().as_bytes(), "accepted.json").ok())
        {
            Some(ecds) => (
                ecds,
                "the last configuration Envoy confirmed (accepted.json)",
            ),
            None => return from_file,
        },
    };
    let why = match &from_file {
        Ok(_) => "a configuration Envoy does not serve (refused, or not yet picked up)".to_string(),
        Err(e) => e.message.clone(),
    };
    eprintln!(
        "{}: the file holds {why}; the kill switch is built from {source}.",
        target.file.display()
    );
    let next = base.edit_service(service, |s| {
        s.insert("use_legacy".into(), true.into());
    })?;
    let bytes = base.document.to_bytes();
    Ok((Some((base, bytes)), next))
}

/// The same ECDS document: the same plugin settings and the same filter configuration, whatever
/// the formatting of either.
fn same_document(file: &serde_json::Value, next: &cutover_filter::ecds::EcdsDocument) -> bool {
    let Ok(file) = cutover_filter::ecds::EcdsDocument::parse(file.to_string().as_bytes()) else {
        return false;
    };
    file.with_filter_config("").as_json() == next.with_filter_config("").as_json()
        && same_json(file.filter_config_json(), next.filter_config_json())
}

/// One target, checked and ready to be written.
struct Prepared<'a> {
    target: &'a Target,
    admin: Admin,
    live: Option<LiveFile>,
    next: Ecds,
    unchanged: bool,
}

fn service_names(services: &[(String, ServiceState)]) -> Vec<&str> {
    services.iter().map(|(n, _)| n.as_str()).collect()
}

/// `verbose`: print what was written to stderr (the one-step commands do; `run` prints its own
/// decision lines). Everything is checked on every target before the first file is written; when
/// one target rejects (or does not confirm), every target already written gets its previous file
/// back.
pub async fn apply_with(fleet: &Fleet, change: Change, verbose: bool) -> Result<Applied> {
    let mut prepared: Vec<Prepared<'_>> = Vec::new();
    for target in &fleet.targets {
        let mut connected = None;
        let (live, next) = match &change {
            Change::Step {
                service,
                step: Step::Legacy,
            } => {
                let admin = target.admin().await?;
                let proposal = kill_switch(target, &admin, service).await?;
                connected = Some(admin);
                proposal
            }
            _ => proposed(target, &change)?,
        };
        if let (
            Change::DualWrite {
                service,
                on: false,
                force: false,
            },
            Some((live, _)),
        ) = (&change, &live)
        {
            dual_write_interlock(fleet, live, service)?;
        }
        let directory = live_file::parent_dir(&target.file);
        if !directory.is_dir() {
            return Err(RolloutError::file(format!(
                "{}: the watched directory does not exist",
                directory.display()
            )));
        }
        if let Some(first) = prepared.first() {
            let (ours, theirs) = (next.services(), first.next.services());
            if service_names(&ours) != service_names(&theirs) {
                return Err(RolloutError::usage(format!(
                    "the targets disagree about the services: {} has {:?}, {} has {:?}; nothing was written",
                    first.target.name(),
                    service_names(&theirs),
                    target.name(),
                    service_names(&ours)
                )));
            }
        }
        let admin = match connected {
            Some(admin) => admin,
            None => target.admin().await?,
        };
        // Unchanged only when the file on disk already holds the new document.
        let on_disk: Option<serde_json::Value> = live_file::read(&target.file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let unchanged = on_disk.is_some_and(|file| same_document(&file, &next.document));
        prepared.push(Prepared {
            target,
            admin,
            live,
            next,
            unchanged,
        });
    }

    let several = prepared.len() > 1;
    let mut written: Vec<&Prepared<'_>> = Vec::new();
    // (target, rejected (else not confirmed), reason)
    let mut failure: Option<(String, bool, String)> = None;
    for p in &prepared {
        let target = p.target;
        let before = p
            .live
            .as_ref()
            .map(|(l, _)| l.services())
            .unwrap_or_default();
        let after = p.next.services();
        let discovery_before = Discovery::read(&p.admin.stats().await?);
        if !p.unchanged {
            live_file::write_atomically(&target.file, &p.next.document.to_bytes()).map_err(
                |e| RolloutError::file(format!("{}: cannot write: {e}", target.file.display())),
            )?;
            written.push(p);
            if verbose {
                eprintln!("wrote {}:\n{}", target.file.display(), summary(&after));
            }
        }
        let confirmation = envoy::confirm(
            &p.admin,
            discovery_before,
            &after,
            p.unchanged,
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
            &before,
            &after,
            outcome,
            p.unchanged,
        );
        match confirmation {
            Confirmation::Live => {
                let now = Discovery::read(&p.admin.stats().await?);
                state::save_accepted(&target.file, p.next.document.as_json(), now.update_time);
            }
            Confirmation::Rejected(reason) => {
                failure = Some((target.name(), true, reason));
                break;
            }
            Confirmation::NotConfirmed(reason) => {
                failure = Some((target.name(), false, reason));
                break;
            }
        }
        if verbose {
            let on = if several {
                format!(" ({})", target.name())
            } else {
                String::new()
            };
            if p.unchanged {
                eprintln!("unchanged: Envoy already serves this configuration{on}.");
            } else {
                eprintln!("Envoy accepted the update and reports it live{on}.");
            }
        }
    }

    let Some((failed_target, rejected, reason)) = failure else {
        let first = prepared
            .first()
            .ok_or_else(|| RolloutError::usage("no target"))?;
        return Ok(Applied {
            before: first
                .live
                .as_ref()
                .map(|(l, _)| l.services())
                .unwrap_or_default(),
            after: first.next.services(),
            changed: prepared.iter().any(|p| !p.unchanged),
        });
    };
    // A rejected update: every file written goes back (the live file always holds what Envoy
    // serves). Not confirmed in time on one target: the others go back too, so the fleet is on
    // one step; the unconfirmed target keeps the new file (it may be serving it).
    let mut restored = Vec::new();
    for p in written {
        let is_failed = p.target.name() == failed_target;
        if is_failed && !rejected {
            continue;
        }
        let what = match &p.live {
            Some((_, previous)) => live_file::write_atomically(&p.target.file, previous)
                .map(|()| "previous file put back".to_string())
                .unwrap_or_else(|e| format!("putting the previous file back FAILED: {e}")),
            None => std::fs::remove_file(&p.target.file)
                .map(|()| "new file removed".to_string())
                .unwrap_or_else(|e| format!("removing the new file FAILED: {e}")),
        };
        if !is_failed {
            if let Some((previous, _)) = &p.live {
                let discovery = Discovery::read(&p.admin.stats().await?);
                let back = envoy::confirm(
                    &p.admin,
                    discovery,
                    &previous.services(),
                    true,
                    p.target.confirm_timeout,
                )
                .await?;
                if back != Confirmation::Live {
                    restored.push(format!(
                        "{}: {what}, but Envoy did not confirm it",
                        p.target.name()
                    ));
                    continue;
                }
            }
        }
        restored.push(if several {
            format!("{}: {what}", p.target.name())
        } else {
            format!("the {what}")
        });
    }
    let restored = if restored.is_empty() {
        String::new()
    } else {
        format!("; {}", restored.join("; "))
    };
    let at = if several {
        format!("Envoy at {failed_target}")
    } else {
        "Envoy".to_string()
    };
    Err(if rejected {
        RolloutError::new(
            exit::REJECTED,
            format!("{at} REJECTED the update ({reason}); the previous configuration keeps serving{restored}"),
        )
    } else {
        RolloutError::new(
            exit::NOT_CONFIRMED,
            format!(
                "{at} did not confirm the update in time ({reason}); its file holds the new configuration{restored}"
            ),
        )
    })
}

/// The same JSON document, whatever its formatting.
fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
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
