//! The shadows of one VM (one Envoy worker): which root context dispatches each shadow, when each
//! root context ticks, when a replaced root context may finish, and how outcomes are counted.
//!
//! Envoy creates one root context per plugin configuration. When an ECDS update replaces a
//! configuration, the old root context is asked to finish (`on_done`); answering "not yet" keeps
//! it, and the calls it dispatched, alive until it calls `done()`. Envoy (proxy-wasm-cpp-host)
//! keeps such a draining root context in a map keyed by the plugin key — which contains the
//! configuration text — so a second draining root context of the same text *replaces* the first
//! one, and the first one's calls are cancelled without a callback. That happens as soon as a
//! configuration text comes back while shadows of its previous root context are in flight
//! (A → B → A → B). So a root context never dispatches a shadow itself while a draining root context
//! of the same configuration text exists: it hands the shadow to that one, which stays until its
//! last call answered. At most one root context per configuration text ever holds calls, and a
//! root context without calls finishes at once.
//!
//! The tracker is shared by all root contexts of the VM, so a primary's status and a shadow's
//! outcome meet whichever root context dispatched it. Ticks: a root context with queued shadows
//! ticks fast ([`FAST_TICK_MS`]) to dispatch them; one with calls in flight ticks slowly
//! ([`SLOW_TICK_MS`]) to expire lost ones; otherwise it does not tick.

use crate::compare::pending::{reads_shadow_body, shadow_half, Comparisons, Completed, Half};
use crate::compare::Skip;
use crate::config::{CompareConfig, ConfigError, FilterConfig};
use crate::header_map::HeaderPairs;
use crate::metrics::{Counter, MetricIds, MetricsHost, ServiceMetrics};
use crate::outcome::{classify, needs_body, CallResponse, Outcome, BODY_PREFIX_LEN};
use crate::routing::RequestHeaders as _;
use crate::shadow::{Dispatched, Settled, ShadowInfo, ShadowRequest, SubmitError, Tracker};
use crate::stream::Settings;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;
use std::sync::Arc;

/// Tick period while shadows wait to be dispatched.
pub const FAST_TICK_MS: u64 = 2;
/// Tick period while shadows are in flight and none is queued: how often expiry looks.
pub const SLOW_TICK_MS: u64 = 1_000;
/// Shadows tracked per VM; beyond this a shadow is not sent and counted as failed.
pub const MAX_SHADOWS_IN_FLIGHT: usize = 10_000;
/// How long after its timeout an unsettled shadow is forgotten (counted as lost).
pub const SETTLE_GRACE_MS: u64 = 30_000;

/// One hostcall of [`Shadows::tick_steps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickStep {
    /// `proxy_set_effective_context`.
    SwitchTo(u32),
    /// `proxy_set_tick_period_milliseconds` (0: off).
    Period(u64),
}

/// What a root context builds from an accepted configuration: what every request needs, each
/// service's metric ids (by service index) and the key of the configuration text.
#[derive(Debug)]
pub struct Plugin {
    pub settings: Settings,
    pub metrics: Vec<Rc<ServiceMetrics>>,
    pub config_key: u64,
}

impl Plugin {
    /// Validates the configuration text and defines its metrics; the error names the field.
    pub fn configure(
        bytes: &[u8],
        ids: &mut MetricIds,
        host: &mut impl MetricsHost,
    ) -> Result<Self, ConfigError> {
        let config = FilterConfig::from_json(bytes)?;
        let metrics = config
            .services
            .iter()
            .map(|s| Rc::new(ServiceMetrics::define(s, ids, host)))
            .collect();
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        Ok(Self {
            settings: Settings::new(config),
            metrics,
            config_key: hasher.finish(),
        })
    }

    /// The counter id of service `service`, if Envoy defined it.
    pub fn counter_id(&self, service: usize, counter: Counter) -> Option<u32> {
        self.metrics.get(service)?.id(counter)
    }
}

/// What the root core asks the glue to do besides its return values.
pub trait RootEffects<S> {
    fn count(&mut self, service: &S, counter: Counter);
    fn warn(&mut self, line: fmt::Arguments<'_>);
}

#[derive(Debug)]
struct Root {
    /// Identifies the configuration text (see the module docs).
    config_key: u64,
    /// Envoy asked it to finish; it stays while it holds calls.
    draining: bool,
    queue: Vec<ShadowRequest>,
    /// Shadows it queued or dispatched whose call has not answered.
    calls: usize,
    /// The tick period last applied through the glue.
    applied_tick_ms: u64,
}

impl Root {
    fn wanted_tick_ms(&self) -> u64 {
        if !self.queue.is_empty() || (self.draining && self.calls == 0) {
            // Queued shadows go out now; a drained root context finishes on its next tick.
            FAST_TICK_MS
        } else if self.calls > 0 {
            SLOW_TICK_MS
        } else {
            0
        }
    }
}

/// All shadow state of one VM; `S` is the glue's handle for a service's counters.
#[derive(Debug)]
pub struct Shadows<S> {
    tracker: Tracker<S>,
    /// Responses of mirrored requests being compared, by shadow id.
    comparisons: Comparisons<S>,
    grace_ms: u64,
    roots: BTreeMap<u32, Root>,
    next_expiry_ms: u64,
}

impl<S: Clone> Shadows<S> {
    pub fn new(max_in_flight: usize, grace_ms: u64) -> Self {
        Self {
            tracker: Tracker::new(max_in_flight, grace_ms),
            comparisons: Comparisons::new(max_in_flight),
            grace_ms,
            roots: BTreeMap::new(),
            next_expiry_ms: 0,
        }
    }

