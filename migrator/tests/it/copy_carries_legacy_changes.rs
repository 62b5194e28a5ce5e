//! Legacy changes made after a copy (updates, inserts, a column set to NULL) are carried over by
//! the next run, which touches nothing else.
use crate::common;
use common::Env;

#[test]
fn legacy_update_and_insert_are_carried_over() {
    let env = Env::new("mig_copy_changes", 1200);
    env.run(&["copy", "--batch-size", "300"]).assert_code(0);

    let mut legacy = env.source_client();
    legacy
        .batch_execute(
            "UPDATE legacy.users SET email = 'changed-' || email WHERE id IN (SELECT id FROM legacy.users ORDER BY id LIMIT 3);
             UPDATE legacy.users SET is_active = NULL WHERE id IN (SELECT id FROM legacy.users WHERE is_active = false ORDER BY id DESC LIMIT 2);
             UPDATE legacy.messages SET content = content || ' (edited ✏️)', metadata = '{\"edited\": true}' WHERE id IN (SELECT id FROM legacy.messages ORDER BY id LIMIT 4);
             INSERT INTO legacy.users (id, username, email, password_hash) VALUES
               ('00000000-0000-0000-0000-000000000001', 'new_first', 'first@example.com', 'h'),
               ('ffffffff-ffff-ffff-ffff-ffffffffffff', 'new_last', 'last@example.com', 'h');",
        )
        .unwrap();

    env.run(&["copy", "--batch-size", "300"]).assert_code(0);
    let checkpoints = env.latest_checkpoints();
    let of = |name: &str| checkpoints.iter().find(|c| c.0 == name).cloned().unwrap();
    // users: 3 changed emails + 2 is_active false → NULL → default true; 2 new rows.
    assert_eq!(of("users"), ("users".into(), 1202, 2, 5, 1195, true));
    assert_eq!(of("messages"), ("messages".into(), 1200, 0, 4, 1196, true));
    assert_eq!(of("tasks"), ("tasks".into(), 1200, 0, 0, 1200, true));
    env.assert_equal("users");
    env.assert_equal("messages");

    let mut target = env.target_client();
    let defaulted: bool = target
        .query_one("SELECT bool_and(is_active) FROM auth.users WHERE id IN (SELECT id FROM auth.users WHERE username LIKE 'new_%')", &[])
        .unwrap()
        .get(0);
    assert!(
        defaulted,
        "NULL is_active of the inserted rows must get the plan default true"
    );
}
