//! Header values are bytes: obs-text, empty and large keys never trap the VM.
use crate::common;

use common::{chat, config, expected_side, request, routed_to};
use cutover_harness::{Error, Filter};

#[test]
fn an_obs_text_key_is_hashed_as_raw_bytes_and_later_requests_still_work() -> Result<(), Error> {
    let mut f = Filter::boot(&config(&[chat(50)]))?;
    for n in 0..20u8 {
        let key = vec![b'u', 0xFF, n, 0x80 | n];
        let mut headers = request("GET", "/api/chat/1", "");
        headers.retain(|(name, _)| *name != "x-correlation-id");
        headers.push(("x-correlation-id", key.clone()));
        let mut s = f.request(&headers, None)?;
        assert_eq!(
            s.upstream_headers().get("x-correlation-id"),
            Some(&key[..]),
            "the key is forwarded untouched"
        );
        assert_eq!(
            s.upstream_headers().get_str("x-cutover-cluster"),
            Some(format!("chat_{}", expected_side("chat", &key, 50)).as_str())
        );
        s.respond(200, &[("x-upstream-bytes", &b"\xff\xfe"[..])])?;
        s.finish()?;
    }
    for n in 0..20 {
        let key = format!("plain-{n}");
        assert_eq!(
            routed_to(&mut f, &request("GET", "/api/chat/1", &key))?,
            expected_side("chat", key.as_bytes(), 50)
        );
    }
    assert_eq!(
        f.counter("cutover.chat.routed_new") + f.counter("cutover.chat.routed_legacy"),
        40
    );
    Ok(())
}

#[test]
fn obs_text_in_an_unrelated_header_is_forwarded_untouched() -> Result<(), Error> {
    let mut f = Filter::boot(&config(&[chat(50)]))?;
    let mut headers = request("POST", "/api/chat/1", "user-1");
    headers.push(("x-display-name", b"Jos\xe9 \xff".to_vec()));
    headers.push(("cookie", b"\xff=\xff".to_vec()));
    let mut s = f.request(&headers, Some(b"{}"))?;
    assert_eq!(
        s.upstream_headers().get("x-display-name"),
        Some(&b"Jos\xe9 \xff"[..])
    );
    assert_eq!(s.upstream_headers().get("cookie"), Some(&b"\xff=\xff"[..]));
    let r = s.respond(200, &[("x-reply", &b"\xff"[..])])?;
    assert_eq!(r.headers.get("x-reply"), Some(&b"\xff"[..]));
    s.finish()?;
    assert_eq!(
        routed_to(&mut f, &request("GET", "/api/chat/2", "user-2"))?,
        expected_side("chat", b"user-2", 50)
    );
    Ok(())
}

#[test]
fn an_obs_text_path_is_not_a_trap() -> Result<(), Error> {
    let mut f = Filter::boot(&config(&[chat(50)]))?;
    let mut headers = request("GET", "/api/chat/x", "user-1");
    headers[1].1 = b"/api/chat/\xff\xfe?q=\xff".to_vec();
    assert_eq!(
        routed_to(&mut f, &headers)?,
        expected_side("chat", b"user-1", 50)
    );
    let mut unmatched = request("GET", "/", "user-1");
    unmatched[1].1 = b"/\xff".to_vec();
    assert_eq!(routed_to(&mut f, &unmatched)?, "<none>");
    assert_eq!(
        routed_to(&mut f, &request("GET", "/api/chat/2", "user-2"))?,
        expected_side("chat", b"user-2", 50)
    );
    Ok(())
}

#[test]
fn an_empty_key_falls_back_and_an_8_kib_key_is_hashed_whole() -> Result<(), Error> {
    let mut f = Filter::boot(&config(&[chat(50)]))?;
    let empty = request("GET", "/api/chat/1", "");
    // Empty x-correlation-id: x-request-id is the next stickiness header.
    assert_eq!(
        routed_to(&mut f, &empty)?,
        expected_side("chat", b"req-", 50)
    );
    for fill in [b'a', b'b', b'z', 0xFF] {
        let big = vec![fill; 8192];
        let mut headers = request("GET", "/api/chat/1", "");
        headers.retain(|(name, _)| *name != "x-correlation-id");
        headers.push(("x-correlation-id", big.clone()));
        assert_eq!(
            routed_to(&mut f, &headers)?,
            expected_side("chat", &big, 50),
            "8 KiB of {fill:#x}"
        );
    }
    assert_eq!(
        routed_to(&mut f, &request("GET", "/api/chat/2", "user-2"))?,
        expected_side("chat", b"user-2", 50)
    );
    Ok(())
}
