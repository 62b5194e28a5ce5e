//! Response comparison for dark launches: does the shadow answer the way the primary did?
//!
//! [`compare_responses`] takes the two captured responses and the service's noise rules and
//! returns a [`Verdict`]: equal, a status mismatch, a body mismatch or a header mismatch, with
//! the first difference found ([`Difference`]) and both values cut to [`MAX_SHOWN_BYTES`].
//!
//! Bodies are compared structurally when both are JSON (their `content-type` says so, or they
//! parse): object member order is ignored, numbers are compared by value, `ignore` paths are
//! skipped and `unordered` arrays are compared as multisets. Anything else is compared byte for
//! byte.
//!
//! Fast path ([`digest`]): each body first gets a canonical 64-bit digest under the same rules in
//! one streaming pass that builds nothing; equal digests are equal bodies (a different pair
//! collides with a probability of about 2^-64), and only bodies whose digests differ (or that
//! get none) are parsed and walked as below, to find the first difference.
//!
//! Bounds: bodies are capped by the service's `compare.max_body_bytes` before they get here
//! ([`BodyCapture`]). JSON is parsed by `serde_json` into a flat arena (`doc`: strings
//! borrowed from the body, members sorted once), whose recursion limit (128 nested arrays or
//! objects) makes a deeper document fail to parse: such a body is compared by bytes, and nothing
//! here recurses deeper than that limit. Numbers serde_json cannot represent (an exponent beyond
//! `f64`, such as `1e400`) make the document fail to parse likewise. The walk visits each node
//! of the primary's document at most once and follows the noise rules still alive there one
//! level per node with a few bit operations ([`path`]), on one stack: nothing is allocated per
//! node, the path of a difference is rendered only once one is found, and below the point where
//! every rule has died a node costs a comparison and nothing else. An `unordered` array costs a
//! sort of its elements' canonical forms.

mod digest;
mod doc;
pub mod path;
pub mod pending;
mod rule_states;

use crate::config::CompareConfig;
use crate::metrics::Counter;
use crate::shadow::ShadowInfo;
use doc::{Doc, Node};
use path::{push_escaped, render_path, JsonPath, States, Step};
use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::fmt::Write as _;

/// Values and body excerpts in a [`Difference`] are cut to this many bytes (the log must not
/// carry whole bodies unless the operator asks for it with `compare.log_bodies`).
pub const MAX_SHOWN_BYTES: usize = 128;

/// A response as captured for comparison: the status, the `content-type`, the response headers
/// named in `compare.headers` (lower-case, in the order received) and the body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapturedResponse {
    pub status: u16,
    pub content_type: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl CapturedResponse {
    /// Keeps, of `headers` (any case), the `content-type` and the headers `rules` compares.
    pub fn new<'h>(
        status: u16,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
        rules: &CompareConfig,
    ) -> Self {
        let mut captured = CapturedResponse {
            status,
            ..CapturedResponse::default()
        };
        for (name, value) in headers {
            if captured.content_type.is_none() && name.eq_ignore_ascii_case("content-type") {
                captured.content_type = Some(value.to_vec());
            }
            if let Some(kept) = rules.headers.iter().find(|h| name.eq_ignore_ascii_case(h)) {
                captured.headers.push((kept.clone(), value.to_vec()));
            }
        }
        captured
    }
}

/// A response body copied as it streams past, up to a cap. Over the cap the copy is dropped at
/// once (memory stays bounded) and the comparison is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyCapture {
    body: Vec<u8>,
    cap: u64,
    too_large: bool,
}

