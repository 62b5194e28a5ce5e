use super::*;
use crate::config::test_service;
use crate::shadow::ShadowInfo;
use proptest::prelude::*;
use serde_json::json;

/// The `compare` block of a service that samples reads, with `compare_fields` in it.
fn rules(compare_fields: &str) -> CompareConfig {
    test_service(&format!(
        r#","shadow_reads":{{"percentage":10}},"compare":{{{compare_fields}}}"#
    ))
    .compare
    .map(|rules| (*rules).clone())
    .unwrap()
}

fn json_response(status: u16, body: &str) -> CapturedResponse {
    CapturedResponse {
        status,
        content_type: Some(b"application/json".to_vec()),
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    }
}

fn typed(content_type: Option<&str>, body: &[u8]) -> CapturedResponse {
    CapturedResponse {
        status: 200,
        content_type: content_type.map(|c| c.as_bytes().to_vec()),
        headers: Vec::new(),
        body: body.to_vec(),
    }
}

fn verdict(rules: &CompareConfig, primary: &str, shadow: &str) -> Verdict {
    compare_responses(
        rules,
        &json_response(200, primary),
        &json_response(200, shadow),
    )
}

fn body_mismatch(at: &str, primary: &str, shadow: &str) -> Verdict {
    Verdict::BodyMismatch(Difference {
        at: Location::Json(at.to_string()),
        primary: primary.to_string(),
        shadow: shadow.to_string(),
    })
}

#[test]
fn key_order_and_number_spelling_do_not_matter() {
    let r = CompareConfig::plain();
    assert_eq!(
        verdict(
            &r,
            r#"{"a":1,"b":[1.0,2,0.1,-0.0],"c":{"x":null,"y":true}}"#,
            r#"{ "c": {"y":true, "x":null}, "b":[1, 2e0, 0.10, 0], "a":1.0 }"#
        ),
        Verdict::Equal
    );
}

