//! The read-comparison gate (issue 12): `cutover-verify` and `rollout run` judge "read comparison
//! equal rate ≥ threshold" from the filter's compare_* counters, on a real Envoy mirroring every
//! read of `chat` to the other side and comparing the answers (the dark-launch set-up): upstreams
//! that answer alike pass; a new that answers differently fails, and the run rolls back.

use super::*;

use serde_json::json;

const PATH: &str = "/api/chat/messages";
const JSON: &str = "application/json";

/// `chat` at `percentage` with every read mirrored and compared.
fn dark_launch(percentage: u8) -> Value {
    let mut service = config::chat_service(percentage);
    service["shadow_reads"] = json!({"percentage": 100, "methods": ["GET"]});
    service["compare"] = json!({});
    config::filter_config(vec![service])
}

/// Both sides answer the bench's reads with `legacy` / `new`.
fn answers(bench: &Bench, legacy: &str, new: &str) {
    bench._legacy.set_canned(PATH, 200, JSON, legacy.as_bytes());
    bench.new.set_canned(PATH, 200, JSON, new.as_bytes());
}

const SAME: &str = r#"{"messages":[{"id":1,"text":"hi"}]}"#;
const DIFFERENT: &str = r#"{"messages":[{"id":1,"text":"hello"}]}"#;

fn compare_check(report: &Value) -> Value {
    cutover_verify_support::check(report, "chat.compare_equal_rate").clone()
}

/// A dark launch at 0 %: no user on new yet, every read compared. Without `--service`,
/// cutover-verify finds the service from the configuration Envoy serves (it compares).
#[test]
fn cutover_verify_passes_equal_answers_and_fails_different_ones() {
    let bench = boot(&dark_launch(0));
    answers(&bench, SAME, SAME);
    let _traffic = bench.traffic();
    let admin = bench.envoy.admin_url();
    let verify = || {
        cutover_verify_support::run(&[
            "cutover-verify",
            "--admin-url",
            &admin,
            "--window",
            "2",
            "--min-requests",
            "10",
            "--max-p95-ms",
            "10000",
            "--max-p99-ms",
            "10000",
            "--format",
            "json",
        ])
    };
    let out = verify();
    assert_eq!(
        cutover_verify_support::check(&out.json(), "chat.split")["status"],
        "pass",
        "{}",
        out.stdout
    );
    // Discovered at 0 % (latency may still read no data in a 2 s window: the exit code is not
    // this test's point).
    let check = compare_check(&out.json());
    assert_eq!(check["status"], "pass", "{check:#}");
    assert_eq!(check["value"], 100.0);
    assert_eq!(check["threshold"], ">= 99%");

    answers(&bench, SAME, DIFFERENT);
    let out = verify();
    assert_code(&out, 1, "different answers");
    let check = compare_check(&out.json());
    assert_eq!(check["status"], "fail", "{check:#}");
    assert!(check["value"].as_f64().unwrap() < 99.0, "{check:#}");
    assert!(
        check["detail"].as_str().unwrap().contains("body"),
        "{check:#}"
    );
}

#[test]
fn without_compared_reads_the_check_has_no_data() {
    let bench = boot(&dark_launch(10));
    let admin = bench.envoy.admin_url();
    let out = cutover_verify_support::run(&[
        "cutover-verify",
        "--admin-url",
        &admin,
        "--service",
        "chat=chat_new",
        "--window",
        "1",
        "--format",
        "json",
    ]);
    let check = compare_check(&out.json());
    assert_eq!(check["status"], "no_data", "{check:#}");
    assert!(check["value"].is_null());
}

#[test]
fn the_run_promotes_on_equal_answers_and_rolls_back_on_different_ones() {
    let bench = boot(&dark_launch(0));
    answers(&bench, SAME, SAME);
    let _traffic = bench.traffic();
    let (code, events, stderr) = bench
        .spawn(&run_args(
            "10,50",
            "2s",
            &["--min-compare-equal-rate", "99.5"],
        ))
        .finish();
    assert_eq!(code, 0, "{events:#?} {stderr}");
    let interval = events_of(&events, "interval")[0];
    let check = interval["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "chat.compare_equal_rate");
    let check = check.unwrap_or_else(|| panic!("{interval:#}"));
    assert_eq!(check["status"], "pass", "{check:#}");
    assert_eq!(check["value"], 100.0);
    assert_eq!(check["threshold"], ">= 99.5%", "the threshold given");
    assert_eq!(bench.gauge("new_percentage"), Some(50));

    // New now answers differently: the first interval fails on the comparison and rolls back.
    assert_code(&bench.rollout(&["set", "chat", "0"]), 0, "back to 0");
    answers(&bench, SAME, DIFFERENT);
    let (code, events, stderr) = bench
        .spawn(&run_args(
            "10,50",
            "30s",
            &["--min-compare-equal-rate", "99.5"],
        ))
        .finish();
    assert_eq!(code, 1, "{events:#?} {stderr}");
    let failed = events_of(&events, "rolled_back")[0]["failed_checks"]
        .as_array()
        .unwrap()
        .clone();
    let check = failed
        .iter()
        .find(|c| c["id"] == "chat.compare_equal_rate")
        .unwrap_or_else(|| panic!("{failed:#?}"));
    assert!(check["value"].as_f64().unwrap() < 99.5, "{check:#}");
    assert_eq!(check["threshold"], ">= 99.5%");
    assert_eq!(bench.gauge("use_legacy"), Some(1));
}
