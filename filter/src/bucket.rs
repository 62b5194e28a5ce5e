//! Unleash-compatible bucketing: `murmur3_x86_32("{group}:{key}", 0) % 100 + 1`.

/// MurmurHash3, x86 32-bit variant, over raw bytes.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;

    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        // `chunks_exact(4)` yields 4-byte blocks; the fallback is unreachable.
        let word: [u8; 4] = block.try_into().unwrap_or([0; 4]);
        let k = u32::from_le_bytes(word)
            .wrapping_mul(C1)
            .rotate_left(15)
            .wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }

    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k: u32 = 0;
        for (i, b) in tail.iter().enumerate() {
            k |= u32::from(*b) << (8 * i);
        }
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }

    // The length is mixed in modulo 2^32, as in the reference implementation.
    h ^= data.len() as u32;
    fmix32(h)
}

fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// The bucket 1..=100 of `key` in stickiness group `group`.
pub fn bucket(group: &str, key: &[u8]) -> u8 {
    let mut input = Vec::with_capacity(group.len() + 1 + key.len());
    input.extend_from_slice(group.as_bytes());
    input.push(b':');
    input.extend_from_slice(key);
    (murmur3_32(&input, 0) % 100 + 1) as u8
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
}
