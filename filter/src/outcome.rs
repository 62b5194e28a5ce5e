//! Classifying what came back for a shadow request.

use crate::metrics::Counter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded(u16),
    Failed3xx(u16),
    Failed4xx(u16),
    Failed5xx(u16),
    /// No usable status: the call was reset, could not be dispatched, or answered something
    /// that is not an HTTP status (1xx, garbage).
    FailedReset,
    TimedOut,
}

impl Outcome {
    /// The outcome counters: each shadow counted in `shadow_sent` ends in exactly one of them.
    pub const COUNTERS: [Counter; 6] = [
        Counter::ShadowSucceeded,
        Counter::ShadowFailed3xx,
        Counter::ShadowFailed4xx,
        Counter::ShadowFailed5xx,
        Counter::ShadowFailedReset,
        Counter::ShadowTimedOut,
    ];

    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Succeeded(_))
    }

    pub fn counter(self) -> Counter {
        match self {
            Outcome::Succeeded(_) => Counter::ShadowSucceeded,
            Outcome::Failed3xx(_) => Counter::ShadowFailed3xx,
            Outcome::Failed4xx(_) => Counter::ShadowFailed4xx,
            Outcome::Failed5xx(_) => Counter::ShadowFailed5xx,
            Outcome::FailedReset => Counter::ShadowFailedReset,
            Outcome::TimedOut => Counter::ShadowTimedOut,
        }
    }

    /// The shadow status as logged: the code, or what happened instead.
    pub fn describe(self) -> String {
        match self {
            Outcome::Succeeded(s)
            | Outcome::Failed3xx(s)
            | Outcome::Failed4xx(s)
            | Outcome::Failed5xx(s) => s.to_string(),
            Outcome::FailedReset => "reset".to_string(),
            Outcome::TimedOut => "timeout".to_string(),
        }
    }
}

/// What the root context learns from `on_http_call_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResponse<'a> {
    /// Raw `:status` header; `None` when the callback carried no headers (Envoy reports a
    /// reset of the call that way).
    pub status: Option<&'a [u8]>,
    /// The first bytes of the response body (at most [`BODY_PREFIX_LEN`]), read only for
    /// 503 and 504 to recognise Envoy's own local replies.
    pub body_prefix: &'a [u8],
    /// Milliseconds between dispatch and callback.
    pub elapsed_ms: u64,
    /// The timeout the shadow was dispatched with.
    pub timeout_ms: u64,
}

/// Envoy's local reply when a `dispatch_http_call` timeout fires (measured on Envoy 1.40:
/// `:status 504`, body `upstream request timeout`, after `timeout_ms`).
pub const ENVOY_TIMEOUT_BODY: &[u8] = b"upstream request timeout";
/// Envoy's local reply when the shadow cluster could not be reached or the connection was
/// reset before a response (measured: `:status 503`, body `upstream connect error or
/// disconnect/reset before headers. reset reason: connection failure, ...`).
pub const ENVOY_RESET_BODY: &[u8] = b"upstream connect error or disconnect/reset before headers";
/// Envoy's local reply when the shadow cluster has no healthy host.
pub const ENVOY_NO_HEALTHY_BODY: &[u8] = b"no healthy upstream";
/// How much of a 503/504 body is needed to recognise the replies above.
pub const BODY_PREFIX_LEN: usize = ENVOY_RESET_BODY.len();

/// Envoy's timers and our clock readings are not exact to the millisecond.
const TIMER_SLACK_MS: u64 = 50;

