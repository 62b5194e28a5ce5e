//! A write whose body exceeds `max_body_bytes` goes to the primary normally; its shadow is
//! skipped and counted, never sent.

use std::time::Duration;

use cutover_e2e::{config, Envoy, Upstream};

#[test]
fn body_over_the_cap_skips_the_shadow() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let envoy = Envoy::boot(
        &config::chat_dual_write_config(0, 5000, 1024),
        &[&legacy, &new],
    );
    let mut client = envoy.client();

    let big = vec![b'b'; 4096];
    let response = client.send(
        "POST",
        "/api/chat/upload",
        &[("x-correlation-id", b"big")],
        &big,
    );
    assert_eq!(response.status, 200, "no 413 from the filter");
    assert_eq!(response.served_by().as_deref(), Some("chat_legacy"));
    assert_eq!(
        legacy.requests()[0].body,
        big,
        "the primary got the whole body"
    );
    let skipped = envoy.wait_for_stat(
        "wasmcustom.cutover.chat.shadow_skipped_body_too_large",
        1,
        Duration::from_secs(10),
    );
    assert_eq!(skipped, 1);

    // A small write afterwards is mirrored; once its shadow arrived, the big one's would have too.
    let small = vec![b's'; 512];
    assert_eq!(
        client
            .send(
                "POST",
                "/api/chat/upload",
                &[("x-correlation-id", b"small")],
                &small
            )
            .status,
        200
    );
    let shadows = new.wait_for_requests(1, Duration::from_secs(10));
    envoy.wait_for_stat(
        "wasmcustom.cutover.chat.shadow_succeeded",
        1,
        Duration::from_secs(10),
    );
    assert_eq!(shadows.len(), 1, "only the small write was mirrored");
    assert_eq!(shadows[0].body, small);
    assert_eq!(envoy.cutover_counter("chat", "shadow_sent"), 1);
    assert_eq!(
        envoy.cutover_counter("chat", "shadow_skipped_body_too_large"),
        1
    );
}