impl BodyCapture {
    /// `declared_length`: the response's `content-length`, if any; a declared length over the
    /// cap makes the capture too large before a byte arrives.
    pub fn new(cap: u64, declared_length: Option<&[u8]>) -> Self {
        let declared = declared_length
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        Self {
            body: Vec::new(),
            cap,
            too_large: declared.is_some_and(|len| len > cap),
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if self.too_large {
            return;
        }
        let total = self.body.len().saturating_add(chunk.len());
        if over_cap(self.cap, total) {
            self.too_large = true;
            self.body = Vec::new();
        } else {
            self.body.extend_from_slice(chunk);
        }
    }

    pub fn is_too_large(&self) -> bool {
        self.too_large
    }

    /// The body, or `None` when it went over the cap.
    pub fn into_body(self) -> Option<Vec<u8>> {
        (!self.too_large).then_some(self.body)
    }
}

/// Whether a body of `len` bytes is over `cap` (a body of exactly `cap` bytes is compared).
pub fn over_cap(cap: u64, len: usize) -> bool {
    u64::try_from(len).map_or(true, |len| len > cap)
}

/// Where two responses first differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A JSON path (`$.items[2].id`), in the syntax `compare.ignore` accepts.
    Json(String),
    /// A byte offset into bodies that are not both JSON.
    Byte(usize),
    /// A response header named in `compare.headers`.
    Header(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Json(path) => f.write_str(path),
            Location::Byte(offset) => write!(f, "byte:{offset}"),
            Location::Header(name) => f.write_str(name),
        }
    }
}

/// The first difference found, with what each side had there (cut to [`MAX_SHOWN_BYTES`]).
/// `<absent>` marks a member, element or header one side lacks; `<end of body>` the end of a
/// shorter body; `<no equal element>` an element of an unordered array with no equal
/// counterpart on the other side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub at: Location,
    pub primary: String,
    pub shadow: String,
}

pub const ABSENT: &str = "<absent>";
pub const END_OF_BODY: &str = "<end of body>";
pub const NO_EQUAL_ELEMENT: &str = "<no equal element>";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Equal,
    /// The status codes differ (the bodies are not compared then).
    StatusMismatch {
        primary: u16,
        shadow: u16,
    },
    /// Same status, different bodies.
    BodyMismatch(Difference),
    /// Same status and body, different values of a header named in `compare.headers`.
    HeaderMismatch(Difference),
}

impl Verdict {
    pub fn counter(&self) -> Counter {
        match self {
            Verdict::Equal => Counter::CompareEqual,
            Verdict::StatusMismatch { .. } => Counter::CompareStatusMismatch,
            Verdict::BodyMismatch(_) => Counter::CompareBodyMismatch,
            Verdict::HeaderMismatch(_) => Counter::CompareHeaderMismatch,
        }
    }
}

/// Why a comparison that was due did not happen. Each is counted as `compare_skipped_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A body (either side) went over `compare.max_body_bytes`.
    BodyTooLarge,
    /// The shadow got no response of its own: reset, unreachable, timed out or lost.
    ShadowFailed,
    /// The client stream ended before the primary's response was complete.
    NoPrimaryResponse,
    /// Too many shadows in flight: the shadow was not sent.
    InFlightLimit,
}

impl Skip {
    pub fn counter(self) -> Counter {
        match self {
            Skip::BodyTooLarge => Counter::CompareSkippedBodyTooLarge,
            Skip::ShadowFailed => Counter::CompareSkippedShadowFailed,
            Skip::NoPrimaryResponse => Counter::CompareSkippedNoPrimaryResponse,
            Skip::InFlightLimit => Counter::CompareSkippedInFlightLimit,
        }
    }
}

/// The warn line for a mismatch (`None` for [`Verdict::Equal`]):
///
/// ```text
/// cutover: response mismatch: service=chat method=GET path=/api/chat/1 correlation_id=c1 kind=body at=$.beta primary=<absent> shadow={"on":true}
/// ```
///
/// `kind` is `status`, `body` or `header`; `at` a JSON path, `byte:<offset>` or a header name.
/// With `bodies` (the debug option `compare.log_bodies`) both whole bodies follow, as lossy
/// UTF-8 with control characters escaped.
pub fn mismatch_line(
    info: &ShadowInfo,
    verdict: &Verdict,
    bodies: Option<(&[u8], &[u8])>,
) -> Option<String> {
    let detail = match verdict {
        Verdict::Equal => return None,
        Verdict::StatusMismatch { primary, shadow } => {
            format!("kind=status primary={primary} shadow={shadow}")
        }
        Verdict::BodyMismatch(d) => format!("kind=body {}", describe_difference(d)),
        Verdict::HeaderMismatch(d) => format!("kind=header {}", describe_difference(d)),
    };
    let mut line = format!(
        "cutover: response mismatch: service={} method={} path={} correlation_id={} {detail}",
        info.service, info.method, info.path, info.correlation_id
    );
    if let Some((primary, shadow)) = bodies {
        line.push_str(" primary_body=");
        line.push_str(&shown_bytes(primary, usize::MAX));
        line.push_str(" shadow_body=");
        line.push_str(&shown_bytes(shadow, usize::MAX));
    }
    Some(line)
}

