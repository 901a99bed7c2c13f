//! Config files: YAML parsing, validation and reading the files they name. Must never panic, whatever the
//! text; problems are reported, not thrown.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let f = common::fixture();
    if let Err(e) = kube_authn_webhook::prepare::Prepared::from_yaml(text, &f.dir.join("config.yaml")) {
        let _ = e.to_string();
    }
});
