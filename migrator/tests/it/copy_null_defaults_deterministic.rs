//! NULL defaults are deterministic: two copies at different times into two targets give the same
//! values, derived as the plan says (never the time of the copy).
use crate::common;
use std::time::Duration;

use common::Env;
use cutover_pgfixture::TestDb;

#[test]
fn defaults_are_identical_across_runs_and_follow_the_plan() {
    let env = Env::new("mig_copy_defaults", 600);
    env.run(&["copy"]).assert_code(0);
    std::thread::sleep(Duration::from_millis(1100));
    let second = TestDb::create("mig_copy_defaults_tgt2");
    let run = |args: &[&str]| -> common::Outcome {
        common::migrator_cmd()
            .args(args)
            .env("LEGACY_DATABASE_URL", &env.source.url)
            .env("DATABASE_URL", &second.url)
            .output()
            .unwrap()
            .into()
    };
    run(&["schema"]).assert_code(0);
    run(&["copy"]).assert_code(0);

    let query = "SELECT string_agg(concat_ws('|', id, is_active, is_verified, created_at, updated_at), ',' ORDER BY id) FROM auth.users";
    let first_values: String = env.target_client().query_one(query, &[]).unwrap().get(0);
    let second_values: String = second.client().query_one(query, &[]).unwrap().get(0);
    assert_eq!(first_values, second_values);

    // The legacy rows with NULLs got the documented defaults.
    let micros = |client: &mut postgres::Client, sql: &str| -> Vec<(String, i64)> {
        client
            .query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    let mut legacy = env.source_client();
    let mut target = env.target_client();
    let epoch_micros = 946_684_800_000_000i64; // 2000-01-01T00:00:00Z
    let both_null = micros(
        &mut legacy,
        "SELECT id::text, 0::int8 FROM legacy.users WHERE created_at IS NULL AND updated_at IS NULL ORDER BY id",
    );
    assert!(
        !both_null.is_empty(),
        "the fixture must have users with both timestamps NULL"
    );
    let copied = micros(
        &mut target,
        "SELECT id::text, (extract(epoch FROM created_at) * 1000000)::int8 FROM auth.users ORDER BY id",
    );
    for (id, _) in &both_null {
        let (_, created) = copied.iter().find(|(i, _)| i == id).unwrap();
        assert_eq!(*created, epoch_micros, "user {id}: created_at default");
    }
    let derived = micros(
        &mut legacy,
        "SELECT id::text, (extract(epoch FROM updated_at) * 1000000)::int8 FROM legacy.users
         WHERE created_at IS NULL AND updated_at IS NOT NULL ORDER BY id",
    );
    assert!(
        !derived.is_empty(),
        "the fixture must have users with only created_at NULL"
    );
    for (id, updated) in &derived {
        let (_, created) = copied.iter().find(|(i, _)| i == id).unwrap();
        assert_eq!(
            created, updated,
            "user {id}: created_at must default to updated_at"
        );
    }
    let null_status: i64 = legacy
        .query_one(
            "SELECT count(*) FROM legacy.conversations WHERE status IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(null_status > 0);
    env.assert_equal("conversations");
}
