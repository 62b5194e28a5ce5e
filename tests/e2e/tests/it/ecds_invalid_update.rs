//! An invalid ECDS update is rejected (Envoy's `update_rejected` stat; an unparsable file counts
//! as `update_failure`) and traffic keeps flowing on the previous configuration.

use std::time::Duration;

use cutover_e2e::{config, wait_until, Envoy, HttpClient, Upstream};
use cutover_filter::bucket::bucket;

fn assert_serving_at_50(client: &mut HttpClient) {
    for i in 0..100 {
        let key = format!("keep-{i}");
        let response = client.get_with("/api/chat/x", &[("x-correlation-id", key.as_bytes())]);
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("x-traffic-percentage").as_deref(),
            Some("50")
        );
        let expected = if bucket("chat", key.as_bytes()) <= 50 {
            "chat_new"
        } else {
            "chat_legacy"
        };
        assert_eq!(response.served_by().as_deref(), Some(expected), "key {key}");
    }
}

#[test]
fn invalid_update_is_rejected_and_previous_config_keeps_serving() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let envoy = Envoy::builder(&config::chat_config(50))
        .upstream(&legacy)
        .upstream(&new)
        .ecds()
        .boot();
    let mut client = envoy.client();
    assert_serving_at_50(&mut client);
    let before = envoy.ecds_stats();

    // Well-formed file, configuration the filter refuses.
    let mut invalid = config::chat_config(50);
    invalid["services"][0]["new_percentage"] = 150.into();
    envoy.write_ecds_config(&invalid);
    let rejected = wait_until("update_rejected to grow", Duration::from_secs(15), || {
        let stats = envoy.ecds_stats();
        (stats.update_rejected > before.update_rejected).then_some(stats)
    });
    assert_eq!(rejected.update_success, before.update_success);
    assert_serving_at_50(&mut client);

    // A file Envoy cannot even parse.
    envoy.write_ecds_raw(b"{\"resources\": [ {");
    let failed = wait_until("update_failure to grow", Duration::from_secs(15), || {
        let stats = envoy.ecds_stats();
        (stats.update_failure > before.update_failure).then_some(stats)
    });
    assert_eq!(failed.update_success, before.update_success);
    assert_serving_at_50(&mut client);
    assert!(
        envoy.log().contains("new_percentage"),
        "the filter logged the refused field"
    );

    // A valid update afterwards still applies.
    envoy.update_filter_config(&config::chat_config(100));
    wait_until("100 % to be live", Duration::from_secs(10), || {
        let response = client.get_with("/api/chat/x", &[("x-correlation-id", b"any")]);
        (response.header("x-traffic-percentage").as_deref() == Some("100")).then_some(())
    });
}
