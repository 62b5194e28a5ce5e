//! Override rules and cookie stickiness, through the real `.wasm`: the side, the cluster header,
//! `x-routed-to` on the response (none upstream), the counters, and what a malformed `Cookie` header does.
use crate::common;

use common::{assert_known_vectors, chat, expected_side, request, with};
use cutover_harness::{Error, Filter, MetricKind};
use serde_json::{json, Value};

const CLUSTER: &str = "x-cutover-cluster";

fn overrides() -> Value {
    json!([
        {"header": "x-cutover-side", "value": "new", "side": "new"},
        {"header": "x-cutover-side", "value": "legacy", "side": "legacy"},
        {"cookie": "cutover", "value": "beta", "side": "new"},
        {"cookie": "cutover", "value": "stay", "side": "legacy"}
    ])
}

/// `chat` at `new_percentage` with the override rules, and `sid` as stickiness cookie.
fn config(new_percentage: u32) -> String {
    json!({
        "stickiness_headers": ["x-correlation-id", "x-request-id"],
        "stickiness_cookies": ["sid"],
        "services": [with(chat(new_percentage), "overrides", overrides())]
    })
    .to_string()
}

/// A request as a browser sends it through Envoy: no correlation id, Envoy's x-request-id.
fn browser(path: &str, extra: &[(&'static str, &[u8])]) -> Vec<(&'static str, Vec<u8>)> {
    let mut headers = vec![
        (":method", b"GET".to_vec()),
        (":path", path.as_bytes().to_vec()),
        (":authority", b"gateway.local".to_vec()),
        ("x-request-id", b"envoy-generated-1".to_vec()),
    ];
    headers.extend(extra.iter().map(|(n, v)| (*n, v.to_vec())));
    headers
}

/// Sends the request and answers it: (cluster header, the side it names, response x-routed-to).
/// The upstream gets no `x-routed-to`: its cluster header names the side.
fn route(f: &mut Filter, headers: &[(&str, Vec<u8>)]) -> Result<(String, String, String), Error> {
    let mut s = f.request(headers, None)?;
    let upstream = s.upstream_headers();
    assert!(!upstream.contains("x-routed-to"), "{upstream:?}");
    let cluster = upstream.get_str(CLUSTER).unwrap_or("<none>").to_string();
    let routed = cluster
        .strip_prefix("chat_")
        .unwrap_or("<none>")
        .to_string();
    let response = s.respond(200, &[] as &[(&str, &str)])?;
    let answered = response
        .headers
        .get_str("x-routed-to")
        .unwrap_or("<none>")
        .to_string();
    s.finish()?;
    Ok((cluster, routed, answered))
}

fn owned(cluster: &str, side: &str) -> (String, String, String) {
    (cluster.to_string(), side.to_string(), side.to_string())
}

#[test]
fn a_header_override_picks_its_side_and_is_counted_apart() -> Result<(), Error> {
    let mut zero = Filter::boot(&config(0))?;
    let mut all = Filter::boot(&config(100))?;
    for suffix in ["routed_override_new", "routed_override_legacy"] {
        assert_eq!(
            zero.metric(&format!("cutover.chat.{suffix}")),
            Some((MetricKind::Counter, 0)),
            "{suffix} is defined at 0 before traffic"
        );
    }
    for n in 0..20 {
        let id = format!("user-{n}");
        let mut to_new = request("GET", "/api/chat/1", &id);
        to_new.push(("x-cutover-side", b"new".to_vec()));
        assert_eq!(route(&mut zero, &to_new)?, owned("chat_new", "new"));
        let mut to_legacy = request("GET", "/api/chat/1", &id);
        to_legacy.push(("x-cutover-side", b"legacy".to_vec()));
        assert_eq!(route(&mut all, &to_legacy)?, owned("chat_legacy", "legacy"));
    }
    assert_eq!(zero.counter("cutover.chat.routed_override_new"), 20);
    assert_eq!(all.counter("cutover.chat.routed_override_legacy"), 20);
    for f in [&zero, &all] {
        assert_eq!(f.counter("cutover.chat.routed_new"), 0);
        assert_eq!(f.counter("cutover.chat.routed_legacy"), 0);
    }
    // A value that is not exactly a rule's leaves the bucket in charge (counted as usual).
    let mut near_miss = request("GET", "/api/chat/1", "user-1");
    near_miss.push(("x-cutover-side", b"New".to_vec()));
    assert_eq!(
        route(&mut zero, &near_miss)?,
        owned("chat_legacy", "legacy")
    );
    assert_eq!(zero.counter("cutover.chat.routed_legacy"), 1);
    Ok(())
}

#[test]
fn a_cookie_override_picks_its_side() -> Result<(), Error> {
    let mut zero = Filter::boot(&config(0))?;
    let mut all = Filter::boot(&config(100))?;
    let beta = browser("/api/chat/1", &[("cookie", b"theme=dark; cutover=beta")]);
    assert_eq!(route(&mut zero, &beta)?, owned("chat_new", "new"));
    // Quoted, in a second Cookie header.
    let stay = browser(
        "/hubs/chat",
        &[("cookie", b"theme=dark"), ("cookie", b"cutover=\"stay\"")],
    );
    assert_eq!(route(&mut all, &stay)?, owned("chat_legacy", "legacy"));
    assert_eq!(zero.counter("cutover.chat.routed_override_new"), 1);
    assert_eq!(all.counter("cutover.chat.routed_override_legacy"), 1);
    Ok(())
}

#[test]
fn overrides_never_let_a_client_name_a_cluster() -> Result<(), Error> {
    let mut f = Filter::boot(&config(0))?;
    // A spoofed cluster header loses against the override's side and against the bucket.
    let mut spoofed = request("GET", "/api/chat/1", "user-1");
    spoofed.push((CLUSTER, b"admin_backend".to_vec()));
    spoofed.push(("x-cutover-side", b"new".to_vec()));
    let s = f.request(&spoofed, None)?;
    assert_eq!(s.upstream_headers().get_all(CLUSTER), [&b"chat_new"[..]]);
    drop(s);
    let mut spoofed = request("GET", "/api/chat/1", "user-1");
    spoofed.push((CLUSTER, b"chat_new".to_vec()));
    let s = f.request(&spoofed, None)?;
    assert_eq!(s.upstream_headers().get_all(CLUSTER), [&b"chat_legacy"[..]]);
    drop(s);
    // A rule naming a cluster instead of a side is rejected at configuration.
    let bad = json!({"services": [with(chat(0), "overrides",
        json!([{"header": "x-cutover-side", "value": "x", "side": "admin_backend"}]))]});
    let mut f = Filter::start()?;
    assert!(!f.configure(&bad.to_string())?);
    assert!(
        f.logs().iter().any(|l| l.message.contains(
            r#"services[0].overrides[0].side: expected "new" or "legacy", got "admin_backend""#
        )),
        "{:?}",
        f.logs()
    );
    Ok(())
}

#[test]
fn the_kill_switch_beats_an_override() -> Result<(), Error> {
    let cfg = json!({"services": [with(with(chat(100), "use_legacy", json!(true)),
        "overrides", overrides())]});
    let mut f = Filter::boot(&cfg.to_string())?;
    let mut to_new = request("GET", "/api/chat/1", "user-1");
    to_new.push(("x-cutover-side", b"new".to_vec()));
    assert_eq!(route(&mut f, &to_new)?, owned("chat_legacy", "legacy"));
    assert_eq!(f.counter("cutover.chat.routed_legacy"), 1);
    assert_eq!(f.counter("cutover.chat.routed_override_new"), 0);
    Ok(())
}

#[test]
fn a_cookie_keys_the_bucket_like_a_header_would() -> Result<(), Error> {
    assert_known_vectors();
    let mut f = Filter::boot(&config(50))?;
    let (mut new, mut legacy) = (0, 0);
    for n in 0..200 {
        let sid = format!("session-{n}");
        let cookie = format!("theme=dark; sid={sid}; other=1");
        let side = expected_side("chat", sid.as_bytes(), 50);
        let headers = browser("/api/chat/1", &[("cookie", cookie.as_bytes())]);
        let (_, routed, _) = route(&mut f, &headers)?;
        assert_eq!(routed, side, "{sid}");
        // The same session always gets the same side, whatever else changes.
        let mut again = browser("/api/conversations/9", &[("cookie", cookie.as_bytes())]);
        again[3].1 = format!("envoy-generated-{n}-again").into_bytes();
        let (_, routed_again, _) = route(&mut f, &again)?;
        assert_eq!(routed_again, side, "{sid}");
        match side {
            "new" => new += 2,
            _ => legacy += 2,
        }
    }
    assert_eq!(f.counter("cutover.chat.routed_new"), new);
    assert_eq!(f.counter("cutover.chat.routed_legacy"), legacy);
    assert_eq!(f.counter("cutover.chat.no_key"), 0);
    assert!(new > 100 && legacy > 100, "new {new}, legacy {legacy}");
    Ok(())
}

#[test]
fn the_key_sources_come_in_order_headers_cookies_request_id() -> Result<(), Error> {
    assert_known_vectors();
    let mut f = Filter::boot(&config(50))?;
    // Pick ids whose sides differ, so the side shows which source keyed the request.
    let ids: Vec<String> = (0..).map(|n| format!("id-{n}")).take(50).collect();
    let on = |side: &str| {
        ids.iter()
            .find(|id| expected_side("chat", id.as_bytes(), 50) == side)
            .cloned()
            .expect("an id on each side")
    };
    let (new_id, legacy_id) = (on("new"), on("legacy"));

    // Header before cookie.
    let mut h = browser(
        "/api/chat/1",
        &[("cookie", format!("sid={legacy_id}").as_bytes())],
    );
    h.push(("x-correlation-id", new_id.clone().into_bytes()));
    assert_eq!(route(&mut f, &h)?.1, "new");
    // Cookie before x-request-id.
    let mut h = browser(
        "/api/chat/1",
        &[("cookie", format!("sid={new_id}").as_bytes())],
    );
    h[3].1 = legacy_id.clone().into_bytes();
    assert_eq!(route(&mut f, &h)?.1, "new");
    assert_eq!(f.counter("cutover.chat.no_key"), 0);
    // Neither: x-request-id keys the request and counts no_key.
    let mut h = browser("/api/chat/1", &[("cookie", b"theme=dark")]);
    h[3].1 = new_id.clone().into_bytes();
    assert_eq!(route(&mut f, &h)?.1, "new");
    h[3].1 = legacy_id.clone().into_bytes();
    assert_eq!(route(&mut f, &h)?.1, "legacy");
    assert_eq!(f.counter("cutover.chat.no_key"), 2);
    Ok(())
}

#[test]
fn a_malformed_cookie_header_falls_back_without_failing_the_request() -> Result<(), Error> {
    let mut f = Filter::boot(&config(50))?;
    let malformed: &[&[u8]] = &[
        b"sid",
        b"sid=\"unterminated",
        b";;;=;",
        b"sid=a b",
        b"\xff\xfe=\x80; sid",
        b"sid=\x01",
        b"",
    ];
    for (n, cookie) in malformed.iter().enumerate() {
        let headers = browser("/api/chat/1", &[("cookie", cookie)]);
        let (cluster, routed, _) = route(&mut f, &headers)?;
        assert!(
            cluster.starts_with("chat_") && (routed == "new" || routed == "legacy"),
            "{cookie:?}: {cluster} {routed}"
        );
        assert_eq!(f.counter("cutover.chat.no_key"), n as u64 + 1, "{cookie:?}");
    }
    // A malformed pair before a good one: the good one keys the request.
    let headers = browser("/api/chat/1", &[("cookie", b"sid=\"open; sid=ok-1")]);
    let (_, routed, _) = route(&mut f, &headers)?;
    assert_eq!(routed, expected_side("chat", b"ok-1", 50));
    assert_eq!(f.counter("cutover.chat.no_key"), malformed.len() as u64);
    assert!(f.logs_at_least(cutover_harness::LogLevel::Error).is_empty());
    Ok(())
}