fn describe_difference(d: &Difference) -> String {
    format!("at={} primary={} shadow={}", d.at, d.primary, d.shadow)
}

/// Compares the shadow's response with the primary's: status first, then the body, then the
/// headers named in `rules.headers`.
pub fn compare_responses(
    rules: &CompareConfig,
    primary: &CapturedResponse,
    shadow: &CapturedResponse,
) -> Verdict {
    if primary.status != shadow.status {
        return Verdict::StatusMismatch {
            primary: primary.status,
            shadow: shadow.status,
        };
    }
    if let Some(difference) = compare_bodies(rules, primary, shadow) {
        return Verdict::BodyMismatch(difference);
    }
    match compare_headers(&rules.headers, &primary.headers, &shadow.headers) {
        Some(difference) => Verdict::HeaderMismatch(difference),
        None => Verdict::Equal,
    }
}

/// A body as the comparer sees it.
enum Body<'d> {
    Json(Doc<'d>),
    /// Says it is JSON (`content-type`) but does not parse: serde_json's message.
    InvalidJson(String),
    /// Neither says nor is JSON.
    Other,
}

/// `application/json`, or any `+json` type (`application/problem+json`), parameters ignored.
pub fn is_json_content_type(content_type: &[u8]) -> bool {
    let media_type = content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    media_type.eq_ignore_ascii_case(b"application/json")
        || media_type.len() > 5
            && media_type
                .get(media_type.len() - 5..)
                .is_some_and(|suffix| suffix.eq_ignore_ascii_case(b"+json"))
}

fn read_body<'d>(content_type: Option<&[u8]>, body: &'d [u8]) -> Body<'d> {
    match Doc::parse(body) {
        Ok(doc) => Body::Json(doc),
        Err(err) if content_type.is_some_and(is_json_content_type) => {
            Body::InvalidJson(err.to_string())
        }
        Err(_) => Body::Other,
    }
}

fn compare_bodies(
    rules: &CompareConfig,
    primary: &CapturedResponse,
    shadow: &CapturedResponse,
) -> Option<Difference> {
    if primary.body == shadow.body {
        return None;
    }
    // The fast path: equal canonical digests are equal documents (but for a collision, about
    // 2^-64); otherwise the structural comparison finds the first difference. A difference
    // costs both, so after one the next comparison of the service goes straight to the
    // structural one: a systematic difference (a field only new has) pays only that.
    if !rules.last_differed.get() {
        let mut states = rule_states::RuleStates::new(rules);
        if let Some(a) = digest::digest_with(&mut states, &primary.body) {
            if digest::digest_with(&mut states, &shadow.body) == Some(a) {
                return None;
            }
        }
    }
    let difference = compare_bodies_structurally(rules, primary, shadow);
    rules.last_differed.set(difference.is_some());
    difference
}

/// Per service: whether its last body comparison found a difference. A hint, not configuration:
/// it never takes part in comparing configurations, and it is atomic only so that the validated
/// configuration stays `Sync` for native users (the VM has one thread).
#[derive(Debug, Default)]
pub struct LastDiffered(std::sync::atomic::AtomicBool);

