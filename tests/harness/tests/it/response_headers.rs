//! Observability headers on the response.
use crate::common;

use common::{chat, config, orchestration_on_legacy, request};
use cutover_harness::{Error, Filter};
use serde_json::json;

#[test]
fn matched_response_names_the_side_and_the_percentage() -> Result<(), Error> {
    let mut f = Filter::boot(&config(&[chat(37), orchestration_on_legacy()]))?;
    let mut seen = Vec::new();
    for n in 0..40 {
        let mut s = f.request(&request("GET", "/api/chat/1", &format!("user-{n}")), None)?;
        let cluster = s.upstream_headers().get_str("x-cutover-cluster");
        let upstream_side = cluster
            .and_then(|c| c.strip_prefix("chat_"))
            .map(str::to_owned);
        let r = s.respond(200, &[("content-type", "application/json")])?;
        assert_eq!(
            r.headers.get_str("x-routed-to").map(str::to_owned),
            upstream_side
        );
        assert_eq!(r.headers.get_str("x-traffic-percentage"), Some("37"));
        assert_eq!(r.headers.get_str("content-type"), Some("application/json"));
        seen.push(upstream_side);
    }
    // Both sides occur at 37%, so the header is not a constant.
    assert!(
        seen.contains(&Some("new".into())) && seen.contains(&Some("legacy".into())),
        "{seen:?}"
    );
    Ok(())
}

/// Only the matched service's feature header: the response cost does not grow with the number of
/// services.
#[test]
fn the_matched_service_feature_header_is_on_its_responses() -> Result<(), Error> {
    let mut f = Filter::boot(&config(&[chat(10), orchestration_on_legacy()]))?;
    let cases = [
        ("/api/chat/1", Some("false"), None),
        ("/api/orchestration/2", None, Some("true")),
        ("/static/app.js", None, None),
    ];
    for (path, chat_header, orchestration_header) in cases {
        let r = f
            .request(&request("GET", path, "user-1"), None)?
            .respond(204, &[] as &[(&str, &str)])?;
        assert_eq!(
            r.headers.get_str("x-feature-uselegacychat"),
            chat_header,
            "path {path}"
        );
        assert_eq!(
            r.headers.get_str("x-feature-uselegacyorchestration"),
            orchestration_header,
            "path {path}"
        );
    }
    Ok(())
}

#[test]
fn unmatched_response_gets_no_routing_headers() -> Result<(), Error> {
    let mut f = Filter::boot(&config(&[chat(100)]))?;
    let r = f
        .request(&request("GET", "/static/app.js", "user-1"), None)?
        .respond(200, &[("etag", "v1")])?;
    assert!(
        !r.headers.contains("x-traffic-percentage"),
        "{:?}",
        r.headers
    );
    assert!(!r.headers.contains("x-routed-to"), "{:?}", r.headers);
    assert_eq!(r.headers.get_str("etag"), Some("v1"));
    Ok(())
}

#[test]
fn feature_headers_can_be_switched_off() -> Result<(), Error> {
    let cfg = json!({ "emit_feature_headers": false, "services": [chat(100), orchestration_on_legacy()] });
    let mut f = Filter::boot(&cfg.to_string())?;
    let r = f
        .request(&request("GET", "/api/chat/1", "user-1"), None)?
        .respond(200, &[] as &[(&str, &str)])?;
    assert!(
        !r.headers.contains("x-feature-uselegacychat"),
        "{:?}",
        r.headers
    );
    assert!(
        !r.headers.contains("x-feature-uselegacyorchestration"),
        "{:?}",
        r.headers
    );
    assert_eq!(r.headers.get_str("x-routed-to"), Some("new"));
    Ok(())
}
