//! `migrator generate-legacy`: the legacy fixture used by tests, the demo and the benchmark.
//!
//! Creates the legacy schema (`migrations/legacy/legacy_schema.sql`) and fills each table with N
//! deterministic rows using set-based SQL (`generate_series`), so a million rows take seconds:
//! NULLs in the columns the new schema requires, unicode text, text with newlines, tabs,
//! backslashes and quotes, JSON metadata, conversations with many messages (the message →
//! conversation distribution is skewed), tasks with several executions. Keys are md5-derived
//! UUIDs (`md5('user:' || i)::uuid`), so every run generates the same data.

use std::time::Instant;

use sqlx::postgres::PgConnection;

use crate::cli::GenerateLegacyArgs;
use crate::db;
use crate::error::MigratorError;

/// The legacy fixture schema.
pub const LEGACY_SCHEMA_SQL: &str = include_str!("../../migrations/legacy/legacy_schema.sql");

/// Legacy tables in generation order.
pub const LEGACY_TABLES: [&str; 5] = [
    "users",
    "conversations",
    "messages",
    "tasks",
    "task_executions",
];

const EPOCH: &str = "timestamptz '2019-01-01 00:00:00+00'";

fn insert_sql(table: &str, n: u64) -> String {
    match table {
        "users" => format!(
            "INSERT INTO legacy.users (id, username, email, password_hash, is_active, is_verified, created_at, updated_at)
             SELECT md5('user:' || i)::uuid,
                    'user_' || i || (ARRAY['', '_ñandú', '_用户', '_Ødegård', ''])[1 + i % 5],
                    'user' || i || '@example.' || (ARRAY['com', 'org', 'de', 'jp'])[1 + i % 4],
                    '$argon2id$v=19$m=65536$' || md5('pw' || i),
                    CASE WHEN i % 10 = 0 THEN NULL ELSE i % 3 <> 0 END,
                    CASE WHEN i % 9 = 0 THEN NULL ELSE i % 2 = 0 END,
                    CASE WHEN i % 13 = 0 THEN NULL ELSE {EPOCH} + i * interval '37 seconds' + (i % 997) * interval '1 microsecond' END,
                    CASE WHEN i % 17 = 0 OR i % 13 = 0 AND i % 2 = 0 THEN NULL
                         ELSE {EPOCH} + i * interval '37 seconds' + interval '3 days 7 hours' END
             FROM generate_series(1, {n}) AS i"
        ),
        "conversations" => format!(
            "INSERT INTO legacy.conversations (id, user_id, title, status, created_at, updated_at, metadata)
             SELECT md5('conv:' || i)::uuid,
                    md5('user:' || (1 + (i * 7919) % {n}))::uuid,
                    'Conversation ' || i || ' — ' || (ARRAY['déploiement 🚀', '日本語のテスト', 'Ünïcödé \"quoted\"', 'plain', 'tab\there'])[1 + i % 5],
                    CASE WHEN i % 8 = 0 THEN NULL ELSE (ARRAY['active', 'archived', 'closed'])[1 + i % 3] END,
                    CASE WHEN i % 11 = 0 THEN NULL ELSE {EPOCH} + i * interval '41 seconds' END,
                    CASE WHEN i % 7 = 0 THEN NULL ELSE {EPOCH} + i * interval '41 seconds' + interval '2 hours' END,
                    CASE WHEN i % 6 = 0 THEN NULL
                         ELSE jsonb_build_object('channel', (ARRAY['web', 'mobile', 'api'])[1 + i % 3],
                                                 'tags', jsonb_build_array('t' || i % 10, 'ü' || i % 3),
                                                 'score', (i % 100) / 10.0,
                                                 'note', E'line\\nbreak \\\\ \"q\"') END
             FROM generate_series(1, {n}) AS i"
        ),
        // Skewed: r^3 of a pseudo-random r puts many messages on the first conversations.
        "messages" => format!(
            "INSERT INTO legacy.messages (id, conversation_id, sender, content, message_type, created_at, metadata)
             SELECT md5('msg:' || i)::uuid,
                    md5('conv:' || (1 + floor(power(((i::bigint * 2654435761) % 1000003) / 1000003.0, 3) * {n})::bigint))::uuid,
                    CASE WHEN i % 9 = 0 THEN NULL ELSE (ARRAY['user', 'assistant', 'system'])[1 + i % 3] END,
                    'Message ' || i || E'\\nsecond line\\twith tab, backslash \\\\ and \"quotes\" ' ||
                        (ARRAY['😀', 'ça va?', 'Привет', '你好', ''])[1 + i % 5],
                    CASE WHEN i % 10 = 0 THEN NULL ELSE (ARRAY['text', 'code', 'image'])[1 + i % 3] END,
                    CASE WHEN i % 12 = 0 THEN NULL ELSE {EPOCH} + i * interval '13 seconds' + (i % 1000) * interval '1 microsecond' END,
                    CASE WHEN i % 4 = 0 THEN NULL ELSE jsonb_build_object('tokens', i % 500, 'model', 'm' || i % 3) END
             FROM generate_series(1, {n}) AS i"
        ),
        "tasks" => format!(
            "INSERT INTO legacy.tasks (id, conversation_id, task_type, complexity, title, description, status, priority,
                                       created_at, updated_at, started_at, completed_at, metadata)
             SELECT md5('task:' || i)::uuid,
                    CASE WHEN i % 5 = 0 THEN NULL ELSE md5('conv:' || (1 + (i * 31) % {n}))::uuid END,
                    (ARRAY['refactor', 'bugfix', 'feature', 'review'])[1 + i % 4],
                    CASE WHEN i % 3 = 0 THEN NULL ELSE (ARRAY['low', 'medium', 'high'])[1 + i % 3] END,
                    'Task ' || i || ' – ' || (ARRAY['résumé parser', 'ünicode fix', 'タスク', 'plain'])[1 + i % 4],
                    CASE WHEN i % 4 = 0 THEN NULL ELSE E'Do the thing\\nthen the other thing #' || i END,
                    CASE WHEN i % 7 = 0 THEN NULL ELSE (ARRAY['pending', 'running', 'done', 'failed'])[1 + i % 4] END,
                    CASE WHEN i % 6 = 0 THEN NULL ELSE i % 5 END,
                    CASE WHEN i % 11 = 0 THEN NULL ELSE {EPOCH} + i * interval '29 seconds' END,
                    CASE WHEN i % 13 = 0 THEN NULL ELSE {EPOCH} + i * interval '29 seconds' + interval '1 day' END,
                    CASE WHEN i % 2 = 0 THEN NULL ELSE {EPOCH} + i * interval '29 seconds' + interval '1 minute' END,
                    CASE WHEN i % 4 <> 1 THEN NULL ELSE {EPOCH} + i * interval '29 seconds' + interval '1 hour' END,
                    CASE WHEN i % 5 = 0 THEN NULL ELSE jsonb_build_object('repo', 'r' || i % 20, 'files', i % 50, 'nested', jsonb_build_object('ok', i % 2 = 0)) END
             FROM generate_series(1, {n}) AS i"
        ),
        // Three executions per task for the first third of the tasks.
        "task_executions" => format!(
            "INSERT INTO legacy.task_executions (id, task_id, execution_strategy, status, started_at, completed_at, error_message, metadata)
             SELECT md5('exec:' || i)::uuid,
                    md5('task:' || (1 + (i - 1) / 3))::uuid,
                    (ARRAY['sequential', 'parallel', 'sandboxed'])[1 + i % 3],
                    CASE WHEN i % 9 = 0 THEN NULL ELSE (ARRAY['queued', 'running', 'succeeded', 'failed'])[1 + i % 4] END,
                    CASE WHEN i % 8 = 0 THEN NULL ELSE {EPOCH} + i * interval '17 seconds' END,
                    CASE WHEN i % 3 = 0 THEN NULL ELSE {EPOCH} + i * interval '17 seconds' + interval '5 minutes' END,
                    CASE WHEN i % 4 = 3 THEN E'Traceback:\\n  Fehler «' || i || '»' ELSE NULL END,
                    CASE WHEN i % 2 = 0 THEN NULL ELSE jsonb_build_object('attempt', 1 + i % 3) END
             FROM generate_series(1, {n}) AS i"
        ),
        other => unreachable!("unknown legacy table {other}"),
    }
}

