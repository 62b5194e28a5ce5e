//! Bucketing: the side is a pure function of (stickiness group, key, percentage), the same in every
//! VM ("restart") and equal to Unleash's formula computed here independently.
use crate::common;

use common::{assert_known_vectors, chat, config, expected_side, request, routed_to, with};
use cutover_harness::{Error, Filter};
use serde_json::json;

#[test]
fn the_same_key_lands_on_the_same_side_after_a_restart_and_matches_the_formula() -> Result<(), Error>
{
    assert_known_vectors();
    let cfg = config(&[chat(30)]);
    let mut first = Filter::boot(&cfg)?;
    let mut restarted = Filter::boot(&cfg)?;
    let mut new = 0;
    for n in 0..300 {
        let key = format!("user-{n}");
        let headers = request("GET", "/api/chat/1", &key);
        let a = routed_to(&mut first, &headers)?;
        // Interleave unrelated traffic so per-VM state cannot line the two VMs up by accident.
        routed_to(
            &mut restarted,
            &request("GET", "/api/chat/1", &format!("other-{n}")),
        )?;
        let b = routed_to(&mut restarted, &headers)?;
        assert_eq!(a, b, "key {key} moved across VMs");
        assert_eq!(a, expected_side("chat", key.as_bytes(), 30), "key {key}");
        new += usize::from(a == "new");
    }
    assert!(
        (60..=120).contains(&new),
        "30% of 300 keys went to new: {new}"
    );
    Ok(())
}

#[test]
fn the_stickiness_group_not_the_service_name_seeds_the_hash() -> Result<(), Error> {
    let mut f = Filter::boot(&config(&[with(
        chat(50),
        "stickiness_group",
        json!("Feature.flexibleRollout.10"),
    )]))?;
    for n in 0..100 {
        let key = format!("{n}");
        let got = routed_to(&mut f, &request("GET", "/api/chat/1", &key))?;
        assert_eq!(
            got,
            expected_side("Feature.flexibleRollout.10", key.as_bytes(), 50),
            "key {key}"
        );
    }
    // The published vector: key 174 is bucket 10 in this group, so it is new at 10% and legacy at 9%.
    let mut at_10 = Filter::boot(&config(&[with(
        chat(10),
        "stickiness_group",
        json!("Feature.flexibleRollout.10"),
    )]))?;
    let mut at_9 = Filter::boot(&config(&[with(
        chat(9),
        "stickiness_group",
        json!("Feature.flexibleRollout.10"),
    )]))?;
    assert_eq!(
        routed_to(&mut at_10, &request("GET", "/api/chat/1", "174"))?,
        "new"
    );
    assert_eq!(
        routed_to(&mut at_9, &request("GET", "/api/chat/1", "174"))?,
        "legacy"
    );
    Ok(())
}

#[test]
fn the_first_present_stickiness_header_is_the_key_and_x_request_id_the_fallback(
) -> Result<(), Error> {
    let cfg =
        json!({ "stickiness_headers": ["x-user-id", "x-correlation-id"], "services": [chat(50)] });
    let mut f = Filter::boot(&cfg.to_string())?;
    for n in 0..60 {
        let (user, corr, req) = (format!("u{n}"), format!("c{n}"), format!("r{n}"));
        let base = |extra: &[(&'static str, &str)]| {
            let mut h: Vec<(&str, Vec<u8>)> = vec![
                (":method", b"GET".to_vec()),
                (":path", b"/api/chat/1".to_vec()),
                (":authority", b"gw".to_vec()),
                ("x-request-id", req.clone().into_bytes()),
            ];
            h.extend(extra.iter().map(|(k, v)| (*k, v.as_bytes().to_vec())));
            h
        };
        let both = base(&[("x-correlation-id", &corr), ("x-user-id", &user)]);
        assert_eq!(
            routed_to(&mut f, &both)?,
            expected_side("chat", user.as_bytes(), 50)
        );
        let corr_only = base(&[("x-user-id", ""), ("x-correlation-id", &corr)]);
        assert_eq!(
            routed_to(&mut f, &corr_only)?,
            expected_side("chat", corr.as_bytes(), 50)
        );
        let neither = base(&[]);
        assert_eq!(
            routed_to(&mut f, &neither)?,
            expected_side("chat", req.as_bytes(), 50)
        );
    }
    Ok(())
}

#[test]
fn raising_the_percentage_never_moves_a_key_back_to_legacy() -> Result<(), Error> {
    let mut previous: Vec<String> = Vec::new();
    for pct in [0, 1, 10, 50, 99, 100] {
        let mut f = Filter::boot(&config(&[chat(pct)]))?;
        let sides = (0..150)
            .map(|n| routed_to(&mut f, &request("GET", "/api/chat/1", &format!("k{n}"))))
            .collect::<Result<Vec<_>, _>>()?;
        for (n, (before, now)) in previous.iter().zip(&sides).enumerate() {
            assert!(
                !(before == "new" && now == "legacy"),
                "key k{n} went back to legacy at {pct}%"
            );
        }
        previous = sides;
    }
    assert!(
        previous.iter().all(|s| s == "new"),
        "100% sends every key to new"
    );
    Ok(())
}