    /// Root context `root` accepted the configuration identified by `config_key`.
    pub fn configure(&mut self, root: u32, config_key: u64) {
        let entry = self.roots.entry(root).or_insert(Root {
            config_key,
            draining: false,
            queue: Vec::new(),
            calls: 0,
            applied_tick_ms: 0,
        });
        entry.config_key = config_key;
    }

    /// Whether root context `root` is known (configured and not finished).
    pub fn is_live(&self, root: u32) -> bool {
        self.roots.contains_key(&root)
    }

    /// The root context that dispatches shadows submitted under `root`.
    fn dispatcher_for(&self, root: u32) -> u32 {
        let Some(own) = self.roots.get(&root) else {
            return root;
        };
        if own.draining {
            return root;
        }
        self.roots
            .iter()
            .find(|(id, r)| **id != root && r.draining && r.config_key == own.config_key)
            .map_or(root, |(id, _)| *id)
    }

    /// Queues a shadow prepared by an HTTP context of root context `root`. Returns its id, or
    /// counts it as sent and failed (logged) when too many are in flight. With `compare`, its
    /// response is compared with the primary's (`compare_total` counted here, and the skip
    /// when the shadow is not sent).
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        &mut self,
        root: u32,
        request: ShadowRequest,
        info: ShadowInfo,
        service: S,
        compare: Option<Arc<CompareConfig>>,
        now_ms: u64,
        fx: &mut impl RootEffects<S>,
    ) -> Option<u64> {
        let deadline_ms = now_ms
            .saturating_add(request.timeout_ms)
            .saturating_add(self.grace_ms);
        if compare.is_some() {
            fx.count(&service, Counter::CompareTotal);
        }
        let id = self.submit_shadow(root, request, info.clone(), service.clone(), now_ms, fx);
        if let Some(rules) = compare {
            let begun = match id {
                Some(id) => self
                    .comparisons
                    .begin(id, service.clone(), info, rules, deadline_ms),
                None => Err(Skip::InFlightLimit),
            };
            if let Err(skip) = begun {
                fx.count(&service, skip.counter());
            }
        }
        id
    }

    fn submit_shadow(
        &mut self,
        root: u32,
        mut request: ShadowRequest,
        info: ShadowInfo,
        service: S,
        now_ms: u64,
        fx: &mut impl RootEffects<S>,
    ) -> Option<u64> {
        let dispatcher = self.dispatcher_for(root);
        let Some(owner) = self.roots.get_mut(&dispatcher) else {
            fx.count(&service, Counter::ShadowSent);
            fx.count(&service, Counter::ShadowFailedReset);
            fx.warn(format_args!(
                "cutover: shadow failed: service={} method={} path={} correlation_id={} primary_status=pending shadow_status=not-sent (no configured root context)",
                info.service, info.method, info.path, info.correlation_id
            ));
            return None;
        };
        match self.tracker.submit(
            &mut request,
            info.clone(),
            service.clone(),
            dispatcher,
            now_ms,
        ) {
            Ok(id) => {
                owner.queue.push(request);
                owner.calls = owner.calls.saturating_add(1);
                Some(id)
            }
            Err(SubmitError::Full) => {
                fx.count(&service, Counter::ShadowSent);
                fx.count(&service, Counter::ShadowFailedReset);
                fx.warn(format_args!(
                    "cutover: shadow failed: service={} method={} path={} correlation_id={} primary_status=pending shadow_status=not-sent ({MAX_SHADOWS_IN_FLIGHT} shadows in flight)",
                    info.service, info.method, info.path, info.correlation_id
                ));
                None
            }
        }
    }

    /// On `root`'s tick: the shadows it must dispatch now; expires lost shadows when due.
    pub fn tick(
        &mut self,
        root: u32,
        now_ms: u64,
        fx: &mut impl RootEffects<S>,
    ) -> Vec<ShadowRequest> {
        if now_ms >= self.next_expiry_ms {
            self.next_expiry_ms = now_ms.saturating_add(SLOW_TICK_MS);
            for settled in self.tracker.expire(now_ms) {
                if settled.shadow.is_none() {
                    self.call_ended(settled.owner);
                    // Expired without a callback: still one outcome per shadow sent.
                    fx.count(&settled.service, Counter::ShadowFailedReset);
                }
                report(&settled, fx);
            }
            for done in self.comparisons.expire(now_ms) {
                report_comparison(done, fx);
            }
        }
        self.roots
            .get_mut(&root)
            .map(|r| std::mem::take(&mut r.queue))
            .unwrap_or_default()
    }

    /// Shadow `id` went out under `token` at `now_ms`.
    pub fn dispatched(
        &mut self,
        id: u64,
        token: u32,
        timeout_ms: u64,
        now_ms: u64,
        fx: &mut impl RootEffects<S>,
    ) {
        if let Some(service) = self.tracker.service_of(id) {
            fx.count(service, Counter::ShadowSent);
        }
        self.tracker.dispatched(id, token, now_ms, timeout_ms);
    }

    /// Shadow `id` could not be dispatched (e.g. an unknown cluster).
    pub fn dispatch_failed(&mut self, id: u64, fx: &mut impl RootEffects<S>) {
        if let Some(service) = self.tracker.service_of(id) {
            fx.count(service, Counter::ShadowSent);
        }
        self.outcome_of(id, Outcome::FailedReset, fx);
    }

