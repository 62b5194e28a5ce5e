//! Re-running the copy with no legacy change reports 0 inserted / 0 updated and rewrites no row.
use crate::common;
use common::{Env, ALL_TABLES};

#[test]
fn rerun_inserts_and_updates_nothing_and_rewrites_no_row() {
    let env = Env::new("mig_copy_rerun", 1500);
    env.run(&["copy", "--batch-size", "400"]).assert_code(0);
    let versions = |env: &Env| -> Vec<String> {
        let mut client = env.target_client();
        ["auth.users", "chat.conversations", "chat.messages", "orchestration.coding_tasks", "orchestration.task_executions"]
            .iter()
            .map(|t| {
                // xmin changes whenever a row is rewritten.
                client.query_one(&format!("SELECT string_agg(id::text || ':' || xmin::text, ',' ORDER BY id) FROM {t}"), &[]).unwrap().get(0)
            })
            .collect()
    };
    let before = versions(&env);

    let out = env.run(&["copy", "--batch-size", "400"]);
    out.assert_code(0);
    for (table, rows, inserted, updated, unchanged, done) in env.latest_checkpoints() {
        assert_eq!(
            (rows, inserted, updated, unchanged, done),
            (1500, 0, 0, 1500, true),
            "{table}"
        );
    }
    // The summary on stdout says the same.
    for table in ALL_TABLES {
        assert_eq!(out.summary(table), [0, 0, 1500], "{}", out.stdout);
    }
    assert_eq!(
        versions(&env),
        before,
        "rows were rewritten by a no-change re-run"
    );
    let runs: i64 = env
        .target_client()
        .query_one(
            "SELECT count(*) FROM cutover_migrator.copy_runs WHERE status = 'complete'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(runs, 2);
}
