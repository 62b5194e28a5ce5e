//! The comparison's fast path: a canonical digest of a JSON body under the noise rules, computed
//! in one streaming pass with nothing built, so that two bodies the structural comparer would
//! find equal are found equal without parsing either into a document.
//!
//! The digest is 64 bits and canonical:
//! - an object's is the wrapping sum of its members' digests (each a mix of the member name and
//!   the value's digest), so member order does not count; members an `ignore` rule selects are
//!   left out, whichever side has them;
//! - an ordered array's is a sequential mix of its elements' digests; an element an `ignore`
//!   rule selects counts as a placeholder while an element follows it and not at all at the end
//!   (the structural walk compares elements by index and skips ignored ones);
//! - an array an `unordered` rule selects is a multiset: the wrapping sum of its elements'
//!   digests (ignored elements left out);
//! - numbers by value, with exactly the comparer's equality (`NumberKey`: integers exactly, also
//!   when written `1.0` or `1e0`; other values by their `f64` as serde_json reads them); strings
//!   by their unescaped text (foldhash); every kind of value and every combining step with its
//!   own tag, mixed with MurmurHash3's 64-bit finaliser.
//!
//! Equal digests mean equal documents but for a collision: two documents the comparer would
//! find different get the same digest with a probability of about 2^-64 (the mixers are keyed
//! with fixed constants, not secrets: documents crafted to collide could do better), and the
//! comparison then says "equal". Different digests say nothing about where: the structural
//! comparison runs then, to find and report the first difference.
//!
//! The tokenizer is hand-written: driving serde_json's parser with a seed would keep its cost,
//! which alone was about twice the comparison's budget (docs/benchmarks.md).
//!
//! The pass is strict: it accepts no text serde_json rejects (the structural comparer's parser:
//! the grammar, strings and their escapes, number ranges and the depth limit are checked as
//! serde_json checks them, and numbers other than plain integers and strings with escapes are
//! read by serde_json itself), so a body that is not JSON never gets a digest. It also gives up
//! on what it cannot digest canonically, an object with a member name twice (serde_json keeps
//! the last value), and the structural comparison decides then. It does not recurse: open
//! containers are on one stack, bounded by serde_json's recursion limit ([`MAX_DEPTH`] nested
//! arrays or objects, the next is rejected), and it never panics. Ignored subtrees are only
//! checked for being JSON: neither hashed nor followed by the rules.

use super::{float_key, Frame, NumberKey, RuleStack};
use crate::compare::path::Step;
use crate::config::CompareConfig;
use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};

/// Arrays and objects open at once at most: one fewer than serde_json's recursion limit (128),
/// which fails on the 128th.
pub(crate) const MAX_DEPTH: usize = 127;

/// A canonical digest of a JSON document under the noise rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digest(u64);

/// The digest of `body` under `rules`, or `None` when it is not JSON (as serde_json reads it)
/// or has a member name twice in one object.
pub(crate) fn digest(rules: &CompareConfig, body: &[u8]) -> Option<Digest> {
    // serde_json checks UTF-8 only inside strings, but a byte outside ASCII anywhere else is a
    // syntax error to it: checking the whole body at once rejects the same bodies.
    let text = std::str::from_utf8(body).ok()?;
    Pass {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        rules: RuleStack::new(rules),
        open: Vec::with_capacity(8),
        names: Vec::with_capacity(32),
    }
    .run()
}

// Tags: every kind of value and every combining step starts from its own.
const NULL: u64 = 1;
const TRUE: u64 = 2;
const FALSE: u64 = 3;
const INT: u64 = 4;
const FLOAT: u64 = 5;
const STRING: u64 = 6;
const OBJECT: u64 = 7;
const ARRAY: u64 = 8;
const MULTISET: u64 = 9;
const ELEMENT: u64 = 10;
const MEMBER: u64 = 11;
const PLACEHOLDER: u64 = 12;
const IGNORED_ROOT: u64 = 13;

/// The key of the string hash (foldhash).
const STRING_SEED: u64 = 0x243f_6a88_85a3_08d3;

