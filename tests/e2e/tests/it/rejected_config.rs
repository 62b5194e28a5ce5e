//! Envoy refuses to start when the filter rejects its configuration in on_configure.

use cutover_e2e::{config, Envoy, Upstream};

#[test]
fn envoy_refuses_an_invalid_filter_config() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let mut filter_config = config::chat_config(10);
    filter_config["services"][0]["new_percentage"] = 101.into();
    let error = match Envoy::builder(&filter_config)
        .upstream(&legacy)
        .upstream(&new)
        .try_boot()
    {
        Ok(_) => panic!("Envoy started with new_percentage 101"),
        Err(error) => error,
    };
    let status = error.exit_status.expect("Envoy exited by itself");
    assert!(!status.success(), "exit status {status}");
    assert!(
        error.log.contains("new_percentage"),
        "the filter names the field; log:\n{}",
        error.log
    );
}
