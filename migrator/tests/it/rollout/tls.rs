//! `https://` admin endpoints with `--cacert`: a real Envoy admin behind a real TLS listener (a
//! second Envoy terminating TLS with a certificate made by `openssl` for this test, and
//! forwarding to the first Envoy's admin port). `rollout` and `cutover-verify` work through it
//! with the CA; without it the certificate is refused, named, and nothing is written.

use super::*;

use cutover_e2e::envoy::new_workdir;
use serde_json::json;

/// A CA and a server certificate for `localhost` / `127.0.0.1` signed by it, in `dir`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (the openssl package) runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_pki(dir: &Path) -> Pki {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=cutover test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
    Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// An Envoy whose listener terminates TLS with `pki` and forwards everything to `admin_port`.
fn tls_front(workdir: &Path, pki: &Pki, admin_port: u16) -> Envoy {
    let (cert, key) = (pki.cert.clone(), pki.key.clone());
    Envoy::boot_bootstrap(workdir, move |listener_port, own_admin_port| {
        json!({
            "node": {"id": "tls-front", "cluster": "tls-front"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": own_admin_port}}},
            "static_resources": {
                "listeners": [{
                    "name": "tls",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                    "filter_chains": [{
                        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                            "common_tls_context": {"tls_certificates": [{
                                "certificate_chain": {"filename": cert},
                                "private_key": {"filename": key}
                            }]}
                        }},
                        "filters": [{
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                "stat_prefix": "tls",
                                "route_config": {"virtual_hosts": [{"name": "admin", "domains": ["*"],
                                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "admin", "timeout": "30s"}}]}]},
                                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
                            }
                        }]
                    }]
                }],
                "clusters": [{
                    "name": "admin", "type": "STATIC", "connect_timeout": "1s",
                    "load_assignment": {"cluster_name": "admin", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}}]}]}
                }]
            }
        })
    })
}

fn https_admin(front: &Envoy) -> String {
    format!("https://localhost:{}", front.listener_port())
}

fn rollout_over_tls(bench: &Bench, admin: &str, extra: &[&str], args: &[&str]) -> Outcome {
    bench
        .command_via(admin)
        .args(extra)
        .args(args)
        .output()
        .expect("run migrator rollout")
        .into()
}

#[test]
fn an_https_admin_endpoint_works_with_its_ca_and_is_refused_without_it() {
    let bench = boot(&config::chat_config(10));
    let dir = new_workdir();
    let pki = make_pki(&dir);
    let front = tls_front(&dir, &pki, bench.envoy.admin_port());
    let admin = https_admin(&front);
    let ca = pki.ca.to_str().unwrap();

    // With the CA: show, then a step written and confirmed over TLS.
    let out = rollout_over_tls(
        &bench,
        &admin,
        &["--cacert", ca],
        &["show", "--format", "json"],
    );
    assert_code(&out, 0, "show over https");
    let shown: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(shown["targets"][0]["admin_url"], admin.as_str());
    assert_eq!(
        shown["targets"][0]["services"][0]["live"]["new_percentage"],
        10
    );
    assert_code(
        &rollout_over_tls(&bench, &admin, &["--cacert", ca], &["set", "chat", "20"]),
        0,
        "set over https",
    );
    assert_eq!(bench.gauge("new_percentage"), Some(20));

    // Without it: the certificate is not trusted; exit 6, named, nothing written.
    let before = std::fs::read(bench.file()).unwrap();
    let out = rollout_over_tls(&bench, &admin, &[], &["set", "chat", "30"]);
    assert_code(&out, 6, "untrusted certificate");
    assert!(
        out.stderr.to_lowercase().contains("certificate"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing was written"), "{}", out.stderr);
    assert_eq!(std::fs::read(bench.file()).unwrap(), before);
    assert_eq!(bench.gauge("new_percentage"), Some(20));

    // A --cacert that is not a certificate: a usage error naming the file.
    let not_pem = dir.join("not-a-cert.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let out = rollout_over_tls(
        &bench,
        &admin,
        &["--cacert", not_pem.to_str().unwrap()],
        &["show"],
    );
    assert_code(&out, 2, "bad --cacert");
    assert!(out.stderr.contains("not-a-cert.pem"), "{}", out.stderr);

    // cutover-verify reads the stats over the same https endpoint.
    let out = cutover_verify_support::run(&[
        "cutover-verify",
        "--admin-url",
        &admin,
        "--cacert",
        ca,
        "--service",
        "chat=chat_new",
        "--format",
        "json",
    ]);
    assert!(
        out.code == 0 || out.code == 1,
        "a report, not an error: {}",
        out.stderr
    );
    let report = out.json();
    assert!(
        report["admin_url"].as_str().unwrap().starts_with(&admin),
        "{report:#}"
    );
    assert_eq!(
        cutover_verify_support::check(&report, "chat.split")["threshold"],
        "20% ± 5 points"
    );
    let out = cutover_verify_support::run(&[
        "cutover-verify",
        "--admin-url",
        &admin,
        "--service",
        "chat=chat_new",
    ]);
    assert_code(&out, 2, "cutover-verify without the CA");
    assert!(
        out.stderr.to_lowercase().contains("certificate"),
        "{}",
        out.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}
