//! A plan that does not fit the databases: exit 5, naming the table and the column, before
//! anything is written.
use crate::common;
use common::Env;

fn plan_file(dir: &std::path::Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

const GOOD_TASKS: &str = r#"
[[table]]
name = "tasks"
source = "legacy.tasks"
target = "orchestration.coding_tasks"
key = "id"
columns = [{ name = "id" }, { name = "task_type" }, { name = "title" },
           { name = "status", default = "'pending'" }, { name = "priority", default = "0" },
           { name = "created_at", default = "timestamptz '2000-01-01 00:00:00+00'" },
           { name = "updated_at", default = "timestamptz '2000-01-01 00:00:00+00'" }]
"#;

#[test]
fn missing_source_column_and_missing_tables_exit_5() {
    let env = Env::new("mig_bad_plan", 20);
    let dir = std::env::temp_dir().join(format!("mig-bad-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Users first, so that a later table's error proves nothing was copied before validation.
    let missing_column = format!(
        "{}\n{GOOD_TASKS}",
        r#"
[[table]]
name = "users"
source = "legacy.users"
target = "auth.users"
key = "id"
columns = [{ name = "id" }, { name = "username" }, { name = "email" }, { name = "password_hash" },
           { name = "is_active", from = "is_enabled", default = "true" }, { name = "is_verified", default = "false" },
           { name = "created_at", default = "timestamptz '2000-01-01 00:00:00+00'" },
           { name = "updated_at", default = "timestamptz '2000-01-01 00:00:00+00'" }]
"#
    );
    let cases = [
        (
            "missing_source_column.toml",
            missing_column,
            vec!["users", "is_active", "is_enabled"],
        ),
        (
            "missing_source_table.toml",
            GOOD_TASKS.replace("legacy.tasks", "legacy.jobs"),
            vec!["tasks", "legacy.jobs"],
        ),
        (
            "missing_target_column.toml",
            GOOD_TASKS.replace(
                r#"{ name = "title" }"#,
                r#"{ name = "title" }, { name = "headline", from = "title" }"#,
            ),
            vec!["tasks", "headline"],
        ),
        (
            "missing_target_table.toml",
            GOOD_TASKS.replace("orchestration.coding_tasks", "orchestration.jobs"),
            vec!["tasks", "orchestration.jobs"],
        ),
        (
            "not_null_unmapped.toml",
            GOOD_TASKS.replace(r#"{ name = "task_type" }, "#, ""),
            vec!["tasks", "task_type"],
        ),
    ];
    for (file, body, names) in cases {
        let plan = plan_file(&dir, file, &body);
        for command in ["copy", "plan"] {
            let out = env.run(&[command, "--plan", &plan]);
            out.assert_code(5);
            for name in &names {
                assert!(
                    out.stderr.contains(name),
                    "{file}: `{command}` error does not name {name}:\n{}",
                    out.stderr
                );
            }
        }
    }
    assert_eq!(
        env.count("auth.users") + env.count("orchestration.coding_tasks"),
        0,
        "rows were copied despite an invalid plan"
    );
    let unknown_table = env.run(&["copy", "--tables", "usres"]);
    unknown_table.assert_code(5);
    assert!(
        unknown_table.stderr.contains("usres"),
        "{}",
        unknown_table.stderr
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
