//! Real Envoy: override rules and cookie stickiness route as configured (and a client still
//! cannot name a cluster); every shipped config strips the headers the filter owns before the
//! filter, so a bypassed filter (a VM that failed under FAIL_OPEN) lets no client pick a cluster
//! or pass a write off as a shadow; the production template keeps the filter off routes outside
//! the cutover.

use std::fs;
use std::path::Path;

use cutover_e2e::envoy::{new_workdir, WASM_TYPE_URL};
use cutover_e2e::{config, filter_wasm, workspace_root, Envoy, Response, Upstream};
use cutover_filter::bucket::bucket;
use cutover_filter::config::FilterConfig;
use serde_json::{json, Value};

const CLUSTER: &str = "x-cutover-cluster";
const SIDE_HEADER: &str = "x-cutover-side";

/// `chat` at `new_percentage` with header and cookie override rules; `session` keys by cookie.
fn override_config(new_percentage: u8) -> Value {
    let mut service = config::chat_service(new_percentage);
    service["overrides"] = json!([
        {"header": SIDE_HEADER, "value": "new", "side": "new"},
        {"header": SIDE_HEADER, "value": "legacy", "side": "legacy"},
        {"cookie": "cutover", "value": "beta", "side": "new"},
        {"cookie": "cutover", "value": "stay", "side": "legacy"}
    ]);
    let mut filter_config = config::filter_config(vec![service]);
    filter_config["stickiness_cookies"] = json!(["session"]);
    filter_config
}

/// The first `prefix-N` key whose bucket in `chat` is on `side` at `percentage`.
fn key_on(side: &str, percentage: u8, prefix: &str) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|k| (bucket("chat", k.as_bytes()) <= percentage) == (side == "new"))
        .expect("a key on each side")
}

fn routed(response: &Response) -> (u16, Option<String>, Option<String>) {
    (
        response.status,
        response.served_by(),
        response.header("x-routed-to"),
    )
}

fn on(side: &str) -> (u16, Option<String>, Option<String>) {
    (200, Some(format!("chat_{side}")), Some(side.to_string()))
}

#[test]
fn overrides_by_header_and_by_cookie_route_to_the_configured_side() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let envoy = Envoy::boot(&override_config(50), &[&legacy, &new]);
    let mut client = envoy.client();
    let legacy_key = key_on("legacy", 50, "user");
    let new_key = key_on("new", 50, "user");
    const EACH: u64 = 5;
    for _ in 0..EACH {
        let key = ("x-correlation-id", legacy_key.as_bytes());
        let r = client.get_with("/api/chat/1", &[key, (SIDE_HEADER, b"new")]);
        assert_eq!(routed(&r), on("new"));
        let r = client.get_with("/api/chat/1", &[key, ("cookie", b"a=1; cutover=beta")]);
        assert_eq!(routed(&r), on("new"));

        let key = ("x-correlation-id", new_key.as_bytes());
        let r = client.get_with("/api/conversations/2", &[key, (SIDE_HEADER, b"legacy")]);
        assert_eq!(routed(&r), on("legacy"));
        let r = client.get_with(
            "/api/conversations/2",
            &[key, ("cookie", b"a=1"), ("cookie", b"cutover=\"stay\"")],
        );
        assert_eq!(routed(&r), on("legacy"));
        // No rule matches: the bucket decides.
        let r = client.get_with("/api/chat/3", &[key, (SIDE_HEADER, b"canary")]);
        assert_eq!(routed(&r), on("new"));
    }
    assert_eq!(
        envoy.cutover_counter("chat", "routed_override_new"),
        2 * EACH
    );
    assert_eq!(
        envoy.cutover_counter("chat", "routed_override_legacy"),
        2 * EACH
    );
    assert_eq!(envoy.cutover_counter("chat", "routed_new"), EACH);
    assert_eq!(envoy.cutover_counter("chat", "routed_legacy"), 0);
    assert_eq!(new.request_count() as u64, 3 * EACH);
    assert_eq!(legacy.request_count() as u64, 2 * EACH);
}

