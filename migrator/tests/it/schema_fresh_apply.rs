//! `migrator schema` on an empty database creates the three service schemas and records the
//! migrations.
use crate::common;
use common::migrator_cmd;
use cutover_pgfixture::TestDb;

#[test]
fn fresh_database_gets_all_tables_and_migration_records() {
    let db = TestDb::create("mig_schema_fresh");
    let out: common::Outcome = migrator_cmd()
        .args(["schema", "--target-url", &db.url])
        .output()
        .unwrap()
        .into();
    out.assert_code(0);

    let mut client = db.client();
    let tables: Vec<String> = client
        .query(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables
             WHERE table_schema IN ('auth', 'chat', 'orchestration') ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "auth.users",
            "chat.conversations",
            "chat.messages",
            "orchestration.coding_tasks",
            "orchestration.task_executions"
        ]
    );
    assert_eq!(common::applied_versions(&mut client), [1, 2, 3]);
    // No foreign key crosses a service schema.
    let cross: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_constraint c
               JOIN pg_class a ON a.oid = c.conrelid JOIN pg_class b ON b.oid = c.confrelid
             WHERE c.contype = 'f' AND a.relnamespace <> b.relnamespace",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(cross, 0);
}
