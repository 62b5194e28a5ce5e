//! Benchmark (not a test): instructions Envoy executes per request, counted by valgrind's
//! callgrind, for the same routing work done several ways, side by side in one run
//! (docs/benchmarks.md, `make bench-filter-instructions`).
//!
//! Each side is its own Envoy 1.40 (`--concurrency 1`) under `valgrind --tool=callgrind`, with
//! one listener, the same routes and clusters, and an upstream that is a second, plain Envoy
//! answering every request with a `direct_response`. One keep-alive client sends `BENCH_WARMUP`
//! requests, the counters are zeroed (`callgrind_control -z`), then `BENCH_REQUESTS` routed
//! `GET /api/chat/rooms/1/messages` with distinct `x-correlation-id`s; the dump's total divided
//! by the requests is the figure.
//!
//! Side `hostcalls` (only when named in `BENCH_SIDES`) is the breakdown: one Envoy under callgrind
//! with a listener per entry of [`PROBES`], each running tests/e2e/hostcall-probe with that list
//! of host calls; each row is its instructions per request minus the empty list's.
//!
//! Env: `ENVOY_BIN`, `CUTOVER_WASM`, `BENCH_NOOP_WASM` (tests/e2e/noop-filter), `BENCH_PROBE_WASM`
//! (tests/e2e/hostcall-probe), `BENCH_REQUESTS` (3000), `BENCH_WARMUP` (300), `BENCH_SIDES`
//! (comma-separated subset of the side names below, plus `hostcalls`), `BENCH_KEEP_DUMPS` (a
//! directory the counted callgrind dumps are copied to, for `callgrind_annotate`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cutover_e2e::envoy::{free_port, kill_with_parent, new_workdir, wasm_typed_config};
use cutover_e2e::load::env_or;
use cutover_e2e::{envoy_bin, filter_wasm, HttpClient};
use cutover_filter::bucket::bucket;
use serde_json::{json, Value};

const PATH: &str = "/api/chat/rooms/1/messages";
const UNMATCHED_PATH: &str = "/static/app.js";
const CLUSTER_HEADER: &str = "x-cutover-cluster";
/// Under valgrind Envoy needs ~40 s to become ready on an idle machine; more than 15 minutes
/// were seen at load average 15.
const READY_TIMEOUT: Duration = Duration::from_secs(2400);

/// The Lua peer: the same decision as the filter (murmur3 x86 32 in LuaJIT's `bit` library,
/// Unleash bucket of "chat:<key>", 50 %), the same request and response headers.
const LUA: &str = r#"
local bit = require("bit")
local band, bxor, rshift, lshift, rol, tobit = bit.band, bit.bxor, bit.rshift, bit.lshift, bit.rol, bit.tobit
local function mul(a, b)
  return tobit(band(a, 0xffff) * b + lshift(tobit(rshift(a, 16) * b), 16))
end
local C1, C2 = tobit(0xcc9e2d51), tobit(0x1b873593)
local function murmur3(s)
  local h, len = 0, #s
  local blocks = len - len % 4
  for i = 1, blocks, 4 do
    local a, b, c, d = s:byte(i, i + 3)
    local k = bit.bor(a, lshift(b, 8), lshift(c, 16), lshift(d, 24))
    k = mul(rol(mul(k, C1), 15), C2)
    h = tobit(mul(rol(bxor(h, k), 13), 5) + tobit(0xe6546b64))
  end
  local k, rest = 0, len - blocks
  if rest >= 3 then k = bxor(k, lshift(s:byte(blocks + 3), 16)) end
  if rest >= 2 then k = bxor(k, lshift(s:byte(blocks + 2), 8)) end
  if rest >= 1 then
    k = bxor(k, s:byte(blocks + 1))
    h = bxor(h, mul(rol(mul(k, C1), 15), C2))
  end
  h = bxor(h, len)
  h = mul(bxor(h, rshift(h, 16)), tobit(0x85ebca6b))
  h = mul(bxor(h, rshift(h, 13)), tobit(0xc2b2ae35))
  h = bxor(h, rshift(h, 16))
  return h < 0 and h + 4294967296 or h
