//! Dual-write mirror policy: which requests are mirrored, where the shadow goes, and which of
//! the client's headers it carries.

use crate::config::ServiceConfig;
use crate::routing::Side;

/// Marks the shadow copy of a write, so shadow backends can tell it apart.
pub const SHADOW_HEADER: &str = "x-cutover-shadow";

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the legacy ones proxies still see) describe one
/// connection, not the request, so the shadow — sent on Envoy's own connection — must not
/// carry them. `content-length` is recomputed by Envoy from the shadow's body.
const DROPPED_HEADERS: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-authenticate",
    "proxy-authorization",
    "content-length",
];

/// Pseudo-headers the shadow keeps; Envoy's `dispatch_http_call` requires these three.
const KEPT_PSEUDO_HEADERS: [&str; 3] = [":method", ":path", ":authority"];

/// Whether a request of `method` to `service` is mirrored.
pub fn is_mirrored(service: &ServiceConfig, method: &[u8]) -> bool {
    service.dual_write.enabled
        && service
            .dual_write
            .methods
            .iter()
            .any(|m| m.as_bytes() == method)
}

/// The shadow goes to the side the primary did not.
pub fn shadow_side(primary: Side) -> Side {
    primary.other()
}

/// Whether a body of `len` bytes is over the service's cap (and its shadow skipped).
pub fn body_too_large(service: &ServiceConfig, len: usize) -> bool {
    u64::try_from(len).map_or(true, |len| len > service.dual_write.max_body_bytes)
}

/// Whether a declared `content-length` already puts the body over the cap.
pub fn declared_too_large(service: &ServiceConfig, content_length: Option<&[u8]>) -> bool {
    content_length
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|len| len > service.dual_write.max_body_bytes)
}

