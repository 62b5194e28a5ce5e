//! Files beside the ECDS file, in the directory `.<file name>.rollout/` next to it (a
//! subdirectory, so that writing them does not wake Envoy's watch of the ECDS directory):
//! - `state.json` — the `run` of this file: service, steps, current step, phase, counts, last
//!   gate (written atomically);
//! - `lock` — held (exclusive `flock`) by the running `run`; a second `run` is refused;
//! - `request` — `pause` or `abort` from another process, picked up by the running `run`;
//! - `audit.log` — one JSON line per change applied (or rejected): who, when, before, after;
//! - `gates.json` — the last gate judged per service, kept across the runs of other services
//!   (the dual-write interlock reads it);
//! - `accepted.json` — the last ECDS document this tool saw Envoy confirm, with Envoy's
//!   `update_time` then: the base of the kill switch when the file holds something else.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::apply::Fleet;
use super::live_file::{self, ServiceState};
use super::{exit, Result, RolloutError};
use crate::verify::OutputFormat;

/// `accepted.json`, schema `rollout-accepted/v1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    pub schema: String,
    /// Envoy's `update_time` (ms since the epoch) when it was confirmed: while Envoy reports the
    /// same, it has accepted nothing since, so this is what it serves.
    pub update_time: f64,
    pub document: serde_json::Value,
}

/// Records the document Envoy confirmed serving (best effort: a record that cannot be written
/// only costs the kill switch one fallback).
pub fn save_accepted(file: &Path, document: &serde_json::Value, update_time: f64) {
    let Ok(dir) = ensure_dir(file) else { return };
    let record = Accepted {
        schema: "rollout-accepted/v1".to_string(),
        update_time,
        document: document.clone(),
    };
    if let Ok(bytes) = serde_json::to_vec_pretty(&record) {
        let _ = live_file::write_atomically(&dir.join("accepted.json"), &bytes);
    }
}

pub fn load_accepted(file: &Path) -> Option<Accepted> {
    let bytes = live_file::read(&state_dir(file).join("accepted.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn state_dir(file: &Path) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cutover".to_string());
    live_file::parent_dir(file).join(format!(".{name}.rollout"))
}

fn ensure_dir(file: &Path) -> Result<PathBuf> {
    let dir = state_dir(file);
    std::fs::create_dir_all(&dir)
        .map_err(|e| RolloutError::file(format!("{}: cannot create: {e}", dir.display())))?;
    Ok(dir)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Applying or holding `steps[step_index]`.
    Running,
    /// Stopped by `pause` or too many inconclusive intervals; `run` again continues.
    Paused,
    /// The last step was held: done.
    Completed,
    /// A gate failed: kill switch on.
    RolledBack,
    /// `abort`: kill switch on.
    Aborted,
}

/// The last gate judged for a service (also read by the dual-write interlock).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastGate {
    pub percentage: u8,
    pub passed: bool,
    pub at: String,
}

/// `state.json`, schema `rollout-state/v1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub schema: String,
    pub service: String,
    pub steps: Vec<u8>,
    /// Index in `steps` of the step applied last (Envoy serves it).
    pub step_index: usize,
    pub phase: Phase,
    /// Passing intervals of the current step so far.
    pub passed_intervals: u32,
    pub failed_intervals: u32,
    pub inconclusive_intervals: u32,
    pub last_gate: Option<LastGate>,
    pub reason: Option<String>,
    pub pid: u32,
    pub updated_at: String,
}

impl RunState {
    pub fn current_step(&self) -> Option<u8> {
        self.steps.get(self.step_index).copied()
    }

    /// The current step for messages: `50 %`.
    pub fn step_text(&self) -> String {
        self.current_step()
            .map_or_else(|| "?".to_string(), |p| format!("{p} %"))
    }
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn load(file: &Path) -> Result<Option<RunState>> {
    let path = state_dir(file).join("state.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            RolloutError::file(format!("{}: not a rollout state file: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RolloutError::file(format!("{}: {e}", path.display()))),
    }
}

