//! Copy into a target whose schema is not migrated: exit 4, naming the pending migrations;
//! nothing is written.
mod common;
use common::Env;

#[test]
fn copy_into_unmigrated_target_exits_4() {
    let env = Env::unmigrated("mig_bad_unmigrated", 10);
    let out = env.run(&["copy"]);
    out.assert_code(4);
    assert!(
        out.stderr.contains("001_users") && out.stderr.contains("migrator schema"),
        "{}",
        out.stderr
    );
    let relations: i64 = env
        .target_client()
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(relations, 0, "copy wrote into an unmigrated target");
}
