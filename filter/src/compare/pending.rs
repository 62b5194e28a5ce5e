//! Comparisons in flight: the primary's response (captured by the HTTP stream as it passes to
//! the client) and the shadow's (read by the root context in `on_http_call_response`) meet
//! here, in either order, and are compared when both are known.
//!
//! Every comparison [`Comparisons::begin`] accepted ends exactly once: compared, or skipped
//! for a reason ([`Skip`]); entries never outlive their deadline ([`Comparisons::expire`]) and
//! their number is bounded, so memory is at most that many pairs of capped bodies.

use super::{
    compare_responses, mismatch_line, over_cap, BodyCapture, CapturedResponse, Skip, Verdict,
};
use crate::config::CompareConfig;
use crate::metrics::Counter;
use crate::outcome::Outcome;
use crate::shadow::ShadowInfo;
use std::collections::HashMap;
use std::sync::Arc;

/// One side's part of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Half {
    Response(CapturedResponse),
    /// This side cannot be compared.
    Skipped(Skip),
}

/// How a comparison ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareOutcome {
    Compared(Verdict),
    Skipped(Skip),
}

impl CompareOutcome {
    /// The one `compare_*` outcome counter (besides `compare_total`, counted at the start).
    pub fn counter(&self) -> Counter {
        match self {
            CompareOutcome::Compared(verdict) => verdict.counter(),
            CompareOutcome::Skipped(skip) => skip.counter(),
        }
    }
}

/// Compares the two halves: a skipped half (the primary's first) decides without comparing.
pub fn settle(rules: &CompareConfig, primary: &Half, shadow: &Half) -> CompareOutcome {
    match (primary, shadow) {
        (Half::Skipped(skip), _) | (_, Half::Skipped(skip)) => CompareOutcome::Skipped(*skip),
        (Half::Response(p), Half::Response(s)) => {
            CompareOutcome::Compared(compare_responses(rules, p, s))
        }
    }
}

/// The primary's response as it streams to the client: head at the response headers, body
/// chunks copied up to `compare.max_body_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryCapture {
    head: CapturedResponse,
    body: BodyCapture,
    has_status: bool,
}

impl PrimaryCapture {
    /// `status`: the parsed `:status` (`None` if it was not a valid status: not compared).
    pub fn start<'h>(
        rules: &CompareConfig,
        status: Option<u16>,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    ) -> Self {
        let mut content_length = None;
        let head = CapturedResponse::new(
            status.unwrap_or_default(),
            headers.into_iter().inspect(|(name, value)| {
                if content_length.is_none() && name.eq_ignore_ascii_case("content-length") {
                    content_length = Some(*value);
                }
            }),
            rules,
        );
        Self {
            head,
            body: BodyCapture::new(rules.max_body_bytes, content_length),
            has_status: status.is_some(),
        }
    }

    /// Whether body chunks are still wanted (the copy is neither over the cap nor pointless).
    pub fn wants_body(&self) -> bool {
        self.has_status && !self.body.is_too_large()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.body.push(chunk);
    }

    /// The response is complete.
    pub fn finish(self) -> Half {
        if !self.has_status {
            return Half::Skipped(Skip::NoPrimaryResponse);
        }
        match self.body.into_body() {
            Some(body) => Half::Response(CapturedResponse { body, ..self.head }),
            None => Half::Skipped(Skip::BodyTooLarge),
        }
    }
}

/// Whether the root context should read a shadow response body of `body_size` bytes.
pub fn reads_shadow_body(rules: &CompareConfig, body_size: usize) -> bool {
    !over_cap(rules.max_body_bytes, body_size)
}