/// MurmurHash3's 64-bit finaliser: a bijection that mixes every bit into every other.
fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl Digest {
    const ZERO: Digest = Digest(0);

    fn tag(tag: u64) -> Self {
        Digest(fmix64(tag ^ 0xa409_3822_299f_31d0))
    }

    fn word(w: u64) -> Self {
        Digest(w)
    }

    /// Mixes `w` in, in order (a bijection of `self` for a given `w`).
    fn absorb(self, w: Digest) -> Self {
        Digest(fmix64(self.0 ^ w.0))
    }

    /// Adds `w` in, in no order.
    fn add(self, w: Digest) -> Self {
        Digest(self.0.wrapping_add(w.0))
    }

    fn string(s: &str) -> Self {
        let mut hasher = foldhash::fast::FixedState::with_seed(STRING_SEED).build_hasher();
        hasher.write(s.as_bytes());
        Digest(hasher.finish())
    }

    fn number(key: NumberKey) -> Self {
        match key {
            NumberKey::Int(i) => Digest::tag(INT)
                .absorb(Digest::word(i as u64))
                .absorb(Digest::word((i >> 64) as u64)),
            NumberKey::Float(bits) => Digest::tag(FLOAT).absorb(Digest::word(bits)),
        }
    }
}

/// An array or object being read.
struct Open {
    object: bool,
    /// In an ignored subtree: only checked for being JSON.
    skip: bool,
    /// An `unordered` array.
    unordered: bool,
    /// The rules at this container.
    frame: Frame,
    /// The rules at the member or element being read, and whether it is ignored.
    child: Frame,
    child_skip: bool,
    /// The current member's name digest.
    name: Digest,
    /// The next element's index.
    index: usize,
    /// Ignored elements not yet followed by one that counts.
    placeholders: u64,
    /// Members, or elements and placeholders, that count.
    count: u64,
    acc: Digest,
    /// Where this object's member names start in [`Pass::names`].
    names_mark: usize,
}

