//! The Istio manifest parses, has the WasmPlugin shape, carries a plugin configuration the filter
//! accepts, and its VirtualService routes every cluster the plugin can choose, with a fallback.

use std::fs;

use cutover_e2e::workspace_root;
use cutover_filter::config::FilterConfig;
use serde::Deserialize;
use serde_yaml::Value;

#[test]
fn wasm_plugin_and_virtual_service_fit_together() {
    let path = workspace_root().join("envoy/istio/cutover.yaml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let documents: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("YAML document"))
        .collect();
    let kind = |doc: &Value| doc["kind"].as_str().unwrap_or("").to_string();

    let plugin = documents
        .iter()
        .find(|d| kind(d) == "WasmPlugin")
        .expect("a WasmPlugin");
    assert_eq!(
        plugin["apiVersion"].as_str(),
        Some("extensions.istio.io/v1alpha1")
    );
    let spec = &plugin["spec"];
    assert!(
        spec["url"].as_str().unwrap_or("").starts_with("oci://"),
        "url is an OCI image"
    );
    assert!(spec["selector"]["matchLabels"]
        .as_mapping()
        .is_some_and(|m| !m.is_empty()));
    assert_eq!(spec["failStrategy"].as_str(), Some("FAIL_OPEN"));
    assert_eq!(spec["type"].as_str(), Some("HTTP"));

    // Istio hands pluginConfig to the plugin as JSON: the filter's own validator must accept it.
    let plugin_json = serde_json::to_vec(&spec["pluginConfig"]).expect("pluginConfig as JSON");
    let config = FilterConfig::from_json(&plugin_json)
        .unwrap_or_else(|e| panic!("pluginConfig rejected by the filter: {e:?}"));
    assert_eq!(config.services.len(), 2);

    let service = documents
        .iter()
        .find(|d| kind(d) == "VirtualService")
        .expect("a VirtualService");
    let routes = service["spec"]["http"].as_sequence().expect("http routes");
    let header_values: Vec<&str> = routes
        .iter()
        .filter_map(|route| route["match"][0]["headers"][&config.cluster_header]["exact"].as_str())
        .collect();
    for svc in &config.services {
        for cluster in [&svc.legacy_cluster, &svc.new_cluster] {
            assert!(
                header_values.contains(&cluster.as_str()),
                "no route for cluster {cluster}"
            );
        }
    }
    let last = routes.last().expect("routes");
    assert!(
        last["match"].is_null(),
        "the last route is a catch-all fallback"
    );
    let fallback_host = last["route"][0]["destination"]["host"]
        .as_str()
        .unwrap_or("");
    assert!(
        fallback_host.contains("legacy"),
        "fallback goes to legacy: {fallback_host}"
    );
}
