//! Bearer tokens: splitting, header and claims decoding, routing by iss,
//! claim checks and signature verification. Must never panic.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let f = common::fixture();
    let now = f.reviewer.clock.now();
    let outcome = f.runtime.block_on(f.reviewer.verifier.verify(token, now));
    // Audience decisions on whatever identity came out.
    if let Ok(v) = outcome.result {
        let _ = v.identity.audiences_for(&["kubernetes".to_owned(), String::new()]);
    }
});
