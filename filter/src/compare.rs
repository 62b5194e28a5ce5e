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
//! Bounds: bodies are capped by the service's `compare.max_body_bytes` before they get here
//! ([`BodyCapture`]). JSON is parsed by `serde_json`, whose recursion limit (128 nested arrays
//! or objects) makes a deeper document fail to parse: such a body is compared by bytes, and
//! nothing here recurses deeper than that limit. Numbers serde_json cannot represent (an
//! exponent beyond `f64`, such as `1e400`) make the document fail to parse likewise. The walk
//! visits each node of the primary's document once and follows every noise rule one level per
//! node with a few bit operations ([`path`]); an `unordered` array costs a sort of its
//! elements' canonical forms.

pub mod path;
pub mod pending;

use crate::config::CompareConfig;
use crate::metrics::Counter;
use crate::shadow::ShadowInfo;
use path::{push_escaped, render_path, JsonPath, States, Step};
use serde_json::{Map, Number, Value};
use std::cmp::Ordering;
use std::fmt;

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
enum Body {
    Json(Value),
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

fn read_body(content_type: Option<&[u8]>, body: &[u8]) -> Body {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => Body::Json(value),
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
    let a = read_body(primary.content_type.as_deref(), &primary.body);
    let b = read_body(shadow.content_type.as_deref(), &shadow.body);
    match (&a, &b) {
        (Body::Json(a), Body::Json(b)) => compare_json(rules, a, b),
        (Body::Json(_), _) | (_, Body::Json(_)) => Some(Difference {
            at: Location::Json("$".to_string()),
            primary: describe_body(&a, &primary.body),
            shadow: describe_body(&b, &shadow.body),
        }),
        _ => first_differing_byte(&primary.body, &shadow.body),
    }
}

fn describe_body(body: &Body, bytes: &[u8]) -> String {
    match body {
        Body::Json(value) => shown_value(value),
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
    let walker = Walker { rules };
    let mut location = Vec::new();
    walker
        .compare(primary, shadow, &walker.root(), &mut location)
        .map(|(primary, shadow)| Difference {
            at: Location::Json(render_path(&location)),
            primary,
            shadow,
        })
}

/// The automaton states of every noise rule at one location: `ignore` rules first, then
/// `unordered`. Empty once no rule can match anywhere below (no per-node work then).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RuleStates(Vec<States>);

struct Walker<'r> {
    rules: &'r CompareConfig,
}

/// Both sides' values at the difference, already shown.
type Found = (String, String);

impl<'r> Walker<'r> {
    fn paths(&self) -> impl Iterator<Item = &'r JsonPath> + 'r {
        self.rules.ignore.iter().chain(self.rules.unordered.iter())
    }

    fn root(&self) -> RuleStates {
        let n = self.rules.ignore.len() + self.rules.unordered.len();
        if n == 0 {
            RuleStates(Vec::new())
        } else {
            RuleStates(vec![JsonPath::START; n])
        }
    }

    fn child(&self, states: &RuleStates, step: Step<'_>) -> RuleStates {
        if states.0.is_empty() {
            return RuleStates(Vec::new());
        }
        let next: Vec<States> = self
            .paths()
            .zip(&states.0)
            .map(|(path, s)| path.step(*s, step))
            .collect();
        if next.iter().all(|s| *s == 0) {
            RuleStates(Vec::new())
        } else {
            RuleStates(next)
        }
    }

    fn ignored(&self, states: &RuleStates) -> bool {
        self.rules
            .ignore
            .iter()
            .zip(&states.0)
            .any(|(path, s)| path.selects(*s))
    }

    fn unordered(&self, states: &RuleStates) -> bool {
        let skip = self.rules.ignore.len();
        self.rules
            .unordered
            .iter()
            .zip(states.0.iter().skip(skip))
            .any(|(path, s)| path.selects(*s))
    }

