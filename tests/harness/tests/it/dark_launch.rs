//! Dark launch through the real `.wasm`: a sampled read is mirrored, the primary's response body
//! is copied as it streams (never paused), the shadow's body is read in the call response, and
//! the two are compared in either order.
use crate::common;

use common::{chat, config, request, with};
use cutover_harness::{Action, Error, Filter, LogLevel};
use serde_json::json;

fn dark_launch(max_body_bytes: u64) -> String {
    let service = with(
        with(chat(0), "shadow_reads", json!({ "percentage": 100 })),
        "compare",
        json!({ "ignore": ["$.updated_at"], "max_body_bytes": max_body_bytes }),
    );
    config(&[service])
}

const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

fn compare_counter(f: &Filter, name: &str) -> u64 {
    f.counter(&format!("cutover.chat.compare_{name}"))
}

/// A read whose primary (legacy) answers `primary` in two chunks, the stream finished; returns
/// the shadow's token after the tick.
fn read_with_streamed_response(f: &mut Filter, id: &str, primary: &[u8]) -> Result<u32, Error> {
    let mut s = f.request(&request("GET", "/api/chat/7", id), None)?;
    s.respond_headers(200, &JSON)?;
    let (first, rest) = primary.split_at(primary.len() / 2);
    // The client's body is never held.
    assert_eq!(s.send_response_body(first, false)?, Action::Continue);
    assert_eq!(s.send_response_body(rest, true)?, Action::Continue);
    assert_eq!(s.downstream_body(), primary);
    s.finish()?;
    f.tick()?;
    let calls = f.pending_http_calls();
    assert_eq!(calls.len(), 1, "one shadow: {calls:?}");
    assert_eq!(calls[0].cluster, "chat_new");
    Ok(calls[0].token)
}

#[test]
fn equal_answers_under_the_noise_rules_count_equal() -> Result<(), Error> {
    let mut f = Filter::boot(&dark_launch(4096))?;
    let token = read_with_streamed_response(
        &mut f,
        "c-1",
        br#"{"id":7,"updated_at":"10:00:00","tags":["a"]}"#,
    )?;
    f.deliver_http_call_response(
        token,
        Some(200),
        &JSON,
        br#"{"tags":["a"],"updated_at":"10:00:05","id":7.0}"#,
    )?;
    assert_eq!(compare_counter(&f, "total"), 1);
    assert_eq!(compare_counter(&f, "equal"), 1);
    assert_eq!(f.counter("cutover.chat.shadow_reads_sent"), 1);
    assert_eq!(f.counter("cutover.chat.shadow_succeeded"), 1);
    Ok(())
}

#[test]
fn a_mismatch_is_counted_and_logged_when_the_primary_completes_last() -> Result<(), Error> {
    let mut f = Filter::boot(&dark_launch(4096))?;
    let mut s = f.request(&request("GET", "/api/chat/7", "c-2"), None)?;
    s.filter().tick()?;
    let token = s.filter().pending_http_calls()[0].token;
    // The shadow answers first, while the primary's body is still streaming.
    s.filter()
        .deliver_http_call_response(token, Some(200), &JSON, br#"{"id":7,"beta":true}"#)?;
    s.respond_headers(200, &JSON)?;
    assert_eq!(
        s.send_response_body(br#"{"id":7}"#, true)?,
        Action::Continue
    );
    s.finish()?;
    assert_eq!(compare_counter(&f, "body_mismatch"), 1);
    let warnings = f.logs_at_least(LogLevel::Warn);
    assert!(
        warnings.iter().any(|l| l.message
            == "cutover: response mismatch: service=chat method=GET path=/api/chat/7 correlation_id=c-2 kind=body at=$.beta primary=<absent> shadow=true"),
        "{warnings:?}"
    );
    Ok(())
}

#[test]
fn a_primary_body_over_the_cap_is_skipped_and_still_reaches_the_client() -> Result<(), Error> {
    let mut f = Filter::boot(&dark_launch(16))?;
    let body = br#"{"id":7,"text":"longer than sixteen bytes"}"#;
    let token = read_with_streamed_response(&mut f, "c-3", body)?;
    f.deliver_http_call_response(token, Some(200), &JSON, b"{}")?;
    assert_eq!(compare_counter(&f, "skipped_body_too_large"), 1);
    assert_eq!(compare_counter(&f, "equal"), 0);
    Ok(())
}

#[test]
fn a_reset_shadow_and_a_reset_stream_are_skipped() -> Result<(), Error> {
    let mut f = Filter::boot(&dark_launch(4096))?;
    let token = read_with_streamed_response(&mut f, "c-4", b"{}")?;
    f.deliver_http_call_response(token, None, &[] as &[(&str, &str)], b"")?;
    assert_eq!(compare_counter(&f, "skipped_shadow_failed"), 1);

    // The client goes away before the primary's response is complete.
    let mut s = f.request(&request("GET", "/api/chat/8", "c-5"), None)?;
    s.respond_headers(200, &JSON)?;
    s.send_response_body(b"{\"par", false)?;
    s.finish()?;
    f.tick()?;
    let token = f.pending_http_calls()[0].token;
    f.deliver_http_call_response(token, Some(200), &JSON, b"{}")?;
    assert_eq!(compare_counter(&f, "skipped_no_primary_response"), 1);
    assert_eq!(compare_counter(&f, "total"), 2);
    Ok(())
}

/// The filter's bound (`root::MAX_SHADOWS_IN_FLIGHT`): shadows, and so comparisons, in flight
/// per VM.
const MAX_IN_FLIGHT: usize = 10_000;

#[test]
fn beyond_the_in_flight_bound_a_comparison_is_skipped_and_counted() -> Result<(), Error> {
    let mut f = Filter::boot(&dark_launch(4096))?;
    let read = |f: &mut Filter, n: usize| -> Result<(), Error> {
        let mut s = f.request(&request("GET", "/api/chat/7", &format!("c-{n}")), None)?;
        s.respond_headers(200, &JSON)?;
        s.send_response_body(b"{}", true)?;
        s.finish()
    };
    // As many comparisons as the bound, every shadow dispatched and none answered yet.
    for n in 0..MAX_IN_FLIGHT {
        read(&mut f, n)?;
    }
    f.tick()?;
    assert_eq!(f.pending_http_calls().len(), MAX_IN_FLIGHT);
    assert_eq!(compare_counter(&f, "skipped_in_flight_limit"), 0);
    // One more: not mirrored, its comparison skipped and counted; the client's answer is whole.
    read(&mut f, MAX_IN_FLIGHT)?;
    f.tick()?;
    assert_eq!(f.pending_http_calls().len(), MAX_IN_FLIGHT);
    assert_eq!(compare_counter(&f, "total"), MAX_IN_FLIGHT as u64 + 1);
    assert_eq!(compare_counter(&f, "skipped_in_flight_limit"), 1);
    assert_eq!(f.counter("cutover.chat.shadow_failed_reset"), 1);
    // A finished comparison frees its place for the next one.
    let token = f.pending_http_calls()[0].token;
    f.deliver_http_call_response(token, Some(200), &JSON, b"{}")?;
    assert_eq!(compare_counter(&f, "equal"), 1);
    read(&mut f, MAX_IN_FLIGHT + 1)?;
    f.tick()?;
    assert_eq!(f.pending_http_calls().len(), MAX_IN_FLIGHT);
    assert_eq!(compare_counter(&f, "skipped_in_flight_limit"), 1);
    assert_eq!(compare_counter(&f, "total"), MAX_IN_FLIGHT as u64 + 2);
    Ok(())
}
