//! `verify --settle` under a steady write load: a writer thread updates rows on the source and,
//! a moment later, the same rows on the target (as dual-write does), so at any instant some keys
//! differ. Consistent systems → no persistent difference, exit 0; a drift injected on the target
//! → still found, exit 1. A non-positive duration is a usage error (exit 2).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common;
use common::Env;

/// Writes until `stop` (bounded to 20,000 writes and 120 s): each write sets a user's
/// password_hash on the source, then 10 ms later on the target. `avoid` is never written.
fn steady_writer(env: &Env, avoid: String, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    let (mut source, mut target) = (env.source_client(), env.target_client());
    thread::spawn(move || {
        let ids: Vec<String> = source
            .query(
                "SELECT id::text FROM legacy.users WHERE id::text <> $1 ORDER BY id",
                &[&avoid],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let started = Instant::now();
        let mut writes = 0u64;
        while !stop.load(Ordering::Relaxed)
            && writes < 20_000
            && started.elapsed() < Duration::from_secs(120)
        {
            let id = &ids[(writes as usize * 7919) % ids.len()];
            let value = format!("hash-{writes}");
            let sql = |table: &str| {
                format!("UPDATE {table} SET password_hash = $1 WHERE id = CAST(CAST($2 AS text) AS uuid)")
            };
            source.execute(&sql("legacy.users"), &[&value, id]).unwrap();
            thread::sleep(Duration::from_millis(10));
            target.execute(&sql("auth.users"), &[&value, id]).unwrap();
            writes += 1;
        }
        writes
    })
}

fn users_report(json: &serde_json::Value) -> serde_json::Value {
    json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "users")
        .unwrap()
        .clone()
}

#[test]
fn settle_reports_only_persistent_differences_under_live_writes() {
    let env = Env::new("mig_settle", 300);
    env.run(&["copy"]).assert_code(0);
    let drifted: String = env
        .source_client()
        .query_one("SELECT id::text FROM legacy.users ORDER BY id LIMIT 1", &[])
        .unwrap()
        .get(0);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = steady_writer(&env, drifted.clone(), stop.clone());
    let settle = [
        "verify",
        "--tables",
        "users",
        "--settle",
        "300ms",
        "--rechecks",
        "3",
        "--format",
        "json",
    ];

    // Consistent (only writes in flight): exit 0, nothing persistent.
    let consistent = env.run(&settle);
    consistent.assert_code(0);
    let users = users_report(&consistent.json());
    assert_eq!(users["changed"], serde_json::json!([]));

    // Drift on the target that no write repairs: found, in every re-check.
    env.target_client()
        .execute(
            "UPDATE auth.users SET password_hash = 'drift' WHERE id = CAST(CAST($1 AS text) AS uuid)",
            &[&drifted],
        )
        .unwrap();
    let drift = env.run(&settle);
    drift.assert_code(1);
    let users = users_report(&drift.json());
    let changed: Vec<&str> = users["changed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["key"].as_str())
        .collect();
    assert_eq!(changed, [drifted.as_str()], "only the drift persists");

    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 0, "the writer wrote");
    // The writes done, a plain verify agrees: the drift is the only difference.
    let plain = env.run(&["verify", "--tables", "users", "--format", "json"]);
    plain.assert_code(1);
    assert_eq!(
        users_report(&plain.json())["changed"][0]["key"],
        drifted.as_str()
    );
    assert_eq!(plain.json()["differences"], 1);
}

#[test]
fn settle_needs_a_positive_duration() {
    let env = Env::new("mig_settle_usage", 1);
    for bad in ["0s", "-1s", "0", "soon"] {
        let out = env.run(&["verify", &format!("--settle={bad}")]);
        out.assert_code(2);
        assert!(out.stderr.contains("--settle"), "{bad}: {}", out.stderr);
    }
    let out = env.run(&["verify", "--rechecks", "0", "--settle", "1s"]);
    out.assert_code(2);
}
