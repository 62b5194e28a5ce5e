//! Routing decisions: which service a path belongs to, which key a request is bucketed by, and
//! which side (legacy or new) it goes to.

use crate::bucket::bucket;
use crate::config::{FilterConfig, ServiceConfig};

/// Header Envoy generates on every request; the key of last resort.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Legacy,
    New,
}

impl Side {
    /// Value of the `x-routed-to` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Legacy => "legacy",
            Side::New => "new",
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::Legacy => Side::New,
            Side::New => Side::Legacy,
        }
    }

    pub fn cluster(self, service: &ServiceConfig) -> &str {
        match self {
            Side::Legacy => &service.legacy_cluster,
            Side::New => &service.new_cluster,
        }
    }
}

/// The service owning `path` (`:path`, query included): the longest matching prefix wins.
/// Prefixes match like Envoy's route `prefix`: plain byte prefix of the path without its query.
pub fn match_service(config: &FilterConfig, path: &[u8]) -> Option<usize> {
    let path = match path.iter().position(|b| *b == b'?') {
        Some(q) => path.get(..q).unwrap_or(path),
        None => path,
    };
    config
        .prefixes
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix.as_bytes()))
        .map(|(_, index)| *index)
}

/// The stickiness key of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub bytes: Vec<u8>,
    /// No stickiness header was present: the key fell back to `x-request-id` (or is empty if
    /// even that is missing). Counted as `no_key`.
    pub fallback: bool,
}

/// First present, non-empty header of `stickiness_headers`; otherwise `x-request-id`.
/// `header` looks a request header up by lower-case name and returns its raw bytes.
pub fn select_key<F>(stickiness_headers: &[String], mut header: F) -> Key
where
    F: FnMut(&str) -> Option<Vec<u8>>,
{
    for name in stickiness_headers {
        if let Some(value) = header(name) {
            if !value.is_empty() {
                return Key {
                    bytes: value,
                    fallback: false,
                };
            }
        }
    }
    Key {
        bytes: header(REQUEST_ID_HEADER).unwrap_or_default(),
        fallback: true,
    }
}

