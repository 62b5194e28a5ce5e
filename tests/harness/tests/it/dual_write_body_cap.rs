//! Dual-write: a body over max_body_bytes goes to the primary untouched; its shadow is skipped.
use crate::common;

use common::{body, chat_dual_write, request};
use cutover_harness::{Error, Filter};

const CAP: u64 = 64 * 1024;

fn post(f: &mut Filter, len: usize) -> Result<(), Error> {
    let payload = body(len);
    let mut s = f.start_request(&request("POST", "/api/chat/upload", "corr-1"), false)?;
    let chunks: Vec<&[u8]> = payload.chunks(16 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        s.send_body(chunk, i + 1 == chunks.len())?;
    }
    assert!(
        s.local_response().is_none(),
        "the filter must not answer (e.g. 413): {:?}",
        s.local_response()
    );
    assert!(
        s.upstream_body() == payload,
        "primary got {} of {} bytes",
        s.upstream_body().len(),
        payload.len()
    );
    s.respond(200, &[] as &[(&str, &str)])?;
    s.finish()?;
    f.tick()
}

#[test]
fn a_body_over_the_cap_skips_the_shadow_and_counts_it() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(50, CAP))?;
    post(&mut f, 100 * 1024)?;
    assert!(
        f.pending_http_calls().is_empty(),
        "{:?}",
        f.pending_http_calls()
            .iter()
            .map(|c| &c.cluster)
            .collect::<Vec<_>>()
    );
    assert_eq!(f.counter("cutover.chat.shadow_skipped_body_too_large"), 1);
    assert_eq!(f.counter("cutover.chat.shadow_sent"), 0);
    Ok(())
}

#[test]
fn a_body_exactly_at_the_cap_is_mirrored() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(50, CAP))?;
    post(&mut f, CAP as usize)?;
    assert_eq!(f.pending_http_calls().len(), 1);
    assert_eq!(f.pending_http_calls()[0].body.len(), CAP as usize);
    assert_eq!(f.counter("cutover.chat.shadow_skipped_body_too_large"), 0);
    Ok(())
}
