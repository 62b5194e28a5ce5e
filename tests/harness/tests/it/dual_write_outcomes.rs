//! Dual-write outcomes: every shadow answer is counted per service, also when the HTTP context
//! that sent the write is long gone (the root context dispatches and hears back).
use crate::common;

use std::time::Duration;

use common::{chat_dual_write, request};
use cutover_harness::{Error, Filter, LogLevel};

const MIB: u64 = 1 << 20;

/// A mirrored POST whose primary answered `primary_status`; the HTTP context is finished
/// (`proxy_on_done`/`proxy_on_delete`) before the shadow answers. Returns the shadow's token.
fn write_then_finish(f: &mut Filter, primary_status: u16) -> Result<u32, Error> {
    let mut s = f.request(
        &request("POST", "/api/chat/send?x=1", "corr-77"),
        Some(b"{\"m\":\"hi\"}"),
    )?;
    s.respond(primary_status, &[] as &[(&str, &str)])?;
    s.finish()?;
    f.tick()?;
    let calls = f.pending_http_calls();
    assert_eq!(calls.len(), 1, "expected one shadow in flight: {calls:?}");
    Ok(calls[0].token)
}

fn shadow_counters(f: &Filter) -> [(String, u64); 9] {
    [
        "succeeded",
        "failed_3xx",
        "failed_4xx",
        "failed_5xx",
        "failed_reset",
        "timed_out",
        "mismatch",
        "sent",
        "skipped_body_too_large",
    ]
    .map(|s| {
        let name = format!("cutover.chat.shadow_{s}");
        let v = f.counter(&name);
        (s.to_string(), v)
    })
}

fn assert_counters(f: &Filter, expected: &[(&str, u64)]) {
    for (name, value) in shadow_counters(f) {
        let want = expected
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v);
        assert_eq!(value, want, "shadow_{name}");
    }
}

#[test]
fn a_2xx_shadow_counts_succeeded() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(0, MIB))?;
    let token = write_then_finish(&mut f, 201)?;
    f.deliver_http_call_response(
        token,
        Some(200),
        &[("content-type", "application/json")],
        b"{}",
    )?;
    assert_counters(&f, &[("sent", 1), ("succeeded", 1)]);
    Ok(())
}

#[test]
fn primary_201_and_shadow_500_count_failed_5xx_and_mismatch_and_log_it() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(0, MIB))?;
    let token = write_then_finish(&mut f, 201)?;
    f.clear_logs();
    f.deliver_http_call_response(token, Some(500), &[] as &[(&str, &str)], b"boom")?;
    assert_counters(&f, &[("sent", 1), ("failed_5xx", 1), ("mismatch", 1)]);
    let warnings = f.logs_at_least(LogLevel::Warn);
    assert!(
        warnings.iter().any(
            |l| ["chat", "POST", "/api/chat/send", "corr-77", "201", "500"]
                .iter()
                .all(|w| l.message.contains(w))
        ),
        "no warning naming service, method, path, correlation id and both statuses: {warnings:?}"
    );
    Ok(())
}

#[test]
fn a_failing_primary_and_a_succeeding_shadow_is_also_a_mismatch() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(100, MIB))?;
    let token = write_then_finish(&mut f, 503)?;
    f.deliver_http_call_response(token, Some(204), &[] as &[(&str, &str)], b"")?;
    assert_counters(&f, &[("sent", 1), ("succeeded", 1), ("mismatch", 1)]);
    Ok(())
}

#[test]
fn status_classes_3xx_and_4xx_are_counted_apart() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(0, MIB))?;
    let t1 = write_then_finish(&mut f, 200)?;
    f.deliver_http_call_response(t1, Some(302), &[("location", "/elsewhere")], b"")?;
    let t2 = write_then_finish(&mut f, 200)?;
    f.deliver_http_call_response(t2, Some(409), &[] as &[(&str, &str)], b"conflict")?;
    assert_counters(
        &f,
        &[
            ("sent", 2),
            ("failed_3xx", 1),
            ("failed_4xx", 1),
            ("mismatch", 2),
        ],
    );
    Ok(())
}

#[test]
fn a_reset_shadow_counts_failed_reset() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(0, MIB))?;
    let token = write_then_finish(&mut f, 201)?;
    f.deliver_http_call_response(token, None, &[] as &[(&str, &str)], b"")?;
    assert_counters(&f, &[("sent", 1), ("failed_reset", 1), ("mismatch", 1)]);
    Ok(())
}

#[test]
fn a_shadow_cluster_envoy_does_not_know_counts_failed_reset_without_a_call() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(0, MIB))?;
    f.make_cluster_unknown("chat_new");
    let mut s = f.request(&request("POST", "/api/chat/send", "corr-1"), Some(b"{}"))?;
    s.respond(200, &[] as &[(&str, &str)])?;
    s.finish()?;
    f.tick()?;
    assert!(f.pending_http_calls().is_empty());
    assert_eq!(f.counter("cutover.chat.shadow_failed_reset"), 1);
    Ok(())
}

#[test]
fn envoys_timeout_reply_counts_timed_out() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(0, MIB))?;
    let token = write_then_finish(&mut f, 201)?;
    // Envoy's async client answers a call whose timeout fired with a local 504.
    f.advance_clock(Duration::from_millis(5000));
    f.deliver_http_call_response(
        token,
        Some(504),
        &[("content-type", "text/plain")],
        b"upstream request timeout",
    )?;
    assert_counters(&f, &[("sent", 1), ("timed_out", 1), ("mismatch", 1)]);
    Ok(())
}

#[test]
fn the_outcome_is_counted_whether_the_shadow_answers_before_or_after_the_primary(
) -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(0, MIB))?;
    // Shadow first: it answers while the client's request is still waiting for the primary.
    let mut s = f.request(&request("POST", "/api/chat/send", "early"), Some(b"{}"))?;
    s.filter().tick()?;
    let token = s.filter().pending_http_calls()[0].token;
    s.filter()
        .deliver_http_call_response(token, Some(500), &[] as &[(&str, &str)], b"")?;
    s.respond(201, &[] as &[(&str, &str)])?;
    s.finish()?;
    // Shadow last: it answers after the HTTP context was deleted.
    let token = write_then_finish(&mut f, 201)?;
    f.deliver_http_call_response(token, Some(200), &[] as &[(&str, &str)], b"")?;
    assert_counters(
        &f,
        &[
            ("sent", 2),
            ("failed_5xx", 1),
            ("succeeded", 1),
            ("mismatch", 1),
        ],
    );
    Ok(())
}

#[test]
fn many_writes_in_flight_are_all_accounted_for() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(50, MIB))?;
    for n in 0..50 {
        let mut s = f.request(
            &request("POST", "/api/chat/send", &format!("c{n}")),
            Some(b"{}"),
        )?;
        s.respond(200, &[] as &[(&str, &str)])?;
        s.finish()?;
    }
    f.tick()?;
    let tokens: Vec<u32> = f.pending_http_calls().iter().map(|c| c.token).collect();
    assert_eq!(tokens.len(), 50);
    for (i, token) in tokens.into_iter().enumerate() {
        let status = if i % 5 == 0 { None } else { Some(200) };
        f.deliver_http_call_response(token, status, &[] as &[(&str, &str)], b"")?;
    }
    assert_counters(
        &f,
        &[
            ("sent", 50),
            ("succeeded", 40),
            ("failed_reset", 10),
            ("mismatch", 10),
        ],
    );
    Ok(())
}