pub fn parse_status(raw: &[u8]) -> Option<u16> {
    if raw.len() != 3 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// Whether the status is one whose body [`classify`] needs to look at.
pub fn needs_body(status: Option<&[u8]>) -> bool {
    matches!(status.and_then(parse_status), Some(503 | 504))
}

/// succeeded (2xx) / failed_3xx / failed_4xx / failed_5xx by status class; Envoy's local
/// replies for a fired timeout → timed_out, for an unreachable or reset shadow → failed_reset;
/// no headers or no valid status → failed_reset.
pub fn classify(response: &CallResponse<'_>) -> Outcome {
    let status = response.status.and_then(parse_status);
    match status {
        Some(504)
            if response.body_prefix.starts_with(ENVOY_TIMEOUT_BODY)
                && response.elapsed_ms.saturating_add(TIMER_SLACK_MS) >= response.timeout_ms =>
        {
            Outcome::TimedOut
        }
        Some(503)
            if response.body_prefix.starts_with(ENVOY_RESET_BODY)
                || response.body_prefix.starts_with(ENVOY_NO_HEALTHY_BODY) =>
        {
            Outcome::FailedReset
        }
        Some(s @ 200..=299) => Outcome::Succeeded(s),
        Some(s @ 300..=399) => Outcome::Failed3xx(s),
        Some(s @ 400..=499) => Outcome::Failed4xx(s),
        Some(s @ 500..=599) => Outcome::Failed5xx(s),
        _ => Outcome::FailedReset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response<'a>(status: Option<&'a [u8]>, body: &'a [u8], elapsed_ms: u64) -> CallResponse<'a> {
        CallResponse {
            status,
            body_prefix: body,
            elapsed_ms,
            timeout_ms: 300,
        }
    }

    #[test]
    fn status_classes() {
        let cases: &[(&[u8], Outcome)] = &[
            (b"200", Outcome::Succeeded(200)),
            (b"201", Outcome::Succeeded(201)),
            (b"299", Outcome::Succeeded(299)),
            (b"301", Outcome::Failed3xx(301)),
            (b"304", Outcome::Failed3xx(304)),
            (b"400", Outcome::Failed4xx(400)),
            (b"409", Outcome::Failed4xx(409)),
            (b"500", Outcome::Failed5xx(500)),
            (b"503", Outcome::Failed5xx(503)),
            (b"504", Outcome::Failed5xx(504)),
            (b"599", Outcome::Failed5xx(599)),
        ];
        for (status, expected) in cases {
            assert_eq!(classify(&response(Some(status), b"", 10)), *expected);
        }
    }

    #[test]
    fn no_usable_status_is_a_reset() {
        for status in [
            None,
            Some(&b""[..]),
            Some(b"abc"),
            Some(b"2000"),
            Some(b"100"),
            Some(b"600"),
            Some(b"\xff\xff\xff"),
        ] {
            assert_eq!(
                classify(&response(status, b"", 10)),
                Outcome::FailedReset,
                "{status:?}"
            );
        }
    }

    #[test]
    fn envoy_timeout_reply_is_a_timeout() {
        let r = response(Some(b"504"), b"upstream request timeout", 301);
        assert_eq!(classify(&r), Outcome::TimedOut);
        // Timer slack.
        let r = response(Some(b"504"), b"upstream request timeout", 260);
        assert_eq!(classify(&r), Outcome::TimedOut);
        // A backend's own 504 long before the timeout, or with another body, is a 5xx.
        let r = response(Some(b"504"), b"upstream request timeout", 20);
        assert_eq!(classify(&r), Outcome::Failed5xx(504));
        let r = response(Some(b"504"), b"gateway timeout", 400);
        assert_eq!(classify(&r), Outcome::Failed5xx(504));
    }

    #[test]
    fn envoy_connect_failure_reply_is_a_reset() {
        let body = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure";
        let r = response(Some(b"503"), body.get(..BODY_PREFIX_LEN).unwrap(), 1);
        assert_eq!(classify(&r), Outcome::FailedReset);
        let r = response(Some(b"503"), b"no healthy upstream", 1);
        assert_eq!(classify(&r), Outcome::FailedReset);
        // The backend's own 503.
        let r = response(Some(b"503"), b"{\"error\":\"maintenance\"}", 1);
        assert_eq!(classify(&r), Outcome::Failed5xx(503));
    }

    #[test]
    fn only_503_and_504_bodies_are_read() {
        assert!(needs_body(Some(b"503")));
        assert!(needs_body(Some(b"504")));
        assert!(!needs_body(Some(b"500")));
        assert!(!needs_body(Some(b"200")));
        assert!(!needs_body(None));
    }

    #[test]
    fn counters_and_descriptions() {
        use crate::metrics::Counter;
        assert_eq!(Outcome::Succeeded(200).counter(), Counter::ShadowSucceeded);
        assert_eq!(Outcome::Failed3xx(302).counter(), Counter::ShadowFailed3xx);
        assert_eq!(Outcome::Failed4xx(404).counter(), Counter::ShadowFailed4xx);
        assert_eq!(Outcome::Failed5xx(500).counter(), Counter::ShadowFailed5xx);
        assert_eq!(Outcome::FailedReset.counter(), Counter::ShadowFailedReset);
        assert_eq!(Outcome::TimedOut.counter(), Counter::ShadowTimedOut);
        for outcome in [
            Outcome::Succeeded(200),
            Outcome::Failed3xx(302),
            Outcome::Failed4xx(404),
            Outcome::Failed5xx(500),
            Outcome::FailedReset,
            Outcome::TimedOut,
        ] {
            assert!(Outcome::COUNTERS.contains(&outcome.counter()));
        }
        assert_eq!(Outcome::Failed4xx(404).describe(), "404");
        assert_eq!(Outcome::FailedReset.describe(), "reset");
        assert_eq!(Outcome::TimedOut.describe(), "timeout");
        assert!(Outcome::Succeeded(204).is_success());
        assert!(!Outcome::TimedOut.is_success());
    }
}