#[test]
fn with_overrides_on_a_client_still_cannot_name_a_cluster() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let envoy = Envoy::boot(&override_config(0), &[&legacy, &new]);
    let mut client = envoy.client();
    let key = ("x-correlation-id", &b"user-1"[..]);
    // 0 %: a spoofed cluster header alone stays on legacy.
    for spoofed in [&b"chat_new"[..], b"orchestration_new", b"chat_legacy"] {
        let r = client.get_with("/api/chat/1", &[key, (CLUSTER, spoofed)]);
        assert_eq!(routed(&r), on("legacy"), "{spoofed:?}");
    }
    // An override picks a side of the service, never the spoofed cluster.
    let r = client.get_with(
        "/api/chat/1",
        &[key, (CLUSTER, b"chat_legacy"), (SIDE_HEADER, b"new")],
    );
    assert_eq!(routed(&r), on("new"));
    // The override value itself names no cluster: a cluster name there matches no rule.
    let r = client.get_with("/api/chat/1", &[key, (SIDE_HEADER, b"chat_new")]);
    assert_eq!(routed(&r), on("legacy"));
    // Upstreams saw exactly one cluster header, the filter's.
    for request in legacy.requests().iter().chain(new.requests().iter()) {
        let values: Vec<&[u8]> = request
            .headers
            .iter()
            .filter(|(name, _)| name == CLUSTER)
            .map(|(_, value)| value.as_slice())
            .collect();
        assert_eq!(values.len(), 1, "{:?}", request.headers);
    }
    assert_eq!(new.request_count(), 1);
}

#[test]
fn cookie_stickiness_holds_across_a_10_to_50_step() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let envoy = Envoy::builder(&override_config(10))
        .upstream(&legacy)
        .upstream(&new)
        .ecds()
        .boot();
    let mut client = envoy.client();
    const SESSIONS: usize = 200;
    let sessions: Vec<String> = (0..SESSIONS).map(|n| format!("sess-{n:04}")).collect();
    let side_of = |client: &mut cutover_e2e::HttpClient, session: &str| {
        // A browser: no correlation id, other cookies around the session, Envoy's x-request-id.
        let cookie = format!("theme=dark; session={session}; lang=en");
        let r = client.get_with("/api/chat/history", &[("cookie", cookie.as_bytes())]);
        assert_eq!(r.status, 200);
        r.header("x-routed-to").expect("x-routed-to")
    };
    let at_10: Vec<String> = sessions.iter().map(|s| side_of(&mut client, s)).collect();
    // Twice the same: sticky within a step.
    for (session, side) in sessions.iter().zip(&at_10) {
        assert_eq!(&side_of(&mut client, session), side, "{session}");
    }

    let mut step = override_config(50);
    step["services"][0]["new_percentage"] = json!(50);
    envoy.update_filter_config(&step);
    let at_50: Vec<String> = sessions.iter().map(|s| side_of(&mut client, s)).collect();

    let mut new_at_10 = 0;
    for ((session, before), after) in sessions.iter().zip(&at_10).zip(&at_50) {
        let b = bucket("chat", session.as_bytes());
        assert_eq!(before, if b <= 10 { "new" } else { "legacy" }, "{session}");
        assert_eq!(after, if b <= 50 { "new" } else { "legacy" }, "{session}");
        if before == "new" {
            new_at_10 += 1;
            assert_eq!(after, "new", "{session} moved back to legacy at 50 %");
        }
    }
    assert!(new_at_10 > 0 && at_50.iter().any(|s| s == "legacy"));
    // Keyed by the cookie, not by Envoy's per-request x-request-id.
    assert_eq!(envoy.cutover_counter("chat", "no_key"), 0);
}

// ---------------------------------------------------------------------------------------------
// Shipped configs with the filter bypassed.
// ---------------------------------------------------------------------------------------------

