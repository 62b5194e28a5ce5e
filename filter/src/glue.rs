//! The proxy-wasm glue: reads headers (always as bytes), applies the pure core, sets headers,
//! counts, and runs dual-write.
//!
//! Dual-write: the HTTP context prepares the shadow and hands it to its root context through a
//! shared [`Tracker`]; the root context dispatches it on its tick and receives the outcome.
//! The Rust SDK delivers `on_http_call_response` only to a context that still exists, and an
//! HTTP context is gone as soon as the client's stream ends — the root context is not.

use crate::config::FilterConfig;
use crate::metrics::{metric_name, Counter, Gauge};
use crate::mirror::{
    body_too_large, declared_too_large, is_mirrored, shadow_headers, shadow_side, SHADOW_HEADER,
};
use crate::outcome::{classify, needs_body, parse_status, CallResponse, Outcome, BODY_PREFIX_LEN};
use crate::routing::{match_service, route, Side, ROUTED_TO_HEADER};
use crate::shadow::{Settled, ShadowInfo, ShadowRequest, Tracker};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

const TRAFFIC_PERCENTAGE_HEADER: &str = "x-traffic-percentage";
/// How often the root context sends queued shadows while there are any.
const TICK: Duration = Duration::from_millis(2);
/// Shadows in flight per root context (one per worker); beyond this a shadow is not sent and
/// counted as failed.
const MAX_SHADOWS_IN_FLIGHT: usize = 10_000;
/// How long after its timeout an unsettled shadow is forgotten.
const SETTLE_GRACE_MS: u64 = 30_000;
/// How often the tick looks for shadows that outlived their deadline.
const EXPIRY_INTERVAL_MS: u64 = 1_000;
/// Logged paths and ids are cut to this many bytes.
const LOG_FIELD_MAX: usize = 256;

proxy_wasm::main! {{
    // Envoy filters by its own log level; let everything through to it.
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(CutoverRoot::new()) });
}}

thread_local! {
    /// Metric ids by name. The VM (and this map) outlives plugin configurations: ECDS updates
    /// reuse it, and each name must be defined with Envoy only once.
    static METRIC_IDS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
}

fn define_metric(kind: MetricType, name: String) -> Option<u32> {
    METRIC_IDS.with(|ids| {
        if let Some(id) = ids.borrow().get(&name) {
            return Some(*id);
        }
        match hostcalls::define_metric(kind, &name) {
            Ok(id) => {
                ids.borrow_mut().insert(name, id);
                Some(id)
            }
            Err(status) => {
                log::warn!("cutover: cannot define metric {name}: {status:?}");
                None
            }
        }
    })
}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A header value as the `&str` the SDK's `dispatch_http_call` wants, with its bytes unchanged.
///
/// Envoy forwards obs-text (0x80–0xFF) in header values and the shadow must carry them as they
/// are, but proxy-wasm 0.2.5 has no bytes variant of `dispatch_http_call`, and a registered
/// callout (needed for `on_http_call_response`) can only come from it. Valid UTF-8 is converted
/// safely; anything else is passed through unchecked.
fn header_value_for_sdk(value: &[u8]) -> &str {
    match std::str::from_utf8(value) {
        Ok(text) => text,
        // SAFETY: a `str` that is not UTF-8 is only a problem for code that relies on the
        // encoding. The value goes straight into `hostcalls::dispatch_http_call`, whose
        // serialisation in proxy-wasm 0.2.5 (pinned with `=` in Cargo.toml) only calls `len()`
        // and `as_bytes()` on it — byte-level operations that assume nothing about UTF-8 — and
        // the `&str` does not outlive that call.
        Err(_) => unsafe { std::str::from_utf8_unchecked(value) },
    }
}

/// The first value of header `name` (ASCII case-insensitive) in a map read from Envoy.
fn header_value<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_slice())
}

/// Bytes for a log line: lossy UTF-8, cut to [`LOG_FIELD_MAX`].
fn for_log(bytes: &[u8]) -> String {
    let cut = bytes.get(..LOG_FIELD_MAX).unwrap_or(bytes);
    String::from_utf8_lossy(cut).into_owned()
}

