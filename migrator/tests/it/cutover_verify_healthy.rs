//! A healthy rollout step passes every check, with figures that are Envoy's own.

use crate::cutover_verify_support;

use cutover_verify_support::{boot, check, config};

#[test]
fn a_healthy_setup_passes_every_check() {
    let setup = boot(&config::chat_config(50));
    setup.traffic(400, |i| format!("user-{i}"));
    setup.wait_for_latency_quantiles();
    // Read before the run (its health requests go to each side's host, not through the split).
    let routed_new = setup.stat("wasmcustom.cutover.chat.routed_new") as f64;
    let routed_legacy = setup.stat("wasmcustom.cutover.chat.routed_legacy") as f64;

    let outcome = setup.cutover_verify(&[
        "--health",
        "chat=/api/chat/health",
        "--health",
        "chat=/api/conversations/health",
    ]);
    assert_eq!(
        outcome.code, 0,
        "stdout: {}\nstderr: {}",
        outcome.stdout, outcome.stderr
    );
    let report = outcome.json();
    assert_eq!(report["schema"], "cutover-verify/v1");
    assert_eq!(report["passed"], true);
    let ids: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "chat.split",
            "chat.new_5xx_rate",
            "chat.new_p95_ms",
            "chat.new_p99_ms",
            "chat.health.legacy:/api/chat/health",
            "chat.health.new:/api/chat/health",
            "chat.health.legacy:/api/conversations/health",
            "chat.health.new:/api/conversations/health"
        ]
    );
    for c in report["checks"].as_array().unwrap() {
        assert_eq!(c["status"], "pass", "{c}");
    }
    // The split is the filter's counters, and the configured figure is the live gauge.
    let split = check(&report, "chat.split");
    assert!(
        (split["value"].as_f64().unwrap() - routed_new / (routed_new + routed_legacy) * 100.0)
            .abs()
            < 1e-9
    );
    assert!(
        split["threshold"].as_str().unwrap().starts_with("50%"),
        "{split}"
    );
    assert_eq!(check(&report, "chat.new_5xx_rate")["value"], 0.0);
    let p95 = check(&report, "chat.new_p95_ms")["value"].as_f64().unwrap();
    assert!((0.0..500.0).contains(&p95), "{p95}");

    // The text checklist: one line per check, all ✅.
    let text =
        cutover_verify_support::run(&["cutover-verify", "--admin-url", &setup.envoy.admin_url()]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    let lines: Vec<&str> = text
        .stdout
        .lines()
        .filter(|l| l.starts_with('✅') || l.starts_with('❌'))
        .collect();
    assert_eq!(lines.len(), 4, "{}", text.stdout);
    assert!(lines.iter().all(|l| l.starts_with('✅')), "{}", text.stdout);
}