impl LastDiffered {
    pub fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, differed: bool) {
        self.0.store(differed, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Clone for LastDiffered {
    fn clone(&self) -> Self {
        LastDiffered(self.get().into())
    }
}

impl PartialEq for LastDiffered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for LastDiffered {}

/// The bodies compared without the fast path: parsed, walked, the first difference found.
fn compare_bodies_structurally(
    rules: &CompareConfig,
    primary: &CapturedResponse,
    shadow: &CapturedResponse,
) -> Option<Difference> {
    let a = read_body(primary.content_type.as_deref(), &primary.body);
    let b = read_body(shadow.content_type.as_deref(), &shadow.body);
    match (&a, &b) {
        (Body::Json(a), Body::Json(b)) => compare_docs(rules, a, b),
        (Body::Json(_), _) | (_, Body::Json(_)) => Some(Difference {
            at: Location::Json("$".to_string()),
            primary: describe_body(&a, &primary.body),
            shadow: describe_body(&b, &shadow.body),
        }),
        _ => first_differing_byte(&primary.body, &shadow.body),
    }
}

fn describe_body(body: &Body<'_>, bytes: &[u8]) -> String {
    match body {
        Body::Json(doc) => shown_value(&doc.at(doc.root())),
        Body::InvalidJson(err) => cut(&format!("<invalid JSON: {err}>")),
        Body::Other => format!("<not JSON: {} bytes>", bytes.len()),
    }
}

fn first_differing_byte(a: &[u8], b: &[u8]) -> Option<Difference> {
    let offset = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    if offset == a.len() && offset == b.len() {
        return None;
    }
    let excerpt = |bytes: &[u8]| match bytes.get(offset..) {
        Some(rest) if !rest.is_empty() => shown_bytes(rest, MAX_SHOWN_BYTES),
        _ => END_OF_BODY.to_string(),
    };
    Some(Difference {
        at: Location::Byte(offset),
        primary: excerpt(a),
        shadow: excerpt(b),
    })
}

/// Compares the values of each header in `names` (every occurrence, in order).
fn compare_headers(
    names: &[String],
    primary: &[(String, Vec<u8>)],
    shadow: &[(String, Vec<u8>)],
) -> Option<Difference> {
    for name in names {
        let values = |headers: &[(String, Vec<u8>)]| -> Vec<Vec<u8>> {
            headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .collect()
        };
        let (a, b) = (values(primary), values(shadow));
        if a != b {
            let shown = |values: &[Vec<u8>]| {
                if values.is_empty() {
                    ABSENT.to_string()
                } else {
                    shown_bytes(&values.join(&b", "[..]), MAX_SHOWN_BYTES)
                }
            };
            return Some(Difference {
                at: Location::Header(name.clone()),
                primary: shown(&a),
                shadow: shown(&b),
            });
        }
    }
    None
}

/// Compares two JSON documents under the noise rules; `None` when they are equal.
pub fn compare_json(rules: &CompareConfig, primary: &Value, shadow: &Value) -> Option<Difference> {
    match (Doc::from_value(primary), Doc::from_value(shadow)) {
        (Ok(a), Ok(b)) => compare_docs(rules, &a, &b),
        // A `Value` always reads as a document; compared as a whole should it ever not.
        _ => (primary != shadow).then(|| Difference {
            at: Location::Json("$".to_string()),
            primary: shown_value(primary),
            shadow: shown_value(shadow),
        }),
    }
}

fn compare_docs<'v>(rules: &CompareConfig, a: &'v Doc<'v>, b: &'v Doc<'v>) -> Option<Difference> {
    let mut walker = Walker::new(rules, a, b);
    let root = walker.root();
    let mut location = Vec::new();
    walker
        .compare(a.root(), b.root(), root, &mut location)
        .map(|(primary, shadow)| Difference {
            at: Location::Json(render_path(&location)),
            primary,
            shadow,
        })
}

/// The noise rules alive at one location: the slice `lo..hi` of [`RuleStack`]'s live rules, and whether
/// an `ignore` rule or an `unordered` rule selects the location itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    lo: usize,
    hi: usize,
    pub(crate) ignored: bool,
    pub(crate) unordered: bool,
}