/// New iff the kill switch is off, the percentage is positive and the key's bucket is within it.
pub fn decide(service: &ServiceConfig, key: &[u8]) -> Side {
    if service.use_legacy || service.new_percentage == 0 {
        return Side::Legacy;
    }
    if bucket(&service.stickiness_group, key) <= service.new_percentage {
        Side::New
    } else {
        Side::Legacy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilterConfig;

    fn config(json: &str) -> FilterConfig {
        FilterConfig::from_json(json.as_bytes()).unwrap()
    }

    fn two_services() -> FilterConfig {
        config(
            r#"{"services":[
                {"name":"chat","path_prefixes":["/api/chat","/hubs/chat"],
                 "legacy_cluster":"chat_legacy","new_cluster":"chat_new","new_percentage":10},
                {"name":"chatadmin","path_prefixes":["/api/chat/admin"],
                 "legacy_cluster":"a_legacy","new_cluster":"a_new","new_percentage":50}]}"#,
        )
    }

    #[test]
    fn longest_prefix_wins() {
        let c = two_services();
        assert_eq!(match_service(&c, b"/api/chat/admin/x"), Some(1));
        assert_eq!(match_service(&c, b"/api/chat/admin"), Some(1));
        assert_eq!(match_service(&c, b"/api/chat/messages"), Some(0));
        assert_eq!(match_service(&c, b"/api/chat"), Some(0));
        assert_eq!(match_service(&c, b"/hubs/chat?x=1"), Some(0));
    }

    #[test]
    fn unmatched_paths() {
        let c = two_services();
        assert_eq!(match_service(&c, b"/"), None);
        assert_eq!(match_service(&c, b"/api"), None);
        assert_eq!(match_service(&c, b"/API/chat"), None);
        assert_eq!(match_service(&c, b""), None);
        // The prefix must be in the path, not in the query.
        assert_eq!(match_service(&c, b"/other?next=/api/chat"), None);
        assert_eq!(match_service(&c, b"/api/ch\xff"), None);
    }

    #[test]
    fn key_selection_order() {
        let headers = ["x-correlation-id".to_string(), "x-user".to_string()];
        let lookup = |pairs: &'static [(&'static str, &'static [u8])]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_vec())
            }
        };

        let k = select_key(
            &headers,
            lookup(&[("x-correlation-id", b"c1"), ("x-user", b"u1")]),
        );
        assert_eq!(
            k,
            Key {
                bytes: b"c1".to_vec(),
                fallback: false
            }
        );

        // Empty values are skipped.
        let k = select_key(
            &headers,
            lookup(&[("x-correlation-id", b""), ("x-user", b"u1")]),
        );
        assert_eq!(
            k,
            Key {
                bytes: b"u1".to_vec(),
                fallback: false
            }
        );

        // Nothing present: x-request-id, flagged.
        let k = select_key(&headers, lookup(&[("x-request-id", b"r1")]));
        assert_eq!(
            k,
            Key {
                bytes: b"r1".to_vec(),
                fallback: true
            }
        );

        let k = select_key(&headers, lookup(&[]));
        assert_eq!(
            k,
            Key {
                bytes: Vec::new(),
                fallback: true
            }
        );

        // Raw bytes are kept as they are.
        let k = select_key(&headers, lookup(&[("x-user", b"\xff\x80")]));
        assert_eq!(
            k,
            Key {
                bytes: b"\xff\x80".to_vec(),
                fallback: false
            }
        );
    }

    fn service(use_legacy: bool, pct: u8) -> ServiceConfig {
        let mut s = two_services().services.remove(0);
        s.use_legacy = use_legacy;
        s.new_percentage = pct;
        s.stickiness_group = "Feature.flexibleRollout.10".into();
        s
    }

    #[test]
    fn decision_table() {
        // Key "174" has bucket 10 in this group, "499" has bucket 32.
        let cases: &[(bool, u8, &[u8], Side)] = &[
            (false, 0, b"174", Side::Legacy),
            (false, 9, b"174", Side::Legacy),
            (false, 10, b"174", Side::New),
            (false, 11, b"174", Side::New),
            (false, 100, b"174", Side::New),
            (true, 10, b"174", Side::Legacy),
            (true, 100, b"174", Side::Legacy),
            (false, 31, b"499", Side::Legacy),
            (false, 32, b"499", Side::New),
            (true, 32, b"499", Side::Legacy),
            (false, 0, b"499", Side::Legacy),
        ];
        for (use_legacy, pct, key, expected) in cases {
            assert_eq!(
                decide(&service(*use_legacy, *pct), key),
                *expected,
                "use_legacy={use_legacy} pct={pct} key={key:?}"
            );
        }
    }

    #[test]
    fn hundred_percent_sends_every_key_to_new() {
        let s = service(false, 100);
        for key in [&b""[..], b"\xff", b"a", &[b'x'; 8192]] {
            assert_eq!(decide(&s, key), Side::New);
        }
    }

    /// xorshift64*: deterministic keys without a dependency.
    struct Prng(u64);
    impl Prng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn key(&mut self) -> Vec<u8> {
            let len = 1 + (self.next() % 24) as usize;
            (0..len).map(|_| b'!' + (self.next() % 94) as u8).collect()
        }
    }

    #[test]
    fn raising_the_percentage_never_moves_a_key_back_to_legacy() {
        let mut rng = Prng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2_000 {
            let key = rng.key();
            let mut was_new = false;
            for pct in 0..=100u8 {
                let is_new = decide(&service(false, pct), &key) == Side::New;
                assert!(!was_new || is_new, "key {key:?} went back at {pct}%");
                was_new = is_new;
            }
            assert!(was_new, "key {key:?} not new at 100%");
        }
    }

    #[test]
    fn share_routed_to_new_is_within_one_point() {
        const KEYS: usize = 100_000;
        let mut rng = Prng(0x0123_4567_89ab_cdef);
        let buckets: Vec<u8> = (0..KEYS).map(|_| bucket("chat", &rng.key())).collect();
        for pct in [1u8, 10, 50, 99] {
            let s = {
                let mut s = service(false, pct);
                s.stickiness_group = "chat".into();
                s
            };
            let mut rng = Prng(0x0123_4567_89ab_cdef);
            let routed_new = (0..KEYS)
                .filter(|_| decide(&s, &rng.key()) == Side::New)
                .count();
            // The decision agrees with the raw buckets.
            assert_eq!(routed_new, buckets.iter().filter(|b| **b <= pct).count());
            let share = routed_new as f64 * 100.0 / KEYS as f64;
            assert!(
                (share - f64::from(pct)).abs() <= 1.0,
                "{pct}%: {share:.2}% routed to new"
            );
        }
    }
}
