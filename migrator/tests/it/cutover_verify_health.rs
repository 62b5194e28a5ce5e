//! A health path that does not answer 200 through Envoy fails its check, with the status it got.

use crate::cutover_verify_support;

use cutover_verify_support::{boot, check, config};

#[test]
fn a_health_path_without_200_fails_its_check() {
    let setup = boot(&config::chat_config(50));
    setup.traffic(100, |i| format!("user-{i}"));
    // Whichever side the health request is routed to, it answers 503.
    setup.legacy.set_status(503);
    setup.new.set_status(503);
    let outcome =
        setup.cutover_verify(&["--min-requests", "20", "--health", "chat=/api/chat/health"]);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let report = outcome.json();
    assert_eq!(report["passed"], false);
    let health = check(&report, "chat.health:/api/chat/health");
    assert_eq!(health["status"], "fail", "{health}");
    assert_eq!(health["value"], 503.0);
}