    /// The shadow dispatched under `token`, if it is one of this VM's.
    pub fn dispatched_as(&self, token: u32) -> Option<Dispatched> {
        self.tracker.dispatched_as(token)
    }

    /// The call under `token` answered: `status` is its raw `:status` (`None` without headers),
    /// `read_body(n)` reads the first `n` of its `body_size` body bytes: all of them when the
    /// response is compared (and within `compare.max_body_bytes`), else only for the statuses
    /// whose body tells Envoy's own replies apart. `read_headers` reads the response headers (only
    /// when compared). Ignored for a token not of this VM.
    #[allow(clippy::too_many_arguments)]
    pub fn call_response(
        &mut self,
        token: u32,
        status: Option<&[u8]>,
        body_size: usize,
        read_body: impl FnOnce(usize) -> Vec<u8>,
        read_headers: impl FnOnce() -> Vec<(String, Vec<u8>)>,
        now_ms: u64,
        fx: &mut impl RootEffects<S>,
    ) -> Option<Outcome> {
        let dispatched = self.tracker.dispatched_as(token)?;
        let rules = self.comparisons.rules(dispatched.id);
        let whole_body = rules
            .as_ref()
            .is_some_and(|r| status.is_some() && reads_shadow_body(r, body_size));
        let body = if body_size == 0 {
            Vec::new()
        } else if whole_body {
            read_body(body_size)
        } else if needs_body(status) {
            read_body(BODY_PREFIX_LEN.min(body_size))
        } else {
            Vec::new()
        };
        let outcome = classify(&CallResponse {
            status,
            body_prefix: body
                .get(..BODY_PREFIX_LEN.min(body.len()))
                .unwrap_or_default(),
            elapsed_ms: now_ms.saturating_sub(dispatched.at_ms),
            timeout_ms: dispatched.timeout_ms,
        });
        if let Some(rules) = rules {
            let headers = if status.is_some() {
                read_headers()
            } else {
                Vec::new()
            };
            let half = shadow_half(
                &rules,
                outcome,
                headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
                whole_body.then_some(body),
            );
            self.shadow_half(dispatched.id, half, fx);
        }
        self.call_answered(token, outcome, fx);
        Some(outcome)
    }

    fn shadow_half(&mut self, id: u64, half: Half, fx: &mut impl RootEffects<S>) {
        if let Some(done) = self.comparisons.shadow(id, half) {
            report_comparison(done, fx);
        }
    }

    /// The primary's response (captured as it streamed to the client) for shadow `id`.
    pub fn primary_response(&mut self, id: u64, half: Half, fx: &mut impl RootEffects<S>) {
        if let Some(done) = self.comparisons.primary(id, half) {
            report_comparison(done, fx);
        }
    }

    /// The call under `token` answered with `outcome`.
    pub fn call_answered(&mut self, token: u32, outcome: Outcome, fx: &mut impl RootEffects<S>) {
        if let Some(dispatched) = self.tracker.take_token(token) {
            self.outcome_of(dispatched.id, outcome, fx);
        }
    }

    fn outcome_of(&mut self, id: u64, outcome: Outcome, fx: &mut impl RootEffects<S>) {
        let Some(service) = self.tracker.service_of(id).cloned() else {
            return;
        };
        fx.count(&service, outcome.counter());
        if matches!(outcome, Outcome::FailedReset | Outcome::TimedOut) {
            // Not the shadow backend's answer: nothing to compare (a no-op if its half came).
            self.shadow_half(id, Half::Skipped(Skip::ShadowFailed), fx);
        }
        let owner = self.tracker.owner_of(id);
        let settled = self.tracker.shadow_outcome(id, outcome);
        if let Some(owner) = owner {
            self.call_ended(owner);
        }
        if let Some(settled) = settled {
            report(&settled, fx);
        }
    }

    fn call_ended(&mut self, owner: u32) {
        if let Some(root) = self.roots.get_mut(&owner) {
            root.calls = root.calls.saturating_sub(1);
        }
    }

    /// The primary's status for shadow `id` (`None`: the stream ended without a response).
    pub fn primary_status(&mut self, id: u64, status: Option<u16>, fx: &mut impl RootEffects<S>) {
        if let Some(settled) = self.tracker.primary_status(id, status) {
            report(&settled, fx);
        }
    }

    /// Envoy asks `root` to finish (`on_done`): `true` if it may go now; otherwise it drains.
    pub fn shutdown(&mut self, root: u32) -> bool {
        match self.roots.get_mut(&root) {
            Some(r) if r.calls > 0 => {
                r.draining = true;
                false
            }
            _ => {
                self.roots.remove(&root);
                true
            }
        }
    }

    /// Whether draining `root` holds no call any more; it is forgotten and must call `done()`.
    pub fn finished(&mut self, root: u32) -> bool {
        let done = self
            .roots
            .get(&root)
            .is_some_and(|r| r.draining && r.calls == 0);
        if done {
            self.roots.remove(&root);
        }
        done
    }

    /// Root contexts whose tick period must change, with the new period (0: off); the changes
    /// count as applied.
    pub fn tick_changes(&mut self) -> Vec<(u32, u64)> {
        let mut changes = Vec::new();
        for (id, root) in &mut self.roots {
            let wanted = root.wanted_tick_ms();
            if wanted != root.applied_tick_ms {
                root.applied_tick_ms = wanted;
                changes.push((*id, wanted));
            }
        }
        changes
    }

