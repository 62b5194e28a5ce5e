//! Bad configurations are refused in on_configure with one log line naming the field.
use crate::common;

use common::{chat, config, dual_write, with};
use cutover_harness::{Error, Filter, LogLevel};
use serde_json::{json, Value};

/// Configures a fresh VM with `json`; asserts the filter refuses it and logs exactly one line
/// at warn or above that contains every string of `names`.
fn assert_rejected(json: &str, names: &[&str]) {
    let mut f = Filter::start().expect("VM starts");
    f.clear_logs();
    let accepted = f
        .configure(json)
        .expect("on_configure runs without trapping");
    assert!(!accepted, "accepted a bad configuration: {json}");
    let problems = f.logs_at_least(LogLevel::Warn);
    assert_eq!(
        problems.len(),
        1,
        "expected one warning/error for {json}, got {problems:?}"
    );
    for name in names {
        assert!(
            problems[0].message.contains(name),
            "log line {:?} does not name {name:?} (config {json})",
            problems[0].message
        );
    }
}

fn two_services(second: Value) -> String {
    config(&[chat(10), second])
}

#[test]
fn invalid_json() {
    assert_rejected(r#"{"services": [ "#, &["line 1"]);
    assert_rejected("", &[]);
}

#[test]
fn unknown_fields_at_top_level_in_a_service_and_in_dual_write() {
    assert_rejected(
        &json!({"services": [chat(10)], "cluster_heder": "x"}).to_string(),
        &["cluster_heder"],
    );
    assert_rejected(
        &config(&[with(chat(10), "new_percent", json!(5))]),
        &["new_percent"],
    );
    let dw = with(
        chat(10),
        "dual_write",
        json!({"enabled": true, "timeout": 5}),
    );
    assert_rejected(&config(&[dw]), &["timeout"]);
}

#[test]
fn percentage_outside_0_to_100() {
    assert_rejected(&config(&[chat(101)]), &["new_percentage"]);
    assert_rejected(
        &config(&[with(chat(0), "new_percentage", json!(-1))]),
        &["new_percentage"],
    );
}

#[test]
fn empty_or_duplicate_service_names() {
    assert_rejected(&config(&[with(chat(10), "name", json!(""))]), &["name"]);
    let other = with(
        with(chat(10), "path_prefixes", json!(["/other"])),
        "name",
        json!("chat"),
    );
    assert_rejected(&two_services(other), &["name", "chat"]);
}

#[test]
fn empty_cluster_names() {
    assert_rejected(
        &config(&[with(chat(10), "legacy_cluster", json!(""))]),
        &["legacy_cluster"],
    );
    assert_rejected(
        &config(&[with(chat(10), "new_cluster", json!(""))]),
        &["new_cluster"],
    );
}

#[test]
fn a_prefix_claimed_by_two_services() {
    let other = json!({
        "name": "other", "path_prefixes": ["/api/chat"],
        "legacy_cluster": "o_legacy", "new_cluster": "o_new", "new_percentage": 0
    });
    assert_rejected(&two_services(other), &["path_prefixes", "/api/chat"]);
}

#[test]
fn empty_stickiness_headers() {
    let cfg = json!({ "stickiness_headers": [], "services": [chat(10)] });
    assert_rejected(&cfg.to_string(), &["stickiness_headers"]);
}

#[test]
fn bad_dual_write_method_and_zero_timeout() {
    let mut bad_method = dual_write(1024);
    bad_method["methods"] = json!(["POST", "FETCH"]);
    assert_rejected(
        &config(&[with(chat(10), "dual_write", bad_method)]),
        &["methods", "FETCH"],
    );
    let mut zero_timeout = dual_write(1024);
    zero_timeout["timeout_ms"] = json!(0);
    assert_rejected(
        &config(&[with(chat(10), "dual_write", zero_timeout)]),
        &["timeout_ms"],
    );
}

#[test]
fn boot_reports_the_rejection_with_the_log_line() {
    match Filter::boot(&config(&[chat(101)])) {
        Err(Error::Rejected { logs }) => {
            assert!(
                logs.iter()
                    .any(|l| l.level >= LogLevel::Warn && l.message.contains("new_percentage")),
                "{logs:?}"
            );
        }
        Err(other) => panic!("expected a rejection, got {other}"),
        Ok(_) => panic!("a 101% configuration was accepted"),
    }
}

#[test]
fn the_contract_example_is_accepted() -> Result<(), Error> {
    let example = json!({
        "cluster_header": "x-cutover-cluster",
        "stickiness_headers": ["x-correlation-id", "x-request-id"],
        "emit_feature_headers": true,
        "services": [with(with(chat(10), "stickiness_group", json!("chat")), "dual_write", dual_write(1048576))]
    });
    let mut f = Filter::start()?;
    assert!(f.configure(&example.to_string())?, "logs: {:?}", f.logs());
    Ok(())
}
