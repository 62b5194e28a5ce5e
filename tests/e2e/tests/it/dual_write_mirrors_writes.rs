//! Dual-write: POST/PUT/PATCH reach both sides with identical method, path, query and body; the
//! shadow is marked `x-cutover-shadow: true` and goes to the other side; a GET reaches only the
//! primary.

use std::time::Duration;

use cutover_e2e::{config, Envoy, RecordedRequest, Upstream};
use cutover_filter::bucket::bucket;

const WAIT: Duration = Duration::from_secs(10);

/// A key routed to new and one routed to legacy at 50 %.
fn keys() -> (String, String) {
    let side = |key: &String| bucket("chat", key.as_bytes()) <= 50;
    let new_key = (0..)
        .map(|i| format!("writer-{i}"))
        .find(side)
        .expect("a key on new");
    let legacy_key = (0..)
        .map(|i| format!("writer-{i}"))
        .find(|k| !side(k))
        .expect("a key on legacy");
    (new_key, legacy_key)
}

fn body(seed: u8) -> Vec<u8> {
    (0..100 * 1024)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn assert_same_request(primary: &RecordedRequest, shadow: &RecordedRequest) {
    assert_eq!(shadow.method, primary.method);
    assert_eq!(shadow.target, primary.target);
    assert_eq!(shadow.body.len(), primary.body.len());
    assert!(
        shadow.body == primary.body,
        "{} {}: shadow body differs",
        primary.method,
        primary.target
    );
    assert_eq!(shadow.header("x-cutover-shadow"), Some(&b"true"[..]));
    assert_eq!(primary.header("x-cutover-shadow"), None);
    assert_eq!(
        shadow.header("x-correlation-id"),
        primary.header("x-correlation-id")
    );
    assert_eq!(
        shadow.header("content-type"),
        primary.header("content-type")
    );
    assert_eq!(
        shadow.header("x-cutover-cluster"),
        None,
        "the cluster header is not copied to the shadow"
    );
}

#[test]
fn writes_reach_both_sides_reads_only_the_primary() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let envoy = Envoy::boot(
        &config::chat_dual_write_config(50, 5000, 1024 * 1024),
        &[&legacy, &new],
    );
    let mut client = envoy.client();
    let (new_key, legacy_key) = keys();

    let mut writes = 0;
    for (seed, method) in ["POST", "PUT", "PATCH"].into_iter().enumerate() {
        for (key, primary, shadow) in [(&new_key, &new, &legacy), (&legacy_key, &legacy, &new)] {
            primary.clear_requests();
            shadow.clear_requests();
            let target = format!("/api/chat/rooms/7/messages?draft=false&n={seed}");
            let payload = body(seed as u8);
            let response = client.send(
                method,
                &target,
                &[
                    ("x-correlation-id", key.as_bytes()),
                    ("content-type", b"application/octet-stream"),
                ],
                &payload,
            );
            assert_eq!(response.status, 200, "{method} {target}");
            assert_eq!(
                response.served_by().as_deref(),
                Some(primary.name()),
                "{method}: client sees the primary"
            );
            writes += 1;
            let primary_seen = primary.wait_for_requests(1, WAIT);
            let shadow_seen = shadow.wait_for_requests(1, WAIT);
            assert_eq!(
                (primary_seen.len(), shadow_seen.len()),
                (1, 1),
                "{method} via {key}"
            );
            assert_eq!(primary_seen[0].body, payload);
            assert_eq!(primary_seen[0].target, target);
            assert_same_request(&primary_seen[0], &shadow_seen[0]);
        }
    }

    // Reads are never mirrored. A write sent after them proves the shadow side was reachable
    // (its shadow arrives) while the reads' did not.
    legacy.clear_requests();
    new.clear_requests();
    for _ in 0..5 {
        let response = client.get_with(
            "/api/chat/rooms/7/messages",
            &[("x-correlation-id", new_key.as_bytes())],
        );
        assert_eq!(response.served_by().as_deref(), Some("chat_new"));
    }
    client.send(
        "POST",
        "/api/chat/rooms/7/messages",
        &[("x-correlation-id", new_key.as_bytes())],
        b"{}",
    );
    writes += 1;
    let shadow_seen = legacy.wait_for_requests(1, WAIT);
    assert_eq!(shadow_seen.len(), 1);
    assert_eq!(shadow_seen[0].method, "POST");
    assert_eq!(new.request_count(), 6);

    let succeeded = envoy.wait_for_stat("wasmcustom.cutover.chat.shadow_succeeded", writes, WAIT);
    assert_eq!(succeeded, writes);
    assert_eq!(envoy.cutover_counter("chat", "shadow_sent"), writes);
    assert_eq!(
        envoy.stat("wasmcustom.cutover.chat.dual_write_enabled"),
        Some(1)
    );
}
