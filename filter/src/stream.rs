//! One HTTP stream's decisions, as a state machine the glue feeds with what Envoy hands it:
//! request headers, body chunks, trailers, response headers and the end of the stream. Each step
//! answers with effects ([`StreamEffects`]): header edits, counter increments, log lines, a shadow
//! to submit, a primary status to report.
//!
//! Mirror states: `Off` → (a mirrored write with a body) `Buffering` → (body complete) `Submitted`
//! → (the primary's status reported) `Off`. The primary may answer before the body is complete:
//! its status is kept and reported right after the submission.

use crate::config::{FilterConfig, OverrideSource, ServiceConfig};
use crate::metrics::Counter;
use crate::mirror::{
    body_too_large, declared_too_large, is_mirrored, shadow_headers, shadow_side, SHADOW_HEADER,
};
use crate::outcome::parse_status;
use crate::routing::{
    match_service, route, Side, COOKIE_HEADER, REQUEST_ID_HEADER, ROUTED_TO_HEADER,
};
use crate::shadow::{ShadowInfo, ShadowRequest};

pub const TRAFFIC_PERCENTAGE_HEADER: &str = "x-traffic-percentage";
/// Logged paths and ids are cut to this many bytes.
const LOG_FIELD_MAX: usize = 256;

/// The request headers, read on demand (each read may cross into Envoy).
pub trait RequestHeaders {
    /// The first value of `name` (lower case), raw bytes.
    fn get(&mut self, name: &str) -> Option<Vec<u8>>;
    /// Every header, in order (only read for a mirrored write).
    fn all(&mut self) -> Vec<(String, Vec<u8>)>;
}

/// What a stream asks the glue to do.
pub trait StreamEffects {
    /// Replaces (`Some`) or removes (`None`) every value of a request header.
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    fn set_response_header(&mut self, name: &str, value: &str);
    fn count(&mut self, service: usize, counter: Counter);
    /// Hands a complete shadow to the root context; its id, or `None` if it was not accepted
    /// (already counted and logged there).
    fn submit(&mut self, service: usize, request: ShadowRequest, info: ShadowInfo) -> Option<u64>;
    /// Reports the primary's status of a submitted shadow (`None`: no response).
    fn primary_status(&mut self, id: u64, status: Option<u16>);
    fn debug(&mut self, line: &str);
}

