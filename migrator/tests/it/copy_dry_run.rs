//! `copy --dry-run` reports what would be inserted and updated, writes nothing and takes no lock.
use crate::common;
use common::Env;

#[test]
fn dry_run_reports_and_writes_nothing() {
    let env = Env::new("mig_copy_dry", 800);
    let out = env.run(&["copy", "--dry-run", "--batch-size", "300"]);
    out.assert_code(0);
    assert_eq!(out.summary("users"), [800, 0, 0]);
    assert_eq!(env.count("auth.users"), 0);
    assert!(
        !env.has_bookkeeping(),
        "a dry run created the bookkeeping schema"
    );

    env.run(&["copy"]).assert_code(0);
    env.source_client()
        .batch_execute(
            "UPDATE legacy.tasks SET title = title || '!' WHERE id IN (SELECT id FROM legacy.tasks ORDER BY id LIMIT 5);
             INSERT INTO legacy.tasks (id, task_type, title) VALUES ('00000000-0000-0000-0000-0000000000aa', 'bugfix', 'new');",
        )
        .unwrap();
    let snapshot = |env: &Env| -> (String, i64) {
        let row = env
            .target_client()
            .query_one(
                "SELECT (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM orchestration.coding_tasks t),
                        (SELECT count(*) FROM cutover_migrator.copy_checkpoints)",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    let before = snapshot(&env);
    // Another copy holds the lock: a dry run neither waits nor refuses, since it takes no lock.
    let mut holder = env.target_client();
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&migrator::copy::COPY_LOCK_KEY],
        )
        .unwrap();
    let out = env.run(&[
        "copy",
        "--dry-run",
        "--no-wait",
        "--tables",
        "tasks",
        "--batch-size",
        "300",
    ]);
    out.assert_code(0);
    assert_eq!(out.summary("tasks"), [1, 5, 795]);
    assert_eq!(snapshot(&env), before, "a dry run changed the target");
}
