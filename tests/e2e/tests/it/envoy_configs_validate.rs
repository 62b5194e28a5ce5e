//! Every Envoy config shipped in `envoy/` passes `envoy --mode validate` (which also runs the
//! filter's on_configure on the embedded configuration). The `.wasm` path in each file is
//! pointed at the built filter first; nothing else is changed. ECDS files are not read by
//! validate mode, so each ready step file's Wasm config is validated inside a static bootstrap.

use std::fs;
use std::path::{Path, PathBuf};

use cutover_e2e::{filter_wasm, validate_config, workspace_root};
use serde_json::Value;

fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some(extension))
        .collect();
    files.sort();
    files
}

/// Replaces the value of every `filename:` naming a `.wasm` with the built filter, keeping the
/// rest of the line (e.g. closing braces of a flow mapping).
fn with_built_wasm(yaml: &str) -> String {
    let wasm = filter_wasm();
    yaml.lines()
        .map(|line| match line.find("filename:") {
            Some(at) if line.contains(".wasm") => {
                let value_start = at + "filename:".len();
                let after = &line[value_start..];
                let value_len = after
                    .trim_start()
                    .find([' ', '}', ','])
                    .unwrap_or(after.trim_start().len());
                let rest = &after.trim_start()[value_len..];
                format!("{}filename: {}{rest}", &line[..at], wasm.display())
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Validates `contents` as a copy of `original` written into `scratch`; relative paths in it
/// resolve against `scratch`.
fn assert_valid(original: &Path, contents: &str, scratch: &Path) {
    let name = original
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    let copy = scratch.join(&name);
    fs::write(&copy, contents).expect("write the copy to validate");
    let output = validate_config(&copy);
    assert!(
        output.status.success(),
        "{} fails envoy --mode validate:\n{}{}",
        original.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_envoy_yaml_passes_validate() {
    let root = workspace_root();
    let scratch = cutover_e2e::envoy::new_workdir();
    let yamls = files_with_extension(&root.join("envoy"), "yaml");
    let names: Vec<_> = yamls
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in ["demo.yaml", "demo-ecds.yaml", "production-template.yaml"] {
        assert!(
            names.iter().any(|n| n == expected),
            "envoy/{expected} missing; found {names:?}"
        );
    }
    // Relative paths resolve against Envoy's working directory. The ECDS bootstrap watches
    // `.tmp/ecds/cutover.json`, which must exist at start-up (copied from a ready step file, as
    // its header says), so validate from a scratch directory that has it.
    let ecds_dir = scratch.join(".tmp/ecds");
    fs::create_dir_all(&ecds_dir).expect("create the watched ECDS directory");
    fs::copy(
        root.join("envoy/ecds/step-10.json"),
        ecds_dir.join("cutover.json"),
    )
    .expect("copy envoy/ecds/step-10.json into the watched directory");
    for yaml in &yamls {
        let contents = fs::read_to_string(yaml).expect("read yaml");
        assert_valid(yaml, &with_built_wasm(&contents), &scratch);
    }
    fs::remove_dir_all(&scratch).ok();
}

#[test]
fn every_ready_ecds_step_validates_inside_a_bootstrap() {
    let root = workspace_root();
    let scratch = cutover_e2e::envoy::new_workdir();
    let demo: serde_yaml::Value = serde_yaml::from_str(
        &fs::read_to_string(root.join("envoy/demo.yaml")).expect("read demo.yaml"),
    )
    .expect("demo.yaml is YAML");
    let mut demo: Value = serde_json::to_value(demo).expect("YAML as JSON");
    let steps = files_with_extension(&root.join("envoy/ecds"), "json");
    let names: Vec<_> = steps
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "rollback-legacy.json",
            "step-10.json",
            "step-100.json",
            "step-50.json"
        ]
    );
    for step in &steps {
        let file: Value = serde_json::from_str(&fs::read_to_string(step).expect("read step"))
            .expect("step file is JSON");
        let resource = &file["resources"][0];
        assert_eq!(
            resource["@type"],
            "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
        );
        assert_eq!(resource["name"], "cutover");
        let mut typed_config = resource["typed_config"].clone();
        assert_eq!(typed_config["@type"], cutover_e2e::envoy::WASM_TYPE_URL);
        typed_config["config"]["vm_config"]["code"]["local"]["filename"] =
            filter_wasm().display().to_string().into();
        let hcm = &mut demo["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        // The cutover filter's place (after the request_time filter).
        let at = hcm["http_filters"]
            .as_array()
            .and_then(|filters| filters.iter().position(|f| f["name"] == "cutover"))
            .expect("demo.yaml has the cutover filter");
        hcm["http_filters"][at] =
            serde_json::json!({"name": "cutover", "typed_config": typed_config});
        let bootstrap = scratch
            .join(step.file_name().unwrap())
            .with_extension("bootstrap.json");
        fs::write(&bootstrap, serde_json::to_string_pretty(&demo).unwrap()).unwrap();
        let output = validate_config(&bootstrap);
        assert!(
            output.status.success(),
            "{} fails validation: {}{}",
            step.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // The step each file claims.
        let filter: Value = serde_json::from_str(
            typed_config["config"]["configuration"]["value"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let stem = step.file_stem().unwrap().to_string_lossy().into_owned();
        for service in filter["services"].as_array().unwrap() {
            match stem.as_str() {
                "rollback-legacy" => assert_eq!(service["use_legacy"], true, "{stem}"),
                _ => {
                    let percentage: u64 = stem.trim_start_matches("step-").parse().unwrap();
                    assert_eq!(service["new_percentage"], percentage, "{stem}");
                    assert_eq!(service["use_legacy"], false, "{stem}");
                }
            }
        }
    }
    fs::remove_dir_all(&scratch).ok();
}

#[test]
fn readme_snippet_validates_inside_a_bootstrap() {
    let root = workspace_root();
    let scratch = cutover_e2e::envoy::new_workdir();
    let doc = fs::read_to_string(root.join("README.md")).expect("read README.md");
    let snippet = doc
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a yaml block");
    let snippet = with_built_wasm(snippet);
    let parsed: serde_yaml::Value = serde_yaml::from_str(&snippet).expect("the snippet is YAML");
    let parsed: Value = serde_json::to_value(parsed).expect("YAML as JSON");
    let cluster = |name: &str, port: u16| {
        serde_json::json!({"name": name, "connect_timeout": "1s", "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}})
    };
    let bootstrap = serde_json::json!({"static_resources": {
        "listeners": [{"name": "main", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "ingress",
                "route_config": parsed["route_config"],
                "http_filters": parsed["http_filters"]}}]}]}],
        "clusters": [cluster("chat_legacy", 18081), cluster("chat_new", 18082)]}});
    let path = scratch.join("snippet.json");
    fs::write(&path, serde_json::to_string_pretty(&bootstrap).unwrap()).unwrap();
    let output = validate_config(&path);
    assert!(
        output.status.success(),
        "the README's Envoy snippet fails validation: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    fs::remove_dir_all(&scratch).ok();
}

/// Every shipped bootstrap with the cutover filter stamps the request-time header (the apps'
/// contract, docs/dual-write.md) by a header_mutation filter placed before the cutover filter.
#[test]
fn every_bootstrap_stamps_the_request_time_before_the_cutover_filter() {
    let files = files_with_extension(&workspace_root().join("envoy"), "yaml");
    let mut checked = 0;
    for file in &files {
        let yaml = fs::read_to_string(file).expect("read");
        let Some(cutover) = yaml.find("- name: cutover") else {
            continue;
        };
        let stamp = yaml.find("- name: request_time");
        assert!(
            stamp.is_some_and(|at| at < cutover),
            "{}: no request_time filter before the cutover filter",
            file.display()
        );
        assert!(
            yaml.contains(cutover_e2e::REQUEST_TIME_FORMAT)
                && yaml.contains(cutover_e2e::app::REQUEST_TIME_HEADER)
                && yaml.contains("OVERWRITE_IF_EXISTS_OR_ADD"),
            "{}: the request_time filter must overwrite {} with {}",
            file.display(),
            cutover_e2e::app::REQUEST_TIME_HEADER,
            cutover_e2e::REQUEST_TIME_FORMAT
        );
        checked += 1;
    }
    assert!(
        checked >= 3,
        "demo.yaml, demo-ecds.yaml and production-template.yaml checked"
    );
}
