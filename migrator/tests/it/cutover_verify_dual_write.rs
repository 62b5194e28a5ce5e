//! With dual-write on at 0 %, new receives only the shadow writes: the dual-write checks judge them,
//! and a shadow side that fails a share of writes fails those checks with the figures.

use crate::cutover_verify_support;

use std::time::Duration;

use cutover_verify_support::{boot, check, config};

#[test]
fn failing_shadow_writes_fail_the_dual_write_checks() {
    let setup = boot(&config::chat_dual_write_config(0, 5000, 1 << 20));
    setup.new.set_fail_every(4);
    let mut client = setup.envoy.client();
    for i in 0..200 {
        let key = format!("writer-{i}");
        let response = client.send(
            "POST",
            "/api/chat/messages",
            &[("x-correlation-id", key.as_bytes())],
            b"{\"text\":\"hi\"}",
        );
        assert_eq!(response.status, 200, "the client is served by legacy");
    }
    // Shadow outcomes are counted when their answers arrive.
    setup.envoy.wait_for_stat_where(
        "wasmcustom.cutover.chat.shadow_succeeded",
        Duration::from_secs(10),
        |succeeded| succeeded + setup.stat("wasmcustom.cutover.chat.shadow_failed_5xx") >= 200,
    );

    let outcome = setup.cutover_verify(&[]);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let report = outcome.json();
    assert_eq!(
        check(&report, "chat.split")["status"],
        "pass",
        "0 % configured, 0 % observed"
    );
    assert_eq!(check(&report, "chat.split")["value"], 0.0);
    let failures = check(&report, "chat.dual_write_failure_rate");
    assert_eq!(failures["status"], "fail", "{failures}");
    assert_eq!(failures["value"], 25.0, "every 4th shadow write fails");
    let mismatches = check(&report, "chat.dual_write_mismatch_rate");
    assert_eq!(mismatches["status"], "fail", "{mismatches}");
    assert_eq!(
        mismatches["value"], 25.0,
        "legacy 2xx vs shadow 500 is a mismatch"
    );
    // The shadows are the new cluster's traffic.
    let errors = check(&report, "chat.new_5xx_rate");
    assert_eq!(errors["status"], "fail", "{errors}");
    assert_eq!(errors["value"], 25.0);
}
