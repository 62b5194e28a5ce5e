//! Shared setup of the cutover-verify tests: a real Envoy running the filter for `chat` with
//! loopback upstreams (the `cutover-e2e` fixtures), traffic with chosen keys, and a runner for
//! `migrator cutover-verify --format json`.

#![allow(dead_code)]

use std::time::Duration;

pub use cutover_e2e::{config, wait_until, Envoy, Upstream};

// Also gives the tests that check `--verify` their source/target database pair.
pub(crate) use crate::verify_support;
pub(crate) use verify_support::Outcome;

pub struct Setup {
    pub legacy: Upstream,
    pub new: Upstream,
    pub envoy: Envoy,
}

/// Envoy with the filter routing `chat` at `new_percentage` to `chat_new`.
pub fn boot(filter_config: &serde_json::Value) -> Setup {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let envoy = Envoy::boot(filter_config, &[&legacy, &new]);
    Setup { legacy, new, envoy }
}

impl Setup {
    /// `n` GETs to chat with correlation ids `key(0..n)`, each expected to get an answer.
    pub fn traffic(&self, n: usize, key: impl Fn(usize) -> String) {
        let mut client = self.envoy.client();
        for i in 0..n {
            let k = key(i);
            let response =
                client.get_with("/api/chat/messages", &[("x-correlation-id", k.as_bytes())]);
            assert!(
                response.status == 200 || response.status == 500,
                "unexpected status {}",
                response.status
            );
        }
    }

    /// Envoy computes histogram quantiles at each stats flush (5 s by default): wait until the
    /// new cluster's latency histogram has been computed after the traffic.
    pub fn wait_for_latency_quantiles(&self) {
        wait_until(
            "chat_new upstream_rq_time quantiles",
            Duration::from_secs(15),
            || {
                let stats = self.envoy.stats_json();
                let computed = stats["stats"].as_array()?.iter().find_map(|entry| {
                    entry["histograms"]["computed_quantiles"]
                        .as_array()?
                        .iter()
                        .find(|h| {
                            h["name"] == "cluster.chat_new.upstream_rq_time"
                                && !h["values"][0]["cumulative"].is_null()
                        })
                });
                computed.map(|_| ())
            },
        );
    }

    /// `migrator cutover-verify --admin-url … --listener-url … --format json <extra>`.
    pub fn cutover_verify(&self, extra: &[&str]) -> Outcome {
        let admin = self.envoy.admin_url();
        let listener = self.envoy.listener_url();
        let mut args = vec![
            "cutover-verify",
            "--admin-url",
            &admin,
            "--listener-url",
            &listener,
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        run(&args)
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(name).unwrap_or(0)
    }
}

/// `migrator <args>` with no Envoy or database URLs inherited from the test's environment.
pub fn run(args: &[&str]) -> Outcome {
    verify_support::migrator_cmd()
        .args(args)
        .env_remove("ENVOY_ADMIN_URL")
        .env_remove("ENVOY_LISTENER_URL")
        .output()
        .expect("running migrator")
        .into()
}

/// The check with this id in a cutover-verify JSON report.
pub fn check<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}
