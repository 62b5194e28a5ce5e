//! Filter configurations for tests, in the shape of the shared contract (docs/configuration.md),
//! with the filter crate's defaults (`cutover_filter::config`).

use cutover_filter::config::{
    DEFAULT_CLUSTER_HEADER, DEFAULT_DUAL_WRITE_METHODS, DEFAULT_STICKINESS_HEADERS,
};
use serde_json::{json, Value};

/// Path prefixes of the `chat` service in the test topology.
pub const CHAT_PREFIXES: [&str; 3] = ["/api/chat", "/api/conversations", "/hubs/chat"];
/// Path prefix of the `orchestration` service in the test topology.
pub const ORCHESTRATION_PREFIX: &str = "/api/orchestration";

/// The `chat` service: `chat_legacy` / `chat_new`, `new_percentage` as given, no dual-write.
pub fn chat_service(new_percentage: u8) -> Value {
    json!({
        "name": "chat",
        "path_prefixes": CHAT_PREFIXES,
        "legacy_cluster": "chat_legacy",
        "new_cluster": "chat_new",
        "use_legacy": false,
        "new_percentage": new_percentage,
        "feature_header": "X-Feature-UseLegacyChat",
        "stickiness_group": "chat"
    })
}

/// The `orchestration` service: `orchestration_legacy` / `orchestration_new`.
pub fn orchestration_service(new_percentage: u8) -> Value {
    json!({
        "name": "orchestration",
        "path_prefixes": [ORCHESTRATION_PREFIX],
        "legacy_cluster": "orchestration_legacy",
        "new_cluster": "orchestration_new",
        "use_legacy": false,
        "new_percentage": new_percentage,
        "feature_header": "X-Feature-UseLegacyOrchestration"
    })
}

/// A whole filter configuration with these services and the default headers.
pub fn filter_config(services: Vec<Value>) -> Value {
    json!({
        "cluster_header": DEFAULT_CLUSTER_HEADER,
        "stickiness_headers": DEFAULT_STICKINESS_HEADERS,
        "emit_feature_headers": true,
        "services": services
    })
}

/// Only the `chat` service at `new_percentage`.
pub fn chat_config(new_percentage: u8) -> Value {
    filter_config(vec![chat_service(new_percentage)])
}

/// `chat` at `new_percentage` with dual-write on for POST/PUT/PATCH (`timeout_ms`,
/// `max_body_bytes` as given).
pub fn chat_dual_write_config(new_percentage: u8, timeout_ms: u64, max_body_bytes: u64) -> Value {
    let mut service = chat_service(new_percentage);
    service["dual_write"] = json!({
        "enabled": true,
        "methods": DEFAULT_DUAL_WRITE_METHODS,
        "timeout_ms": timeout_ms,
        "max_body_bytes": max_body_bytes
    });
    filter_config(vec![service])
}
