//! The one HTTP client of the migrator for Envoy's admin endpoint and listeners (reqwest with
//! rustls): `http://` and `https://` (custom CA with `--cacert`), a timeout on every request
//! (connect, headers and body together) and a size bound on every response body. URLs are only
//! ever shown without their user-info (`http://admin:pw@…` → `http://…`).

use std::path::Path;
use std::time::Duration;

/// Default bound of a response body. Envoy's `/stats?format=json` of a large Envoy is a few MiB;
/// a config dump with many clusters somewhat more.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("--cacert {path}: {reason}")]
    CaCert { path: String, reason: String },
    #[error("GET {url}: cannot connect: {reason}")]
    Connect { url: String, reason: String },
    #[error("GET {url}: no complete answer within {timeout_ms} ms (the server accepted the connection but did not answer in time)")]
    Timeout { url: String, timeout_ms: u128 },
    #[error("GET {url}: the answer is larger than the limit of {limit} bytes; not read further")]
    TooLarge { url: String, limit: usize },
    #[error("GET {url}: {reason}")]
    Request { url: String, reason: String },
}

impl HttpError {
    /// True when the URL itself is wrong (a usage error), not the server.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            HttpError::InvalidUrl { .. } | HttpError::CaCert { .. }
        )
    }
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

/// How the client talks to Envoy.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// For the whole request: connect, headers and body.
    pub timeout: Duration,
    pub max_body_bytes: usize,
    /// PEM file with the CA certificate(s) of `https://` endpoints (besides the built-in roots).
    pub ca_cert: Option<std::path::PathBuf>,
}

impl ClientOptions {
    pub fn with_timeout(timeout: Duration) -> ClientOptions {
        ClientOptions {
            timeout,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            ca_cert: None,
        }
    }
}

/// A reusable client (connection pool) with the timeout and size bound of its options.
#[derive(Debug, Clone)]
pub struct Client {
    inner: reqwest::Client,
    options: ClientOptions,
}

impl Client {
    pub fn new(options: ClientOptions) -> Result<Client, HttpError> {
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .no_proxy()
            .user_agent(concat!("migrator/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &options.ca_cert {
            let ca_error = |reason: String| HttpError::CaCert {
                path: path.display().to_string(),
                reason,
            };
            let pem = read_bounded_file(path, 1024 * 1024).map_err(ca_error)?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ca_error(format!("not a PEM certificate file: {}", error_chain(&e)))
            })?;
            if certificates.is_empty() {
                return Err(ca_error("no certificate in the file".to_string()));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let inner = builder.build().map_err(|e| HttpError::Request {
            url: String::new(),
            reason: format!("cannot set up the HTTP client: {}", error_chain(&e)),
        })?;
        Ok(Client { inner, options })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// GET `url`; the body is read up to the size bound, all within the timeout.
    pub async fn get(&self, url: &str) -> Result<Response, HttpError> {
        self.get_with_headers(url, &[]).await
    }

    /// GET `url` with these request headers (names and values as given).
    pub async fn get_with_headers(
        &self,
        url: &str,
        headers: &[(String, String)],
    ) -> Result<Response, HttpError> {
        let parsed = parse_url(url)?;
        let shown = crate::redact::url(url);
        let timeout = self.options.timeout;
        let limit = self.options.max_body_bytes;
        let classify = |e: reqwest::Error| -> HttpError {
            if e.is_timeout() {
                HttpError::Timeout {
                    url: shown.clone(),
                    timeout_ms: timeout.as_millis(),
                }
            } else if e.is_connect() {
                HttpError::Connect {
                    url: shown.clone(),
                    reason: error_chain(&e.without_url()),
                }
            } else {
                HttpError::Request {
                    url: shown.clone(),
                    reason: error_chain(&e.without_url()),
                }
            }
        };
        // The client's timeout covers the body too; this outer one is the same bound kept
        // independent of reqwest's internals.
        let work = async {
            let mut request = self.inner.get(parsed);
            for (name, value) in headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let mut response = request.send().await.map_err(classify)?;
            if response
                .content_length()
                .is_some_and(|length| length > limit as u64)
            {
                return Err(HttpError::TooLarge {
                    url: shown.clone(),
                    limit,
                });
            }
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(classify)? {
                if body.len() + chunk.len() > limit {
                    return Err(HttpError::TooLarge {
                        url: shown.clone(),
                        limit,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Response {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout {
                url: shown.clone(),
                timeout_ms: timeout.as_millis(),
            }),
        }
    }
}

/// `base` with `path_and_query` (which starts with `/`) appended to its path; a query of `base`
/// (such as a token for a proxy in front of the admin endpoint) is kept and comes first.
pub fn join(base: &str, path_and_query: &str) -> String {
    let Some(mut url) = url::Url::parse(base).ok().filter(url::Url::has_host) else {
        // Not a URL the client would accept anyway (see `parse_url`): its error names it.
        return format!("{}{}", base.trim_end_matches('/'), path_and_query);
    };
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let joined = format!("{}{path}", url.path().trim_end_matches('/'));
    url.set_path(&joined);
    let query = [url.query().unwrap_or_default(), query]
        .into_iter()
        .filter(|q| !q.is_empty())
        .collect::<Vec<_>>()
        .join("&");
    url.set_query((!query.is_empty()).then_some(query.as_str()));
    url.to_string()
}

/// Checks that `url` is an absolute `http://` or `https://` URL with a host.
pub fn parse_url(url: &str) -> Result<url::Url, HttpError> {
    let invalid = |reason: &str| HttpError::InvalidUrl {
        url: crate::redact::url(url),
        reason: reason.to_string(),
    };
    let missing_scheme =
        "expected an absolute URL with http:// or https://, e.g. http://127.0.0.1:9901";
    if !url.contains("://") {
        return Err(invalid(missing_scheme));
    }
    let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(missing_scheme));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    Ok(parsed)
}

/// An error and its sources, joined with ": ", without repeating a message its source already
/// says.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

fn read_bounded_file(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut data = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|e| e.to_string())?;
    if data.len() as u64 > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_joined_before_the_base_query() {
        assert_eq!(
            join("http://127.0.0.1:9901", "/stats?format=json"),
            "http://127.0.0.1:9901/stats?format=json"
        );
        assert_eq!(
            join("http://h:9901/envoy/", "/clusters"),
            "http://h:9901/envoy/clusters"
        );
        assert_eq!(
            join("http://h:9901/?token=T", "/stats?format=json"),
            "http://h:9901/stats?token=T&format=json"
        );
    }

    #[test]
    fn only_absolute_http_urls_are_accepted() {
        assert!(parse_url("http://127.0.0.1:9901").is_ok());
        assert!(parse_url("https://envoy.internal:9901").is_ok());
        for bad in ["127.0.0.1:9901", "localhost:9901", "ftp://h/x", "http://"] {
            let err = parse_url(bad).unwrap_err();
            assert!(err.is_usage(), "{bad}");
            assert!(err.to_string().contains("invalid URL"), "{err}");
        }
        let err = parse_url("admin:secret@127.0.0.1:9901")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
