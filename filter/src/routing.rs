//! Routing decisions: which service a path belongs to, which key a request is bucketed by, and
//! which side (legacy or new) it goes to.

use crate::bucket::bucket;
use crate::config::{FilterConfig, OverrideSource, ServiceConfig};
use crate::metrics::Counter;

/// Header Envoy generates on every request; the key of last resort.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Request and response header naming the side a matched request went to.
pub const ROUTED_TO_HEADER: &str = "x-routed-to";
/// Request header carrying the cookies (RFC 6265 section 5.4); it may occur more than once.
pub const COOKIE_HEADER: &str = "cookie";

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

/// Request headers as Envoy hands them to the filter. A name may occur more than once (the
/// `Cookie` header does, one per cookie-string, when the client sends it so), so lookups expose
/// every value. Names are compared ASCII case-insensitively; values are raw bytes.
pub trait RequestHeaders {
    /// The first value of header `name`.
    fn first<'a>(&'a self, name: &str) -> Option<&'a [u8]>;

    /// Every value of header `name`, in the order received.
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a;
}

/// Owned pairs, as the tests build them (the filter reads [`crate::header_map::HeaderPairs`]).
#[cfg(test)]
impl RequestHeaders for [(String, Vec<u8>)] {
    fn first<'a>(&'a self, name: &str) -> Option<&'a [u8]> {
        self.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }
}

/// The stickiness key of a request, borrowed from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'h> {
    pub bytes: &'h [u8],
    /// No stickiness header or cookie was present: the key is `x-request-id` (or empty if even
    /// that is missing). Counted as `no_key`.
    pub fallback: bool,
}

/// The key, from the first present, non-empty source in this order: the stickiness headers
/// other than `x-request-id`, in order; the stickiness cookies, in order; `x-request-id`
/// (Envoy generates one per request, so it keys nothing sticky: the fallback).
pub fn select_key<'h, H: RequestHeaders + ?Sized>(
    config: &FilterConfig,
    headers: &'h H,
) -> Key<'h> {
    let found = |bytes: &'h [u8]| Key {
        bytes,
        fallback: false,
    };
    for name in &config.stickiness_headers {
        if name == REQUEST_ID_HEADER {
            continue;
        }
        if let Some(value) = headers.first(name).filter(|v| !v.is_empty()) {
            return found(value);
        }
    }
    for name in &config.stickiness_cookies {
        if let Some(value) =
            cookie::find(headers.values(COOKIE_HEADER), name.as_bytes()).filter(|v| !v.is_empty())
        {
            return found(value);
        }
    }
    Key {
        bytes: headers.first(REQUEST_ID_HEADER).unwrap_or_default(),
        fallback: true,
    }
}

/// The side named by the first override rule of `service` that matches the request.
pub fn matching_override<H: RequestHeaders + ?Sized>(
    service: &ServiceConfig,
    headers: &H,
) -> Option<Side> {
    service
        .overrides
        .iter()
        .find(|rule| {
            let value = match &rule.source {
                OverrideSource::Header(name) => headers.first(name),
                OverrideSource::Cookie(name) => {
                    cookie::find(headers.values(COOKIE_HEADER), name.as_bytes())
                }
            };
            value == Some(rule.value.as_bytes())
        })
        .map(|rule| rule.side)
}

/// Why a request got its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Kill switch, percentage and bucket (`decide`).
    Bucket,
    /// An override rule matched.
    Override,
}

/// The routing of one matched request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'h> {
    pub side: Side,
    pub decision: Decision,
    /// Also the correlation id logged for the request's shadow.
    pub key: Key<'h>,
}

impl Route<'_> {
    /// The counters this request increments: exactly one `routed_*`, and `no_key` when the key
    /// fell back to `x-request-id`. Overrides are not in `routed_new` / `routed_legacy`, which
    /// stay the bucketing split that `cutover-verify` compares with `new_percentage`.
    pub fn counters(&self) -> impl Iterator<Item = Counter> {
        let routed = match (self.decision, self.side) {
            (Decision::Bucket, Side::Legacy) => Counter::RoutedLegacy,
            (Decision::Bucket, Side::New) => Counter::RoutedNew,
            (Decision::Override, Side::Legacy) => Counter::RoutedOverrideLegacy,
            (Decision::Override, Side::New) => Counter::RoutedOverrideNew,
        };
        [Some(routed), self.key.fallback.then_some(Counter::NoKey)]
            .into_iter()
            .flatten()
    }
}