/// A proxy-wasm module that loads and configures fine and traps in its first
/// `proxy_on_request_headers`: under FAIL_OPEN Envoy then bypasses it. In WAT:
///
/// ```text
/// (module
///   (memory (export "memory") 1)
///   (func (export "proxy_abi_version_0_2_1"))
///   (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
///   (func (export "proxy_on_context_create") (param i32 i32))
///   (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
///   (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
///   (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable))
/// ```
fn trapping_module() -> Vec<u8> {
    /// Unsigned LEB128, as the binary format encodes sizes.
    fn leb128(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![id];
        out.extend(leb128(body.len()));
        out.extend_from_slice(body);
        out
    }
    fn name(text: &str) -> Vec<u8> {
        let mut out = leb128(text.len());
        out.extend_from_slice(text.as_bytes());
        out
    }
    const I32: u8 = 0x7f;
    let types: &[&[u8]] = &[
        &[0x60, 0, 0],
        &[0x60, 1, I32, 1, I32],
        &[0x60, 2, I32, I32, 0],
        &[0x60, 2, I32, I32, 1, I32],
        &[0x60, 3, I32, I32, I32, 1, I32],
    ];
    let mut type_section = vec![types.len() as u8];
    types.iter().for_each(|t| type_section.extend_from_slice(t));
    // Function index -> type index.
    let functions: &[u8] = &[0, 1, 2, 3, 3, 4];
    let mut function_section = vec![functions.len() as u8];
    function_section.extend_from_slice(functions);
    let exports = [
        ("memory", 2u8, 0u8),
        ("proxy_abi_version_0_2_1", 0, 0),
        ("proxy_on_memory_allocate", 0, 1),
        ("proxy_on_context_create", 0, 2),
        ("proxy_on_vm_start", 0, 3),
        ("proxy_on_configure", 0, 4),
        ("proxy_on_request_headers", 0, 5),
    ];
    let mut export_section = vec![exports.len() as u8];
    for (export, kind, index) in exports {
        export_section.extend(name(export));
        export_section.extend([kind, index]);
    }
    // Bodies: no locals, instructions, `end`.
    let bodies: &[&[u8]] = &[
        &[0x00, 0x0b],
        &[0x00, 0x41, 0x80, 0x08, 0x0b],
        &[0x00, 0x0b],
        &[0x00, 0x41, 0x01, 0x0b],
        &[0x00, 0x41, 0x01, 0x0b],
        &[0x00, 0x00, 0x0b],
    ];
    let mut code_section = vec![bodies.len() as u8];
    for body in bodies {
        code_section.push(body.len() as u8);
        code_section.extend_from_slice(body);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.extend(section(1, &type_section));
    module.extend(section(3, &function_section));
    module.extend(section(5, &[1, 0, 1]));
    module.extend(section(7, &export_section));
    module.extend(section(10, &code_section));
    module
}

fn shipped(relative: &str) -> Value {
    let path = workspace_root().join(relative);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    serde_json::to_value(yaml).expect("YAML as JSON")
}

fn hcm(bootstrap: &mut Value) -> &mut Value {
    &mut bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]
}

fn http_filters(bootstrap: &mut Value) -> &mut Vec<Value> {
    hcm(bootstrap)["http_filters"]
        .as_array_mut()
        .expect("http_filters")
}

const EARLY_HEADER_MUTATION: &str =
    "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation";

