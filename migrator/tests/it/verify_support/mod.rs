//! Shared setup of the verify tests: a legacy (source) and a new (target) database holding the same
//! tasks, the target filled the way the shipped plan maps them (NULL defaults applied), and a
//! runner for the `migrator` binary that parses its JSON report.

#![allow(dead_code)]

use std::path::PathBuf;

use cutover_pgfixture::TestDb;

pub(crate) use crate::common::{migrator_cmd, Outcome};

pub struct Pair {
    pub source: TestDb,
    pub target: TestDb,
}

fn repo_file(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Legacy task rows 1..=n as a SELECT with the legacy column order. Deterministic: ids are
/// md5-derived uuids; every 7th description, every 5th status/priority, every 11th created_at is
/// NULL; text holds unicode; metadata is JSON with nesting.
pub fn legacy_tasks_sql(n: u64) -> String {
    format!(
        "SELECT md5('task' || i)::uuid AS id,
                md5('conv' || (i % 1000))::uuid AS conversation_id,
                (ARRAY['feature','bugfix','refactor'])[1 + i % 3] AS task_type,
                CASE WHEN i % 4 = 0 THEN NULL ELSE (ARRAY['low','medium','high'])[1 + i % 3] END AS complexity,
                'Task ' || i || ' — ünïcode ✓' AS title,
                CASE WHEN i % 7 = 0 THEN NULL ELSE 'Description of task ' || i END AS description,
                CASE WHEN i % 5 = 0 THEN NULL ELSE (ARRAY['pending','running','done'])[1 + i % 3] END AS status,
                CASE WHEN i % 5 = 1 THEN NULL ELSE (i % 10)::int END AS priority,
                CASE WHEN i % 11 = 0 THEN NULL ELSE timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute 0.123457 second' END AS created_at,
                timestamptz '2024-06-01 00:00:00+00' + i * interval '17 second' AS updated_at,
                CASE WHEN i % 3 = 0 THEN timestamptz '2024-06-02 00:00:00+00' + i * interval '1 second' END AS started_at,
                NULL::timestamptz AS completed_at,
                CASE WHEN i % 6 = 0 THEN NULL ELSE jsonb_build_object('n', i, 'tags', jsonb_build_array('a', i % 5), 'nested', jsonb_build_object('ok', i % 2 = 0)) END AS metadata
         FROM generate_series(1, {n}) AS i"
    )
}

/// The same rows as the shipped plan maps them into orchestration.coding_tasks.
pub fn mapped_tasks_sql(n: u64) -> String {
    format!(
        "SELECT id, conversation_id, task_type, complexity, title, description,
                coalesce(status, 'pending'), coalesce(priority, 0),
                coalesce(created_at, updated_at, timestamptz '2000-01-01 00:00:00+00'),
                coalesce(updated_at, created_at, timestamptz '2000-01-01 00:00:00+00'),
                started_at, completed_at, metadata
         FROM ({}) AS legacy",
        legacy_tasks_sql(n)
    )
}

impl Pair {
    /// Two fresh databases: legacy schema in the source, the new schemas in the target, `tasks`
    /// rows in both (mapped as `copy` would).
    pub fn with_tasks(prefix: &str, tasks: u64) -> Pair {
        let source = TestDb::create(&format!("{prefix}_src"));
        let target = TestDb::create(&format!("{prefix}_dst"));
        let mut src = source.client();
        src.batch_execute(&repo_file("migrations/legacy/legacy_schema.sql"))
            .expect("legacy schema");
        src.batch_execute(&format!(
            "INSERT INTO legacy.tasks {}; ANALYZE legacy.tasks",
            legacy_tasks_sql(tasks)
        ))
        .expect("legacy rows");
        let mut dst = target.client();
        for file in [
            "migrations/001_users.sql",
            "migrations/002_conversations.sql",
            "migrations/003_tasks.sql",
        ] {
            dst.batch_execute(&repo_file(file))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        dst.batch_execute(&format!(
            "INSERT INTO orchestration.coding_tasks {}; ANALYZE orchestration.coding_tasks",
            mapped_tasks_sql(tasks)
        ))
        .expect("target rows");
        Pair { source, target }
    }

    pub fn source_sql(&self, sql: &str) {
        self.source
            .client()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("source: {sql}: {e}"));
    }

    pub fn target_sql(&self, sql: &str) {
        self.target
            .client()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("target: {sql}: {e}"));
    }

    /// `UPDATE orchestration.coding_tasks SET <set>` on the target row of legacy task `i`.
    pub fn update_target_task(&self, i: u64, set: &str) {
        self.target_sql(&format!(
            "UPDATE orchestration.coding_tasks SET {set} WHERE id = '{}'",
            self.key(i)
        ));
    }

    /// The key of legacy task `i` as verify prints it (uuid text).
    pub fn key(&self, i: u64) -> String {
        let row = self
            .source
            .client()
            .query_one(
                "SELECT md5('task' || ($1::int8)::text)::uuid::text",
                &[&(i as i64)],
            )
            .expect("md5 key");
        row.get(0)
    }

    /// `migrator verify --format json <extra>` against this pair.
    pub fn verify(&self, extra: &[&str]) -> Outcome {
        let mut args = vec![
            "verify",
            "--source-url",
            &self.source.url,
            "--target-url",
            &self.target.url,
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        run(&args)
    }
}

/// `migrator <args>` with no database URLs inherited from the test's environment.
pub fn run(args: &[&str]) -> Outcome {
    migrator_cmd()
        .args(args)
        .output()
        .expect("running migrator")
        .into()
}

/// The report of table `name` in a verify JSON report.
pub fn table<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["tables"]
        .as_array()
        .expect("tables array")
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {report}"))
}

/// The changed rows of a table report as (key, changed columns), in report order.
pub fn changed_columns(table: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    table["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_string(),
                strings(&c["columns"]),
            )
        })
        .collect()
}

pub fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect()
}