/// Routes a request of `service`: the kill switch first (everything to legacy), then the
/// override rules (first match wins), then the bucket of the key.
pub fn route<'h, H: RequestHeaders + ?Sized>(
    config: &FilterConfig,
    service: &ServiceConfig,
    headers: &'h H,
) -> Route<'h> {
    let key = select_key(config, headers);
    let overridden = if service.use_legacy {
        None
    } else {
        matching_override(service, headers)
    };
    match overridden {
        Some(side) => Route {
            side,
            decision: Decision::Override,
            key,
        },
        None => Route {
            side: decide(service, key.bytes),
            decision: Decision::Bucket,
            key,
        },
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

/// The `Cookie` request header (RFC 6265 section 4.2): `name=value` pairs separated by `;`.
///
/// Hand-written rather than a crate: the maintained `cookie` crate parses `&str` only (one
/// non-UTF-8 byte fails the whole header), builds a full `Set-Cookie` struct per pair, pulls
/// `time` into the `.wasm`, and its parse path has an `expect`. This parser borrows, never
/// allocates, and cannot panic (no indexing; clippy denies it).
pub mod cookie {
    /// `value` is a cookie-value without its optional quotes: RFC 6265 cookie-octets (no
    /// whitespace, `"`, `,`, `;`, `\\` or control characters), plus bytes 0x80-0xFF, which
    /// browsers send for UTF-8 values and Envoy forwards.
    pub fn is_cookie_value(value: &[u8]) -> bool {
        value.iter().all(|b| {
            matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
        })
    }

    /// A cookie-name: an HTTP token.
    fn is_cookie_name(name: &[u8]) -> bool {
        !name.is_empty()
            && name.iter().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'!' | b'#'
                            | b'$'
                            | b'%'
                            | b'&'
                            | b'\''
                            | b'*'
                            | b'+'
                            | b'-'
                            | b'.'
                            | b'^'
                            | b'_'
                            | b'`'
                            | b'|'
                            | b'~'
                    )
            })
    }

    /// One `name=value` pair, whitespace around name and value removed and the value's double
    /// quotes stripped; `None` if the pair is malformed (no `=`, a bad name, a bad value).
    fn pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
        let eq = pair.iter().position(|b| *b == b'=')?;
        let name = pair.get(..eq)?.trim_ascii();
        let raw = pair.get(eq.checked_add(1)?..)?.trim_ascii();
        let value = match raw.strip_prefix(b"\"") {
            Some(quoted) => quoted.strip_suffix(b"\"")?,
            None => raw,
        };
        (is_cookie_name(name) && is_cookie_value(value)).then_some((name, value))
    }

    /// The value of the first well-formed occurrence of cookie `name` (case-sensitive) across
    /// `headers` (the `Cookie` header values, in order). Malformed pairs are skipped.
    pub fn find<'a>(headers: impl Iterator<Item = &'a [u8]>, name: &[u8]) -> Option<&'a [u8]> {
        headers
            .flat_map(|header| header.split(|b| *b == b';'))
            .filter_map(pair)
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value)
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

    /// A header map as owned pairs.
    fn headers(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect()
    }

    fn keyed(bytes: &[u8]) -> Key<'_> {
        Key {
            bytes,
            fallback: false,
        }
    }

    fn with_keys(stickiness_headers: &str, stickiness_cookies: &str) -> FilterConfig {
        config(&format!(
            r#"{{"stickiness_headers":{stickiness_headers},"stickiness_cookies":{stickiness_cookies},
                "services":[{{"name":"chat","path_prefixes":["/api/chat"],
                "legacy_cluster":"chat_legacy","new_cluster":"chat_new","new_percentage":50}}]}}"#
        ))
    }

    #[test]
    fn key_selection_order() {
        let c = with_keys(r#"["x-correlation-id","x-user"]"#, "[]");
        let h = headers(&[("x-correlation-id", b"c1"), ("x-user", b"u1")]);
        assert_eq!(select_key(&c, h.as_slice()), keyed(b"c1"));

        // Empty values are skipped.
        let h = headers(&[("x-correlation-id", b""), ("x-user", b"u1")]);
        assert_eq!(select_key(&c, h.as_slice()), keyed(b"u1"));

        // Names compare case-insensitively.
        let h = headers(&[("X-User", b"u2")]);
        assert_eq!(select_key(&c, h.as_slice()), keyed(b"u2"));

        // Nothing present: x-request-id, flagged.
        let h = headers(&[("x-request-id", b"r1")]);
        let fallback = Key {
            bytes: b"r1",
            fallback: true,
        };
        assert_eq!(select_key(&c, h.as_slice()), fallback);

        let h = headers(&[]);
        let empty = Key {
            bytes: b"",
            fallback: true,
        };
        assert_eq!(select_key(&c, h.as_slice()), empty);

        // Raw bytes are kept as they are.
        let h = headers(&[("x-user", b"\xff\x80")]);
        assert_eq!(select_key(&c, h.as_slice()), keyed(b"\xff\x80"));
    }

    #[test]
    fn request_id_is_the_last_resort_wherever_it_is_listed() {
        let c = with_keys(r#"["x-request-id","x-correlation-id"]"#, r#"["sid"]"#);
        let h = headers(&[
            ("x-request-id", b"generated"),
            ("cookie", b"sid=s1"),
            ("x-correlation-id", b"c1"),
        ]);
        assert_eq!(select_key(&c, h.as_slice()), keyed(b"c1"));
        let h = headers(&[("x-request-id", b"generated"), ("cookie", b"sid=s1")]);
        assert_eq!(select_key(&c, h.as_slice()), keyed(b"s1"));
        let h = headers(&[("x-request-id", b"generated"), ("cookie", b"other=o")]);
        let fallback = Key {
            bytes: b"generated",
            fallback: true,
        };
        assert_eq!(select_key(&c, h.as_slice()), fallback);
    }

    #[test]
    fn cookies_come_after_headers_and_in_their_own_order() {
        let c = with_keys(r#"["x-correlation-id"]"#, r#"["session","visitor"]"#);
        let both = headers(&[("cookie", b"visitor=v1; session=s1")]);
        assert_eq!(select_key(&c, both.as_slice()), keyed(b"s1"));
        let visitor_only = headers(&[("cookie", b"visitor=v1")]);
        assert_eq!(select_key(&c, visitor_only.as_slice()), keyed(b"v1"));
        let header_wins = headers(&[("cookie", b"session=s1"), ("x-correlation-id", b"c1")]);
        assert_eq!(select_key(&c, header_wins.as_slice()), keyed(b"c1"));
        // An empty cookie is no key: the next source.
        let empty = headers(&[("cookie", b"session=; visitor=v2")]);
        assert_eq!(select_key(&c, empty.as_slice()), keyed(b"v2"));
        // Cookie names are case-sensitive.
        let wrong_case = headers(&[("cookie", b"Session=s1"), ("x-request-id", b"r")]);
        assert!(select_key(&c, wrong_case.as_slice()).fallback);
        // Without stickiness_cookies a Cookie header is not looked at.
        let c = with_keys(r#"["x-correlation-id"]"#, "[]");
        assert!(select_key(&c, both.as_slice()).fallback);
    }

    #[test]
    fn cookie_parsing() {
        let find = |values: &[&'static [u8]], name: &str| {
            cookie::find(values.iter().copied(), name.as_bytes())
        };
        /// Cookie header values, cookie name, expected value.
        type Case<'a> = (&'a [&'a [u8]], &'a str, Option<&'a [u8]>);
        let cases: &[Case] = &[
            (&[b"a=1"], "a", Some(b"1")),
            (&[b"a=1; b=2; c=3"], "b", Some(b"2")),
            (&[b"a=1;b=2"], "b", Some(b"2")),
            (&[b"  a = 1 ;  b=2  "], "a", Some(b"1")),
            (&[b"a=1\t;\tb=2"], "b", Some(b"2")),
            // Several Cookie headers: searched in order.
            (&[b"a=1", b"b=2"], "b", Some(b"2")),
            // The first occurrence wins, within a header and across headers.
            (&[b"a=1; a=2"], "a", Some(b"1")),
            (&[b"a=1", b"a=2"], "a", Some(b"1")),
            // Quoted values lose their quotes.
            (&[b"a=\"q 1\""], "a", None),
            (&[b"a=\"q1\""], "a", Some(b"q1")),
            (&[b"a=\"\""], "a", Some(b"")),
            // The value may contain '='.
            (&[b"a=x=y"], "a", Some(b"x=y")),
            // UTF-8 / obs-text bytes are kept.
            (&[b"a=\xc3\xa9\xff"], "a", Some(b"\xc3\xa9\xff")),
            // Names are exact and case-sensitive; a prefix is not a match.
            (&[b"ab=1"], "a", None),
            (&[b"A=1"], "a", None),
            (&[b"a=1"], "A", None),
            (&[], "a", None),
            (&[b""], "a", None),
        ];
        for (values, name, expected) in cases {
            assert_eq!(find(values, name), *expected, "{values:?} {name}");
        }
    }

    #[test]
    fn malformed_cookies_are_skipped() {
        let find = |value: &'static [u8], name: &str| {
            cookie::find(std::iter::once(value), name.as_bytes())
        };
        let malformed: &[&[u8]] = &[
            b"a",
            b"a;",
            b";;;",
            b"=",
            b"=1",
            b"a=\"1",
            b"a=1\"",
            b"a=\"",
            b"a=1 2",
            b"a=1,2",
            b"a=1\\2",
            b"a=\x001",
            b"a=1\x7f",
            b"a b=1",
            b"a\xff=1",
            b"\xff\xfe\xfd",
            b"\"a\"=1",
        ];
        for value in malformed {
            assert_eq!(find(value, "a"), None, "{value:?}");
        }
        // A malformed pair does not hide a later well-formed one.
        assert_eq!(find(b"a=\"broken; a=ok", "a"), Some(&b"ok"[..]));
        assert_eq!(find(b"junk; b; a=1", "a"), Some(&b"1"[..]));
        assert_eq!(find(b"a==; b=2", "a"), Some(&b"="[..]));
    }

    #[test]
    fn a_malformed_cookie_header_falls_back_to_the_next_source() {
        let c = with_keys(r#"["x-correlation-id"]"#, r#"["session","visitor"]"#);
        let h = headers(&[("cookie", b"session=\"open; visitor=v1")]);
        assert_eq!(select_key(&c, h.as_slice()), keyed(b"v1"));
        let h = headers(&[("cookie", b"\xff;;session"), ("x-request-id", b"r1")]);
        assert_eq!(
            select_key(&c, h.as_slice()),
            Key {
                bytes: b"r1",
                fallback: true
            }
        );
    }

    /// xorshift-driven garbage: the parser never panics and only returns well-formed values.
    #[test]
    fn cookie_parser_survives_arbitrary_bytes() {
        let mut rng = Prng(0x1234_5678_9abc_def0);
        let alphabet = b"a=; \"\t,\\\x00\xffb";
        for _ in 0..20_000 {
            let len = (rng.next() % 40) as usize;
            let value: Vec<u8> = (0..len)
                .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
                .collect();
            if let Some(found) = cookie::find(std::iter::once(value.as_slice()), b"a") {
                assert!(cookie::is_cookie_value(found), "{value:?} -> {found:?}");
            }
        }
    }

    fn with_overrides(overrides: &str, use_legacy: bool, pct: u8) -> FilterConfig {
        config(&format!(
            r#"{{"stickiness_cookies":["sid"],"services":[{{"name":"chat","path_prefixes":["/api/chat"],
                "legacy_cluster":"chat_legacy","new_cluster":"chat_new","use_legacy":{use_legacy},
                "new_percentage":{pct},"overrides":{overrides}}}]}}"#
        ))
    }

    const RULES: &str = r#"[
        {"header":"x-cutover-side","value":"new","side":"new"},
        {"header":"x-cutover-side","value":"legacy","side":"legacy"},
        {"cookie":"cutover","value":"beta","side":"new"},
        {"cookie":"cutover","value":"stay","side":"legacy"}]"#;

    fn route_of(c: &FilterConfig, pairs: &[(&str, &[u8])]) -> (Side, Decision, Vec<Counter>) {
        let h = headers(pairs);
        let r = route(c, &c.services[0], h.as_slice());
        (r.side, r.decision, r.counters().collect())
    }

    #[test]
    fn overrides_beat_the_bucket() {
        use Counter::*;
        // 0 %: only an override reaches new; 100 %: only an override stays on legacy.
        let zero = with_overrides(RULES, false, 0);
        let all = with_overrides(RULES, false, 100);
        let key: (&str, &[u8]) = ("x-correlation-id", b"c1");
        assert_eq!(
            route_of(&zero, &[key, ("x-cutover-side", b"new")]),
            (Side::New, Decision::Override, vec![RoutedOverrideNew])
        );
        assert_eq!(
            route_of(&all, &[key, ("x-cutover-side", b"legacy")]),
            (Side::Legacy, Decision::Override, vec![RoutedOverrideLegacy])
        );
        assert_eq!(
            route_of(&zero, &[key, ("cookie", b"a=1; cutover=beta")]),
            (Side::New, Decision::Override, vec![RoutedOverrideNew])
        );
        assert_eq!(
            route_of(&all, &[key, ("cookie", b"cutover=\"stay\"")]),
            (Side::Legacy, Decision::Override, vec![RoutedOverrideLegacy])
        );
        // No rule matches: the bucket decides and is counted as usual.
        assert_eq!(
            route_of(
                &all,
                &[
                    key,
                    ("x-cutover-side", b"NEW"),
                    ("cookie", b"cutover=other")
                ]
            ),
            (Side::New, Decision::Bucket, vec![RoutedNew])
        );
        assert_eq!(
            route_of(&zero, &[key]),
            (Side::Legacy, Decision::Bucket, vec![RoutedLegacy])
        );
        // An override request without a key still counts no_key.
        assert_eq!(
            route_of(&zero, &[("x-request-id", b"r"), ("x-cutover-side", b"new")]),
            (
                Side::New,
                Decision::Override,
                vec![RoutedOverrideNew, NoKey]
            )
        );
    }

    #[test]
    fn the_first_matching_override_wins() {
        let c = with_overrides(RULES, false, 50);
        // Header rules come first in RULES, so they beat the cookie rules.
        let (side, decision, _) = route_of(
            &c,
            &[("x-cutover-side", b"legacy"), ("cookie", b"cutover=beta")],
        );
        assert_eq!((side, decision), (Side::Legacy, Decision::Override));
        // Only the first value of a repeated header is compared.
        let (side, _, _) = route_of(
            &c,
            &[("x-cutover-side", b"legacy"), ("x-cutover-side", b"new")],
        );
        assert_eq!(side, Side::Legacy);
        // Only the first occurrence of a cookie is compared.
        let (side, _, _) = route_of(
            &c,
            &[("cookie", b"cutover=stay"), ("cookie", b"cutover=beta")],
        );
        assert_eq!(side, Side::Legacy);
    }

    #[test]
    fn the_kill_switch_beats_overrides() {
        let c = with_overrides(RULES, true, 100);
        assert_eq!(
            route_of(
                &c,
                &[("x-correlation-id", b"c"), ("x-cutover-side", b"new")]
            ),
            (Side::Legacy, Decision::Bucket, vec![Counter::RoutedLegacy])
        );
    }

    #[test]
    fn without_overrides_routing_is_the_bucket() {
        let c = with_keys(r#"["x-correlation-id"]"#, r#"["sid"]"#);
        let s = &c.services[0];
        for key in [&b"a"[..], b"b", b"c", b"user-42"] {
            let h = headers(&[("cookie", key)]);
            let r = route(&c, s, h.as_slice());
            assert_eq!(r.decision, Decision::Bucket);
            assert_eq!(r.side, decide(s, r.key.bytes));
        }
        // The cookie key is bucketed like a header key: murmur3("<group>:<cookie value>").
        let by_cookie = headers(&[("cookie", b"sid=174")]);
        let by_header = headers(&[("x-correlation-id", b"174")]);
        let r1 = route(&c, s, by_cookie.as_slice());
        let r2 = route(&c, s, by_header.as_slice());
        assert_eq!(r1.key.bytes, b"174");
        assert_eq!((r1.side, r1.key), (r2.side, r2.key));
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