/// The request headers an HCM config removes before route selection and the HTTP filters.
fn removed_early(hcm: &Value) -> Vec<String> {
    hcm["early_header_mutation_extensions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["typed_config"]["@type"] == EARLY_HEADER_MUTATION)
        .flat_map(|e| {
            e["typed_config"]["mutations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|m| m["remove"].as_str().map(str::to_ascii_lowercase))
        .collect()
}

/// The cutover filter's plugin configuration in `bootstrap` (inline, or from the ECDS step file).
fn embedded_filter_config(wasm_config: &Value) -> FilterConfig {
    let text = wasm_config["config"]["configuration"]["value"]
        .as_str()
        .expect("configuration.value");
    FilterConfig::from_json(text.as_bytes()).expect("the shipped filter config is valid")
}

fn ecds_step_wasm_config() -> Value {
    let path = workspace_root().join("envoy/ecds/step-10.json");
    let file: Value = serde_json::from_str(&fs::read_to_string(path).expect("read step"))
        .expect("step file is JSON");
    file["resources"][0]["typed_config"].clone()
}

/// The filter's Wasm config in `bootstrap`: inline, or (ECDS) the ready step file's.
fn wasm_config_of(bootstrap: &mut Value) -> Value {
    let filter = http_filters(bootstrap)
        .iter()
        .find(|f| f["name"] == "cutover")
        .expect("a filter named cutover")
        .clone();
    if filter["typed_config"].is_object() {
        filter["typed_config"].clone()
    } else {
        ecds_step_wasm_config()
    }
}

#[test]
fn every_shipped_config_strips_the_filters_headers_before_the_filter() {
    for file in [
        "envoy/demo.yaml",
        "envoy/demo-ecds.yaml",
        "envoy/production-template.yaml",
    ] {
        let mut bootstrap = shipped(file);
        let owned: Vec<String> = embedded_filter_config(&wasm_config_of(&mut bootstrap))
            .owned_request_headers()
            .iter()
            .map(|h| h.to_string())
            .collect();
        let stripped = removed_early(hcm(&mut bootstrap));
        for header in &owned {
            assert!(
                stripped.contains(header),
                "{file}: {header} is not removed before routing (removed: {stripped:?})"
            );
        }
    }

    // The README's snippet, which users copy.
    let readme = fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let snippet = readme
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a yaml block");
    let snippet: serde_yaml::Value = serde_yaml::from_str(snippet).expect("snippet is YAML");
    let snippet = serde_json::to_value(snippet).expect("YAML as JSON");
    let removed = removed_early(&snippet);
    for header in ["x-cutover-cluster", "x-routed-to", "x-cutover-shadow"] {
        assert!(
            removed.contains(&header.to_string()),
            "README snippet: {header}"
        );
    }

    // Istio: an EnvoyFilter merges the same early removal into the gateway's connection manager.
    let text = fs::read_to_string(workspace_root().join("envoy/istio/cutover.yaml")).unwrap();
    let documents: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let yaml: serde_yaml::Value = serde::Deserialize::deserialize(d).expect("YAML");
            serde_json::to_value(yaml).expect("YAML as JSON")
        })
        .collect();
    let plugin = documents
        .iter()
        .find(|d| d["kind"] == "WasmPlugin")
        .expect("WasmPlugin");
    let plugin_config = serde_json::to_vec(&plugin["spec"]["pluginConfig"]).unwrap();
    let owned = FilterConfig::from_json(&plugin_config).expect("pluginConfig valid");
    let strip = documents
        .iter()
        .find(|d| d["kind"] == "EnvoyFilter")
        .expect("an EnvoyFilter stripping the plugin's headers");
    assert_eq!(
        strip["spec"]["workloadSelector"]["labels"],
        plugin["spec"]["selector"]["matchLabels"]
    );
    let patch = &strip["spec"]["configPatches"][0];
    assert_eq!(patch["applyTo"], "NETWORK_FILTER");
    assert_eq!(
        patch["match"]["listener"]["filterChain"]["filter"]["name"],
        "envoy.filters.network.http_connection_manager"
    );
    assert_eq!(patch["patch"]["operation"], "MERGE");
    let merged = &patch["patch"]["value"]["typed_config"];
    let removed = removed_early(merged);
    for header in owned.owned_request_headers() {
        assert!(removed.contains(&header.to_string()), "istio: {header}");
    }
    // What the patch merges is a valid connection manager field: validate it in demo.yaml's HCM
    // (with demo.yaml's own removal taken out first).
    let mut demo = shipped("envoy/demo.yaml");
    let scratch = new_workdir();
    for filter in http_filters(&mut demo).iter_mut() {
        if filter["name"] == "cutover" {
            filter["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] =
                json!(filter_wasm());
        }
    }
    hcm(&mut demo)["early_header_mutation_extensions"] =
        merged["early_header_mutation_extensions"].clone();
    let path = scratch.join("istio-strip.json");
    fs::write(&path, serde_json::to_string_pretty(&demo).unwrap()).unwrap();
    let output = cutover_e2e::validate_config(&path);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    fs::remove_dir_all(&scratch).ok();
}

/// The four upstreams every shipped config routes to.
struct Upstreams(Vec<Upstream>);

impl Upstreams {
    fn start() -> Self {
        Upstreams(
            [
                "chat_legacy",
                "chat_new",
                "orchestration_legacy",
                "orchestration_new",
            ]
            .into_iter()
            .map(Upstream::start)
            .collect(),
        )
    }

    fn port(&self, cluster: &str) -> u16 {
        self.0
            .iter()
            .find(|u| u.name() == cluster)
            .unwrap_or_else(|| panic!("no upstream for cluster {cluster}"))
            .port()
    }

    fn all_requests(&self) -> Vec<cutover_e2e::RecordedRequest> {
        self.0.iter().flat_map(Upstream::requests).collect()
    }
}

/// `bootstrap` on loopback: listener and admin on the given ports, every cluster a STATIC
/// endpoint on its upstream. Nothing else changes.
fn on_loopback(mut bootstrap: Value, upstreams: &Upstreams, listener: u16, admin: u16) -> Value {
    bootstrap["admin"]["address"]["socket_address"] =
        json!({"address": "127.0.0.1", "port_value": admin});
    bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"] =
        json!({"address": "127.0.0.1", "port_value": listener});
    for cluster in bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .expect("clusters")
    {
        let name = cluster["name"].as_str().expect("cluster name").to_string();
        cluster["type"] = json!("STATIC");
        cluster["load_assignment"] = json!({"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address":
                {"address": "127.0.0.1", "port_value": upstreams.port(&name)}}}}]}]});
    }
    bootstrap
}

