//! The host side of proxy-wasm ABI 0.2.1 and the few WASI preview1 calls a Rust
//! `wasm32-wasip1` module makes, modelled on what Envoy does for each call.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use wasmtime::{bail, Caller, Linker, Memory, Result, TypedFunc};

use crate::headers::Headers;

/// proxy-wasm `WasmResult` codes the host returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    CasMismatch = 8,
}

/// proxy-wasm log levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    fn from_abi(level: i32) -> Option<Self> {
        Some(match level {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            5 => Self::Critical,
            _ => return None,
        })
    }
}

/// One line the filter logged through `proxy_log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Clone, Debug)]
pub(crate) struct Metric {
    pub(crate) name: String,
    pub(crate) kind: MetricKind,
    pub(crate) value: u64,
}

/// A `proxy_http_call` the filter made, waiting for the test to answer it.
#[derive(Clone, Debug)]
pub struct HttpCall {
    pub token: u32,
    /// The context that was active when the call was dispatched (Envoy calls it back there).
    pub context_id: u32,
    pub cluster: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    pub timeout: Duration,
}

/// A `proxy_send_local_response` the filter made.
#[derive(Clone, Debug)]
pub struct LocalResponse {
    pub status: u32,
    pub details: Vec<u8>,
    pub body: Vec<u8>,
    pub headers: Headers,
}

/// Header maps by the ABI's `MapType`.
const MAP_TYPES: usize = 8;
/// Buffers by the ABI's `BufferType`.
const BUFFER_TYPES: usize = 9;
pub(crate) const MAP_REQUEST_HEADERS: usize = 0;
pub(crate) const MAP_RESPONSE_HEADERS: usize = 2;
pub(crate) const MAP_HTTP_CALL_RESPONSE_HEADERS: usize = 6;
pub(crate) const MAP_HTTP_CALL_RESPONSE_TRAILERS: usize = 7;
pub(crate) const BUFFER_REQUEST_BODY: usize = 0;
pub(crate) const BUFFER_RESPONSE_BODY: usize = 1;
pub(crate) const BUFFER_HTTP_CALL_RESPONSE_BODY: usize = 4;
pub(crate) const BUFFER_VM_CONFIGURATION: usize = 6;
pub(crate) const BUFFER_PLUGIN_CONFIGURATION: usize = 7;

/// Everything the host knows about one VM; lives in the wasmtime `Store`.
pub(crate) struct HostState {
    pub(crate) memory: Option<Memory>,
    pub(crate) allocate: Option<TypedFunc<i32, i32>>,
    /// Header maps visible to the guest right now (Envoy scopes them to the active stream).
    pub(crate) maps: [Option<Headers>; MAP_TYPES],
    pub(crate) buffers: [Option<Vec<u8>>; BUFFER_TYPES],
    pub(crate) log_level: LogLevel,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) metrics: Vec<Metric>,
    pub(crate) metric_ids: HashMap<String, u32>,
    pub(crate) tick_period: Option<Duration>,
    pub(crate) http_calls: Vec<HttpCall>,
    pub(crate) next_token: u32,
    pub(crate) unreachable_clusters: HashSet<String>,
    pub(crate) shared_data: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    pub(crate) properties: HashMap<Vec<u8>, Vec<u8>>,
    pub(crate) live_contexts: HashSet<u32>,
    pub(crate) active_context: u32,
    pub(crate) local_response: Option<LocalResponse>,
    pub(crate) continued_streams: Vec<i32>,
    pub(crate) closed_streams: Vec<i32>,
    pub(crate) clock_ns: u64,
    /// What `proxy_get_status` reports: Envoy sets it for a failed HTTP call.
    pub(crate) call_status: (u32, Vec<u8>),
    /// Reused buffer for values handed to the guest.
    scratch: Vec<u8>,
    random: RandomState,
    random_draws: u64,
}

