//! JSON paths for the comparison's noise rules (`$.updated_at`, `$.items[*].id`, `$..etag`).
//!
//! The subset understood, parsed once in `on_configure`:
//!
//! | syntax | selects |
//! |---|---|
//! | `$` | the document (must come first) |
//! | `.name`, `['name']`, `["name"]` | the object member `name` |
//! | `[3]` | the array element at index 3 |
//! | `.*`, `[*]` | every member or element (the same wildcard, as in RFC 9535) |
//! | `..name`, `..*`, `..[3]`, `..['name']` | the same, at any depth below |
//!
//! Matching runs as the comparer walks both documents: every path is a small automaton whose
//! live states fit in one `u64` (hence [`MAX_SEGMENTS`]), so following a path one level down
//! costs a few bit operations and no allocation.

use std::fmt;

/// Most segments a path may have (its automaton's states are the bits of a `u64`).
pub const MAX_SEGMENTS: usize = 32;
/// Longest path text accepted.
pub const MAX_PATH_LEN: usize = 512;

/// One step of a location inside a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    Key(String),
    Index(usize),
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    /// `..`: the selector may match at any depth below the previous segment.
    descendant: bool,
    selector: Selector,
}

/// A parsed JSON path; [`JsonPath::as_str`] gives the text it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    /// The automaton as bit masks over the segments: bit `p` for segment `p`.
    descendants: States,
    wildcards: States,
    /// The segments that select one member name or one index.
    names: Vec<(u32, String)>,
    indexes: Vec<(u32, usize)>,
    /// The state reached once every segment has matched.
    end: States,
}

/// Live automaton states of one path at one location: bit `p` set = the first `p` segments
/// have matched. The document root is [`JsonPath::START`].
pub type States = u64;

impl JsonPath {
    /// The states at the document root.
    pub const START: States = 1;

