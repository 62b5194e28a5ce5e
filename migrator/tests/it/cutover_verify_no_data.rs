//! Without traffic there is nothing to judge: every check says "no data" and the run does not pass.

use crate::cutover_verify_support;

use cutover_verify_support::{boot, config, run};

#[test]
fn no_traffic_yet_is_no_data_not_pass() {
    let setup = boot(&config::chat_config(10));
    let outcome = setup.cutover_verify(&[]);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let report = outcome.json();
    assert_eq!(report["passed"], false);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 4);
    for c in checks {
        assert_eq!(c["status"], "no_data", "{c}");
        assert!(c["value"].is_null());
    }
    assert_eq!(report["summary"]["no_data"], 4);

    let text = run(&["cutover-verify", "--admin-url", &setup.envoy.admin_url()]);
    assert_eq!(text.code, 1);
    let lines: Vec<&str> = text
        .stdout
        .lines()
        .filter(|l| l.starts_with('❌'))
        .collect();
    assert_eq!(lines.len(), 4, "{}", text.stdout);
    assert!(
        lines.iter().all(|l| l.contains("no data")),
        "{}",
        text.stdout
    );
}

#[test]
fn a_window_counts_only_traffic_inside_it() {
    let setup = boot(&config::chat_config(50));
    setup.traffic(200, |i| format!("user-{i}"));
    let cumulative = setup.cutover_verify(&["--min-requests", "20"]).json();
    assert_eq!(
        cutover_verify_support::check(&cumulative, "chat.split")["status"],
        "pass"
    );
    // Nothing arrives during the window, so nothing can be judged.
    let windowed = setup
        .cutover_verify(&["--min-requests", "20", "--window", "0.5"])
        .json();
    assert_eq!(windowed["window_seconds"], 0.5);
    assert_eq!(
        cutover_verify_support::check(&windowed, "chat.split")["status"],
        "no_data"
    );
}

#[test]
fn an_unreachable_admin_endpoint_is_an_error() {
    // Port 1 on loopback: nothing listens there.
    let outcome = run(&[
        "cutover-verify",
        "--admin-url",
        "http://127.0.0.1:1",
        "--format",
        "json",
    ]);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("127.0.0.1:1"), "{}", outcome.stderr);
    assert!(outcome.stdout.is_empty());
}

#[test]
fn an_address_that_is_not_envoys_admin_is_an_error() {
    let setup = boot(&config::chat_config(10));
    // The listener answers /stats with its fallback route, not with Envoy's stats.
    let outcome = run(&[
        "cutover-verify",
        "--admin-url",
        &setup.envoy.listener_url(),
        "--format",
        "json",
    ]);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("/stats"), "{}", outcome.stderr);
    assert!(outcome.stdout.is_empty(), "{}", outcome.stdout);
}
