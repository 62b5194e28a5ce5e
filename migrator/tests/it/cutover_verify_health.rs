//! Health is checked on each side explicitly, never through the split: with new answering 500
//! to everything and chat at 0 %, a request through the split would be answered by legacy. Each
//! side is reached through the listener with the service's override rule for it (the filter's
//! `x-routed-to` answer confirming the side), or directly at the side's cluster host as Envoy
//! reports it; the result is reported per side.

use crate::cutover_verify_support;

use cutover_verify_support::{boot, check, config};
use serde_json::json;

const SIDE_HEADER: &str = "x-cutover-side";

fn health_report(setup: &cutover_verify_support::Setup, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--min-requests",
        "20",
        "--service",
        "chat=chat_new",
        "--health",
        "chat=/api/chat/health",
    ];
    args.extend_from_slice(extra);
    let outcome = setup.cutover_verify(&args);
    assert_eq!(outcome.code, 1, "new is unhealthy: {}", outcome.stderr);
    let report = outcome.json();
    assert_eq!(report["passed"], false);
    report
}

#[test]
fn without_override_rules_each_side_is_checked_at_its_cluster_host() {
    let setup = boot(&config::chat_config(0));
    setup.new.set_status(500);
    let report = health_report(&setup, &[]);
    let legacy = check(&report, "chat.health.legacy:/api/chat/health");
    assert_eq!(legacy["status"], "pass", "{legacy}");
    assert_eq!(legacy["value"], 200.0);
    assert!(
        legacy["detail"]
            .as_str()
            .unwrap()
            .contains(&setup.legacy.port().to_string()),
        "{legacy}"
    );
    let new = check(&report, "chat.health.new:/api/chat/health");
    assert_eq!(new["status"], "fail", "{new}");
    assert_eq!(new["value"], 500.0);
    assert!(
        new["detail"]
            .as_str()
            .unwrap()
            .contains("directly at cluster chat_new"),
        "{new}"
    );
    assert_eq!(
        setup
            .new
            .requests()
            .iter()
            .filter(|r| r.path() == "/api/chat/health")
            .count(),
        1
    );
}

#[test]
fn with_override_rules_each_side_is_checked_through_the_filter() {
    let mut service = config::chat_service(0);
    service["overrides"] = json!([
        {"header": SIDE_HEADER, "value": "new", "side": "new"},
        {"header": SIDE_HEADER, "value": "legacy", "side": "legacy"}
    ]);
    let setup = boot(&config::filter_config(vec![service]));
    setup.new.set_status(500);
    let report = health_report(&setup, &[]);
    let new = check(&report, "chat.health.new:/api/chat/health");
    assert_eq!(new["status"], "fail", "{new}");
    assert_eq!(new["value"], 500.0);
    let detail = new["detail"].as_str().unwrap();
    assert!(
        detail.contains("override header x-cutover-side: new") && detail.contains("routed to new"),
        "{new}"
    );
    assert_eq!(
        check(&report, "chat.health.legacy:/api/chat/health")["status"],
        "pass"
    );
    let through_envoy = setup.new.requests();
    let health = through_envoy
        .iter()
        .find(|r| r.path() == "/api/chat/health")
        .expect("new got the health request");
    assert_eq!(health.header_str(SIDE_HEADER).as_deref(), Some("new"));

    // Without a listener URL the same sides are reached directly.
    let admin = setup.envoy.admin_url();
    let out = cutover_verify_support::run(&[
        "cutover-verify",
        "--admin-url",
        &admin,
        "--service",
        "chat=chat_new",
        "--health",
        "chat=/api/chat/health",
        "--format",
        "json",
    ]);
    let report = out.json();
    assert!(
        check(&report, "chat.health.new:/api/chat/health")["detail"]
            .as_str()
            .unwrap()
            .contains("directly"),
        "{report:#}"
    );
    assert_eq!(
        check(&report, "chat.health.legacy:/api/chat/health")["status"],
        "pass"
    );
}
