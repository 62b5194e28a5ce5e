//! An unreachable server: exit 3, the message says unreachable and names the (redacted) URL.
use crate::common;
use common::migrator_cmd;

#[test]
fn unreachable_server_exits_3_without_the_password() {
    // A port nothing listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://app:Sup3rSecretPw@127.0.0.1:{port}/app");
    for args in [
        vec!["schema", "--target-url", &url],
        vec!["status", "--target-url", &url],
    ] {
        let out: common::Outcome = migrator_cmd().args(&args).output().unwrap().into();
        out.assert_code(3);
        assert!(out.stderr.contains("unreachable"), "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!("127.0.0.1:{port}")),
            "{}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("Sup3rSecretPw") && !out.stdout.contains("Sup3rSecretPw"),
            "password leaked:\n{}",
            out.stderr
        );
    }
}