/// A configuration with what every request needs precomputed.
#[derive(Debug)]
pub struct Settings {
    pub config: FilterConfig,
    /// `x-traffic-percentage` value per service.
    percentages: Vec<String>,
    /// Per service: the feature header on its responses (name, value), if it has one and
    /// `emit_feature_headers` is on.
    feature_headers: Vec<Option<(String, &'static str)>>,
}

impl Settings {
    pub fn new(config: FilterConfig) -> Self {
        let percentages = config
            .services
            .iter()
            .map(|s| s.new_percentage.to_string())
            .collect();
        let feature_headers = config
            .services
            .iter()
            .map(|s| {
                let value = if s.use_legacy { "true" } else { "false" };
                let header = s
                    .feature_header
                    .clone()
                    .filter(|_| config.emit_feature_headers);
                header.map(|h| (h, value))
            })
            .collect();
        Self {
            config,
            percentages,
            feature_headers,
        }
    }
}

/// The log line of an accepted configuration.
pub fn describe(config: &FilterConfig) -> String {
    let services: Vec<String> = config
        .services
        .iter()
        .map(|s| {
            let (pct, legacy, dual) = (s.new_percentage, s.use_legacy, s.dual_write.enabled);
            format!(
                "{} new={pct}% use_legacy={legacy} dual_write={dual}",
                s.name
            )
        })
        .collect();
    format!(
        "configured {} service(s): {}",
        services.len(),
        services.join(", ")
    )
}

/// A shadow being prepared: everything but the body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PreparedShadow {
    service: usize,
    cluster: String,
    headers: Vec<(String, Vec<u8>)>,
    info: ShadowInfo,
    timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mirror {
    Off,
    /// Copying the body as it streams to the primary.
    Buffering {
        shadow: Box<PreparedShadow>,
        copied: Vec<u8>,
    },
    /// Handed to the root context; the primary's status is still to be reported.
    Submitted {
        id: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// Service index and side of a matched request.
    routed: Option<(usize, Side)>,
    mirror: Mirror,
    /// The primary's status once its response headers passed (`Some(None)`: no valid status,
    /// or the stream ended without a response).
    primary_status: Option<Option<u16>>,
}

impl Default for Stream {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes for a log line: lossy UTF-8, cut to [`LOG_FIELD_MAX`].
fn for_log(bytes: &[u8]) -> String {
    let cut = bytes.get(..LOG_FIELD_MAX).unwrap_or(bytes);
    String::from_utf8_lossy(cut).into_owned()
}

/// The request headers routing may look at, read once: the stickiness headers, the service's
/// override headers, `x-request-id` (the last resort, listed or not), and every `Cookie` value
/// when cookies are configured. Only these, not the
/// whole map, so the cost of a request does not grow with its headers.
fn routing_headers(
    config: &FilterConfig,
    service: &ServiceConfig,
    headers: &mut impl RequestHeaders,
) -> Vec<(String, Vec<u8>)> {
    let override_headers = service.overrides.iter().filter_map(|rule| match &rule.source {
        OverrideSource::Header(name) => Some(name),
        OverrideSource::Cookie(_) => None,
    });
    let mut found: Vec<(String, Vec<u8>)> = Vec::new();
    let names = config
        .stickiness_headers
        .iter()
        .map(String::as_str)
        .chain(override_headers.map(String::as_str))
        .chain([REQUEST_ID_HEADER]);
    for name in names {
        if found.iter().any(|(seen, _)| seen == name) {
            continue;
        }
        if let Some(value) = headers.get(name) {
            found.push((name.to_string(), value));
        }
    }
    let uses_cookies = !config.stickiness_cookies.is_empty()
        || service
            .overrides
            .iter()
            .any(|rule| matches!(rule.source, OverrideSource::Cookie(_)));
    if uses_cookies {
        // `Cookie` may come as several headers: every value counts.
        found.extend(
            headers
                .all()
                .into_iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case(COOKIE_HEADER)),
        );
    }
    found
}

impl Stream {
    pub fn new() -> Self {
        Self {
            routed: None,
            mirror: Mirror::Off,
            primary_status: None,
        }
    }

    /// The side a matched request was routed to.
    pub fn routed(&self) -> Option<(usize, Side)> {
        self.routed
    }

    pub fn request_headers(
        &mut self,
        settings: &Settings,
        headers: &mut impl RequestHeaders,
        end_of_stream: bool,
        fx: &mut impl StreamEffects,
    ) {
        let config = &settings.config;
        // A client must never pick a cluster, nor pass a real write off as a shadow.
        fx.set_request_header(SHADOW_HEADER, None);
        let path = headers.get(":path").unwrap_or_default();
        let Some((index, service)) =
            match_service(config, &path).and_then(|i| config.services.get(i).map(|s| (i, s)))
        else {
            fx.set_request_header(&config.cluster_header, None);
            fx.set_request_header(ROUTED_TO_HEADER, None);
            return;
        };

        let routing = routing_headers(config, service, headers);
        let routed = route(config, service, routing.as_slice());
        for counter in routed.counters() {
            fx.count(index, counter);
        }
        let (side, key) = (routed.side, routed.key);
        // Replacing removes every value the client may have sent.
        fx.set_request_header(&config.cluster_header, Some(side.cluster(service)));
        fx.set_request_header(ROUTED_TO_HEADER, Some(side.as_str()));
        self.routed = Some((index, side));

        if !service.dual_write.enabled {
            return;
        }
        let method = headers.get(":method").unwrap_or_default();
        if !is_mirrored(service, &method) {
            return;
        }
        let all = headers.all();
        let content_length = all
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .map(|(_, value)| value.as_slice());
        if !end_of_stream && declared_too_large(service, content_length) {
            fx.count(index, Counter::ShadowSkippedBodyTooLarge);
            fx.debug("cutover: content-length over max_body_bytes, shadow skipped");
            return;
        }
        let shadow = PreparedShadow {
            service: index,
            cluster: shadow_side(side).cluster(service).to_string(),
            // Built from the client's headers; drops the cluster, routed-to and shadow headers.
            headers: shadow_headers(&all, &config.cluster_header, ROUTED_TO_HEADER),
            info: ShadowInfo {
                service: service.name.clone(),
                method: for_log(&method),
                path: for_log(&path),
                correlation_id: for_log(key.bytes),
            },
            timeout_ms: service.dual_write.timeout_ms,
        };
        if end_of_stream {
            self.submit(shadow, Vec::new(), fx);
        } else {
            self.mirror = Mirror::Buffering {
                shadow: Box::new(shadow),
                copied: Vec::new(),
            };
        }
    }

    /// Whether the glue must read the request body chunks (a shadow is being buffered).
    pub fn wants_body(&self) -> bool {
        matches!(self.mirror, Mirror::Buffering { .. })
    }

    /// A body chunk of `body_size` bytes passed; `read` fetches it from Envoy.
    pub fn request_body(
        &mut self,
        settings: &Settings,
        body_size: usize,
        end_of_stream: bool,
        read: impl FnOnce(usize) -> Vec<u8>,
        fx: &mut impl StreamEffects,
    ) {
        let Mirror::Buffering { shadow, copied } = &mut self.mirror else {
            return;
        };
        let service = shadow.service;
        let total = copied.len().saturating_add(body_size);
        let too_large = settings
            .config
            .services
            .get(service)
            .is_none_or(|s| body_too_large(s, total));
        if too_large {
            fx.count(service, Counter::ShadowSkippedBodyTooLarge);
            fx.debug("cutover: body over max_body_bytes, shadow skipped");
            self.mirror = Mirror::Off;
            return;
        }
        // The body streams on to the primary untouched; the shadow gets a copy of each chunk.
        if body_size > 0 {
            copied.extend_from_slice(&read(body_size));
        }
        if end_of_stream {
            self.body_complete(fx);
        }
    }

    /// Trailers end the request body.
    pub fn request_trailers(&mut self, fx: &mut impl StreamEffects) {
        self.body_complete(fx);
    }

    /// Whether the glue must read the primary's `:status` for [`Stream::response_headers`].
    pub fn wants_primary_status(&self) -> bool {
        !matches!(self.mirror, Mirror::Off)
    }

    /// The primary's response headers; `status` is its raw `:status` (read only when
    /// [`Stream::wants_primary_status`]).
    pub fn response_headers(
        &mut self,
        settings: &Settings,
        status: Option<&[u8]>,
        fx: &mut impl StreamEffects,
    ) {
        if self.wants_primary_status() {
            self.report_primary(status.and_then(parse_status), fx);
        }
        // Only the matched service's headers: the cost does not grow with the configuration.
        let Some((index, side)) = self.routed else {
            return;
        };
        if let Some(percentage) = settings.percentages.get(index) {
            fx.set_response_header(ROUTED_TO_HEADER, side.as_str());
            fx.set_response_header(TRAFFIC_PERCENTAGE_HEADER, percentage);
        }
        if let Some(Some((name, value))) = settings.feature_headers.get(index) {
            fx.set_response_header(name, value);
        }
    }

    /// The stream ended (logged, reset or done); a primary that never answered is reported.
    pub fn end(&mut self, fx: &mut impl StreamEffects) {
        self.report_primary(None, fx);
    }

    fn body_complete(&mut self, fx: &mut impl StreamEffects) {
        if let Mirror::Buffering { shadow, copied } =
            std::mem::replace(&mut self.mirror, Mirror::Off)
        {
            self.submit(*shadow, copied, fx);
        }
    }

    fn submit(&mut self, shadow: PreparedShadow, body: Vec<u8>, fx: &mut impl StreamEffects) {
        let request = ShadowRequest {
            id: 0,
            cluster: shadow.cluster,
            headers: shadow.headers,
            body,
            timeout_ms: shadow.timeout_ms,
        };
        self.mirror = match fx.submit(shadow.service, request, shadow.info) {
            Some(id) => Mirror::Submitted { id },
            None => Mirror::Off,
        };
        // The primary may have answered before the request body was complete.
        if let Some(status) = self.primary_status {
            self.report_primary(status, fx);
        }
    }

    fn report_primary(&mut self, status: Option<u16>, fx: &mut impl StreamEffects) {
        if self.primary_status.is_none() {
            self.primary_status = Some(status);
        }
        if let Mirror::Submitted { id } = self.mirror {
            self.mirror = Mirror::Off;
            fx.primary_status(id, self.primary_status.flatten());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Headers(Vec<(String, Vec<u8>)>);

    impl RequestHeaders for Headers {
        fn get(&mut self, name: &str) -> Option<Vec<u8>> {
            self.0
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        }
        fn all(&mut self) -> Vec<(String, Vec<u8>)> {
            self.0.clone()
        }
    }

    fn headers(method: &str, path: &str, extra: &[(&str, &str)]) -> Headers {
        let mut h = vec![
            (":method".to_string(), method.as_bytes().to_vec()),
            (":path".to_string(), path.as_bytes().to_vec()),
            (":authority".to_string(), b"example.test".to_vec()),
        ];
        h.extend(
            extra
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())),
        );
        Headers(h)
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Did {
        Request(String, Option<String>),
        Response(String, String),
        Count(usize, Counter),
        Submit(String, Vec<u8>),
        Primary(u64, Option<u16>),
    }

    #[derive(Default)]
    struct Fx {
        did: Vec<Did>,
        /// Whether the root context accepts the next shadow.
        full: bool,
    }

    impl StreamEffects for Fx {
        fn set_request_header(&mut self, name: &str, value: Option<&str>) {
            self.did
                .push(Did::Request(name.into(), value.map(String::from)));
        }
        fn set_response_header(&mut self, name: &str, value: &str) {
            self.did.push(Did::Response(name.into(), value.into()));
        }
        fn count(&mut self, service: usize, counter: Counter) {
            self.did.push(Did::Count(service, counter));
        }
        fn submit(&mut self, _: usize, request: ShadowRequest, _: ShadowInfo) -> Option<u64> {
            self.did.push(Did::Submit(request.cluster, request.body));
            (!self.full).then_some(7)
        }
        fn primary_status(&mut self, id: u64, status: Option<u16>) {
            self.did.push(Did::Primary(id, status));
        }
        fn debug(&mut self, _: &str) {}
    }

    impl Fx {
        fn take(&mut self) -> Vec<Did> {
            std::mem::take(&mut self.did)
        }
        fn submits(&self) -> Vec<&Did> {
            self.did
                .iter()
                .filter(|d| matches!(d, Did::Submit(..)))
                .collect()
        }
    }

    fn settings(dual_write: &str) -> Settings {
        let json = format!(
            r#"{{"stickiness_headers":["x-correlation-id"],"services":[{{"name":"chat",
                "path_prefixes":["/api/chat"],"legacy_cluster":"chat_legacy","new_cluster":"chat_new",
                "new_percentage":100,"feature_header":"x-chat-legacy"{dual_write}}}]}}"#
        );
        Settings::new(FilterConfig::from_json(json.as_bytes()).unwrap())
    }

    fn dual_write() -> Settings {
        settings(r#","dual_write":{"max_body_bytes":8}"#)
    }

    fn req(name: &str, value: Option<&str>) -> Did {
        Did::Request(name.into(), value.map(String::from))
    }

    #[test]
    fn a_matched_read_is_routed_and_spoofed_headers_replaced() {
        let s = settings("");
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        let mut h = headers(
            "GET",
            "/api/chat/1",
            &[("x-correlation-id", "u1"), ("x-cutover-shadow", "true")],
        );
        stream.request_headers(&s, &mut h, true, &mut fx);
        assert_eq!(
            fx.take(),
            [
                req("x-cutover-shadow", None),
                Did::Count(0, Counter::RoutedNew),
                req("x-cutover-cluster", Some("chat_new")),
                req("x-routed-to", Some("new")),
            ]
        );
        assert!(!stream.wants_primary_status());
        stream.response_headers(&s, None, &mut fx);
        assert_eq!(
            fx.take(),
            [
                Did::Response("x-routed-to".into(), "new".into()),
                Did::Response("x-traffic-percentage".into(), "100".into()),
                Did::Response("x-chat-legacy".into(), "false".into()),
            ]
        );
    }

    #[test]
    fn an_unmatched_request_only_loses_the_filter_headers() {
        let s = settings("");
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        stream.request_headers(&s, &mut headers("POST", "/other", &[]), true, &mut fx);
        assert_eq!(
            fx.take(),
            [
                req("x-cutover-shadow", None),
                req("x-cutover-cluster", None),
                req("x-routed-to", None),
            ]
        );
        stream.response_headers(&s, None, &mut fx);
        assert_eq!(fx.take(), [], "no routing or feature headers");
    }

    #[test]
    fn a_request_without_a_key_counts_no_key() {
        let s = settings("");
        let mut fx = Fx::default();
        Stream::new().request_headers(&s, &mut headers("GET", "/api/chat", &[]), true, &mut fx);
        assert!(fx.did.contains(&Did::Count(0, Counter::NoKey)));
    }

    #[test]
    fn a_bodiless_write_is_submitted_at_once_and_settled_by_the_response() {
        let s = dual_write();
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        stream.request_headers(&s, &mut headers("POST", "/api/chat/m", &[]), true, &mut fx);
        assert_eq!(
            fx.submits(),
            [&Did::Submit("chat_legacy".into(), Vec::new())]
        );
        fx.take();
        assert!(stream.wants_primary_status());
        stream.response_headers(&s, Some(b"201"), &mut fx);
        assert_eq!(fx.did.first(), Some(&Did::Primary(7, Some(201))));
        fx.take();
        stream.end(&mut fx);
        assert_eq!(fx.take(), [], "reported once");
    }

    #[test]
    fn the_body_is_copied_chunk_by_chunk_and_submitted_when_complete() {
        let s = dual_write();
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        stream.request_headers(&s, &mut headers("PUT", "/api/chat/m", &[]), false, &mut fx);
        assert!(stream.wants_body());
        stream.request_body(&s, 3, false, |_| b"abc".to_vec(), &mut fx);
        assert!(fx.submits().is_empty());
        stream.request_body(&s, 2, false, |_| b"de".to_vec(), &mut fx);
        stream.request_trailers(&mut fx);
        assert_eq!(
            fx.submits(),
            [&Did::Submit("chat_legacy".into(), b"abcde".to_vec())]
        );
        assert!(!stream.wants_body());
    }

    #[test]
    fn the_primary_answers_before_the_body_is_complete() {
        let s = dual_write();
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        stream.request_headers(&s, &mut headers("POST", "/api/chat/m", &[]), false, &mut fx);
        stream.request_body(&s, 2, false, |_| b"ab".to_vec(), &mut fx);
        assert!(stream.wants_primary_status());
        stream.response_headers(&s, Some(b"409"), &mut fx);
        assert!(!fx.did.iter().any(|d| matches!(d, Did::Primary(..))));
        fx.take();
        stream.request_body(&s, 1, true, |_| b"c".to_vec(), &mut fx);
        assert_eq!(
            fx.take(),
            [
                Did::Submit("chat_legacy".into(), b"abc".to_vec()),
                Did::Primary(7, Some(409))
            ]
        );
        stream.end(&mut fx);
        assert_eq!(fx.take(), []);
    }

    #[test]
    fn a_stream_reset_before_the_body_ends_sends_no_shadow() {
        let s = dual_write();
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        stream.request_headers(&s, &mut headers("POST", "/api/chat/m", &[]), false, &mut fx);
        stream.request_body(&s, 2, false, |_| b"ab".to_vec(), &mut fx);
        stream.end(&mut fx);
        assert!(fx.submits().is_empty());
        assert!(!fx.did.iter().any(|d| matches!(d, Did::Primary(..))));
    }

    #[test]
    fn a_stream_reset_after_submission_reports_no_response() {
        let s = dual_write();
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        stream.request_headers(&s, &mut headers("POST", "/api/chat/m", &[]), true, &mut fx);
        fx.take();
        stream.end(&mut fx);
        stream.end(&mut fx);
        assert_eq!(fx.take(), [Did::Primary(7, None)]);
    }

    #[test]
    fn bodies_over_the_cap_are_not_mirrored() {
        let s = dual_write();
        // Declared too large.
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        let mut h = headers("POST", "/api/chat/m", &[("content-length", "9")]);
        stream.request_headers(&s, &mut h, false, &mut fx);
        assert!(fx
            .did
            .contains(&Did::Count(0, Counter::ShadowSkippedBodyTooLarge)));
        assert!(!stream.wants_body());
        // Grows too large; exactly the cap is mirrored.
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        stream.request_headers(&s, &mut headers("POST", "/api/chat/m", &[]), false, &mut fx);
        stream.request_body(&s, 8, false, |_| vec![b'x'; 8], &mut fx);
        assert!(stream.wants_body());
        stream.request_body(&s, 1, true, |_| vec![b'x'], &mut fx);
        assert!(fx
            .did
            .contains(&Did::Count(0, Counter::ShadowSkippedBodyTooLarge)));
        assert!(fx.submits().is_empty());
    }

    #[test]
    fn reads_and_unlisted_methods_are_not_mirrored() {
        let s = dual_write();
        for method in ["GET", "DELETE"] {
            let mut fx = Fx::default();
            let mut stream = Stream::new();
            stream.request_headers(&s, &mut headers(method, "/api/chat/m", &[]), true, &mut fx);
            assert!(fx.submits().is_empty(), "{method}");
            assert!(!stream.wants_primary_status());
        }
    }

    #[test]
    fn a_shadow_the_root_refuses_is_not_reported_later() {
        let s = dual_write();
        let mut fx = Fx {
            full: true,
            ..Fx::default()
        };
        let mut stream = Stream::new();
        stream.request_headers(&s, &mut headers("POST", "/api/chat/m", &[]), true, &mut fx);
        assert_eq!(fx.submits().len(), 1);
        assert!(!stream.wants_primary_status());
        fx.take();
        stream.response_headers(&s, Some(b"200"), &mut fx);
        assert!(!fx.did.iter().any(|d| matches!(d, Did::Primary(..))));
    }
}