/// The noise rules followed down a document, on one stack of live automaton states
/// (`(rule, states)`, rules that can no longer match anywhere below dropped), pushed on the way
/// down and popped on the way up: no allocation per node, and no work at all below the point
/// where every rule has died. Used by the structural walk (the digest has its own automaton,
/// [`rule_states`]).
pub(crate) struct RuleStack<'r> {
    config: &'r CompareConfig,
    /// Live rules: the path, whether it is an `ignore` rule, its states.
    live: Vec<(&'r JsonPath, bool, States)>,
}

impl<'r> RuleStack<'r> {
    pub(crate) fn new(config: &'r CompareConfig) -> Self {
        Self {
            config,
            live: Vec::with_capacity(4 * (config.ignore.len() + config.unordered.len())),
        }
    }

    /// A frame with no rule alive (what [`RuleStack::enter`] gives below dead rules).
    pub(crate) fn dead(&self) -> Frame {
        let lo = self.live.len();
        Frame {
            lo,
            hi: lo,
            ignored: false,
            unordered: false,
        }
    }

    /// The frame of the document root.
    pub(crate) fn root(&mut self) -> Frame {
        let mut frame = self.dead();
        let rules = self.config.ignore.iter().map(|path| (path, true));
        for (path, is_ignore) in rules.chain(self.config.unordered.iter().map(|path| (path, false)))
        {
            self.live.push((path, is_ignore, JsonPath::START));
            frame.mark(path.selects(JsonPath::START), is_ignore);
        }
        frame.hi = self.live.len();
        frame
    }

    /// The frame one level below `parent`, following `step`; pop it with [`RuleStack::leave`].
    pub(crate) fn enter(&mut self, parent: Frame, step: Step<'_>) -> Frame {
        let mut frame = self.dead();
        for i in parent.lo..parent.hi {
            let Some((path, is_ignore, states)) = self.live.get(i).copied() else {
                break;
            };
            let next = path.step(states, step);
            if next != 0 {
                self.live.push((path, is_ignore, next));
                frame.mark(path.selects(next), is_ignore);
            }
        }
        frame.hi = self.live.len();
        frame
    }

    pub(crate) fn leave(&mut self, frame: Frame) {
        self.live.truncate(frame.lo);
    }
}

/// Walks the primary's document (`a`) and the shadow's (`b`) side by side, following the rules
/// on a [`RuleStack`].
struct Walker<'r, 'v> {
    a: &'v Doc<'v>,
    b: &'v Doc<'v>,
    stack: RuleStack<'r>,
}

/// Both sides' values at the difference, already shown.
type Found = (String, String);

/// Which document a node belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

impl<'r, 'v> Walker<'r, 'v> {
    fn new(rules: &'r CompareConfig, a: &'v Doc<'v>, b: &'v Doc<'v>) -> Self {
        Self {
            a,
            b,
            stack: RuleStack::new(rules),
        }
    }

    fn doc(&self, side: Side) -> &'v Doc<'v> {
        match side {
            Side::A => self.a,
            Side::B => self.b,
        }
    }

    fn root(&mut self) -> Frame {
        self.stack.root()
    }

    fn enter(&mut self, parent: Frame, step: Step<'_>) -> Frame {
        self.stack.enter(parent, step)
    }

    fn leave(&mut self, frame: Frame) {
        self.stack.leave(frame);
    }

    /// `location` is the path to `a`/`b`; on a difference it is left pointing at it.
    fn compare(
        &mut self,
        a: usize,
        b: usize,
        frame: Frame,
        location: &mut Vec<Step<'v>>,
    ) -> Option<Found> {
        if frame.ignored {
            return None;
        }
        let (da, db) = (self.a, self.b);
        match (da.node(a), db.node(b)) {
            (Node::Object { start: i, len: m }, Node::Object { start: j, len: n }) => {
                self.compare_objects(da.members(*i, *m), db.members(*j, *n), frame, location)
            }
            (Node::Array { start: i, len: m }, Node::Array { start: j, len: n }) => {
                let (x, y) = (da.elements(*i, *m), db.elements(*j, *n));
                if frame.unordered {
                    self.compare_multisets(x, y, frame, location)
                } else {
                    self.compare_arrays(x, y, frame, location)
                }
            }
            (x, y) if scalars_equal(x, y) => None,
            _ => Some((shown(da, a), shown(db, b))),
        }
    }