    /// `location` is the path to `a`/`b`; on a difference it is left pointing at it.
    fn compare<'v>(
        &self,
        a: &'v Value,
        b: &'v Value,
        states: &RuleStates,
        location: &mut Vec<Step<'v>>,
    ) -> Option<Found> {
        if self.ignored(states) {
            return None;
        }
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => self.compare_objects(a, b, states, location),
            (Value::Array(a), Value::Array(b)) if self.unordered(states) => {
                self.compare_multisets(a, b, states, location)
            }
            (Value::Array(a), Value::Array(b)) => self.compare_arrays(a, b, states, location),
            (Value::Number(x), Value::Number(y)) if number_key(x) == number_key(y) => None,
            (Value::String(x), Value::String(y)) if x == y => None,
            (Value::Bool(x), Value::Bool(y)) if x == y => None,
            (Value::Null, Value::Null) => None,
            _ => Some((shown_value(a), shown_value(b))),
        }
    }

    fn compare_objects<'v>(
        &self,
        a: &'v Map<String, Value>,
        b: &'v Map<String, Value>,
        states: &RuleStates,
        location: &mut Vec<Step<'v>>,
    ) -> Option<Found> {
        // Both maps iterate in key order: walk them side by side.
        let mut left = a.iter().peekable();
        let mut right = b.iter().peekable();
        loop {
            let (key, x, y) = match (left.peek(), right.peek()) {
                (None, None) => return None,
                (Some((k, x)), None) => {
                    let found = (k.as_str(), Some(*x), None);
                    left.next();
                    found
                }
                (None, Some((k, y))) => {
                    let found = (k.as_str(), None, Some(*y));
                    right.next();
                    found
                }
                (Some((k, x)), Some((l, y))) => match k.as_str().cmp(l.as_str()) {
                    Ordering::Less => {
                        let found = (k.as_str(), Some(*x), None);
                        left.next();
                        found
                    }
                    Ordering::Greater => {
                        let found = (l.as_str(), None, Some(*y));
                        right.next();
                        found
                    }
                    Ordering::Equal => {
                        let found = (k.as_str(), Some(*x), Some(*y));
                        left.next();
                        right.next();
                        found
                    }
                },
            };
            let step = Step::Key(key);
            if let Some(found) = self.compare_member(x, y, step, states, location) {
                return Some(found);
            }
        }
    }

    fn compare_arrays<'v>(
        &self,
        a: &'v [Value],
        b: &'v [Value],
        states: &RuleStates,
        location: &mut Vec<Step<'v>>,
    ) -> Option<Found> {
        for i in 0..a.len().max(b.len()) {
            let step = Step::Index(i);
            if let Some(found) = self.compare_member(a.get(i), b.get(i), step, states, location) {
                return Some(found);
            }
        }
        None
    }

    /// One member or element; `None` on a side that lacks it.
    fn compare_member<'v>(
        &self,
        x: Option<&'v Value>,
        y: Option<&'v Value>,
        step: Step<'v>,
        states: &RuleStates,
        location: &mut Vec<Step<'v>>,
    ) -> Option<Found> {
        let child = self.child(states, step);
        if self.ignored(&child) {
            return None;
        }
        location.push(step);
        let found = match (x, y) {
            (Some(x), Some(y)) => self.compare(x, y, &child, location),
            (Some(x), None) => Some((shown_value(x), ABSENT.to_string())),
            (None, Some(y)) => Some((ABSENT.to_string(), shown_value(y))),
            (None, None) => None,
        };
        if found.is_none() {
            location.pop();
        }
        found
    }

    /// An `unordered` array: equal when both hold the same elements (by canonical form under
    /// the rules) the same number of times. Elements selected by `ignore` do not count.
    fn compare_multisets<'v>(
        &self,
        a: &'v [Value],
        b: &'v [Value],
        states: &RuleStates,
        location: &mut Vec<Step<'v>>,
    ) -> Option<Found> {
        let (left, right) = (
            self.canonical_elements(a, states),
            self.canonical_elements(b, states),
        );
        // Merge the two sorted lists; what is left over on either side has no equal element.
        let (mut unmatched_a, mut unmatched_b) = (Vec::new(), Vec::new());
        let (mut i, mut j) = (0, 0);
        while i < left.len() || j < right.len() {
            match (left.get(i), right.get(j)) {
                (Some(x), Some(y)) => match x.0.cmp(&y.0) {
                    Ordering::Equal => {
                        i += 1;
                        j += 1;
                    }
                    Ordering::Less => {
                        unmatched_a.push(x.1);
                        i += 1;
                    }
                    Ordering::Greater => {
                        unmatched_b.push(y.1);
                        j += 1;
                    }
                },
                (Some(x), None) => {
                    unmatched_a.push(x.1);
                    i += 1;
                }
                (None, Some(y)) => {
                    unmatched_b.push(y.1);
                    j += 1;
                }
                (None, None) => break,
            }
        }
        let first_a = unmatched_a.iter().min().copied();
        let first_b = unmatched_b.iter().min().copied();
        let shown_at = |values: &[Value], index: Option<usize>| {
            index
                .and_then(|i| values.get(i))
                .map_or_else(|| NO_EQUAL_ELEMENT.to_string(), shown_value)
        };
        match (first_a, first_b) {
            (None, None) => None,
            // Named by the primary's index when the primary has an unmatched element.
            (Some(i), _) => {
                location.push(Step::Index(i));
                Some((shown_at(a, first_a), shown_at(b, first_b)))
            }
            (None, Some(j)) => {
                location.push(Step::Index(j));
                Some((NO_EQUAL_ELEMENT.to_string(), shown_at(b, first_b)))
            }
        }
    }

    /// The canonical forms of an unordered array's elements with their indexes, sorted;
    /// elements selected by `ignore` left out.
    fn canonical_elements(&self, values: &[Value], states: &RuleStates) -> Vec<(String, usize)> {
        let mut elements: Vec<(String, usize)> = values
            .iter()
            .enumerate()
            .filter_map(|(i, value)| {
                let child = self.child(states, Step::Index(i));
                if self.ignored(&child) {
                    return None;
                }
                let mut canonical = String::new();
                self.canonical(value, &child, &mut canonical);
                Some((canonical, i))
            })
            .collect();
        elements.sort();
        elements
    }

    /// A text that is equal for two values exactly when [`Walker::compare`] finds them equal
    /// at this location: members in key order, ignored members left out, ignored elements of
    /// ordered arrays as `~` (trailing ones dropped), unordered arrays sorted.
    fn canonical(&self, v: &Value, states: &RuleStates, out: &mut String) {
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => match number_key(n) {
                NumberKey::Int(i) => out.push_str(&i.to_string()),
                NumberKey::Float(bits) => out.push_str(&format!("{:e}", f64::from_bits(bits))),
            },
            Value::String(s) => push_quoted(s, out),
            Value::Object(map) => {
                out.push('{');
                let mut first = true;
                for (key, value) in map {
                    let child = self.child(states, Step::Key(key));
                    if self.ignored(&child) {
                        continue;
                    }
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    push_quoted(key, out);
                    out.push(':');
                    self.canonical(value, &child, out);
                }
                out.push('}');
            }
            Value::Array(values) if self.unordered(states) => {
                let elements: Vec<String> = self
                    .canonical_elements(values, states)
                    .into_iter()
                    .map(|(element, _)| element)
                    .collect();
                out.push('[');
                out.push_str(&elements.join(","));
                out.push(']');
            }
            Value::Array(values) => {
                let mut elements: Vec<String> = values
                    .iter()
                    .enumerate()
                    .map(|(i, value)| {
                        let child = self.child(states, Step::Index(i));
                        if self.ignored(&child) {
                            return "~".to_string();
                        }
                        let mut element = String::new();
                        self.canonical(value, &child, &mut element);
                        element
                    })
                    .collect();
                while elements.last().is_some_and(|e| e == "~") {
                    elements.pop();
                }
                out.push('[');
                out.push_str(&elements.join(","));
                out.push(']');
            }
        }
    }
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

fn number_key(n: &Number) -> NumberKey {
    if let Some(i) = n.as_i64() {
        return NumberKey::Int(i128::from(i));
    }
    if let Some(u) = n.as_u64() {
        return NumberKey::Int(i128::from(u));
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.is_finite() && f.fract() == 0.0 && f.abs() < EXACT_INTEGER_LIMIT {
        // Exact: `f` is an integer within i128's range.
        NumberKey::Int(f as i128)
    } else {
        NumberKey::Float(f.to_bits())
    }
}

/// A value as compact JSON, cut to [`MAX_SHOWN_BYTES`] (serialisation stops there, so a huge
/// value costs no more than a small one).
pub fn shown_value(value: &Value) -> String {
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
