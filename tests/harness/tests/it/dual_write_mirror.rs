//! Dual-write: a write is copied to the other side's cluster, byte for byte, marked as a shadow.
use crate::common;

use common::{body, chat, chat_dual_write, config, request};
use cutover_harness::{Error, Filter, HttpCall};

const MIB: u64 = 1 << 20;

/// Sends `method path` with `payload` in 10 KB chunks, then ticks the root context (which
/// dispatches queued shadows) and returns the calls the filter made.
fn write_and_tick(
    f: &mut Filter,
    method: &str,
    path: &str,
    payload: &[u8],
    extra: &[(&'static str, &[u8])],
) -> Result<Vec<HttpCall>, Error> {
    let mut headers = request(method, path, "corr-42");
    headers.extend(extra.iter().map(|(k, v)| (*k, v.to_vec())));
    let mut s = f.start_request(&headers, payload.is_empty())?;
    let chunks: Vec<&[u8]> = payload.chunks(10_000).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        s.send_body(chunk, i + 1 == chunks.len())?;
    }
    assert_eq!(
        s.upstream_body(),
        payload,
        "the primary receives the whole body"
    );
    assert!(
        s.local_response().is_none(),
        "the filter answered the client itself: {:?}",
        s.local_response()
    );
    s.respond(201, &[] as &[(&str, &str)])?;
    s.finish()?;
    f.tick()?;
    Ok(f.pending_http_calls().to_vec())
}

#[test]
fn a_100_kb_post_is_mirrored_to_the_other_side_with_identical_method_path_query_and_body(
) -> Result<(), Error> {
    for (percentage, primary, shadow) in [
        (0, "chat_legacy", "chat_new"),
        (100, "chat_new", "chat_legacy"),
    ] {
        let mut f = Filter::boot(&chat_dual_write(percentage, MIB))?;
        let payload = body(100 * 1024);
        let mut headers = request("POST", "/api/chat/send?room=7&q=a%20b", "corr-42");
        headers.push(("content-type", b"application/json".to_vec()));
        let mut s = f.start_request(&headers, false)?;
        let chunks: Vec<&[u8]> = payload.chunks(10_000).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            s.send_body(chunk, i + 1 == chunks.len())?;
        }
        assert_eq!(
            s.upstream_headers().get_str("x-cutover-cluster"),
            Some(primary)
        );
        assert_eq!(s.upstream_body(), &payload[..]);
        s.respond(201, &[] as &[(&str, &str)])?;
        s.finish()?;
        f.tick()?;

        let calls = f.pending_http_calls();
        assert_eq!(calls.len(), 1, "one shadow per write: {calls:?}");
        let call = &calls[0];
        assert_eq!(call.cluster, shadow);
        assert_eq!(call.headers.get_str(":method"), Some("POST"));
        assert_eq!(
            call.headers.get_str(":path"),
            Some("/api/chat/send?room=7&q=a%20b")
        );
        assert_eq!(call.headers.get_str(":authority"), Some("gateway.local"));
        assert_eq!(call.headers.get_str("x-cutover-shadow"), Some("true"));
        assert_eq!(call.headers.get_str("x-correlation-id"), Some("corr-42"));
        assert_eq!(
            call.headers.get_str("content-type"),
            Some("application/json")
        );
        assert!(
            call.body == payload,
            "shadow body differs ({} bytes vs {})",
            call.body.len(),
            payload.len()
        );
        assert_eq!(call.timeout.as_millis(), 5000);
        assert_eq!(f.counter("cutover.chat.shadow_sent"), 1);
    }
    Ok(())
}

#[test]
fn a_queued_shadow_arms_the_root_tick_so_it_goes_out() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(50, MIB))?;
    f.request(&request("POST", "/api/chat/send", "corr-1"), Some(b"{}"))?;
    // Envoy only calls proxy_on_tick on a root context with a tick period (`tick` models that).
    let period = f
        .tick_period()
        .expect("no tick period: Envoy would never dispatch the shadow");
    assert!(period.as_millis() <= 1000, "shadows wait up to {period:?}");
    Ok(())
}

#[test]
fn the_shadow_carries_no_cluster_header_and_no_hop_by_hop_headers() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(0, MIB))?;
    let extra: [(&str, &[u8]); 8] = [
        ("x-cutover-cluster", b"chat_new"),
        ("connection", b"keep-alive, x-per-hop"),
        ("x-per-hop", b"1"),
        ("keep-alive", b"timeout=5"),
        ("transfer-encoding", b"chunked"),
        ("te", b"trailers"),
        ("upgrade", b"websocket"),
        ("x-tenant", b"acme"),
    ];
    let calls = write_and_tick(&mut f, "PUT", "/api/conversations/9", &body(2048), &extra)?;
    assert_eq!(calls.len(), 1, "{calls:?}");
    let headers = &calls[0].headers;
    for gone in [
        "x-cutover-cluster",
        "connection",
        "x-per-hop",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
    ] {
        assert!(
            !headers.contains(gone),
            "shadow carries {gone}: {headers:?}"
        );
    }
    assert_eq!(headers.get_str("x-tenant"), Some("acme"));
    assert_eq!(headers.get_str(":method"), Some("PUT"));
    assert_eq!(headers.get_all("x-cutover-shadow"), [&b"true"[..]]);
    Ok(())
}

#[test]
fn shadow_header_values_are_copied_as_bytes_obs_text_included() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(0, MIB))?;
    let extra: [(&str, &[u8]); 2] = [("x-display-name", b"Jos\xe9 \xff"), ("x-plain", b"ok")];
    let calls = write_and_tick(&mut f, "POST", "/api/chat/send", b"{}", &extra)?;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].headers.get("x-plain"), Some(&b"ok"[..]));
    assert_eq!(
        calls[0].headers.get("x-display-name"),
        Some(&b"Jos\xe9 \xff"[..]),
        "{:?}",
        calls[0].headers
    );
    Ok(())
}

#[test]
fn put_and_patch_are_mirrored_and_reads_are_not() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(50, MIB))?;
    for method in ["GET", "HEAD", "OPTIONS", "DELETE"] {
        let calls = write_and_tick(&mut f, method, "/api/chat/1", b"", &[])?;
        assert!(calls.is_empty(), "{method} was mirrored: {calls:?}");
    }
    assert_eq!(f.counter("cutover.chat.shadow_sent"), 0);
    for method in ["PATCH", "PUT", "POST"] {
        let before = f.pending_http_calls().len();
        let calls = write_and_tick(&mut f, method, "/api/chat/1", b"{\"a\":1}", &[])?;
        assert_eq!(calls.len(), before + 1, "{method} was not mirrored");
        assert_eq!(
            calls.last().map(|c| c.body.as_slice()),
            Some(&b"{\"a\":1}"[..])
        );
    }
    assert_eq!(f.counter("cutover.chat.shadow_sent"), 3);
    Ok(())
}

#[test]
fn writes_outside_a_dual_write_service_are_not_mirrored() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(50, MIB))?;
    assert!(write_and_tick(&mut f, "POST", "/static/upload", b"x", &[])?.is_empty());
    let mut plain = Filter::boot(&config(&[chat(50)]))?;
    assert!(write_and_tick(&mut plain, "POST", "/api/chat/1", b"x", &[])?.is_empty());
    Ok(())
}
