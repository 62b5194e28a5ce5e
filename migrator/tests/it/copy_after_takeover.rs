//! After the final cutover the target holds writes the source never saw. Found by following the
//! runbook: an edit made only on new (a message re-posted with new content) was silently reverted
//! by `migrator copy --tables messages`. Once `migrator takeover mark` recorded the takeover, copy
//! refuses (exit 9) and changes nothing; `--after-takeover` copies anyway, warning, and still keeps
//! target rows with a newer version. Swapped URLs (the legacy database as the target) are named.
use crate::common;
use common::Env;

fn message_content(env: &Env, id: &str) -> String {
    env.target_client()
        .query_one(
            &format!("SELECT content FROM chat.messages WHERE id = '{id}'"),
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn copy_refuses_once_the_target_has_taken_over() {
    let env = Env::new("mig_takeover", 20);
    env.run(&["copy"]).assert_code(0);
    let status = env.run(&["takeover", "status"]);
    status.assert_code(0);
    assert!(
        status.stdout.contains("has not taken over"),
        "{}",
        status.stdout
    );
    env.run(&["takeover", "mark"]).assert_code(0);
    env.run(&["takeover", "mark"]).assert_code(0); // idempotent

    // An edit made only on new after the cutover.
    let mut target = env.target_client();
    let id: String = target
        .query_one(
            "SELECT id::text FROM chat.messages ORDER BY id LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    target
        .execute(
            "UPDATE chat.messages SET content = 're-posted on new' WHERE id = CAST(CAST($1 AS text) AS uuid)",
            &[&id],
        )
        .unwrap();
    let user: String = target
        .query_one("SELECT id::text FROM auth.users ORDER BY id LIMIT 1", &[])
        .unwrap()
        .get(0);
    target
        .execute(
            "UPDATE auth.users SET email = 'changed-on-new@example.org', updated_at = '2031-01-01' WHERE id = CAST(CAST($1 AS text) AS uuid)",
            &[&user],
        )
        .unwrap();

    for args in [
        &["copy", "--tables", "messages"][..],
        &["copy", "--tables", "messages", "--dry-run"][..],
    ] {
        let refused = env.run(args);
        refused.assert_code(migrator::error::exit::TAKEN_OVER.into());
        assert!(
            refused.stderr.contains(&env.target.name)
                && refused.stderr.contains("--after-takeover"),
            "{}",
            refused.stderr
        );
    }
    assert_eq!(message_content(&env, &id), "re-posted on new");

    // Prune never runs on a target that has taken over, not even with --after-takeover.
    let prune = env.run(&["copy", "--prune", "--no-target-writes", "--after-takeover"]);
    prune.assert_code(2);
    assert!(prune.stderr.contains("--prune refused"), "{}", prune.stderr);
    assert_eq!(message_content(&env, &id), "re-posted on new");

    // Deliberately: copies, warns; the versioned row stays, the unversioned one is overwritten.
    let forced = env.run(&["copy", "--tables", "users,messages", "--after-takeover"]);
    forced.assert_code(0);
    assert!(forced.stderr.contains("WARNING"), "{}", forced.stderr);
    assert_eq!(forced.summary("users")[1], 0, "the newer user row is kept");
    let email: String = env
        .target_client()
        .query_one(
            "SELECT email FROM auth.users WHERE id = CAST(CAST($1 AS text) AS uuid)",
            &[&user],
        )
        .unwrap()
        .get(0);
    assert_eq!(email, "changed-on-new@example.org");
    assert_ne!(message_content(&env, &id), "re-posted on new");

    env.run(&["takeover", "clear"]).assert_code(0);
    env.run(&["copy", "--tables", "messages"]).assert_code(0);
}

#[test]
fn swapped_source_and_target_urls_are_named() {
    let env = Env::new("mig_swapped", 5);
    for command in ["copy", "verify"] {
        let out = env.run(&[
            command,
            "--source-url",
            &env.target.url,
            "--target-url",
            &env.source.url,
        ]);
        out.assert_code(2);
        assert!(
            out.stderr.contains("swapped")
                && out.stderr.contains(&env.source.name)
                && out.stderr.contains("legacy.users"),
            "{command}: {}",
            out.stderr
        );
    }
    assert_eq!(
        common::user_relations(&mut env.source_client()),
        common::user_relations(&mut Env::unmigrated("mig_swapped_ref", 5).source_client()),
        "nothing was created in the legacy database"
    );
}