/// Metric ids of one service, indexed by `Counter::index` / `Gauge::index`.
struct ServiceMetrics {
    counters: Vec<Option<u32>>,
    gauges: Vec<Option<u32>>,
}

impl ServiceMetrics {
    fn define(service: &str) -> Self {
        Self {
            counters: Counter::ALL
                .iter()
                .map(|c| define_metric(MetricType::Counter, metric_name(service, c.suffix())))
                .collect(),
            gauges: Gauge::ALL
                .iter()
                .map(|g| define_metric(MetricType::Gauge, metric_name(service, g.suffix())))
                .collect(),
        }
    }

    fn increment(&self, counter: Counter) {
        if let Some(Some(id)) = self.counters.get(counter.index()) {
            // A failing stats call must not fail the request.
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }

    fn set(&self, gauge: Gauge, value: u64) {
        if let Some(Some(id)) = self.gauges.get(gauge.index()) {
            let _ = hostcalls::record_metric(*id, value);
        }
    }
}

/// Everything a request needs, built once per configuration.
struct Runtime {
    config: FilterConfig,
    metrics: Vec<ServiceMetrics>,
    /// `x-traffic-percentage` value per service, formatted once per configuration.
    percentage_values: Vec<String>,
}

impl Runtime {
    fn new(config: FilterConfig) -> Self {
        let metrics = config
            .services
            .iter()
            .map(|s| {
                let m = ServiceMetrics::define(&s.name);
                m.set(Gauge::NewPercentage, u64::from(s.new_percentage));
                m.set(Gauge::UseLegacy, u64::from(s.use_legacy));
                m.set(Gauge::DualWriteEnabled, u64::from(s.dual_write.enabled));
                m
            })
            .collect();
        let percentage_values = config
            .services
            .iter()
            .map(|s| s.new_percentage.to_string())
            .collect();
        Self {
            config,
            metrics,
            percentage_values,
        }
    }

    fn count(&self, service: usize, counter: Counter) {
        if let Some(m) = self.metrics.get(service) {
            m.increment(counter);
        }
    }

    fn count_by_name(&self, service: &str, counter: Counter) {
        if let Some(index) = self.config.services.iter().position(|s| s.name == service) {
            self.count(index, counter);
        }
    }

    /// Mismatch counter and the warn line for a shadow whose outcome and primary are known.
    fn report(&self, settled: &Settled) {
        if settled.shadow.is_none() {
            // Expired without a callback: still one outcome per shadow sent.
            self.count_by_name(&settled.info.service, Counter::ShadowFailedReset);
        }
        if settled.mismatch {
            self.count_by_name(&settled.info.service, Counter::ShadowMismatch);
        }
        if settled.is_noteworthy() {
            let primary = settled
                .primary_status
                .map_or_else(|| "none".to_string(), |s| s.to_string());
            let shadow = settled
                .shadow
                .map_or_else(|| "lost".to_string(), Outcome::describe);
            log::warn!(
                "cutover: shadow {}: service={} method={} path={} correlation_id={} primary_status={} shadow_status={}",
                if settled.mismatch { "mismatch" } else { "failed" },
                settled.info.service,
                settled.info.method,
                settled.info.path,
                settled.info.correlation_id,
                primary,
                shadow
            );
        }
    }
}

/// State a root context shares with the HTTP contexts it creates.
struct Shared {
    tracker: Tracker,
    tick_armed: bool,
}

struct CutoverRoot {
    runtime: Option<Rc<Runtime>>,
    shared: Rc<RefCell<Shared>>,
    /// Envoy asked us to finish; `done()` is called once no shadow is in flight.
    draining: bool,
    /// Next time the tick looks for expired shadows.
    next_expiry_ms: u64,
}

impl CutoverRoot {
    fn new() -> Self {
        Self {
            runtime: None,
            shared: Rc::new(RefCell::new(Shared {
                tracker: Tracker::new(MAX_SHADOWS_IN_FLIGHT, SETTLE_GRACE_MS),
                tick_armed: false,
            })),
            draining: false,
            next_expiry_ms: 0,
        }
    }