/// The shadow's half from `on_http_call_response`: its classified outcome, its headers and its
/// body (`None` when it was over the cap and not read). Envoy's own replies for a reset,
/// unreachable or timed-out shadow are not the shadow backend's answer: skipped.
pub fn shadow_half<'h>(
    rules: &CompareConfig,
    outcome: Outcome,
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    body: Option<Vec<u8>>,
) -> Half {
    let status = match outcome {
        Outcome::Succeeded(s)
        | Outcome::Failed3xx(s)
        | Outcome::Failed4xx(s)
        | Outcome::Failed5xx(s) => s,
        Outcome::FailedReset | Outcome::TimedOut => return Half::Skipped(Skip::ShadowFailed),
    };
    match body {
        Some(body) if !over_cap(rules.max_body_bytes, body.len()) => {
            Half::Response(CapturedResponse {
                body,
                ..CapturedResponse::new(status, headers, rules)
            })
        }
        _ => Half::Skipped(Skip::BodyTooLarge),
    }
}

#[derive(Debug)]
struct Entry<S> {
    service: S,
    info: ShadowInfo,
    rules: Arc<CompareConfig>,
    primary: Option<Half>,
    shadow: Option<Half>,
    deadline_ms: u64,
}

/// A finished comparison: what to count and what to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed<S> {
    pub service: S,
    pub outcome: CompareOutcome,
    /// The warn line of a mismatch (with both bodies when `compare.log_bodies` is on).
    pub warn_line: Option<String>,
}

/// The comparisons of one VM, keyed by shadow id; `S` is the caller's handle for a service's
/// counters.
#[derive(Debug)]
pub struct Comparisons<S> {
    entries: HashMap<u64, Entry<S>>,
    max_entries: usize,
}

impl<S> Comparisons<S> {
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: HashMap::new(),
            max_entries,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Starts comparing shadow `id`. Count `compare_total` either way; on `Err`, also the
    /// skip's counter (too many comparisons in flight).
    pub fn begin(
        &mut self,
        id: u64,
        service: S,
        info: ShadowInfo,
        rules: Arc<CompareConfig>,
        deadline_ms: u64,
    ) -> Result<(), Skip> {
        if self.entries.len() >= self.max_entries || self.entries.contains_key(&id) {
            return Err(Skip::InFlightLimit);
        }
        self.entries.insert(
            id,
            Entry {
                service,
                info,
                rules,
                primary: None,
                shadow: None,
                deadline_ms,
            },
        );
        Ok(())
    }

    /// The primary's half of `id`; the comparison if the shadow's is already known. A second
    /// report, or one for an unknown id, is ignored.
    pub fn primary(&mut self, id: u64, half: Half) -> Option<Completed<S>> {
        let entry = self.entries.get_mut(&id)?;
        if entry.primary.is_none() {
            entry.primary = Some(half);
        }
        self.complete_if_ready(id)
    }

    /// The shadow's half of `id`; the comparison if the primary's is already known.
    pub fn shadow(&mut self, id: u64, half: Half) -> Option<Completed<S>> {
        let entry = self.entries.get_mut(&id)?;
        if entry.shadow.is_none() {
            entry.shadow = Some(half);
        }
        self.complete_if_ready(id)
    }

    /// The rules comparison `id` started with (for the root context deciding whether to read
    /// the shadow's body).
    pub fn rules(&self, id: u64) -> Option<Arc<CompareConfig>> {
        self.entries.get(&id).map(|e| Arc::clone(&e.rules))
    }

    /// Ends every comparison past its deadline: a half that never came is a skip
    /// (no primary response, or a failed shadow).
    pub fn expire(&mut self, now_ms: u64) -> Vec<Completed<S>> {
        let due: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.deadline_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        due.into_iter()
            .filter_map(|id| {
                let entry = self.entries.get_mut(&id)?;
                entry
                    .primary
                    .get_or_insert(Half::Skipped(Skip::NoPrimaryResponse));
                entry
                    .shadow
                    .get_or_insert(Half::Skipped(Skip::ShadowFailed));
                self.complete_if_ready(id)
            })
            .collect()
    }

