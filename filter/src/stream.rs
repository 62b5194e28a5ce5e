//! One HTTP stream's decisions, as a state machine the glue feeds with what Envoy hands it:
//! request headers, body chunks, trailers, response headers and the end of the stream. Each step
//! answers with effects ([`StreamEffects`]): header edits, counter increments, log lines, a shadow
//! to submit, a primary status to report.
//!
//! Mirror states: `Off` → (a mirrored write with a body) `Buffering` → (body complete) `Submitted`
//! → (the primary's status reported) `Off`. The primary may answer before the body is complete:
//! its status is kept and reported right after the submission.

use crate::compare::pending::{Half, PrimaryCapture};
use crate::compare::Skip;
use crate::config::{CompareConfig, FilterConfig};
use crate::header_map::HeaderPairs;
use crate::metrics::Counter;
use crate::mirror::{
    body_too_large, declared_too_large, is_mirrored, shadow_headers, shadow_side, SHADOW_HEADER,
};
use crate::outcome::parse_status;
use crate::reads::{is_compared, is_read_mirrored, Mirrored};
use crate::routing::{
    match_service, route, RequestHeaders as _, Side, REQUEST_ID_HEADER, ROUTED_TO_HEADER,
};
use crate::shadow::{ShadowInfo, ShadowRequest};
use std::sync::Arc;

pub const TRAFFIC_PERCENTAGE_HEADER: &str = "x-traffic-percentage";
/// Logged paths and ids are cut to this many bytes.
const LOG_FIELD_MAX: usize = 256;

/// What a stream asks the glue to do.
pub trait StreamEffects {
    /// Replaces (`Some`) or removes (`None`) every value of a request header.
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    /// Adds a response header (after any value the upstream sent: the filter's response headers
    /// are appended, as Envoy's `response_headers_to_add` does by default; adding is ≈ 1.2k
    /// instructions cheaper than replacing, docs/benchmarks.md).
    fn add_response_header(&mut self, name: &str, value: &str);
    fn count(&mut self, service: usize, counter: Counter);
    /// Hands a complete shadow to the root context (with the rules its response is compared
    /// by, if it is); its id, or `None` if it was not accepted (already counted and logged
    /// there).
    fn submit(
        &mut self,
        service: usize,
        request: ShadowRequest,
        info: ShadowInfo,
        compare: Option<Arc<CompareConfig>>,
    ) -> Option<u64>;
    /// Reports the primary's captured response of a compared shadow.
    fn primary_response(&mut self, id: u64, half: Half);
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
    compare: Option<Arc<CompareConfig>>,
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
    compare: Compare,
}

/// The comparison of the primary's response with the shadow's: `Off` → (a compared shadow is
/// prepared) `Due` → (response headers) `Capturing` → (end of the response) `Captured`; the
/// capture is handed over once the shadow's id is known (a write's primary may answer before
/// its body is complete).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Compare {
    Off,
    Due {
        rules: Arc<CompareConfig>,
        id: Option<u64>,
    },
    Capturing {
        capture: Box<PrimaryCapture>,
        id: Option<u64>,
    },
    Captured {
        half: Box<Half>,
    },
}

impl Default for Stream {
    fn default() -> Self {
        Self::new()
    }
}

/// Removes request header `name` if the client sent it.
fn remove_if_sent(headers: &HeaderPairs<'_>, name: &str, fx: &mut impl StreamEffects) {
    if headers.contains(name) {
        fx.set_request_header(name, None);
    }
}

/// Bytes for a log line: lossy UTF-8, cut to [`LOG_FIELD_MAX`].
fn for_log(bytes: &[u8]) -> String {
    let cut = bytes.get(..LOG_FIELD_MAX).unwrap_or(bytes);
    String::from_utf8_lossy(cut).into_owned()
}

impl Stream {
    pub fn new() -> Self {
        Self {
            routed: None,
            mirror: Mirror::Off,
            primary_status: None,
            compare: Compare::Off,
        }
    }

    /// The side a matched request was routed to.
    pub fn routed(&self) -> Option<(usize, Side)> {
        self.routed
    }