    fn dispatch(&self, runtime: &Runtime, request: ShadowRequest) {
        let service = self
            .shared
            .borrow()
            .tracker
            .service_of(request.id)
            .unwrap_or_default();
        runtime.count_by_name(&service, Counter::ShadowSent);

        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), header_value_for_sdk(value)))
            .collect();
        let body = if request.body.is_empty() {
            None
        } else {
            Some(request.body.as_slice())
        };
        let now = now_ms();
        match hostcalls::dispatch_http_call(
            &request.cluster,
            headers,
            body,
            Vec::new(),
            Duration::from_millis(request.timeout_ms),
        ) {
            Ok(token) => {
                self.shared.borrow_mut().tracker.dispatched(
                    request.id,
                    token,
                    now,
                    request.timeout_ms,
                );
            }
            Err(status) => {
                log::warn!(
                    "cutover: cannot dispatch shadow to cluster {}: {status:?}",
                    request.cluster
                );
                runtime.count_by_name(&service, Counter::ShadowFailedReset);
                let settled = self
                    .shared
                    .borrow_mut()
                    .tracker
                    .shadow_outcome(request.id, Outcome::FailedReset);
                if let Some(settled) = settled {
                    runtime.report(&settled);
                }
            }
        }
    }

    fn finish_if_drained(&mut self) {
        if self.draining && self.shared.borrow().tracker.in_flight() == 0 {
            self.draining = false;
            self.done();
        }
    }
}

impl Context for CutoverRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let Some(dispatched) = self.shared.borrow().tracker.dispatched_as(token_id) else {
            return;
        };
        // Without headers Envoy has no response map to read: asking would fail the hostcall.
        let status = if num_headers > 0 {
            self.get_http_call_response_header_bytes(":status")
        } else {
            None
        };
        let body_prefix = if body_size > 0 && needs_body(status.as_deref()) {
            self.get_http_call_response_body(0, BODY_PREFIX_LEN.min(body_size))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let outcome = classify(&CallResponse {
            status: status.as_deref(),
            body_prefix: &body_prefix,
            elapsed_ms: now_ms().saturating_sub(dispatched.at_ms),
            timeout_ms: dispatched.timeout_ms,
        });
        log::debug!(
            "cutover: shadow response token={token_id} headers={num_headers} body={body_size} status={:?} outcome={outcome:?}",
            status.as_deref().map(String::from_utf8_lossy)
        );
        let (service, settled) = {
            let mut shared = self.shared.borrow_mut();
            let service = shared.tracker.service_of(dispatched.id).unwrap_or_default();
            (service, shared.tracker.token_outcome(token_id, outcome))
        };
        runtime.count_by_name(&service, outcome.counter());
        if let Some(settled) = settled {
            runtime.report(&settled);
        }
        self.finish_if_drained();
    }

    fn on_done(&mut self) -> bool {
        // Keep the root context (and the outcome callbacks) alive until every shadow settled.
        if self.shared.borrow().tracker.in_flight() == 0 {
            return true;
        }
        self.draining = true;
        false
    }
}

