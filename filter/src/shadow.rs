//! Bookkeeping for shadow requests, one tracker per VM (shared by every root context and HTTP
//! context of that VM; see [`crate::root`]).
//!
//! An HTTP context prepares a shadow and hands it over with [`Tracker::submit`]; a root context
//! takes it from its queue on its tick, dispatches it and reports the outcome
//! ([`Tracker::shadow_outcome`]). The HTTP context reports the primary's status
//! ([`Tracker::primary_status`]). Whichever arrives second settles the entry: a [`Settled`] says
//! whether the two disagree. Entries never outlive their deadline ([`Tracker::expire`]) and
//! their number is bounded. `S` is what the glue counts a shadow's outcome under (its service's
//! metric ids); the tracker only carries it.

use crate::outcome::Outcome;
use std::collections::HashMap;

/// What a log line about a shadow needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowInfo {
    pub service: String,
    pub method: String,
    /// `:path` with the query, lossily decoded for logs.
    pub path: String,
    /// The stickiness key, lossily decoded for logs.
    pub correlation_id: String,
}

/// A prepared shadow request, waiting for the root context's tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowRequest {
    pub id: u64,
    pub cluster: String,
    /// Includes `:method`, `:path`, `:authority`; values are raw bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    /// No response headers yet.
    Waiting,
    Status(u16),
    /// The client stream ended without a response (client reset, or the stream was torn down).
    NoResponse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry<S> {
    info: ShadowInfo,
    service: S,
    /// The root context that dispatches (or dispatched) this shadow.
    owner: u32,
    primary: Primary,
    shadow: Option<Outcome>,
    deadline_ms: u64,
}

/// A shadow whose outcome and primary status are both known (or that expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled<S> {
    pub info: ShadowInfo,
    pub service: S,
    /// The root context that dispatched it.
    pub owner: u32,
    /// `None`: the client stream ended without a response, or the entry expired first.
    pub primary_status: Option<u16>,
    /// `None` only for an entry that expired without an outcome (a lost callback).
    pub shadow: Option<Outcome>,
    /// Exactly one of primary and shadow answered 2xx (counted as `shadow_mismatch`).
    pub mismatch: bool,
}

impl<S> Settled<S> {
    /// Failures and mismatches are logged at warn.
    pub fn is_noteworthy(&self) -> bool {
        self.mismatch || !matches!(self.shadow, Some(Outcome::Succeeded(_)))
    }
}

#[derive(Debug)]
pub struct Tracker<S> {
    next_id: u64,
    max_entries: usize,
    /// Extra time after the shadow timeout before an unsettled entry is dropped.
    grace_ms: u64,
    entries: HashMap<u64, Entry<S>>,
    /// Dispatch token → shadow id and the dispatch time.
    tokens: HashMap<u32, Dispatched>,
}

/// A shadow on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatched {
    pub id: u64,
    pub at_ms: u64,
    pub timeout_ms: u64,
}

/// Why a shadow could not be submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// `max_entries` shadows are in flight.
    Full,
}

impl<S> Tracker<S> {
    pub fn new(max_entries: usize, grace_ms: u64) -> Self {
        Self {
            next_id: 1,
            max_entries,
            grace_ms,
            entries: HashMap::new(),
            tokens: HashMap::new(),
        }
    }

