//! A few hundred thousand rows with a handful of differences: the bucket checksums find the few
//! differing buckets and only those are read row by row.

use crate::verify_support;

use verify_support::{changed_columns, strings, table, Pair};

#[test]
fn range_checksums_then_drill_down_find_the_few_differences() {
    let rows = 300_000u64;
    let pair = Pair::with_tasks("verify_large", rows);
    let (deleted, changed_a, changed_b) = (pair.key(1234), pair.key(150_001), pair.key(299_999));
    pair.target_sql(&format!(
        "DELETE FROM orchestration.coding_tasks WHERE id = '{deleted}'"
    ));
    pair.target_sql(&format!(
        "UPDATE orchestration.coding_tasks SET started_at = coalesce(started_at, created_at) + interval '1 microsecond' WHERE id = '{changed_a}'"
    ));
    pair.source_sql(&format!(
        "UPDATE legacy.tasks SET title = title || ' (edited)' WHERE id = '{changed_b}'"
    ));
    pair.target_sql(
        "INSERT INTO orchestration.coding_tasks (id, task_type, title, status, priority, created_at, updated_at)
         VALUES ('ffffffff-0000-4000-8000-000000000002', 'bugfix', 'stray', 'done', 2, now(), now())",
    );

    let outcome = pair.verify(&["--tables", "tasks"]);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let report = outcome.json();
    let tasks = table(&report, "tasks");
    assert_eq!(strings(&tasks["missing"]), vec![deleted]);
    assert_eq!(
        strings(&tasks["extra"]),
        vec!["ffffffff-0000-4000-8000-000000000002".to_string()]
    );
    let mut changed = changed_columns(tasks);
    changed.sort();
    let mut expected = vec![
        (changed_a, vec!["started_at".to_string()]),
        (changed_b, vec!["title".to_string()]),
    ];
    expected.sort();
    assert_eq!(changed, expected);

    // The drill-down read only the differing buckets: at most 4 of many, a small share of the rows.
    let buckets = tasks["buckets"].as_u64().unwrap();
    let differing = tasks["differing_buckets"].as_u64().unwrap();
    let fetched = tasks["rows_fetched"].as_u64().unwrap();
    assert!(buckets >= 1024, "buckets: {buckets}");
    assert!(
        (1..=4).contains(&differing),
        "differing buckets: {differing}"
    );
    assert!(
        fetched < 2 * rows / 100,
        "rows fetched for the drill-down: {fetched}"
    );
    assert_eq!(tasks["source_rows"], rows);
    assert_eq!(tasks["target_rows"], rows);
}