impl HostState {
    pub(crate) fn new(clock_ns: u64) -> Self {
        Self {
            memory: None,
            allocate: None,
            maps: Default::default(),
            buffers: Default::default(),
            log_level: LogLevel::Info,
            logs: Vec::new(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            metrics: Vec::new(),
            metric_ids: HashMap::new(),
            tick_period: None,
            http_calls: Vec::new(),
            next_token: 1,
            unreachable_clusters: HashSet::new(),
            shared_data: HashMap::new(),
            properties: HashMap::new(),
            live_contexts: HashSet::new(),
            active_context: 0,
            local_response: None,
            continued_streams: Vec::new(),
            closed_streams: Vec::new(),
            clock_ns,
            call_status: (0, Vec::new()),
            scratch: Vec::new(),
            random: RandomState::new(),
            random_draws: 0,
        }
    }

    pub(crate) fn metric(&self, name: &str) -> Option<&Metric> {
        self.metric_ids
            .get(name)
            .map(|&id| &self.metrics[id as usize])
    }
}

fn memory(caller: &Caller<'_, HostState>) -> Result<Memory> {
    match caller.data().memory {
        Some(memory) => Ok(memory),
        None => bail!("the module exports no memory"),
    }
}

/// Guest addresses and sizes are wasm32 `usize`s, passed as i32.
fn addr(value: i32) -> usize {
    value as u32 as usize
}

fn read(caller: &Caller<'_, HostState>, ptr: i32, len: i32) -> Result<Vec<u8>> {
    let memory = memory(caller)?;
    let (start, len) = (addr(ptr), addr(len));
    match memory.data(caller).get(start..start + len) {
        Some(bytes) => Ok(bytes.to_vec()),
        None => bail!("guest passed an out-of-bounds buffer ({start}+{len})"),
    }
}

fn slice(memory: &[u8], ptr: i32, len: i32) -> Result<&[u8]> {
    let (start, len) = (addr(ptr), addr(len));
    match memory.get(start..start + len) {
        Some(bytes) => Ok(bytes),
        None => bail!("guest passed an out-of-bounds buffer ({start}+{len})"),
    }
}

/// Runs `f` on guest memory and host state together, so keys and values are used in place
/// instead of being copied out first (the in-VM benchmark measures this path).
fn with_memory<R>(
    caller: &mut Caller<'_, HostState>,
    f: impl FnOnce(&[u8], &mut HostState) -> Result<R>,
) -> Result<R> {
    let memory = memory(caller)?;
    let (data, state) = memory.data_and_store_mut(caller);
    f(data, state)
}

/// Hands the host's scratch buffer to the guest (see [`return_bytes`]).
fn return_scratch(caller: &mut Caller<'_, HostState>, ptr_ptr: i32, size_ptr: i32) -> Result<()> {
    let scratch = std::mem::take(&mut caller.data_mut().scratch);
    let result = return_bytes(caller, &scratch, ptr_ptr, size_ptr);
    caller.data_mut().scratch = scratch;
    result
}

fn write(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> Result<()> {
    let memory = memory(caller)?;
    let start = addr(ptr);
    match memory.data_mut(caller).get_mut(start..start + bytes.len()) {
        Some(target) => {
            target.copy_from_slice(bytes);
            Ok(())
        }
        None => bail!("guest passed an out-of-bounds return address ({start})"),
    }
}

fn write_u32(caller: &mut Caller<'_, HostState>, ptr: i32, value: u32) -> Result<()> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Hands `bytes` to the guest the way Envoy does: memory from the guest's own allocator,
/// pointer and size stored at the return addresses; an empty value is a null pointer.
fn return_bytes(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<()> {
    let mut pointer = 0i32;
    if !bytes.is_empty() {
        let Some(allocate) = caller.data().allocate.clone() else {
            bail!("the module exports neither proxy_on_memory_allocate nor malloc")
        };
        pointer = allocate.call(&mut *caller, bytes.len() as i32)?;
        if pointer == 0 {
            bail!("guest allocator returned null for {} bytes", bytes.len());
        }
        write(caller, pointer, bytes)?;
    }
    write_u32(caller, ptr_ptr, pointer as u32)?;
    write_u32(caller, size_ptr, bytes.len() as u32)
}

fn map_index(map_type: i32) -> Option<usize> {
    usize::try_from(map_type).ok().filter(|&i| i < MAP_TYPES)
}

fn buffer_index(buffer_type: i32) -> Option<usize> {
    usize::try_from(buffer_type)
        .ok()
        .filter(|&i| i < BUFFER_TYPES)
}

fn status(s: Status) -> Result<i32> {
    Ok(s as i32)
}

/// Registers every host function the harness implements.
pub(crate) fn define(linker: &mut Linker<HostState>) -> Result<()> {
    define_logging_and_time(linker)?;
    define_headers(linker)?;
    define_buffers(linker)?;
    define_streams(linker)?;
    define_http_calls(linker)?;
    define_metrics(linker)?;
    define_shared_data_and_properties(linker)?;
    define_wasi(linker)?;
    Ok(())
}

fn define_logging_and_time(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| -> Result<i32> {
            let Some(level) = LogLevel::from_abi(level) else {
                return status(Status::BadArgument);
            };
            let message = String::from_utf8_lossy(&read(&caller, ptr, len)?).into_owned();
            caller.data_mut().logs.push(LogLine { level, message });
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Caller<'_, HostState>, ret: i32| -> Result<i32> {
            let level = caller.data().log_level as u32;
            write_u32(&mut caller, ret, level)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, HostState>, ret: i32| -> Result<i32> {
            let now = caller.data().clock_ns;
            write(&mut caller, ret, &now.to_le_bytes())?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Caller<'_, HostState>, period: i32| -> Result<i32> {
            let period = addr(period) as u64;
            caller.data_mut().tick_period = (period > 0).then(|| Duration::from_millis(period));
            status(Status::Ok)
        },
    )?;
    Ok(())
}

/// Applies `edit` to header map `map` with the guest's key and value (pointer, length) used in
/// place. An unknown map, or one not available in this callback, answers BadArgument as Envoy does.
fn edit_header_map(
    caller: &mut Caller<'_, HostState>,
    map: i32,
    (key_ptr, key_len): (i32, i32),
    (value_ptr, value_len): (i32, i32),
    edit: impl FnOnce(&mut Headers, &[u8], &[u8]),
) -> Result<i32> {
    let Some(map) = map_index(map) else {
        return status(Status::BadArgument);
    };
    with_memory(caller, |memory, state| {
        let key = slice(memory, key_ptr, key_len)?;
        let value = slice(memory, value_ptr, value_len)?;
        match state.maps[map].as_mut() {
            Some(headers) => edit(headers, key, value),
            None => return status(Status::BadArgument),
        }
        status(Status::Ok)
    })
}

fn define_headers(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Caller<'_, HostState>, map: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32> {
            let Some(map) = map_index(map) else {
                return status(Status::BadArgument);
            };
            // Envoy serializes an unavailable map as an empty one.
            let state = caller.data_mut();
            state.scratch.clear();
            match state.maps[map].as_ref() {
                Some(headers) => headers.serialize_into(&mut state.scratch),
                None => Headers::new().serialize_into(&mut state.scratch),
            }
            return_scratch(&mut caller, ptr_ptr, size_ptr)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Caller<'_, HostState>, map: i32, ptr: i32, len: i32| -> Result<i32> {
            let Some(map) = map_index(map) else {
                return status(Status::BadArgument);
            };
            let bytes = read(&caller, ptr, len)?;
            let Some(headers) = Headers::deserialize(&bytes) else {
                return status(Status::SerializationFailure);
            };
            match caller.data_mut().maps[map].as_mut() {
                Some(slot) => *slot = headers,
                None => return status(Status::BadArgument),
            }
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Caller<'_, HostState>,
         map: i32,
         key_ptr: i32,
         key_len: i32,
         ptr_ptr: i32,
         size_ptr: i32|
         -> Result<i32> {
            let Some(map) = map_index(map) else {
                return status(Status::BadArgument);
            };
            let found = with_memory(&mut caller, |memory, state| {
                let key = slice(memory, key_ptr, key_len)?;
                let value = match state.maps[map].as_ref() {
                    Some(headers) => headers.get_bytes(key),
                    // Not available in this callback: Envoy answers BadArgument (the SDK panics).
                    None => return Ok(Status::BadArgument),
                };
                let Some(value) = value else {
                    return Ok(Status::NotFound);
                };
                state.scratch.clear();
                state.scratch.extend_from_slice(value);
                Ok(Status::Ok)
            })?;
            if found == Status::Ok {
                return_scratch(&mut caller, ptr_ptr, size_ptr)?;
            }
            status(found)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut caller: Caller<'_, HostState>,
         map: i32,
         key_ptr: i32,
         key_len: i32,
         value_ptr: i32,
         value_len: i32|
         -> Result<i32> {
            edit_header_map(
                &mut caller,
                map,
                (key_ptr, key_len),
                (value_ptr, value_len),
                |headers, key, value| headers.replace(key, value),
            )
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut caller: Caller<'_, HostState>,
         map: i32,
         key_ptr: i32,
         key_len: i32,
         value_ptr: i32,
         value_len: i32|
         -> Result<i32> {
            edit_header_map(
                &mut caller,
                map,
                (key_ptr, key_len),
                (value_ptr, value_len),
                |headers, key, value| headers.add(key, value),
            )
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, HostState>, map: i32, key_ptr: i32, key_len: i32| -> Result<i32> {
            // No value: an empty slice stands in for it.
            edit_header_map(
                &mut caller,
                map,
                (key_ptr, key_len),
                (0, 0),
                |headers, key, _| headers.remove(key),
            )
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut caller: Caller<'_, HostState>, map: i32, ret: i32| -> Result<i32> {
            let Some(map) = map_index(map) else {
                return status(Status::BadArgument);
            };
            let Some(size) = caller.data().maps[map]
                .as_ref()
                .map(|h| h.serialize().len())
            else {
                return status(Status::BadArgument);
            };
            write_u32(&mut caller, ret, size as u32)?;
            status(Status::Ok)
        },
    )?;
    Ok(())
}

fn define_buffers(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         buffer: i32,
         start: i32,
         max_size: i32,
         ptr_ptr: i32,
         size_ptr: i32|
         -> Result<i32> {
            let Some(buffer) = buffer_index(buffer) else {
                return status(Status::BadArgument);
            };
            let state = caller.data_mut();
            match state.buffers[buffer].as_ref() {
                Some(bytes) => {
                    let start = addr(start).min(bytes.len());
                    let end = start.saturating_add(addr(max_size)).min(bytes.len());
                    state.scratch.clear();
                    state.scratch.extend_from_slice(&bytes[start..end]);
                }
                None => return status(Status::NotFound),
            }
            // Envoy leaves the return slots untouched for an empty slice: the SDK sees None.
            if !caller.data().scratch.is_empty() {
                return_scratch(&mut caller, ptr_ptr, size_ptr)?;
            }
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         buffer: i32,
         start: i32,
         size: i32,
         ptr: i32,
         len: i32|
         -> Result<i32> {
            let Some(buffer) = buffer_index(buffer) else {
                return status(Status::BadArgument);
            };
            let data = read(&caller, ptr, len)?;
            let Some(bytes) = caller.data_mut().buffers[buffer].as_mut() else {
                return status(Status::NotFound);
            };
            let start = addr(start).min(bytes.len());
            let end = start.saturating_add(addr(size)).min(bytes.len());
            bytes.splice(start..end, data);
            status(Status::Ok)
        },
    )?;
    Ok(())
}

fn define_streams(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut caller: Caller<'_, HostState>, stream: i32| -> Result<i32> {
            caller.data_mut().continued_streams.push(stream);
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut caller: Caller<'_, HostState>, stream: i32| -> Result<i32> {
            caller.data_mut().closed_streams.push(stream);
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Caller<'_, HostState>,
         status_code: i32,
         details_ptr: i32,
         details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         _grpc_status: i32|
         -> Result<i32> {
            let details = read(&caller, details_ptr, details_len)?;
            let body = read(&caller, body_ptr, body_len)?;
            let Some(headers) = Headers::deserialize(&read(&caller, headers_ptr, headers_len)?)
            else {
                return status(Status::SerializationFailure);
            };
            caller.data_mut().local_response = Some(LocalResponse {
                status: status_code as u32,
                details,
                body,
                headers,
            });
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut caller: Caller<'_, HostState>, context_id: i32| -> Result<i32> {
            let context_id = context_id as u32;
            if !caller.data().live_contexts.contains(&context_id) {
                return status(Status::BadArgument);
            }
            caller.data_mut().active_context = context_id;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut caller: Caller<'_, HostState>,
         code_ptr: i32,
         ptr_ptr: i32,
         size_ptr: i32|
         -> Result<i32> {
            let (code, message) = caller.data().call_status.clone();
            write_u32(&mut caller, code_ptr, code)?;
            return_bytes(&mut caller, &message, ptr_ptr, size_ptr)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_done",
        |_: Caller<'_, HostState>| -> Result<i32> { status(Status::Ok) },
    )?;
    Ok(())
}

fn define_http_calls(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut caller: Caller<'_, HostState>,
         upstream_ptr: i32,
         upstream_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         body_ptr: i32,
         body_len: i32,
         trailers_ptr: i32,
         trailers_len: i32,
         timeout_ms: i32,
         token_ptr: i32|
         -> Result<i32> {
            let cluster =
                String::from_utf8_lossy(&read(&caller, upstream_ptr, upstream_len)?).into_owned();
            let headers = Headers::deserialize(&read(&caller, headers_ptr, headers_len)?);
            let trailers = Headers::deserialize(&read(&caller, trailers_ptr, trailers_len)?);
            let (Some(headers), Some(trailers)) = (headers, trailers) else {
                return status(Status::SerializationFailure);
            };
            let body = read(&caller, body_ptr, body_len)?;
            // Envoy answers BadArgument for a negative timeout, for a cluster it does not know and
            // for a request without :method, :path or :authority.
            if timeout_ms < 0 || caller.data().unreachable_clusters.contains(&cluster) {
                return status(Status::BadArgument);
            }
            if [":method", ":path", ":authority"]
                .iter()
                .any(|h| headers.get(h).is_none())
            {
                return status(Status::BadArgument);
            }
            let state = caller.data_mut();
            let token = state.next_token;
            state.next_token += 1;
            let context_id = state.active_context;
            state.http_calls.push(HttpCall {
                token,
                context_id,
                cluster,
                headers,
                body,
                trailers,
                timeout: Duration::from_millis(addr(timeout_ms) as u64),
            });
            write_u32(&mut caller, token_ptr, token)?;
            status(Status::Ok)
        },
    )?;
    Ok(())
}

fn define_metrics(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut caller: Caller<'_, HostState>,
         kind: i32,
         name_ptr: i32,
         name_len: i32,
         ret: i32|
         -> Result<i32> {
            let kind = match kind {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Histogram,
                _ => return status(Status::BadArgument),
            };
            let name = String::from_utf8_lossy(&read(&caller, name_ptr, name_len)?).into_owned();
            let state = caller.data_mut();
            // Envoy resolves a metric by name in its stats scope: defining it again (another
            // VM, a reconfigure) refers to the same statistic.
            let id = match state.metric_ids.get(&name) {
                Some(&id) => {
                    if state.metrics[id as usize].kind != kind {
                        bail!(
                            "metric {name} defined as {:?} and as {kind:?}",
                            state.metrics[id as usize].kind
                        );
                    }
                    id
                }
                None => {
                    let id = state.metrics.len() as u32;
                    state.metrics.push(Metric {
                        name: name.clone(),
                        kind,
                        value: 0,
                    });
                    state.metric_ids.insert(name, id);
                    id
                }
            };
            write_u32(&mut caller, ret, id)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut caller: Caller<'_, HostState>, id: i32, offset: i64| -> Result<i32> {
            let Some(metric) = caller.data_mut().metrics.get_mut(id as u32 as usize) else {
                return status(Status::NotFound);
            };
            match metric.kind {
                MetricKind::Counter if offset < 0 => return status(Status::BadArgument),
                MetricKind::Counter | MetricKind::Gauge => {
                    metric.value = metric.value.wrapping_add_signed(offset);
                }
                MetricKind::Histogram => return status(Status::BadArgument),
            }
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |mut caller: Caller<'_, HostState>, id: i32, value: i64| -> Result<i32> {
            let Some(metric) = caller.data_mut().metrics.get_mut(id as u32 as usize) else {
                return status(Status::NotFound);
            };
            match metric.kind {
                // Envoy adds a recorded value to a counter and sets a gauge to it.
                MetricKind::Counter => metric.value = metric.value.wrapping_add(value as u64),
                MetricKind::Gauge | MetricKind::Histogram => metric.value = value as u64,
            }
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut caller: Caller<'_, HostState>, id: i32, ret: i32| -> Result<i32> {
            let value = match caller.data().metrics.get(id as u32 as usize) {
                Some(m) if m.kind != MetricKind::Histogram => m.value,
                Some(_) => return status(Status::BadArgument),
                None => return status(Status::NotFound),
            };
            write(&mut caller, ret, &value.to_le_bytes())?;
            status(Status::Ok)
        },
    )?;
    Ok(())
}

fn define_shared_data_and_properties(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Caller<'_, HostState>,
         key_ptr: i32,
         key_len: i32,
         ptr_ptr: i32,
         size_ptr: i32,
         cas_ptr: i32|
         -> Result<i32> {
            let key = read(&caller, key_ptr, key_len)?;
            let Some((value, cas)) = caller.data().shared_data.get(&key).cloned() else {
                return status(Status::NotFound);
            };
            return_bytes(&mut caller, &value, ptr_ptr, size_ptr)?;
            write_u32(&mut caller, cas_ptr, cas)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut caller: Caller<'_, HostState>,
         key_ptr: i32,
         key_len: i32,
         value_ptr: i32,
         value_len: i32,
         cas: i32|
         -> Result<i32> {
            let key = read(&caller, key_ptr, key_len)?;
            let value = read(&caller, value_ptr, value_len)?;
            let cas = cas as u32;
            let shared = &mut caller.data_mut().shared_data;
            let current = shared.get(&key).map_or(0, |(_, c)| *c);
            if cas != 0 && cas != current {
                return status(Status::CasMismatch);
            }
            shared.insert(key, (value, current.wrapping_add(1).max(1)));
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut caller: Caller<'_, HostState>,
         path_ptr: i32,
         path_len: i32,
         ptr_ptr: i32,
         size_ptr: i32|
         -> Result<i32> {
            let path = read(&caller, path_ptr, path_len)?;
            let Some(value) = caller.data().properties.get(&path).cloned() else {
                return status(Status::NotFound);
            };
            return_bytes(&mut caller, &value, ptr_ptr, size_ptr)?;
            status(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut caller: Caller<'_, HostState>,
         path_ptr: i32,
         path_len: i32,
         value_ptr: i32,
         value_len: i32|
         -> Result<i32> {
            let path = read(&caller, path_ptr, path_len)?;
            let value = read(&caller, value_ptr, value_len)?;
            caller.data_mut().properties.insert(path, value);
            status(Status::Ok)
        },
    )?;
    Ok(())
}

/// WASI errno values.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOSYS: i32 = 52;

fn define_wasi(linker: &mut Linker<HostState>) -> Result<()> {
    const WASI: &str = "wasi_snapshot_preview1";
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut caller: Caller<'_, HostState>,
         fd: i32,
         iovs: i32,
         iovs_len: i32,
         nwritten: i32|
         -> Result<i32> {
            if fd != 1 && fd != 2 {
                return Ok(ERRNO_BADF);
            }
            let table = read(&caller, iovs, iovs_len.saturating_mul(8))?;
            let mut written = Vec::new();
            for iov in table.chunks_exact(8) {
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                written.extend_from_slice(&read(&caller, ptr, len)?);
            }
            let count = written.len() as u32;
            let state = caller.data_mut();
            if fd == 1 {
                &mut state.stdout
            } else {
                &mut state.stderr
            }
            .extend_from_slice(&written);
            write_u32(&mut caller, nwritten, count)?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    for name in ["fd_close", "fd_fdstat_get", "fd_prestat_get"] {
        linker.func_wrap(
            WASI,
            name,
            |_: Caller<'_, HostState>, _: i32| -> Result<i32> { Ok(ERRNO_BADF) },
        )?;
    }
    linker.func_wrap(
        WASI,
        "fd_prestat_dir_name",
        |_: Caller<'_, HostState>, _: i32, _: i32, _: i32| -> Result<i32> { Ok(ERRNO_BADF) },
    )?;
    linker.func_wrap(
        WASI,
        "fd_read",
        |_: Caller<'_, HostState>, _: i32, _: i32, _: i32, _: i32| -> Result<i32> {
            Ok(ERRNO_BADF)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_seek",
        |_: Caller<'_, HostState>, _: i32, _: i64, _: i32, _: i32| -> Result<i32> {
            Ok(ERRNO_BADF)
        },
    )?;
    // No environment and no arguments, as in Envoy.
    for name in ["environ_sizes_get", "args_sizes_get"] {
        linker.func_wrap(
            WASI,
            name,
            |mut caller: Caller<'_, HostState>, count: i32, size: i32| -> Result<i32> {
                write_u32(&mut caller, count, 0)?;
                write_u32(&mut caller, size, 0)?;
                Ok(ERRNO_SUCCESS)
            },
        )?;
    }
    for name in ["environ_get", "args_get"] {
        linker.func_wrap(
            WASI,
            name,
            |_: Caller<'_, HostState>, _: i32, _: i32| -> Result<i32> { Ok(ERRNO_SUCCESS) },
        )?;
    }
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut caller: Caller<'_, HostState>, clock: i32, _precision: i64, ret: i32| -> Result<i32> {
            // 0 realtime, 1 monotonic: both read the harness clock the test controls.
            if !(0..=3).contains(&clock) {
                return Ok(ERRNO_INVAL);
            }
            let now = caller.data().clock_ns;
            write(&mut caller, ret, &now.to_le_bytes())?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_res_get",
        |mut caller: Caller<'_, HostState>, _clock: i32, ret: i32| -> Result<i32> {
            write(&mut caller, ret, &1u64.to_le_bytes())?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "random_get",
        |mut caller: Caller<'_, HostState>, buf: i32, len: i32| -> Result<i32> {
            // Real randomness (like Envoy's): a filter must not depend on it for routing.
            let mut bytes = Vec::with_capacity(addr(len) + 8);
            while bytes.len() < addr(len) {
                let state = caller.data_mut();
                state.random_draws += 1;
                let mut hasher = state.random.build_hasher();
                hasher.write_u64(state.random_draws);
                bytes.extend_from_slice(&hasher.finish().to_le_bytes());
            }
            bytes.truncate(addr(len));
            write(&mut caller, buf, &bytes)?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "sched_yield",
        |_: Caller<'_, HostState>| -> Result<i32> { Ok(ERRNO_SUCCESS) },
    )?;
    linker.func_wrap(
        WASI,
        "poll_oneoff",
        |_: Caller<'_, HostState>, _: i32, _: i32, _: i32, _: i32| -> Result<i32> {
            Ok(ERRNO_NOSYS)
        },
    )?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Caller<'_, HostState>, code: i32| -> Result<()> {
            bail!("the module called proc_exit({code})")
        },
    )?;
    Ok(())
}