/// The filter's Wasm config pointed at `wasm`, with `failure_policy` FAIL_OPEN.
fn fail_open_with(mut wasm_config: Value, wasm: &Path) -> Value {
    assert_eq!(wasm_config["@type"], WASM_TYPE_URL);
    wasm_config["config"]["vm_config"]["code"]["local"]["filename"] = json!(wasm);
    wasm_config["config"]["failure_policy"] = json!("FAIL_OPEN");
    wasm_config
}

/// Boots the shipped `file` with the trapping VM under FAIL_OPEN (for ECDS, in the watched file
/// the bootstrap names), optionally without its early header removal.
fn boot_bypassed(file: &str, upstreams: &Upstreams, keep_header_removal: bool) -> Envoy {
    let workdir = new_workdir();
    let trap = workdir.join("trap.wasm");
    fs::write(&trap, trapping_module()).expect("write trap.wasm");
    let mut bootstrap = shipped(file);
    if !keep_header_removal {
        let removed = hcm(&mut bootstrap)
            .as_object_mut()
            .and_then(|h| h.remove("early_header_mutation_extensions"));
        assert!(
            removed.is_some(),
            "{file} has early_header_mutation_extensions"
        );
    }
    let cutover = http_filters(&mut bootstrap)
        .iter_mut()
        .find(|f| f["name"] == "cutover")
        .expect("cutover filter");
    if cutover["typed_config"].is_object() {
        cutover["typed_config"] = fail_open_with(cutover["typed_config"].clone(), &trap);
    } else {
        let source = &cutover["config_discovery"]["config_source"]["path_config_source"];
        let watched = workdir.join(source["path"].as_str().expect("ECDS path"));
        fs::create_dir_all(watched.parent().expect("watched directory")).unwrap();
        let resource = json!({"resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": "cutover",
            "typed_config": fail_open_with(ecds_step_wasm_config(), &trap)
        }]});
        fs::write(&watched, serde_json::to_vec_pretty(&resource).unwrap()).unwrap();
    }
    Envoy::boot_bootstrap(&workdir, |listener, admin| {
        on_loopback(bootstrap.clone(), upstreams, listener, admin)
    })
}

/// A client's write with every header the filter owns spoofed.
fn spoofed_write(client: &mut cutover_e2e::HttpClient) -> Response {
    client.send(
        "POST",
        "/api/chat/messages",
        &[
            ("content-type", b"application/json"),
            ("x-correlation-id", b"attacker-1"),
            (CLUSTER, b"chat_new"),
            ("x-routed-to", b"new"),
            ("x-cutover-shadow", b"true"),
        ],
        b"{\"text\":\"not a shadow\"}",
    )
}