    fn complete_if_ready(&mut self, id: u64) -> Option<Completed<S>> {
        let entry = self.entries.get(&id)?;
        if entry.primary.is_none() || entry.shadow.is_none() {
            return None;
        }
        let entry = self.entries.remove(&id)?;
        let (primary, shadow) = (entry.primary?, entry.shadow?);
        let outcome = settle(&entry.rules, &primary, &shadow);
        let warn_line = match (&outcome, &primary, &shadow) {
            (CompareOutcome::Compared(verdict), Half::Response(p), Half::Response(s)) => {
                let bodies = entry
                    .rules
                    .log_bodies
                    .then_some((p.body.as_slice(), s.body.as_slice()));
                mismatch_line(&entry.info, verdict, bodies)
            }
            _ => None,
        };
        Some(Completed {
            service: entry.service,
            outcome,
            warn_line,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::tests::info;
    use crate::compare::{Difference, Location};

    fn rules(fields: &str) -> Arc<CompareConfig> {
        crate::config::test_service(&format!(
            r#","shadow_reads":{{"percentage":10}},"compare":{{{fields}}}"#
        ))
        .compare
        .unwrap()
    }

    const JSON: (&str, &[u8]) = ("content-type", b"application/json");

    fn primary(rules: &CompareConfig, status: u16, chunks: &[&str]) -> Half {
        let mut capture = PrimaryCapture::start(rules, Some(status), [JSON]);
        for chunk in chunks {
            assert!(capture.wants_body());
            capture.push(chunk.as_bytes());
        }
        capture.finish()
    }

    fn shadow(rules: &CompareConfig, status: u16, body: &str) -> Half {
        shadow_half(
            rules,
            crate::outcome::classify(&crate::outcome::CallResponse {
                status: Some(status.to_string().as_bytes()),
                body_prefix: body.as_bytes(),
                elapsed_ms: 5,
                timeout_ms: 5000,
            }),
            [JSON],
            Some(body.as_bytes().to_vec()),
        )
    }

    fn started(rules: &Arc<CompareConfig>) -> Comparisons<&'static str> {
        let mut c = Comparisons::new(4);
        c.begin(1, "chat", info(), Arc::clone(rules), 10_000)
            .unwrap();
        c
    }

    #[test]
    fn primary_first_then_shadow() {
        let r = rules(r#""ignore":["$.at"]"#);
        let mut c = started(&r);
        assert_eq!(
            c.primary(1, primary(&r, 200, &[r#"{"a":1,"#, r#""at":1}"#])),
            None
        );
        let done = c.shadow(1, shadow(&r, 200, r#"{"at":2,"a":1}"#)).unwrap();
        assert_eq!(done.outcome, CompareOutcome::Compared(Verdict::Equal));
        assert_eq!(done.outcome.counter(), Counter::CompareEqual);
        assert_eq!(done.warn_line, None);
        assert!(c.is_empty());
    }

    #[test]
    fn shadow_first_then_primary() {
        let r = rules("");
        let mut c = started(&r);
        assert_eq!(c.shadow(1, shadow(&r, 200, r#"{"a":2}"#)), None);
        let done = c.primary(1, primary(&r, 200, &[r#"{"a":1}"#])).unwrap();
        assert_eq!(
            done.outcome,
            CompareOutcome::Compared(Verdict::BodyMismatch(Difference {
                at: Location::Json("$.a".into()),
                primary: "1".into(),
                shadow: "2".into()
            }))
        );
        assert_eq!(
            done.warn_line.as_deref(),
            Some("cutover: response mismatch: service=chat method=GET path=/api/chat/1 correlation_id=c1 kind=body at=$.a primary=1 shadow=2")
        );
        assert!(c.is_empty());
    }

    #[test]
    fn a_second_report_and_unknown_ids_are_ignored() {
        let r = rules("");
        let mut c = started(&r);
        assert_eq!(c.primary(1, primary(&r, 200, &["{}"])), None);
        assert_eq!(c.primary(1, primary(&r, 500, &["{}"])), None);
        assert_eq!(c.primary(7, primary(&r, 200, &["{}"])), None);
        assert_eq!(c.shadow(7, shadow(&r, 200, "{}")), None);
        let done = c.shadow(1, shadow(&r, 200, "{}")).unwrap();
        assert_eq!(done.outcome, CompareOutcome::Compared(Verdict::Equal));
        assert_eq!(c.shadow(1, shadow(&r, 200, "{}")), None);
    }

    #[test]
    fn status_mismatch_is_logged() {
        let r = rules("");
        let mut c = started(&r);
        c.primary(1, primary(&r, 200, &["{}"]));
        let done = c.shadow(1, shadow(&r, 500, r#"{"error":"x"}"#)).unwrap();
        assert_eq!(done.outcome.counter(), Counter::CompareStatusMismatch);
        assert!(done
            .warn_line
            .unwrap()
            .ends_with("kind=status primary=200 shadow=500"));
    }

    #[test]
    fn a_failed_shadow_is_skipped_not_compared() {
        let r = rules("");
        // Envoy's own replies: a fired timeout, an unreachable shadow, no healthy host.
        for (status, body) in [
            (&b"504"[..], &b"upstream request timeout"[..]),
            (
                b"503",
                b"upstream connect error or disconnect/reset before headers",
            ),
            (b"503", b"no healthy upstream"),
        ] {
            let mut c = started(&r);
            c.primary(1, primary(&r, 200, &["{}"]));
            let response = crate::outcome::CallResponse {
                status: Some(status),
                body_prefix: body,
                elapsed_ms: 5_000,
                timeout_ms: 5_000,
            };
            let half = shadow_half(&r, crate::outcome::classify(&response), [JSON], None);
            assert_eq!(half, Half::Skipped(Skip::ShadowFailed));
            let done = c.shadow(1, half).unwrap();
            assert_eq!(done.outcome, CompareOutcome::Skipped(Skip::ShadowFailed));
            assert_eq!(done.outcome.counter(), Counter::CompareSkippedShadowFailed);
            assert_eq!(done.warn_line, None);
        }
        // A backend's own 503 is an answer.
        assert!(matches!(shadow(&r, 503, r#"{"e":1}"#), Half::Response(_)));
        assert_eq!(
            shadow_half(&r, Outcome::FailedReset, [JSON], Some(Vec::new())),
            Half::Skipped(Skip::ShadowFailed)
        );
    }

    #[test]
    fn bodies_over_the_cap_are_skipped() {
        let r = rules(r#""max_body_bytes":8"#);
        // The primary's copy goes over while streaming; the client's body is not touched here.
        let mut capture = PrimaryCapture::start(&r, Some(200), [JSON]);
        capture.push(b"12345");
        assert!(capture.wants_body());
        capture.push(b"6789");
        assert!(!capture.wants_body());
        assert_eq!(capture.finish(), Half::Skipped(Skip::BodyTooLarge));
        // Declared too large: not even copied.
        let capture = PrimaryCapture::start(&r, Some(200), [JSON, ("Content-Length", b"9")]);
        assert!(!capture.wants_body());
        // Exactly the cap is compared.
        assert!(matches!(primary(&r, 200, &["12345678"]), Half::Response(_)));
        // The shadow's body is not read over the cap.
        assert!(reads_shadow_body(&r, 8));
        assert!(!reads_shadow_body(&r, 9));
        assert_eq!(
            shadow_half(&r, Outcome::Succeeded(200), [JSON], None),
            Half::Skipped(Skip::BodyTooLarge)
        );
        assert_eq!(
            shadow_half(&r, Outcome::Succeeded(200), [JSON], Some(vec![b'x'; 9])),
            Half::Skipped(Skip::BodyTooLarge)
        );
        let mut c = started(&r);
        c.shadow(1, shadow(&r, 200, "{}"));
        let done = c.primary(1, Half::Skipped(Skip::BodyTooLarge)).unwrap();
        assert_eq!(done.outcome.counter(), Counter::CompareSkippedBodyTooLarge);
    }

    #[test]
    fn the_primarys_skip_comes_first() {
        let r = rules("");
        assert_eq!(
            settle(
                &r,
                &Half::Skipped(Skip::NoPrimaryResponse),
                &Half::Skipped(Skip::ShadowFailed)
            ),
            CompareOutcome::Skipped(Skip::NoPrimaryResponse)
        );
        assert_eq!(
            settle(
                &r,
                &primary(&r, 200, &["{}"]),
                &Half::Skipped(Skip::BodyTooLarge)
            ),
            CompareOutcome::Skipped(Skip::BodyTooLarge)
        );
    }

    #[test]
    fn a_primary_without_a_valid_status_is_not_compared() {
        let r = rules("");
        let capture = PrimaryCapture::start(&r, None, [JSON]);
        assert!(!capture.wants_body());
        assert_eq!(capture.finish(), Half::Skipped(Skip::NoPrimaryResponse));
    }

    #[test]
    fn expiry_ends_what_is_missing_exactly_once() {
        let r = rules("");
        let mut c: Comparisons<u8> = Comparisons::new(8);
        c.begin(1, 0, info(), Arc::clone(&r), 100).unwrap();
        c.begin(2, 1, info(), Arc::clone(&r), 100).unwrap();
        c.begin(3, 2, info(), Arc::clone(&r), 200).unwrap();
        c.primary(1, primary(&r, 200, &["{}"]));
        c.shadow(2, shadow(&r, 200, "{}"));
        assert_eq!(c.expire(99), []);
        let mut done = c.expire(100);
        done.sort_by_key(|d| d.service);
        assert_eq!(
            done.iter()
                .map(|d| (d.service, d.outcome.clone()))
                .collect::<Vec<_>>(),
            [
                (0, CompareOutcome::Skipped(Skip::ShadowFailed)),
                (1, CompareOutcome::Skipped(Skip::NoPrimaryResponse)),
            ]
        );
        assert_eq!(c.len(), 1);
        // Late halves of expired comparisons are ignored.
        assert_eq!(c.shadow(1, shadow(&r, 200, "{}")), None);
        assert_eq!(c.expire(1_000).len(), 1);
        assert!(c.is_empty());
    }

    #[test]
    fn the_number_in_flight_is_bounded() {
        let r = rules("");
        let mut c: Comparisons<()> = Comparisons::new(2);
        assert_eq!(c.begin(1, (), info(), Arc::clone(&r), 100), Ok(()));
        assert_eq!(c.begin(2, (), info(), Arc::clone(&r), 100), Ok(()));
        assert_eq!(
            c.begin(3, (), info(), Arc::clone(&r), 100),
            Err(Skip::InFlightLimit)
        );
        assert_eq!(
            Skip::InFlightLimit.counter(),
            Counter::CompareSkippedInFlightLimit
        );
        // A finished comparison frees its place; an id in flight is not started twice.
        c.primary(1, Half::Skipped(Skip::NoPrimaryResponse));
        assert!(c.shadow(1, Half::Skipped(Skip::ShadowFailed)).is_some());
        assert_eq!(
            c.begin(2, (), info(), Arc::clone(&r), 100),
            Err(Skip::InFlightLimit)
        );
        assert_eq!(c.begin(3, (), info(), Arc::clone(&r), 100), Ok(()));
    }

    #[test]
    fn comparisons_keep_the_rules_they_started_with() {
        let old = rules(r#""ignore":["$.t"]"#);
        let mut c = started(&old);
        drop(old);
        // A configuration update in between: the entry still holds its rules.
        let newer = rules("");
        c.primary(1, primary(&newer, 200, &[r#"{"t":1}"#]));
        let done = c.shadow(1, shadow(&newer, 200, r#"{"t":2}"#)).unwrap();
        assert_eq!(done.outcome, CompareOutcome::Compared(Verdict::Equal));
        assert_eq!(c.rules(1), None);
    }

    #[test]
    fn log_bodies_puts_both_bodies_in_the_line() {
        let r = rules(r#""log_bodies":true"#);
        let mut c = started(&r);
        c.primary(1, primary(&r, 200, &[r#"{"a":1}"#]));
        let done = c.shadow(1, shadow(&r, 200, r#"{"a":2}"#)).unwrap();
        assert!(done
            .warn_line
            .unwrap()
            .ends_with(r#" primary_body={"a":1} shadow_body={"a":2}"#));
    }
}