end
function envoy_on_request(handle)
  local headers = handle:headers()
  headers:remove("x-cutover-shadow")
  local path = headers:get(":path") or ""
  if path:sub(1, 9) ~= "/api/chat" then
    headers:remove("x-cutover-cluster")
    headers:remove("x-routed-to")
    return
  end
  local key = headers:get("x-correlation-id") or headers:get("x-request-id") or ""
  local side = (murmur3("chat:" .. key) % 100 + 1 <= 50) and "new" or "legacy"
  headers:replace("x-cutover-cluster", "chat_" .. side)
  headers:remove("x-routed-to")
  handle:clearRouteCache()
  handle:streamInfo():dynamicMetadata():set("cutover", "side", side)
end
function envoy_on_response(handle)
  local meta = handle:streamInfo():dynamicMetadata():get("cutover")
  local headers = handle:headers()
  if meta then
    headers:replace("x-routed-to", meta["side"])
    headers:replace("x-traffic-percentage", "50")
  end
  headers:replace("x-chat-legacy", "false")
end
"#;

/// The cutover filter's configuration: `chat` at 50 % plus `extra` services with a feature header
/// each (the first one on its kill switch), as in the issue's measurement.
fn cutover_config(services: usize) -> Value {
    let mut list = vec![json!({
        "name": "chat", "path_prefixes": ["/api/chat"], "legacy_cluster": "chat_legacy",
        "new_cluster": "chat_new", "new_percentage": 50, "feature_header": "x-chat-legacy"
    })];
    for i in 1..services {
        list.push(json!({
            "name": format!("svc{i}"), "path_prefixes": [format!("/api/svc{i}")],
            "legacy_cluster": "chat_legacy", "new_cluster": "chat_new",
            "new_percentage": 0, "use_legacy": i == 1, "feature_header": format!("x-svc{i}-legacy")
        }));
    }
    json!({
        "cluster_header": CLUSTER_HEADER,
        "stickiness_headers": ["x-correlation-id", "x-request-id"],
        "emit_feature_headers": true,
        "services": list
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Filter {
    None,
    RouteConfig,
    Lua,
    Noop,
    Cutover { services: usize },
}

struct Side {
    name: &'static str,
    filter: Filter,
    path: &'static str,
    /// Keep the filter off the unmatched route (`typed_per_filter_config` disabled).
    disable_on_unmatched: bool,
}

const SIDES: [Side; 8] = [
    Side {
        name: "none",
        filter: Filter::None,
        path: PATH,
        disable_on_unmatched: false,
    },
    Side {
        name: "route-config",
        filter: Filter::RouteConfig,
        path: PATH,
        disable_on_unmatched: false,
    },
    Side {
        name: "lua",
        filter: Filter::Lua,
        path: PATH,
        disable_on_unmatched: false,
    },
    Side {
        name: "noop-wasm",
        filter: Filter::Noop,
        path: PATH,
        disable_on_unmatched: false,
    },
    Side {
        name: "cutover-2",
        filter: Filter::Cutover { services: 2 },
        path: PATH,
        disable_on_unmatched: false,
    },
    Side {
        name: "cutover-20",
        filter: Filter::Cutover { services: 20 },
        path: PATH,
        disable_on_unmatched: false,
    },
    Side {
        name: "cutover-2-unmatched",
        filter: Filter::Cutover { services: 2 },
        path: UNMATCHED_PATH,
        disable_on_unmatched: false,
    },
    Side {
        name: "cutover-2-unmatched-disabled",
        filter: Filter::Cutover { services: 2 },
        path: UNMATCHED_PATH,
        disable_on_unmatched: true,
    },
];

/// The side (named only on request) that measures single host calls.
const PROBE_SIDE: &str = "hostcalls";

/// The host-call lists of side `hostcalls` (tests/e2e/hostcall-probe), the empty one first.
const PROBES: &[&str] = &[
    "",
    "get:x-correlation-id",
    "get:x-absent",
    "get::path get:x-correlation-id",
    "get::path get:x-correlation-id get:x-request-id",
    "map",
    "rawmap",
    "remove:x-cutover-shadow",
    "add:x-routed-to=new",
    "set:x-routed-to=new",
    "add:x-routed-to=new add:x-cutover-cluster=chat_new",
    "set:x-routed-to=new set:x-cutover-cluster=chat_new",
    "count",
    "resp-add:x-routed-to=new",
    "resp-set:x-routed-to=new",
    "resp-add:x-routed-to=new resp-add:x-traffic-percentage=50 resp-add:x-chat-legacy=false",
    "resp-set:x-routed-to=new resp-set:x-traffic-percentage=50 resp-set:x-chat-legacy=false",
    "rewrite:x-cutover-cluster=chat_new,x-routed-to=new",
    "resp-rewrite:x-routed-to=new,x-traffic-percentage=50,x-chat-legacy=false",
    // Today's filter on a matched GET, as bare host calls.
    "remove:x-cutover-shadow get::path get:x-correlation-id get:x-request-id count \
     set:x-cutover-cluster=chat_new set:x-routed-to=new resp-set:x-routed-to=new \
     resp-set:x-traffic-percentage=50 resp-set:x-chat-legacy=false",
];

fn upstream_cluster(name: &str, upstream: u16) -> Value {
    json!({
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": upstream}}}}]}]}
    })
}

/// The routes of every side but `route-config`: by the cluster header, else legacy.
fn cluster_header_routes() -> Value {
    json!({"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"name": "by_cluster_header",
            "match": {"prefix": "/", "headers": [{"name": CLUSTER_HEADER, "present_match": true}]},
            "route": {"cluster_header": CLUSTER_HEADER}},
        {"name": "unmatched", "match": {"prefix": "/"}, "route": {"cluster": "chat_legacy"}}]}]})
}

