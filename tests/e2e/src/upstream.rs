//! A loopback HTTP/1.1 upstream that says which side it is and records what it received.

use std::io::{BufReader, BufWriter, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::http::{self, Header};

/// Response header naming the upstream that answered (its name, e.g. `chat_legacy`).
pub const SERVED_BY_HEADER: &str = "x-served-by";

/// How an [`Upstream`] answers. Change it at any time with the setters on [`Upstream`]; it
/// applies to requests that arrive afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behaviour {
    /// Status of every answer (default 200), unless `fail_every` picks the request.
    pub status: u16,
    /// When `Some(n)`, every n-th request (the n-th, 2n-th, … counted since start) gets 500.
    pub fail_every: Option<u64>,
    /// Wait this long after reading the request, before answering (default none).
    pub delay: Duration,
    /// Answers for particular paths (the target without its query), first match wins; other
    /// paths get the default answer (`status`, `text/plain`, the upstream's name).
    pub canned: Vec<Canned>,
}

/// A fixed answer for one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canned {
    pub path: String,
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            status: 200,
            fail_every: None,
            delay: Duration::ZERO,
            canned: Vec::new(),
        }
    }
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Request target as sent: path plus query, e.g. `/api/chat/7?x=1`.
    pub target: String,
    /// Headers in arrival order, names lower-cased, values as raw bytes.
    pub headers: Vec<Header>,
    /// The complete body (chunked bodies de-chunked).
    pub body: Vec<u8>,
    /// When the complete request had been read.
    pub received_at: Instant,
}

impl RecordedRequest {
    /// Raw value of the first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        http::find(&self.headers, name)
    }

    /// Value of the first header with this name, lossily decoded as UTF-8.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Path part of the target (before `?`).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Query part of the target (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

struct Shared {
    name: String,
    behaviour: Mutex<Behaviour>,
    requests: Mutex<Vec<RecordedRequest>>,
    arrived: Condvar,
    sequence: AtomicU64,
    recording: AtomicBool,
    stopping: AtomicBool,
    /// Open connections by id, so `stop` can close them; removed when their thread ends.
    connections: Mutex<Vec<(u64, TcpStream)>>,
    next_connection: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread must not take the fixture down with it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A loopback HTTP/1.1 server on a free port: keep-alive, `content-length` and chunked request
/// bodies, one thread per connection. Every answer carries `x-served-by: <name>` and the body
/// `<name>`. Use the name of the Envoy cluster it stands for (`chat_legacy`, `chat_new`, …):
/// [`crate::Envoy`] creates one cluster per upstream under that name.
///
/// Dropping it closes the port and every open connection.
pub struct Upstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept_thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts a server answering 200 immediately.
    pub fn start(name: &str) -> Upstream {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("bind a loopback port for the test upstream");
        let addr = listener
            .local_addr()
            .expect("local address of the test upstream");
        let shared = Arc::new(Shared {
            name: name.to_string(),
            behaviour: Mutex::new(Behaviour::default()),
            requests: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            sequence: AtomicU64::new(0),
            recording: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
            next_connection: AtomicU64::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("upstream-{name}"))
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("spawn the upstream accept thread");
        Upstream {
            shared,
            addr,
            accept_thread: Some(accept_thread),
        }
    }

    /// An upstream that is down: its port was free a moment ago and nothing listens on it, so
    /// connections are refused. Nothing is ever recorded.
    pub fn start_down(name: &str) -> Upstream {
        let mut upstream = Upstream::start(name);
        upstream.stop();
        upstream
    }

    /// Closes the listening port and every open connection: from now on the upstream is down.
    pub fn stop(&mut self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept loop so it sees `stopping` and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.accept_thread.take() {
            let _ = handle.join();
        }
        for (_, stream) in lock(&self.shared.connections).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Name given at start (also the `x-served-by` value and the Envoy cluster name).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Current behaviour.
    pub fn behaviour(&self) -> Behaviour {
        lock(&self.shared.behaviour).clone()
    }

    /// Replaces the whole behaviour.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.shared.behaviour) = behaviour;
    }

    /// Answer every request with this status.
    pub fn set_status(&self, status: u16) {
        lock(&self.shared.behaviour).status = status;
    }

    /// Answer every n-th request with 500 (`0` turns it off).
    pub fn set_fail_every(&self, n: u64) {
        lock(&self.shared.behaviour).fail_every = if n == 0 { None } else { Some(n) };
    }

    /// Answer requests for `path` (without query) with this status, content type and body.
    pub fn set_canned(&self, path: &str, status: u16, content_type: &str, body: &[u8]) {
        let mut behaviour = lock(&self.shared.behaviour);
        behaviour.canned.retain(|c| c.path != path);
        behaviour.canned.push(Canned {
            path: path.to_string(),
            status,
            content_type: content_type.to_string(),
            body: body.to_vec(),
        });
    }

    /// Wait this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.shared.behaviour).delay = delay;
    }