/// Creates the legacy schema in `conn` (dropping it first with `reset`) and fills `tables`
/// (all when empty) with `rows` rows each.
pub async fn generate(
    conn: &mut PgConnection,
    rows: u64,
    tables: &[String],
    reset: bool,
) -> anyhow::Result<()> {
    for t in tables {
        if !LEGACY_TABLES.contains(&t.as_str()) {
            return Err(MigratorError::Usage(format!(
                "--tables: unknown legacy table {t} (known: {})",
                LEGACY_TABLES.join(", ")
            ))
            .into());
        }
    }
    if reset {
        sqlx::raw_sql("DROP SCHEMA IF EXISTS legacy CASCADE")
            .execute(&mut *conn)
            .await?;
    }
    sqlx::raw_sql(LEGACY_SCHEMA_SQL).execute(&mut *conn).await?;
    for table in LEGACY_TABLES
        .iter()
        .filter(|t| tables.is_empty() || tables.iter().any(|x| x == *t))
    {
        let existing: bool =
            sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM legacy.{table})"))
                .fetch_one(&mut *conn)
                .await?;
        if existing {
            return Err(MigratorError::Usage(format!("legacy.{table} already has rows; pass --reset to start from an empty legacy schema")).into());
        }
        let started = Instant::now();
        sqlx::raw_sql(&insert_sql(table, rows))
            .execute(&mut *conn)
            .await?;
        sqlx::raw_sql(&format!("ANALYZE legacy.{table}"))
            .execute(&mut *conn)
            .await?;
        eprintln!(
            "generate-legacy: legacy.{table}: {rows} rows in {:.2}s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

pub async fn run(args: GenerateLegacyArgs) -> anyhow::Result<u8> {
    let mut conn = db::connect("source", &args.source.source_url).await?;
    let result = generate(&mut conn, args.rows, &args.tables, args.reset).await;
    db::close(conn).await;
    result.map(|()| 0)
}
