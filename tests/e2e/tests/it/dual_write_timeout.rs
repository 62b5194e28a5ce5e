//! A shadow slower than `timeout_ms` is counted as `shadow_timed_out` (Envoy's own 504
//! "upstream request timeout"), not as a 5xx, and the client still gets the primary at once.

use std::time::Duration;

use cutover_e2e::{config, Envoy, Upstream};

const WRITES: u64 = 4;
const TIMEOUT_MS: u64 = 200;

#[test]
fn shadow_slower_than_its_timeout_counts_timed_out() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    // At 100 % the primary is new; the shadow goes to legacy, which answers after the timeout.
    legacy.set_delay(Duration::from_millis(1500));
    let envoy = Envoy::boot(
        &config::chat_dual_write_config(100, TIMEOUT_MS, 1024 * 1024),
        &[&legacy, &new],
    );
    let mut client = envoy.client();
    for i in 0..WRITES {
        let key = format!("timeout-{i}");
        let response = client.send(
            "POST",
            "/api/chat/m",
            &[("x-correlation-id", key.as_bytes())],
            b"{}",
        );
        assert_eq!(response.status, 200);
        assert_eq!(response.served_by().as_deref(), Some("chat_new"));
        assert!(
            response.elapsed < Duration::from_millis(1500),
            "the client waited for the shadow: {:?}",
            response.elapsed
        );
    }

    let timed_out = envoy.wait_for_stat(
        "wasmcustom.cutover.chat.shadow_timed_out",
        WRITES,
        Duration::from_secs(10),
    );
    assert_eq!(timed_out, WRITES);
    assert_eq!(envoy.cutover_counter("chat", "shadow_sent"), WRITES);
    assert_eq!(envoy.cutover_counter("chat", "shadow_failed_5xx"), 0);
    assert_eq!(envoy.cutover_counter("chat", "shadow_succeeded"), 0);
}
