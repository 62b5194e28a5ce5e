//! The harness fails loudly, with a way out, when it cannot get the filter .wasm — never skips.
use std::ffi::OsString;

use cutover_harness::{locate_wasm, workspace_root, Error, Filter};

#[test]
fn a_missing_cutover_wasm_is_an_error_naming_the_path() {
    let missing = std::env::temp_dir().join("cutover-harness-no-such-filter.wasm");
    let err = locate_wasm(Some(OsString::from(&missing)), &workspace_root())
        .expect_err("a missing file is not usable");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(
        err.contains("make wasm"),
        "the message says how to get it: {err}"
    );
}

#[test]
fn a_workspace_without_the_filter_crate_is_an_error_not_a_skip() {
    let empty = std::env::temp_dir().join(format!("cutover-harness-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("temp dir");
    let err = locate_wasm(None, &empty).expect_err("nothing to load or build");
    let _ = std::fs::remove_dir_all(&empty);
    assert!(err.contains("filter"), "{err}");
}

#[test]
fn a_file_that_is_not_wasm_fails_to_start_with_its_path() {
    let bogus =
        std::env::temp_dir().join(format!("cutover-harness-bogus-{}.wasm", std::process::id()));
    std::fs::write(&bogus, b"not a wasm module").expect("temp file");
    let result = Filter::start_from(&bogus);
    let _ = std::fs::remove_file(&bogus);
    match result {
        Err(Error::Wasm(message)) => {
            assert!(message.contains(&bogus.display().to_string()), "{message}")
        }
        Err(other) => panic!("expected a load error, got {other}"),
        Ok(_) => panic!("a bogus module started"),
    }
}

#[test]
fn the_filter_used_by_the_other_tests_is_found() {
    let path = cutover_harness::filter_wasm().unwrap_or_else(|e| panic!("{e}"));
    assert!(path.is_file(), "{}", path.display());
}
