//! A second `migrator schema` changes nothing.
use crate::common;
use common::migrator_cmd;
use cutover_pgfixture::TestDb;

#[test]
fn second_run_applies_nothing() {
    let db = TestDb::create("mig_schema_rerun");
    let schema = || -> common::Outcome {
        migrator_cmd()
            .args(["schema", "--target-url", &db.url])
            .output()
            .unwrap()
            .into()
    };
    schema().assert_code(0);
    let mut client = db.client();
    let record = |c: &mut postgres::Client| -> Vec<(i64, String)> {
        c.query(
            "SELECT version, installed_on::text FROM _sqlx_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let before = record(&mut client);
    client.execute("INSERT INTO auth.users VALUES (gen_random_uuid(), 'u', 'e', 'h', true, true, now(), now())", &[]).unwrap();

    schema().assert_code(0);
    assert_eq!(
        record(&mut client),
        before,
        "migration records were rewritten"
    );
    let users: i64 = client
        .query_one("SELECT count(*) FROM auth.users", &[])
        .unwrap()
        .get(0);
    assert_eq!(users, 1, "data was touched by a no-op schema run");
}