fn router() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
}

/// Side `hostcalls`: one listener per probe list, on `listeners` (same order as [`PROBES`]).
fn probe_bootstrap(probe: &Path, listeners: &[u16], admin: u16, upstream: u16) -> Value {
    let listeners: Vec<Value> = listeners
        .iter()
        .zip(PROBES)
        .map(|(port, ops)| {
            let mut typed_config = wasm_typed_config(probe, &json!({}), None);
            typed_config["config"]["configuration"]["value"] = json!(ops);
            let filter = json!({"name": "cutover", "typed_config": typed_config});
            listener_json(*port, cluster_header_routes(), vec![filter, router()])
        })
        .collect();
    json!({
        "node": {"id": "bench", "cluster": "bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": [upstream_cluster("chat_legacy", upstream), upstream_cluster("chat_new", upstream)]
        }
    })
}

fn bootstrap(side: &Side, noop: &Path, listener: u16, admin: u16, upstream: u16) -> Value {
    let cluster = |name: &str| upstream_cluster(name, upstream);
    let mut unmatched =
        json!({"name": "unmatched", "match": {"prefix": "/"}, "route": {"cluster": "chat_legacy"}});
    if side.disable_on_unmatched {
        unmatched["typed_per_filter_config"] = json!({"cutover": {
            "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true}});
    }
    let routes = if side.filter == Filter::RouteConfig {
        vec![
            json!({
                "name": "chat", "match": {"prefix": "/api/chat"}, "route": {"cluster": "chat_new"},
                "request_headers_to_remove": ["x-cutover-shadow", CLUSTER_HEADER, "x-routed-to"],
                "response_headers_to_add": [
                    {"header": {"key": "x-routed-to", "value": "new"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
                    {"header": {"key": "x-traffic-percentage", "value": "50"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
                    {"header": {"key": "x-chat-legacy", "value": "false"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
            }),
            unmatched,
        ]
    } else {
        let mut routes = cluster_header_routes()["virtual_hosts"][0]["routes"].clone();
        routes[1] = unmatched;
        routes.as_array().cloned().unwrap_or_default()
    };
    let mut filters = Vec::new();
    match side.filter {
        Filter::None | Filter::RouteConfig => {}
        Filter::Lua => filters.push(json!({"name": "cutover", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": LUA}}})),
        Filter::Noop => filters.push(json!({"name": "cutover",
            "typed_config": wasm_typed_config(noop, &json!({}), None)})),
        Filter::Cutover { services } => filters.push(json!({"name": "cutover",
            "typed_config": wasm_typed_config(&filter_wasm(), &cutover_config(services), None)})),
    }
    filters.push(router());
    json!({
        "node": {"id": "bench", "cluster": "bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [listener_json(listener, json!({"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]}), filters)],
            "clusters": [cluster("chat_legacy"), cluster("chat_new")]
        }
    })
}

fn listener_json(port: u16, route_config: Value, filters: Vec<Value>) -> Value {
    json!({
        "name": format!("l{port}"),
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "bench", "route_config": route_config, "http_filters": filters
            }
        }]}]
    })
}

/// An Envoy child process, killed and reaped on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &Path, args: &[&str], dir: &Path, log: &str) -> Process {
    let log = fs::File::create(dir.join(log)).expect("create a log file");
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log);
    kill_with_parent(&mut command);
    Process(
        command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display())),
    )
}

