//! The root context ticks fast (2 ms) only while shadows wait to be dispatched; while they are in
//! flight it ticks once a second (expiry), and not at all when idle.
use crate::common;

use std::time::Duration;

use common::{chat_dual_write, request};
use cutover_harness::{Error, Filter};

const FAST: Duration = Duration::from_millis(2);
const SLOW: Duration = Duration::from_millis(1000);

#[test]
fn the_fast_tick_runs_only_while_shadows_are_queued() -> Result<(), Error> {
    let mut f = Filter::boot(&chat_dual_write(0, 1 << 20))?;
    assert_eq!(f.tick_period(), None, "idle before any write");

    let mut first = f.request(&request("POST", "/api/chat/a", "k1"), Some(b"{}"))?;
    assert_eq!(
        first.filter().tick_period(),
        Some(FAST),
        "a shadow is queued"
    );
    first.respond(201, &[] as &[(&str, &str)])?;
    first.finish()?;
    f.tick()?;
    assert_eq!(f.pending_http_calls().len(), 1);
    assert_eq!(f.tick_period(), Some(SLOW), "in flight, nothing queued");

    // A second write while the first is in flight switches back to fast until it is sent.
    let mut second = f.request(&request("POST", "/api/chat/b", "k2"), Some(b"{}"))?;
    assert_eq!(second.filter().tick_period(), Some(FAST));
    second.respond(201, &[] as &[(&str, &str)])?;
    second.finish()?;
    f.tick()?;
    assert_eq!(f.pending_http_calls().len(), 2);
    assert_eq!(f.tick_period(), Some(SLOW));

    let tokens: Vec<u32> = f.pending_http_calls().iter().map(|c| c.token).collect();
    f.deliver_http_call_response(tokens[0], Some(200), &[] as &[(&str, &str)], b"")?;
    assert_eq!(f.tick_period(), Some(SLOW), "one call still in flight");
    f.deliver_http_call_response(tokens[1], Some(200), &[] as &[(&str, &str)], b"")?;
    assert_eq!(f.tick_period(), None, "idle again");
    assert_eq!(f.counter("cutover.chat.shadow_succeeded"), 2);
    Ok(())
}