    /// Turn request recording off (benchmarks) or on (the default).
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::SeqCst);
    }

    /// Every request recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Number of requests recorded so far.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Waits until at least `n` requests were recorded and returns them all; panics after
    /// `timeout` with what did arrive.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        let mut requests = lock(&self.shared.requests);
        while requests.len() < n {
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "upstream {}: expected at least {n} requests within {timeout:?}, got {}: {:?}",
                    self.shared.name,
                    requests.len(),
                    requests
                        .iter()
                        .map(|r| format!("{} {}", r.method, r.target))
                        .collect::<Vec<_>>()
                );
            }
            requests = self
                .shared
                .arrived
                .wait_timeout(requests, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        requests.clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let id = shared.next_connection.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.connections).push((id, clone));
        }
        let connection_shared = Arc::clone(&shared);
        let _ = thread::Builder::new()
            .name(format!("upstream-{}-conn", shared.name))
            .spawn(move || {
                serve_connection(stream, &connection_shared);
                lock(&connection_shared.connections).retain(|(other, _)| *other != id);
            });
    }
}

fn serve_connection(stream: TcpStream, shared: &Shared) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut writer = BufWriter::new(write_half);
    loop {
        let Ok(Some((start_line, headers))) = http::read_head(&mut reader) else {
            return;
        };
        let mut parts = start_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let Ok(body) = http::read_body(&mut reader, &headers) else {
            return;
        };
        let close = http::wants_close(&headers);
        let path = target.split('?').next().unwrap_or("").to_string();

        let sequence = shared.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        if shared.recording.load(Ordering::SeqCst) {
            let mut requests = lock(&shared.requests);
            requests.push(RecordedRequest {
                method,
                target,
                headers,
                body,
                received_at: Instant::now(),
            });
            shared.arrived.notify_all();
        }
        let behaviour = lock(&shared.behaviour).clone();
        if !behaviour.delay.is_zero() {
            thread::sleep(behaviour.delay);
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let canned = behaviour.canned.iter().find(|c| c.path == path);
        let status = match (canned, behaviour.fail_every) {
            (Some(c), _) => c.status,
            (None, Some(n)) if sequence.is_multiple_of(n) => 500,
            (None, _) => behaviour.status,
        };
        let (content_type, body) = match canned {
            Some(c) => (c.content_type.as_str(), c.body.as_slice()),
            None => ("text/plain", shared.name.as_bytes()),
        };
        let head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\n{SERVED_BY_HEADER}: {}\r\ncontent-length: {}\r\n{}\r\n",
            http::reason(status),
            shared.name,
            body.len(),
            if close { "connection: close\r\n" } else { "" },
        );
        if writer
            .write_all(head.as_bytes())
            .and_then(|_| writer.write_all(body))
            .and_then(|_| writer.flush())
            .is_err()
        {
            return;
        }
        if close {
            return;
        }
    }
}