    fn compare_objects(
        &mut self,
        a: &'v [(Cow<'v, str>, usize)],
        b: &'v [(Cow<'v, str>, usize)],
        frame: Frame,
        location: &mut Vec<Step<'v>>,
    ) -> Option<Found> {
        // Both sides' members are sorted by name: walk them side by side.
        let (mut i, mut j) = (0, 0);
        loop {
            let (key, x, y) = match (a.get(i), b.get(j)) {
                (None, None) => return None,
                (Some((k, x)), None) => {
                    i += 1;
                    (k, Some(*x), None)
                }
                (None, Some((l, y))) => {
                    j += 1;
                    (l, None, Some(*y))
                }
                (Some((k, x)), Some((l, y))) => match k.as_ref().cmp(l.as_ref()) {
                    Ordering::Less => {
                        i += 1;
                        (k, Some(*x), None)
                    }
                    Ordering::Greater => {
                        j += 1;
                        (l, None, Some(*y))
                    }
                    Ordering::Equal => {
                        i += 1;
                        j += 1;
                        (k, Some(*x), Some(*y))
                    }
                },
            };
            if let Some(found) = self.compare_member(x, y, Step::Key(key), frame, location) {
                return Some(found);
            }
        }
    }

    fn compare_arrays(
        &mut self,
        a: &[usize],
        b: &[usize],
        frame: Frame,
        location: &mut Vec<Step<'v>>,
    ) -> Option<Found> {
        for i in 0..a.len().max(b.len()) {
            let (x, y) = (a.get(i).copied(), b.get(i).copied());
            if let Some(found) = self.compare_member(x, y, Step::Index(i), frame, location) {
                return Some(found);
            }
        }
        None
    }

    /// One member or element; `None` on a side that lacks it.
    fn compare_member(
        &mut self,
        x: Option<usize>,
        y: Option<usize>,
        step: Step<'v>,
        frame: Frame,
        location: &mut Vec<Step<'v>>,
    ) -> Option<Found> {
        let child = self.enter(frame, step);
        let found = if child.ignored {
            None
        } else {
            location.push(step);
            let found = match (x, y) {
                (Some(x), Some(y)) => self.compare(x, y, child, location),
                (Some(x), None) => Some((shown(self.a, x), ABSENT.to_string())),
                (None, Some(y)) => Some((ABSENT.to_string(), shown(self.b, y))),
                (None, None) => None,
            };
            if found.is_none() {
                location.pop();
            }
            found
        };
        self.leave(child);
        found
    }

    /// An `unordered` array: equal when both hold the same elements (by canonical form under
    /// the rules) the same number of times. Elements selected by `ignore` do not count.
    fn compare_multisets(
        &mut self,
        a: &[usize],
        b: &[usize],
        frame: Frame,
        location: &mut Vec<Step<'v>>,
    ) -> Option<Found> {
        let left = self.canonical_elements(Side::A, a, frame);
        let right = self.canonical_elements(Side::B, b, frame);
        // Merge the two sorted lists; what is left over on either side has no equal element.
        let (mut first_a, mut first_b): (Option<usize>, Option<usize>) = (None, None);
        let unmatched = |first: &mut Option<usize>, index: usize| {
            *first = Some(first.map_or(index, |f| f.min(index)));
        };
        let (mut i, mut j) = (0, 0);
        loop {
            match (left.get(i), right.get(j)) {
                (Some(x), Some(y)) => match x.0.cmp(&y.0) {
                    Ordering::Equal => {
                        i += 1;
                        j += 1;
                    }
                    Ordering::Less => {
                        unmatched(&mut first_a, x.1);
                        i += 1;
                    }
                    Ordering::Greater => {
                        unmatched(&mut first_b, y.1);
                        j += 1;
                    }
                },
                (Some(x), None) => {
                    unmatched(&mut first_a, x.1);
                    i += 1;
                }
                (None, Some(y)) => {
                    unmatched(&mut first_b, y.1);
                    j += 1;
                }
                (None, None) => break,
            }
        }
        let shown_at = |doc: &Doc<'_>, values: &[usize], index: Option<usize>| {
            index
                .and_then(|i| values.get(i))
                .map_or_else(|| NO_EQUAL_ELEMENT.to_string(), |node| shown(doc, *node))
        };
        match (first_a, first_b) {
            (None, None) => None,
            // Named by the primary's index when the primary has an unmatched element.
            (Some(i), _) => {
                location.push(Step::Index(i));
                Some((shown_at(self.a, a, first_a), shown_at(self.b, b, first_b)))
            }
            (None, Some(j)) => {
                location.push(Step::Index(j));
                Some((NO_EQUAL_ELEMENT.to_string(), shown_at(self.b, b, first_b)))
            }
        }
    }

    /// The canonical forms of an unordered array's elements with their indexes, sorted (equal
    /// forms by index); elements selected by `ignore` left out.
    fn canonical_elements(
        &mut self,
        side: Side,
        elements: &[usize],
        frame: Frame,
    ) -> Vec<(String, usize)> {
        let mut forms: Vec<(String, usize)> = Vec::with_capacity(elements.len());
        for (i, node) in elements.iter().enumerate() {
            let child = self.enter(frame, Step::Index(i));
            if !child.ignored {
                let mut form = String::new();
                self.canonical(side, *node, child, &mut form);
                forms.push((form, i));
            }
            self.leave(child);
        }
        forms.sort();
        forms
    }

    /// A text that is equal for two values exactly when [`Walker::compare`] finds them equal
    /// at this location: members in name order, ignored members left out, ignored elements of
    /// ordered arrays as `~` (trailing ones dropped), unordered arrays sorted.
    fn canonical(&mut self, side: Side, node: usize, frame: Frame, out: &mut String) {
        let doc = self.doc(side);
        match doc.node(node) {
            Node::Null => out.push_str("null"),
            Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Node::PosInt(_) | Node::NegInt(_) | Node::Float(_) => {
                // Writing to a String cannot fail.
                let _ = match number_key(doc.node(node)) {
                    Some(NumberKey::Int(i)) => write!(out, "{i}"),
                    Some(NumberKey::Float(bits)) => write!(out, "{:e}", f64::from_bits(bits)),
                    None => Ok(()),
                };
            }
            Node::Str(s) => push_quoted(s, out),
            Node::Object { start, len } => {
                out.push('{');
                let mut first = true;
                for (name, value) in doc.members(*start, *len) {
                    let child = self.enter(frame, Step::Key(name));
                    if !child.ignored {
                        if !first {
                            out.push(',');
                        }
                        first = false;
                        push_quoted(name, out);
                        out.push(':');
                        self.canonical(side, *value, child, out);
                    }
                    self.leave(child);
                }
                out.push('}');
            }
            Node::Array { start, len } if frame.unordered => {
                let forms = self.canonical_elements(side, doc.elements(*start, *len), frame);
                out.push('[');
                for (k, (form, _)) in forms.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    out.push_str(form);
                }
                out.push(']');
            }
            Node::Array { start, len } => {
                out.push('[');
                // Ignored elements are written only once an element follows them.
                let (mut written, mut ignored) = (0usize, 0usize);
                for (i, element) in doc.elements(*start, *len).iter().enumerate() {
                    let child = self.enter(frame, Step::Index(i));
                    if child.ignored {
                        ignored += 1;
                    } else {
                        for _ in 0..ignored {
                            if written > 0 {
                                out.push(',');
                            }
                            out.push('~');
                            written += 1;
                        }
                        ignored = 0;
                        if written > 0 {
                            out.push(',');
                        }
                        self.canonical(side, *element, child, out);
                        written += 1;
                    }
                    self.leave(child);
                }
                out.push(']');
            }
        }
    }
}

