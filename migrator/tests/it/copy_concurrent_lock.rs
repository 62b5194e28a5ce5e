//! Two copies into one target: while one runs, a second with --no-wait refuses (exit 6, saying
//! another copy holds the lock) and a second without it waits, then re-runs with nothing to do.
use crate::common;
use std::time::Duration;

use common::{advisory_waiters, wait_child, wait_for, Env};

#[test]
fn second_copy_refuses_or_waits() {
    let env = Env::new("mig_copy_lock", 40_000);
    let first = env.spawn(&["copy", "--tables", "users", "--batch-size", "50"]);
    let mut observer = env.target_client();
    wait_for(
        "the first copy to commit a batch",
        Duration::from_secs(120),
        || {
            observer
                .query_one("SELECT count(*) FROM auth.users", &[])
                .map(|r| r.get::<_, i64>(0) > 0)
                .unwrap_or(false)
        },
    );

    let refused = env.run(&["copy", "--tables", "users", "--no-wait"]);
    refused.assert_code(6);
    assert!(
        refused.stderr.contains("another `migrator copy`"),
        "{}",
        refused.stderr
    );
    let runs: i64 = observer
        .query_one("SELECT count(*) FROM cutover_migrator.copy_runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(runs, 1, "the refused copy must not start a run");

    let waiting = env.spawn(&["copy", "--tables", "users"]);
    wait_for(
        "the second copy to wait for the lock",
        Duration::from_secs(60),
        || advisory_waiters(&mut observer, &env.target.name) == 1,
    );
    let users_now: i64 = observer
        .query_one("SELECT count(*) FROM auth.users", &[])
        .unwrap()
        .get(0);
    assert!(
        users_now < 40_000,
        "the first copy finished too early for the test to show waiting"
    );

    wait_child(first, Duration::from_secs(300)).assert_code(0);
    let second = wait_child(waiting, Duration::from_secs(300));
    second.assert_code(0);
    assert!(second.stderr.contains("waiting"), "{}", second.stderr);
    let last = env.latest_checkpoints();
    assert_eq!(
        last,
        [("users".to_string(), 40_000, 0, 0, 40_000, true)],
        "the waiting copy ran after the first, with nothing to do"
    );
    env.assert_equal("users");
}