pub fn save(file: &Path, state: &mut RunState) -> Result<()> {
    let dir = ensure_dir(file)?;
    state.updated_at = now();
    if let Some(gate) = &state.last_gate {
        let mut gates = load_gates(file);
        gates.insert(state.service.clone(), gate.clone());
        let bytes = serde_json::to_vec_pretty(&gates).unwrap_or_default();
        live_file::write_atomically(&dir.join("gates.json"), &bytes).map_err(|e| {
            RolloutError::file(format!("{}: cannot write the gates: {e}", dir.display()))
        })?;
    }
    let mut bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    bytes.push(b'\n');
    live_file::write_atomically(&dir.join("state.json"), &bytes)
        .map_err(|e| RolloutError::file(format!("{}: cannot write the state: {e}", dir.display())))
}

/// `gates.json`: service → its last gate. A missing or unreadable file is no gate on record
/// (the interlock then refuses, which is the safe side).
fn load_gates(file: &Path) -> BTreeMap<String, LastGate> {
    live_file::read(&state_dir(file).join("gates.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The last gate of `service`, also when another service's `run` used this file since.
pub fn last_gate(file: &Path, service: &str) -> Option<LastGate> {
    load_gates(file).remove(service).or_else(|| {
        load(file)
            .ok()
            .flatten()
            .filter(|s| s.service == service)
            .and_then(|s| s.last_gate)
    })
}

/// The exclusive lock of the running `run`; released when dropped (or the process dies).
pub struct RunLock {
    _file: File,
}

pub fn lock(file: &Path) -> Result<RunLock> {
    let dir = ensure_dir(file)?;
    let path = dir.join("lock");
    let handle = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| RolloutError::file(format!("{}: {e}", path.display())))?;
    match handle.try_lock() {
        Ok(()) => Ok(RunLock { _file: handle }),
        Err(std::fs::TryLockError::WouldBlock) => Err(RolloutError::new(
            exit::LOCKED,
            format!(
                "another `migrator rollout run` is running for {} (it holds {}); nothing was changed",
                file.display(),
                path.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(RolloutError::file(format!("{}: cannot lock: {e}", path.display())))
        }
    }
}

/// True while a `run` holds the lock.
pub fn is_running(file: &Path) -> bool {
    let path = state_dir(file).join("lock");
    match OpenOptions::new().write(true).open(&path) {
        Ok(handle) => matches!(handle.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Pause,
    Resume,
    Abort,
}

/// The pending request for the running `run`, if any.
pub fn pending_request(file: &Path) -> Option<Request> {
    let text = std::fs::read_to_string(state_dir(file).join("request")).ok()?;
    match text.trim() {
        "pause" => Some(Request::Pause),
        "abort" => Some(Request::Abort),
        _ => None,
    }
}

pub fn clear_request(file: &Path) {
    let _ = std::fs::remove_file(state_dir(file).join("request"));
}

/// `pause` / `resume` / `abort` from another process.
pub async fn request(target: &Fleet, request: Request) -> Result<u8> {
    let Some(mut state) = load(&target.file)? else {
        return Err(RolloutError::usage(format!(
            "no `rollout run` on record for {}",
            target.file.display()
        )));
    };
    let dir = ensure_dir(&target.file)?;
    let running = is_running(&target.file);
    match request {
        Request::Pause | Request::Abort if running => {
            let word = if request == Request::Pause {
                "pause"
            } else {
                "abort"
            };
            live_file::write_atomically(&dir.join("request"), word.as_bytes())
                .map_err(|e| RolloutError::file(format!("{}: {e}", dir.display())))?;
            eprintln!(
                "asked the running `rollout run` (pid {}) to {word}",
                state.pid
            );
        }
        Request::Pause => {
            if state.phase == Phase::Running {
                state.phase = Phase::Paused;
                state.reason = Some("paused by `rollout pause` while no run was active".into());
                save(&target.file, &mut state)?;
            }
            eprintln!(
                "paused: `rollout run` continues from step {}",
                state.step_text()
            );
        }
        Request::Resume => {
            clear_request(&target.file);
            if state.phase == Phase::Paused {
                state.phase = Phase::Running;
                state.reason = None;
                save(&target.file, &mut state)?;
            }
            eprintln!(
                "resumed: {}",
                if running {
                    "the running `rollout run` continues"
                } else {
                    "start `rollout run` again to continue from the recorded step"
                }
            );
        }
        Request::Abort => {
            // No run active: roll back here.
            let service = state.service.clone();
            super::run::roll_back(target, &service, false).await?;
            state.phase = Phase::Aborted;
            state.reason = Some("aborted by `rollout abort`".into());
            save(&target.file, &mut state)?;
            eprintln!("aborted: {service} is on legacy (kill switch on)");
        }
    }
    Ok(exit::OK)
}

/// `status` (`--format json`: the state file plus `running`).
pub fn status(target: &Fleet, format: OutputFormat) -> Result<u8> {
    let state = load(&target.file)?;
    let running = is_running(&target.file);
    match format {
        OutputFormat::Json => {
            let value = serde_json::json!({
                "schema": "rollout-status/v1",
                "file": target.file.display().to_string(),
                "running": running,
                "state": state,
            });
            println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        }
        OutputFormat::Text => match &state {
            None => println!("no `rollout run` on record for {}", target.file.display()),
            Some(s) => println!(
                "{}: {} steps {:?}, at {} (step {} of {}), {:?}{}; intervals passed {}, failed {}, inconclusive {}{}",
                target.file.display(),
                s.service,
                s.steps,
                s.step_text(),
                s.step_index + 1,
                s.steps.len(),
                s.phase,
                if running { ", running" } else { ", not running" },
                s.passed_intervals,
                s.failed_intervals,
                s.inconclusive_intervals,
                s.reason.as_ref().map(|r| format!("; {r}")).unwrap_or_default()
            ),
        },
    }
    Ok(exit::OK)
}

#[derive(Serialize)]
struct AuditEntry<'a> {
    time: String,
    user: String,
    pid: u32,
    file: String,
    change: &'a str,
    outcome: &'a str,
    unchanged: bool,
    before: serde_json::Map<String, serde_json::Value>,
    after: serde_json::Map<String, serde_json::Value>,
}

fn by_name(services: &[(String, ServiceState)]) -> serde_json::Map<String, serde_json::Value> {
    services
        .iter()
        .map(|(n, s)| (n.clone(), serde_json::to_value(s).unwrap_or_default()))
        .collect()
}

/// Appends one line to `audit.log`. A failure to log is reported but does not undo the change.
pub fn audit(
    file: &Path,
    change: &str,
    before: &[(String, ServiceState)],
    after: &[(String, ServiceState)],
    outcome: &str,
    unchanged: bool,
) {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self")
                .map(|m| format!("uid {}", m.uid()))
                .unwrap_or_default()
        });
    let entry = AuditEntry {
        time: now(),
        user,
        pid: std::process::id(),
        file: file.display().to_string(),
        change,
        outcome,
        unchanged,
        before: by_name(before),
        after: by_name(after),
    };
    let result = ensure_dir(file).map_err(|e| e.message).and_then(|dir| {
        let mut line = serde_json::to_string(&entry).unwrap_or_default();
        line.push('\n');
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("audit.log"))
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| e.to_string())
    });
    if let Err(e) = result {
        eprintln!("rollout: warning: could not append to the audit log: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_state(service: &str, gate: Option<LastGate>) -> RunState {
        RunState {
            schema: "rollout-state/v1".to_string(),
            service: service.to_string(),
            steps: vec![10, 100],
            step_index: 1,
            phase: Phase::Completed,
            passed_intervals: 1,
            failed_intervals: 0,
            inconclusive_intervals: 0,
            last_gate: gate,
            reason: None,
            pid: 1,
            updated_at: String::new(),
        }
    }

    #[test]
    fn a_gate_survives_the_run_of_another_service() {
        let dir = std::env::temp_dir().join(format!("rollout-gates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cutover.json");
        let passed = |percentage| LastGate {
            percentage,
            passed: true,
            at: now(),
        };
        save(&file, &mut run_state("chat", Some(passed(100)))).unwrap();
        save(&file, &mut run_state("orchestration", Some(passed(50)))).unwrap();
        let chat = last_gate(&file, "chat").expect("chat's gate kept");
        assert!(chat.passed && chat.percentage == 100);
        assert_eq!(
            last_gate(&file, "orchestration").map(|g| g.percentage),
            Some(50)
        );
        assert!(last_gate(&file, "search").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
