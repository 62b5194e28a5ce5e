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
//! serde_json checks them; UTF-8 is checked in each string holding a byte above ASCII, as the
//! grammar admits no such byte elsewhere; strings with escapes, and numbers other than plain
//! integers and decimal fractions whose digits fit in 53 bits, are read by serde_json itself), so
//! a body that is not JSON never gets a digest. It also gives up on what it cannot digest
//! canonically, an object with a member name twice (serde_json keeps the last value), and on a
//! document whose rules reach more states than [`super::rule_states`] interns; the structural
//! comparison decides then. It does not recurse: open containers are on one stack, bounded by
//! serde_json's recursion limit ([`MAX_DEPTH`] nested arrays or objects, the next is rejected),
//! and it never panics. Ignored subtrees are only checked for being JSON: neither hashed nor
//! followed by the rules. The rules are followed on one automaton for both bodies
//! ([`super::rule_states`]): after the first element of an array, a member costs a lookup.

use super::rule_states::{Child, RuleStates, StateId};
use super::{float_key, NumberKey};
#[cfg(test)]
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
#[cfg(test)]
pub(crate) fn digest(rules: &CompareConfig, body: &[u8]) -> Option<Digest> {
    digest_with(&mut RuleStates::new(rules), body)
}

/// [`digest`], with the rules' automaton of a comparison (one for both bodies).
pub(crate) fn digest_with(rules: &mut RuleStates<'_>, body: &[u8]) -> Option<Digest> {
    Pass {
        bytes: body,
        pos: 0,
        rules,
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
const INT64: u64 = 14;

/// Inside an ignored subtree: only checked for being JSON.
const SKIPPED: Child = Child {
    state: StateId::DEAD,
    ignored: true,
    unordered: false,
};

/// The tags' digests, computed once, at compile time.
struct Tags {
    int: Digest,
    int64: Digest,
    float: Digest,
    string: Digest,
    ignored_root: Digest,
    array: Digest,
    object: Digest,
    multiset: Digest,
    member: Digest,
    element: Digest,
    placeholder: Digest,
}

const TAGS: Tags = Tags {
    int: Digest::tag(INT),
    int64: Digest::tag(INT64),
    float: Digest::tag(FLOAT),
    string: Digest::tag(STRING),
    ignored_root: Digest::tag(IGNORED_ROOT),
    array: Digest::tag(ARRAY),
    object: Digest::tag(OBJECT),
    multiset: Digest::tag(MULTISET),
    member: Digest::tag(MEMBER),
    element: Digest::tag(ELEMENT),
    placeholder: Digest::tag(PLACEHOLDER),
};

/// The powers of ten an f64 holds exactly.
const POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The key of the string hash (foldhash).
const STRING_SEED: u64 = 0x243f_6a88_85a3_08d3;

/// MurmurHash3's 64-bit finaliser: a bijection that mixes every bit into every other.
#[inline(always)]
const fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl Digest {
    const ZERO: Digest = Digest(0);

    const fn tag(tag: u64) -> Self {
        Digest(fmix64(tag ^ 0xa409_3822_299f_31d0))
    }

    #[inline(always)]
    fn word(w: u64) -> Self {
        Digest(w)
    }

    /// Mixes `w` in, in order (a bijection of `self` for a given `w`).
    #[inline(always)]
    fn absorb(self, w: Digest) -> Self {
        Digest(fmix64(self.0 ^ w.0))
    }

    /// Adds `w` in, in no order.
    #[inline(always)]
    fn add(self, w: Digest) -> Self {
        Digest(self.0.wrapping_add(w.0))
    }

    /// A string by its (unescaped) UTF-8 bytes.
    #[inline(always)]
    fn string(s: &[u8]) -> Self {
        let mut hasher = foldhash::fast::FixedState::with_seed(STRING_SEED).build_hasher();
        hasher.write(s);
        Digest(hasher.finish())
    }

    fn number(key: NumberKey) -> Self {
        match key {
            // One word for what an i64 holds (nearly every integer), two beyond.
            NumberKey::Int(i) => match i64::try_from(i) {
                Ok(small) => TAGS.int64.absorb(Digest::word(small as u64)),
                Err(_) => TAGS
                    .int
                    .absorb(Digest::word(i as u64))
                    .absorb(Digest::word((i >> 64) as u64)),
            },
            NumberKey::Float(bits) => TAGS.float.absorb(Digest::word(bits)),
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
    state: StateId,
    /// Whether the member or element being read is ignored.
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
    /// One bit per member name seen in this object (6 bits of its digest): a name's bit set
    /// already is the only case where [`Pass::names`] is searched for it.
    names_seen: u64,
}

struct Pass<'t, 'r, 's> {
    bytes: &'t [u8],
    pos: usize,
    rules: &'s mut RuleStates<'r>,
    open: Vec<Open>,
    /// The digests of the member names of the objects open, to find a name given twice.
    names: Vec<u64>,
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

impl<'t> Pass<'t, '_, '_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// After whitespace, the next byte (not consumed), or 0 at the end: 0 starts no token, so
    /// the end is then rejected where a token must follow.
    #[inline(always)]
    fn next_byte(&mut self) -> u8 {
        match self.bytes.get(self.pos) {
            // Every byte above the space is no whitespace: one test in the common case.
            Some(&b) if b > b' ' => b,
            _ => self.next_byte_after_space(),
        }
    }

    #[inline(never)]
    fn next_byte_after_space(&mut self) -> u8 {
        loop {
            match self.bytes.get(self.pos) {
                Some(b' ' | b'\n' | b'\t' | b'\r') => self.pos += 1,
                Some(b) => return *b,
                None => return 0,
            }
        }
    }

    fn run(mut self) -> Option<Digest> {
        let root = self.rules.root()?;
        let value = match self.next_byte() {
            b @ (b'{' | b'[') => self.containers(b, root)?,
            b => self.scalar(b, root)?,
        };
        if self.next_byte() != 0 || self.pos != self.bytes.len() {
            return None;
        }
        Some(if root.ignored {
            TAGS.ignored_root
        } else {
            value
        })
    }

    /// At the scalar starting with `b`, where `at` tells: its digest.
    #[inline(always)]
    fn scalar(&mut self, b: u8, at: Child) -> Option<Digest> {
        Some(match b {
            b'"' => {
                let s = self.string()?;
                if at.ignored {
                    Digest::ZERO
                } else {
                    TAGS.string.absorb(Digest::string(&s))
                }
            }
            b't' => self.literal("true", TRUE)?,
            b'f' => self.literal("false", FALSE)?,
            b'n' => self.literal("null", NULL)?,
            _ => Digest::number(self.number()?),
        })
    }

    /// At the `{` or `[` (`b`) of a container at `at`: the container read to its end, its
    /// digest. The innermost open container is a local (`top`); those around it wait in
    /// [`Pass::open`].
    fn containers(&mut self, b: u8, at: Child) -> Option<Digest> {
        let mut top = self.opened(b, at);
        // Just opened: a child follows without a comma, or the end.
        let mut first = true;
        loop {
            let b = self.next_byte();
            if b == if top.object { b'}' } else { b']' } {
                self.pos += 1;
                let value = self.close(&top);
                top = match self.open.pop() {
                    Some(parent) => parent,
                    None => return value,
                };
                if !top.skip {
                    add_child(&mut top, value?);
                }
                first = false;
                continue;
            }
            if !first {
                if b != b',' {
                    return None;
                }
                self.pos += 1;
            }
            let at = if top.object {
                self.member(&mut top)?
            } else {
                self.element(&mut top)?
            };
            match self.next_byte() {
                b @ (b'{' | b'[') => {
                    if self.open.len() + 1 >= MAX_DEPTH {
                        return None;
                    }
                    let inner = self.opened(b, at);
                    self.open.push(std::mem::replace(&mut top, inner));
                    first = true;
                }
                b => {
                    let value = self.scalar(b, at)?;
                    if !top.skip {
                        add_child(&mut top, value);
                    }
                    first = false;
                }
            }
        }
    }

    /// At `{` or `[` (`b`), at `at`: the container opened.
    #[inline(always)]
    fn opened(&mut self, b: u8, at: Child) -> Open {
        self.pos += 1;
        let object = b == b'{';
        Open {
            object,
            skip: at.ignored,
            unordered: !object && at.unordered && !at.ignored,
            state: at.state,
            child_skip: true,
            name: Digest::ZERO,
            index: 0,
            placeholders: 0,
            count: 0,
            acc: if object { Digest::ZERO } else { TAGS.array },
            names_mark: self.names.len(),
            names_seen: 0,
        }
    }

    /// Reads a member's name and the colon; where the member's value is.
    #[inline(always)]
    fn member(&mut self, top: &mut Open) -> Option<Child> {
        if self.next_byte() != b'"' {
            return None;
        }
        let name = self.string()?;
        if self.next_byte() != b':' {
            return None;
        }
        self.pos += 1;
        if top.skip {
            top.child_skip = true;
            return Some(SKIPPED);
        }
        let digest = Digest::string(&name);
        let child = self.rules.member(top.state, &name, digest.0)?;
        top.child_skip = child.ignored;
        if !child.ignored {
            let bit = 1 << (digest.0 >> 58);
            if top.names_seen & bit != 0 && self.names.get(top.names_mark..)?.contains(&digest.0) {
                // A name given twice: serde_json keeps the last value; not digested.
                return None;
            }
            top.names_seen |= bit;
            top.name = digest;
            self.names.push(digest.0);
        }
        Some(child)
    }

    /// Where the next element is.
    #[inline(always)]
    fn element(&mut self, top: &mut Open) -> Option<Child> {
        let index = top.index;
        top.index = index.saturating_add(1);
        let child = if top.skip {
            SKIPPED
        } else {
            self.rules.element(top.state, index)?
        };
        top.child_skip = child.ignored;
        Some(child)
    }

    /// At the end of `top` (its closing bracket read): its digest.
    fn close(&mut self, top: &Open) -> Option<Digest> {
        if top.skip {
            return Some(Digest::ZERO);
        }
        let digest = if top.object {
            self.names.truncate(top.names_mark);
            TAGS.object
        } else if top.unordered {
            TAGS.multiset
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

    /// At `"`: the string's text (UTF-8 bytes), unescaped. Inlined into its two callers (a
    /// value and a member name): the call and its `Option<Cow>` return cost as much as a short
    /// string's scan (callgrind: 8 % of the pass's instructions).
    #[inline(always)]
    fn string(&mut self) -> Option<Cow<'t, [u8]>> {
        let start = self.pos + 1;
        let mut end = start;
        // Every byte scanned, or'ed: a high bit set means a byte outside ASCII (maybe one
        // just after the string, read with its last eight), and then the text is checked.
        let mut seen = 0;
        // Eight bytes at a time until one is `"`, `\` or a control character, then straight
        // to the first such byte (the lowest flagged byte of the mask is exact).
        while let Some(chunk) = self.bytes.get(end..end + 8) {
            let v = u64::from_le_bytes(chunk.try_into().ok()?);
            seen |= v;
            let mask = special(v);
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
                    let text = self.bytes.get(start..end)?;
                    // serde_json checks UTF-8 inside strings; outside them the grammar admits
                    // only ASCII, so these checks cover the whole body.
                    if seen & HIGHS != 0 {
                        std::str::from_utf8(text).ok()?;
                    }
                    return Some(Cow::Borrowed(text));
                }
                b'\\' => return self.escaped_string(),
                0..=0x1f => return None,
                b => {
                    seen |= u64::from(b);
                    end += 1;
                }
            }
        }
    }

    /// A string with escapes, read by serde_json (which checks them, and UTF-8).
    fn escaped_string(&mut self) -> Option<Cow<'t, [u8]>> {
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
        let quoted = self.bytes.get(start..=i)?;
        self.pos = i + 1;
        serde_json::from_slice::<String>(quoted)
            .ok()
            .map(|text| Cow::Owned(text.into_bytes()))
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
        // A decimal fraction with all its digits in `magnitude` (exactly, below 2^53), and
        // how many of them follow the point.
        let mut decimals = None;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let point = self.pos;
            let mut fraction = Some(magnitude).filter(|_| exact);
            while let Some(d @ b'0'..=b'9') = self.peek() {
                fraction = fraction
                    .and_then(|m| m.checked_mul(10))
                    .and_then(|m| m.checked_add(u64::from(d - b'0')));
                self.pos += 1;
            }
            if self.pos == point {
                return None;
            }
            decimals = fraction.map(|m| (m, self.pos - point));
            exact = false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            exact = false;
            decimals = None;
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
        // `m / 10^k` with `m` and `10^k` exact in an f64: one correctly rounded division,
        // exactly what serde_json computes for such a number (its significand as an f64 over
        // its table's power of ten), so its value, without the call.
        if let Some((m, k)) = decimals.filter(|(m, _)| *m <= 1 << 53) {
            if let Some(power) = POWERS_OF_TEN.get(k) {
                let f = m as f64 / power;
                return Some(float_key(if negative { -f } else { f }));
            }
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
#[inline(always)]
fn add_child(top: &mut Open, value: Digest) {
    if top.object {
        if !top.child_skip {
            top.acc = top.acc.add(TAGS.member.absorb(top.name).absorb(value));
            top.count += 1;
        }
    } else if top.child_skip {
        top.placeholders += 1;
    } else if top.unordered {
        top.acc = top.acc.add(TAGS.element.absorb(value));
        top.count += 1;
    } else {
        let placeholder = TAGS.placeholder;
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

    /// What the pass reads from `text`, a number alone.
    fn read_number(text: &str) -> Option<NumberKey> {
        let config = CompareConfig::plain();
        let mut rules = RuleStates::new(&config);
        let mut pass = Pass {
            bytes: text.as_bytes(),
            pos: 0,
            rules: &mut rules,
            open: Vec::new(),
            names: Vec::new(),
        };
        pass.number().filter(|_| pass.pos == text.len())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2048, failure_persistence: None, ..Default::default()
        })]

        /// Decimal fractions (read without serde_json when their digits fit in 53 bits and
        /// there are at most 22 after the point) get serde_json's value, whatever their size.
        #[test]
        fn decimals_are_read_as_serde_json_reads_them(
            int in proptest::prop_oneof![0u64..1000, 0u64..=(1 << 54), proptest::num::u64::ANY],
            fraction in "[0-9]{1,25}",
            negative in proptest::bool::ANY,
        ) {
            let text = format!("{}{int}.{fraction}", if negative { "-" } else { "" });
            let f: f64 = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(read_number(&text), Some(float_key(f)), "{}", text);
        }
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
