//! Dark launch in real Envoy: a sample of reads is mirrored to the other side and the two
//! answers compared. Two upstreams differ in controlled ways (a field only in new, a reordered
//! array, a changed timestamp under an ignore rule, a different status, a non-JSON body, a body
//! over the cap); the counters and the warn lines name exactly those, and the client always gets
//! the primary's answer, byte for byte.

use std::collections::BTreeSet;
use std::time::Duration;

use cutover_e2e::{config, Envoy, Upstream};
use cutover_filter::config::FilterConfig;
use cutover_filter::reads::is_read_mirrored;
use serde_json::{json, Value};

/// Every request goes to legacy (`new_percentage` 0); the shadow goes to new.
fn dark_launch_config(percentage: u8, max_body_bytes: u64) -> Value {
    let mut service = config::chat_service(0);
    service["shadow_reads"] = json!({ "percentage": percentage, "methods": ["GET"] });
    service["compare"] = json!({
        "ignore": ["$.updated_at", "$..etag"],
        "unordered": ["$.tags"],
        "max_body_bytes": max_body_bytes
    });
    config::filter_config(vec![service])
}

const JSON: &str = "application/json";

/// A JSON document of at least `min_bytes` bytes (at most 40 more), the same for the same
/// size: several body chunks through Envoy.
fn big_document(min_bytes: usize) -> Vec<u8> {
    let mut doc = String::from(r#"{"items":["#);
    let mut i = 0;
    while doc.len() + 2 < min_bytes {
        if i > 0 {
            doc.push(',');
        }
        doc.push_str(&format!(r#"{{"id":{i},"name":"item-{i:08}"}}"#));
        i += 1;
    }
    doc.push_str("]}");
    doc.into_bytes()
}

struct Case {
    path: &'static str,
    legacy: (u16, &'static str, Vec<u8>),
    new: (u16, &'static str, Vec<u8>),
    /// The warn line's `kind=… at=… primary=… shadow=…` part, `None` when equal or skipped.
    mismatch: Option<&'static str>,
    counter: &'static str,
}

fn cases(cap: usize) -> Vec<Case> {
    let j = |s: &str| s.as_bytes().to_vec();
    vec![
        Case {
            path: "/api/chat/field-only-in-new",
            legacy: (200, JSON, j(r#"{"id":1,"name":"a"}"#)),
            new: (200, JSON, j(r#"{"name":"a","id":1,"beta":{"on":true}}"#)),
            mismatch: Some(r#"kind=body at=$.beta primary=<absent> shadow={"on":true}"#),
            counter: "compare_body_mismatch",
        },
        Case {
            path: "/api/chat/reordered",
            legacy: (200, JSON, j(r#"{"tags":["x","y","z"],"n":1}"#)),
            new: (200, JSON, j(r#"{"n":1.0,"tags":["z","x","y"]}"#)),
            mismatch: None,
            counter: "compare_equal",
        },
        Case {
            path: "/api/chat/timestamp",
            legacy: (
                200,
                JSON,
                j(r#"{"id":2,"updated_at":"2026-12-01T10:00:00Z","meta":{"etag":"a1"}}"#),
            ),
            new: (
                200,
                JSON,
                j(r#"{"meta":{"etag":"b7"},"updated_at":"2026-12-01T10:00:09Z","id":2}"#),
            ),
            mismatch: None,
            counter: "compare_equal",
        },
        Case {
            path: "/api/chat/status",
            legacy: (200, JSON, j(r#"{"ok":true}"#)),
            new: (500, JSON, j(r#"{"ok":false}"#)),
            mismatch: Some("kind=status primary=200 shadow=500"),
            counter: "compare_status_mismatch",
        },
        Case {
            path: "/api/chat/page",
            legacy: (200, "text/html", j("<p>hello</p>")),
            new: (200, "text/html", j("<p>hullo</p>")),
            mismatch: Some("kind=body at=byte:4 primary=ello</p> shadow=ullo</p>"),
            counter: "compare_body_mismatch",
        },
        Case {
            path: "/api/chat/big",
            legacy: (200, JSON, big_document(cap - 100)),
            new: (200, JSON, big_document(cap - 100)),
            mismatch: None,
            counter: "compare_equal",
        },
        Case {
            path: "/api/chat/too-big",
            legacy: (200, JSON, big_document(cap + 1)),
            new: (200, JSON, j("{}")),
            mismatch: None,
            counter: "compare_skipped_body_too_large",
        },
    ]
}

const COMPARE_COUNTERS: [&str; 8] = [
    "compare_equal",
    "compare_status_mismatch",
    "compare_body_mismatch",
    "compare_header_mismatch",
    "compare_skipped_body_too_large",
    "compare_skipped_shadow_failed",
    "compare_skipped_no_primary_response",
    "compare_skipped_in_flight_limit",
];

#[test]
fn differences_are_counted_and_logged_at_their_path_and_clients_get_the_primary() {
    const CAP: usize = 200_000;
    const ROUNDS: usize = 3;
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let cases = cases(CAP);
    for case in &cases {
        legacy.set_canned(case.path, case.legacy.0, case.legacy.1, &case.legacy.2);
        new.set_canned(case.path, case.new.0, case.new.1, &case.new.2);
    }
    let envoy = Envoy::boot(&dark_launch_config(100, CAP as u64), &[&legacy, &new]);
    let mut client = envoy.client();

    for round in 0..ROUNDS {
        for (i, case) in cases.iter().enumerate() {
            let id = format!("dark-{round}-{i}");
            let response = client.get_with(case.path, &[("x-correlation-id", id.as_bytes())]);
            // The primary's answer, unchanged: status, content type, body bytes.
            assert_eq!(response.status, case.legacy.0, "{}", case.path);
            assert_eq!(response.served_by().as_deref(), Some("chat_legacy"));
            assert_eq!(
                response.header("content-type").as_deref(),
                Some(case.legacy.1),
                "{}",
                case.path
            );
            assert!(
                response.body == case.legacy.2,
                "{}: body differs from the primary's",
                case.path
            );
        }
    }

    let total = (ROUNDS * cases.len()) as u64;
    let settled = envoy.wait_for_stat_where(
        "wasmcustom.cutover.chat.compare_total",
        Duration::from_secs(20),
        |v| v == total,
    );
    assert_eq!(settled, total);
    // Every comparison ends in exactly one outcome; wait until they all did.
    let sum = || -> u64 {
        COMPARE_COUNTERS
            .iter()
            .map(|c| envoy.cutover_counter("chat", c))
            .sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sum() < total && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for counter in COMPARE_COUNTERS {
        let expected = cases.iter().filter(|c| c.counter == counter).count() * ROUNDS;
        assert_eq!(
            envoy.cutover_counter("chat", counter),
            expected as u64,
            "{counter}"
        );
    }
    assert_eq!(envoy.cutover_counter("chat", "shadow_reads_sent"), total);
    assert_eq!(envoy.cutover_counter("chat", "shadow_sent"), total);
    // Each shadow was a GET to new marked as a shadow.
    let shadows = new.wait_for_requests(total as usize, Duration::from_secs(10));
    assert!(shadows
        .iter()
        .all(|r| r.method == "GET" && r.header_str("x-cutover-shadow").as_deref() == Some("true")));

    // The warn lines name exactly the mismatches: request, correlation id and first difference.
    let log = envoy.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[warning]") && l.contains("cutover: response mismatch:"))
        .collect();
    let mut expected = BTreeSet::new();
    for round in 0..ROUNDS {
        for (i, case) in cases.iter().enumerate() {
            if let Some(difference) = case.mismatch {
                expected.insert(format!(
                    "cutover: response mismatch: service=chat method=GET path={} correlation_id=dark-{round}-{i} {difference}",
                    case.path
                ));
            }
        }
    }
    let found: BTreeSet<String> = lines
        .iter()
        .map(|l| {
            let start = l.find("cutover: response mismatch:").unwrap_or(0);
            l[start..].to_string()
        })
        .collect();
    assert_eq!(
        found,
        expected,
        "warn lines in {}",
        envoy.log_path().display()
    );
    assert_eq!(lines.len(), expected.len(), "one line per mismatch");
    // No body beyond the excerpts (log_bodies is off).
    assert!(!log.contains("item-00000100"), "a body reached the log");
}

#[test]
fn the_sampled_share_of_2000_reads_is_within_3_sigma() {
    const READS: u64 = 2_000;
    const PERCENTAGE: u8 = 10;
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    for upstream in [&legacy, &new] {
        upstream.set_canned("/api/chat/item", 200, JSON, br#"{"id":1}"#);
    }
    let envoy = Envoy::boot(&dark_launch_config(PERCENTAGE, 4096), &[&legacy, &new]);
    let mut client = envoy.client();
    let service =
        FilterConfig::from_json(dark_launch_config(PERCENTAGE, 4096).to_string().as_bytes())
            .unwrap()
            .services
            .remove(0);
    let mut predicted = BTreeSet::new();
    for i in 0..READS {
        // Request ids shaped like Envoy's own; Envoy keeps a request id the client sent (the
        // listener does not use the remote address, so no request is an edge request).
        let request_id = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            i * 2_654_435_761 % (1 << 32),
            i
        );
        if is_read_mirrored(&service, b"GET", Some(request_id.as_bytes())) {
            predicted.insert(request_id.clone());
        }
        let key = format!("share-{i}");
        let response = client.get_with(
            "/api/chat/item",
            &[
                ("x-correlation-id", key.as_bytes()),
                ("x-request-id", request_id.as_bytes()),
            ],
        );
        assert_eq!(response.status, 200);
        assert_eq!(response.body, br#"{"id":1}"#);
    }
    assert_eq!(envoy.cutover_counter("chat", "routed_legacy"), READS);
    let sampled = envoy.cutover_counter("chat", "shadow_reads_sent");
    let p = f64::from(PERCENTAGE) / 100.0;
    let mean = READS as f64 * p;
    let sigma = (READS as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (sampled as f64 - mean).abs() <= 3.0 * sigma,
        "{sampled} of {READS} sampled, expected {mean} ± {:.1}",
        3.0 * sigma
    );
    // Exactly the requests the core's sampling function picks.
    let shadows = new.wait_for_requests(sampled as usize, Duration::from_secs(10));
    let mirrored: BTreeSet<String> = shadows
        .iter()
        .filter_map(|r| r.header_str("x-request-id"))
        .collect();
    assert_eq!(mirrored, predicted);
    // Each sampled read is compared once and, the answers being equal, found equal.
    let compared = envoy.wait_for_stat(
        "wasmcustom.cutover.chat.compare_equal",
        sampled,
        Duration::from_secs(20),
    );
    assert_eq!(compared, sampled);
    assert_eq!(envoy.cutover_counter("chat", "compare_total"), sampled);
}
