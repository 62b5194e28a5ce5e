//! `migrator schema --dry-run` lists the pending migrations and changes nothing.
use crate::common;
use common::{migrator_cmd, user_relations};
use cutover_pgfixture::TestDb;

#[test]
fn dry_run_lists_pending_and_changes_nothing() {
    let db = TestDb::create("mig_schema_dry");
    let out: common::Outcome = migrator_cmd()
        .args(["schema", "--dry-run", "--target-url", &db.url])
        .output()
        .unwrap()
        .into();
    out.assert_code(0);
    for name in ["001_users", "002_conversations", "003_tasks"] {
        assert!(
            out.stdout.contains(name),
            "{name} not listed:\n{}",
            out.stdout
        );
    }
    let mut client = db.client();
    assert_eq!(user_relations(&mut client), 0, "dry run created relations");
    let schemas: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname IN ('auth', 'chat', 'orchestration')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0);
}