/// The shadow's headers: the client's request headers (names lower-case, as Envoy hands them
/// over) minus hop-by-hop headers, headers the `Connection` header names, `content-length`,
/// the routing headers (`cluster_header`, `x-routed-to`) and pseudo-headers other than
/// `:method`, `:path`, `:authority`; plus `x-cutover-shadow: true`. Values stay bytes.
pub fn shadow_headers(
    request_headers: &[(String, Vec<u8>)],
    cluster_header: &str,
    routed_to_header: &str,
) -> Vec<(String, Vec<u8>)> {
    let connection_listed: Vec<String> = request_headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, value)| {
            value
                .split(|b| *b == b',')
                .map(|token| String::from_utf8_lossy(token.trim_ascii()).to_ascii_lowercase())
                .filter(|token| !token.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();

    let mut headers: Vec<(String, Vec<u8>)> = request_headers
        .iter()
        .filter(|(name, _)| {
            let lower = name.to_ascii_lowercase();
            if lower.starts_with(':') {
                return KEPT_PSEUDO_HEADERS.contains(&lower.as_str());
            }
            !DROPPED_HEADERS.contains(&lower.as_str())
                && lower != cluster_header
                && lower != routed_to_header
                && lower != SHADOW_HEADER
                && !connection_listed.contains(&lower)
        })
        .cloned()
        .collect();
    headers.push((SHADOW_HEADER.to_string(), b"true".to_vec()));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilterConfig;

    fn service(dual_write: &str) -> ServiceConfig {
        let json = format!(
            r#"{{"services":[{{"name":"chat","path_prefixes":["/api/chat"],
                "legacy_cluster":"chat_legacy","new_cluster":"chat_new"{dual_write}}}]}}"#
        );
        FilterConfig::from_json(json.as_bytes())
            .unwrap()
            .services
            .remove(0)
    }

    #[test]
    fn only_configured_methods_of_enabled_services_are_mirrored() {
        let s = service(r#","dual_write":{}"#);
        for m in ["POST", "PUT", "PATCH"] {
            assert!(is_mirrored(&s, m.as_bytes()), "{m}");
        }
        for m in ["GET", "HEAD", "DELETE", "OPTIONS", "post", ""] {
            assert!(!is_mirrored(&s, m.as_bytes()), "{m}");
        }
        let s = service(r#","dual_write":{"methods":["DELETE"]}"#);
        assert!(is_mirrored(&s, b"DELETE"));
        assert!(!is_mirrored(&s, b"POST"));

        let s = service(r#","dual_write":{"enabled":false}"#);
        assert!(!is_mirrored(&s, b"POST"));
        let s = service("");
        assert!(!is_mirrored(&s, b"POST"));
    }

    #[test]
    fn shadow_goes_to_the_other_side() {
        let s = service("");
        assert_eq!(shadow_side(Side::New).cluster(&s), "chat_legacy");
        assert_eq!(shadow_side(Side::Legacy).cluster(&s), "chat_new");
    }

    #[test]
    fn body_cap_is_inclusive() {
        let s = service(r#","dual_write":{"max_body_bytes":10}"#);
        assert!(!body_too_large(&s, 0));
        assert!(!body_too_large(&s, 10));
        assert!(body_too_large(&s, 11));
    }

    #[test]
    fn declared_length_over_the_cap() {
        let s = service(r#","dual_write":{"max_body_bytes":10}"#);
        assert!(!declared_too_large(&s, None));
        assert!(!declared_too_large(&s, Some(b"10")));
        assert!(declared_too_large(&s, Some(b"11")));
        assert!(declared_too_large(&s, Some(b"99999999999999")));
        // Unparseable lengths are left to Envoy; the body size decides.
        assert!(!declared_too_large(&s, Some(b"abc")));
        assert!(!declared_too_large(&s, Some(b"\xff")));
    }

    fn h(name: &str, value: &[u8]) -> (String, Vec<u8>) {
        (name.to_string(), value.to_vec())
    }

    #[test]
    fn shadow_headers_drop_hop_by_hop_routing_and_pseudo_headers() {
        let request = vec![
            h(":method", b"POST"),
            h(":path", b"/api/chat/messages?x=1"),
            h(":authority", b"example.test"),
            h(":scheme", b"http"),
            h("connection", b"keep-alive, X-Private-Hop"),
            h("keep-alive", b"timeout=5"),
            h("proxy-connection", b"keep-alive"),
            h("transfer-encoding", b"chunked"),
            h("upgrade", b"websocket"),
            h("te", b"trailers"),
            h("trailer", b"x-checksum"),
            h("proxy-authenticate", b"Basic"),
            h("proxy-authorization", b"Basic abc"),
            h("content-length", b"42"),
            h("x-private-hop", b"1"),
            h("x-cutover-cluster", b"chat_new"),
            h("x-routed-to", b"new"),
            h("x-cutover-shadow", b"false"),
            h("x-correlation-id", b"corr-1"),
            h("content-type", b"application/json"),
            h("authorization", b"Bearer t"),
            h("x-binary", b"\xff\x80"),
        ];
        let shadow = shadow_headers(&request, "x-cutover-cluster", "x-routed-to");
        assert_eq!(
            shadow,
            vec![
                h(":method", b"POST"),
                h(":path", b"/api/chat/messages?x=1"),
                h(":authority", b"example.test"),
                h("x-correlation-id", b"corr-1"),
                h("content-type", b"application/json"),
                h("authorization", b"Bearer t"),
                h("x-binary", b"\xff\x80"),
                h("x-cutover-shadow", b"true"),
            ]
        );
    }

    #[test]
    fn repeated_headers_are_kept() {
        let request = vec![h("x-tag", b"a"), h("x-tag", b"b")];
        let shadow = shadow_headers(&request, "x-cutover-cluster", "x-routed-to");
        assert_eq!(
            shadow,
            vec![
                h("x-tag", b"a"),
                h("x-tag", b"b"),
                h("x-cutover-shadow", b"true")
            ]
        );
    }
}