impl Frame {
    fn mark(&mut self, selected: bool, is_ignore: bool) {
        if selected {
            if is_ignore {
                self.ignored = true;
            } else {
                self.unordered = true;
            }
        }
    }
}

/// Equal scalars: numbers by value, strings, booleans and nulls exactly. Containers are never
/// equal here.
fn scalars_equal(a: &Node<'_>, b: &Node<'_>) -> bool {
    match (a, b) {
        (Node::Str(x), Node::Str(y)) => x == y,
        (Node::PosInt(x), Node::PosInt(y)) => x == y,
        (Node::NegInt(x), Node::NegInt(y)) => x == y,
        (Node::Bool(x), Node::Bool(y)) => x == y,
        (Node::Null, Node::Null) => true,
        _ => number_key(a).is_some_and(|key| number_key(b) == Some(key)),
    }
}

fn shown(doc: &Doc<'_>, node: usize) -> String {
    shown_value(&doc.at(node))
}

fn push_quoted(s: &str, out: &mut String) {
    out.push('"');
    push_escaped(s, '"', out);
    out.push('"');
}

/// A number's value: integers exactly (also those written as `1.0` or `1e2`), other values as
/// their `f64` bits (`-0.0` and `0` are both the integer 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumberKey {
    Int(i128),
    Float(u64),
}

