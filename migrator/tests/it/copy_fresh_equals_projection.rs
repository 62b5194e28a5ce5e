//! A fresh copy makes every target table equal to its source projection, row for row (checked in
//! SQL), and records a complete run.
use crate::common;
use common::{Env, ALL_TABLES};

#[test]
fn fresh_copy_equals_the_source_projection() {
    let env = Env::new("mig_copy_fresh", 2500);
    // Several batches per table, including a partial last one.
    env.run(&["copy", "--batch-size", "700"]).assert_code(0);

    for table in ALL_TABLES {
        assert_eq!(env.assert_equal(table), 2500, "{table}");
    }
    let status: String = env
        .target_client()
        .query_one("SELECT status FROM cutover_migrator.copy_runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(status, "complete");
    for (table, rows, inserted, updated, unchanged, done) in env.latest_checkpoints() {
        assert_eq!(
            (rows, inserted, updated, unchanged, done),
            (2500, 2500, 0, 0, true),
            "{table}"
        );
    }
}
