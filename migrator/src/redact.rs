//! Rendering connection strings and URLs without their secrets, and scrubbing known secrets from
//! any text before it is printed. A leaf module: it depends on nothing else in the crate, so every
//! other module (connections, errors, reports) can use it.
//!
//! What counts as a secret in a connection string or URL:
//! - the password of the user-info part (`postgres://user:SECRET@host/db`, `http://admin:SECRET@…`);
//! - the value of every secret-bearing query parameter or `key=value` keyword: `password`,
//!   `sslpassword` and any other key naming a password, passphrase, secret or token
//!   ([`is_secret_key`]). File paths such as `sslkey` or `sslrootcert` are shown.
//!
//! [`register`] remembers the secrets of a connection string; [`scrub`] then replaces each of them
//! (as written and percent-decoded) by `***` in any text, so that a driver or server message
//! repeating part of a URL cannot leak one.

use std::sync::Mutex;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Secrets seen so far (see [`register`], [`register_secret`]).
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Whether a query parameter or keyword carries a secret value.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "credential"]
        .iter()
        .any(|word| key.contains(word))
}

/// Remembers `secret` (and its percent-decoded form) for [`scrub`].
pub fn register_secret(secret: &str) {
    let mut secrets = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    for s in [secret.to_string(), percent_decode(secret)] {
        if !s.is_empty() && !secrets.contains(&s) {
            secrets.push(s);
        }
    }
    // Longest first, so that a secret containing another one is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Remembers every secret of a URL or `key=value` connection string for [`scrub`].
pub fn register(conn: &str) {
    for secret in secrets_of(conn) {
        register_secret(&secret);
    }
}

/// `text` with every registered secret replaced by `***`.
pub fn scrub(text: &str) -> String {
    let secrets = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = text.to_string();
    for secret in secrets.iter() {
        out = out.replace(secret.as_str(), MASK);
    }
    out
}

/// `conn` (a URL or a `key=value` connection string) rendered without its secrets; the secrets
/// are also registered for [`scrub`]. A URL keeps its user name, its password and every secret
/// query parameter become `***`; a `user:password@host` without a scheme is shown from the host
/// on; other text is not shown at all.
pub fn url(conn: &str) -> String {
    register(conn);
    match url::Url::parse(conn) {
        Ok(parsed) if parsed.has_host() => masked_url(conn, parsed),
        _ => match keyword_pairs(conn) {
            Some(pairs) if !pairs.is_empty() => pairs
                .iter()
                .map(|(k, v)| {
                    if is_secret_key(k) {
                        format!("{k}={MASK}")
                    } else {
                        format!("{k}={}", quote_keyword_value(v))
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            _ => without_user_info(conn)
                .unwrap_or_else(|| "<unparseable connection string>".to_string()),
        },
    }
}

fn masked_url(conn: &str, mut parsed: url::Url) -> String {
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some(MASK));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_key(&k) {
                    MASK.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    let shown = parsed.to_string();
    // The parser adds a root path to `http://host:port`; show the URL as it was given.
    match shown.strip_suffix('/') {
        Some(trimmed) if !conn.ends_with('/') && parsed.path() == "/" => trimmed.to_string(),
        _ => shown,
    }
}

/// `host:port/…` of an address written without a scheme (`admin:pw@host:9901`), or `None` for text
/// that is not one word.
fn without_user_info(text: &str) -> Option<String> {
    if text.is_empty() || text.contains(char::is_whitespace) {
        return None;
    }
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), text),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(format!("{scheme}{host}{tail}"))
}

/// The secrets a URL or `key=value` connection string carries, as written.
fn secrets_of(conn: &str) -> Vec<String> {
    let mut out = Vec::new();
    let with_host = url::Url::parse(conn).ok().filter(url::Url::has_host);
    if let Some(parsed) = with_host {
        if let Some(password) = parsed.password() {
            out.push(password.to_string());
        }
        for (k, v) in parsed.query_pairs() {
            if is_secret_key(&k) {
                out.push(v.into_owned());
            }
        }
        // The raw (still encoded) query values too.
        for pair in parsed.query().unwrap_or_default().split('&') {
            if let Some((k, v)) = pair.split_once('=') {
                if is_secret_key(&percent_decode(k)) {
                    out.push(v.to_string());
                }
            }
        }
    } else if let Some(pairs) = keyword_pairs(conn) {
        out.extend(
            pairs
                .into_iter()
                .filter(|(k, _)| is_secret_key(k))
                .map(|(_, v)| v),
        );
    } else if let Some((user_info, _)) = conn.split_once('@') {
        // `user:password@host` without a scheme.
        let user_info = user_info.rsplit("://").next().unwrap_or(user_info);
        if let Some((_, password)) = user_info.split_once(':') {
            out.push(password.to_string());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Parses a libpq-style `key=value key='quoted \' value'` string; `None` if it is not one.
fn keyword_pairs(conn: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = conn.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Some(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if key.is_empty() || chars.next() != Some('=') {
            return None;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next()?);
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn quote_keyword_value(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// `%XX` sequences decoded (invalid ones kept as written).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A connection string or URL given on the command line: `Display` and `Debug` show it redacted
/// ([`url`]); the text itself is reached through `Deref` (to connect with it), never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(text: impl Into<String>) -> SecretUrl {
        let text = text.into();
        register(&text);
        SecretUrl(text)
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretUrl::new(s))
    }
}

impl std::ops::Deref for SecretUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&url(&self.0))
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", url(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_and_secret_parameters_are_masked() {
        let shown = url("postgres://app:s3cr%3Et@db.internal:5432/app?sslmode=require&password=Qu3ry&sslpassword=K3y&sslkey=/etc/k.pem");
        for secret in ["s3cr", "Qu3ry", "K3y"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.starts_with("postgres://app:***@db.internal:5432/app?"),
            "{shown}"
        );
        assert!(
            shown.contains("sslmode=require") && shown.contains("sslkey=%2Fetc%2Fk.pem"),
            "{shown}"
        );
        let http = url("http://admin:pw123@127.0.0.1:9901/?token=t0k");
        assert_eq!(http, "http://admin:***@127.0.0.1:9901/?token=***");
        // Given without a path, shown without one.
        assert_eq!(url("http://127.0.0.1:9901"), "http://127.0.0.1:9901");
        assert_eq!(url("https://u@envoy:9901"), "https://u@envoy:9901");
        assert_eq!(
            url("http://a:Pw9@h:9901?Token=T1&filter=x"),
            "http://a:***@h:9901/?Token=***&filter=x"
        );
    }

    #[test]
    fn an_address_without_a_scheme_is_shown_from_its_host() {
        assert_eq!(url("admin:Pw7@127.0.0.1:9901"), "127.0.0.1:9901");
        assert_eq!(url("127.0.0.1:9901/stats"), "127.0.0.1:9901/stats");
        assert!(!scrub("error near admin:Pw7@").contains("Pw7"));
    }

    #[test]
    fn keyword_strings_are_masked_and_garbage_is_not_shown() {
        let shown = url("host=db port=5432 password='it\\'s s3cret' dbname=app");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("host=db") && shown.contains("password=***"),
            "{shown}"
        );
        assert_eq!(url("not a url s3cret"), "<unparseable connection string>");
    }

    #[test]
    fn scrub_removes_registered_secrets_as_written_and_decoded() {
        register("postgres://u:Sc%21rub@h/db?password=Pw%20Two");
        let text = scrub("a Sc!rub b Sc%21rub c Pw Two d Pw%20Two");
        assert!(!text.contains("rub") && !text.contains("Two"), "{text}");
        let debug = format!("{:?}", SecretUrl::new("postgres://u:D3bug@h/db"));
        assert!(!debug.contains("D3bug"), "{debug}");
    }
}
