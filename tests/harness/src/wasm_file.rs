//! Finding the filter `.wasm` the tests drive: `CUTOVER_WASM`, else the workspace's release build,
//! rebuilt when missing or older than the filter's sources.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// Where `make wasm` puts the filter, relative to the workspace root.
pub const DEFAULT_WASM: &str = "target/wasm32-wasip1/release/cutover_filter.wasm";
/// Target directory for a build started from inside a test: `cargo test` may hold the lock on the
/// workspace `target/` while tests run, so a nested build there could wait forever.
pub const FIXTURE_TARGET_DIR: &str = "target/harness-wasm-build";

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The filter `.wasm` for this test process, located (and built if needed) once.
pub fn filter_wasm() -> Result<PathBuf, String> {
    static LOCATED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LOCATED
        .get_or_init(|| locate_wasm(std::env::var_os("CUTOVER_WASM"), &workspace_root()))
        .clone()
}

/// `override_path` (the value of `CUTOVER_WASM`) wins and must exist; otherwise the default build
/// under `workspace` is used when it is newer than every filter source, else the filter is built.
pub fn locate_wasm(override_path: Option<OsString>, workspace: &Path) -> Result<PathBuf, String> {
    if let Some(path) = override_path.filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "CUTOVER_WASM={} does not exist: build the filter with `make wasm`, or unset \
                 CUTOVER_WASM to let the harness build it",
                path.display()
            ))
        };
    }
    let default = workspace.join(DEFAULT_WASM);
    let newest_source = newest_filter_source(workspace)?;
    if modified(&default).is_some_and(|built| built >= newest_source) {
        return Ok(default);
    }
    build_filter(workspace)
}

fn newest_filter_source(workspace: &Path) -> Result<SystemTime, String> {
    let filter = workspace.join("filter");
    let manifest = filter.join("Cargo.toml");
    let mut newest = modified(&manifest).ok_or_else(|| {
        format!(
            "cannot find the filter crate at {}: the harness needs it (or CUTOVER_WASM) to get the filter .wasm",
            manifest.display()
        )
    })?;
    let mut dirs = vec![filter.join("src")];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Some(time) = modified(&path) {
                newest = newest.max(time);
            }
        }
    }
    Ok(newest)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn build_filter(workspace: &Path) -> Result<PathBuf, String> {
    let target_dir = workspace.join(FIXTURE_TARGET_DIR);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args([
            "build",
            "-p",
            "cutover-filter",
            "--target",
            "wasm32-wasip1",
            "--release",
        ])
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .map_err(|e| {
            format!("cannot run cargo to build the filter .wasm: {e} (run `make wasm`)")
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "the filter .wasm is missing or stale and building it failed ({}):\n{}\n\
             fix the build or run `make wasm` (or set CUTOVER_WASM)",
            output.status,
            tail.join("\n")
        ));
    }
    let built = target_dir.join("wasm32-wasip1/release/cutover_filter.wasm");
    if built.is_file() {
        Ok(built)
    } else {
        Err(format!(
            "cargo reported success but {} does not exist",
            built.display()
        ))
    }
}
