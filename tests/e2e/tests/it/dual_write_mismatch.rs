//! Primary 201, shadow 500: a mismatch is counted per write and logged at warn with the
//! correlation id and both statuses.

use std::time::Duration;

use cutover_e2e::{config, Envoy, Upstream};

#[test]
fn primary_ok_shadow_error_is_a_counted_and_logged_mismatch() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    new.set_status(201);
    legacy.set_status(500);
    let envoy = Envoy::boot(
        &config::chat_dual_write_config(100, 5000, 1024 * 1024),
        &[&legacy, &new],
    );
    let mut client = envoy.client();

    const WRITES: u64 = 4;
    for i in 0..WRITES {
        let key = format!("mismatch-corr-{i}");
        let response = client.send(
            "POST",
            "/api/chat/messages?room=9",
            &[("x-correlation-id", key.as_bytes())],
            b"hello",
        );
        assert_eq!(response.status, 201);
    }
    let mismatches = envoy.wait_for_stat(
        "wasmcustom.cutover.chat.shadow_mismatch",
        WRITES,
        Duration::from_secs(15),
    );
    assert_eq!(mismatches, WRITES);
    assert_eq!(envoy.cutover_counter("chat", "shadow_failed_5xx"), WRITES);
    assert_eq!(envoy.cutover_counter("chat", "shadow_succeeded"), 0);

    // Envoy writes the filter's warn lines as `[warning][wasm] … <message>`.
    let log = envoy.log();
    for i in 0..WRITES {
        let key = format!("mismatch-corr-{i}");
        let line = log
            .lines()
            .find(|line| {
                line.contains("[warning]") && line.contains(&key) && line.contains("mismatch")
            })
            .unwrap_or_else(|| {
                panic!(
                    "no warn line naming {key} in {}",
                    envoy.log_path().display()
                )
            });
        assert!(
            line.contains("201") && line.contains("500"),
            "both statuses in: {line}"
        );
        assert!(
            line.contains("chat") && line.contains("POST") && line.contains("/api/chat/messages"),
            "{line}"
        );
    }
}
