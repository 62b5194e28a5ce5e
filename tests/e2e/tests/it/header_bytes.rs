//! Header values are bytes: obs-text (0xFF) in the key header or in an unrelated header, an
//! empty key and an 8 KB key are routed without a filter failure, and normal requests after
//! them still work (with the default FAIL_CLOSED policy a filter panic would turn every later
//! request into a 503).

use cutover_e2e::{config, Envoy, Upstream};
use cutover_filter::bucket::bucket;

const PERCENTAGE: u8 = 50;

fn expected_side(key: &[u8]) -> &'static str {
    if bucket("chat", key) <= PERCENTAGE {
        "chat_new"
    } else {
        "chat_legacy"
    }
}

#[test]
fn odd_header_bytes_do_not_break_the_filter() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let envoy = Envoy::boot(&config::chat_config(PERCENTAGE), &[&legacy, &new]);
    let mut client = envoy.client();

    // The key is hashed as raw bytes.
    for key in [&b"user-\xff"[..], b"\xff\xfe\x80", b"caf\xe9"] {
        let response = client.get_with("/api/chat/1", &[("x-correlation-id", key)]);
        assert_eq!(response.status, 200, "key {key:?}");
        assert_eq!(
            response.served_by().as_deref(),
            Some(expected_side(key)),
            "key {key:?}"
        );
    }
    // obs-text in a header the filter does not use, on matched and unmatched requests; the
    // upstream receives it unchanged.
    let response = client.get_with(
        "/api/chat/2",
        &[
            ("x-correlation-id", b"plain"),
            ("x-client-note", b"r\xe9sum\xe9 \xff"),
        ],
    );
    assert_eq!(response.status, 200);
    assert_eq!(
        response.served_by().as_deref(),
        Some(expected_side(b"plain"))
    );
    assert_eq!(
        client
            .get_with("/other", &[("x-client-note", b"\xff")])
            .status,
        200
    );
    let forwarded: Vec<_> = legacy
        .requests()
        .into_iter()
        .chain(new.requests())
        .collect();
    assert!(forwarded
        .iter()
        .any(|r| r.header("x-client-note") == Some(&b"r\xe9sum\xe9 \xff"[..])));

    // Empty key header: the next stickiness header (x-request-id) is the key.
    let response = client.get_with(
        "/api/chat/3",
        &[("x-correlation-id", b""), ("x-request-id", b"req-42")],
    );
    assert_eq!(response.status, 200);
    assert_eq!(
        response.served_by().as_deref(),
        Some(expected_side(b"req-42"))
    );

    // An 8 KB key.
    let long_key: Vec<u8> = (0..8192).map(|i| b'a' + (i % 26) as u8).collect();
    let response = client.get_with("/api/chat/4", &[("x-correlation-id", &long_key)]);
    assert_eq!(response.status, 200);
    assert_eq!(
        response.served_by().as_deref(),
        Some(expected_side(&long_key))
    );

    // Normal traffic afterwards, on this connection and a new one.
    let mut fresh = envoy.client();
    for i in 0..50 {
        let key = format!("after-{i}");
        for client in [&mut client, &mut fresh] {
            let response = client.get_with("/api/chat/5", &[("x-correlation-id", key.as_bytes())]);
            assert_eq!(response.status, 200, "request after odd bytes, key {key}");
            assert_eq!(
                response.served_by().as_deref(),
                Some(expected_side(key.as_bytes()))
            );
        }
    }
    let routed = envoy.cutover_counter("chat", "routed_new")
        + envoy.cutover_counter("chat", "routed_legacy");
    assert_eq!(
        routed,
        3 + 1 + 1 + 1 + 100,
        "every matched request was routed by the filter"
    );
}
