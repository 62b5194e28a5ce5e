//! A source key that is NULL or repeats: exit 7 naming the table and the key, and the target keeps
//! nothing of the refused table.
use crate::common;
use common::Env;

/// The tasks table of the shipped plan with its key taken from `source_key_from` (over
/// `source_query` when given, else over `legacy.tasks`).
fn tasks_plan(dir: &std::path::Path, source: &str, key_from: &str) -> String {
    let body = format!(
        r#"
[[table]]
name = "tasks"
{source}
target = "orchestration.coding_tasks"
key = "id"
columns = [{{ name = "id", from = "{key_from}" }}, {{ name = "task_type" }}, {{ name = "title" }},
           {{ name = "status", default = "'pending'" }}, {{ name = "priority", default = "0" }},
           {{ name = "created_at", default = "timestamptz '2000-01-01 00:00:00+00'" }},
           {{ name = "updated_at", default = "timestamptz '2000-01-01 00:00:00+00'" }}]
"#
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("plan.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

fn first_task_id(env: &Env) -> String {
    env.source_client()
        .query_one("SELECT id::text FROM legacy.tasks ORDER BY id LIMIT 1", &[])
        .unwrap()
        .get(0)
}

#[test]
fn null_source_key_is_refused() {
    let env = Env::new("mig_bad_null_key", 30);
    let dir = std::env::temp_dir().join(format!("mig-null-key-{}", std::process::id()));
    let first = first_task_id(&env);
    let plan = tasks_plan(
        &dir,
        r#"source = "legacy.tasks""#,
        &format!("CASE WHEN id = '{first}' THEN NULL ELSE id END"),
    );
    let out = env.run(&["copy", "--plan", &plan]);
    out.assert_code(7);
    assert!(
        out.stderr.contains("tasks") && out.stderr.contains("NULL in 1 row"),
        "{}",
        out.stderr
    );
    assert_eq!(env.count("orchestration.coding_tasks"), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn repeated_source_key_is_named() {
    let env = Env::new("mig_bad_dup_key", 30);
    let dir = std::env::temp_dir().join(format!("mig-dup-key-{}", std::process::id()));
    let first = first_task_id(&env);
    let plan = tasks_plan(
        &dir,
        r#"source_query = "SELECT * FROM legacy.tasks UNION ALL (SELECT * FROM legacy.tasks ORDER BY id LIMIT 1)""#,
        "id",
    );
    let out = env.run(&["copy", "--plan", &plan]);
    out.assert_code(7);
    assert!(
        out.stderr.contains("tasks")
            && out.stderr.contains(&first)
            && out.stderr.contains("more than once"),
        "{}",
        out.stderr
    );
    assert_eq!(env.count("orchestration.coding_tasks"), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