struct Pass<'t, 'r> {
    text: &'t str,
    bytes: &'t [u8],
    pos: usize,
    rules: RuleStack<'r>,
    open: Vec<Open>,
    /// The lane-0 digests of the names of the objects open, to find a name given twice.
    names: Vec<u64>,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the 8 bytes in `v` is `"`, `\` or a control character (below 0x20): the
/// classic "has a zero byte" test on `v` xor each of them, and "has a byte below 0x20".
#[cfg(test)]
fn has_special(v: u64) -> bool {
    special(v) != 0
}

/// The high bits of the bytes in `v` (little-endian) that [`has_special`] looks for: the lowest
/// set bit is exactly the first such byte's (bits above it may be set falsely, by a borrow).
fn special(v: u64) -> u64 {
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x;
    (has_zero(v ^ (ONES * 0x22)) | has_zero(v ^ (ONES * 0x5c)) | (v.wrapping_sub(ONES * 0x20) & !v))
        & HIGHS
}

impl<'t> Pass<'t, '_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.pos += 1;
        }
    }

    /// After whitespace, `b` (consumed).
    fn expect(&mut self, b: u8) -> Option<()> {
        self.skip_space();
        (self.peek() == Some(b)).then(|| self.pos += 1)
    }

    fn run(mut self) -> Option<Digest> {
        let root = self.rules.root();
        let (mut frame, mut skip) = (root, root.ignored);
        loop {
            // A value: a scalar (then handed up), or a container opened (then its first child
            // read next, or, empty, handed up at once).
            self.skip_space();
            let mut value = match self.peek()? {
                b'{' | b'[' => match self.open(frame, skip)? {
                    Some((child, child_skip)) => {
                        (frame, skip) = (child, child_skip);
                        continue;
                    }
                    None => self.close()?,
                },
                b'"' => {
                    let s = self.string()?;
                    if skip {
                        Digest::ZERO
                    } else {
                        Digest::tag(STRING).absorb(Digest::string(&s))
                    }
                }
                b't' => self.literal("true", TRUE)?,
                b'f' => self.literal("false", FALSE)?,
                b'n' => self.literal("null", NULL)?,
                _ => Digest::number(self.number()?),
            };
            // Hand the value up, closing the containers it ends.
            loop {
                let Some(top) = self.open.last_mut() else {
                    self.skip_space();
                    if self.pos != self.bytes.len() {
                        return None;
                    }
                    return Some(if root.ignored {
                        Digest::tag(IGNORED_ROOT)
                    } else {
                        value
                    });
                };
                if !top.skip {
                    add_child(top, value);
                }
                let (parent, object, parent_skip) = (top.frame, top.object, top.skip);
                let child = top.child;
                self.rules.leave(child);
                self.skip_space();
                match self.peek()? {
                    b',' => {
                        self.pos += 1;
                        (frame, skip) = if object {
                            self.member(parent, parent_skip)?
                        } else {
                            self.element(parent, parent_skip)
                        };
                        break;
                    }
                    b'}' if object => value = self.close()?,
                    b']' if !object => value = self.close()?,
                    _ => return None,
                }
            }
        }
    }

    /// At `{` or `[`: opens the container and reads up to its first child, whose rules it
    /// gives; `None` inside when the container is empty (its closing bracket is next).
    fn open(&mut self, frame: Frame, skip: bool) -> Option<Option<(Frame, bool)>> {
        if self.open.len() >= MAX_DEPTH {
            return None;
        }
        let object = self.peek()? == b'{';
        self.pos += 1;
        let dead = self.rules.dead();
        self.open.push(Open {
            object,
            skip,
            unordered: !object && frame.unordered && !skip,
            frame,
            child: dead,
            child_skip: true,
            name: Digest::ZERO,
            index: 0,
            placeholders: 0,
            count: 0,
            acc: if object {
                Digest::ZERO
            } else {
                Digest::tag(ARRAY)
            },
            names_mark: self.names.len(),
        });
        self.skip_space();
        let closer = if object { b'}' } else { b']' };
        if self.peek()? == closer {
            return Some(None);
        }
        Some(Some(if object {
            self.member(frame, skip)?
        } else {
            self.element(frame, skip)
        }))
    }

    /// Reads a member's name and the colon; the member's rules.
    fn member(&mut self, parent: Frame, skip: bool) -> Option<(Frame, bool)> {
        self.skip_space();
        if self.peek()? != b'"' {
            return None;
        }
        let name = self.string()?;
        self.expect(b':')?;
        let mut child = (self.rules.dead(), true);
        if !skip {
            child = self.child(parent, Step::Key(&name));
            if !child.1 {
                let digest = Digest::string(&name);
                self.names.push(digest.0);
                if let Some(top) = self.open.last_mut() {
                    top.name = digest;
                }
            }
        }
        if let Some(top) = self.open.last_mut() {
            (top.child, top.child_skip) = child;
        }
        Some(child)
    }

    /// The rules at the value that follows, one `step` below `parent`, and whether it is
    /// ignored. Only a container needs the rules below it: for a scalar, whether an `ignore`
    /// rule selects it is all, and nothing is pushed.
    fn child(&mut self, parent: Frame, step: Step<'_>) -> (Frame, bool) {
        self.skip_space();
        if matches!(self.peek(), Some(b'{' | b'[')) {
            let frame = self.rules.enter(parent, step);
            if !frame.ignored {
                return (frame, false);
            }
            self.rules.leave(frame);
            (self.rules.dead(), true)
        } else {
            (self.rules.dead(), self.rules.ignores(parent, step))
        }
    }

    /// The rules of the next element.
    fn element(&mut self, parent: Frame, skip: bool) -> (Frame, bool) {
        let mut child = (self.rules.dead(), true);
        let index = self.open.last().map_or(0, |top| top.index);
        if !skip {
            child = self.child(parent, Step::Index(index));
        }
        if let Some(top) = self.open.last_mut() {
            top.index = index.saturating_add(1);
            (top.child, top.child_skip) = child;
        }
        child
    }

    /// At the closing bracket of the innermost container: its digest.
    fn close(&mut self) -> Option<Digest> {
        self.pos += 1;
        let top = self.open.pop()?;
        if top.skip {
            return Some(Digest::ZERO);
        }
        let digest = if top.object {
            let names = self.names.get_mut(top.names_mark..).unwrap_or_default();
            names.sort_unstable();
            if names.windows(2).any(|w| w.first() == w.get(1)) {
                // A name given twice: serde_json keeps the last value; not digested.
                return None;
            }
            self.names.truncate(top.names_mark);
            Digest::tag(OBJECT)
        } else if top.unordered {
            Digest::tag(MULTISET)
        } else {
            // An ordered array's elements are already mixed in, in order.
            return Some(top.acc.absorb(Digest::word(top.count)));
        };
        Some(digest.absorb(top.acc).absorb(Digest::word(top.count)))
    }

    fn literal(&mut self, word: &str, tag: u64) -> Option<Digest> {
        let end = self.pos.checked_add(word.len())?;
        (self.bytes.get(self.pos..end)? == word.as_bytes()).then(|| {
            self.pos = end;
            Digest::tag(tag)
        })
    }

    /// At `"`: the string's text, unescaped. Inlined into its two callers (a value and a
    /// member name): the call and its `Option<Cow>` return cost as much as a short string's
    /// scan (callgrind: 8 % of the pass's instructions).
    #[inline(always)]
    fn string(&mut self) -> Option<Cow<'t, str>> {
        let start = self.pos + 1;
        let mut end = start;
        // Eight bytes at a time until one is `"`, `\` or a control character, then straight
        // to the first such byte (the lowest flagged byte of the mask is exact).
        while let Some(chunk) = self.bytes.get(end..end + 8) {
            let mask = special(u64::from_le_bytes(chunk.try_into().ok()?));
            if mask != 0 {
                end += (mask.trailing_zeros() / 8) as usize;
                break;
            }
            end += 8;
        }
        loop {
            match *self.bytes.get(end)? {
                b'"' => {
                    self.pos = end + 1;
                    return self.text.get(start..end).map(Cow::Borrowed);
                }
                b'\\' => return self.escaped_string(),
                0..=0x1f => return None,
                _ => end += 1,
            }
        }
    }

    /// A string with escapes, read by serde_json (which checks them).
    fn escaped_string(&mut self) -> Option<Cow<'t, str>> {
        let start = self.pos;
        let mut i = start + 1;
        loop {
            match *self.bytes.get(i)? {
                b'"' => break,
                b'\\' => i += 2,
                b if b < 0x20 => return None,
                _ => i += 1,
            }
        }
        let quoted = self.text.get(start..=i)?;
        self.pos = i + 1;
        serde_json::from_slice::<String>(quoted.as_bytes())
            .ok()
            .map(Cow::Owned)
    }