    /// Starts tracking a shadow that root context `owner` will dispatch (its `id` is assigned
    /// here). Returns the id the HTTP context reports the primary status under.
    pub fn submit(
        &mut self,
        request: &mut ShadowRequest,
        info: ShadowInfo,
        service: S,
        owner: u32,
        now_ms: u64,
    ) -> Result<u64, SubmitError> {
        if self.entries.len() >= self.max_entries {
            return Err(SubmitError::Full);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        request.id = id;
        let deadline_ms = now_ms
            .saturating_add(request.timeout_ms)
            .saturating_add(self.grace_ms);
        self.entries.insert(
            id,
            Entry {
                info,
                service,
                owner,
                primary: Primary::Waiting,
                shadow: None,
                deadline_ms,
            },
        );
        Ok(id)
    }

    /// The root context that dispatches shadow `id`, while it is tracked.
    pub fn owner_of(&self, id: u64) -> Option<u32> {
        self.entries.get(&id).map(|e| e.owner)
    }

    /// Forgets `token` (its call answered); the shadow it belonged to, if any.
    pub fn take_token(&mut self, token: u32) -> Option<Dispatched> {
        self.tokens.remove(&token)
    }

    /// The service handle of shadow `id`, while it is tracked.
    pub fn service_of(&self, id: u64) -> Option<&S> {
        self.entries.get(&id).map(|e| &e.service)
    }

    /// Shadows submitted and not yet settled.
    pub fn in_flight(&self) -> usize {
        self.entries.len()
    }

    /// The shadow `id` was dispatched under `token` at `at_ms` with `timeout_ms`.
    pub fn dispatched(&mut self, id: u64, token: u32, at_ms: u64, timeout_ms: u64) {
        self.tokens.insert(
            token,
            Dispatched {
                id,
                at_ms,
                timeout_ms,
            },
        );
    }

    /// The shadow dispatched under `token`, if it belongs to this tracker.
    pub fn dispatched_as(&self, token: u32) -> Option<Dispatched> {
        self.tokens.get(&token).copied()
    }

    /// Whether `token` belongs to a shadow of this tracker.
    pub fn knows_token(&self, token: u32) -> bool {
        self.tokens.contains_key(&token)
    }

    /// The outcome of the shadow dispatched under `token`.
    pub fn token_outcome(&mut self, token: u32, outcome: Outcome) -> Option<Settled<S>> {
        let dispatched = self.tokens.remove(&token)?;
        self.shadow_outcome(dispatched.id, outcome)
    }

    /// The outcome of shadow `id` (also for shadows that could not be dispatched).
    pub fn shadow_outcome(&mut self, id: u64, outcome: Outcome) -> Option<Settled<S>> {
        let entry = self.entries.get_mut(&id)?;
        entry.shadow = Some(outcome);
        self.settle_if_complete(id)
    }

    /// The primary's status for shadow `id`; `None` when the stream ended without a response.
    /// A second report for the same id is ignored.
    pub fn primary_status(&mut self, id: u64, status: Option<u16>) -> Option<Settled<S>> {
        let entry = self.entries.get_mut(&id)?;
        if entry.primary != Primary::Waiting {
            return None;
        }
        entry.primary = match status {
            Some(s) => Primary::Status(s),
            None => Primary::NoResponse,
        };
        self.settle_if_complete(id)
    }

    /// Drops entries past their deadline; returns them settled with what is known.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Settled<S>> {
        let expired: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.deadline_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        let mut settled: Vec<Settled<S>> = expired
            .into_iter()
            .filter_map(|id| self.entries.remove(&id).map(|e| (id, e)))
            .map(|(id, e)| {
                self.tokens.retain(|_, d| d.id != id);
                Self::settled(e)
            })
            .collect();
        settled.sort_by(|a, b| a.info.path.cmp(&b.info.path));
        settled
    }

    fn settle_if_complete(&mut self, id: u64) -> Option<Settled<S>> {
        let entry = self.entries.get(&id)?;
        if entry.shadow.is_none() || entry.primary == Primary::Waiting {
            return None;
        }
        self.entries.remove(&id).map(Self::settled)
    }

    fn settled(entry: Entry<S>) -> Settled<S> {
        let primary_status = match entry.primary {
            Primary::Status(s) => Some(s),
            Primary::Waiting | Primary::NoResponse => None,
        };
        let mismatch = match (primary_status, entry.shadow) {
            (Some(p), Some(shadow)) => is_2xx(p) != shadow.is_success(),
            _ => false,
        };
        Settled {
            info: entry.info,
            service: entry.service,
            owner: entry.owner,
            primary_status,
            shadow: entry.shadow,
            mismatch,
        }
    }
}

