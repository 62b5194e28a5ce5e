//! `verify --jobs N`: the bucket checksums are computed on N connections per side, each over one
//! key range of the table (copy's range cut), in one snapshot per side; the report is the same as
//! with one connection, differences and all.

use crate::verify_support;

use verify_support::{table, Pair};

/// The report without its timings.
fn without_timings(mut report: serde_json::Value) -> serde_json::Value {
    for t in report["tables"].as_array_mut().unwrap() {
        t.as_object_mut().unwrap().remove("elapsed_ms");
    }
    report
}

#[test]
fn jobs_give_the_same_exact_report() {
    let rows = 20_000u64;
    let pair = Pair::with_tasks("verify_jobs", rows);
    let (deleted, changed) = (pair.key(17), pair.key(12_345));
    pair.target_sql(&format!(
        "DELETE FROM orchestration.coding_tasks WHERE id = '{deleted}'"
    ));
    pair.source_sql(&format!(
        "UPDATE legacy.tasks SET title = title || ' (edited)' WHERE id = '{changed}'"
    ));
    let one = pair.verify(&["--tables", "tasks"]);
    assert_eq!(one.code, 1, "{}", one.stderr);
    for jobs in ["2", "3"] {
        let many = pair.verify(&["--tables", "tasks", "--jobs", jobs]);
        assert_eq!(many.code, 1, "{}", many.stderr);
        assert_eq!(
            without_timings(many.json()),
            without_timings(one.json()),
            "--jobs {jobs}"
        );
    }
    let tasks = table(&one.json(), "tasks").clone();
    assert_eq!(tasks["missing"], serde_json::json!([deleted]));
    assert_eq!(tasks["changed"][0]["key"], serde_json::json!(changed));
}
