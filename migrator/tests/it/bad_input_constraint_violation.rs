//! A batch the target rejects (a unique violation): exit 7 naming the table and the rejected key;
//! the batches committed before it are kept; once the conflict is fixed the next run resumes there.
use crate::common;
use common::Env;

#[test]
fn rejected_batch_names_table_and_key_and_keeps_earlier_batches() {
    let env = Env::new("mig_bad_constraint", 600);
    let mut legacy = env.source_client();
    // The 251st user in key order: batch 3 of 100-row batches.
    let row = legacy
        .query_one(
            "SELECT id::text, email FROM legacy.users ORDER BY id OFFSET 250 LIMIT 1",
            &[],
        )
        .unwrap();
    let (culprit, email): (String, String) = (row.get(0), row.get(1));
    let mut target = env.target_client();
    // The new system already has an account with that email, under another id (sorted last).
    target
        .execute(
            "INSERT INTO auth.users VALUES ('ffffffff-ffff-ffff-ffff-ffffffffffff', 'someone', $1, 'h', true, true, now(), now())",
            &[&email],
        )
        .unwrap();

    let out = env.run(&["copy", "--tables", "users", "--batch-size", "100"]);
    out.assert_code(7);
    assert!(
        out.stderr.contains("users") && out.stderr.contains(&culprit),
        "{}",
        out.stderr
    );

    let copied: i64 = target
        .query_one(
            "SELECT count(*) FROM auth.users WHERE id <> 'ffffffff-ffff-ffff-ffff-ffffffffffff'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        copied, 200,
        "the two batches before the rejected one are kept, nothing of the rejected one"
    );
    let expected_last: String = legacy
        .query_one(
            "SELECT id::text FROM legacy.users ORDER BY id OFFSET 199 LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    let (last_key, status): (Option<String>, String) = {
        let r = target
            .query_one("SELECT c.last_key, r.status FROM cutover_migrator.copy_checkpoints c JOIN cutover_migrator.copy_runs r USING (run_id)", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (last_key.as_deref(), status.as_str()),
        (Some(expected_last.as_str()), "failed")
    );

    target
        .execute(
            "DELETE FROM auth.users WHERE id = 'ffffffff-ffff-ffff-ffff-ffffffffffff'",
            &[],
        )
        .unwrap();
    let rerun = env.run(&["copy", "--tables", "users", "--batch-size", "100"]);
    rerun.assert_code(0);
    assert!(rerun.stderr.contains("resum"), "{}", rerun.stderr);
    env.assert_equal("users");
    assert_eq!(
        env.latest_checkpoints(),
        [("users".to_string(), 600, 600, 0, 0, true)]
    );
}
