//! A minimal HTTP/1.1 GET over a plain TCP connection: enough for Envoy's admin endpoint and for
//! health requests through Envoy's listener on loopback or in-cluster addresses (no TLS).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("GET {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("GET {url}: no answer within {timeout_ms} ms")]
    Timeout { url: String, timeout_ms: u128 },
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `base` joined with `path_and_query` (which starts with `/`).
pub fn join(base: &str, path_and_query: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path_and_query)
}

pub async fn get(url: &str, timeout: Duration) -> Result<Response, HttpError> {
    match tokio::time::timeout(timeout, get_inner(url)).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout {
            url: url.to_string(),
            timeout_ms: timeout.as_millis(),
        }),
    }
}

async fn get_inner(url: &str) -> Result<Response, HttpError> {
    let invalid = |reason: &str| HttpError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    if parsed.scheme() != "http" {
        return Err(invalid("only http:// URLs are supported"));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| invalid("no host"))?
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let mut target = parsed.path().to_string();
    if let Some(query) = parsed.query() {
        target.push('?');
        target.push_str(query);
    }
    let failed = |reason: String| HttpError::Request {
        url: url.to_string(),
        reason,
    };
    let connect_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let mut stream = TcpStream::connect((connect_host.as_str(), port))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: migrator-cutover-verify\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| failed(e.to_string()))?;
    parse_response(&raw).map_err(failed)
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let head_end = find(raw, b"\r\n\r\n").ok_or("incomplete response (no header end)")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "response header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let body_raw = &raw[head_end + 4..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body_raw)?
    } else {
        body_raw.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or("truncated chunked body")?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size {
            return Err("truncated chunk".to_string());
        }
        body.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain =
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-routed-to: new\r\n\r\nok")
                .unwrap();
        assert_eq!(plain.status, 200);
        assert_eq!(plain.body, b"ok");
        assert_eq!(plain.header("X-Routed-To"), Some("new"));
        let chunked = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(chunked.status, 503);
        assert_eq!(chunked.body, b"abcde");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
