//! An observed split that does not match the configured (or expected) percentage fails.

use crate::cutover_verify_support;

use cutover_verify_support::{boot, check, config};

#[test]
fn skewed_traffic_does_not_match_the_configured_percentage() {
    let setup = boot(&config::chat_config(50));
    // One key for every request: sticky routing sends all of them to the same side.
    setup.traffic(200, |_| "the-same-user".to_string());
    let outcome = setup.cutover_verify(&[]);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let split = check(&outcome.json(), "chat.split").clone();
    assert_eq!(split["status"], "fail", "{split}");
    let value = split["value"].as_f64().unwrap();
    assert!(value == 0.0 || value == 100.0, "{value}");
}

#[test]
fn a_different_expected_percentage_fails_and_a_matching_one_passes() {
    let setup = boot(&config::chat_config(30));
    setup.traffic(600, |i| format!("user-{i}"));
    let routed_new = setup.stat("wasmcustom.cutover.chat.routed_new") as f64;
    let observed = routed_new / 600.0 * 100.0;

    let far = format!("chat={}", if observed > 50.0 { 10 } else { 90 });
    let outcome = setup.cutover_verify(&["--expect-percentage", &far]);
    let report = outcome.json();
    let split = check(&report, "chat.split");
    assert_eq!(split["status"], "fail", "{split}");
    assert!((split["value"].as_f64().unwrap() - observed).abs() < 1e-9);

    let near = format!("chat={}", observed.round());
    let report = setup.cutover_verify(&["--expect-percentage", &near]).json();
    assert_eq!(check(&report, "chat.split")["status"], "pass");
}