fn wait_ready(admin: u16, process: &mut Process, dir: &Path) {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut client =
        HttpClient::new(&format!("http://127.0.0.1:{admin}")).with_timeout(Duration::from_secs(5));
    loop {
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!("Envoy exited ({status}); logs in {}", dir.display());
        }
        if client
            .try_send("GET", "/ready", &[], b"")
            .is_ok_and(|r| r.status == 200)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Envoy not ready within {READY_TIMEOUT:?}; logs in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write_json(path: &Path, value: &Value) {
    fs::write(path, serde_json::to_vec_pretty(value).expect("serialize"))
        .expect("write a bootstrap");
}

fn key(i: usize) -> String {
    format!("user-{i:06}")
}

/// Envoy under callgrind on `bootstrap`, ready.
fn start_under_callgrind(dir: &Path, bootstrap: &Value, admin: u16) -> Process {
    write_json(&dir.join("bootstrap.json"), bootstrap);
    let envoy = envoy_bin();
    let envoy = envoy.to_str().expect("Envoy path is UTF-8");
    let mut process = spawn(
        Path::new("valgrind"),
        &[
            "--tool=callgrind",
            "--smc-check=all-non-file",
            "--callgrind-out-file=callgrind.out.%p",
            envoy,
            "-c",
            "bootstrap.json",
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--log-level",
            "warn",
        ],
        dir,
        "envoy.log",
    );
    wait_ready(admin, &mut process, dir);
    process
}

/// Instructions per request of `requests` calls of `send`: counters zeroed before, dumped after.
fn counted(process: &Process, dir: &Path, requests: usize, send: impl FnMut(usize)) -> f64 {
    let pid = process.0.id().to_string();
    callgrind_control(&["-z", &pid]);
    (0..requests).for_each(send);
    callgrind_control(&["-d", &pid]);
    dumped_total(dir, &pid) as f64 / requests as f64
}

/// A keep-alive client of `listener`; the first request through a Wasm filter compiles it in V8,
/// which takes minutes under valgrind.
fn bench_client(listener: u16) -> HttpClient {
    HttpClient::new(&format!("http://127.0.0.1:{listener}")).with_timeout(READY_TIMEOUT)
}

/// Instructions per request of one side.
fn measure(side: &Side, noop: &Path, upstream: u16, requests: usize, warmup: usize) -> f64 {
    let dir = new_workdir();
    let (listener, admin) = (free_port(), free_port());
    let process = start_under_callgrind(
        &dir,
        &bootstrap(side, noop, listener, admin, upstream),
        admin,
    );
    let mut client = bench_client(listener);
    let mut send = |i: usize| {
        let key = key(i);
        let response = client.get_with(side.path, &[("x-correlation-id", key.as_bytes())]);
        assert_eq!(response.status, 200, "{}: status of request {i}", side.name);
        response
    };
    for i in 0..warmup {
        let response = send(i);
        // The decision is the same on every side that routes by bucket.
        if matches!(side.filter, Filter::Lua | Filter::Cutover { .. }) && side.path == PATH {
            let expected = if bucket("chat", key(i).as_bytes()) <= 50 {
                "new"
            } else {
                "legacy"
            };
            assert_eq!(
                response.header("x-routed-to").as_deref(),
                Some(expected),
                "{}: side of {}",
                side.name,
                key(i)
            );
        }
    }
    let per_request = counted(&process, &dir, requests, |i| {
        send(warmup + i);
    });
    drop(process);
    let _ = fs::remove_dir_all(&dir);
    per_request
}

/// Side `hostcalls`: instructions per request of each probe list, minus the empty list's.
fn measure_probes(probe: &Path, upstream: u16, requests: usize, warmup: usize) {
    let dir = new_workdir();
    let listeners: Vec<u16> = PROBES.iter().map(|_| free_port()).collect();
    let admin = free_port();
    let process = start_under_callgrind(
        &dir,
        &probe_bootstrap(probe, &listeners, admin, upstream),
        admin,
    );
    println!(
        "| host calls (tests/e2e/hostcall-probe) | instructions / request | above the empty list |"
    );
    println!("|---|---|---|");
    let mut floor = None;
    for (ops, listener) in PROBES.iter().zip(&listeners) {
        let mut client = bench_client(*listener);
        let mut send = |i: usize| {
            let key = key(i);
            let response = client.get_with(PATH, &[("x-correlation-id", key.as_bytes())]);
            assert_eq!(response.status, 200, "probe {ops:?}: status of request {i}");
        };
        (0..warmup).for_each(&mut send);
        let per_request = counted(&process, &dir, requests, |i| send(warmup + i));
        let floor = *floor.get_or_insert(per_request);
        let label = if ops.is_empty() { "(none)" } else { ops };
        println!(
            "| `{label}` | {:.1}k | {:+.1}k |",
            per_request / 1000.0,
            (per_request - floor) / 1000.0
        );
    }
    drop(process);
    let _ = fs::remove_dir_all(&dir);
}

fn callgrind_control(args: &[&str]) {
    let status = Command::new("callgrind_control")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run callgrind_control");
    assert!(status.success(), "callgrind_control {args:?} failed");
}

/// The instruction total of the dump `callgrind_control -d` wrote (`callgrind.out.<pid>.<n>`),
/// which is then removed.
fn dumped_total(dir: &Path, pid: &str) -> u64 {
    let prefix = format!("callgrind.out.{pid}.");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dump: Option<PathBuf> = fs::read_dir(dir)
            .expect("read the work dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
            });
        let total = dump.as_ref().and_then(|p| {
            fs::read_to_string(p)
                .ok()?
                .lines()
                .find_map(|l| {
                    l.strip_prefix("totals:")
                        .or_else(|| l.strip_prefix("summary:"))
                })
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        });
        if let (Some(path), Some(total)) = (dump, total) {
            // Kept for `callgrind_annotate` when asked for (BENCH_KEEP_DUMPS, a directory).
            if let Some(keep) = std::env::var_os("BENCH_KEEP_DUMPS") {
                let name = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
                let _ = fs::create_dir_all(&keep);
                let _ = fs::copy(&path, Path::new(&keep).join(name));
            }
            // Each dump is read once: the next `callgrind_control -d` writes the next number.
            let _ = fs::remove_file(path);
            return total;
        }
        assert!(
            Instant::now() < deadline,
            "no callgrind dump in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn main() {
    let requests = env_or("BENCH_REQUESTS", 3000) as usize;
    let warmup = env_or("BENCH_WARMUP", 300) as usize;
    let noop =
        PathBuf::from(std::env::var_os("BENCH_NOOP_WASM").expect(
            "BENCH_NOOP_WASM: the no-op filter (scripts/bench-filter-instructions builds it)",
        ));
    let wanted: Option<Vec<String>> = std::env::var("BENCH_SIDES")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(str::to_string).collect());
    if let Some(wanted) = &wanted {
        for name in wanted {
            assert!(
                name == PROBE_SIDE || SIDES.iter().any(|s| s.name == name),
                "BENCH_SIDES: unknown side {name:?}"
            );
        }
    }

    // The upstream: a plain Envoy answering 200 to everything (not counted).
    let upstream_dir = new_workdir();
    let (upstream, upstream_admin) = (free_port(), free_port());
    write_json(
        &upstream_dir.join("bootstrap.json"),
        &json!({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_admin}}},
            "static_resources": {"listeners": [listener_json(upstream,
                json!({"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
                    "direct_response": {"status": 200, "body": {"inline_string": "{\"messages\":[]}"}}}]}]}),
                vec![router()])]}
        }),
    );
    let mut upstream_process = spawn(
        &envoy_bin(),
        &[
            "-c",
            "bootstrap.json",
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--base-id",
            "7",
        ],
        &upstream_dir,
        "envoy.log",
    );
    wait_ready(upstream_admin, &mut upstream_process, &upstream_dir);

    println!(
        "{requests} requests per side after {warmup} warm-up, instructions per request (callgrind)"
    );
    println!("| side | path | instructions / request |");
    println!("|---|---|---|");
    for side in SIDES.iter().filter(|s| {
        wanted
            .as_ref()
            .is_none_or(|w| w.iter().any(|n| n == s.name))
    }) {
        let per_request = measure(side, &noop, upstream, requests, warmup);
        println!(
            "| {} | `{}` | {:.1}k |",
            side.name,
            side.path,
            per_request / 1000.0
        );
    }
    if wanted
        .as_ref()
        .is_some_and(|w| w.iter().any(|n| n == PROBE_SIDE))
    {
        let probe = PathBuf::from(std::env::var_os("BENCH_PROBE_WASM").expect(
            "BENCH_PROBE_WASM: the host-call probe (scripts/bench-filter-instructions builds it)",
        ));
        measure_probes(&probe, upstream, requests, warmup);
    }
    drop(upstream_process);
    let _ = fs::remove_dir_all(&upstream_dir);
}
