//! Copy into a target whose schema is not migrated: exit 4, naming the pending migrations;
//! nothing is written.
use crate::common;
use common::{user_relations, Env};

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
    assert_eq!(
        user_relations(&mut env.target_client()),
        0,
        "copy wrote into an unmigrated target"
    );
}
