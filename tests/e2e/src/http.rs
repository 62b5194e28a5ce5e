//! Minimal HTTP/1.1 message reading shared by the test upstream and the test client.
//!
//! Hand-written on `std::net` on purpose: the tests must send and inspect header values as raw
//! bytes (obs-text 0x80–0xFF, spoofed routing headers), which typed HTTP libraries refuse or
//! normalise.

use std::io::{self, BufRead, Read};

/// Upper bound for a message head (request line or status line plus headers).
const MAX_HEAD_BYTES: usize = 1024 * 1024;

/// One header: lower-cased name, value as the raw bytes that were on the wire (OWS trimmed).
pub type Header = (String, Vec<u8>);

/// Reads one message head. Returns `Ok(None)` on a clean EOF before the first byte (the peer
/// closed an idle keep-alive connection).
pub(crate) fn read_head<R: BufRead>(reader: &mut R) -> io::Result<Option<(String, Vec<Header>)>> {
    let mut start_line = Vec::new();
    // Tolerate empty lines before the start line (RFC 9112 §2.2).
    loop {
        start_line.clear();
        let n = reader.read_until(b'\n', &mut start_line)?;
        if n == 0 {
            return Ok(None);
        }
        if trim_crlf(&start_line).is_empty() {
            continue;
        }
        break;
    }
    let start = String::from_utf8_lossy(trim_crlf(&start_line)).into_owned();
    let mut headers = Vec::new();
    let mut total = start_line.len();
    loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a message head",
            ));
        }
        total += n;
        if total > MAX_HEAD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message head too large",
            ));
        }
        let line = trim_crlf(&line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "header line without a colon",
            ));
        };
        let name = String::from_utf8_lossy(&line[..colon])
            .trim()
            .to_ascii_lowercase();
        let value = trim_ows(&line[colon + 1..]).to_vec();
        headers.push((name, value));
    }
    Ok(Some((start, headers)))
}

/// Reads a body framed by `transfer-encoding: chunked` or `content-length`; without either, an
/// empty body (requests) — callers handle read-to-EOF responses themselves.
pub(crate) fn read_body<R: BufRead>(reader: &mut R, headers: &[Header]) -> io::Result<Vec<u8>> {
    if is_chunked(headers) {
        return read_chunked(reader);
    }
    match content_length(headers)? {
        Some(len) => {
            let mut body = vec![0; len];
            reader.read_exact(&mut body)?;
            Ok(body)
        }
        None => Ok(Vec::new()),
    }
}

pub(crate) fn is_chunked(headers: &[Header]) -> bool {
    headers.iter().any(|(name, value)| {
        name == "transfer-encoding"
            && String::from_utf8_lossy(value)
                .to_ascii_lowercase()
                .contains("chunked")
    })
}

pub(crate) fn content_length(headers: &[Header]) -> io::Result<Option<usize>> {
    match headers.iter().find(|(name, _)| name == "content-length") {
        None => Ok(None),
        Some((_, value)) => String::from_utf8_lossy(value)
            .trim()
            .parse::<usize>()
            .map(Some)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length")),
    }
}

/// True when the message asks to close the connection after it.
pub(crate) fn wants_close(headers: &[Header]) -> bool {
    headers.iter().any(|(name, value)| {
        name == "connection"
            && String::from_utf8_lossy(value)
                .to_ascii_lowercase()
                .contains("close")
    })
}

fn read_chunked<R: BufRead>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = Vec::new();
        if reader.read_until(b'\n', &mut size_line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a chunked body",
            ));
        }
        let size_text = String::from_utf8_lossy(trim_crlf(&size_line)).into_owned();
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size {size_text:?}"),
            )
        })?;
        if size == 0 {
            // Trailer section, ended by an empty line.
            loop {
                let mut line = Vec::new();
                if reader.read_until(b'\n', &mut line)? == 0 || trim_crlf(&line).is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Looks a header up by (case-insensitive) name.
pub(crate) fn find<'a>(headers: &'a [Header], name: &str) -> Option<&'a [u8]> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_slice())
}

/// Reason phrase for the status codes the fixtures send.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

pub(crate) fn read_to_end<R: Read>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    reader.read_to_end(&mut body)?;
    Ok(body)
}