#[test]
fn numbers_are_compared_by_value_and_integers_exactly() {
    let r = CompareConfig::plain();
    assert_eq!(
        verdict(&r, "[1.5]", "[1.50000001]"),
        body_mismatch("$[0]", "1.5", "1.50000001")
    );
    // Beyond 2^53 but within i64/u64: exact.
    assert_eq!(
        verdict(&r, "[9007199254740993]", "[9007199254740992]"),
        body_mismatch("$[0]", "9007199254740993", "9007199254740992")
    );
    assert_eq!(
        verdict(&r, "[18446744073709551615]", "[18446744073709551614]"),
        body_mismatch("$[0]", "18446744073709551615", "18446744073709551614")
    );
    assert_eq!(
        verdict(&r, "[-9223372036854775808]", "[-9223372036854775808.0]"),
        Verdict::Equal
    );
    // Integers beyond u64 are f64s to serde_json: compared at f64 precision (documented).
    assert_eq!(
        verdict(
            &r,
            "[123456789012345678901234567890]",
            "[123456789012345678901234567891]"
        ),
        Verdict::Equal
    );
    assert_eq!(verdict(&r, "[1e300]", "[1E+300]"), Verdict::Equal);
    assert!(matches!(
        verdict(&r, "[1e300]", "[1e301]"),
        Verdict::BodyMismatch(_)
    ));
    assert_eq!(
        verdict(&r, r#"{"n":1}"#, r#"{"n":"1"}"#),
        body_mismatch("$.n", "1", r#""1""#)
    );
}

#[test]
fn a_number_beyond_f64_is_not_json_and_never_panics() {
    let r = CompareConfig::plain();
    // serde_json refuses 1e400: the documents are compared by bytes.
    let v = compare_responses(
        &r,
        &json_response(200, "[1e400]"),
        &json_response(200, "[1e401]"),
    );
    assert_eq!(
        v,
        Verdict::BodyMismatch(Difference {
            at: Location::Byte(5),
            primary: "0]".into(),
            shadow: "1]".into()
        })
    );
    // Valid on one side only: a body mismatch at the root naming serde_json's complaint.
    match compare_responses(
        &r,
        &json_response(200, "[1]"),
        &json_response(200, "[1e400]"),
    ) {
        Verdict::BodyMismatch(d) => {
            assert_eq!(d.at, Location::Json("$".into()));
            assert_eq!(d.primary, "[1]");
            assert!(
                d.shadow.starts_with("<invalid JSON: number out of range"),
                "{d:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_field_only_in_the_shadow_is_found() {
    let r = CompareConfig::plain();
    assert_eq!(
        verdict(&r, r#"{"id":7}"#, r#"{"id":7,"beta":{"on":true}}"#),
        body_mismatch("$.beta", ABSENT, r#"{"on":true}"#)
    );
    assert_eq!(
        verdict(&r, r#"{"id":7,"gone":1}"#, r#"{"id":7}"#),
        body_mismatch("$.gone", "1", ABSENT)
    );
    assert_eq!(
        verdict(&r, "[1,2]", "[1,2,3]"),
        body_mismatch("$[2]", ABSENT, "3")
    );
}

#[test]
fn the_first_difference_in_key_order_is_reported() {
    let r = CompareConfig::plain();
    assert_eq!(
        verdict(
            &r,
            r#"{"b":1,"a":{"x":[1,{"y":2}]}}"#,
            r#"{"b":2,"a":{"x":[1,{"y":3}]}}"#
        ),
        body_mismatch("$.a.x[1].y", "2", "3")
    );
    assert_eq!(
        verdict(&r, r#"{"a":[1]}"#, r#"{"a":{"0":1}}"#),
        body_mismatch("$.a", "[1]", r#"{"0":1}"#)
    );
}

#[test]
fn ignore_rules_skip_members_on_both_sides() {
    let r = rules(r#""ignore":["$.updated_at","$.items[*].id","$..etag"]"#);
    assert_eq!(
        verdict(
            &r,
            r#"{"updated_at":"2026-12-01T10:00:00Z","items":[{"id":1,"n":"a"}],"x":{"y":{"etag":"1"}}}"#,
            r#"{"updated_at":"2026-12-01T10:00:09Z","items":[{"id":2,"n":"a"}],"x":{"y":{"etag":"2"}}}"#
        ),
        Verdict::Equal
    );
    // Present on one side only: still ignored.
    assert_eq!(
        verdict(&r, r#"{"updated_at":1,"etag":"a"}"#, r#"{}"#),
        Verdict::Equal
    );
    // Only what the rules name.
    assert_eq!(
        verdict(
            &r,
            r#"{"items":[{"id":1,"n":"a"}],"created_at":1}"#,
            r#"{"items":[{"id":1,"n":"b"}],"created_at":1}"#
        ),
        body_mismatch("$.items[0].n", r#""a""#, r#""b""#)
    );
    assert_eq!(
        verdict(&r, r#"{"x":{"updated_at":1}}"#, r#"{"x":{"updated_at":2}}"#),
        body_mismatch("$.x.updated_at", "1", "2")
    );
}

#[test]
fn ignored_array_elements_keep_the_positions_of_the_others() {
    let r = rules(r#""ignore":["$.a[1]"]"#);
    assert_eq!(
        verdict(&r, r#"{"a":[1,2,3]}"#, r#"{"a":[1,9,3]}"#),
        Verdict::Equal
    );
    assert_eq!(
        verdict(&r, r#"{"a":[1,2]}"#, r#"{"a":[1]}"#),
        Verdict::Equal
    );
    assert_eq!(
        verdict(&r, r#"{"a":[1,2,3]}"#, r#"{"a":[1,3]}"#),
        body_mismatch("$.a[2]", "3", ABSENT)
    );
}

#[test]
fn a_reordered_array_differs_unless_unordered() {
    let plain = CompareConfig::plain();
    let a = r#"{"tags":["x","y","z"]}"#;
    let b = r#"{"tags":["z","x","y"]}"#;
    assert_eq!(
        verdict(&plain, a, b),
        body_mismatch("$.tags[0]", r#""x""#, r#""z""#)
    );
    let r = rules(r#""unordered":["$.tags"]"#);
    assert_eq!(verdict(&r, a, b), Verdict::Equal);
}

#[test]
fn unordered_arrays_are_multisets() {
    let r = rules(r#""unordered":["$.a"]"#);
    // Multiplicity counts; named by the primary's unmatched element and the shadow's.
    assert_eq!(
        verdict(&r, r#"{"a":[1,1,2]}"#, r#"{"a":[2,1,2]}"#),
        body_mismatch("$.a[1]", "1", "2")
    );
    assert_eq!(
        verdict(&r, r#"{"a":[1,2]}"#, r#"{"a":[2,1,3]}"#),
        body_mismatch("$.a[2]", NO_EQUAL_ELEMENT, "3")
    );
    assert_eq!(
        verdict(&r, r#"{"a":[1,2,4]}"#, r#"{"a":[2,1]}"#),
        body_mismatch("$.a[2]", "4", NO_EQUAL_ELEMENT)
    );
    // Elements compared by value: key order and number spelling inside elements.
    assert_eq!(
        verdict(
            &r,
            r#"{"a":[{"k":1,"v":[1,2]},{"k":2.0}]}"#,
            r#"{"a":[{"k":2},{"v":[1.0,2],"k":1}]}"#
        ),
        Verdict::Equal
    );
    // Strings that merely look alike in a canonical form.
    assert!(matches!(
        verdict(&r, r#"{"a":["1"]}"#, r#"{"a":[1]}"#),
        Verdict::BodyMismatch(_)
    ));
    assert!(matches!(
        verdict(&r, r#"{"a":["a\",\"b"]}"#, r#"{"a":["a","b"]}"#),
        Verdict::BodyMismatch(_)
    ));
}

#[test]
fn unordered_arrays_apply_ignore_rules_inside_their_elements() {
    let r = rules(r#""unordered":["$.items","$.items[*].tags"],"ignore":["$.items[*].id"]"#);
    assert_eq!(
        verdict(
            &r,
            r#"{"items":[{"id":1,"n":"a","tags":["p","q"]},{"id":2,"n":"b","tags":[]}]}"#,
            r#"{"items":[{"id":8,"n":"b","tags":[]},{"id":9,"n":"a","tags":["q","p"]}]}"#
        ),
        Verdict::Equal
    );
    assert_eq!(
        verdict(
            &r,
            r#"{"items":[{"id":1,"n":"a"},{"id":2,"n":"b"}]}"#,
            r#"{"items":[{"id":1,"n":"b"},{"id":2,"n":"c"}]}"#
        ),
        body_mismatch("$.items[0]", r#"{"id":1,"n":"a"}"#, r#"{"id":2,"n":"c"}"#)
    );
    // Ignored elements do not count.
    let r = rules(r#""unordered":["$.a"],"ignore":["$.a[0]"]"#);
    assert_eq!(
        verdict(&r, r#"{"a":["skip",1,2]}"#, r#"{"a":["other",2,1]}"#),
        Verdict::Equal
    );
}

#[test]
fn status_is_compared_first() {
    let r = CompareConfig::plain();
    assert_eq!(
        compare_responses(&r, &json_response(200, "{}"), &json_response(500, "x")),
        Verdict::StatusMismatch {
            primary: 200,
            shadow: 500
        }
    );
    assert_eq!(
        compare_responses(&r, &json_response(200, "{}"), &json_response(201, "{}")),
        Verdict::StatusMismatch {
            primary: 200,
            shadow: 201
        }
    );
}

#[test]
fn non_json_bodies_are_compared_by_bytes() {
    let r = CompareConfig::plain();
    let html = Some("text/html; charset=utf-8");
    assert_eq!(
        compare_responses(&r, &typed(html, b"<p>hi</p>"), &typed(html, b"<p>hi</p>")),
        Verdict::Equal
    );
    assert_eq!(
        compare_responses(&r, &typed(html, b"<p>hi</p>"), &typed(html, b"<p>ho</p>")),
        Verdict::BodyMismatch(Difference {
            at: Location::Byte(4),
            primary: "i</p>".into(),
            shadow: "o</p>".into()
        })
    );
    assert_eq!(
        compare_responses(&r, &typed(None, b"abc"), &typed(None, b"abcdef")),
        Verdict::BodyMismatch(Difference {
            at: Location::Byte(3),
            primary: END_OF_BODY.into(),
            shadow: "def".into()
        })
    );
    // Binary bytes are shown lossily, never panicking.
    let v = compare_responses(&r, &typed(None, b"\xff\x00"), &typed(None, b"\xff\x01"));
    assert!(matches!(
        v,
        Verdict::BodyMismatch(Difference {
            at: Location::Byte(1),
            ..
        })
    ));
    assert_eq!(
        compare_responses(&r, &typed(None, b""), &typed(None, b"")),
        Verdict::Equal
    );
}

#[test]
fn json_without_a_json_content_type_is_still_json() {
    let r = CompareConfig::plain();
    assert_eq!(
        compare_responses(
            &r,
            &typed(Some("text/plain"), br#"{"a":1,"b":2}"#),
            &typed(None, br#"{"b":2,"a":1}"#)
        ),
        Verdict::Equal
    );
}

#[test]
fn json_against_something_else_is_a_body_mismatch_at_the_root() {
    let r = CompareConfig::plain();
    assert_eq!(
        compare_responses(
            &r,
            &json_response(200, r#"{"a":1}"#),
            &typed(Some("text/html"), b"<html>error</html>")
        ),
        body_mismatch("$", r#"{"a":1}"#, "<not JSON: 18 bytes>")
    );
    match compare_responses(
        &r,
        &json_response(200, "{\"a\":1"),
        &json_response(200, r#"{"a":1}"#),
    ) {
        Verdict::BodyMismatch(d) => {
            assert_eq!(d.at, Location::Json("$".into()));
            assert!(d.primary.starts_with("<invalid JSON: EOF"), "{d:?}");
            assert_eq!(d.shadow, r#"{"a":1}"#);
        }
        other => panic!("{other:?}"),
    }
    // Invalid on both sides: bytes.
    assert_eq!(
        compare_responses(&r, &json_response(200, "{x"), &json_response(200, "{y")),
        Verdict::BodyMismatch(Difference {
            at: Location::Byte(1),
            primary: "x".into(),
            shadow: "y".into()
        })
    );
}

#[test]
fn json_content_types() {
    for yes in [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        " application/json ;charset=utf-8",
        "application/problem+json",
        "application/vnd.api+json; ext=x",
    ] {
        assert!(is_json_content_type(yes.as_bytes()), "{yes}");
    }
    for no in [
        "text/plain",
        "text/html",
        "+json",
        "application/jsonp",
        "",
        "json",
        "\u{ff}",
    ] {
        assert!(!is_json_content_type(no.as_bytes()), "{no}");
    }
}

/// `depth` nested arrays around `inner`.
fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn deep_nesting_within_serde_jsons_limit_is_compared_structurally() {
    let r = CompareConfig::plain();
    let v = verdict(&r, &nested(100, "1"), &nested(100, "2"));
    assert_eq!(
        v,
        body_mismatch(&format!("${}", "[0]".repeat(100)), "1", "2")
    );
}

#[test]
fn ten_thousand_levels_never_panic() {
    let r = rules(r#""ignore":["$..x"],"unordered":["$..*"]"#);
    let deep = nested(10_000, "1");
    // Deeper than serde_json's recursion limit: not JSON, compared by bytes.
    assert_eq!(verdict(&r, &deep, &deep), Verdict::Equal);
    match verdict(&r, &deep, &nested(10_000, "2")) {
        Verdict::BodyMismatch(d) => assert_eq!(d.at, Location::Byte(10_000)),
        other => panic!("{other:?}"),
    }
    match verdict(&r, "[1]", &deep) {
        Verdict::BodyMismatch(d) => {
            assert_eq!(d.at, Location::Json("$".into()));
            assert!(d.shadow.contains("recursion limit exceeded"), "{d:?}");
        }
        other => panic!("{other:?}"),
    }
    let objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    assert!(matches!(
        verdict(&r, &objects, "{}"),
        Verdict::BodyMismatch(_)
    ));
}

#[test]
fn shown_values_are_cut_to_a_safe_length() {
    let r = CompareConfig::plain();
    let long = "é".repeat(200);
    let v = verdict(&r, &format!(r#"{{"s":"{long}"}}"#), r#"{"s":"short"}"#);
    match v {
        Verdict::BodyMismatch(d) => {
            assert_eq!(d.at, Location::Json("$.s".into()));
            assert!(d.primary.ends_with('…'), "{}", d.primary);
            // 128 bytes: the quote and 63 two-byte characters; the split one is dropped.
            assert_eq!(d.primary, format!("\"{}…", "é".repeat(63)));
            assert!(!d.primary.contains('\u{fffd}'));
            assert_eq!(d.shadow, r#""short""#);
        }
        other => panic!("{other:?}"),
    }
    let big = format!("[{}]", vec!["1234567890"; 10_000].join(","));
    let v = verdict(&r, &format!(r#"{{"a":{big}}}"#), r#"{"a":null}"#);
    match v {
        Verdict::BodyMismatch(d) => {
            assert_eq!(d.primary.len(), MAX_SHOWN_BYTES + '…'.len_utf8());
            assert_eq!(d.shadow, "null");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(shown_bytes(b"abc", 2), "ab…");
    assert_eq!(shown_bytes(b"ab", 2), "ab");
    assert_eq!(shown_bytes(b"\xff", 8), "\u{fffd}");
}

#[test]
fn selected_headers_are_compared_after_the_body() {
    let r = rules(r#""headers":["ETag","cache-control"]"#);
    let with = |headers: &[(&str, &str)], body: &str| {
        let mut response = CapturedResponse::new(
            200,
            headers
                .iter()
                .map(|(n, v)| (*n, v.as_bytes()))
                .chain([("content-type", &b"application/json"[..])]),
            &r,
        );
        response.body = body.as_bytes().to_vec();
        response
    };
    let a = with(
        &[
            ("etag", "1"),
            ("x-other", "a"),
            ("Cache-Control", "no-store"),
        ],
        "{}",
    );
    let b = with(
        &[
            ("ETag", "1"),
            ("x-other", "b"),
            ("cache-control", "no-store"),
        ],
        "{}",
    );
    assert_eq!(compare_responses(&r, &a, &b), Verdict::Equal);
    let c = with(&[("etag", "2"), ("cache-control", "no-store")], "{}");
    assert_eq!(
        compare_responses(&r, &a, &c),
        Verdict::HeaderMismatch(Difference {
            at: Location::Header("etag".into()),
            primary: "1".into(),
            shadow: "2".into()
        })
    );
    let d = with(
        &[
            ("etag", "1"),
            ("cache-control", "no-store"),
            ("cache-control", "private"),
        ],
        "{}",
    );
    assert_eq!(
        compare_responses(&r, &a, &d),
        Verdict::HeaderMismatch(Difference {
            at: Location::Header("cache-control".into()),
            primary: "no-store".into(),
            shadow: "no-store, private".into()
        })
    );
    let e = with(&[("cache-control", "no-store")], "{}");
    assert_eq!(
        compare_responses(&r, &a, &e),
        Verdict::HeaderMismatch(Difference {
            at: Location::Header("etag".into()),
            primary: "1".into(),
            shadow: ABSENT.into()
        })
    );
    // A body mismatch wins over a header mismatch.
    let f = with(&[("etag", "2")], r#"{"a":1}"#);
    assert!(matches!(
        compare_responses(&r, &a, &f),
        Verdict::BodyMismatch(_)
    ));
}

#[test]
fn captured_responses_keep_only_what_is_compared() {
    let r = rules(r#""headers":["etag"]"#);
    let c = CapturedResponse::new(
        404,
        [
            ("Content-Type", &b"application/json"[..]),
            ("content-type", b"text/plain"),
            ("ETag", b"\"v1\""),
            ("set-cookie", b"secret=1"),
        ],
        &r,
    );
    assert_eq!(
        c,
        CapturedResponse {
            status: 404,
            content_type: Some(b"application/json".to_vec()),
            headers: vec![("etag".into(), b"\"v1\"".to_vec())],
            body: Vec::new(),
        }
    );
}

#[test]
fn body_capture_is_bounded() {
    let mut c = BodyCapture::new(10, None);
    c.push(b"12345");
    c.push(b"67890");
    assert!(!c.is_too_large());
    assert_eq!(c.clone().into_body(), Some(b"1234567890".to_vec()));
    c.push(b"x");
    assert!(c.is_too_large());
    assert_eq!(c.body.capacity(), 0, "the copy is dropped at once");
    c.push(b"more");
    assert_eq!(c.into_body(), None);

    assert!(BodyCapture::new(10, Some(b"11")).is_too_large());
    // Not a u64: left to the bytes seen.
    assert!(!BodyCapture::new(10, Some(b"99999999999999999999999")).is_too_large());
    assert!(!BodyCapture::new(10, Some(b"10")).is_too_large());
    assert!(!BodyCapture::new(10, Some(b"abc")).is_too_large());
    assert!(!BodyCapture::new(10, Some(b"\xff")).is_too_large());
    let mut empty = BodyCapture::new(0, Some(b"0"));
    empty.push(b"");
    assert_eq!(empty.into_body(), Some(Vec::new()));
    assert!(over_cap(0, 1));
    assert!(!over_cap(0, 0));
}

#[test]
fn rendered_paths_are_valid_rules_for_the_same_location() {
    let locations: &[&[Step<'_>]] = &[
        &[],
        &[Step::Key("a"), Step::Index(3)],
        &[Step::Key("a b"), Step::Key("it's"), Step::Key("")],
        &[
            Step::Key("x.y"),
            Step::Key("[0]"),
            Step::Key("back\\slash"),
            Step::Key("*"),
        ],
        &[Step::Key("größe")],
    ];
    for steps in locations {
        let text = render_path(steps);
        let path = JsonPath::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let states = steps
            .iter()
            .fold(JsonPath::START, |s, step| path.step(s, *step));
        assert!(path.selects(states), "{text}");
    }
    assert_eq!(
        render_path(&[Step::Key("a b"), Step::Index(0), Step::Key("c")]),
        "$['a b'][0].c"
    );
}

#[test]
fn verdicts_and_skips_have_one_counter_each() {
    let d = Difference {
        at: Location::Byte(0),
        primary: String::new(),
        shadow: String::new(),
    };
    let counters = [
        Verdict::Equal.counter(),
        Verdict::StatusMismatch {
            primary: 200,
            shadow: 500,
        }
        .counter(),
        Verdict::BodyMismatch(d.clone()).counter(),
        Verdict::HeaderMismatch(d).counter(),
        Skip::BodyTooLarge.counter(),
        Skip::ShadowFailed.counter(),
        Skip::NoPrimaryResponse.counter(),
        Skip::InFlightLimit.counter(),
    ];
    assert_eq!(counters, Counter::COMPARE_OUTCOMES);
}

#[test]
fn location_display() {
    assert_eq!(Location::Json("$.a".into()).to_string(), "$.a");
    assert_eq!(Location::Byte(7).to_string(), "byte:7");
    assert_eq!(Location::Header("etag".into()).to_string(), "etag");
}

/// The request of the mismatch lines in these tests.
pub(crate) fn info() -> ShadowInfo {
    ShadowInfo {
        service: "chat".into(),
        method: "GET".into(),
        path: "/api/chat/1".into(),
        correlation_id: "c1".into(),
    }
}

#[test]
fn mismatch_lines_name_the_request_and_the_first_difference() {
    let r = CompareConfig::plain();
    assert_eq!(mismatch_line(&info(), &Verdict::Equal, None), None);
    assert_eq!(
        mismatch_line(
            &info(),
            &verdict(&r, r#"{"id":7}"#, r#"{"id":7,"beta":{"on":true}}"#),
            None
        )
        .unwrap(),
        r#"cutover: response mismatch: service=chat method=GET path=/api/chat/1 correlation_id=c1 kind=body at=$.beta primary=<absent> shadow={"on":true}"#
    );
    let status = Verdict::StatusMismatch {
        primary: 200,
        shadow: 503,
    };
    assert_eq!(
        mismatch_line(&info(), &status, None).unwrap(),
        "cutover: response mismatch: service=chat method=GET path=/api/chat/1 correlation_id=c1 kind=status primary=200 shadow=503"
    );
    let header = Verdict::HeaderMismatch(Difference {
        at: Location::Header("etag".into()),
        primary: "1".into(),
        shadow: ABSENT.into(),
    });
    assert!(mismatch_line(&info(), &header, None)
        .unwrap()
        .ends_with(" kind=header at=etag primary=1 shadow=<absent>"));
    let bytes = compare_responses(
        &r,
        &typed(None, b"ok\nfine"),
        &typed(None, b"ok\r\nInjected: 1"),
    );
    let line = mismatch_line(&info(), &bytes, None).unwrap();
    assert!(
        line.ends_with(r"kind=body at=byte:2 primary=\nfine shadow=\r\nInjected: 1"),
        "{line}"
    );
}

#[test]
fn whole_bodies_are_logged_only_when_asked() {
    let r = CompareConfig::plain();
    let long = format!(r#"{{"s":"{}"}}"#, "x".repeat(1_000));
    let v = verdict(&r, &long, "{}");
    let short = mismatch_line(&info(), &v, None).unwrap();
    assert!(short.len() < 400, "{short}");
    assert!(!short.contains("primary_body"));
    let full = mismatch_line(&info(), &v, Some((long.as_bytes(), b"{}\n"))).unwrap();
    assert!(
        full.ends_with(&format!(" primary_body={long} shadow_body={{}}\\n")),
        "{full}"
    );
}

/// Whether the fast path finds `a` and `b` equal (both must get a digest).
fn digests_equal(rules: &CompareConfig, a: &str, b: &str) -> bool {
    let (x, y) = (
        digest::digest(rules, a.as_bytes()),
        digest::digest(rules, b.as_bytes()),
    );
    assert!(x.is_some() && y.is_some(), "{a} / {b}");
    x == y
}

/// The structural comparison alone (no fast path) of two JSON bodies.
fn structurally(rules: &CompareConfig, a: &str, b: &str) -> Option<Difference> {
    compare_bodies_structurally(rules, &json_response(200, a), &json_response(200, b))
}

#[test]
fn the_fast_path_follows_the_noise_rules() {
    let r = rules(
        r#""ignore":["$.updated_at","$.items[*].id","$..etag","$.list[1]"],"unordered":["$.tags","$..set"]"#,
    );
    let cases: &[(&str, &str, bool)] = &[
        // Ignored members: other values, or present on one side only.
        (
            r#"{"a":1,"updated_at":"x"}"#,
            r#"{"updated_at":"y","a":1}"#,
            true,
        ),
        (r#"{"a":1,"updated_at":"x"}"#, r#"{"a":1}"#, true),
        (
            r#"{"items":[{"id":1,"v":2}]}"#,
            r#"{"items":[{"v":2,"id":9}]}"#,
            true,
        ),
        (
            r#"{"items":[{"id":1,"v":2}]}"#,
            r#"{"items":[{"v":3}]}"#,
            false,
        ),
        (
            r#"{"x":{"y":{"etag":1}},"etag":[1]}"#,
            r#"{"x":{"y":{}}}"#,
            true,
        ),
        // An ignored element keeps the others' positions; trailing ones do not count.
        (r#"{"list":[1,2,3]}"#, r#"{"list":[1,9,3]}"#, true),
        (r#"{"list":[1,2]}"#, r#"{"list":[1]}"#, true),
        (r#"{"list":[1,2,3]}"#, r#"{"list":[1,3]}"#, false),
        (r#"{"list":[1,2,3]}"#, r#"{"list":[1,2,3,4]}"#, false),
        // Unordered arrays are multisets, also nested.
        (r#"{"tags":[1,2,2,3]}"#, r#"{"tags":[2,3,2,1]}"#, true),
        (r#"{"tags":[1,2,2]}"#, r#"{"tags":[1,1,2]}"#, false),
        (r#"{"tags":[1,2]}"#, r#"{"tags":[1,2,2]}"#, false),
        (
            r#"{"a":{"set":[[1],[2]]}}"#,
            r#"{"a":{"set":[[2],[1]]}}"#,
            true,
        ),
        (
            r#"{"a":{"set":[{"etag":1,"v":1},{"v":2}]}}"#,
            r#"{"a":{"set":[{"v":2},{"v":1}]}}"#,
            true,
        ),
        // Not arrays: the rule changes nothing.
        (r#"{"tags":{"a":1}}"#, r#"{"tags":{"a":1}}"#, true),
        (r#"{"tags":"ab"}"#, r#"{"tags":"ba"}"#, false),
        // Elsewhere arrays stay ordered.
        (r#"{"other":[1,2]}"#, r#"{"other":[2,1]}"#, false),
    ];
    for (a, b, equal) in cases {
        assert_eq!(digests_equal(&r, a, b), *equal, "{a} / {b}");
        assert_eq!(structurally(&r, a, b).is_none(), *equal, "{a} / {b}");
    }
    // Ignored subtrees are still checked for being JSON.
    assert_eq!(digest::digest(&r, br#"{"updated_at":[1,]}"#), None);
    assert_eq!(digest::digest(&r, br#"{"updated_at":[1e400]}"#), None);
}

#[test]
fn the_benchmark_documents_are_equal_on_the_fast_path() {
    let r = rules(
        r#""ignore":["$.updated_at","$.messages[*].id","$..etag"],"unordered":["$.messages[*].tags"]"#,
    );
    let doc = |name: &str| {
        std::fs::read_to_string(format!(
            "{}/../tests/harness/examples/compare-docs/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let (primary, equal, changed) = (doc("primary.json"), doc("equal.json"), doc("changed.json"));
    assert!(digests_equal(&r, &primary, &equal));
    assert!(!digests_equal(&r, &primary, &changed));
    assert_eq!(structurally(&r, &primary, &equal), None);
    assert!(matches!(
        verdict(&r, &primary, &changed),
        Verdict::BodyMismatch(Difference {
            at: Location::Json(_),
            ..
        })
    ));
}

// ---------------------------------------------------------------------------------------------
// Property tests.
// ---------------------------------------------------------------------------------------------

/// Member names: short ones that collide often, the ignored name, and ones needing quotes.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c]{1,2}",
        Just("ignored".to_string()),
        Just("meta".to_string()),
        "[a-z .'\\\\\\[\\]\"*é]{0,4}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1.0e6f64..1.0e6).prop_map(|f| json!(f)),
        "[a-z\"\\\\é ]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Serialises `v` with members in an order chosen by `seed` and, for small integers, the
/// number spelled `n.0` or `ne0` some of the time.
fn write_scrambled(v: &Value, seed: u64, out: &mut String) {
    let mix = |s: u64, text: &str| -> u64 {
        let mut h = s ^ 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    match v {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by_key(|(k, _)| mix(seed, k));
            out.push('{');
            for (i, (k, value)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(" ,");
                }
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push(':');
                write_scrambled(value, mix(seed, k), out);
            }
            out.push('}');
        }
        Value::Array(values) => {
            out.push('[');
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_scrambled(value, seed.wrapping_add(i as u64).rotate_left(7), out);
            }
            out.push(']');
        }
        // `n.0` only where serde_json reads it exactly: it reads decimals of more than 15 or 16
        // significant digits to within one unit in the last place (`1801499499004949.0` is
        // 1801499499004948.8 to it), and the extra digit counts.
        Value::Number(n) => match n.as_i64() {
            Some(i) if i.unsigned_abs() < (1 << 49) && seed % 3 == 1 => {
                out.push_str(&format!("{i}.0"))
            }
            Some(i) if i.unsigned_abs() < (1 << 53) && seed % 3 == 2 => {
                out.push_str(&format!("{i}e0"))
            }
            _ => out.push_str(&n.to_string()),
        },
        other => out.push_str(&serde_json::to_string(other).unwrap()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OwnedStep {
    Key(String),
    Index(usize),
}

fn locations(v: &Value, at: &mut Vec<OwnedStep>, out: &mut Vec<Vec<OwnedStep>>) {
    out.push(at.clone());
    match v {
        Value::Object(map) => {
            for (k, value) in map {
                at.push(OwnedStep::Key(k.clone()));
                locations(value, at, out);
                at.pop();
            }
        }
        Value::Array(values) => {
            for (i, value) in values.iter().enumerate() {
                at.push(OwnedStep::Index(i));
                locations(value, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'a>(v: &'a mut Value, at: &[OwnedStep]) -> &'a mut Value {
    at.iter().fold(v, |v, step| match step {
        OwnedStep::Key(k) => v.get_mut(k.as_str()).unwrap(),
        OwnedStep::Index(i) => v.get_mut(*i).unwrap(),
    })
}

/// A value different from `v` whose first difference from it is `v`'s own location.
fn changed(v: &Value) -> Value {
    match v {
        Value::Null => Value::Bool(false),
        Value::Bool(b) => Value::Bool(!b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i.wrapping_add(1)),
            (None, Some(u)) => Value::from(u.wrapping_sub(1)),
            _ => json!(n.as_f64().unwrap() + 1.0),
        },
        Value::String(s) => Value::String(format!("{s}!")),
        Value::Array(_) | Value::Object(_) => Value::Null,
    }
}

fn borrowed(steps: &[OwnedStep]) -> Vec<Step<'_>> {
    steps
        .iter()
        .map(|s| match s {
            OwnedStep::Key(k) => Step::Key(k),
            OwnedStep::Index(i) => Step::Index(*i),
        })
        .collect()
}

/// Noise rules the agreement property draws from (they select names and indexes the generated
/// documents have).
const IGNORE_RULES: &[&str] = &[
    "$..ignored",
    "$.meta",
    "$[0]",
    "$..[1]",
    "$.*.a",
    "$..b",
    "$.a[*]",
];
const UNORDERED_RULES: &[&str] = &["$..*", "$.a", "$..c", "$[*]"];

/// `v` with one edit at a location picked by `pick`: its value changed, a member removed, an
/// element added, the elements of an array rotated, or a member added; edit 5 changes nothing.
fn edited(v: &Value, pick: prop::sample::Index, edit: u8, seed: u64) -> Value {
    let mut all = Vec::new();
    locations(v, &mut Vec::new(), &mut all);
    let at = pick.get(&all).clone();
    let mut w = v.clone();
    let node = node_mut(&mut w, &at);
    match (edit, node) {
        (5, _) => {}
        (1, Value::Object(map)) if !map.is_empty() => {
            let key = map.keys().nth(seed as usize % map.len()).cloned().unwrap();
            map.remove(&key);
        }
        (2, Value::Array(values)) => {
            values.insert(seed as usize % (values.len() + 1), json!(seed % 3))
        }
        (3, Value::Array(values)) if !values.is_empty() => {
            let n = values.len();
            values.rotate_left(seed as usize % n);
        }
        (4, Value::Object(map)) => {
            map.insert(
                ["a", "b", "c", "ignored"][seed as usize % 4].to_string(),
                json!(seed % 2),
            );
        }
        (_, node) => *node = changed(node),
    }
    w
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn equal_documents_in_any_member_order_compare_equal(v in json_value(), seed in any::<u64>()) {
        let mut a = String::new();
        write_scrambled(&v, seed, &mut a);
        let mut b = String::new();
        write_scrambled(&v, seed.wrapping_mul(31).wrapping_add(7), &mut b);
        let r = rules(r#""ignore":["$..ignored"]"#);
        prop_assert_eq!(verdict(&r, &a, &b), Verdict::Equal, "{} vs {}", a, b);
        prop_assert_eq!(verdict(&CompareConfig::plain(), &a, &b), Verdict::Equal);
    }

    #[test]
    fn any_single_change_outside_the_ignore_rules_is_found_at_its_path(
        v in json_value(),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut all = Vec::new();
        locations(&v, &mut Vec::new(), &mut all);
        let at = pick.get(&all).clone();
        let mut w = v.clone();
        let node = node_mut(&mut w, &at);
        let before = node.clone();
        *node = changed(&before);
        let after = node.clone();

        let r = rules(r#""ignore":["$..ignored","$.meta"]"#);
        // The oracle for the two rules, independent of the path automaton.
        let ignored = at.iter().any(|s| *s == OwnedStep::Key("ignored".into()))
            || at.first() == Some(&OwnedStep::Key("meta".into()));
        let found = compare_json(&r, &v, &w);
        if ignored {
            prop_assert_eq!(found, None);
        } else {
            let path = render_path(&borrowed(&at));
            prop_assert_eq!(
                found,
                Some(Difference {
                    at: Location::Json(path),
                    primary: shown_value(&before),
                    shadow: shown_value(&after),
                })
            );
        }
        // Without rules every change is found, through the whole response path too.
        let text = |v: &Value| serde_json::to_string(v).unwrap();
        let plain = verdict(&CompareConfig::plain(), &text(&v), &text(&w));
        match plain {
            Verdict::BodyMismatch(Difference { at: Location::Json(p), .. }) => {
                prop_assert_eq!(p, render_path(&borrowed(&at)));
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn shuffled_unordered_arrays_compare_equal(
        values in prop::collection::vec(json_value(), 0..8),
        seed in any::<u64>(),
    ) {
        let mut shuffled = values.clone();
        // A seeded Fisher-Yates.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let r = rules(r#""unordered":["$.a"]"#);
        let a = json!({"a": values});
        let b = json!({"a": shuffled});
        prop_assert_eq!(compare_json(&r, &a, &b), None);
    }

    #[test]
    fn rendered_paths_select_their_location(v in json_value(), pick in any::<prop::sample::Index>()) {
        let mut all = Vec::new();
        locations(&v, &mut Vec::new(), &mut all);
        let at = borrowed(pick.get(&all).as_slice());
        let text = render_path(&at);
        let path = JsonPath::parse(&text).unwrap();
        let states = at.iter().fold(JsonPath::START, |s, step| path.step(s, *step));
        prop_assert!(path.selects(states), "{}", text);
    }

    #[test]
    fn the_fast_path_and_the_structural_comparison_agree(
        v in json_value(),
        pick in any::<prop::sample::Index>(),
        edit in 0..6u8,
        seed in any::<u64>(),
        ignore in prop::sample::subsequence(IGNORE_RULES.to_vec(), 0..=3),
        unordered in prop::sample::subsequence(UNORDERED_RULES.to_vec(), 0..=2),
    ) {
        let quote = |paths: Vec<&str>| paths.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(",");
        let r = rules(&format!(r#""ignore":[{}],"unordered":[{}]"#, quote(ignore), quote(unordered)));
        let w = edited(&v, pick, edit, seed);
        let (mut a, mut b) = (String::new(), String::new());
        write_scrambled(&v, seed, &mut a);
        write_scrambled(&w, seed.rotate_left(17) ^ 5, &mut b);
        // One automaton for both, as a comparison has.
        let mut states = rule_states::RuleStates::new(&r);
        let (x, y) = (digest::digest_with(&mut states, a.as_bytes()), digest::digest_with(&mut states, b.as_bytes()));
        // From a `Value`: JSON, no name twice: both get a digest.
        prop_assert!(x.is_some() && y.is_some(), "{} / {}", a, b);
        prop_assert_eq!(x == y, structurally(&r, &a, &b).is_none(), "{} / {}", a, b);
        prop_assert_eq!(x == y, verdict(&r, &a, &b) == Verdict::Equal);
    }

    #[test]
    fn equal_documents_have_equal_digests(v in json_value(), seed in any::<u64>()) {
        let (mut a, mut b) = (String::new(), String::new());
        write_scrambled(&v, seed, &mut a);
        write_scrambled(&v, seed.wrapping_mul(31).wrapping_add(7), &mut b);
        for r in [CompareConfig::plain(), rules(r#""ignore":["$..ignored"],"unordered":["$..*"]"#)] {
            prop_assert!(digests_equal(&r, &a, &b), "{} / {}", a, b);
        }
    }

    #[test]
    fn only_json_gets_a_digest(
        v in json_value(),
        at in any::<prop::sample::Index>(),
        byte in prop::sample::select(&b"[]{},:\"\\0123456789.eE+- tfnulx\x01\xc3"[..]),
        how in 0..3u8,
    ) {
        // A valid document with one byte replaced, inserted or removed: mostly not JSON.
        let mut text = serde_json::to_vec(&v).unwrap();
        let i = at.index(text.len() + 1);
        match how {
            0 if i < text.len() => text[i] = byte,
            1 => text.insert(i, byte),
            _ if i < text.len() => { text.remove(i); }
            _ => text.push(byte),
        }
        let r = rules(r#""ignore":["$..a"],"unordered":["$..*"]"#);
        if digest::digest(&r, &text).is_some() {
            prop_assert!(serde_json::from_slice::<Value>(&text).is_ok(), "{}", String::from_utf8_lossy(&text));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(a in prop::collection::vec(any::<u8>(), 0..64), b in prop::collection::vec(any::<u8>(), 0..64)) {
        let r = rules(r#""ignore":["$..x"],"unordered":["$..*"]"#);
        let v = compare_responses(&r, &typed(Some("application/json"), &a), &typed(None, &b));
        if a == b {
            prop_assert_eq!(v, Verdict::Equal);
        }
    }
}

#[test]
fn after_a_difference_the_next_comparison_skips_the_fast_path_and_stays_exact() {
    let r = rules(r#""ignore":["$.at"]"#);
    let equal = (r#"{"a":1,"b":[1,2],"at":1}"#, r#"{"b":[1,2],"a":1,"at":2}"#);
    assert_eq!(verdict(&r, equal.0, equal.1), Verdict::Equal);
    assert!(!r.last_differed.get());
    // A systematic difference: every comparison finds it, the fast path is not tried again.
    for _ in 0..3 {
        assert_eq!(
            verdict(&r, r#"{"a":1}"#, r#"{"a":1,"only_new":true}"#),
            body_mismatch("$.only_new", "<absent>", "true")
        );
        assert!(r.last_differed.get());
    }
    // Equal again: found equal by the structural comparison, the fast path back for the next.
    assert_eq!(verdict(&r, equal.0, equal.1), Verdict::Equal);
    assert!(!r.last_differed.get());
    assert_eq!(verdict(&r, equal.0, equal.1), Verdict::Equal);
    // The hint never makes two configurations differ.
    assert_eq!(r, rules(r#""ignore":["$.at"]"#));
}

#[test]
fn a_document_beyond_the_rule_states_bound_gets_no_digest_and_is_compared_structurally() {
    // Rule `$..xI..z` stays alive everywhere and advances once a member `xI` is above: each
    // set of names on the path is its own rule state (and `z` below each another).
    fn level(names: usize, depth: usize, leaf: &str) -> String {
        if depth == 0 {
            return leaf.to_string();
        }
        let members: Vec<String> = (0..names)
            .map(|i| format!(r#""x{i}":{}"#, level(names, depth - 1, leaf)))
            .collect();
        format!("{{{}}}", members.join(","))
    }
    let paths: Vec<String> = (0..16).map(|i| format!(r#""$..x{i}..z""#)).collect();
    let r = rules(&format!(r#""ignore":[{}]"#, paths.join(",")));
    // 8 names, two levels: fewer than 100 states.
    assert!(digest::digest(&r, level(8, 2, r#"{"z":1,"c":1}"#).as_bytes()).is_some());
    // 16 names, three levels: 696 sets of names alone.
    let (a, ignored, changed) = (
        level(16, 3, r#"{"z":1,"c":1}"#),
        level(16, 3, r#"{"z":2,"c":1}"#),
        level(16, 3, r#"{"z":1,"c":2}"#),
    );
    assert_eq!(digest::digest(&r, a.as_bytes()), None);
    assert_eq!(verdict(&r, &a, &ignored), Verdict::Equal);
    assert!(matches!(
        verdict(&r, &a, &changed),
        Verdict::BodyMismatch(_)
    ));
}
