//! Shared by the harness tests: configurations, requests, and an independent implementation of
//! the bucketing formula (so the `.wasm` is checked against the math, not against itself).

use cutover_harness::{Error, Filter};
use serde_json::{json, Value};

/// The chat service of the contract, with `new_percentage` to new.
pub fn chat(new_percentage: u32) -> Value {
    json!({
        "name": "chat",
        "path_prefixes": ["/api/chat", "/api/conversations", "/hubs/chat"],
        "legacy_cluster": "chat_legacy",
        "new_cluster": "chat_new",
        "use_legacy": false,
        "new_percentage": new_percentage,
        "feature_header": "X-Feature-UseLegacyChat"
    })
}

/// A second service, on its kill switch (everything to legacy).
pub fn orchestration_on_legacy() -> Value {
    json!({
        "name": "orchestration",
        "path_prefixes": ["/api/orchestration"],
        "legacy_cluster": "orchestration_legacy",
        "new_cluster": "orchestration_new",
        "use_legacy": true,
        "new_percentage": 50,
        "feature_header": "X-Feature-UseLegacyOrchestration"
    })
}

/// Dual-write block of the contract.
pub fn dual_write(max_body_bytes: u64) -> Value {
    json!({ "enabled": true, "methods": ["POST", "PUT", "PATCH"], "timeout_ms": 5000,
            "max_body_bytes": max_body_bytes })
}

/// `service` with `key` set to `value`.
pub fn with(mut service: Value, key: &str, value: Value) -> Value {
    service[key] = value;
    service
}

/// A filter configuration with the default top-level fields.
pub fn config(services: &[Value]) -> String {
    json!({ "services": services }).to_string()
}

/// Request headers as a client sends them through Envoy (which always adds x-request-id).
pub fn request(method: &str, path: &str, correlation_id: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (":method", method.as_bytes().to_vec()),
        (":path", path.as_bytes().to_vec()),
        (":authority", b"gateway.local".to_vec()),
        (":scheme", b"http".to_vec()),
        ("x-correlation-id", correlation_id.as_bytes().to_vec()),
        ("x-request-id", format!("req-{correlation_id}").into_bytes()),
    ]
}

/// Sends `headers` through `filter`, answers 200 and returns the response's `x-routed-to`, or
/// `<none>`.
pub fn routed_to(filter: &mut Filter, headers: &[(&str, Vec<u8>)]) -> Result<String, Error> {
    let mut stream = filter.request(headers, None)?;
    let response = stream.respond(200, &[] as &[(&str, &str)])?;
    let side = response.headers.get_str("x-routed-to").unwrap_or("<none>");
    let side = side.to_string();
    stream.finish()?;
    Ok(side)
}

/// MurmurHash3 x86_32, written from the reference algorithm independently of the filter.
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    let mut h = seed;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k
            .wrapping_mul(0xcc9e2d51)
            .rotate_left(15)
            .wrapping_mul(0x1b873593);
        h = (h ^ k)
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe6546b64);
    }
    let mut k = 0u32;
    for (i, byte) in tail.iter().enumerate() {
        k ^= (*byte as u32) << (8 * i);
    }
    if !tail.is_empty() {
        h ^= k
            .wrapping_mul(0xcc9e2d51)
            .rotate_left(15)
            .wrapping_mul(0x1b873593);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85ebca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2ae35);
    h ^ (h >> 16)
}

/// Unleash's normalized bucket 1..=100 of `key` in `group`.
pub fn unleash_bucket(group: &str, key: &[u8]) -> u32 {
    let mut input = format!("{group}:").into_bytes();
    input.extend_from_slice(key);
    murmur3_x86_32(&input, 0) % 100 + 1
}

/// The side the contract prescribes for `key` in `group` at `new_percentage`.
pub fn expected_side(group: &str, key: &[u8], new_percentage: u32) -> &'static str {
    if new_percentage > 0 && unleash_bucket(group, key) <= new_percentage {
        "new"
    } else {
        "legacy"
    }
}

/// The formula's published vectors; a test calls this before trusting `expected_side`.
pub fn assert_known_vectors() {
    assert_eq!(murmur3_x86_32(b"hello", 0), 0x248bfa47);
    assert_eq!(unleash_bucket("Feature.flexibleRollout.10", b"174"), 10);
    assert_eq!(unleash_bucket("Feature.flexibleRollout.10", b"499"), 32);
    assert_eq!(
        unleash_bucket("Feature.flexibleRollout.userId.55", b"25"),
        55
    );
    assert_eq!(
        unleash_bucket("Feature.flexibleRollout.sessionId.42", b"147"),
        42
    );
}

/// A deterministic body of `len` bytes (every byte value occurs, so truncation or re-encoding shows).
pub fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A chat service with dual-write on, all traffic to `new_percentage`.
pub fn chat_dual_write(new_percentage: u32, max_body_bytes: u64) -> String {
    config(&[with(
        chat(new_percentage),
        "dual_write",
        dual_write(max_body_bytes),
    )])
}
