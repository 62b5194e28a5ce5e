//! A migration recorded in the target but unknown to this binary (the target was migrated by a
//! newer migrator): `schema`, `copy` and `status` exit 4, naming its version.
use crate::common;
use common::Env;

#[test]
fn unknown_applied_migration_is_refused() {
    let env = Env::new("mig_schema_unknown", 10);
    env.target_client()
        .execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (999, 'from a newer migrator', true, sha384('x'), 0)",
            &[],
        )
        .unwrap();
    for command in ["schema", "copy", "status"] {
        let out = env.run(&[command]);
        out.assert_code(4);
        assert!(out.stderr.contains("999"), "{command}: {}", out.stderr);
    }
    assert_eq!(env.count("auth.users"), 0, "copy wrote despite the refusal");
}
