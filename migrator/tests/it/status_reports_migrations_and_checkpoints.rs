//! `migrator status` lists pending then applied migrations, and the copy runs with their
//! per-table checkpoints (an interrupted run shows as resumable with its last key).
use crate::common;
use common::Env;

fn line_of<'a>(stdout: &'a str, start: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(start))
        .unwrap_or_else(|| panic!("no line {start}:\n{stdout}"))
}

#[test]
fn status_shows_migrations_and_checkpoints() {
    let env = Env::unmigrated("mig_status", 300);
    let before = env.run(&["status"]);
    before.assert_code(0);
    assert!(
        line_of(&before.stdout, "002_conversations").contains("pending"),
        "{}",
        before.stdout
    );
    assert!(before.stdout.contains("none"), "{}", before.stdout);

    env.run(&["schema"]).assert_code(0);
    env.run(&["copy", "--tables", "users,tasks", "--batch-size", "100"])
        .assert_code(0);
    // An interrupted second run: a checkpoint left mid-table.
    let mut target = env.target_client();
    target
        .batch_execute(
            "INSERT INTO cutover_migrator.copy_runs (plan_fingerprint, tables, status) VALUES ('x', '{users}', 'running');
             INSERT INTO cutover_migrator.copy_checkpoints (run_id, table_name, last_key, rows_read, unchanged, batches)
             VALUES (2, 'users', '7fffffff-0000-0000-0000-000000000000', 100, 100, 1);",
        )
        .unwrap();
    let after = env.run(&["status"]);
    after.assert_code(0);
    assert!(
        line_of(&after.stdout, "003_tasks").contains("applied"),
        "{}",
        after.stdout
    );
    assert!(
        line_of(&after.stdout, "run 1").contains("complete"),
        "{}",
        after.stdout
    );
    assert!(
        line_of(&after.stdout, "run 2").contains("interrupted"),
        "{}",
        after.stdout
    );
    let figures =
        |line: &str| -> Vec<String> { line.split_whitespace().take(6).map(String::from).collect() };
    let users_lines: Vec<&str> = after
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("users"))
        .collect();
    assert_eq!(
        figures(users_lines[0]),
        ["users", "yes", "300", "300", "0", "0"],
        "{}",
        after.stdout
    );
    assert_eq!(
        figures(line_of(&after.stdout, "tasks")),
        ["tasks", "yes", "300", "300", "0", "0"]
    );
    assert!(
        users_lines[1].contains("7fffffff-0000-0000-0000-000000000000")
            && users_lines[1].contains(" no "),
        "{}",
        after.stdout
    );
}
