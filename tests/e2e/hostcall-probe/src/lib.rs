//! Makes exactly the host calls its plugin configuration lists, on every request: the cost of
//! each kind of host call in Envoy, measured against the same filter with an empty list
//! (`make bench-filter-instructions`, side `hostcalls`, docs/benchmarks.md).
//!
//! Configuration: operations separated by spaces, run in order on the request headers unless
//! marked for the response:
//! `get:NAME` (one request header), `map` (every request header, the SDK's owned pairs),
//! `rawmap` (every request header, one buffer, parsed without copying), `remove:NAME`,
//! `set:NAME=VALUE` (replace), `add:NAME=VALUE`, `count` (one counter increment),
//! `resp-set:NAME=VALUE`, `resp-add:NAME=VALUE` (response headers), `rewrite:NAME=VALUE,...` /
//! `resp-rewrite:NAME=VALUE,...` (read the whole map, write it back with these pairs added: two
//! host calls for any number of edits).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType, Status};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Probe { ops: Rc::new(Vec::new()) }) });
}}

#[derive(Debug)]
enum Op {
    Get(String),
    Map,
    RawMap,
    Remove(String),
    Set(String, String),
    Add(String, String),
    Count(u32),
    RespSet(String, String),
    RespAdd(String, String),
    Rewrite(Vec<(String, String)>),
    RespRewrite(Vec<(String, String)>),
}

fn pairs(arg: &str) -> Vec<(String, String)> {
    arg.split(',').map(pair).collect()
}

struct Probe {
    ops: Rc<Vec<Op>>,
}

fn pair(arg: &str) -> (String, String) {
    let (name, value) = arg.split_once('=').unwrap_or((arg, ""));
    (name.to_string(), value.to_string())
}

impl Context for Probe {}

impl RootContext for Probe {
    fn on_configure(&mut self, _: usize) -> bool {
        let text = self
            .get_plugin_configuration()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let mut ops = Vec::new();
        for word in text.split_whitespace() {
            let (kind, arg) = word.split_once(':').unwrap_or((word, ""));
            ops.push(match kind {
                "get" => Op::Get(arg.to_string()),
                "map" => Op::Map,
                "rawmap" => Op::RawMap,
                "remove" => Op::Remove(arg.to_string()),
                "set" => {
                    let (n, v) = pair(arg);
                    Op::Set(n, v)
                }
                "add" => {
                    let (n, v) = pair(arg);
                    Op::Add(n, v)
                }
                "count" => match hostcalls::define_metric(MetricType::Counter, "probe_count") {
                    Ok(id) => Op::Count(id),
                    Err(_) => return false,
                },
                "resp-set" => {
                    let (n, v) = pair(arg);
                    Op::RespSet(n, v)
                }
                "resp-add" => {
                    let (n, v) = pair(arg);
                    Op::RespAdd(n, v)
                }
                "rewrite" => Op::Rewrite(pairs(arg)),
                "resp-rewrite" => Op::RespRewrite(pairs(arg)),
                _ => return false,
            });
        }
        self.ops = Rc::new(ops);
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { ops: Rc::clone(&self.ops) }))
    }
}

struct Stream {
    ops: Rc<Vec<Op>>,
}

impl Context for Stream {}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map_type: MapType, data: *mut *mut u8, size: *mut usize) -> Status;
    fn proxy_set_header_map_pairs(map_type: MapType, data: *const u8, size: usize) -> Status;
}

/// The whole map in the ABI's serialisation: count, (key length, value length) per pair, then
/// each key and value NUL-terminated.
fn raw_bytes(map: MapType) -> Vec<u8> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    // SAFETY: the host writes a buffer it allocated with proxy_on_memory_allocate (a boxed slice).
    unsafe {
        if proxy_get_header_map_pairs(map, &mut data, &mut size) != Status::Ok || data.is_null() {
            return Vec::new();
        }
        Vec::from_raw_parts(data, size, size)
    }
}

/// Reads the whole map and writes it back with `extra` appended (no parsing into pairs).
fn rewrite(map: MapType, extra: &[(String, String)]) {
    let old = raw_bytes(map);
    let count = old.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])) as usize;
    let sizes_end = 4 + count * 8;
    let mut new = Vec::with_capacity(old.len() + 64);
    new.extend_from_slice(&((count + extra.len()) as u32).to_le_bytes());
    new.extend_from_slice(old.get(4..sizes_end).unwrap_or_default());
    for (k, v) in extra {
        new.extend_from_slice(&(k.len() as u32).to_le_bytes());
        new.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    new.extend_from_slice(old.get(sizes_end..).unwrap_or_default());
    for (k, v) in extra {
        new.extend_from_slice(k.as_bytes());
        new.push(0);
        new.extend_from_slice(v.as_bytes());
        new.push(0);
    }
    // SAFETY: `new` outlives the call; the host copies it.
    unsafe {
        let _ = proxy_set_header_map_pairs(map, new.as_ptr(), new.len());
    }
}

/// Every request header in one buffer (the ABI's serialisation), not copied into pairs: the
/// number of headers and the total length, so the work cannot be optimised away.
fn raw_map() -> usize {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    // SAFETY: the host writes a buffer it allocated with proxy_on_memory_allocate (a boxed slice).
    unsafe {
        if proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) != Status::Ok
            || data.is_null()
        {
            return 0;
        }
        let bytes = Vec::from_raw_parts(data, size, size);
        let count = bytes.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        count as usize + bytes.len()
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let mut seen = 0usize;
        for op in self.ops.iter() {
            match op {
                Op::Get(name) => {
                    seen += hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
                        .ok()
                        .flatten()
                        .map_or(0, |v| v.len())
                }
                Op::Map => {
                    seen += hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
                        .map_or(0, |m| m.len())
                }
                Op::RawMap => seen += raw_map(),
                Op::Remove(name) => {
                    let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
                }
                Op::Set(name, value) => {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
                }
                Op::Add(name, value) => {
                    let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value);
                }
                Op::Count(id) => {
                    let _ = hostcalls::increment_metric(*id, 1);
                }
                Op::Rewrite(extra) => rewrite(MapType::HttpRequestHeaders, extra),
                Op::RespSet(..) | Op::RespAdd(..) | Op::RespRewrite(..) => {}
            }
        }
        std::hint::black_box(seen);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        for op in self.ops.iter() {
            match op {
                Op::RespSet(name, value) => {
                    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value));
                }
                Op::RespAdd(name, value) => {
                    let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
                }
                Op::RespRewrite(extra) => rewrite(MapType::HttpResponseHeaders, extra),
                _ => {}
            }
        }
        Action::Continue
    }
}