    /// The request headers, as one map read from Envoy: everything the request side looks at
    /// comes from it (docs/benchmarks.md: one read of the whole map costs about one header read).
    pub fn request_headers(
        &mut self,
        settings: &Settings,
        headers: &HeaderPairs<'_>,
        end_of_stream: bool,
        fx: &mut impl StreamEffects,
    ) {
        let config = &settings.config;
        // A client must never pick a cluster, nor pass a real write off as a shadow, nor claim a
        // side: a header of the filter's a client sent is removed (the map shows it: no host
        // call when it is absent, the usual case).
        remove_if_sent(headers, SHADOW_HEADER, fx);
        let path = headers.first(":path").unwrap_or_default();
        let Some((index, service)) =
            match_service(config, path).and_then(|i| config.services.get(i).map(|s| (i, s)))
        else {
            remove_if_sent(headers, &config.cluster_header, fx);
            remove_if_sent(headers, ROUTED_TO_HEADER, fx);
            return;
        };

        let routed = route(config, service, headers);
        for counter in routed.counters() {
            fx.count(index, counter);
        }
        let (side, key) = (routed.side, routed.key);
        // Replacing removes every value the client may have sent. The upstream learns its side
        // from this header (its value is the side's cluster); `x-routed-to` is a response header.
        fx.set_request_header(&config.cluster_header, Some(side.cluster(service)));
        remove_if_sent(headers, ROUTED_TO_HEADER, fx);
        self.routed = Some((index, side));

        if !service.dual_write.enabled && service.shadow_reads.is_none() {
            return;
        }
        let request_id = headers.first(REQUEST_ID_HEADER);
        let method = headers.first(":method").unwrap_or_default();
        let (mirrored, timeout_ms) = if service.dual_write.enabled && is_mirrored(service, method) {
            (Mirrored::Write, service.dual_write.timeout_ms)
        } else {
            match &service.shadow_reads {
                Some(reads) if is_read_mirrored(service, method, request_id) => {
                    fx.count(index, Counter::ShadowReadsSent);
                    (Mirrored::Read, reads.timeout_ms)
                }
                _ => return,
            }
        };
        if !end_of_stream && declared_too_large(service, headers.first("content-length")) {
            fx.count(index, Counter::ShadowSkippedBodyTooLarge);
            fx.debug("cutover: content-length over max_body_bytes, shadow skipped");
            return;
        }
        let shadow = PreparedShadow {
            service: index,
            cluster: shadow_side(side).cluster(service).to_string(),
            // Built from the client's headers; drops the cluster, routed-to and shadow headers.
            headers: shadow_headers(
                &headers.to_owned_pairs(),
                &config.cluster_header,
                ROUTED_TO_HEADER,
            ),
            info: ShadowInfo {
                service: service.name.clone(),
                method: for_log(method),
                path: for_log(path),
                correlation_id: for_log(key.bytes),
            },
            timeout_ms,
            compare: service
                .compare
                .clone()
                .filter(|_| is_compared(service, mirrored)),
        };
        if end_of_stream {
            self.submit(shadow, Vec::new(), fx);
        } else {
            // The primary may answer before the body is complete: capture it from the start.
            if let Some(rules) = &shadow.compare {
                self.compare = Compare::Due {
                    rules: Arc::clone(rules),
                    id: None,
                };
            }
            self.mirror = Mirror::Buffering {
                shadow: Box::new(shadow),
                copied: Vec::new(),
            };
        }
    }

    /// Whether the request body chunks are read (a shadow is being buffered).
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
            self.compare = Compare::Off;
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

    /// Whether the primary's `:status` is read (a shadow waits for it, or a comparison).
    pub fn wants_primary_status(&self) -> bool {
        !matches!(self.mirror, Mirror::Off) || self.wants_response_headers()
    }

    /// Whether every response header is read (the response is compared).
    pub fn wants_response_headers(&self) -> bool {
        matches!(self.compare, Compare::Due { .. })
    }

    /// Whether the response body chunks are read (copied for a comparison).
    pub fn wants_response_body(&self) -> bool {
        matches!(self.compare, Compare::Capturing { .. })
    }

