//! Routing: the cluster header is the filter's decision alone.
use crate::common;

use common::{chat, config, orchestration_on_legacy, request, with};
use cutover_harness::{Error, Filter};
use serde_json::json;

const CLUSTER: &str = "x-cutover-cluster";

#[test]
fn matched_request_gets_the_chosen_cluster_and_no_routed_to_header() -> Result<(), Error> {
    let mut f = Filter::boot(&config(&[chat(100)]))?;
    let mut headers = request("GET", "/api/chat/42?x=1", "user-1");
    let s = f.request(&headers, None)?;
    assert_eq!(s.upstream_headers().get_str(CLUSTER), Some("chat_new"));
    // The cluster header names the side; x-routed-to is a response header.
    assert!(!s.upstream_headers().contains("x-routed-to"));
    drop(s);
    // A client's x-routed-to does not reach the upstream either.
    headers.push(("x-routed-to", b"legacy".to_vec()));
    let s = f.request(&headers, None)?;
    assert!(!s.upstream_headers().contains("x-routed-to"));
    Ok(())
}

#[test]
fn kill_switch_and_zero_percent_route_to_legacy() -> Result<(), Error> {
    let mut killed = Filter::boot(&config(&[with(chat(100), "use_legacy", json!(true))]))?;
    let mut zero = Filter::boot(&config(&[chat(0)]))?;
    for f in [&mut killed, &mut zero] {
        for n in 0..50 {
            let s = f.request(
                &request("GET", "/api/conversations/1", &format!("u{n}")),
                None,
            )?;
            assert_eq!(s.upstream_headers().get_str(CLUSTER), Some("chat_legacy"));
        }
    }
    Ok(())
}

#[test]
fn client_supplied_cluster_header_is_overwritten_on_a_matched_request() -> Result<(), Error> {
    let mut f = Filter::boot(&config(&[chat(0)]))?;
    let mut headers = request("GET", "/hubs/chat", "user-1");
    headers.push((CLUSTER, b"chat_new".to_vec()));
    headers.push((CLUSTER, b"admin_backend".to_vec()));
    let s = f.request(&headers, None)?;
    assert_eq!(s.upstream_headers().get_all(CLUSTER), [&b"chat_legacy"[..]]);
    Ok(())
}

#[test]
fn unmatched_request_loses_a_spoofed_cluster_header_and_gets_no_routing_headers(
) -> Result<(), Error> {
    let mut f = Filter::boot(&config(&[chat(100)]))?;
    let mut headers = request("GET", "/static/app.js", "user-1");
    headers.push((CLUSTER, b"chat_new".to_vec()));
    headers.push(("x-routed-to", b"new".to_vec()));
    let s = f.request(&headers, None)?;
    assert!(
        !s.upstream_headers().contains(CLUSTER),
        "{:?}",
        s.upstream_headers()
    );
    assert!(
        !s.upstream_headers().contains("x-routed-to"),
        "{:?}",
        s.upstream_headers()
    );
    assert_eq!(
        s.upstream_headers().get_str("x-correlation-id"),
        Some("user-1")
    );
    Ok(())
}

#[test]
fn the_longest_matching_prefix_picks_the_service() -> Result<(), Error> {
    let broad = json!({
        "name": "api", "path_prefixes": ["/api"],
        "legacy_cluster": "api_legacy", "new_cluster": "api_new", "new_percentage": 100
    });
    let mut f = Filter::boot(&config(&[broad, chat(100), orchestration_on_legacy()]))?;
    for (path, cluster) in [
        ("/api/chat/1", "chat_new"),
        ("/api/chat", "chat_new"),
        ("/api/orchestration/run", "orchestration_legacy"),
        ("/api/other", "api_new"),
        ("/api", "api_new"),
    ] {
        let s = f.request(&request("GET", path, "user-7"), None)?;
        assert_eq!(
            s.upstream_headers().get_str(CLUSTER),
            Some(cluster),
            "path {path}"
        );
    }
    Ok(())
}
