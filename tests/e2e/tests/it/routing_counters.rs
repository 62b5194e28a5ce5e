//! The routing counters on `/stats` (and `/stats/prometheus`) equal the requests sent, and the
//! gauges show the live configuration.

use cutover_e2e::{config, Envoy, Upstream};
use cutover_filter::bucket::bucket;

#[test]
fn counters_equal_requests_sent() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let mut filter_config = config::chat_config(30);
    // Only the correlation id counts as a key, so requests without it take the no-key path.
    filter_config["stickiness_headers"] = serde_json::json!(["x-correlation-id"]);
    let envoy = Envoy::boot(&filter_config, &[&legacy, &new]);
    let mut client = envoy.client();

    const KEYED: u64 = 300;
    const UNKEYED: u64 = 40;
    const UNMATCHED: u64 = 25;
    let mut expected_new = 0;
    for i in 0..KEYED {
        let key = format!("k{i}");
        expected_new += u64::from(bucket("chat", key.as_bytes()) <= 30);
        assert_eq!(
            client
                .get_with("/api/chat/x", &[("x-correlation-id", key.as_bytes())])
                .status,
            200
        );
    }
    for _ in 0..UNKEYED {
        assert_eq!(client.get("/api/chat/x").status, 200);
    }
    for _ in 0..UNMATCHED {
        assert_eq!(client.get("/elsewhere").status, 200);
    }

    let routed_new = envoy.cutover_counter("chat", "routed_new");
    let routed_legacy = envoy.cutover_counter("chat", "routed_legacy");
    assert_eq!(
        routed_new + routed_legacy,
        KEYED + UNKEYED,
        "unmatched requests are not counted"
    );
    assert_eq!(envoy.cutover_counter("chat", "no_key"), UNKEYED);
    // Keyed requests are exact; unkeyed ones hash Envoy's random x-request-id.
    assert!(
        routed_new >= expected_new && routed_new <= expected_new + UNKEYED,
        "routed_new {routed_new}, keyed expectation {expected_new}"
    );
    assert_eq!(routed_new, new.request_count() as u64);
    assert_eq!(routed_legacy + UNMATCHED, legacy.request_count() as u64);

    assert_eq!(
        envoy.stat("wasmcustom.cutover.chat.new_percentage"),
        Some(30)
    );
    assert_eq!(envoy.stat("wasmcustom.cutover.chat.use_legacy"), Some(0));
    assert_eq!(
        envoy.stat("wasmcustom.cutover.chat.dual_write_enabled"),
        Some(0)
    );

    let prometheus = envoy.prometheus();
    let line = prometheus
        .lines()
        .find(|line| {
            line.starts_with("cutover_chat_routed_new")
                || line.starts_with("cutover.chat.routed_new")
        })
        .unwrap_or_else(|| panic!("routed_new not on /stats/prometheus:\n{prometheus}"));
    assert!(line.ends_with(&format!(" {routed_new}")), "{line}");
}
