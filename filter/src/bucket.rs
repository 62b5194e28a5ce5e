//! Unleash-compatible bucketing: `murmur3_x86_32("{group}:{key}", 0) % 100 + 1`, with the
//! `murmur3` crate.

use std::io::Read;

/// MurmurHash3, x86 32-bit variant, over raw bytes.
pub fn murmur3_32(mut data: &[u8], seed: u32) -> u32 {
    // Reading from a byte slice cannot fail.
    murmur3::murmur3_32(&mut data, seed).unwrap_or(0)
}

/// The bucket 1..=100 of `key` in stickiness group `group`.
pub fn bucket(group: &str, key: &[u8]) -> u8 {
    // Chained slice readers: no per-request buffer for "{group}:{key}".
    let mut input = group.as_bytes().chain(&b":"[..]).chain(key);
    // Reading from byte slices cannot fail.
    let hash = murmur3::murmur3_32(&mut input, 0).unwrap_or(0);
    (hash % 100 + 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_reference_vectors() {
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"", 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3_32(b"test", 0), 0xba6b_d213);
        assert_eq!(murmur3_32(b"Hello, world!", 0), 0xc036_3e43);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog", 0),
            0x2e4f_f723
        );
        // Tail lengths 1..=3.
        assert_eq!(murmur3_32(&[0x21], 0), 0x7266_1cf4);
        assert_eq!(murmur3_32(&[0x21, 0x43], 0), 0xa0f7_b07a);
        assert_eq!(murmur3_32(&[0x21, 0x43, 0x65], 0), 0x7e4a_8634);
        assert_eq!(murmur3_32(&[0x21, 0x43, 0x65, 0x87], 0), 0xf55b_516b);
        assert_eq!(murmur3_32(&[0, 0, 0, 0], 0), 0x2362_f9de);
    }

    #[test]
    fn unleash_gradual_rollout_vectors() {
        assert_eq!(bucket("Feature.flexibleRollout.10", b"174"), 10);
        assert_eq!(bucket("Feature.flexibleRollout.10", b"499"), 32);
        assert_eq!(bucket("Feature.flexibleRollout.userId.55", b"25"), 55);
        assert_eq!(bucket("Feature.flexibleRollout.sessionId.42", b"147"), 42);
    }

    #[test]
    fn bucket_is_always_between_1_and_100() {
        for key in [&b""[..], b"\xff", b"\x00\x80\xfe", &[b'k'; 8192]] {
            let b = bucket("chat", key);
            assert!((1..=100).contains(&b), "bucket {b} for {key:?}");
        }
    }

    #[test]
    fn raw_bytes_equal_utf8_for_text_keys() {
        let key = "user-ä-42";
        assert_eq!(bucket("chat", key.as_bytes()), {
            let s = format!("chat:{key}");
            (murmur3_32(s.as_bytes(), 0) % 100 + 1) as u8
        });
    }

    #[test]
    fn the_chained_input_hashes_like_the_concatenation() {
        // Every alignment of the group / ':' / key boundaries against murmur3's 4-byte blocks.
        for group_len in 0..6 {
            for key_len in 0..10 {
                let group = "g".repeat(group_len);
                let key: Vec<u8> = (0..key_len).map(|i| b'a' + i as u8).collect();
                let whole = [group.as_bytes(), b":", &key].concat();
                assert_eq!(
                    u32::from(bucket(&group, &key)),
                    murmur3_32(&whole, 0) % 100 + 1,
                    "group {group:?} key {key:?}"
                );
            }
        }
    }
}