/// Integers of up to this magnitude written as floats are compared as integers; `f64` holds
/// every integer below it exactly, and `i128` does too.
const EXACT_INTEGER_LIMIT: f64 = 1.0e38;

/// The value of a number node (`None` for anything else).
fn number_key(node: &Node<'_>) -> Option<NumberKey> {
    let f = match node {
        Node::PosInt(u) => return Some(NumberKey::Int(i128::from(*u))),
        Node::NegInt(i) => return Some(NumberKey::Int(i128::from(*i))),
        Node::Float(f) => *f,
        _ => return None,
    };
    Some(float_key(f))
}

/// The value of a number serde_json read as an `f64`.
fn float_key(f: f64) -> NumberKey {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < EXACT_INTEGER_LIMIT {
        // Exact: `f` is an integer within i128's range.
        NumberKey::Int(f as i128)
    } else {
        NumberKey::Float(f.to_bits())
    }
}

/// A value as compact JSON, cut to [`MAX_SHOWN_BYTES`] (serialisation stops there, so a huge
/// value costs no more than a small one).
pub fn shown_value(value: &impl Serialize) -> String {
    let mut out = LimitedWriter {
        bytes: Vec::new(),
        limit: MAX_SHOWN_BYTES,
        truncated: false,
    };
    // An error here only means the limit was reached.
    let _ = serde_json::to_writer(&mut out, value);
    finish_shown(&out.bytes, out.truncated)
}

/// Raw bytes for a log line: lossy UTF-8, cut to `limit` bytes.
pub fn shown_bytes(bytes: &[u8], limit: usize) -> String {
    let cut_at = bytes.len().min(limit);
    finish_shown(bytes.get(..cut_at).unwrap_or(bytes), cut_at < bytes.len())
}

fn cut(text: &str) -> String {
    shown_bytes(text.as_bytes(), MAX_SHOWN_BYTES)
}

fn finish_shown(bytes: &[u8], truncated: bool) -> String {
    // A cut may split a UTF-8 sequence; drop the partial character rather than show U+FFFD.
    let text: String = match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(err) if truncated && err.error_len().is_none() => {
            String::from_utf8_lossy(bytes.get(..err.valid_up_to()).unwrap_or_default()).into_owned()
        }
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    };
    // One log line per mismatch: no line breaks or other control characters from a body.
    let text = if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        text
    };
    if truncated {
        text + "…"
    } else {
        text
    }
}

struct LimitedWriter {
    bytes: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl std::io::Write for LimitedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.limit.saturating_sub(self.bytes.len());
        if buf.len() > room {
            self.bytes
                .extend_from_slice(buf.get(..room).unwrap_or_default());
            self.truncated = true;
            return Err(std::io::Error::other("shown value limit reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
