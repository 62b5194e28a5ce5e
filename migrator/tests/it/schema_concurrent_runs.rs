//! Two `migrator schema` runs at once: both wait for the lock, one applies, the other finds
//! nothing to do. The test holds the lock first so that both are certainly concurrent.
use crate::common;
use std::time::Duration;

use common::{advisory_waiters, migrator_cmd, wait_child, wait_for};
use cutover_pgfixture::TestDb;

#[test]
fn concurrent_runs_serialize() {
    let db = TestDb::create("mig_schema_concurrent");
    let mut holder = db.client();
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&migrator::schema::SCHEMA_LOCK_KEY],
        )
        .unwrap();

    let spawn = || {
        migrator_cmd()
            .args(["schema", "--target-url", &db.url])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn();
    let second = spawn();
    let mut observer = db.client();
    wait_for(
        "both runners to wait for the schema lock",
        Duration::from_secs(30),
        || advisory_waiters(&mut observer, &db.name) == 2,
    );
    let recorded: bool = observer
        .query_one("SELECT to_regclass('_sqlx_migrations') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!recorded, "a runner migrated without the lock");

    holder
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&migrator::schema::SCHEMA_LOCK_KEY],
        )
        .unwrap();
    let a = wait_child(first, Duration::from_secs(60));
    let b = wait_child(second, Duration::from_secs(60));
    a.assert_code(0);
    b.assert_code(0);
    let applied_by = [&a, &b]
        .iter()
        .filter(|o| o.stdout.contains("applied 001_users"))
        .count();
    assert_eq!(
        applied_by, 1,
        "exactly one runner applies\n{}\n{}",
        a.stdout, b.stdout
    );
    let versions: i64 = observer
        .query_one("SELECT count(*) FROM _sqlx_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(versions, 3);
    assert_eq!(advisory_waiters(&mut observer, &db.name), 0);
    let held: i64 = observer
        .query_one(
            // This database only: other tests of the binary run beside this one.
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND l.pid <> pg_backend_pid() AND d.datname = $1",
            &[&db.name],
        )
        .unwrap()
        .get(0);
    assert_eq!(held, 0, "a runner left its lock behind");
}
