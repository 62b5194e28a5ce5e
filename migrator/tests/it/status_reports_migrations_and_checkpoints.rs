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

#[test]
fn status_json_shows_runs_ranges_holders_leases_and_takeover() {
    let env = Env::new("mig_status_json", 300);
    let none = env.run(&["status", "--format", "json"]);
    none.assert_code(0);
    let json = none.json();
    assert_eq!(json["schema"], "migrator-status/v1");
    assert!(json["copy_runs"].is_null(), "no copy yet: {json}");
    let states: Vec<&str> = json["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap())
        .collect();
    assert!(
        !states.is_empty() && states.iter().all(|s| *s == "applied"),
        "{states:?}"
    );

    env.run(&["copy", "--tables", "users", "--range-rows", "100"])
        .assert_code(0);
    // A second, running run: one range held under a live lease, one whose lease expired.
    env.target_client()
        .batch_execute(
            "INSERT INTO cutover_migrator.copy_runs (plan_fingerprint, tables, status) VALUES ('x', '{users}', 'running');
             INSERT INTO cutover_migrator.copy_checkpoints (run_id, table_name, rows_read, inserted, batches) VALUES (2, 'users', 40, 40, 1);
             INSERT INTO cutover_migrator.copy_ranges (run_id, table_name, range_no, table_order, up_to_key, last_key, rows_read, inserted, holder, lease_until, claims)
             VALUES (2, 'users', 0, 0, 'k1', 'k0', 40, 40, 'pid 11 worker 0 (server process 12, run lock on 12)', now() + interval '5 minutes', 1),
                    (2, 'users', 1, 0, NULL, NULL, 0, 0, 'pid 13 worker 1 (server process 14, run lock on 15)', now() - interval '1 minute', 2);",
        )
        .unwrap();
    env.run(&["takeover", "mark"]).assert_code(0);
    let out = env.run(&["status", "--format", "json"]);
    out.assert_code(0);
    let json = out.json();
    assert_eq!(json["takeover"]["taken_over"], true, "{json}");
    assert!(json["takeover"]["since"].is_string());
    let runs = json["copy_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let (first, second) = (&runs[0], &runs[1]);
    assert_eq!(
        (first["run_id"].as_i64(), first["status"].as_str()),
        (Some(1), Some("complete"))
    );
    let users = &first["tables"][0];
    assert_eq!(
        (
            users["table"].as_str(),
            users["done"].as_bool(),
            users["inserted"].as_u64()
        ),
        (Some("users"), Some(true), Some(300))
    );
    let ranges = first["ranges"].as_array().unwrap();
    assert!(ranges.len() >= 3, "300 rows in ranges of 100: {ranges:?}");
    assert!(ranges
        .iter()
        .all(|r| r["done"] == true && r["holder"].is_null()));
    let total: u64 = ranges
        .iter()
        .map(|r| r["rows_read"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 300);

    assert_eq!(second["status"], "running");
    let held = &second["ranges"][0];
    assert_eq!(
        held["holder"],
        "pid 11 worker 0 (server process 12, run lock on 12)"
    );
    assert_eq!(held["lease_expired"], false);
    assert!(held["lease_left_secs"].as_f64().unwrap() > 0.0);
    assert_eq!(
        (held["up_to"].as_str(), held["last_key"].as_str()),
        (Some("k1"), Some("k0"))
    );
    let expired = &second["ranges"][1];
    assert_eq!(expired["lease_expired"], true);
    assert!(expired["lease_left_secs"].as_f64().unwrap() < 0.0);
    assert_eq!(
        (expired["claims"].as_i64(), expired["up_to"].is_null()),
        (Some(2), true)
    );

    let text = env.run(&["status"]);
    text.assert_code(0);
    let expired_line = text
        .stdout
        .lines()
        .find(|l| l.contains("pid 13 worker 1"))
        .unwrap_or_else(|| panic!("{}", text.stdout));
    assert!(
        expired_line.trim_start().starts_with("range users/1")
            && expired_line.contains("lease EXPIRED")
            && line_of(&text.stdout, "takeover:").contains("recorded"),
        "{}",
        text.stdout
    );
}
