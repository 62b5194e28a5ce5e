//! A blocking HTTP/1.1 keep-alive client that sends header values as raw bytes.

use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::http::{self, Header};

/// Default connect/read/write timeout of [`HttpClient`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer as received.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Headers in arrival order, names lower-cased, values as raw bytes.
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
    /// From the first byte written to the last byte of the body read.
    pub elapsed: Duration,
}

impl Response {
    /// Raw value of the first header with this name (case-insensitive).
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        http::find(&self.headers, name)
    }

    /// Value of the first header with this name, lossily decoded as UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_bytes(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The `x-served-by` header of the test upstreams: which upstream answered.
    pub fn served_by(&self) -> Option<String> {
        self.header(crate::SERVED_BY_HEADER)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive connection to one address, reopened when the server closed it. Every read and
/// write is bounded by the timeout. Header values are `&[u8]`: any byte can be sent.
pub struct HttpClient {
    addr: SocketAddr,
    host: String,
    timeout: Duration,
    connection: Option<BufReader<TcpStream>>,
}

impl HttpClient {
    /// `base` is `http://HOST:PORT` (a path after it is ignored) or `HOST:PORT`.
    pub fn new(base: &str) -> HttpClient {
        let authority = base
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        let addr = authority
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .unwrap_or_else(|| panic!("HttpClient: cannot resolve {base:?}"));
        HttpClient {
            addr,
            host: authority,
            timeout: DEFAULT_TIMEOUT,
            connection: None,
        }
    }

    /// Replaces the connect/read/write timeout (applies to the next connection).
    pub fn with_timeout(mut self, timeout: Duration) -> HttpClient {
        self.timeout = timeout;
        self.connection = None;
        self
    }

    /// GET without extra headers; panics on a transport error.
    pub fn get(&mut self, target: &str) -> Response {
        self.send("GET", target, &[], b"")
    }

    /// GET with extra headers; panics on a transport error.
    pub fn get_with(&mut self, target: &str, headers: &[(&str, &[u8])]) -> Response {
        self.send("GET", target, headers, b"")
    }

    /// Any request; panics with the method and target on a transport error.
    pub fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Response {
        self.try_send(method, target, headers, body)
            .unwrap_or_else(|error| panic!("{method} {target} to {}: {error}", self.addr))
    }

    /// Any request. `content-length` is added for a non-empty body or a method that carries
    /// one. A request on a reused connection that the server had already closed is sent once more
    /// on a new connection (only when nothing of the answer had arrived).
    pub fn try_send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut message = Vec::with_capacity(256 + body.len());
        message.extend_from_slice(
            format!("{method} {target} HTTP/1.1\r\nhost: {}\r\n", self.host).as_bytes(),
        );
        for (name, value) in headers {
            message.extend_from_slice(name.as_bytes());
            message.extend_from_slice(b": ");
            message.extend_from_slice(value);
            message.extend_from_slice(b"\r\n");
        }
        let has_length = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-length"));
        if !has_length && (!body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH")) {
            message.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        message.extend_from_slice(b"\r\n");
        message.extend_from_slice(body);

        let reused = self.connection.is_some();
        match self.exchange(&message, method) {
            Err(error) if reused && is_stale_connection(&error) => {
                self.connection = None;
                self.exchange(&message, method)
            }
            other => other,
        }
    }

    /// Opens the connection now (normally opened by the first request).
    pub fn connect(&mut self) -> io::Result<()> {
        if self.connection.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            stream.set_read_timeout(Some(self.timeout))?;
            stream.set_write_timeout(Some(self.timeout))?;
            stream.set_nodelay(true)?;
            self.connection = Some(BufReader::with_capacity(64 * 1024, stream));
        }
        Ok(())
    }

    fn exchange(&mut self, message: &[u8], method: &str) -> io::Result<Response> {
        let started = Instant::now();
        self.connect()?;
        let result = self.exchange_on_connection(message, method, started);
        if result.as_ref().map_or(true, |(_, close)| *close) {
            self.connection = None;
        }
        result.map(|(response, _)| response)
    }

    fn exchange_on_connection(
        &mut self,
        message: &[u8],
        method: &str,
        started: Instant,
    ) -> io::Result<(Response, bool)> {
        let reader = self
            .connection
            .as_mut()
            .ok_or_else(|| io::Error::other("no connection"))?;
        reader.get_mut().write_all(message)?;
        reader.get_mut().flush()?;
        let (status_line, headers) = http::read_head(reader)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "server closed the connection before answering",
            )
        })?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                )
            })?;
        let close = http::wants_close(&headers) || status_line.starts_with("HTTP/1.0");
        let bodyless =
            method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
        let body = if bodyless {
            Vec::new()
        } else if http::is_chunked(&headers) || http::content_length(&headers)?.is_some() {
            http::read_body(reader, &headers)?
        } else {
            // Neither framing: the body runs until the server closes.
            http::read_to_end(reader)?
        };
        let close = close
            || (!bodyless
                && !http::is_chunked(&headers)
                && http::content_length(&headers)?.is_none());
        Ok((
            Response {
                status,
                headers,
                body,
                elapsed: started.elapsed(),
            },
            close,
        ))
    }
}

fn is_stale_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
    )
}
