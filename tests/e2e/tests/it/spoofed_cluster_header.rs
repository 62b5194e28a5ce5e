//! A client-supplied `x-cutover-cluster` never picks a cluster: it is replaced on matched
//! requests and removed on unmatched ones.

use cutover_e2e::{config, Envoy, Upstream};

#[test]
fn client_cannot_choose_the_cluster() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let envoy = Envoy::boot(&config::chat_config(0), &[&legacy, &new]);
    let mut client = envoy.client();

    // Matched at 0 %: must reach legacy although the client asks for new.
    for i in 0..20 {
        let key = format!("user-{i}");
        let response = client.get_with(
            "/api/chat/1",
            &[
                ("x-correlation-id", key.as_bytes()),
                ("x-cutover-cluster", b"chat_new"),
                ("X-Cutover-Cluster", b"chat_new"),
            ],
        );
        assert_eq!(response.status, 200);
        assert_eq!(response.served_by().as_deref(), Some("chat_legacy"));
    }
    for request in legacy.requests() {
        let values: Vec<_> = request
            .headers
            .iter()
            .filter(|(name, _)| name == "x-cutover-cluster")
            .collect();
        assert_eq!(
            values.len(),
            1,
            "exactly the filter's own cluster header: {values:?}"
        );
        assert_eq!(values[0].1, b"chat_legacy");
    }

    // Unmatched: the header is removed, so the fallback route (legacy) serves it.
    legacy.clear_requests();
    for spoof in [&b"chat_new"[..], b"no_such_cluster"] {
        let response = client.get_with("/static/app.js", &[("x-cutover-cluster", spoof)]);
        assert_eq!(
            response.status,
            200,
            "spoofed {:?}",
            String::from_utf8_lossy(spoof)
        );
        assert_eq!(response.served_by().as_deref(), Some("chat_legacy"));
        assert_eq!(
            response.header("x-routed-to"),
            None,
            "unmatched requests are not routed"
        );
    }
    assert_eq!(new.request_count(), 0);
    for request in legacy.requests() {
        assert_eq!(
            request.header("x-cutover-cluster"),
            None,
            "{}",
            request.target
        );
    }
}