/// Sends requests until the trapping VM has failed and Envoy bypasses it (bounded).
fn bypass_the_filter(envoy: &Envoy) {
    let mut client = envoy.client();
    for _ in 0..3 {
        let _ = client.try_send("GET", "/api/chat/warm-up", &[], b"");
        if envoy.log().contains("unreachable") {
            return;
        }
    }
    panic!("the trapping VM did not fail:\n{}", envoy.log());
}

#[test]
fn a_bypassed_filter_lets_no_client_pick_a_cluster_or_fake_a_shadow() {
    for file in [
        "envoy/demo.yaml",
        "envoy/demo-ecds.yaml",
        "envoy/production-template.yaml",
    ] {
        let upstreams = Upstreams::start();
        let envoy = boot_bypassed(file, &upstreams, true);
        bypass_the_filter(&envoy);
        for u in &upstreams.0 {
            u.clear_requests();
        }
        let mut client = envoy.client();
        for _ in 0..3 {
            let r = spoofed_write(&mut client);
            // Bypassed: the fallback route sends the write to legacy, as the filter would not.
            assert_eq!(r.status, 200, "{file}: {}", r.body_text());
            assert_eq!(r.served_by().as_deref(), Some("chat_legacy"), "{file}");
            assert_eq!(
                r.header("x-routed-to"),
                None,
                "{file}: the filter did not run"
            );
        }
        let received = upstreams.all_requests();
        assert_eq!(received.len(), 3, "{file}");
        for request in &received {
            for header in [CLUSTER, "x-routed-to", "x-cutover-shadow"] {
                assert_eq!(
                    request.header(header),
                    None,
                    "{file}: {header} reached the upstream"
                );
            }
            assert_eq!(
                request.header_str("x-correlation-id").as_deref(),
                Some("attacker-1")
            );
        }
    }
}

/// The control: the same bypassed Envoy without the early header removal passes the spoof on —
/// what the removal is there to prevent.
#[test]
fn without_the_header_removal_a_bypassed_filter_passes_the_spoof_on() {
    let upstreams = Upstreams::start();
    let envoy = boot_bypassed("envoy/production-template.yaml", &upstreams, false);
    bypass_the_filter(&envoy);
    let mut client = envoy.client();
    let r = spoofed_write(&mut client);
    assert_eq!(r.served_by().as_deref(), Some("chat_new"));
    let received = upstreams.0[1].requests();
    assert_eq!(
        received
            .last()
            .and_then(|r| r.header_str("x-cutover-shadow"))
            .as_deref(),
        Some("true")
    );
}

#[test]
fn the_production_template_keeps_the_filter_off_routes_outside_the_cutover() {
    let upstreams = Upstreams::start();
    let workdir = new_workdir();
    let mut bootstrap = shipped("envoy/production-template.yaml");
    for filter in http_filters(&mut bootstrap).iter_mut() {
        if filter["name"] == "cutover" {
            filter["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] =
                json!(filter_wasm());
        }
    }
    let envoy = Envoy::boot_bootstrap(&workdir, |listener, admin| {
        on_loopback(bootstrap.clone(), &upstreams, listener, admin)
    });
    let mut client = envoy.client();
    let key: (&str, &[u8]) = ("x-correlation-id", b"user-1");
    // A cutover path: the filter runs (routing and feature headers).
    let r = client.get_with("/api/chat/1", &[key]);
    assert_eq!(r.status, 200);
    assert!(r.header("x-routed-to").is_some());
    assert_eq!(
        r.header("x-feature-uselegacychat").as_deref(),
        Some("false")
    );
    // Outside the cutover: the filter is off, so it adds nothing and counts nothing.
    let r = client.get_with("/static/app.js", &[key]);
    assert_eq!(r.status, 200);
    assert_eq!(r.served_by().as_deref(), Some("chat_legacy"));
    assert_eq!(r.header("x-routed-to"), None);
    assert_eq!(r.header("x-feature-uselegacychat"), None);
    // And a client's cluster header is removed there too (the removal is not per-route).
    let r = client.get_with("/static/app.js", &[key, (CLUSTER, b"chat_new")]);
    assert_eq!(r.served_by().as_deref(), Some("chat_legacy"));
    let routed = envoy.cutover_counter("chat", "routed_new")
        + envoy.cutover_counter("chat", "routed_legacy");
    assert_eq!(routed, 1);
}
