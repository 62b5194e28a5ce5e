//! Counters and gauges: exact values after a known sequence of requests.
use crate::common;

use common::{chat, config, dual_write, orchestration_on_legacy, request, with};
use cutover_harness::{Error, Filter};
use serde_json::json;

#[test]
fn routed_counters_equal_the_decisions_made() -> Result<(), Error> {
    let mut f = Filter::boot(&config(&[chat(50), orchestration_on_legacy()]))?;
    let (mut new, mut legacy) = (0, 0);
    for n in 0..200 {
        let s = f.request(
            &request("POST", "/api/chat/send", &format!("corr-{n}")),
            Some(b"{}"),
        )?;
        match s.upstream_headers().get_str("x-cutover-cluster") {
            Some("chat_new") => new += 1,
            Some("chat_legacy") => legacy += 1,
            other => panic!("unexpected cluster {other:?}"),
        }
    }
    for n in 0..7 {
        f.request(
            &request("GET", "/api/orchestration/x", &format!("o{n}")),
            None,
        )?;
    }
    for _ in 0..5 {
        f.request(&request("GET", "/static/app.js", "anyone"), None)?;
    }
    assert_eq!(f.counter("cutover.chat.routed_new"), new);
    assert_eq!(f.counter("cutover.chat.routed_legacy"), legacy);
    assert!(
        new > 60 && legacy > 60,
        "a 50% split of 200 keys: new {new}, legacy {legacy}"
    );
    assert_eq!(f.counter("cutover.orchestration.routed_legacy"), 7);
    assert_eq!(f.counter("cutover.orchestration.routed_new"), 0);
    assert_eq!(f.counter("cutover.chat.no_key"), 0);
    Ok(())
}

#[test]
fn a_request_without_a_stickiness_key_counts_no_key() -> Result<(), Error> {
    let cfg =
        json!({ "stickiness_headers": ["x-user-id", "x-correlation-id"], "services": [chat(50)] });
    let mut f = Filter::boot(&cfg.to_string())?;
    // Only Envoy's x-request-id: no key (the fallback hashes x-request-id).
    let only_request_id = [
        (":method", "GET"),
        (":path", "/api/chat/1"),
        (":authority", "gw"),
        ("x-request-id", "generated"),
    ];
    f.request(&only_request_id, None)?;
    f.request(&only_request_id, None)?;
    // An empty stickiness header is no key either.
    let mut empty_user = only_request_id.to_vec();
    empty_user.push(("x-user-id", ""));
    f.request(&empty_user, None)?;
    // Keyed: by the first header, and by the second when the first is absent.
    let mut by_user = only_request_id.to_vec();
    by_user.push(("x-user-id", "u1"));
    f.request(&by_user, None)?;
    f.request(&request("GET", "/api/chat/1", "corr-1"), None)?;
    assert_eq!(f.counter("cutover.chat.no_key"), 3);
    assert_eq!(
        f.counter("cutover.chat.routed_new") + f.counter("cutover.chat.routed_legacy"),
        5
    );
    Ok(())
}

#[test]
fn gauges_publish_the_live_configuration() -> Result<(), Error> {
    let chat = with(chat(25), "dual_write", dual_write(1 << 20));
    let f = Filter::boot(&config(&[chat, orchestration_on_legacy()]))?;
    assert_eq!(f.gauge("cutover.chat.new_percentage"), 25);
    assert_eq!(f.gauge("cutover.chat.use_legacy"), 0);
    assert_eq!(f.gauge("cutover.chat.dual_write_enabled"), 1);
    assert_eq!(f.gauge("cutover.orchestration.new_percentage"), 50);
    assert_eq!(f.gauge("cutover.orchestration.use_legacy"), 1);
    assert_eq!(f.gauge("cutover.orchestration.dual_write_enabled"), 0);
    Ok(())
}

#[test]
fn every_contract_counter_is_defined_at_zero_before_traffic() -> Result<(), Error> {
    let f = Filter::boot(&config(&[chat(10)]))?;
    for suffix in [
        "routed_legacy",
        "routed_new",
        "no_key",
        "shadow_sent",
        "shadow_succeeded",
        "shadow_failed_3xx",
        "shadow_failed_4xx",
        "shadow_failed_5xx",
        "shadow_failed_reset",
        "shadow_timed_out",
        "shadow_skipped_body_too_large",
        "shadow_mismatch",
    ] {
        assert_eq!(f.counter(&format!("cutover.chat.{suffix}")), 0, "{suffix}");
    }
    Ok(())
}
