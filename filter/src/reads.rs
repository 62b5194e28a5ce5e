//! Read mirroring (`shadow_reads`) for a dark launch: which reads get a shadow, and which
//! mirrored requests have their responses compared.
//!
//! The sample is chosen from the request id (`x-request-id`, which Envoy sets on every
//! request), so one request is either in it or not wherever it is decided, and the share in the
//! sample converges on `percentage`. The id is hashed like a routing key but in a group of its
//! own (`<stickiness_group>.shadow_reads`), so the sample is independent of the routing split
//! even for requests that are routed by their request id.

use crate::bucket::bucket;
use crate::config::{ServiceConfig, ShadowReadsConfig};

/// The header the sample is drawn from.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// How a request is mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mirrored {
    /// Every request of a `dual_write` method.
    Write,
    /// A sampled request of a `shadow_reads` method.
    Read,
}

/// Whether a read with this request id is in the sample: the bucket (1..=100) of
/// `murmur3("<stickiness_group>.shadow_reads:<request id>")` is at most `percentage`. A request
/// without an id is not sampled.
pub fn in_sample(reads: &ShadowReadsConfig, request_id: &[u8]) -> bool {
    !request_id.is_empty() && bucket(&reads.sampling_group, request_id) <= reads.percentage
}

/// Whether a request of `method` with `request_id` gets a read shadow.
pub fn is_read_mirrored(service: &ServiceConfig, method: &[u8], request_id: Option<&[u8]>) -> bool {
    service.shadow_reads.as_ref().is_some_and(|reads| {
        reads.methods.iter().any(|m| m.as_bytes() == method)
            && request_id.is_some_and(|id| in_sample(reads, id))
    })
}

/// Whether the responses of a request mirrored as `mirrored` are compared: reads always when
/// the service has `compare`, writes only with `compare.writes`.
pub fn is_compared(service: &ServiceConfig, mirrored: Mirrored) -> bool {
    service
        .compare
        .as_ref()
        .is_some_and(|compare| match mirrored {
            Mirrored::Read => true,
            Mirrored::Write => compare.writes,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_service as service;
    use crate::routing::{decide, Side};

    /// Request ids shaped like Envoy's (UUID v4 text), from a fixed-seed generator.
    fn request_ids(n: usize) -> Vec<Vec<u8>> {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..n)
            .map(|_| {
                let (a, b) = (next(), next());
                format!(
                    "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                    a >> 32,
                    (a >> 16) & 0xffff,
                    a & 0xfff,
                    b >> 48,
                    b & 0xffff_ffff_ffff
                )
                .into_bytes()
            })
            .collect()
    }

    /// `count` out of `n` is within 3 standard deviations of the share `p` (binomial).
    fn assert_share_within_3_sigma(count: usize, n: usize, p: f64) {
        let expected = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (count as f64 - expected).abs() <= 3.0 * sigma,
            "{count} of {n}, expected {expected} ± {}",
            3.0 * sigma
        );
    }

    #[test]
    fn only_configured_read_methods_are_mirrored() {
        let s = service(r#","shadow_reads":{"percentage":100,"methods":["get","HEAD"]}"#);
        assert!(is_read_mirrored(&s, b"GET", Some(b"id-1")));
        assert!(is_read_mirrored(&s, b"HEAD", Some(b"id-1")));
        assert!(!is_read_mirrored(&s, b"OPTIONS", Some(b"id-1")));
        assert!(!is_read_mirrored(&s, b"get", Some(b"id-1")));
        assert!(!is_read_mirrored(&s, b"POST", Some(b"id-1")));
        // No request id (or an empty one): not sampled, whatever the percentage.
        assert!(!is_read_mirrored(&s, b"GET", None));
        assert!(!is_read_mirrored(&s, b"GET", Some(b"")));
        assert!(!is_read_mirrored(&service(""), b"GET", Some(b"id-1")));
    }

    #[test]
    fn zero_and_hundred_percent_are_exact() {
        let none = service(r#","shadow_reads":{"percentage":0}"#);
        let all = service(r#","shadow_reads":{"percentage":100}"#);
        for id in request_ids(2_000) {
            assert!(!is_read_mirrored(&none, b"GET", Some(&id)));
            assert!(is_read_mirrored(&all, b"GET", Some(&id)));
        }
    }

    #[test]
    fn the_sample_is_a_function_of_the_request_id() {
        let s = service(r#","shadow_reads":{"percentage":37}"#);
        for id in request_ids(500) {
            let first = is_read_mirrored(&s, b"GET", Some(&id));
            assert_eq!(first, is_read_mirrored(&s, b"GET", Some(&id)));
            assert_eq!(
                first,
                bucket("chat.shadow_reads", &id) <= 37,
                "the documented hash input"
            );
        }
    }

    #[test]
    fn the_sampled_share_is_the_percentage() {
        let ids = request_ids(100_000);
        for pct in [1u8, 10, 50, 90] {
            let s = service(&format!(r#","shadow_reads":{{"percentage":{pct}}}"#));
            let sampled = ids
                .iter()
                .filter(|id| is_read_mirrored(&s, b"GET", Some(id)))
                .count();
            assert_share_within_3_sigma(sampled, ids.len(), f64::from(pct) / 100.0);
        }
    }

    #[test]
    fn the_sample_is_independent_of_routing_by_the_same_id() {
        // Requests without a stickiness key are routed by their request id; with the routing
        // group the sample would be exactly the requests routed to new.
        let s = service(r#","new_percentage":10,"shadow_reads":{"percentage":10}"#);
        let ids = request_ids(50_000);
        let routed_new: Vec<&Vec<u8>> = ids
            .iter()
            .filter(|id| decide(&s, id) == Side::New)
            .collect();
        let sampled_of_new = routed_new
            .iter()
            .filter(|id| is_read_mirrored(&s, b"GET", Some(id)))
            .count();
        assert_share_within_3_sigma(sampled_of_new, routed_new.len(), 0.10);
    }

    #[test]
    fn reads_are_compared_writes_only_when_asked() {
        let reads_only = service(
            r#","shadow_reads":{"percentage":5},"dual_write":{},"compare":{"ignore":["$.t"]}"#,
        );
        assert!(is_compared(&reads_only, Mirrored::Read));
        assert!(!is_compared(&reads_only, Mirrored::Write));
        let writes_too = service(r#","dual_write":{},"compare":{"writes":true}"#);
        assert!(is_compared(&writes_too, Mirrored::Write));
        assert!(is_compared(&writes_too, Mirrored::Read));
        let no_compare = service(r#","shadow_reads":{"percentage":5}"#);
        assert!(!is_compared(&no_compare, Mirrored::Read));
        assert!(!is_compared(&no_compare, Mirrored::Write));
    }
}
