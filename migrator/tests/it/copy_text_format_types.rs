//! Tables with a type whose binary COPY form is not portable between databases (an array of a
//! user-defined enum: the data embeds the enum's OID, which differs per database) are copied in
//! text format: the copy is exact, including text with tabs, newlines, backslashes and quotes, a
//! re-run changes nothing and a legacy update is carried over.
use crate::common;
use common::migrator_cmd;
use cutover_pgfixture::TestDb;

const PLAN: &str = r#"
[[table]]
name = "notes"
source = "legacy.notes"
target = "app.notes"
key = "id"
columns = [{ name = "id" }, { name = "moods", from = "mood_names" }, { name = "body", default = "''" }]
"#;

fn rows(client: &mut postgres::Client, sql: &str) -> Vec<(String, Option<String>, String)> {
    client
        .query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[test]
fn non_portable_types_are_copied_exactly_in_text_format() {
    let source = TestDb::create("mig_copy_text_src");
    let target = TestDb::create("mig_copy_text_tgt");
    let dir = std::env::temp_dir().join(format!("mig-text-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();

    // Different OIDs for the enum in the two databases: an unrelated type created first in one.
    let mut src = source.client();
    src.batch_execute(
        "CREATE TYPE unrelated AS ENUM ('x');
         CREATE TYPE mood AS ENUM ('happy', 'sad', 'ünïcode');
         CREATE SCHEMA legacy;
         CREATE TABLE legacy.notes (id uuid PRIMARY KEY, mood_names mood[], body text);
         INSERT INTO legacy.notes
         SELECT md5('note' || i)::uuid,
                CASE WHEN i % 5 = 0 THEN NULL ELSE ARRAY['happy', 'ünïcode']::mood[] END,
                CASE WHEN i % 7 = 0 THEN NULL ELSE E'tab\\there\\nnew line \\\\ backslash \"q\" ''s'' ' || i END
         FROM generate_series(1, 500) AS i;",
    )
    .unwrap();
    let mut tgt = target.client();
    tgt.batch_execute(
        "CREATE TYPE mood AS ENUM ('happy', 'sad', 'ünïcode');
         CREATE SCHEMA app;
         CREATE TABLE app.notes (id uuid PRIMARY KEY, moods mood[], body text NOT NULL);",
    )
    .unwrap();
    let oids: (u32, u32) = (
        src.query_one("SELECT 'mood'::regtype::oid", &[])
            .unwrap()
            .get(0),
        tgt.query_one("SELECT 'mood'::regtype::oid", &[])
            .unwrap()
            .get(0),
    );
    assert_ne!(
        oids.0, oids.1,
        "the test needs different type OIDs on the two sides"
    );
    let copy = || -> common::Outcome {
        migrator_cmd()
            .args([
                "copy",
                "--plan",
                plan.to_str().unwrap(),
                "--batch-size",
                "120",
            ])
            .args(["--source-url", &source.url, "--target-url", &target.url])
            .output()
            .unwrap()
            .into()
    };
    // `copy` requires a migrated target.
    let schema: common::Outcome = migrator_cmd()
        .args(["schema", "--target-url", &target.url])
        .output()
        .unwrap()
        .into();
    schema.assert_code(0);

    copy().assert_code(0);
    let expected_sql =
        "SELECT id::text, mood_names::text, coalesce(body, '') FROM legacy.notes ORDER BY id";
    let actual_sql = "SELECT id::text, moods::text, body FROM app.notes ORDER BY id";
    assert_eq!(rows(&mut tgt, actual_sql), rows(&mut src, expected_sql));

    let second = copy();
    second.assert_code(0);
    assert_eq!(second.summary("notes"), [0, 0, 500], "{}", second.stdout);

    src.batch_execute("UPDATE legacy.notes SET mood_names = ARRAY['sad']::mood[], body = E'changed\\\\' WHERE id IN (SELECT id FROM legacy.notes ORDER BY id LIMIT 2)").unwrap();
    let third = copy();
    third.assert_code(0);
    assert_eq!(third.summary("notes"), [0, 2, 498], "{}", third.stdout);
    assert_eq!(rows(&mut tgt, actual_sql), rows(&mut src, expected_sql));
    std::fs::remove_dir_all(&dir).unwrap();
}
