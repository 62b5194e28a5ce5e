//! `numeric` compares by value: `1.0` equals `1.00`, while a different value is still a difference.

use crate::verify_support;

use cutover_pgfixture::TestDb;
use verify_support::{changed_columns, table, Pair};

const PLAN: &str = r#"
[[table]]
name = "prices"
source = "legacy.prices"
target = "shop.prices"
key = "id"
columns = [{ name = "id" }, { name = "amount" }]
"#;

#[test]
fn numeric_scale_is_not_a_difference_but_a_value_is() {
    let pair = Pair {
        source: TestDb::create("verify_numeric_src"),
        target: TestDb::create("verify_numeric_dst"),
    };
    pair.source_sql(
        "CREATE SCHEMA legacy;
         CREATE TABLE legacy.prices (id int PRIMARY KEY, amount numeric);
         INSERT INTO legacy.prices VALUES (1, 1.0), (2, 2.50), (3, 3), (4, NULL)",
    );
    pair.target_sql(
        "CREATE SCHEMA shop;
         CREATE TABLE shop.prices (id int PRIMARY KEY, amount numeric);
         INSERT INTO shop.prices VALUES (1, 1.00), (2, 2.5), (3, 3.000), (4, NULL)",
    );
    let plan =
        std::env::temp_dir().join(format!("verify-numeric-plan-{}.toml", std::process::id()));
    std::fs::write(&plan, PLAN).unwrap();
    let plan_arg = plan.to_str().unwrap().to_string();

    let same = pair.verify(&["--plan", &plan_arg]);
    pair.target_sql("UPDATE shop.prices SET amount = 3.001 WHERE id = 3");
    let different = pair.verify(&["--plan", &plan_arg]);
    std::fs::remove_file(&plan).unwrap();

    assert_eq!(same.code, 0, "{}\n{}", same.stderr, same.stdout);
    assert_eq!(different.code, 1, "{}", different.stderr);
    let report = different.json();
    assert_eq!(
        changed_columns(table(&report, "prices")),
        vec![("3".to_string(), vec!["amount".to_string()])]
    );
}