    /// The tick changes as the hostcalls that apply them from context `current`, whose root
    /// context is `own_root`: `set_tick_period` acts on the effective context's root context,
    /// so another root context's tick is set after switching to it, and `current` is restored.
    pub fn tick_steps(&mut self, current: u32, own_root: u32) -> Vec<TickStep> {
        let mut steps = Vec::new();
        let mut effective = own_root;
        for (root, period_ms) in self.tick_changes() {
            if root != effective {
                steps.push(TickStep::SwitchTo(root));
                effective = root;
            }
            steps.push(TickStep::Period(period_ms));
        }
        if effective != own_root {
            steps.push(TickStep::SwitchTo(current));
        }
        steps
    }

    /// Shadows tracked (submitted and not settled).
    pub fn in_flight(&self) -> usize {
        self.tracker.in_flight()
    }
}

/// Envoy's side of a root context's callbacks ([`on_tick`], [`on_call_response`]). The call
/// reads are associated functions: hostcalls about the call being answered, no state of the glue.
pub trait RootHost<S>: RootEffects<S> {
    fn now_ms(&mut self) -> u64;
    /// Sends `request` to its cluster: Envoy's token, or its refusal, described.
    fn dispatch(&mut self, request: &ShadowRequest) -> Result<u32, String>;
    /// The first `size` bytes of the answered call's body.
    fn call_body(size: usize) -> Vec<u8>;
    /// The answered call's response header map, serialised as the ABI does ([`HeaderPairs`]).
    fn call_headers() -> Vec<u8>;
    /// Tells Envoy that the calling root context (replaced, drained) is finished; its tick off.
    fn done(&mut self);
    fn debug(&mut self, line: fmt::Arguments<'_>);
    /// One step of a tick change ([`Shadows::tick_steps`]).
    fn apply_tick(&mut self, step: TickStep);
}

/// Applies the tick changes the shadows want, from context `context` of root context `root`.
/// The shadows are not borrowed across the hostcalls.
pub fn apply_ticks<S: Clone>(
    shadows: &RefCell<Shadows<S>>,
    context: u32,
    root: u32,
    host: &mut impl RootHost<S>,
) {
    let steps = shadows.borrow_mut().tick_steps(context, root);
    for step in steps {
        host.apply_tick(step);
    }
}

/// Envoy asks root context `root` to finish: whether it may at once (else it drains its calls
/// and reports `done` later).
pub fn on_done<S: Clone>(
    shadows: &RefCell<Shadows<S>>,
    root: u32,
    host: &mut impl RootHost<S>,
) -> bool {
    let now = shadows.borrow_mut().shutdown(root);
    apply_ticks(shadows, root, root, host);
    now
}

/// Root context `root` ticks: it dispatches the shadows handed to it, expires lost ones, and
/// finishes once drained. The shadows are borrowed only between hostcalls, never across one.
pub fn on_tick<S: Clone>(shadows: &RefCell<Shadows<S>>, root: u32, host: &mut impl RootHost<S>) {
    let now = host.now_ms();
    let queue = shadows.borrow_mut().tick(root, now, host);
    for request in queue {
        let sent = host.dispatch(&request);
        let now = host.now_ms();
        let mut shadows = shadows.borrow_mut();
        match sent {
            Ok(token) => shadows.dispatched(request.id, token, request.timeout_ms, now, host),
            Err(why) => {
                let cluster = &request.cluster;
                host.warn(format_args!(
                    "cutover: cannot dispatch shadow to cluster {cluster}: {why}"
                ));
                shadows.dispatch_failed(request.id, host);
            }
        }
    }
    settle(shadows, root, host);
    apply_ticks(shadows, root, root, host);
}

/// A call dispatched by root context `root` answered, with `headers` response headers (none:
/// Envoy has no response map, and reading one would fail the hostcall) and `body_size` bytes.
pub fn on_call_response<S: Clone, H: RootHost<S>>(
    shadows: &RefCell<Shadows<S>>,
    root: u32,
    token: u32,
    (headers, body_size): (usize, usize),
    host: &mut H,
) -> Option<Outcome> {
    let buffer = if headers > 0 {
        H::call_headers()
    } else {
        Vec::new()
    };
    let map = HeaderPairs::parse(&buffer);
    let now = host.now_ms();
    let outcome = shadows.borrow_mut().call_response(
        token,
        map.first(":status"),
        body_size,
        H::call_body,
        || map.to_owned_pairs(),
        now,
        host,
    );
    host.debug(format_args!(
        "cutover: shadow response token={token} root={root} outcome={outcome:?}"
    ));
    settle(shadows, root, host);
    apply_ticks(shadows, root, root, host);
    outcome
}

/// A replaced root context that holds no call any more is finished.
fn settle<S: Clone>(shadows: &RefCell<Shadows<S>>, root: u32, host: &mut impl RootHost<S>) {
    if shadows.borrow_mut().finished(root) {
        host.done();
    }
}

/// The outcome counter of a finished comparison and the warn line of a mismatch.
fn report_comparison<S>(done: Completed<S>, fx: &mut impl RootEffects<S>) {
    fx.count(&done.service, done.outcome.counter());
    if let Some(line) = done.warn_line {
        fx.warn(format_args!("{line}"));
    }
}

/// Mismatch counter and the warn line for a settled shadow.
fn report<S>(settled: &Settled<S>, fx: &mut impl RootEffects<S>) {
    if settled.mismatch {
        fx.count(&settled.service, Counter::ShadowMismatch);
    }
    if settled.is_noteworthy() {
        let primary = settled
            .primary_status
            .map_or_else(|| "none".to_string(), |s| s.to_string());
        let shadow = settled
            .shadow
            .map_or_else(|| "lost".to_string(), Outcome::describe);
        fx.warn(format_args!(
            "cutover: shadow {}: service={} method={} path={} correlation_id={} primary_status={} shadow_status={}",
            if settled.mismatch { "mismatch" } else { "failed" },
            settled.info.service,
            settled.info.method,
            settled.info.path,
            settled.info.correlation_id,
            primary,
            shadow
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the root core asked for.
    #[derive(Default)]
    struct Fx {
        counts: Vec<(&'static str, Counter)>,
        warnings: Vec<String>,
    }

    impl RootEffects<&'static str> for Fx {
        fn count(&mut self, service: &&'static str, counter: Counter) {
            self.counts.push((service, counter));
        }
        fn warn(&mut self, line: fmt::Arguments<'_>) {
            self.warnings.push(line.to_string());
        }
    }

    impl Fx {
        fn count_of(&self, counter: Counter) -> usize {
            self.counts.iter().filter(|(_, c)| *c == counter).count()
        }
        /// Outcome counters (one per shadow sent).
        fn outcomes(&self) -> usize {
            self.counts
                .iter()
                .filter(|(_, c)| Outcome::COUNTERS.contains(c))
                .count()
        }
    }

    fn info() -> ShadowInfo {
        ShadowInfo {
            service: "chat".into(),
            method: "POST".into(),
            path: "/api/chat/m".into(),
            correlation_id: "c1".into(),
        }
    }

    fn request() -> ShadowRequest {
        ShadowRequest {
            id: 0,
            cluster: "chat_legacy".into(),
            headers: Vec::new(),
            body: b"{}".to_vec(),
            timeout_ms: 500,
        }
    }

    const A: u64 = 0xa;
    const B: u64 = 0xb;

    /// A VM with root contexts, their dispatched calls and Envoy's next token.
    struct Vm {
        shadows: Shadows<&'static str>,
        fx: Fx,
        next_token: u32,
        /// Open calls: token and the root context that dispatched it.
        calls: Vec<(u32, u32)>,
    }

    impl Vm {
        fn new() -> Self {
            Self {
                shadows: Shadows::new(100, 1_000),
                fx: Fx::default(),
                next_token: 1,
                calls: Vec::new(),
            }
        }

        fn submit(&mut self, root: u32) -> u64 {
            self.shadows
                .submit(root, request(), info(), "chat", None, 0, &mut self.fx)
                .unwrap()
        }

        /// `root`'s tick: dispatches what it was handed.
        fn tick(&mut self, root: u32, now_ms: u64) {
            for r in self.shadows.tick(root, now_ms, &mut self.fx) {
                let token = self.next_token;
                self.next_token += 1;
                self.shadows
                    .dispatched(r.id, token, r.timeout_ms, now_ms, &mut self.fx);
                self.calls.push((token, root));
            }
        }

        fn answer_all(&mut self) {
            for (token, _) in std::mem::take(&mut self.calls) {
                self.shadows
                    .call_answered(token, Outcome::Succeeded(200), &mut self.fx);
            }
        }
    }

    #[test]
    fn a_root_ticks_fast_only_while_shadows_are_queued() {
        let mut vm = Vm::new();
        vm.shadows.configure(1, A);
        assert!(vm.shadows.tick_changes().is_empty(), "idle: no tick");
        let id = vm.submit(1);
        assert_eq!(vm.shadows.tick_changes(), [(1, FAST_TICK_MS)]);
        vm.tick(1, 0);
        // In flight, nothing queued: only expiry needs a tick.
        assert_eq!(vm.shadows.tick_changes(), [(1, SLOW_TICK_MS)]);
        vm.answer_all();
        assert_eq!(vm.shadows.tick_changes(), [(1, 0)]);
        vm.shadows.primary_status(id, Some(200), &mut vm.fx);
        assert_eq!(vm.fx.count_of(Counter::ShadowSent), 1);
        assert_eq!(vm.fx.count_of(Counter::ShadowSucceeded), 1);
        assert_eq!(vm.shadows.in_flight(), 0);
    }

    #[test]
    fn tick_steps_switch_to_another_root_and_back() {
        let mut vm = Vm::new();
        vm.shadows.configure(1, A);
        vm.shadows.configure(2, B);
        // Own root only: no switch.
        vm.submit(1);
        assert_eq!(
            vm.shadows.tick_steps(10, 1),
            [TickStep::Period(FAST_TICK_MS)]
        );
        // From an HTTP context (10) of root 1, root 2's tick changes: switch, set, restore.
        vm.submit(2);
        assert_eq!(
            vm.shadows.tick_steps(10, 1),
            [
                TickStep::SwitchTo(2),
                TickStep::Period(FAST_TICK_MS),
                TickStep::SwitchTo(10)
            ]
        );
        assert_eq!(vm.shadows.tick_steps(10, 1), [], "applied once");
    }

    thread_local! {
        /// The call being answered, as the test host's associated functions read it.
        static CALL: RefCell<(Option<Vec<u8>>, Vec<u8>)> = const { RefCell::new((None, Vec::new())) };
    }

    /// Envoy for the root callbacks: refuses dispatches to cluster "gone", records `done`.
    #[derive(Default)]
    struct Host {
        fx: Fx,
        dispatched: Vec<String>,
        done: usize,
        ticks: Vec<TickStep>,
    }

    impl RootEffects<&'static str> for Host {
        fn count(&mut self, service: &&'static str, counter: Counter) {
            self.fx.count(service, counter);
        }
        fn warn(&mut self, line: fmt::Arguments<'_>) {
            self.fx.warn(line);
        }
    }

    impl RootHost<&'static str> for Host {
        fn now_ms(&mut self) -> u64 {
            5
        }
        fn dispatch(&mut self, request: &ShadowRequest) -> Result<u32, String> {
            if request.cluster == "gone" {
                return Err("BadArgument".into());
            }
            self.dispatched.push(request.cluster.clone());
            Ok(u32::try_from(self.dispatched.len()).unwrap())
        }
        fn call_body(size: usize) -> Vec<u8> {
            CALL.with(|c| c.borrow().1[..size].to_vec())
        }
        fn call_headers() -> Vec<u8> {
            let status = CALL
                .with(|c| c.borrow().0.clone())
                .expect("read only with headers");
            crate::header_map::serialize([(&b":status"[..], status.as_slice())])
        }
        fn done(&mut self) {
            self.done += 1;
        }
        fn debug(&mut self, _: fmt::Arguments<'_>) {}
        fn apply_tick(&mut self, step: TickStep) {
            self.ticks.push(step);
        }
    }

    #[test]
    fn the_root_callbacks_dispatch_classify_and_finish_a_drained_root() {
        let cell = RefCell::new(Shadows::new(100, 1_000));
        let mut host = Host::default();
        cell.borrow_mut().configure(1, A);
        let submit = |cluster: &str, host: &mut Host| {
            let mut r = request();
            r.cluster = cluster.into();
            cell.borrow_mut()
                .submit(1, r, info(), "chat", None, 0, host)
                .unwrap()
        };
        submit("chat_legacy", &mut host);
        submit("gone", &mut host);
        on_tick(&cell, 1, &mut host);
        assert_eq!(host.dispatched, ["chat_legacy"]);
        // The refused one is sent and failed at once, and logged.
        assert_eq!(host.fx.count_of(Counter::ShadowSent), 2);
        assert_eq!(host.fx.count_of(Counter::ShadowFailedReset), 1);
        assert!(host.fx.warnings[0].contains("cluster gone: BadArgument"));
        // Nothing queued, one call in flight: the tick turns slow (expiry only).
        assert_eq!(host.ticks, [TickStep::Period(SLOW_TICK_MS)]);
        // Replaced while the call is in flight: it drains.
        assert!(!on_done(&cell, 1, &mut host));
        // Envoy's own 503 (no headers read without headers: here with them, body prefix read).
        CALL.with(|c| *c.borrow_mut() = (Some(b"503".to_vec()), b"no healthy upstream".to_vec()));
        let outcome = on_call_response(&cell, 1, 1, (1, 19), &mut host);
        assert_eq!(outcome, Some(Outcome::FailedReset));
        assert_eq!(host.done, 1, "drained: finished");
        // A token that is not this VM's is ignored, and without headers no status is read.
        CALL.with(|c| *c.borrow_mut() = (Some(b"200".to_vec()), Vec::new()));
        assert_eq!(on_call_response(&cell, 1, 99, (0, 0), &mut host), None);
        assert_eq!(host.fx.outcomes(), 2);
    }

    #[test]
    fn a_replaced_root_without_calls_finishes_at_once() {
        let mut vm = Vm::new();
        vm.shadows.configure(1, A);
        assert!(vm.shadows.shutdown(1));
        assert!(!vm.shadows.is_live(1));
    }

    #[test]
    fn a_replaced_root_drains_its_calls_then_finishes() {
        let mut vm = Vm::new();
        vm.shadows.configure(1, A);
        vm.submit(1);
        vm.tick(1, 0);
        vm.shadows.tick_changes();
        vm.shadows.configure(2, B);
        assert!(!vm.shadows.shutdown(1), "a call is in flight");
        assert!(!vm.shadows.finished(1));
        // A new write under the new configuration goes out from the new root context.
        vm.submit(2);
        vm.tick(2, 1);
        assert_eq!(vm.calls.iter().map(|c| c.1).collect::<Vec<_>>(), [1, 2]);
        vm.answer_all();
        // The drained root context gets a tick to finish on.
        assert!(vm.shadows.tick_changes().contains(&(1, FAST_TICK_MS)));
        assert!(vm.shadows.finished(1));
        assert!(!vm.shadows.is_live(1));
        assert_eq!(vm.fx.outcomes(), 2);
    }

    /// A → B → A → B with calls in flight: the second root context of text A must not hold calls
    /// of its own while the first one drains, or Envoy replaces the first (and cancels its calls)
    /// when the second one is replaced in turn.
    #[test]
    fn a_configuration_text_that_comes_back_hands_its_shadows_to_the_draining_root() {
        let mut vm = Vm::new();
        vm.shadows.configure(1, A);
        vm.submit(1);
        vm.tick(1, 0);
        // → B
        vm.shadows.configure(2, B);
        assert!(!vm.shadows.shutdown(1));
        vm.submit(2);
        vm.tick(2, 0);
        // → A again: root 3 has root 1's text.
        vm.shadows.configure(3, A);
        assert!(!vm.shadows.shutdown(2));
        vm.submit(3);
        vm.shadows.tick_changes();
        vm.tick(3, 0);
        vm.tick(1, 0);
        // Root 1 dispatched root 3's shadow; root 3 holds nothing.
        assert_eq!(vm.calls.iter().map(|c| c.1).collect::<Vec<_>>(), [1, 2, 1]);
        // → B again: root 3 may go at once; root 4 hands its shadows to draining root 2.
        vm.shadows.configure(4, B);
        assert!(vm.shadows.shutdown(3), "root 3 holds no call");
        vm.submit(4);
        vm.tick(4, 0);
        vm.tick(2, 0);
        assert_eq!(
            vm.calls.iter().map(|c| c.1).collect::<Vec<_>>(),
            [1, 2, 1, 2]
        );
        vm.answer_all();
        assert!(vm.shadows.finished(1));
        assert!(vm.shadows.finished(2));
        assert!(vm.shadows.is_live(4));
        assert_eq!(vm.fx.count_of(Counter::ShadowSent), 4);
        assert_eq!(vm.fx.outcomes(), 4);
    }

    #[test]
    fn a_draining_root_dispatches_what_its_own_streams_still_submit() {
        let mut vm = Vm::new();
        vm.shadows.configure(1, A);
        vm.submit(1);
        vm.tick(1, 0);
        vm.shadows.configure(2, B);
        assert!(!vm.shadows.shutdown(1));
        // A stream that started under root 1 completes its body now.
        vm.submit(1);
        vm.tick(1, 0);
        assert_eq!(vm.calls.iter().map(|c| c.1).collect::<Vec<_>>(), [1, 1]);
    }

    #[test]
    fn lost_calls_expire_and_count_once() {
        let mut vm = Vm::new();
        vm.shadows.configure(1, A);
        let id = vm.submit(1);
        vm.tick(1, 0);
        assert_eq!(vm.shadows.tick_changes(), [(1, SLOW_TICK_MS)]);
        vm.shadows.primary_status(id, Some(201), &mut vm.fx);
        // timeout 500 + grace 1000; expiry runs at most once per SLOW_TICK_MS.
        vm.tick(1, 1_000);
        assert_eq!(vm.fx.outcomes(), 0);
        vm.tick(1, 2_000);
        assert_eq!(vm.fx.count_of(Counter::ShadowFailedReset), 1);
        // Without a shadow status there is nothing to compare.
        assert_eq!(vm.fx.count_of(Counter::ShadowMismatch), 0);
        assert!(vm
            .fx
            .warnings
            .iter()
            .any(|w| w.contains("primary_status=201 shadow_status=lost")));
        // The late callback changes nothing.
        vm.answer_all();
        assert_eq!(vm.fx.outcomes(), 1);
        assert_eq!(vm.shadows.tick_changes(), [(1, 0)]);
    }

    #[test]
    fn call_responses_are_classified_reading_the_body_only_when_needed() {
        let mut vm = Vm::new();
        vm.shadows.configure(1, A);
        for _ in 0..3 {
            vm.submit(1);
        }
        vm.tick(1, 0);
        let tokens: Vec<u32> = vm.calls.iter().map(|c| c.0).collect();
        let never = |_| -> Vec<u8> { panic!("the body of a 201 is not read") };
        let outcome =
            vm.shadows
                .call_response(tokens[0], Some(b"201"), 10, never, Vec::new, 5, &mut vm.fx);
        assert_eq!(outcome, Some(Outcome::Succeeded(201)));
        let timeout = |n: usize| b"upstream request timeout"[..n.min(24)].to_vec();
        let outcome = vm.shadows.call_response(
            tokens[1],
            Some(b"504"),
            24,
            timeout,
            Vec::new,
            500,
            &mut vm.fx,
        );
        assert_eq!(outcome, Some(Outcome::TimedOut));
        let outcome = vm
            .shadows
            .call_response(tokens[2], None, 0, never, Vec::new, 5, &mut vm.fx);
        assert_eq!(outcome, Some(Outcome::FailedReset));
        // Unknown (or already answered) tokens are ignored.
        assert_eq!(
            vm.shadows
                .call_response(tokens[0], Some(b"200"), 0, never, Vec::new, 5, &mut vm.fx),
            None
        );
        assert_eq!(vm.fx.outcomes(), 3);
    }

    #[test]
    fn a_failed_dispatch_is_sent_and_failed() {
        let mut vm = Vm::new();
        vm.shadows.configure(1, A);
        let id = vm.submit(1);
        let queued = vm.shadows.tick(1, 0, &mut vm.fx);
        assert_eq!(queued.len(), 1);
        vm.shadows.dispatch_failed(id, &mut vm.fx);
        assert_eq!(vm.fx.count_of(Counter::ShadowSent), 1);
        assert_eq!(vm.fx.count_of(Counter::ShadowFailedReset), 1);
        assert!(vm.shadows.shutdown(1));
    }

    #[test]
    fn too_many_shadows_are_sent_and_failed_without_a_call() {
        let mut vm = Vm::new();
        vm.shadows = Shadows::new(1, 1_000);
        vm.shadows.configure(1, A);
        vm.submit(1);
        let second = vm
            .shadows
            .submit(1, request(), info(), "chat", None, 0, &mut vm.fx);
        assert_eq!(second, None);
        assert_eq!(vm.fx.count_of(Counter::ShadowSent), 1);
        assert_eq!(vm.fx.count_of(Counter::ShadowFailedReset), 1);
        assert!(vm.fx.warnings.iter().any(|w| w.contains("not-sent")));
    }

    fn rules(fields: &str) -> Arc<CompareConfig> {
        crate::config::test_service(&format!(
            r#","shadow_reads":{{"percentage":10}},"compare":{{{fields}}}"#
        ))
        .compare
        .unwrap()
    }

    fn json_response() -> Vec<(String, Vec<u8>)> {
        vec![
            (":status".into(), b"200".to_vec()),
            ("content-type".into(), b"application/json".to_vec()),
        ]
    }

    fn primary(body: &str) -> Half {
        Half::Response(crate::compare::CapturedResponse {
            status: 200,
            content_type: Some(b"application/json".to_vec()),
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        })
    }

    impl Vm {
        fn submit_compared(&mut self, root: u32, rules: &Arc<CompareConfig>) -> Option<u64> {
            self.shadows.submit(
                root,
                request(),
                info(),
                "chat",
                Some(Arc::clone(rules)),
                0,
                &mut self.fx,
            )
        }

        fn answer(&mut self, token: u32, status: &'static [u8], body: &'static str) {
            let read = |n: usize| body.as_bytes()[..n].to_vec();
            self.shadows.call_response(
                token,
                Some(status),
                body.len(),
                read,
                json_response,
                5,
                &mut self.fx,
            );
        }
    }

    #[test]
    fn a_compared_shadow_meets_its_primary_in_either_order() {
        let r = rules(r#""ignore":["$.t"]"#);
        for shadow_first in [true, false] {
            let mut vm = Vm::new();
            vm.shadows.configure(1, A);
            let id = vm.submit_compared(1, &r).unwrap();
            assert_eq!(vm.fx.count_of(Counter::CompareTotal), 1);
            vm.tick(1, 0);
            let token = vm.calls[0].0;
            if shadow_first {
                vm.answer(token, b"200", r#"{"t":2,"a":1}"#);
                assert_eq!(vm.fx.count_of(Counter::CompareEqual), 0);
                vm.shadows
                    .primary_response(id, primary(r#"{"a":1,"t":1}"#), &mut vm.fx);
            } else {
                vm.shadows
                    .primary_response(id, primary(r#"{"a":1,"t":1}"#), &mut vm.fx);
                vm.answer(token, b"200", r#"{"t":2,"a":1}"#);
            }
            assert_eq!(vm.fx.count_of(Counter::CompareEqual), 1, "{shadow_first}");
            assert!(vm.fx.warnings.is_empty());
        }
    }

    #[test]
    fn a_mismatch_is_counted_once_and_logged_with_its_path() {
        let r = rules("");
        let mut vm = Vm::new();
        vm.shadows.configure(1, A);
        let id = vm.submit_compared(1, &r).unwrap();
        vm.tick(1, 0);
        vm.shadows
            .primary_response(id, primary(r#"{"a":1}"#), &mut vm.fx);
        vm.answer(vm.calls[0].0, b"200", r#"{"a":1,"beta":true}"#);
        assert_eq!(vm.fx.count_of(Counter::CompareBodyMismatch), 1);
        assert_eq!(
            vm.fx.warnings,
            ["cutover: response mismatch: service=chat method=POST path=/api/chat/m correlation_id=c1 kind=body at=$.beta primary=<absent> shadow=true"]
        );
        // The shadow outcome is counted as for any shadow.
        assert_eq!(vm.fx.count_of(Counter::ShadowSucceeded), 1);
    }

    #[test]
    fn a_failed_or_lost_shadow_skips_the_comparison() {
        let r = rules("");
        let mut vm = Vm::new();
        vm.shadows.configure(1, A);
        let timed_out = vm.submit_compared(1, &r).unwrap();
        let lost = vm.submit_compared(1, &r).unwrap();
        vm.tick(1, 0);
        let token = vm.calls[0].0;
        let body = |n: usize| b"upstream request timeout"[..n].to_vec();
        vm.shadows.call_response(
            token,
            Some(b"504"),
            24,
            body,
            json_response,
            500,
            &mut vm.fx,
        );
        vm.shadows
            .primary_response(timed_out, primary("{}"), &mut vm.fx);
        assert_eq!(vm.fx.count_of(Counter::CompareSkippedShadowFailed), 1);
        // The second call never answers: expiry ends its comparison.
        vm.shadows.primary_response(lost, primary("{}"), &mut vm.fx);
        vm.tick(1, 500 + 1_000);
        assert_eq!(vm.fx.count_of(Counter::CompareSkippedShadowFailed), 2);
        assert_eq!(vm.fx.count_of(Counter::CompareTotal), 2);
    }

    #[test]
    fn a_shadow_body_over_the_cap_is_not_read() {
        let r = rules(r#""max_body_bytes":4"#);
        let mut vm = Vm::new();
        vm.shadows.configure(1, A);
        let id = vm.submit_compared(1, &r).unwrap();
        vm.tick(1, 0);
        let never = |_| -> Vec<u8> { panic!("over the cap: not read") };
        let token = vm.calls[0].0;
        vm.shadows
            .call_response(token, Some(b"200"), 5, never, json_response, 5, &mut vm.fx);
        vm.shadows.primary_response(id, primary("{}"), &mut vm.fx);
        assert_eq!(vm.fx.count_of(Counter::CompareSkippedBodyTooLarge), 1);
    }

    #[test]
    fn beyond_the_in_flight_bound_a_comparison_is_skipped_and_counted() {
        let r = rules("");
        let mut vm = Vm {
            shadows: Shadows::new(1, 1_000),
            ..Vm::new()
        };
        vm.shadows.configure(1, A);
        assert!(vm.submit_compared(1, &r).is_some());
        assert!(vm.submit_compared(1, &r).is_none());
        assert_eq!(vm.fx.count_of(Counter::CompareTotal), 2);
        assert_eq!(vm.fx.count_of(Counter::CompareSkippedInFlightLimit), 1);
    }
}