    /// A number's value, as the comparer sees it.
    fn number(&mut self) -> Option<NumberKey> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let mut magnitude: u64 = 0;
        let mut exact = true;
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    match magnitude
                        .checked_mul(10)
                        .and_then(|m| m.checked_add(u64::from(d - b'0')))
                    {
                        Some(m) => magnitude = m,
                        None => exact = false,
                    }
                    self.pos += 1;
                }
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            exact = false;
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            exact = false;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digits()?;
        }
        // A digit right after a leading zero is not JSON.
        if self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return None;
        }
        match (exact, negative) {
            (true, false) => return Some(NumberKey::Int(i128::from(magnitude))),
            // serde_json reads negative integers down to i64::MIN as integers.
            (true, true) if magnitude <= 1 << 63 => {
                return Some(NumberKey::Int(-i128::from(magnitude)))
            }
            _ => {}
        }
        // Everything else as serde_json reads it in a document: an f64 (or out of range).
        let f: f64 = serde_json::from_slice(self.bytes.get(start..self.pos)?).ok()?;
        f.is_finite().then(|| float_key(f))
    }

    /// One or more digits.
    fn digits(&mut self) -> Option<()> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        (self.pos > start).then_some(())
    }
}

/// Adds a finished child's digest to its container.
fn add_child(top: &mut Open, value: Digest) {
    if top.object {
        if !top.child_skip {
            top.acc = top
                .acc
                .add(Digest::tag(MEMBER).absorb(top.name).absorb(value));
            top.count += 1;
        }
    } else if top.child_skip {
        top.placeholders += 1;
    } else if top.unordered {
        top.acc = top.acc.add(Digest::tag(ELEMENT).absorb(value));
        top.count += 1;
    } else {
        let placeholder = Digest::tag(PLACEHOLDER);
        for _ in 0..top.placeholders {
            top.acc = top.acc.absorb(placeholder);
        }
        top.count += top.placeholders + 1;
        top.placeholders = 0;
        top.acc = top.acc.absorb(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn plain(text: &str) -> Option<Digest> {
        digest(&CompareConfig::plain(), text.as_bytes())
    }

    fn same(a: &str, b: &str) -> bool {
        let (x, y) = (plain(a), plain(b));
        assert!(x.is_some() && y.is_some(), "{a} / {b}");
        x == y
    }

    #[test]
    fn what_serde_json_rejects_gets_no_digest() {
        for text in [
            "",
            " ",
            "[1,]",
            r#"{"a":1,}"#,
            "[1 2]",
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            "{1:1}",
            "[01]",
            "[-01]",
            "[-]",
            "[1.]",
            "[.5]",
            "[1e]",
            "[1e+]",
            "[+1]",
            "[1e400]",
            "[-1e400]",
            &format!("[1{}]", "0".repeat(400)),
            "[0x10]",
            "[NaN]",
            "[Infinity]",
            "[tru]",
            "[nul]",
            "[True]",
            "\"a\tb\"",
            "\"a\u{1}b\"",
            r#""\x""#,
            r#""\u12""#,
            r#""\ud800""#,
            r#""\udc00\ud800""#,
            "\"abc",
            "\"abc\\\"",
            "[1] x",
            "[1]]",
            "[1}",
            r#"{"a":1]"#,
            "{",
            "[",
            "\u{feff}[1]",
            "[1]\u{0}",
            "[\u{a0}1]",
            "[1,\u{b}2]",
        ] {
            assert!(
                serde_json::from_str::<Value>(text).is_err(),
                "serde_json takes {text:?}"
            );
            assert_eq!(plain(text), None, "{text:?}");
        }
        // Not UTF-8 inside a string, and outside one.
        for bytes in [&b"\"\xff\""[..], b"[\"a\xc3\"]", b"[1,\xe9]"] {
            assert!(serde_json::from_slice::<Value>(bytes).is_err());
            assert_eq!(digest(&CompareConfig::plain(), bytes), None);
        }
    }

    #[test]
    fn what_serde_json_takes_gets_a_digest() {
        for text in [
            "0",
            "-0",
            " \t\n\r[ ] ",
            "{}",
            r#"{"":""}"#,
            r#"[1,-1,0.5,-0.0e-0,1E+2,1e-400,123456789012345678901234567890]"#,
            r#"["\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00", "é€😀"]"#,
            r#"{"a":{"b":[true,false,null,{"c":[]}]}}"#,
            "\"a string of more than eight bytes, with a \\\" quote late\"",
        ] {
            assert!(serde_json::from_str::<Value>(text).is_ok(), "{text:?}");
            assert!(plain(text).is_some(), "{text:?}");
        }
    }

    #[test]
    fn the_eight_byte_scan_finds_every_byte_a_string_stops_at() {
        for background in [b'a', b' ', b'!', b'#', 0x5b, 0x5d, 0x80, 0xc3, 0xff] {
            assert!(!has_special(u64::from_le_bytes([background; 8])));
            for at in 0..8 {
                for b in 0..=255u8 {
                    let mut chunk = [background; 8];
                    chunk[at] = b;
                    let stops = matches!(b, b'"' | b'\\' | 0..=0x1f);
                    assert_eq!(
                        has_special(u64::from_le_bytes(chunk)),
                        stops,
                        "{b:#x} at {at} in {background:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_eight_byte_scan_points_at_the_first_byte_a_string_stops_at() {
        let stops = |b: u8| matches!(b, b'"' | b'\\' | 0..=0x1f);
        // Every pair of bytes at every pair of places, over a background that does not stop.
        let interesting = [
            b'a', b'"', b'\\', 0, 0x1f, 0x20, 0x21, 0x5b, 0x5d, 0x80, 0xff,
        ];
        for (x, y) in interesting
            .iter()
            .flat_map(|x| interesting.iter().map(move |y| (*x, *y)))
        {
            for i in 0..8 {
                for j in 0..8 {
                    let mut chunk = [b'a'; 8];
                    chunk[i] = x;
                    chunk[j] = y;
                    let first = chunk.iter().position(|b| stops(*b)).map_or(8, |p| p * 8);
                    let mask = special(u64::from_le_bytes(chunk));
                    let found = if mask == 0 {
                        8
                    } else {
                        mask.trailing_zeros() as usize / 8 * 8
                    };
                    assert_eq!(found, first, "{chunk:?}");
                }
            }
        }
    }

    #[test]
    fn depth_is_bounded_as_serde_json_bounds_it() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(serde_json::from_str::<Value>(&nested(MAX_DEPTH)).is_ok());
        assert!(plain(&nested(MAX_DEPTH)).is_some());
        assert!(serde_json::from_str::<Value>(&nested(MAX_DEPTH + 1)).is_err());
        assert_eq!(plain(&nested(MAX_DEPTH + 1)), None);
        let objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
        assert_eq!(plain(&objects), None);
        assert_eq!(plain(&nested(10_000)), None);
    }

    #[test]
    fn numbers_are_digested_by_value() {
        assert!(same("[1,-1,0,100]", "[1.0,-1e0,-0.0,1E2]"));
        assert!(same("[0]", "[-0]"));
        assert!(same("[0.1]", "[0.10]"));
        assert!(same("[1e300]", "[1E+300]"));
        assert!(same("[-9223372036854775808]", "[-9223372036854775808.0]"));
        assert!(same("[18446744073709551615]", "[18446744073709551615]"));
        // Beyond u64: f64s to serde_json.
        assert!(same(
            "[123456789012345678901234567890]",
            "[123456789012345678901234567891]"
        ));
        assert!(!same("[1.5]", "[1.50000001]"));
        assert!(!same("[9007199254740993]", "[9007199254740992]"));
        assert!(!same("[18446744073709551615]", "[18446744073709551614]"));
        assert!(!same("[-9223372036854775808]", "[-9223372036854775807]"));
        assert!(!same("[1]", "[\"1\"]"));
        assert!(!same("[1e300]", "[1e301]"));
    }

    #[test]
    fn strings_are_digested_by_their_text() {
        assert!(same(r#"["é","a\"b"]"#, r#"["\u00e9","a\u0022b"]"#));
        assert!(same(r#"{"é":1}"#, r#"{"\u00e9":1}"#));
        assert!(!same(r#"["a"]"#, r#"["b"]"#));
        assert!(!same(r#"["ab"]"#, r#"["a","b"]"#));
        assert!(!same(r#"{"a":"b"}"#, r#"{"b":"a"}"#));
        assert!(!same(
            r#"["a long string of bytes 1"]"#,
            r#"["a long string of bytes 2"]"#
        ));
    }

    #[test]
    fn kinds_and_shapes_are_told_apart() {
        for (a, b) in [
            ("[]", "{}"),
            ("null", "false"),
            ("true", "false"),
            ("[null]", "[]"),
            ("[[]]", "[[],[]]"),
            ("[[1],[2]]", "[[1,2]]"),
            ("[1,2]", "[2,1]"),
            (r#"{"a":{}}"#, r#"{"a":[]}"#),
            (r#"{"a":1,"b":2}"#, r#"{"a":2,"b":1}"#),
            (r#"{"a":{"b":1}}"#, r#"{"a":{},"b":1}"#),
            ("[1,1,2]", "[1,2,2]"),
        ] {
            assert!(!same(a, b), "{a} / {b}");
        }
        assert!(same(
            r#"{"a":1,"b":[2,{"c":3}]}"#,
            r#"{"b":[2,{"c":3}],"a":1}"#
        ));
    }

    #[test]
    fn a_member_name_given_twice_gets_no_digest() {
        assert_eq!(plain(r#"{"a":1,"a":2}"#), None);
        assert_eq!(plain(r#"{"a":1,"\u0061":2}"#), None);
        // The same name in nested objects is no repeat.
        assert!(plain(r#"[{"x":{"a":1,"b":{"a":2}},"a":3}]"#).is_some());
    }
}
