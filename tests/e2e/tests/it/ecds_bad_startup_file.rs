//! docs/rollout.md: at start-up, an ECDS file the filter refuses leaves the listener up but
//! answering 500, until a valid file arrives.

use std::time::Duration;

use cutover_e2e::{config, wait_until, Envoy, Upstream};

#[test]
fn a_refused_file_at_start_up_answers_500_until_a_valid_file_arrives() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let mut invalid = config::chat_config(50);
    invalid["services"][0]["new_percentage"] = 150.into();
    let envoy = Envoy::builder(&invalid)
        .upstream(&legacy)
        .upstream(&new)
        .ecds()
        .boot();
    let mut client = envoy.client();

    let response = client.get_with("/api/chat/x", &[("x-correlation-id", b"k")]);
    assert_eq!(response.status, 500);
    assert_eq!(legacy.request_count() + new.request_count(), 0);
    assert!(envoy.ecds_stats().update_rejected > 0);

    envoy.update_filter_config(&config::chat_config(100));
    let response = wait_until("the valid file to serve", Duration::from_secs(10), || {
        let response = client.get_with("/api/chat/x", &[("x-correlation-id", b"k")]);
        (response.status != 500).then_some(response)
    });
    assert_eq!(response.status, 200);
    assert_eq!(response.served_by().as_deref(), Some("chat_new"));
}
