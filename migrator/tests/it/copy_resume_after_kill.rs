//! A copy killed with SIGKILL mid-way resumes after its last checkpoint: the re-run completes the
//! same run, with no duplicate and no missing row.
use crate::common;
use std::time::Duration;

use common::{wait_child, wait_for, Env};

#[test]
fn killed_copy_resumes_and_completes_exactly() {
    let env = Env::new("mig_copy_resume", 30_000);
    let args = [
        "copy",
        "--tables",
        "users,conversations,messages",
        "--batch-size",
        "100",
    ];
    let mut child = env.spawn(&args);
    let mut observer = env.target_client();
    wait_for("a few committed batches", Duration::from_secs(120), || {
        observer
            .query_one(
                "SELECT coalesce(sum(batches), 0)::int8 FROM cutover_migrator.copy_checkpoints
                 WHERE to_regclass('cutover_migrator.copy_checkpoints') IS NOT NULL",
                &[],
            )
            .map(|r| r.get::<_, i64>(0) >= 5)
            .unwrap_or(false)
    });
    child.kill().expect("SIGKILL migrator"); // std's kill is SIGKILL on Unix
    child.wait().unwrap();

    let (status, batches_done): (String, i64) = {
        let row = observer
            .query_one(
                "SELECT r.status, (SELECT sum(batches)::int8 FROM cutover_migrator.copy_checkpoints) FROM cutover_migrator.copy_runs r",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        status, "running",
        "the run must have been interrupted, not finished"
    );
    assert!(
        batches_done < 900,
        "killed after the copy finished ({batches_done} batches); nothing to resume"
    );
    let copied_before: i64 =
        env.count("auth.users") + env.count("chat.conversations") + env.count("chat.messages");
    assert_eq!(
        copied_before,
        100 * batches_done,
        "target rows must be exactly the committed batches"
    );

    let out = wait_child(env.spawn(&args), Duration::from_secs(300));
    out.assert_code(0);
    assert!(
        out.stderr.contains("resum"),
        "the second run must resume:\n{}",
        out.stderr
    );
    assert_eq!(
        env.runs(),
        [(1, "complete".to_string())],
        "the interrupted run is completed, not replaced"
    );
    for table in ["users", "conversations", "messages"] {
        assert_eq!(env.assert_equal(table), 30_000);
    }
    for (table, rows, inserted, updated, unchanged, done) in env.latest_checkpoints() {
        assert_eq!(
            (rows, inserted, updated, unchanged, done),
            (30_000, 30_000, 0, 0, true),
            "{table}: counts over both invocations"
        );
    }
}
