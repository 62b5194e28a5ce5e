//! A header map as Envoy hands it over in one host call (`proxy_get_header_map_pairs`), parsed
//! in place: the pairs are borrowed from the buffer, never copied.
//!
//! The proxy-wasm ABI's serialisation: the number of pairs `n` (u32, little endian), then `n`
//! times the name's and the value's length (u32 each), then each name and each value followed
//! by a NUL byte, in order. One read of the whole map costs about as much as one read of a single
//! present header (docs/benchmarks.md), so the filter reads the map once and looks up what it
//! needs here. A malformed buffer is never trusted: the pairs end where it stops making sense.

use crate::routing::RequestHeaders;

const U32: usize = 4;

/// The pairs of a serialised header map, borrowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderPairs<'b> {
    /// The (name length, value length) table.
    sizes: &'b [u8],
    /// The NUL-terminated names and values.
    data: &'b [u8],
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let word: [u8; U32] = bytes.get(at..at.checked_add(U32)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

impl<'b> HeaderPairs<'b> {
    /// Splits `buffer`; one whose pair table does not fit has no pairs.
    pub fn parse(buffer: &'b [u8]) -> Self {
        let split = u32_at(buffer, 0)
            .and_then(|n| n.checked_mul(2 * U32))
            .and_then(|table| table.checked_add(U32))
            .and_then(|end| Some((buffer.get(U32..end)?, buffer.get(end..)?)));
        match split {
            Some((sizes, data)) => Self { sizes, data },
            None => Self::default(),
        }
    }

    /// Every (name, value) in order, up to the first pair the buffer does not hold.
    pub fn iter(&self) -> impl Iterator<Item = (&'b [u8], &'b [u8])> + 'b {
        let (sizes, data) = (self.sizes, self.data);
        let mut at = 0usize;
        sizes.chunks_exact(2 * U32).map_while(move |lengths| {
            let mut take = |len: usize| {
                let end = at.checked_add(len)?;
                let item = data.get(at..end)?;
                // Each name and value ends with a NUL.
                (data.get(end) == Some(&0)).then_some(())?;
                at = end.checked_add(1)?;
                Some(item)
            };
            let name = take(u32_at(lengths, 0)?)?;
            let value = take(u32_at(lengths, U32)?)?;
            Some((name, value))
        })
    }

    /// Whether header `name` (any case) is present.
    pub fn contains(&self, name: &str) -> bool {
        self.first(name).is_some()
    }

    /// Every pair as owned text and bytes (for a shadow request); a name that is not UTF-8
    /// (Envoy's names are tokens) is dropped.
    pub fn to_owned_pairs(&self) -> Vec<(String, Vec<u8>)> {
        self.iter()
            .filter_map(|(name, value)| {
                let name = std::str::from_utf8(name).ok()?;
                Some((name.to_string(), value.to_vec()))
            })
            .collect()
    }

    /// Every pair whose name is UTF-8, borrowed as text.
    pub fn text_pairs(&self) -> impl Iterator<Item = (&'b str, &'b [u8])> + 'b {
        self.iter()
            .filter_map(|(name, value)| Some((std::str::from_utf8(name).ok()?, value)))
    }
}

impl RequestHeaders for HeaderPairs<'_> {
    fn first<'a>(&'a self, name: &str) -> Option<&'a [u8]> {
        self.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }
}

/// Serialises `pairs` as the ABI does (what Envoy writes; the tests' and the harness's maps).
pub fn serialize<'p>(pairs: impl IntoIterator<Item = (&'p [u8], &'p [u8])>) -> Vec<u8> {
    let pairs: Vec<_> = pairs.into_iter().collect();
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = len(pairs.len()).to_vec();
    for (name, value) in &pairs {
        out.extend_from_slice(&len(name.len()));
        out.extend_from_slice(&len(value.len()));
    }
    for (name, value) in &pairs {
        for part in [name, value] {
            out.extend_from_slice(part);
            out.push(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Vec<u8> {
        serialize(pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    #[test]
    fn pairs_are_borrowed_in_order_and_looked_up_in_any_case() {
        let buffer = map(&[
            (":path", "/api/chat"),
            ("cookie", "a=1"),
            ("x-empty", ""),
            ("Cookie", "b=2"),
        ]);
        let h = HeaderPairs::parse(&buffer);
        let all: Vec<_> = h.iter().collect();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0], (&b":path"[..], &b"/api/chat"[..]));
        assert_eq!(h.first(":PATH"), Some(&b"/api/chat"[..]));
        assert_eq!(h.first("x-empty"), Some(&b""[..]));
        assert!(h.contains("x-empty") && !h.contains("x-cutover-shadow"));
        let cookies: Vec<_> = h.values("cookie").collect();
        assert_eq!(cookies, [&b"a=1"[..], &b"b=2"[..]]);
        assert_eq!(
            h.to_owned_pairs()[3],
            ("Cookie".to_string(), b"b=2".to_vec())
        );
        assert_eq!(h.text_pairs().count(), 4);
    }

    #[test]
    fn values_may_hold_any_byte_but_nul_ends_them() {
        let buffer = serialize([(&b"x-v"[..], &[0x80, 0xff, b' '][..])]);
        let h = HeaderPairs::parse(&buffer);
        assert_eq!(h.first("x-v"), Some(&[0x80, 0xff, b' '][..]));
    }

    #[test]
    fn an_empty_map_and_an_empty_buffer_have_no_pairs() {
        assert_eq!(HeaderPairs::parse(&map(&[])).iter().count(), 0);
        assert_eq!(HeaderPairs::parse(&[]).iter().count(), 0);
        assert_eq!(HeaderPairs::parse(&[1, 0]).iter().count(), 0);
    }

    #[test]
    fn a_malformed_buffer_never_panics_and_keeps_only_the_pairs_it_holds() {
        let good = map(&[("a", "1"), ("b", "22"), ("c", "333")]);
        // Every truncation, and every single byte changed to each of a few values.
        for end in 0..good.len() {
            let h = HeaderPairs::parse(&good[..end]);
            let n = h.iter().count();
            assert!(n <= 3);
            if n > 0 {
                assert_eq!(h.first("a"), Some(&b"1"[..]));
            }
        }
        for at in 0..good.len() {
            for byte in [0u8, 1, 7, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[at] = byte;
                let h = HeaderPairs::parse(&bad);
                let _ = (h.iter().count(), h.first("b"), h.to_owned_pairs());
            }
        }
        // A count that does not fit the buffer, or overflows the table size.
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(HeaderPairs::parse(&huge).iter().count(), 0);
        // A length that runs past the data, or a missing NUL: the pairs stop there.
        let mut long = good.clone();
        long[4 + 8..4 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let h = HeaderPairs::parse(&long);
        assert_eq!(h.iter().collect::<Vec<_>>(), [(&b"a"[..], &b"1"[..])]);
        let mut no_nul = good.clone();
        let nul = 4 + 3 * 8 + 1;
        no_nul[nul] = b'x';
        assert_eq!(HeaderPairs::parse(&no_nul).iter().count(), 0);
    }
}
