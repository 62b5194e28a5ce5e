//! The request-time header: one time per client request, stamped by Envoy ahead of the cutover
//! filter, so the primary and the shadow (which carries the client's request headers) store the
//! same server-generated timestamps.

use axum::http::HeaderMap;
use chrono::{DateTime, SubsecRound, Utc};

/// Header Envoy stamps on every request (`%START_TIME(%Y-%m-%dT%H:%M:%E6SZ)%`, RFC 3339 UTC with
/// microseconds, overwriting any value a client sent).
pub const REQUEST_TIME_HEADER: &str = "x-cutover-request-time";

/// Where a request's time came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The [`REQUEST_TIME_HEADER`]: the same on primary and shadow.
    Header,
    /// This process's clock, because the header was absent (not behind the cutover's Envoy):
    /// primary and shadow would store different times.
    Clock,
}

/// Why a request's time could not be read.
#[derive(Debug, thiserror::Error)]
#[error("header {REQUEST_TIME_HEADER} is not an RFC 3339 time (e.g. 2026-12-01T18:35:25.212209Z)")]
pub struct InvalidRequestTime;

/// The time of this request, truncated to PostgreSQL's precision (microseconds) so the value
/// answered and the value stored are the same.
pub fn request_time(headers: &HeaderMap) -> Result<(DateTime<Utc>, Source), InvalidRequestTime> {
    match headers.get(REQUEST_TIME_HEADER) {
        None => Ok((Utc::now().trunc_subsecs(6), Source::Clock)),
        Some(value) => {
            let text = value.to_str().map_err(|_| InvalidRequestTime)?;
            let time = DateTime::parse_from_rfc3339(text.trim()).map_err(|_| InvalidRequestTime)?;
            Ok((time.with_timezone(&Utc).trunc_subsecs(6), Source::Header))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            REQUEST_TIME_HEADER,
            HeaderValue::from_bytes(value).expect("valid header bytes"),
        );
        headers
    }

    #[test]
    fn reads_envoys_format() {
        let (time, source) = request_time(&with(b"2026-12-01T18:35:25.212209Z")).expect("valid");
        assert_eq!(source, Source::Header);
        assert_eq!(time.to_rfc3339(), "2026-12-01T18:35:25.212209+00:00");
    }

    #[test]
    fn truncates_below_microseconds_and_converts_offsets() {
        let (time, _) = request_time(&with(b"2026-12-01T20:35:25.2122099+02:00")).expect("valid");
        assert_eq!(time.to_rfc3339(), "2026-12-01T18:35:25.212209+00:00");
    }

    #[test]
    fn absent_header_falls_back_to_the_clock() {
        let before = Utc::now().trunc_subsecs(6);
        let (time, source) = request_time(&HeaderMap::new()).expect("clock");
        assert_eq!(source, Source::Clock);
        assert!(time >= before);
    }

    #[test]
    fn rejects_garbage() {
        assert!(request_time(&with(b"yesterday")).is_err());
        assert!(request_time(&with(b"\xff")).is_err());
    }
}
