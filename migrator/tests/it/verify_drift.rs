//! verify reports exactly the injected drift — every kind — with the right kind and columns.

use crate::verify_support;

use std::collections::BTreeMap;

use verify_support::{changed_columns, strings, table, Pair};

#[test]
fn every_kind_of_drift_is_reported_with_its_key_kind_and_columns() {
    let pair = Pair::with_tasks("verify_drift", 2000);
    let key = |i| pair.key(i);
    // Rows chosen for their fixture values: 14 has a NULL description (i % 7 == 0), 9 has metadata.
    pair.target_sql(&format!(
        "DELETE FROM orchestration.coding_tasks WHERE id = '{}'",
        key(3)
    ));
    pair.target_sql(
        "INSERT INTO orchestration.coding_tasks (id, task_type, title, status, priority, created_at, updated_at)
         VALUES ('00000000-0000-4000-8000-000000000001', 'feature', 'only in target', 'done', 1, now(), now())",
    );
    pair.update_target_task(4, "title = title || '!'");
    pair.update_target_task(5, "priority = priority + 1");
    pair.update_target_task(6, "updated_at = updated_at + interval '1 second'");
    pair.update_target_task(7, "updated_at = updated_at + interval '1 microsecond'");
    pair.update_target_task(14, "description = ''");
    pair.update_target_task(9, "metadata = jsonb_set(metadata, '{nested,ok}', 'true')");
    // A change on the legacy side is drift too.
    pair.source_sql(&format!(
        "UPDATE legacy.tasks SET complexity = 'extreme' WHERE id = '{}'",
        key(10)
    ));
    // Rewrites that keep every value are not differences: same JSON written with another key order
    // and spacing, a timestamp written in another zone, a text rewritten to itself.
    pair.update_target_task(
        2,
        r#"metadata = '{"nested": {"ok":true},   "tags":["a", 2], "n":2}'::json::jsonb,
           updated_at = (updated_at AT TIME ZONE 'Asia/Kolkata') AT TIME ZONE 'Asia/Kolkata', title = title || ''"#,
    );

    let outcome = pair.verify(&["--tables", "tasks", "--sample", "100"]);
    assert_eq!(
        outcome.code, 1,
        "exit code 1 for differences; stderr: {}",
        outcome.stderr
    );
    let report = outcome.json();
    assert_eq!(report["schema"], "migrator-verify/v1");
    assert_eq!(report["identical"], false);
    assert_eq!(report["differences"], 9);
    let tasks = table(&report, "tasks");
    assert_eq!(tasks["target"], "orchestration.coding_tasks");
    assert_eq!(strings(&tasks["missing"]), vec![key(3)]);
    assert_eq!(
        strings(&tasks["extra"]),
        vec!["00000000-0000-4000-8000-000000000001".to_string()]
    );
    let changed: BTreeMap<String, Vec<String>> = changed_columns(tasks).into_iter().collect();
    let expected: BTreeMap<String, Vec<String>> = [
        (key(4), vec!["title"]),
        (key(5), vec!["priority"]),
        (key(6), vec!["updated_at"]),
        (key(7), vec!["updated_at"]),
        (key(14), vec!["description"]),
        (key(9), vec!["metadata"]),
        (key(10), vec!["complexity"]),
    ]
    .into_iter()
    .map(|(k, cols)| (k, cols.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(changed, expected);
    assert_eq!(tasks["source_rows"], 2000);
    assert_eq!(tasks["target_rows"], 2000);
}

#[test]
fn sample_limits_the_column_lookup_but_not_the_keys() {
    let pair = Pair::with_tasks("verify_sample", 500);
    pair.target_sql(
        "UPDATE orchestration.coding_tasks SET priority = priority + 1 WHERE priority = 3",
    );
    let outcome = pair.verify(&["--tables", "tasks", "--sample", "2"]);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let report = outcome.json();
    let changed = table(&report, "tasks")["changed"]
        .as_array()
        .unwrap()
        .clone();
    // Rows with priority 3: i % 10 == 3 (never NULL there) → 50 of 500.
    assert_eq!(changed.len(), 50);
    let with_columns: Vec<_> = changed.iter().filter(|c| !c["columns"].is_null()).collect();
    assert_eq!(with_columns.len(), 2);
    for c in with_columns {
        assert_eq!(strings(&c["columns"]), vec!["priority".to_string()]);
    }
}
