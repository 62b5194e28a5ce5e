//! Shadow side down: clients get the primary's answers, and a failure is counted per write.

use std::time::Duration;

use cutover_e2e::{config, Envoy, Upstream};

const FAILED: [&str; 5] = [
    "shadow_failed_3xx",
    "shadow_failed_4xx",
    "shadow_failed_5xx",
    "shadow_failed_reset",
    "shadow_timed_out",
];

#[test]
fn shadow_down_fails_only_the_shadow() {
    let legacy = Upstream::start_down("chat_legacy");
    let new = Upstream::start("chat_new");
    new.set_status(201);
    let envoy = Envoy::boot(
        &config::chat_dual_write_config(100, 2000, 1024 * 1024),
        &[&legacy, &new],
    );
    let mut client = envoy.client();

    const WRITES: u64 = 8;
    for i in 0..WRITES {
        let key = format!("down-{i}");
        let response = client.send(
            "PUT",
            &format!("/api/chat/doc/{i}"),
            &[("x-correlation-id", key.as_bytes())],
            b"{\"v\":1}",
        );
        assert_eq!(response.status, 201, "the primary's status");
        assert_eq!(response.served_by().as_deref(), Some("chat_new"));
        assert_eq!(response.body_text(), "chat_new");
    }

    let failed_total = |envoy: &Envoy| {
        FAILED
            .iter()
            .map(|m| envoy.cutover_counter("chat", m))
            .sum::<u64>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while failed_total(&envoy) < WRITES && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        failed_total(&envoy),
        WRITES,
        "one failure per write: {:?}",
        FAILED.map(|m| (m, envoy.cutover_counter("chat", m)))
    );
    assert_eq!(envoy.cutover_counter("chat", "shadow_succeeded"), 0);
    assert_eq!(envoy.cutover_counter("chat", "shadow_sent"), WRITES);
    assert_eq!(new.request_count() as u64, WRITES);
}