    /// The primary's response headers: `read` fetches the whole map from Envoy, only when
    /// [`Stream::wants_primary_status`] (its `:status`; every header when
    /// [`Stream::wants_response_headers`]).
    pub fn response_headers(
        &mut self,
        settings: &Settings,
        read: impl FnOnce() -> Vec<u8>,
        end_of_stream: bool,
        fx: &mut impl StreamEffects,
    ) {
        if self.wants_primary_status() {
            let buffer = read();
            let headers = HeaderPairs::parse(&buffer);
            let status = headers.first(":status").and_then(parse_status);
            self.report_primary(status, fx);
            if let Compare::Due { rules, id } = &self.compare {
                let capture = PrimaryCapture::start(rules, status, headers.text_pairs());
                self.compare = Compare::Capturing {
                    capture: Box::new(capture),
                    id: *id,
                };
                if end_of_stream {
                    self.response_complete(fx);
                }
            }
        }
        // Only the matched service's headers: the cost does not grow with the configuration.
        let Some((index, side)) = self.routed else {
            return;
        };
        if let Some(percentage) = settings.percentages.get(index) {
            fx.add_response_header(ROUTED_TO_HEADER, side.as_str());
            fx.add_response_header(TRAFFIC_PERCENTAGE_HEADER, percentage);
        }
        if let Some(Some((name, value))) = settings.feature_headers.get(index) {
            fx.add_response_header(name, value);
        }
    }

    /// A response body chunk of `body_size` bytes passed on to the client (never held);
    /// `read` fetches it from Envoy, only while the copy is within the cap.
    pub fn response_body(
        &mut self,
        body_size: usize,
        end_of_stream: bool,
        read: impl FnOnce(usize) -> Vec<u8>,
        fx: &mut impl StreamEffects,
    ) {
        if let Compare::Capturing { capture, .. } = &mut self.compare {
            if body_size > 0 && capture.wants_body() {
                capture.push(&read(body_size));
            }
        }
        if end_of_stream {
            self.response_complete(fx);
        }
    }

    /// Trailers end the response body.
    pub fn response_trailers(&mut self, fx: &mut impl StreamEffects) {
        self.response_complete(fx);
    }

    fn response_complete(&mut self, fx: &mut impl StreamEffects) {
        if let Compare::Capturing { capture, id } =
            std::mem::replace(&mut self.compare, Compare::Off)
        {
            let half = Box::new(capture.finish());
            self.compare = match id {
                Some(id) => {
                    fx.primary_response(id, *half);
                    Compare::Off
                }
                None => Compare::Captured { half },
            };
        }
    }

