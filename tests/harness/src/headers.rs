//! Header maps as the proxy-wasm ABI sees them: ordered pairs of raw bytes.
//!
//! Values are bytes, not text: Envoy forwards obs-text (0x80–0xFF), and the harness must be able
//! to hand such values to the filter and show what the filter did with them.

use std::fmt;

/// An ordered multimap of lower-case header names to raw byte values.
///
/// All names and values live in one byte buffer (entries are ranges into it), so building,
/// cloning and editing a map costs a couple of allocations, not two per header: the in-VM
/// benchmark runs through these maps on every request.
#[derive(Clone, Default)]
pub struct Headers {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
}

#[derive(Clone, Copy)]
struct Entry {
    name: (u32, u32),
    value: (u32, u32),
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_capacity(entries: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            entries: Vec::with_capacity(entries),
        }
    }

    /// Builds a map from test input; names are lower-cased as Envoy's codecs do.
    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Self {
        // Room for what filters typically add, so their edits do not reallocate.
        let size: usize = pairs
            .iter()
            .map(|(k, v)| k.as_ref().len() + v.as_ref().len())
            .sum();
        let mut headers = Self::with_capacity(pairs.len() + 8, size + 256);
        for (name, value) in pairs {
            headers.add(name.as_ref(), value.as_ref());
        }
        headers
    }

    /// The first value of `name` (case-insensitive), as Envoy's `get_header_map_value` returns it.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.get_bytes(name.as_bytes())
    }

    /// The first value of `name` as text; `None` when absent or not UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
            .collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries
            .iter()
            .map(|e| (self.range(e.name), self.range(e.value)))
    }

    /// Header names, in order, as text (names are always ASCII in practice).
    pub fn names(&self) -> Vec<String> {
        self.iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    fn range(&self, (start, len): (u32, u32)) -> &[u8] {
        &self.bytes[start as usize..(start + len) as usize]
    }

    fn push(&mut self, bytes: &[u8]) -> (u32, u32) {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(bytes);
        (start, bytes.len() as u32)
    }

    pub(crate) fn get_bytes(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub(crate) fn add(&mut self, name: &[u8], value: &[u8]) {
        let name = self.push(name);
        let (start, len) = (name.0 as usize, name.1 as usize);
        self.bytes[start..start + len].make_ascii_lowercase();
        let value = self.push(value);
        self.entries.push(Entry { name, value });
    }

    /// Envoy's `setCopy`: one header `name` with `value`, in the place of the first old one.
    pub(crate) fn replace(&mut self, name: &[u8], value: &[u8]) {
        let Some(first) = self
            .entries
            .iter()
            .position(|e| self.range(e.name).eq_ignore_ascii_case(name))
        else {
            self.add(name, value);
            return;
        };
        let value = self.push(value);
        self.entries[first].value = value;
        let bytes = &self.bytes;
        let mut index = 0;
        self.entries.retain(|e| {
            let keep = index <= first
                || !bytes[e.name.0 as usize..(e.name.0 + e.name.1) as usize]
                    .eq_ignore_ascii_case(name);
            index += 1;
            keep
        });
    }

    pub(crate) fn remove(&mut self, name: &[u8]) {
        let bytes = &self.bytes;
        self.entries.retain(|e| {
            !bytes[e.name.0 as usize..(e.name.0 + e.name.1) as usize].eq_ignore_ascii_case(name)
        });
    }

    /// The ABI's serialized map: count, then (key size, value size) pairs, then
    /// NUL-terminated keys and values — all sizes little-endian u32.
    pub(crate) fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.serialize_into(&mut out);
        out
    }

    pub(crate) fn serialize_into(&self, out: &mut Vec<u8>) {
        let mut size = 4;
        for (k, v) in self.iter() {
            size += 8 + k.len() + v.len() + 2;
        }
        out.reserve(size);
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        for (k, v) in self.iter() {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in self.iter() {
            out.extend_from_slice(k);
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
    }

    /// Parses the serialized map a guest hands to the host; `None` when malformed.
    pub(crate) fn deserialize(bytes: &[u8]) -> Option<Self> {
        let mut headers = Self::new();
        if bytes.is_empty() {
            return Some(headers);
        }
        let read_u32 = |at: usize| -> Option<usize> {
            let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
            Some(u32::from_le_bytes(raw) as usize)
        };
        let count = read_u32(0)?;
        let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
        for n in 0..count {
            let key_len = read_u32(4 + n * 8)?;
            let value_len = read_u32(8 + n * 8)?;
            let key = bytes.get(data..data + key_len)?;
            data += key_len + 1;
            let value = bytes.get(data..data + value_len)?;
            data += value_len + 1;
            headers.add(key, value);
        }
        Some(headers)
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in self.iter() {
            map.entry(
                &String::from_utf8_lossy(k),
                &String::from_utf8_lossy(v).escape_debug().to_string(),
            );
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_round_trips_bytes_and_empty_values() {
        let headers = Headers::from_pairs(&[
            (&b":path"[..], &b"/x"[..]),
            (b"x-empty", b""),
            (b"x-bin", b"\xff\x00\x80"),
        ]);
        let back = Headers::deserialize(&headers.serialize()).expect("well-formed");
        assert_eq!(back, headers);
        assert_eq!(back.get("X-Bin"), Some(&b"\xff\x00\x80"[..]));
    }

    #[test]
    fn replace_keeps_one_value_in_place() {
        let mut headers = Headers::from_pairs(&[("a", "1"), ("b", "2"), ("a", "3")]);
        headers.replace(b"A", b"9");
        assert_eq!(headers.names(), ["a", "b"]);
        assert_eq!(headers.get_all("a"), [&b"9"[..]]);
    }

    #[test]
    fn truncated_input_is_rejected() {
        let bytes = Headers::from_pairs(&[("a", "1")]).serialize();
        assert!(Headers::deserialize(&bytes[..bytes.len() - 3]).is_none());
    }
}
