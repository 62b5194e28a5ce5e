//! Usage errors exit 2 with a message naming what is wrong: a bad option, an unreadable plan file,
//! a malformed database URL (without echoing its password).
use crate::common;
use common::migrator_cmd;

fn run(args: &[&str]) -> common::Outcome {
    migrator_cmd().args(args).output().unwrap().into()
}

#[test]
fn usage_errors_exit_2() {
    let out = run(&["copy", "--batch-size", "0"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--batch-size"), "{}", out.stderr);

    let missing = std::env::temp_dir().join(format!("mig-no-plan-{}.toml", std::process::id()));
    let out = run(&[
        "copy",
        "--plan",
        missing.to_str().unwrap(),
        "--source-url",
        "postgres://127.0.0.1:1/a",
        "--target-url",
        "postgres://127.0.0.1:1/b",
    ]);
    out.assert_code(2);
    assert!(
        out.stderr.contains(&missing.display().to_string()),
        "{}",
        out.stderr
    );

    let out = run(&[
        "status",
        "--target-url",
        "postgres://app:Sup3rSecretPw@127.0.0.1:notaport/app",
    ]);
    out.assert_code(2);
    assert!(out.stderr.contains("target"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("Sup3rSecretPw"),
        "password leaked:\n{}",
        out.stderr
    );
}
