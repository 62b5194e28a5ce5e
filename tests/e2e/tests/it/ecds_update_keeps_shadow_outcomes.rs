//! Shadows still in flight when an ECDS update replaces the filter's configuration are not lost:
//! the old plugin's root context stays until each has an outcome, so every one is counted.

use std::time::Duration;

use cutover_e2e::{config, Envoy, Upstream};

const WRITES: u64 = 8;

#[test]
fn outcomes_of_shadows_in_flight_survive_an_update() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    // At 100 % the primary is new; the shadow goes to legacy, which takes 1 s to answer.
    legacy.set_delay(Duration::from_millis(1000));
    let envoy = Envoy::builder(&config::chat_dual_write_config(100, 5000, 1024 * 1024))
        .upstream(&legacy)
        .upstream(&new)
        .ecds()
        .boot();
    let mut client = envoy.client();
    for i in 0..WRITES {
        let key = format!("in-flight-{i}");
        let response = client.send(
            "POST",
            "/api/chat/m",
            &[("x-correlation-id", key.as_bytes())],
            b"{}",
        );
        assert_eq!(response.status, 200);
    }
    let sent = envoy.wait_for_stat(
        "wasmcustom.cutover.chat.shadow_sent",
        WRITES,
        Duration::from_secs(5),
    );
    assert_eq!(sent, WRITES);
    assert_eq!(
        envoy.cutover_counter("chat", "shadow_succeeded"),
        0,
        "the update must happen while the shadows are still in flight"
    );

    // Two updates while every shadow waits for its answer.
    envoy.update_filter_config(&config::chat_dual_write_config(99, 5000, 1024 * 1024));
    envoy.update_filter_config(&config::chat_dual_write_config(100, 5000, 1024 * 1024));

    let succeeded = envoy.wait_for_stat(
        "wasmcustom.cutover.chat.shadow_succeeded",
        WRITES,
        Duration::from_secs(10),
    );
    assert_eq!(
        succeeded, WRITES,
        "every in-flight shadow's outcome is counted"
    );
    assert_eq!(legacy.request_count(), WRITES as usize);
}