pub fn is_2xx(status: u16) -> bool {
    (200..300).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(path: &str) -> ShadowInfo {
        ShadowInfo {
            service: "chat".into(),
            method: "POST".into(),
            path: path.into(),
            correlation_id: "c1".into(),
        }
    }

    fn request(timeout_ms: u64) -> ShadowRequest {
        ShadowRequest {
            id: 0,
            cluster: "chat_legacy".into(),
            headers: vec![(":method".into(), b"POST".to_vec())],
            body: b"{}".to_vec(),
            timeout_ms,
        }
    }

    /// Submits a shadow of service "chat" dispatched by root 1.
    fn submit(
        t: &mut Tracker<&'static str>,
        timeout_ms: u64,
        path: &str,
        now_ms: u64,
    ) -> Result<u64, SubmitError> {
        let mut r = request(timeout_ms);
        let id = t.submit(&mut r, info(path), "chat", 1, now_ms)?;
        assert_eq!(r.id, id);
        Ok(id)
    }

    #[test]
    fn submit_assigns_ids() {
        let mut t = Tracker::new(10, 1000);
        let a = submit(&mut t, 100, "/a", 0).unwrap();
        let b = submit(&mut t, 100, "/b", 0).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.service_of(a), Some(&"chat"));
    }

    #[test]
    fn settles_when_the_shadow_answers_after_the_primary() {
        let mut t = Tracker::new(10, 1000);
        let id = submit(&mut t, 100, "/a", 0).unwrap();
        t.dispatched(id, 7, 0, 100);
        assert_eq!(t.primary_status(id, Some(201)), None);
        let settled = t.token_outcome(7, Outcome::Failed5xx(500)).unwrap();
        assert_eq!(settled.primary_status, Some(201));
        assert_eq!(settled.shadow, Some(Outcome::Failed5xx(500)));
        assert!(settled.mismatch);
        assert!(settled.is_noteworthy());
        assert_eq!(t.in_flight(), 0);
        assert!(!t.knows_token(7));
    }

    #[test]
    fn settles_when_the_primary_answers_after_the_shadow() {
        let mut t = Tracker::new(10, 1000);
        let id = submit(&mut t, 100, "/a", 0).unwrap();
        t.dispatched(id, 3, 0, 100);
        assert_eq!(t.token_outcome(3, Outcome::Succeeded(200)), None);
        let settled = t.primary_status(id, Some(200)).unwrap();
        assert!(!settled.mismatch);
        assert!(!settled.is_noteworthy());
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn mismatch_is_2xx_xor_2xx() {
        let cases = [
            (200, Outcome::Succeeded(204), false),
            (201, Outcome::Failed4xx(409), true),
            (500, Outcome::Succeeded(200), true),
            (503, Outcome::Failed5xx(500), false),
            (404, Outcome::Failed4xx(404), false),
            (200, Outcome::TimedOut, true),
            (200, Outcome::FailedReset, true),
            (302, Outcome::Failed3xx(302), false),
            (502, Outcome::TimedOut, false),
        ];
        for (primary, shadow, mismatch) in cases {
            let mut t = Tracker::new(10, 1000);
            let id = submit(&mut t, 100, "/a", 0).unwrap();
            t.shadow_outcome(id, shadow);
            let settled = t.primary_status(id, Some(primary)).unwrap();
            assert_eq!(settled.mismatch, mismatch, "{primary} vs {shadow:?}");
        }
    }

    #[test]
    fn a_stream_without_response_settles_without_mismatch() {
        let mut t = Tracker::new(10, 1000);
        let id = submit(&mut t, 100, "/a", 0).unwrap();
        t.primary_status(id, None);
        let settled = t.shadow_outcome(id, Outcome::Succeeded(200)).unwrap();
        assert_eq!(settled.primary_status, None);
        assert!(!settled.mismatch);
    }

    #[test]
    fn the_first_primary_report_wins() {
        let mut t = Tracker::new(10, 1000);
        let id = submit(&mut t, 100, "/a", 0).unwrap();
        t.primary_status(id, Some(200));
        t.primary_status(id, None);
        let settled = t.shadow_outcome(id, Outcome::Succeeded(200)).unwrap();
        assert_eq!(settled.primary_status, Some(200));
    }

    #[test]
    fn unknown_ids_and_tokens_are_ignored() {
        let mut t: Tracker<&str> = Tracker::new(10, 1000);
        assert_eq!(t.primary_status(99, Some(200)), None);
        assert_eq!(t.token_outcome(99, Outcome::Succeeded(200)), None);
        assert_eq!(t.shadow_outcome(99, Outcome::Succeeded(200)), None);
    }

    #[test]
    fn entries_expire_after_timeout_plus_grace() {
        let mut t = Tracker::new(10, 1000);
        let id = submit(&mut t, 500, "/a", 10_000).unwrap();
        t.dispatched(id, 1, 10_000, 500);
        assert_eq!(
            t.dispatched_as(1),
            Some(Dispatched {
                id,
                at_ms: 10_000,
                timeout_ms: 500
            })
        );
        let other = submit(&mut t, 5000, "/b", 10_000).unwrap();
        assert!(t.expire(11_499).is_empty());
        let expired = t.expire(11_500);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].info.path, "/a");
        assert_eq!(expired[0].shadow, None);
        assert!(expired[0].is_noteworthy());
        assert!(!t.knows_token(1));
        assert_eq!(t.in_flight(), 1);
        // A late report for an expired entry is ignored.
        assert_eq!(t.token_outcome(1, Outcome::Succeeded(200)), None);
        assert!(t.primary_status(other, Some(200)).is_none());
    }

    #[test]
    fn the_number_of_entries_is_bounded() {
        let mut t = Tracker::new(2, 1000);
        submit(&mut t, 100, "/a", 0).unwrap();
        let b = submit(&mut t, 100, "/b", 0).unwrap();
        assert_eq!(submit(&mut t, 100, "/c", 0), Err(SubmitError::Full));
        t.shadow_outcome(b, Outcome::Succeeded(200));
        t.primary_status(b, Some(200));
        assert!(submit(&mut t, 100, "/c", 0).is_ok());
    }
}
