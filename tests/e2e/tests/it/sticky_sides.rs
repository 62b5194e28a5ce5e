//! The same key reaches the same side across Envoy restarts and with `--concurrency 2`, and
//! that side is the one the bucketing formula gives.

use std::collections::BTreeMap;

use cutover_e2e::{config, Envoy, Upstream};
use cutover_filter::bucket::bucket;

const KEYS: usize = 200;
const PERCENTAGE: u8 = 50;

fn expected_side(key: &str) -> &'static str {
    if bucket("chat", key.as_bytes()) <= PERCENTAGE {
        "chat_new"
    } else {
        "chat_legacy"
    }
}

/// Side per key, sending each key over several connections that together reach every worker.
fn observe(envoy: &Envoy, connections: usize) -> BTreeMap<String, String> {
    let mut clients = envoy.clients_on_all_workers(connections);
    let mut sides = BTreeMap::new();
    for i in 0..KEYS {
        let key = format!("user-{i}");
        let mut seen = Vec::new();
        for client in clients.iter_mut() {
            let response = client.get_with(
                &format!("/api/chat/messages/{i}"),
                &[("x-correlation-id", key.as_bytes())],
            );
            assert_eq!(response.status, 200, "key {key}: {}", response.body_text());
            seen.push(response.served_by().expect("x-served-by"));
        }
        seen.dedup();
        assert_eq!(
            seen.len(),
            1,
            "key {key} reached different sides on different connections: {seen:?}"
        );
        sides.insert(key, seen.remove(0));
    }
    sides
}

#[test]
fn same_key_same_side_across_restarts_and_workers() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let config = config::chat_config(PERCENTAGE);

    let first = observe(&Envoy::boot(&config, &[&legacy, &new]), 1);
    let second = observe(&Envoy::boot(&config, &[&legacy, &new]), 1);
    let two_workers = Envoy::builder(&config)
        .upstream(&legacy)
        .upstream(&new)
        .concurrency(2)
        .boot();
    let third = observe(&two_workers, 4);

    assert_eq!(first, second, "a restart moved keys");
    assert_eq!(first, third, "--concurrency 2 moved keys");
    for (key, side) in &first {
        assert_eq!(side, expected_side(key), "key {key}");
    }
    let new_count = first.values().filter(|side| *side == "chat_new").count();
    assert!(
        new_count > 0 && new_count < KEYS,
        "a 50% split sent {new_count} of {KEYS} keys to new"
    );
}
