//! `use_legacy: true` sends everything to legacy whatever the percentage, and says so in the
//! feature header and the gauges.

use cutover_e2e::{config, Envoy, Upstream};

#[test]
fn kill_switch_sends_everything_to_legacy() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let mut filter_config = config::chat_config(100);
    filter_config["services"][0]["use_legacy"] = true.into();
    let envoy = Envoy::boot(&filter_config, &[&legacy, &new]);
    let mut client = envoy.client();

    const REQUESTS: u64 = 200;
    for i in 0..REQUESTS {
        let key = format!("user-{i}");
        let response = client.get_with("/api/chat/send", &[("x-correlation-id", key.as_bytes())]);
        assert_eq!(response.status, 200);
        assert_eq!(
            response.served_by().as_deref(),
            Some("chat_legacy"),
            "key {key}"
        );
        assert_eq!(response.header("x-routed-to").as_deref(), Some("legacy"));
        assert_eq!(
            response.header("x-feature-uselegacychat").as_deref(),
            Some("true")
        );
    }
    assert_eq!(new.request_count(), 0);
    assert_eq!(envoy.cutover_counter("chat", "routed_legacy"), REQUESTS);
    assert_eq!(envoy.cutover_counter("chat", "routed_new"), 0);
    assert_eq!(envoy.stat("wasmcustom.cutover.chat.use_legacy"), Some(1));
}
