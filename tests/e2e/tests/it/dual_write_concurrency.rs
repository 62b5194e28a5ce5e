//! With `--concurrency 2` (one root context per worker) the dual-write counters add up to the
//! writes sent.

use std::time::Duration;

use cutover_e2e::{config, Envoy, Upstream};

#[test]
fn counters_add_up_across_two_workers() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let envoy = Envoy::builder(&config::chat_dual_write_config(50, 5000, 1024 * 1024))
        .upstream(&legacy)
        .upstream(&new)
        .concurrency(2)
        .boot();

    const CONNECTIONS: u64 = 8;
    const WRITES_PER_CONNECTION: u64 = 10;
    let mut clients = envoy.clients_on_all_workers(CONNECTIONS as usize);
    let connections = clients.len() as u64;
    for round in 0..WRITES_PER_CONNECTION {
        for (c, client) in clients.iter_mut().enumerate() {
            let key = format!("c{c}-r{round}");
            let response = client.send(
                "PATCH",
                "/api/conversations/1",
                &[("x-correlation-id", key.as_bytes())],
                key.as_bytes(),
            );
            assert_eq!(response.status, 200);
        }
    }
    let writes = connections * WRITES_PER_CONNECTION;
    let succeeded = envoy.wait_for_stat(
        "wasmcustom.cutover.chat.shadow_succeeded",
        writes,
        Duration::from_secs(15),
    );
    assert_eq!(succeeded, writes);
    assert_eq!(envoy.cutover_counter("chat", "shadow_sent"), writes);
    let routed = envoy.cutover_counter("chat", "routed_new")
        + envoy.cutover_counter("chat", "routed_legacy");
    assert_eq!(routed, writes);
    // Every write reached both sides: once as primary, once as shadow.
    assert_eq!(
        (legacy.request_count() + new.request_count()) as u64,
        2 * writes
    );
    let shadows = legacy
        .requests()
        .into_iter()
        .chain(new.requests())
        .filter(|r| r.header("x-cutover-shadow").is_some())
        .count();
    assert_eq!(shadows as u64, writes);
}