impl RootContext for CutoverRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match FilterConfig::from_json(&bytes) {
            Ok(config) => {
                log::info!(
                    "cutover: configured {} service(s): {}",
                    config.services.len(),
                    config
                        .services
                        .iter()
                        .map(|s| format!(
                            "{} new={}% use_legacy={} dual_write={}",
                            s.name, s.new_percentage, s.use_legacy, s.dual_write.enabled
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.runtime = Some(Rc::new(Runtime::new(config)));
                true
            }
            Err(err) => {
                log::error!("cutover: rejected configuration: {err}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let queued = self.shared.borrow_mut().tracker.take_queue();
        for request in queued {
            self.dispatch(&runtime, request);
        }
        let now = now_ms();
        if now >= self.next_expiry_ms {
            self.next_expiry_ms = now.saturating_add(EXPIRY_INTERVAL_MS);
            let expired = self.shared.borrow_mut().tracker.expire(now);
            for settled in &expired {
                runtime.report(settled);
            }
        }
        let idle = {
            let shared = self.shared.borrow();
            !shared.tracker.has_queued() && shared.tracker.in_flight() == 0
        };
        if idle {
            // Stop ticking until the next shadow is submitted.
            let _ = hostcalls::set_tick_period(Duration::ZERO);
            self.shared.borrow_mut().tick_armed = false;
        }
        self.finish_if_drained();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(CutoverHttp {
            runtime: self.runtime.clone(),
            shared: Rc::clone(&self.shared),
            routed: None,
            mirror: Mirror::Off,
            primary_status: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A shadow being prepared: everything but the body.
struct PreparedShadow {
    service: usize,
    cluster: String,
    headers: Vec<(String, Vec<u8>)>,
    info: ShadowInfo,
    timeout_ms: u64,
}

enum Mirror {
    Off,
    /// Copying the body as it streams to the primary.
    Buffering {
        shadow: PreparedShadow,
        copied: Vec<u8>,
    },
    /// Handed to the root context; the primary's status is still to be reported.
    Submitted {
        id: u64,
    },
}

struct CutoverHttp {
    /// `None` only if Envoy created a stream before a configuration was accepted.
    runtime: Option<Rc<Runtime>>,
    shared: Rc<RefCell<Shared>>,
    /// Service index and side of a matched request.
    routed: Option<(usize, Side)>,
    mirror: Mirror,
    /// The primary's status once its response headers passed (`Some(None)`: no valid status,
    /// or the stream ended without a response).
    primary_status: Option<Option<u16>>,
}

impl CutoverHttp {
    fn submit(&mut self, runtime: &Runtime, shadow: PreparedShadow, body: Vec<u8>) {
        self.mirror = Mirror::Off;
        let request = ShadowRequest {
            id: 0,
            cluster: shadow.cluster,
            headers: shadow.headers,
            body,
            timeout_ms: shadow.timeout_ms,
        };
        let submitted =
            self.shared
                .borrow_mut()
                .tracker
                .submit(request, shadow.info.clone(), now_ms());
        match submitted {
            Ok(id) => {
                self.mirror = Mirror::Submitted { id };
                let arm = !self.shared.borrow().tick_armed;
                if arm {
                    // From an HTTP context this sets the tick of its root context.
                    let _ = hostcalls::set_tick_period(TICK);
                    self.shared.borrow_mut().tick_armed = true;
                }
                // The primary may have answered before the request body was complete.
                if let Some(status) = self.primary_status {
                    self.report_primary(status);
                }
            }
            Err(_) => {
                runtime.count(shadow.service, Counter::ShadowSent);
                runtime.count(shadow.service, Counter::ShadowFailedReset);
                log::warn!(
                    "cutover: shadow failed: service={} method={} path={} correlation_id={} primary_status=pending shadow_status=not-sent ({MAX_SHADOWS_IN_FLIGHT} shadows in flight)",
                    shadow.info.service,
                    shadow.info.method,
                    shadow.info.path,
                    shadow.info.correlation_id
                );
            }
        }
    }

    fn report_primary(&mut self, status: Option<u16>) {
        if self.primary_status.is_none() {
            self.primary_status = Some(status);
        }
        let Mirror::Submitted { id } = self.mirror else {
            return;
        };
        self.mirror = Mirror::Off;
        let settled = self.shared.borrow_mut().tracker.primary_status(id, status);
        if let (Some(settled), Some(runtime)) = (settled, self.runtime.as_ref()) {
            runtime.report(&settled);
        }
    }

    /// The request body is complete (end of stream or trailers): hand the shadow over.
    fn body_complete(&mut self, runtime: &Runtime) {
        if let Mirror::Buffering { shadow, copied } =
            std::mem::replace(&mut self.mirror, Mirror::Off)
        {
            self.submit(runtime, shadow, copied);
        }
    }
}

impl Context for CutoverHttp {
    fn on_done(&mut self) -> bool {
        self.report_primary(None);
        true
    }
}

impl HttpContext for CutoverHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
        let config = &runtime.config;

        // One hostcall for the whole map: every crossing into Envoy costs more than a lookup here.
        let headers = self.get_http_request_headers_bytes();
        let header = |name: &str| header_value(&headers, name);

        // A client must never pick a cluster, nor pass a real write off as a shadow.
        if header(SHADOW_HEADER).is_some() {
            self.set_http_request_header(SHADOW_HEADER, None);
        }

        let path = header(":path").unwrap_or_default();
        let Some(index) = match_service(config, path) else {
            for name in [config.cluster_header.as_str(), ROUTED_TO_HEADER] {
                if header(name).is_some() {
                    self.set_http_request_header(name, None);
                }
            }
            return Action::Continue;
        };
        let Some(service) = config.services.get(index) else {
            self.set_http_request_header(&config.cluster_header, None);
            return Action::Continue;
        };

        let routed = route(config, service, headers.as_slice());
        for counter in routed.counters() {
            runtime.count(index, counter);
        }
        let (side, key) = (routed.side, routed.key);
        // Replacing removes every value the client may have sent.
        self.set_http_request_header(&config.cluster_header, Some(side.cluster(service)));
        self.set_http_request_header(ROUTED_TO_HEADER, Some(side.as_str()));
        self.routed = Some((index, side));

        let method = header(":method").unwrap_or_default();
        if is_mirrored(service, method) {
            let shadow = PreparedShadow {
                service: index,
                cluster: shadow_side(side).cluster(service).to_string(),
                // Built from the client's headers; drops the cluster, routed-to and shadow headers.
                headers: shadow_headers(&headers, &config.cluster_header, ROUTED_TO_HEADER),
                info: ShadowInfo {
                    service: service.name.clone(),
                    method: for_log(method),
                    path: for_log(path),
                    correlation_id: for_log(key.bytes),
                },
                timeout_ms: service.dual_write.timeout_ms,
            };
            let content_length = header("content-length");
            if end_of_stream {
                self.submit(&runtime, shadow, Vec::new());
            } else if declared_too_large(service, content_length) {
                runtime.count(index, Counter::ShadowSkippedBodyTooLarge);
                log::debug!("cutover: content-length over max_body_bytes, shadow skipped");
            } else {
                self.mirror = Mirror::Buffering {
                    shadow,
                    copied: Vec::new(),
                };
            }
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
        let Mirror::Buffering { shadow, copied } = &self.mirror else {
            return Action::Continue;
        };
        let service = shadow.service;
        let total = copied.len().saturating_add(body_size);
        let too_large = runtime
            .config
            .services
            .get(service)
            .is_none_or(|s| body_too_large(s, total));
        if too_large {
            runtime.count(service, Counter::ShadowSkippedBodyTooLarge);
            log::debug!("cutover: body over max_body_bytes, shadow skipped");
            self.mirror = Mirror::Off;
            return Action::Continue;
        }
        // The body streams on to the primary untouched; the shadow gets a copy of each chunk.
        let chunk = if body_size > 0 {
            self.get_http_request_body(0, body_size).unwrap_or_default()
        } else {
            Vec::new()
        };
        if let Mirror::Buffering { copied, .. } = &mut self.mirror {
            copied.extend_from_slice(&chunk);
        }
        if end_of_stream {
            self.body_complete(&runtime);
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
        self.body_complete(&runtime);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
        // The primary's status matters only to a shadow of this request (mismatch counting).
        if !matches!(self.mirror, Mirror::Off) {
            let status = self
                .get_http_response_header_bytes(":status")
                .and_then(|s| parse_status(&s));
            self.report_primary(status);
        }

        let config = &runtime.config;
        if let Some((index, side)) = self.routed {
            if let Some(percentage) = runtime.percentage_values.get(index) {
                self.set_http_response_header(ROUTED_TO_HEADER, Some(side.as_str()));
                self.set_http_response_header(TRAFFIC_PERCENTAGE_HEADER, Some(percentage));
            }
        }
        if config.emit_feature_headers {
            for service in &config.services {
                if let Some(header) = &service.feature_header {
                    let value = if service.use_legacy { "true" } else { "false" };
                    self.set_http_response_header(header, Some(value));
                }
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        self.report_primary(None);
    }
}
