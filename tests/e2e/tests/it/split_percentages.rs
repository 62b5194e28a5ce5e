//! 0 %, 10 %, 50 % and 100 % over 1,000 keys: every key lands where the bucketing formula says,
//! so the observed share is the exact expected share (and within a point of the percentage).

use cutover_e2e::{config, Envoy, Upstream};
use cutover_filter::bucket::bucket;

const KEYS: usize = 1000;

#[test]
fn split_follows_the_percentage_over_1000_keys() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    for percentage in [0u8, 10, 50, 100] {
        let envoy = Envoy::boot(&config::chat_config(percentage), &[&legacy, &new]);
        let mut client = envoy.client();
        let mut observed_new = 0;
        let mut expected_new = 0;
        for i in 0..KEYS {
            let key = format!("corr-{i:05}-{}", i * 7919);
            let response = client.get_with(
                "/api/conversations/list?page=1",
                &[("x-correlation-id", key.as_bytes())],
            );
            assert_eq!(response.status, 200, "{percentage}% key {key}");
            let expected = if percentage > 0 && bucket("chat", key.as_bytes()) <= percentage {
                "chat_new"
            } else {
                "chat_legacy"
            };
            let served_by = response.served_by().expect("x-served-by");
            assert_eq!(served_by, expected, "{percentage}% key {key}");
            observed_new += usize::from(served_by == "chat_new");
            expected_new += usize::from(expected == "chat_new");
        }
        assert_eq!(observed_new, expected_new, "{percentage}%");
        // The formula itself spreads 1,000 keys close to the percentage (±4 points is far
        // outside the binomial noise of about ±1.6 points at 50 %).
        let share = observed_new as f64 * 100.0 / KEYS as f64;
        assert!(
            (share - f64::from(percentage)).abs() <= 4.0,
            "{percentage}%: observed {share}%"
        );
        if percentage == 0 {
            assert_eq!(observed_new, 0);
        }
        if percentage == 100 {
            assert_eq!(observed_new, KEYS);
        }
    }
}