    pub fn parse(text: &str) -> Result<Self, PathError> {
        Parser::new(text).parse()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The states one level below, following `step`: a `..` segment stays live, a segment
    /// whose selector selects `step` advances.
    pub fn step(&self, states: States, step: Step<'_>) -> States {
        let mut advancing = states & self.wildcards;
        match step {
            Step::Key(key) => {
                for (p, name) in &self.names {
                    if states & (1 << p) != 0 && name == key {
                        advancing |= 1 << p;
                    }
                }
            }
            Step::Index(index) => {
                for (p, i) in &self.indexes {
                    if states & (1 << p) != 0 && *i == index {
                        advancing |= 1 << p;
                    }
                }
            }
        }
        (states & self.descendants) | (advancing << 1)
    }

    /// Whether the location these states belong to is selected by the path.
    pub fn selects(&self, states: States) -> bool {
        states & self.end != 0
    }

    /// Whether a live state's next segment selects one array index (`[3]`): then the step to
    /// an element depends on its index.
    pub fn selects_an_index(&self, states: States) -> bool {
        self.indexes.iter().any(|(p, _)| states & (1 << p) != 0)
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a path was rejected, with the byte offset in the path text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

/// Characters of an unquoted member name: anything printable but the path's own syntax.
fn is_name_byte(b: u8) -> bool {
    !matches!(b, b'.' | b'[' | b']' | b'*' | b'\'' | b'"' | b'\\') && (b > b' ') && b != 0x7f
}

/// Appends `s` with `quote` and backslashes escaped by a backslash, as quoted names are read.
pub(crate) fn push_escaped(s: &str, quote: char, out: &mut String) {
    for c in s.chars() {
        if c == quote || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A location as a path that [`JsonPath::parse`] accepts and that selects exactly it:
/// `$.items[2]['odd key']`.
pub fn render_path(steps: &[Step<'_>]) -> String {
    let mut path = String::from("$");
    for step in steps {
        match step {
            Step::Index(i) => {
                path.push('[');
                path.push_str(&i.to_string());
                path.push(']');
            }
            Step::Key(key) if !key.is_empty() && key.bytes().all(is_name_byte) => {
                path.push('.');
                path.push_str(key);
            }
            Step::Key(key) => {
                path.push_str("['");
                push_escaped(key, '\'', &mut path);
                path.push_str("']");
            }
        }
    }
    path
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, PathError> {
        Err(PathError {
            offset: self.pos,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn parse(mut self) -> Result<JsonPath, PathError> {
        if self.text.len() > MAX_PATH_LEN {
            return self.error(format!("longer than {MAX_PATH_LEN} bytes"));
        }
        if !self.eat(b'$') {
            return self.error("must start with '$'");
        }
        let mut segments = Vec::new();
        while self.peek().is_some() {
            if segments.len() == MAX_SEGMENTS {
                return self.error(format!("more than {MAX_SEGMENTS} segments"));
            }
            segments.push(self.segment()?);
        }
        let mut path = JsonPath {
            text: self.text.to_string(),
            descendants: 0,
            wildcards: 0,
            names: Vec::new(),
            indexes: Vec::new(),
            end: 1 << segments.len(),
        };
        // At most MAX_SEGMENTS (32) segments: every bit fits.
        for (p, segment) in (0u32..).zip(segments) {
            if segment.descendant {
                path.descendants |= 1 << p;
            }
            match segment.selector {
                Selector::Any => path.wildcards |= 1 << p,
                Selector::Key(name) => path.names.push((p, name)),
                Selector::Index(i) => path.indexes.push((p, i)),
            }
        }
        Ok(path)
    }

    fn segment(&mut self) -> Result<Segment, PathError> {
        if self.eat(b'[') {
            return Ok(Segment {
                descendant: false,
                selector: self.bracket()?,
            });
        }
        if !self.eat(b'.') {
            return self.error("expected '.' or '['");
        }
        let descendant = self.eat(b'.');
        let selector = if descendant && self.eat(b'[') {
            self.bracket()?
        } else if self.eat(b'*') {
            Selector::Any
        } else {
            self.name()?
        };
        Ok(Segment {
            descendant,
            selector,
        })
    }

    fn name(&mut self) -> Result<Selector, PathError> {
        let start = self.pos;
        while self.peek().is_some_and(is_name_byte) {
            self.pos += 1;
        }
        match self.text.get(start..self.pos) {
            Some(name) if !name.is_empty() => Ok(Selector::Key(name.to_string())),
            _ => self.error(
                "expected a member name, '*' or '[' (quote names with other characters: ['a b'])",
            ),
        }
    }

    /// After `[`: `*`, an index, or a quoted name, then `]`.
    fn bracket(&mut self) -> Result<Selector, PathError> {
        let selector = match self.peek() {
            Some(b'*') => {
                self.pos += 1;
                Selector::Any
            }
            Some(b'0'..=b'9') => {
                let start = self.pos;
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.pos += 1;
                }
                let digits = self.text.get(start..self.pos).unwrap_or_default();
                match digits.parse::<usize>() {
                    Ok(i) => Selector::Index(i),
                    Err(_) => {
                        self.pos = start;
                        return self.error(format!("index {digits} is too large"));
                    }
                }
            }
            Some(quote @ (b'\'' | b'"')) => {
                self.pos += 1;
                Selector::Key(self.quoted(quote)?)
            }
            Some(b'-') => return self.error("negative indexes are not supported"),
            _ => return self.error("expected '*', an index or a quoted name after '['"),
        };
        if !self.eat(b']') {
            return self.error("expected ']'");
        }
        Ok(selector)
    }

    /// A quoted name; `\` escapes the next character.
    fn quoted(&mut self, quote: u8) -> Result<String, PathError> {
        let mut name = String::new();
        let rest = self.text.get(self.pos..).unwrap_or_default();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            if c as u32 == u32::from(quote) {
                self.pos += i + 1;
                return Ok(name);
            }
            if c == '\\' {
                match chars.next() {
                    Some((_, escaped)) => name.push(escaped),
                    None => break,
                }
            } else {
                name.push(c);
            }
        }
        self.pos = self.bytes.len();
        self.error("unterminated quoted name")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states_at(path: &JsonPath, steps: &[Step<'_>]) -> States {
        steps
            .iter()
            .fold(JsonPath::START, |states, step| path.step(states, *step))
    }

    fn selects(path: &str, steps: &[Step<'_>]) -> bool {
        let path = JsonPath::parse(path).unwrap();
        path.selects(states_at(&path, steps))
    }

    use Step::{Index as I, Key as K};

    #[test]
    fn member_index_and_wildcard_paths() {
        assert!(selects("$", &[]));
        assert!(!selects("$", &[K("a")]));
        assert!(selects("$.updated_at", &[K("updated_at")]));
        assert!(!selects("$.updated_at", &[K("created_at")]));
        assert!(!selects("$.updated_at", &[]));
        assert!(!selects("$.updated_at", &[K("x"), K("updated_at")]));
        assert!(selects("$.items[*].id", &[K("items"), I(0), K("id")]));
        assert!(selects("$.items[*].id", &[K("items"), I(41), K("id")]));
        // As in RFC 9535, `[*]` and `.*` are the same wildcard: members and elements.
        assert!(selects("$.items[*].id", &[K("items"), K("a"), K("id")]));
        assert!(!selects("$.items[*].id", &[K("items"), K("id")]));
        assert!(selects("$.items.*.id", &[K("items"), K("a"), K("id")]));
        assert!(selects("$.items.*.id", &[K("items"), I(2), K("id")]));
        assert!(selects("$.items[2]", &[K("items"), I(2)]));
        assert!(!selects("$.items[2]", &[K("items"), I(3)]));
        assert!(selects("$['a b'][\"c.d\"]", &[K("a b"), K("c.d")]));
        assert!(selects(r"$['it\'s']", &[K("it's")]));
        assert!(selects("$.größe", &[K("größe")]));
        assert!(selects("$[0]", &[I(0)]));
    }

    #[test]
    fn descendant_paths_match_at_any_depth() {
        for steps in [
            &[K("etag")][..],
            &[K("a"), K("etag")],
            &[K("a"), I(3), K("b"), K("etag")],
        ] {
            assert!(selects("$..etag", steps), "{steps:?}");
        }
        assert!(!selects("$..etag", &[K("etag"), K("x")]));
        assert!(!selects("$..etag", &[]));
        assert!(selects("$.a..id", &[K("a"), K("b"), K("id")]));
        assert!(!selects("$.a..id", &[K("b"), K("b"), K("id")]));
        assert!(!selects("$.a..id", &[K("a")]));
        assert!(selects("$..[0]", &[K("x"), I(0)]));
        assert!(selects("$..['e t']", &[K("x"), K("e t")]));
        assert!(selects("$..*", &[K("x"), I(1)]));
        // The member itself repeated on the way down.
        assert!(selects("$..a.b", &[K("a"), K("a"), K("b")]));
        assert!(!selects("$..a.b", &[K("a"), K("c"), K("b")]));
    }

    #[test]
    fn a_dead_path_stays_dead() {
        let path = JsonPath::parse("$.a.b").unwrap();
        assert_eq!(states_at(&path, &[K("x")]), 0);
        assert_eq!(path.step(0, K("a")), 0);
    }

    #[test]
    fn bad_paths_are_rejected_with_the_offset() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "must start with '$'"),
            ("updated_at", 0, "must start with '$'"),
            ("$updated_at", 1, "expected '.' or '['"),
            ("$.", 2, "expected a member name"),
            ("$.a.", 4, "expected a member name"),
            ("$.a b", 3, "expected '.' or '['"),
            ("$[", 2, "expected '*', an index or a quoted name"),
            ("$[1", 3, "expected ']'"),
            ("$[-1]", 2, "negative indexes"),
            ("$[99999999999999999999999]", 2, "too large"),
            ("$['a", 4, "unterminated quoted name"),
            ("$['a\\", 5, "unterminated quoted name"),
            ("$...a", 3, "expected a member name"),
            ("$.a]", 3, "expected '.' or '['"),
        ];
        for (text, offset, message) in cases {
            let err = JsonPath::parse(text).unwrap_err();
            assert_eq!(err.offset, *offset, "{text}: {err}");
            assert!(err.message.contains(message), "{text}: {err}");
        }
        let long = format!("${}", ".a".repeat(MAX_SEGMENTS + 1));
        assert!(JsonPath::parse(&long)
            .unwrap_err()
            .message
            .contains("more than 32 segments"));
        assert!(JsonPath::parse(&format!("${}", ".a".repeat(MAX_SEGMENTS))).is_ok());
        let huge = format!("$.{}", "a".repeat(MAX_PATH_LEN));
        assert!(JsonPath::parse(&huge)
            .unwrap_err()
            .message
            .contains("longer than"));
    }

    #[test]
    fn the_deepest_path_stays_within_its_states() {
        let path = JsonPath::parse(&format!("${}", "..a".repeat(MAX_SEGMENTS))).unwrap();
        let steps = vec![K("a"); MAX_SEGMENTS];
        assert!(path.selects(states_at(&path, &steps)));
    }

    #[test]
    fn display_is_the_text() {
        assert_eq!(
            JsonPath::parse("$.items[*].id").unwrap().to_string(),
            "$.items[*].id"
        );
    }
}