    /// The stream ended (logged, reset or done); a primary that never answered is reported.
    pub fn end(&mut self, fx: &mut impl StreamEffects) {
        self.report_primary(None, fx);
        // A response that did not complete is not compared.
        match std::mem::replace(&mut self.compare, Compare::Off) {
            Compare::Due { id: Some(id), .. } | Compare::Capturing { id: Some(id), .. } => {
                fx.primary_response(id, Half::Skipped(Skip::NoPrimaryResponse));
            }
            _ => {}
        }
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
        let compare = shadow.compare.clone();
        let id = fx.submit(shadow.service, request, shadow.info, shadow.compare);
        self.mirror = match id {
            Some(id) => Mirror::Submitted { id },
            None => Mirror::Off,
        };
        let Some(id) = id else {
            self.compare = Compare::Off;
            return;
        };
        if let Some(rules) = compare {
            self.compare = match std::mem::replace(&mut self.compare, Compare::Off) {
                Compare::Off => Compare::Due {
                    rules,
                    id: Some(id),
                },
                Compare::Due { rules, .. } => Compare::Due {
                    rules,
                    id: Some(id),
                },
                Compare::Capturing { capture, .. } => Compare::Capturing {
                    capture,
                    id: Some(id),
                },
                Compare::Captured { half } => {
                    fx.primary_response(id, *half);
                    Compare::Off
                }
            };
        }
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
    use crate::header_map::serialize;

    /// A header map as Envoy serialises it.
    fn serialized(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
        serialize(pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())))
    }

    fn pairs(buffer: &[u8]) -> HeaderPairs<'_> {
        HeaderPairs::parse(buffer)
    }

    /// The response map's reader, which must only be called when `status` is given.
    fn response(
        status: Option<&'static [u8]>,
        headers: &[(String, Vec<u8>)],
    ) -> impl FnOnce() -> Vec<u8> {
        let mut all = vec![(":status".to_string(), Vec::new())];
        all.extend_from_slice(headers);
        move || {
            all[0].1 = status.expect("the map is read only when wanted").to_vec();
            serialized(&all)
        }
    }

    fn headers(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
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
        serialized(&h)
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Did {
        Request(String, Option<String>),
        Response(String, String),
        Count(usize, Counter),
        Submit(String, Vec<u8>),
        /// A submission with comparison rules.
        Compared(String),
        Primary(u64, Option<u16>),
        PrimaryResponse(u64, Half),
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
        fn add_response_header(&mut self, name: &str, value: &str) {
            self.did.push(Did::Response(name.into(), value.into()));
        }
        fn count(&mut self, service: usize, counter: Counter) {
            self.did.push(Did::Count(service, counter));
        }
        fn submit(
            &mut self,
            _: usize,
            request: ShadowRequest,
            _: ShadowInfo,
            compare: Option<Arc<CompareConfig>>,
        ) -> Option<u64> {
            if compare.is_some() {
                self.did.push(Did::Compared(request.cluster.clone()));
            }
            self.did.push(Did::Submit(request.cluster, request.body));
            (!self.full).then_some(7)
        }
        fn primary_response(&mut self, id: u64, half: Half) {
            self.did.push(Did::PrimaryResponse(id, half));
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
    fn a_matched_read_is_routed_and_a_spoofed_shadow_header_removed() {
        let s = settings("");
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        let h = headers(
            "GET",
            "/api/chat/1",
            &[("x-correlation-id", "u1"), ("x-cutover-shadow", "true")],
        );
        stream.request_headers(&s, &pairs(&h), true, &mut fx);
        assert_eq!(
            fx.take(),
            [
                req("x-cutover-shadow", None),
                Did::Count(0, Counter::RoutedNew),
                req("x-cutover-cluster", Some("chat_new")),
            ]
        );
        assert!(!stream.wants_primary_status());
        stream.response_headers(&s, response(None, &[]), true, &mut fx);
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
    fn a_matched_request_without_spoofed_headers_costs_only_the_routing_edits() {
        let s = settings("");
        let mut fx = Fx::default();
        let h = headers("GET", "/api/chat/1", &[("x-correlation-id", "u1")]);
        Stream::new().request_headers(&s, &pairs(&h), true, &mut fx);
        assert_eq!(
            fx.take(),
            [
                Did::Count(0, Counter::RoutedNew),
                req("x-cutover-cluster", Some("chat_new")),
            ],
            "no removal of an absent x-cutover-shadow or x-routed-to"
        );
        // A client's cluster header, in any case, is replaced; its shadow header and
        // x-routed-to are removed.
        let spoofed = [
            ("X-Cutover-Cluster", "chat_legacy"),
            ("x-routed-to", "legacy"),
            ("X-Cutover-Shadow", "true"),
            ("x-correlation-id", "u1"),
        ];
        let h = headers("GET", "/api/chat/1", &spoofed);
        Stream::new().request_headers(&s, &pairs(&h), true, &mut fx);
        assert_eq!(
            fx.take(),
            [
                req("x-cutover-shadow", None),
                Did::Count(0, Counter::RoutedNew),
                req("x-cutover-cluster", Some("chat_new")),
                req("x-routed-to", None),
            ]
        );
    }

    #[test]
    fn a_cookie_keys_a_request_without_a_stickiness_header() {
        let json = r#"{"stickiness_headers":["x-correlation-id"],"stickiness_cookies":["sid","vid"],
            "services":[{"name":"chat","path_prefixes":["/api/chat"],"legacy_cluster":"l",
            "new_cluster":"n","new_percentage":50}]}"#;
        let s = Settings::new(FilterConfig::from_json(json.as_bytes()).unwrap());
        let extra = [
            ("cookie", "a=1"),
            ("x-request-id", "r1"),
            ("cookie", "vid=v1"),
        ];
        let h = headers("GET", "/api/chat/1", &extra);
        let mut fx = Fx::default();
        Stream::new().request_headers(&s, &pairs(&h), true, &mut fx);
        let side = crate::bucket::bucket("chat", b"v1") <= 50;
        let counter = if side {
            Counter::RoutedNew
        } else {
            Counter::RoutedLegacy
        };
        assert!(fx.did.contains(&Did::Count(0, counter)), "{:?}", fx.did);
        assert!(
            !fx.did.contains(&Did::Count(0, Counter::NoKey)),
            "keyed by the vid cookie"
        );
    }

    #[test]
    fn an_unmatched_request_only_loses_the_filter_headers_a_client_sent() {
        let s = settings("");
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        stream.request_headers(&s, &pairs(&headers("POST", "/other", &[])), true, &mut fx);
        assert_eq!(fx.take(), [], "nothing to remove: no host call");
        let spoofed = [
            ("x-routed-to", "new"),
            ("x-cutover-cluster", "chat_new"),
            ("x-cutover-shadow", "true"),
        ];
        let h = headers("POST", "/other", &spoofed);
        stream.request_headers(&s, &pairs(&h), true, &mut fx);
        assert_eq!(
            fx.take(),
            [
                req("x-cutover-shadow", None),
                req("x-cutover-cluster", None),
                req("x-routed-to", None),
            ]
        );
        stream.response_headers(&s, response(None, &[]), true, &mut fx);
        assert_eq!(fx.take(), [], "no routing or feature headers");
    }

    #[test]
    fn a_malformed_header_map_is_an_unmatched_request() {
        let s = settings("");
        let mut fx = Fx::default();
        let mut h = headers("GET", "/api/chat/1", &[("x-cutover-shadow", "true")]);
        // Cut inside the first name: no pair is whole, so no `:path`.
        h.truncate(4 + 4 * 8 + 5);
        Stream::new().request_headers(&s, &pairs(&h), true, &mut fx);
        Stream::new().request_headers(&s, &pairs(&[0xff; 3]), true, &mut fx);
        assert_eq!(fx.take(), []);
    }

    #[test]
    fn a_request_without_a_key_counts_no_key() {
        let s = settings("");
        let mut fx = Fx::default();
        Stream::new().request_headers(&s, &pairs(&headers("GET", "/api/chat", &[])), true, &mut fx);
        assert!(fx.did.contains(&Did::Count(0, Counter::NoKey)));
    }

    #[test]
    fn a_bodiless_write_is_submitted_at_once_and_settled_by_the_response() {
        let s = dual_write();
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        stream.request_headers(
            &s,
            &pairs(&headers("POST", "/api/chat/m", &[])),
            true,
            &mut fx,
        );
        assert_eq!(
            fx.submits(),
            [&Did::Submit("chat_legacy".into(), Vec::new())]
        );
        fx.take();
        assert!(stream.wants_primary_status());
        stream.response_headers(&s, response(Some(b"201"), &[]), true, &mut fx);
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
        stream.request_headers(
            &s,
            &pairs(&headers("PUT", "/api/chat/m", &[])),
            false,
            &mut fx,
        );
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
        stream.request_headers(
            &s,
            &pairs(&headers("POST", "/api/chat/m", &[])),
            false,
            &mut fx,
        );
        stream.request_body(&s, 2, false, |_| b"ab".to_vec(), &mut fx);
        assert!(stream.wants_primary_status());
        stream.response_headers(&s, response(Some(b"409"), &[]), true, &mut fx);
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
        stream.request_headers(
            &s,
            &pairs(&headers("POST", "/api/chat/m", &[])),
            false,
            &mut fx,
        );
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
        stream.request_headers(
            &s,
            &pairs(&headers("POST", "/api/chat/m", &[])),
            true,
            &mut fx,
        );
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
        let h = headers("POST", "/api/chat/m", &[("content-length", "9")]);
        stream.request_headers(&s, &pairs(&h), false, &mut fx);
        assert!(fx
            .did
            .contains(&Did::Count(0, Counter::ShadowSkippedBodyTooLarge)));
        assert!(!stream.wants_body());
        // Grows too large; exactly the cap is mirrored.
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        stream.request_headers(
            &s,
            &pairs(&headers("POST", "/api/chat/m", &[])),
            false,
            &mut fx,
        );
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
            stream.request_headers(
                &s,
                &pairs(&headers(method, "/api/chat/m", &[])),
                true,
                &mut fx,
            );
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
        stream.request_headers(
            &s,
            &pairs(&headers("POST", "/api/chat/m", &[])),
            true,
            &mut fx,
        );
        assert_eq!(fx.submits().len(), 1);
        assert!(!stream.wants_primary_status());
        fx.take();
        stream.response_headers(&s, response(Some(b"200"), &[]), true, &mut fx);
        assert!(!fx.did.iter().any(|d| matches!(d, Did::Primary(..))));
    }

    fn compared(fields: &str) -> Settings {
        settings(&format!(
            r#","shadow_reads":{{"percentage":100}},"compare":{{"ignore":["$.t"]}}{fields}"#
        ))
    }

    fn json_headers() -> Vec<(String, Vec<u8>)> {
        vec![
            (":status".into(), b"200".to_vec()),
            ("content-type".into(), b"application/json".to_vec()),
        ]
    }

    fn read(bytes: &'static [u8]) -> impl FnOnce(usize) -> Vec<u8> {
        move |n| bytes.get(..n).unwrap_or(bytes).to_vec()
    }

    fn primary_responses(did: &[Did]) -> Vec<&Did> {
        did.iter()
            .filter(|d| matches!(d, Did::PrimaryResponse(..)))
            .collect()
    }

    #[test]
    fn a_sampled_read_is_mirrored_and_its_response_captured_as_it_streams() {
        let s = compared("");
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        let h = headers("GET", "/api/chat/1", &[("x-request-id", "r-1")]);
        stream.request_headers(&s, &pairs(&h), true, &mut fx);
        let did = fx.take();
        assert!(did.contains(&Did::Count(0, Counter::ShadowReadsSent)));
        assert!(did.contains(&Did::Compared("chat_legacy".into())));
        assert!(did.contains(&Did::Submit("chat_legacy".into(), Vec::new())));
        assert!(stream.wants_response_headers());
        stream.response_headers(&s, response(Some(b"200"), &json_headers()), false, &mut fx);
        assert!(stream.wants_response_body());
        stream.response_body(7, false, read(br#"{"a":1,"#), &mut fx);
        assert_eq!(primary_responses(&fx.did), Vec::<&Did>::new());
        stream.response_body(6, true, read(br#""t":2}"#), &mut fx);
        match primary_responses(&fx.did).as_slice() {
            [Did::PrimaryResponse(7, Half::Response(r))] => {
                assert_eq!(r.status, 200);
                assert_eq!(r.body, br#"{"a":1,"t":2}"#);
                assert_eq!(r.content_type.as_deref(), Some(&b"application/json"[..]));
            }
            other => panic!("{other:?}"),
        }
        // Nothing more at the end of the stream.
        fx.take();
        stream.end(&mut fx);
        assert_eq!(primary_responses(&fx.did), Vec::<&Did>::new());
    }

    #[test]
    fn reads_outside_the_sample_or_methods_are_not_mirrored() {
        let s = settings(r#","shadow_reads":{"percentage":0},"compare":{}"#);
        let mut fx = Fx::default();
        let h = headers("GET", "/api/chat/1", &[("x-request-id", "r-1")]);
        Stream::new().request_headers(&s, &pairs(&h), true, &mut fx);
        assert!(fx.submits().is_empty());
        let s = compared("");
        let h = headers("DELETE", "/api/chat/1", &[("x-request-id", "r-1")]);
        Stream::new().request_headers(&s, &pairs(&h), true, &mut fx);
        assert!(fx.submits().is_empty());
        // Without a request id there is no sample.
        let h = headers("GET", "/api/chat/1", &[]);
        Stream::new().request_headers(&s, &pairs(&h), true, &mut fx);
        assert!(fx.submits().is_empty());
    }

    #[test]
    fn a_response_over_the_cap_is_reported_too_large_without_copying_on() {
        let s = settings(r#","shadow_reads":{"percentage":100},"compare":{"max_body_bytes":4}"#);
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        let h = headers("GET", "/api/chat/1", &[("x-request-id", "r-1")]);
        stream.request_headers(&s, &pairs(&h), true, &mut fx);
        stream.response_headers(&s, response(Some(b"200"), &json_headers()), false, &mut fx);
        stream.response_body(3, false, read(b"abc"), &mut fx);
        stream.response_body(3, false, read(b"def"), &mut fx);
        let never = |_| -> Vec<u8> { panic!("over the cap: not read") };
        stream.response_body(3, true, never, &mut fx);
        assert_eq!(
            primary_responses(&fx.did),
            [&Did::PrimaryResponse(7, Half::Skipped(Skip::BodyTooLarge))]
        );
    }

    #[test]
    fn a_stream_reset_mid_response_is_no_primary_response() {
        let s = compared("");
        for complete_headers in [false, true] {
            let mut fx = Fx::default();
            let mut stream = Stream::new();
            let h = headers("GET", "/api/chat/1", &[("x-request-id", "r-1")]);
            stream.request_headers(&s, &pairs(&h), true, &mut fx);
            if complete_headers {
                stream.response_headers(
                    &s,
                    response(Some(b"200"), &json_headers()),
                    false,
                    &mut fx,
                );
                stream.response_body(1, false, read(b"{"), &mut fx);
            }
            stream.end(&mut fx);
            assert_eq!(
                primary_responses(&fx.did),
                [&Did::PrimaryResponse(
                    7,
                    Half::Skipped(Skip::NoPrimaryResponse)
                )]
            );
            // Envoy may end a stream twice (on_log, on_done): reported once.
            fx.take();
            stream.end(&mut fx);
            assert!(primary_responses(&fx.did).is_empty());
        }
    }

    #[test]
    fn a_refused_shadow_is_not_compared() {
        let s = compared("");
        let mut fx = Fx {
            full: true,
            ..Fx::default()
        };
        let mut stream = Stream::new();
        let h = headers("GET", "/api/chat/1", &[("x-request-id", "r-1")]);
        stream.request_headers(&s, &pairs(&h), true, &mut fx);
        assert!(!stream.wants_response_headers());
        stream.response_headers(&s, response(Some(b"200"), &json_headers()), true, &mut fx);
        stream.end(&mut fx);
        assert!(primary_responses(&fx.did).is_empty());
    }

    #[test]
    fn a_compared_write_answered_before_its_body_ends_is_handed_over_after_submission() {
        let s = settings(r#","dual_write":{},"compare":{"writes":true}"#);
        let mut fx = Fx::default();
        let mut stream = Stream::new();
        let h = headers("POST", "/api/chat/m", &[("x-correlation-id", "u1")]);
        stream.request_headers(&s, &pairs(&h), false, &mut fx);
        stream.request_body(&s, 2, false, read(b"he"), &mut fx);
        assert!(stream.wants_response_headers());
        stream.response_headers(&s, response(Some(b"201"), &json_headers()), true, &mut fx);
        assert!(primary_responses(&fx.did).is_empty(), "no id yet");
        stream.request_body(&s, 3, true, read(b"llo"), &mut fx);
        let did = fx.take();
        assert!(did.contains(&Did::Compared("chat_legacy".into())));
        match primary_responses(&did).as_slice() {
            [Did::PrimaryResponse(7, Half::Response(r))] => assert_eq!(r.status, 201),
            other => panic!("{other:?}"),
        }
        // Writes are compared only with compare.writes.
        let s = settings(r#","dual_write":{},"shadow_reads":{"percentage":100},"compare":{}"#);
        let h = headers("POST", "/api/chat/m", &[("x-request-id", "r-1")]);
        Stream::new().request_headers(&s, &pairs(&h), true, &mut fx);
        let did = fx.take();
        assert!(did.iter().any(|d| matches!(d, Did::Submit(..))));
        assert!(!did.iter().any(|d| matches!(d, Did::Compared(..))));
        assert!(!did.contains(&Did::Count(0, Counter::ShadowReadsSent)));
    }
}
