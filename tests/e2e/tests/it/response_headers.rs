//! Observability headers: `x-routed-to` and `x-traffic-percentage` on matched responses (the
//! forwarded request carries the cluster header, no `x-routed-to`); the matched service's feature
//! header on its responses.

use cutover_e2e::{config, Envoy, Upstream};

#[test]
fn routing_and_feature_headers_are_present() {
    let chat_legacy = Upstream::start("chat_legacy");
    let chat_new = Upstream::start("chat_new");
    let orchestration_legacy = Upstream::start("orchestration_legacy");
    let orchestration_new = Upstream::start("orchestration_new");
    let mut orchestration = config::orchestration_service(100);
    orchestration["use_legacy"] = true.into();
    let filter_config = config::filter_config(vec![config::chat_service(100), orchestration]);
    let envoy = Envoy::boot(
        &filter_config,
        &[
            &chat_legacy,
            &chat_new,
            &orchestration_legacy,
            &orchestration_new,
        ],
    );
    let mut client = envoy.client();

    let chat = client.get_with("/hubs/chat/negotiate", &[("x-correlation-id", b"abc")]);
    assert_eq!(chat.status, 200);
    assert_eq!(chat.served_by().as_deref(), Some("chat_new"));
    assert_eq!(chat.header("x-routed-to").as_deref(), Some("new"));
    assert_eq!(chat.header("x-traffic-percentage").as_deref(), Some("100"));
    assert_eq!(
        chat.header("x-feature-uselegacychat").as_deref(),
        Some("false")
    );
    assert_eq!(chat.header("x-feature-uselegacyorchestration"), None);
    let forwarded = chat_new.wait_for_requests(1, std::time::Duration::from_secs(5));
    assert_eq!(
        forwarded[0].header("x-cutover-cluster"),
        Some(&b"chat_new"[..])
    );
    assert_eq!(forwarded[0].header("x-routed-to"), None);

    let orchestration = client.get_with("/api/orchestration/run", &[("x-correlation-id", b"abc")]);
    assert_eq!(
        orchestration.served_by().as_deref(),
        Some("orchestration_legacy")
    );
    assert_eq!(
        orchestration.header("x-routed-to").as_deref(),
        Some("legacy")
    );
    assert_eq!(
        orchestration.header("x-traffic-percentage").as_deref(),
        Some("100")
    );
    assert_eq!(
        orchestration
            .header("x-feature-uselegacyorchestration")
            .as_deref(),
        Some("true")
    );
    assert_eq!(orchestration.header("x-feature-uselegacychat"), None);
    assert_eq!(
        orchestration_legacy.requests()[0].header("x-cutover-cluster"),
        Some(&b"orchestration_legacy"[..])
    );
    assert_eq!(
        orchestration_legacy.requests()[0].header("x-routed-to"),
        None
    );

    // Unmatched: none of the filter's headers.
    let other = client.get("/healthz");
    assert_eq!(other.status, 200);
    assert_eq!(other.header("x-routed-to"), None);
    assert_eq!(other.header("x-traffic-percentage"), None);
    assert_eq!(other.header("x-feature-uselegacychat"), None);
    assert_eq!(other.header("x-feature-uselegacyorchestration"), None);
}
