//! `copy --restart` abandons an interrupted run and starts a new one from the first key, instead
//! of resuming after the interrupted run's checkpoint.
use crate::common;
use common::Env;

#[test]
fn restart_starts_over_instead_of_resuming() {
    let env = Env::new("mig_copy_restart", 600);
    let mut target = env.target_client();
    // Interrupt a run deterministically: a target row that makes the 4th batch fail.
    let email: String = env
        .source_client()
        .query_one(
            "SELECT email FROM legacy.users ORDER BY id OFFSET 350 LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    target
        .execute("INSERT INTO auth.users VALUES ('ffffffff-ffff-ffff-ffff-ffffffffffff', 'x', $1, 'h', true, true, now(), now())", &[&email])
        .unwrap();
    env.run(&["copy", "--tables", "users", "--batch-size", "100"])
        .assert_code(7);
    target
        .execute(
            "DELETE FROM auth.users WHERE id = 'ffffffff-ffff-ffff-ffff-ffffffffffff'",
            &[],
        )
        .unwrap();

    env.run(&[
        "copy",
        "--tables",
        "users",
        "--batch-size",
        "100",
        "--restart",
    ])
    .assert_code(0);
    assert_eq!(
        env.runs(),
        [(1, "abandoned".to_string()), (2, "complete".to_string())]
    );
    // The new run read every row from the first key: the 300 copied before are unchanged.
    assert_eq!(
        env.latest_checkpoints(),
        [("users".to_string(), 600, 300, 0, 300, true)]
    );
    env.assert_equal("users");
}
